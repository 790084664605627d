//! The experience layer end to end: the profile join at sign-in, reports (JSON, CSV, 422s),
//! the event export by cursor with late events, a restart that resumes from the cursor, and
//! erasure.

mod common;

use common::{client, settings, spawn_with, SendForJson, TestHub};
use hub::clock::SystemClock;
use hub::experience::Experience;
use hub::storage::sled::SledStorage;
use hub::storage::EventLog;
use protocol::{AnonymousId, Channel, CustomerId, Event, EventKind, Subject};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

const ADMIN: &str = "experience-test-admin-token";
const PASSWORD: &str = "correct horse battery";

async fn spawn_hub() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    s.admin_token = Some(ADMIN.to_string().into());
    spawn_with(dir, s, Arc::new(hub::clock::SystemClock), true).await
}

async fn caught_up(hub: &TestHub) {
    hub.handle
        .recorder
        .send(hub::actors::recorder::Drain)
        .await
        .expect("recorder drained");
    tokio::time::timeout(Duration::from_secs(20), hub.handle.experience.caught_up())
        .await
        .expect("the analyst catches up in time")
        .expect("the analyst runs");
}

async fn post_events(hub: &TestHub, who: &[(&str, &str)], events: Value) -> reqwest::Response {
    let mut req = client()
        .post(hub.url("/api/v1/events"))
        .json(&json!({ "events": events }));
    for (k, v) in who {
        req = req.header(*k, *v);
    }
    req.send().await.expect("sent")
}

async fn admin_get(hub: &TestHub, path: &str) -> reqwest::Response {
    client()
        .get(hub.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sent")
}

#[actix_web::test]
async fn anonymous_activity_joins_the_profile_at_registration() {
    let hub = spawn_hub().await;
    let anon = AnonymousId::new().to_string();
    let who = [("x-anonymous-id", anon.as_str()), ("x-channel", "mobile")];
    let r = post_events(
        &hub,
        &who,
        json!([
            {"kind": "product_view", "payload": {"slug": "house-beans", "sku": "BEANS"}},
            {"kind": "search", "payload": {"query": "Unicorn  Latte", "results": "0"}},
        ]),
    )
    .await;
    assert_eq!(r.status(), 202);
    caught_up(&hub).await;
    let res = client()
        .post(hub.url("/api/v1/customers"))
        .header("x-anonymous-id", &anon)
        .json(&json!({"email": "joiner@example.com", "name": "Jo", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.expect("json");
    let token = body["session_token"].as_str().expect("token").to_string();
    let me: Value = client()
        .get(hub.url("/api/v1/customers/me"))
        .bearer_auth(&token)
        .json_body()
        .await;
    let id = me["id"].as_str().expect("id").to_string();
    // After the join, the anonymous id's later events file under the customer too.
    post_events(
        &hub,
        &who,
        json!([{"kind": "product_view", "payload": {"slug": "green-tea"}}]),
    )
    .await;
    caught_up(&hub).await;

    let profile: Value = admin_get(&hub, &format!("/api/v1/admin/customers/{id}/profile"))
        .await
        .json()
        .await
        .expect("json");
    let p = &profile["profile"];
    assert_eq!(p["anonymous_ids"], json!([anon]));
    let views: Vec<&str> = p["recent_views"]
        .as_array()
        .expect("views")
        .iter()
        .filter_map(|v| v["product"].as_str())
        .collect();
    assert_eq!(views, vec!["green-tea", "house-beans"]);
    assert_eq!(p["searches"][0]["query"], "unicorn latte");
    assert_eq!(p["channels"]["mobile"], 3);
    assert_eq!(p["segments"], json!([]));
    assert_eq!(profile["customer"]["email"], "joiner@example.com");
    // Nothing was consented to at registration: no consent is the default.
    assert_eq!(granted(&profile, "email", "marketing"), Some(false));
    assert!(profile["timeline"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    // An unknown customer, and no admin token.
    let other = CustomerId::new();
    assert_eq!(
        admin_get(&hub, &format!("/api/v1/admin/customers/{other}/profile"))
            .await
            .status(),
        404
    );
    let anonymous = client()
        .get(hub.url(&format!("/api/v1/admin/customers/{id}/profile")))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
    hub.server.stop(true).await;
}

#[actix_web::test]
async fn reports_answer_json_and_csv_and_refuse_bad_ranges() {
    let hub = spawn_hub().await;
    let anon = AnonymousId::new().to_string();
    post_events(
        &hub,
        &[("x-anonymous-id", anon.as_str())],
        json!([
            {"kind": "product_view", "payload": {"slug": "house-beans"}},
            {"kind": "product_view", "payload": {"slug": "house-beans"}},
            {"kind": "search", "payload": {"query": "xyzzy", "results": "0"}},
            {"kind": "search", "payload": {"query": "beans", "results": "3"}},
        ]),
    )
    .await;
    caught_up(&hub).await;
    let funnel: Value = admin_get(&hub, "/api/v1/admin/analytics/funnel?channel=web")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(funnel["total"]["product_view"], 1, "one distinct subject");
    assert_eq!(funnel["estimated"], false);
    let searches: Value = admin_get(&hub, "/api/v1/admin/analytics/searches")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        searches["no_results"],
        json!([{"query": "xyzzy", "searches": 1, "no_results": 1}])
    );
    let products: Value = admin_get(&hub, "/api/v1/admin/analytics/products?sort=views&limit=5")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(products["rows"][0]["product"], "house-beans");
    assert_eq!(products["rows"][0]["views"], 2);

    let csv = admin_get(&hub, "/api/v1/admin/analytics/funnel.csv").await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/csv"));
    let text = csv.text().await.expect("text");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(
        header,
        [
            "day",
            "channel",
            "product_view",
            "basket_add",
            "checkout_started",
            "order_placed"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.last().map(|r| r[0].to_string()), Some("total".into()));
    let csv2 = admin_get(&hub, "/api/v1/admin/analytics/searches?format=csv").await;
    let text = csv2.text().await.expect("text");
    assert!(text.starts_with("query,searches,no_results\n"), "{text}");
    for report in ["revenue", "abandonment"] {
        let r = admin_get(&hub, &format!("/api/v1/admin/analytics/{report}.csv")).await;
        assert_eq!(r.status(), 200, "{report}");
    }

    for (query, parameter) in [
        ("from=2026-03-10&to=2026-03-01", "from"),
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2024-01-01&to=2026-01-01", "to"),
        ("channel=fax", "channel"),
        ("format=xml", "format"),
        ("limit=0", "limit"),
        ("colour=red", "colour"),
    ] {
        let r = admin_get(&hub, &format!("/api/v1/admin/analytics/revenue?{query}")).await;
        assert_eq!(r.status(), 422, "{query}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["details"]["parameter"], parameter, "{query}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(parameter)));
    }
    assert_eq!(
        admin_get(&hub, "/api/v1/admin/analytics/weather")
            .await
            .status(),
        404
    );
    hub.server.stop(true).await;
}

fn exported(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[actix_web::test]
async fn export_resumes_by_cursor_without_gaps_or_duplicates_and_includes_late_events() {
    let hub = spawn_hub().await;
    let log = hub.handle.storage.clone();
    let now = OffsetDateTime::now_utc();
    let who = Subject::Anonymous(AnonymousId::new());
    let fresh = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| Event::new(now, who, Channel::Web, EventKind::PageView).with("n", i))
            .collect()
    };
    let first = fresh(25);
    log.append(first.clone().into()).await.expect("appended");
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor = String::new();
    let page = |cursor: String| {
        let hub = &hub;
        async move {
            let r = admin_get(
                hub,
                &format!("/api/v1/admin/events/export?cursor={cursor}&limit=10"),
            )
            .await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "application/x-ndjson");
            let next = r.headers()["next-cursor"]
                .to_str()
                .expect("ascii")
                .to_string();
            (next, exported(&r.text().await.expect("text")))
        }
    };
    for _ in 0..3 {
        let (next, lines) = page(cursor.clone()).await;
        cursor = next;
        seen.extend(lines);
    }
    // Late events: hours old (an edge node's offline events), appended after the reader passed.
    let late: Vec<Event> = (0..5)
        .map(|i| {
            Event::new(
                now - time::Duration::hours(6),
                who,
                Channel::Board,
                EventKind::BoardImpression,
            )
            .with("item", format!("i{i}"))
        })
        .collect();
    log.append(late.clone().into()).await.expect("appended");
    // Appending the same events again changes nothing.
    log.append(late.clone().into()).await.expect("appended");
    loop {
        let (next, lines) = page(cursor.clone()).await;
        if lines.is_empty() {
            assert_eq!(next, cursor, "an empty page keeps the cursor");
            break;
        }
        cursor = next;
        seen.extend(lines);
    }
    let ids: Vec<String> = seen
        .iter()
        .map(|l| l["id"].as_str().expect("id").to_string())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice");
    let expected: HashSet<String> = first
        .iter()
        .chain(&late)
        .map(|e| e.id.to_string())
        .collect();
    let got: HashSet<String> = ids.into_iter().collect();
    assert!(expected.is_subset(&got), "every event, the late ones too");
    let seqs: Vec<u64> = seen
        .iter()
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap: {seqs:?}"
    );
    assert_eq!(seen[0]["schema"], 1);
    assert_eq!(seen[0]["subject"]["type"], "anonymous");
    let bad = admin_get(&hub, "/api/v1/admin/events/export?cursor=abc").await;
    assert_eq!(bad.status(), 400);
    hub.server.stop(true).await;
}

fn views(now: OffsetDateTime, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new(
                now,
                Subject::Anonymous(AnonymousId::new()),
                Channel::Web,
                EventKind::ProductView,
            )
            .with("slug", format!("p{}", i % 3))
        })
        .collect()
}

async fn total_views(e: &Experience) -> u64 {
    e.read(|a| {
        a.days
            .values()
            .flat_map(|d| d.products.values())
            .map(|c| c.views)
            .sum()
    })
    .await
    .expect("read")
}

async fn open_until_free(dir: &std::path::Path) -> Arc<SledStorage> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match SledStorage::open(dir, 8) {
            Ok(s) => return s,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "sled stays locked: {e}"
                );
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[actix_web::test]
async fn a_restart_resumes_from_the_cursor_without_counting_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = OffsetDateTime::now_utc();
    {
        let storage = SledStorage::open(dir.path(), 8).expect("opens");
        let experience = Experience::start(
            storage.clone(),
            &storage.keyspace(),
            Arc::new(SystemClock),
            Vec::new(),
        )
        .expect("starts");
        storage
            .append(views(now, 300).into())
            .await
            .expect("appended");
        experience.caught_up().await.expect("caught up");
        assert_eq!(total_views(&experience).await, 300);
        // Appended while the analyst is stopping: folded after the restart, once.
        experience.stop();
        storage
            .append(views(now, 200).into())
            .await
            .expect("appended");
    }
    let storage = open_until_free(dir.path()).await;
    let experience = Experience::start(
        storage.clone(),
        &storage.keyspace(),
        Arc::new(SystemClock),
        Vec::new(),
    )
    .expect("starts again");
    storage
        .append(views(now, 100).into())
        .await
        .expect("appended");
    tokio::time::timeout(Duration::from_secs(20), experience.caught_up())
        .await
        .expect("in time")
        .expect("caught up");
    assert_eq!(total_views(&experience).await, 600);
    let cursor = experience
        .store
        .cursor(hub::experience::analyst::CONSUMER)
        .expect("cursor");
    assert_eq!(cursor, 600, "the cursor is the last sequence");
    experience.stop();
}

#[actix_web::test]
async fn erasure_pseudonymises_events_and_keeps_reports() {
    let hub = spawn_hub().await;
    let c = client();
    let anon = AnonymousId::new().to_string();
    // Two A/B tests: the browser is exposed to one before signing in (carried to the customer
    // at the join), the customer to the other once signed in.
    for key in ["erase-before", "erase-after"] {
        let made = c
            .post(hub.url("/api/v1/admin/experiments"))
            .bearer_auth(ADMIN)
            .json(
                &json!({"key": key, "name": key, "surface": "storefront", "goal": "order_placed",
                "variants": [{"key": "a", "percent": 50}, {"key": "b", "percent": 50}]}),
            )
            .send()
            .await
            .expect("sent");
        assert_eq!(made.status(), 201);
        let started = c
            .post(hub.url(&format!("/api/v1/admin/experiments/{key}/start")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("sent");
        assert_eq!(started.status(), 200);
    }
    let exposed = c
        .get(hub.url("/api/v1/experiments/erase-before/assignment?expose=true"))
        .header("x-anonymous-id", &anon)
        .json_body()
        .await;
    let before_variant = exposed["variant"].as_str().expect("a variant").to_string();
    post_events(
        &hub,
        &[("x-anonymous-id", anon.as_str())],
        json!([{"kind": "search", "payload": {"query": "secret gift", "results": "2"}}]),
    )
    .await;
    let res = c
        .post(hub.url("/api/v1/sessions"))
        .header("x-anonymous-id", &anon)
        .json(&json!({"email": "nobody@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 401);
    let body = hub.register(&c, "erase.me@example.com").await;
    let token = body["session_token"].as_str().expect("token").to_string();
    let signed_in = c
        .post(hub.url("/api/v1/sessions"))
        .header("x-anonymous-id", &anon)
        .json(&json!({"email": "erase.me@example.com", "password": PASSWORD}))
        .json_body()
        .await;
    let second = signed_in["session_token"]
        .as_str()
        .expect("token")
        .to_string();
    post_events(
        &hub,
        &[("authorization", &format!("Bearer {token}"))],
        json!([
            {"kind": "product_view", "payload": {"slug": "house-beans"}},
            {"kind": "search", "payload": {"query": "birthday present for Ada", "results": "0"}},
        ]),
    )
    .await;
    let exposed = c
        .get(hub.url("/api/v1/experiments/erase-after/assignment?expose=true"))
        .bearer_auth(&token)
        .json_body()
        .await;
    let after_variant = exposed["variant"].as_str().expect("a variant").to_string();
    caught_up(&hub).await;
    let me: Value = c
        .get(hub.url("/api/v1/customers/me"))
        .bearer_auth(&token)
        .json_body()
        .await;
    let id = me["id"].as_str().expect("id").to_string();

    let download = c
        .get(hub.url("/api/v1/customers/me/data"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(download.status(), 200);
    assert!(download.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .starts_with("attachment"));
    let data: Value = download.json().await.expect("json");
    assert_eq!(data["customer"]["email"], "erase.me@example.com");
    assert!(
        data.to_string().find("password").is_none(),
        "no password hash"
    );
    assert!(data["events"].as_array().is_some_and(|e| e.len() >= 3));
    assert_eq!(data["profile"]["anonymous_ids"], json!([anon]));

    let reports = [
        "analytics/funnel",
        "analytics/searches",
        "analytics/products",
        "analytics/revenue",
        "analytics/abandonment",
        "experiments/erase-before/report",
        "experiments/erase-after/report",
    ];
    experiments_caught_up(&hub).await;
    let mut before = Vec::new();
    for r in reports {
        before.push(
            admin_get(&hub, &format!("/api/v1/admin/{r}"))
                .await
                .text()
                .await
                .expect("text"),
        );
    }
    // One exposed subject each.
    for (i, variant) in [(5, &before_variant), (6, &after_variant)] {
        let report: Value = serde_json::from_str(&before[i]).expect("json");
        let row = report["variants"]
            .as_array()
            .and_then(|v| v.iter().find(|r| r["key"] == variant.as_str()))
            .expect("the variant's row")
            .clone();
        assert_eq!(
            (row["exposures"].as_u64(), row["conversions"].as_u64()),
            (Some(1), Some(0)),
            "{report}"
        );
    }

    let wrong = c
        .post(hub.url("/api/v1/customers/me/erasure"))
        .bearer_auth(&token)
        .json(&json!({"password": "not my password"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 403);
    let erased = c
        .post(hub.url("/api/v1/customers/me/erasure"))
        .bearer_auth(&token)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(erased.status(), 200);
    let erased: Value = erased.json().await.expect("json");
    let pseudonym = erased["pseudonym"].as_str().expect("pseudonym").to_string();

    // Signed out everywhere, and no way back in.
    for t in [&token, &second] {
        let r = c
            .get(hub.url("/api/v1/customers/me"))
            .bearer_auth(t)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 401);
    }
    let again = c
        .post(hub.url("/api/v1/sessions"))
        .json(&json!({"email": "erase.me@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 401);
    let profile: Value = admin_get(&hub, &format!("/api/v1/admin/customers/{id}/profile"))
        .await
        .json()
        .await
        .expect("json");
    let email = profile["customer"]["email"].as_str().expect("email");
    assert!(
        email.starts_with("erased-") && email.ends_with(".invalid"),
        "{email}"
    );
    assert_eq!(profile["customer"]["name"], "");
    assert_eq!(granted(&profile, "email", "marketing"), Some(false));
    assert_eq!(granted(&profile, "board", "personalization"), Some(false));
    assert_eq!(profile["timeline"], json!([]));
    assert_eq!(
        profile["profile"]["events"], 0,
        "the profile moved to the pseudonym"
    );
    // The email is free again.
    hub.register(&c, "erase.me@example.com").await;

    // Events: none names the customer or the joined anonymous id; none keeps a search text.
    caught_up(&hub).await;
    let all = hub
        .handle
        .storage
        .read_sequenced(0, 100_000)
        .await
        .expect("log");
    let subjects: Vec<String> = all
        .iter()
        .map(|s| match s.event.subject {
            Subject::Customer(c) => c.to_string(),
            Subject::Anonymous(a) => a.to_string(),
        })
        .collect();
    assert!(!subjects.contains(&id) && !subjects.contains(&anon));
    let theirs: Vec<&Event> = all
        .iter()
        .map(|s| &s.event)
        .filter(|e| e.subject.to_string_id() == pseudonym)
        .collect();
    assert!(theirs.len() >= 4, "their events carry the pseudonym");
    assert!(theirs
        .iter()
        .all(|e| !e.payload.contains_key("query") && !e.payload.contains_key("anonymous_id")));

    // The A/B tests' records: nothing under the customer or the joined anonymous id; the
    // assignments are the pseudonym's now.
    let tree = hub
        .handle
        .keyspace
        .open_tree("experiments")
        .expect("the experiments' tree");
    let customer: CustomerId = id.parse().expect("ulid");
    let joined: AnonymousId = anon.parse().expect("ulid");
    let (cb, ab) = (customer.to_bytes(), joined.to_bytes());
    for kv in tree.iter() {
        let (k, v) = kv.expect("read");
        for bytes in [&cb[..], &ab[..]] {
            assert!(
                !k.windows(16).any(|w| w == bytes) && !v.windows(16).any(|w| w == bytes),
                "an experiment record still names the customer: {:?}",
                String::from_utf8_lossy(&k)
            );
        }
    }
    let pseudonym_id: AnonymousId = pseudonym.parse().expect("ulid");
    for (key, variant) in [
        ("erase-before", &before_variant),
        ("erase-after", &after_variant),
    ] {
        let kept = hub
            .handle
            .experiments
            .assign(key, Subject::Anonymous(pseudonym_id))
            .expect("read")
            .expect("assigned");
        assert_eq!(&kept.variant, variant);
        assert!(
            !matches!(kept.reason, hub::experiments::Reason::Hashed { .. }),
            "stored, not hashed again: {kept:?}"
        );
    }

    experiments_caught_up(&hub).await;
    let mut after = Vec::new();
    for r in reports {
        after.push(
            admin_get(&hub, &format!("/api/v1/admin/{r}"))
                .await
                .text()
                .await
                .expect("text"),
        );
    }
    assert_eq!(before, after, "reports are the same after the erasure");
    hub.server.stop(true).await;
}

async fn experiments_caught_up(hub: &TestHub) {
    hub.handle.drain_events().await;
    tokio::time::timeout(
        Duration::from_secs(20),
        hub.handle
            .experiments
            .caught_up(hub.handle.storage.as_ref()),
    )
    .await
    .expect("the experiment counter catches up in time")
    .expect("the counter runs");
}

trait SubjectId {
    fn to_string_id(&self) -> String;
}

impl SubjectId for Subject {
    fn to_string_id(&self) -> String {
        match self {
            Subject::Customer(c) => c.to_string(),
            Subject::Anonymous(a) => a.to_string(),
        }
    }
}

/// The state of one channel and purpose in a profile's `customer.consents`.
fn granted(profile: &Value, channel: &str, purpose: &str) -> Option<bool> {
    profile["customer"]["consents"]
        .as_array()?
        .iter()
        .find(|c| c["channel"] == channel && c["purpose"] == purpose)
        .and_then(|c| c["granted"].as_bool())
}
