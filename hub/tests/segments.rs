//! Segments against a real hub on port 0 with a manual clock: memberships follow events seen
//! through the API and end when time passes, new and changed rules are evaluated over existing
//! profiles, invalid rules are refused with their position, and roles are enforced.

mod common;

use common::{client, spawn_with, SendForJson, TestHub};
use hub::clock::{Clock, ManualClock};
use protocol::{Channel, CustomerId, Event, EventKind, Subject};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

const ADMIN: &str = "segments-test-admin-token";
const COFFEE_LOVERS: &str =
    r#"viewed(category = "coffee") >= 2 within 7d and orders within 30d = 0"#;

async fn spawn() -> (TestHub, ManualClock) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = common::settings(dir.path());
    s.admin_token = Some(ADMIN.to_string().into());
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let hub = spawn_with(dir, s, Arc::new(clock.clone()), true).await;
    (hub, clock)
}

/// Creates a back-office user with `roles` and answers its API token.
async fn token(hub: &TestHub, email: &str, roles: &[&str]) -> String {
    let c = client();
    let user = c
        .post(hub.url("/api/v1/admin/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"email": email, "name": "Tester", "roles": roles}))
        .json_body()
        .await;
    let id = user["id"].as_str().expect("user id");
    let issued = c
        .post(hub.url(&format!("/api/v1/admin/users/{id}/tokens")))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "tests"}))
        .json_body()
        .await;
    issued["token"].as_str().expect("token").to_string()
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("sent");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn create(hub: &TestHub, token: &str, key: &str, rule: &str) -> (StatusCode, Value) {
    send(
        client()
            .post(hub.url("/api/v1/admin/segments"))
            .bearer_auth(token)
            .json(&json!({"key": key, "name": format!("Segment {key}"), "rule": rule})),
    )
    .await
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

/// A registered shopper: (customer id, session token).
async fn shopper(hub: &TestHub, email: &str) -> (CustomerId, String) {
    let body = hub.register(&client(), email).await;
    let session = body["session_token"].as_str().expect("session").to_string();
    let me = client()
        .get(hub.url("/api/v1/customers/me"))
        .bearer_auth(&session)
        .json_body()
        .await;
    let id = me["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("a customer id");
    (id, session)
}

/// Opens a product page through the API as the shopper (a `product_view` event).
async fn view(hub: &TestHub, session: &str, slug: &str) {
    let res = client()
        .get(hub.url(&format!("/api/v1/products/{slug}")))
        .bearer_auth(session)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
}

/// The segment keys on a customer's profile, as the profile endpoint shows them.
async fn profile_segments(hub: &TestHub, id: CustomerId) -> Vec<(String, String)> {
    let profile = client()
        .get(hub.url(&format!("/api/v1/admin/customers/{id}/profile")))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    profile["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            let key = s["key"].as_str().unwrap_or_default().to_string();
            let name = s["name"].as_str().unwrap_or_default().to_string();
            (key, name)
        })
        .collect()
}

async fn segment(hub: &TestHub, key: &str) -> Value {
    client()
        .get(hub.url(&format!("/api/v1/admin/segments/{key}")))
        .bearer_auth(ADMIN)
        .json_body()
        .await
}

/// Polls until the segment is evaluated with `members` members.
async fn wait_members(hub: &TestHub, key: &str, members: u64) -> Value {
    common::eventually(Duration::from_secs(20), || async {
        let s = segment(hub, key).await;
        (s["status"]["state"] == "ready" && s["status"]["members"] == members).then_some(s)
    })
    .await
}

#[actix_web::test]
async fn memberships_follow_events_and_end_as_time_passes() {
    let (hub, clock) = spawn().await;
    let marketer = token(&hub, "marketer@example.com", &["marketer"]).await;
    let (status, created) = create(&hub, &marketer, "coffee-lovers", COFFEE_LOVERS).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["canonical"],
        r#"viewed(category = "coffee") within 7d >= 2 and ordered within 30d = 0"#
    );
    let (status, _) = create(&hub, ADMIN, "buyers", "orders >= 1").await;
    assert_eq!(status, StatusCode::CREATED);

    let (ada, ada_session) = shopper(&hub, "ada@example.com").await;
    let (bob, bob_session) = shopper(&hub, "bob@example.com").await;
    for session in [&ada_session, &bob_session] {
        view(&hub, session, "house-beans").await;
        view(&hub, session, "espresso-cups").await;
    }
    view(&hub, &bob_session, "green-tea").await;
    caught_up(&hub).await;
    let coffee = (
        "coffee-lovers".to_string(),
        "Segment coffee-lovers".to_string(),
    );
    assert_eq!(profile_segments(&hub, ada).await, vec![coffee.clone()]);
    assert_eq!(profile_segments(&hub, bob).await, vec![coffee.clone()]);
    assert_eq!(
        hub.handle
            .experience
            .segments_of(Subject::Customer(bob))
            .await
            .expect("segments"),
        vec!["coffee-lovers".to_string()]
    );

    // Ada orders (the event checkout records): she leaves the coffee lovers for the buyers.
    let order = Event::new(
        clock.now(),
        Subject::Customer(ada),
        Channel::Web,
        EventKind::OrderPlaced,
    )
    .with("amount", "25.98")
    .with("currency", "EUR");
    hub.handle
        .storage
        .append(vec![order].into())
        .await
        .expect("appended");
    caught_up(&hub).await;
    assert_eq!(
        profile_segments(&hub, ada).await,
        vec![("buyers".to_string(), "Segment buyers".to_string())]
    );

    // Members, paged by cursor.
    let page = client()
        .get(hub.url("/api/v1/admin/segments/coffee-lovers/members?limit=1"))
        .bearer_auth(&marketer)
        .json_body()
        .await;
    assert_eq!(page["members"][0]["subject"]["id"], bob.to_string());
    let next = page["next"].as_str().expect("a next cursor").to_string();
    let rest = client()
        .get(hub.url(&format!(
            "/api/v1/admin/segments/coffee-lovers/members?limit=1&after={next}"
        )))
        .bearer_auth(&marketer)
        .json_body()
        .await;
    assert_eq!(rest["members"], json!([]));
    assert_eq!(rest["next"], Value::Null);
    wait_members(&hub, "coffee-lovers", 1).await;

    // A segment created now is evaluated over the profiles that exist.
    let (status, _) = create(
        &hub,
        &marketer,
        "tea-curious",
        r#"viewed(product = "green-tea")"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    wait_members(&hub, "tea-curious", 1).await;
    // A changed rule is evaluated again.
    let (status, changed) = send(
        client()
            .patch(hub.url("/api/v1/admin/segments/tea-curious"))
            .bearer_auth(&marketer)
            .json(&json!({"rule": "viewed >= 2"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["version"], 2);
    wait_members(&hub, "tea-curious", 2).await;

    // Eight days on, with no new events: Bob's views left the 7-day window.
    clock.advance(Duration::from_secs(8 * 24 * 3600));
    common::eventually(Duration::from_secs(20), || async {
        profile_segments(&hub, bob)
            .await
            .iter()
            .all(|(k, _)| k != "coffee-lovers")
            .then_some(())
    })
    .await;
    wait_members(&hub, "coffee-lovers", 0).await;

    // A deleted segment lets its members go.
    let (status, _) = send(
        client()
            .delete(hub.url("/api/v1/admin/segments/buyers"))
            .bearer_auth(&marketer),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    common::eventually(Duration::from_secs(20), || async {
        profile_segments(&hub, ada)
            .await
            .iter()
            .all(|(k, _)| k != "buyers")
            .then_some(())
    })
    .await;
    let (status, _) = send(
        client()
            .get(hub.url("/api/v1/admin/segments/buyers"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    hub.server.stop(true).await;
}

#[actix_web::test]
async fn bad_rules_keys_and_roles_are_refused() {
    let (hub, _clock) = spawn().await;
    let marketer = token(&hub, "marketer@example.com", &["marketer"]).await;
    let analyst = token(&hub, "analyst@example.com", &["analyst"]).await;
    let merchandiser = token(&hub, "merch@example.com", &["merchandiser"]).await;

    // Invalid rules: 422 with the position, on validate and on create.
    let bad = "viewed and\n  orders wihtin 30d = 0";
    for path in ["/api/v1/admin/segments/validate", "/api/v1/admin/segments"] {
        let (status, body) = send(
            client()
                .post(hub.url(path))
                .bearer_auth(&marketer)
                .json(&json!({"key": "bad", "name": "Bad", "rule": bad})),
        )
        .await;
        // `validate` takes only the rule: its unknown fields are refused first.
        if path.ends_with("validate") {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            let (status, body) = send(
                client()
                    .post(hub.url(path))
                    .bearer_auth(&marketer)
                    .json(&json!({"rule": bad})),
            )
            .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(body["error"]["code"], "invalid_rule");
            assert_eq!(
                body["error"]["details"],
                json!({"offset": 20, "line": 2, "column": 10,
                       "expected": "`and`, `or` or the end of the rule", "found": "`wihtin`"})
            );
            continue;
        }
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["code"], "invalid_rule");
        assert_eq!(body["error"]["details"]["line"], 2);
    }
    let (status, body) = create(&hub, &marketer, "long-window", "viewed within 120d").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["offset"], 14);
    let (status, body) = create(&hub, &marketer, "Not A Key", "viewed").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_field");

    // A valid rule validates without being saved; the key is then free to create, once.
    let (status, body) = send(
        client()
            .post(hub.url("/api/v1/admin/segments/validate"))
            .bearer_auth(&analyst)
            .json(&json!({"rule": r#"lifetime_value("EUR") > 500"#})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["canonical"], r#"lifetime_value("EUR") > 500.00"#);
    let (status, _) = create(
        &hub,
        &marketer,
        "high-value",
        r#"lifetime_value("EUR") > 500"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = create(&hub, ADMIN, "high-value", "viewed").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "duplicate_key");

    // Roles: analysts and support read, merchandisers do nothing, nobody without a token.
    let (status, body) = create(&hub, &analyst, "mine", "viewed").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = create(&hub, &merchandiser, "mine", "viewed").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(
        client()
            .patch(hub.url("/api/v1/admin/segments/high-value"))
            .bearer_auth(&analyst)
            .json(&json!({"name": "Mine now"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, list) = send(
        client()
            .get(hub.url("/api/v1/admin/segments"))
            .bearer_auth(&analyst),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["segments"][0]["key"], "high-value");
    let (status, _) = send(
        client()
            .get(hub.url("/api/v1/admin/segments"))
            .bearer_auth(&merchandiser),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(client().get(hub.url("/api/v1/admin/segments"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Every change is in the audit list.
    let audit = client()
        .get(hub.url("/api/v1/backoffice/audit"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("segment."))
        .collect();
    assert_eq!(actions, vec!["segment.create"]);
    hub.server.stop(true).await;
}
