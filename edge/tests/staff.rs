//! Staff at the till over HTTP, against a real node on port 0 (the hub is unreachable): PIN
//! sign-in, the lock after five wrong PINs (kept across a restart) and a manager's unlock,
//! session expiry on an injected clock, and a till opened with a float, sold on and closed with
//! a cash count into a Z-report whose figures are worked out by hand below.

mod common;

use common::pos::*;
use common::*;
use edge_node::{EdgeHandle, EdgeNode, EdgeSettings, PosClock, StaffRole};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const ANNA_PIN: &str = "4711"; // manager
const BEN_PIN: &str = "123456"; // clerk
const CLEO_PIN: &str = "0007"; // clerk

/// A node in `dir` (offline), with tills 1 and 2 and three staff members.
fn pos_settings(dir: &Path, idle: Duration) -> EdgeSettings {
    let staff = vec![
        member("anna", "ANNA", StaffRole::Manager, ANNA_PIN),
        member("ben", "BEN", StaffRole::Clerk, BEN_PIN),
        member("cleo", "CLEO", StaffRole::Clerk, CLEO_PIN),
    ];
    let mut s = offline_settings(dir, &["1", "2"], staff);
    s.pos.session_idle = idle;
    s
}

async fn start(settings: &EdgeSettings, clock: &PosClock) -> EdgeHandle {
    let node = EdgeNode::start_with_clock(settings.clone(), clock.clone())
        .await
        .expect("starts");
    let (categories, products) = catalog();
    install_catalog(&node, categories, products, true).await;
    node
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_pins_lock_a_clerk_across_a_restart_until_a_manager_unlocks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = PosClock::manual(1_800_000_000_000);
    let settings = pos_settings(dir.path(), Duration::from_secs(12 * 3600));
    let node = start(&settings, &clock).await;
    let api = Api::new(&node);

    let (status, body) = api.sign_in("ben", BEN_PIN).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["staff"]["role"], "clerk");
    let ben = body["token"].as_str().expect("token").to_string();
    let (status, me) = api
        .call(
            Method::GET,
            "/api/v1/staff/sessions/current",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["staff"]["id"], "ben");

    // Not a PIN, or nobody: refused and not counted against anyone.
    let (status, body) = api.sign_in("cleo", "12").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_pin")
    );
    let (status, body) = api.sign_in("zoe", "1234").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unknown_staff")
    );

    for left in (1..=4).rev() {
        let (status, body) = api.sign_in("cleo", "9999").await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "wrong_pin"),
            "{body}"
        );
        assert!(message(&body).contains(&format!("{left} tr")), "{body}");
    }
    let (status, body) = api.sign_in("cleo", "9999").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::LOCKED, "staff_locked"),
        "{body}"
    );
    assert!(message(&body).contains("ask a manager to unlock"), "{body}");
    let (status, body) = api.sign_in("cleo", CLEO_PIN).await;
    assert_eq!(
        status,
        StatusCode::LOCKED,
        "the right PIN does not open a lock: {body}"
    );

    // A restart does not reset the count.
    node.stop().await.expect("stops");
    let node = start(&settings, &clock).await;
    let api = Api::new(&node);
    let (status, body) = api.sign_in("cleo", CLEO_PIN).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::LOCKED, "staff_locked"),
        "{body}"
    );

    // Sessions survive the restart too; a clerk cannot unlock.
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/staff/cleo/unlock",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let (status, _) = api.sign_in("cleo", CLEO_PIN).await;
    assert_eq!(status, StatusCode::LOCKED);

    let anna = api.token("anna", ANNA_PIN).await;
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/staff/zoe/unlock",
            Some(&anna),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/staff/cleo/unlock",
            Some(&anna),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["was_locked"], true);
    let (status, body) = api.sign_in("cleo", CLEO_PIN).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The count starts again from zero after a good PIN.
    let (_, body) = api.sign_in("cleo", "1111").await;
    assert!(message(&body).contains("4 tries left"), "{body}");

    // Signing out ends the session.
    let (status, _) = api
        .call(
            Method::DELETE,
            "/api/v1/staff/sessions/current",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api
        .call(
            Method::GET,
            "/api/v1/staff/sessions/current",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_on_the_injected_clock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = PosClock::manual(1_800_000_000_000);
    let node = start(&pos_settings(dir.path(), Duration::from_secs(3600)), &clock).await;
    let api = Api::new(&node);
    let ben = api.token("ben", BEN_PIN).await;
    let me = |token: String| {
        let api = &api;
        async move {
            api.call(
                Method::GET,
                "/api/v1/staff/sessions/current",
                Some(&token),
                None,
                None,
            )
            .await
        }
    };

    // Used every 50 minutes, the session lives on past the hour.
    clock.advance(Duration::from_secs(50 * 60));
    assert_eq!(me(ben.clone()).await.0, StatusCode::OK);
    clock.advance(Duration::from_secs(50 * 60));
    assert_eq!(me(ben.clone()).await.0, StatusCode::OK);
    // Unused for an hour and a minute: over.
    clock.advance(Duration::from_secs(61 * 60));
    let (status, body) = me(ben.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "session_expired"),
        "{body}"
    );
    let (status, body) = me(ben.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "{body}"
    );
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_opens_sells_and_closes_into_a_z_report_with_its_variance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = PosClock::manual(1_800_000_000_000);
    let settings = pos_settings(dir.path(), Duration::from_secs(12 * 3600));
    let node = start(&settings, &clock).await;
    let api = Api::new(&node);
    api.receive(&[("COF-1", 10), ("MUG-1", 5), ("TEA-1", 10)])
        .await;
    let ben = api.token("ben", BEN_PIN).await;
    let coffees = json!({"lines": [{"sku": "COF-1", "quantity": 2}],
                         "payments": [{"method": "cash", "amount": "20.00"}]});

    // Nothing is sold on a till that is not open.
    let (status, body) = api.sell(&ben, Some("1"), coffees.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "till_closed"),
        "{body}"
    );

    // Opening: bad input says what to fix; the node's token is not a staff member.
    let open = |till: &str, float: &str, token: &str| {
        let (api, path, body, token) = (
            &api,
            format!("/api/v1/tills/{till}/open"),
            json!({ "float": float }),
            token.to_string(),
        );
        async move {
            api.call(Method::POST, &path, Some(&token), None, Some(body))
                .await
        }
    };
    for (till, float, status, want) in [
        (
            "1",
            "abc",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            "1",
            "-5.00",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            "1",
            "1.005",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        ("9", "150.00", StatusCode::NOT_FOUND, "unknown_till"),
    ] {
        let (got, body) = open(till, float, &ben).await;
        assert_eq!((got, code(&body)), (status, want), "{till} {float}: {body}");
    }
    let (status, body) = open("1", "150.00", API_TOKEN).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let (status, body) = open("1", "150.00", &ben).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["float"], "150.00");
    assert_eq!(body["opened_by"], "ben");
    let (status, body) = open("1", "80.00", &ben).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "till_open"),
        "{body}"
    );

    // A: 2 coffees at 4.99 = 9.98, paid 20.00 cash: 10.02 change.
    let (status, a) = api.sell(&ben, Some("1"), coffees.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(
        (a["clerk"].as_str(), a["change_due"].as_str()),
        (Some("ben"), Some("10.02"))
    );
    // B: a mug (12.00) and three teas (7.50, the third free: 2.50 off) = 17.00 by card.
    let (status, b) = api
        .sell(
            &ben,
            Some("1"),
            json!({"lines": [{"sku": "MUG-1", "quantity": 1}, {"sku": "TEA-1", "quantity": 3}],
                   "payments": [{"method": "card", "amount": "17.00", "reference": "T-1"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(
        (b["subtotal"].as_str(), b["total"].as_str()),
        (Some("19.50"), Some("17.00"))
    );
    // C: a coffee (4.99) paid 3.00 cash and 1.99 card.
    let (status, c) = api
        .sell(
            &ben,
            Some("1"),
            json!({"lines": [{"sku": "COF-1", "quantity": 1}],
                   "payments": [{"method": "cash", "amount": "3.00"}, {"method": "card", "amount": "1.99"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");

    // Not on the till's report: a machine's sale (unattributed, as before), refused ones.
    let (status, m) = api.sell(API_TOKEN, None, coffees.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    assert_eq!(m["clerk"], Value::Null);
    let (status, body) = api.sell(API_TOKEN, Some("1"), coffees.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = api.sell(&ben, None, coffees.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "till_required")
    );
    let (status, body) = api.sell(&ben, Some("2"), coffees.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "till_closed"),
        "{body}"
    );
    let (status, body) = api.sell(&ben, Some("7"), coffees.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_till"),
        "{body}"
    );

    let (status, running) = api
        .call(Method::GET, "/api/v1/tills/1", Some(&ben), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{running}");
    assert_eq!(running["open"], true);
    assert_eq!(running["sales"]["count"], 3);

    // By hand: gross 9.98 + 19.50 + 4.99 = 34.47, discounts 2.50, net 31.97; cash in
    // 20.00 + 3.00 = 23.00, card 17.00 + 1.99 = 18.99, change 10.02. The drawer should hold
    // 150.00 + 23.00 − 10.02 = 162.98; 160.00 is counted: 2.98 short.
    let anna = api.token("anna", ANNA_PIN).await;
    let (status, z) = api
        .call(
            Method::POST,
            "/api/v1/tills/1/close",
            Some(&anna),
            None,
            Some(json!({"counted": "160.00"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{z}");
    let expected = json!({
        "till": "1", "number": 1, "opened_by": "ben", "closed_by": "anna", "currency": "EUR",
        "float": "150.00",
        "sales": {"count": 3, "gross": "34.47", "discounts": "2.50", "net": "31.97"},
        "tenders": {"cash": "23.00", "card": "18.99"},
        "change_given": "10.02",
        "refunds": {"count": 0, "total": "0.00", "cash": "0.00"},
        "expected_cash": "162.98", "counted": "160.00", "variance": "-2.98",
    });
    for (key, want) in expected.as_object().expect("object") {
        assert_eq!(&z[key], want, "{key} in {z}");
    }

    // Closed: no more sales on it, nothing more to close; the report stays readable.
    let (status, body) = api.sell(&ben, Some("1"), coffees.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "till_closed"),
        "{body}"
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/tills/1/close",
            Some(&ben),
            None,
            Some(json!({"counted": "0.00"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "till_closed"),
        "{body}"
    );
    let (status, again) = api
        .call(
            Method::GET,
            "/api/v1/tills/1/reports/1",
            Some(API_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!((status, &again), (StatusCode::OK, &z));

    // The next session starts from zero and gets report 2; a drawer that balances shows 0.00.
    assert_eq!(open("1", "100.00", &ben).await.0, StatusCode::CREATED);
    let (status, z2) = api
        .call(
            Method::POST,
            "/api/v1/tills/1/close",
            Some(&ben),
            None,
            Some(json!({"counted": "100.00"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{z2}");
    assert_eq!(
        (z2["number"].as_u64(), z2["sales"]["count"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(
        (z2["expected_cash"].as_str(), z2["variance"].as_str()),
        (Some("100.00"), Some("0.00"))
    );

    // Durable: after a restart the reports and the sale's attribution are still there.
    node.stop().await.expect("stops");
    let node = start(&settings, &clock).await;
    let api = Api::new(&node);
    let (status, again) = api
        .call(
            Method::GET,
            "/api/v1/tills/1/reports/1",
            Some(API_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!((status, &again), (StatusCode::OK, &z));
    let (status, body) = api
        .call(
            Method::GET,
            "/api/v1/tills/1/reports/3",
            Some(API_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{body}"
    );
    let id = a["id"].as_str().expect("sale id");
    let (status, sale) = api
        .call(
            Method::GET,
            &format!("/api/v1/sales/{id}"),
            Some(API_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, sale["clerk"].as_str()),
        (StatusCode::OK, Some("ben"))
    );
    let entry = node
        .store()
        .find_sale(id)
        .expect("reads")
        .expect("present")
        .entry;
    assert_eq!(entry.till.map(|t| t.till).as_deref(), Some("1"));
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn staff_settings_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = pos_settings(dir.path(), Duration::from_secs(60));
    type Spoil = Box<dyn Fn(&mut EdgeSettings)>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "pin_hash",
            Box::new(|s| s.pos.staff[0].pin_hash = "4711".to_string().into()),
        ),
        ("twice", Box::new(|s| s.pos.staff[1].id = "anna".into())),
        ("tills", Box::new(|s| s.pos.tills.push("till 3!".into()))),
        (
            "session_idle",
            Box::new(|s| s.pos.session_idle = Duration::ZERO),
        ),
    ];
    for (key, spoil) in cases {
        let mut s = good.clone();
        spoil(&mut s);
        let err = s.check().expect_err(key).to_string();
        assert!(err.contains("pos.") && err.contains(key), "{key}: {err}");
    }
    assert!(good.check().is_ok());
    assert!(edge_node::hash_pin("12ab").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_get_past_the_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = PosClock::manual(1_800_000_000_000);
    let node = start(&pos_settings(dir.path(), Duration::from_secs(3600)), &clock).await;
    let api = Api::new(&node);
    let guesses = (0..20).map(|i| {
        let api = &api;
        async move { api.sign_in("cleo", &format!("{:04}", 1000 + i)).await }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let count = |s: StatusCode| answers.iter().filter(|(got, _)| *got == s).count();
    // Each attempt is counted before its PIN is checked: four "wrong PIN", then the lock for the
    // fifth and for everything after it, however the twenty interleave.
    assert_eq!(
        (count(StatusCode::UNAUTHORIZED), count(StatusCode::LOCKED)),
        (4, 16),
        "{answers:?}"
    );
    let (status, _) = api.sign_in("cleo", CLEO_PIN).await;
    assert_eq!(status, StatusCode::LOCKED);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_session_acts_as_itself_and_a_clerk_cannot_count_or_override() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = PosClock::manual(1_800_000_000_000);
    let node = start(&pos_settings(dir.path(), Duration::from_secs(3600)), &clock).await;
    let api = Api::new(&node);
    let ben = api.token("ben", BEN_PIN).await;
    let anna = api.token("anna", ANNA_PIN).await;
    let adjust = |token: String, body: Value| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                "/api/v1/stock/adjustments",
                Some(&token),
                None,
                Some(body),
            )
            .await
        }
    };

    // A clerk cannot count stock, least of all on the manager's name.
    let blame = json!({"kind": "count", "sku": "COF-1", "on_hand": 500, "clerk": "anna"});
    let (status, body) = adjust(ben.clone(), blame).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    assert!(
        message(&body).contains("'clerk' must be you ('ben')"),
        "{body}"
    );
    let count = json!({"kind": "count", "sku": "COF-1", "on_hand": 500});
    let (status, body) = adjust(ben.clone(), count.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("needs a manager"), "{body}");
    let damage = json!({"kind": "damage", "sku": "COF-1", "units": 1, "reason": "dropped"});
    let (status, body) = adjust(ben.clone(), damage).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A delivery is a clerk's job, recorded on the clerk's own name.
    let (status, body) = adjust(
        ben.clone(),
        json!({"kind": "receipt", "sku": "COF-1", "units": 3, "clerk": "anna"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = adjust(
        ben.clone(),
        json!({"kind": "receipt", "sku": "COF-1", "units": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["clerk"], "ben", "{body}");
    // A manager counts, as herself.
    let (status, body) = adjust(anna.clone(), count).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["clerk"], "anna", "{body}");
    // The node's API token is as before: it may name any clerk.
    let (status, body) = adjust(
        API_TOKEN.to_string(),
        json!({"kind": "count", "sku": "COF-1", "on_hand": 40, "clerk": "anna"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["clerk"], "anna", "{body}");

    // Sales: only a manager sells beyond the node's rights; nobody sells on another's name.
    api.open_till(&ben).await;
    let line = json!([{"sku": "COF-1", "quantity": 1}]);
    let cash = json!([{"method": "cash", "amount": "10.00"}]);
    let (status, body) = api
        .sell(
            &ben,
            Some("1"),
            json!({"lines": line, "payments": cash, "override_reason": "the shelf count is off"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("override_reason"), "{body}");
    let (status, body) = api
        .sell(
            &ben,
            Some("1"),
            json!({"lines": line, "payments": cash, "clerk": "anna"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = api
        .sell(&ben, Some("1"), json!({"lines": line, "payments": cash}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["clerk"], "ben");
    let (status, body) = api
        .sell(
            &anna,
            Some("1"),
            json!({"lines": line, "payments": cash, "override_reason": "the shelf count is off"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["clerk"], "anna");
    node.stop().await.expect("stops");
}

/// `GET /pos/status` with the session cookie, as the POS pages' badge polls it.
async fn poll_status(api: &Api, token: &str) -> StatusCode {
    api.client
        .get(format!("{}/pos/status", api.base))
        .header("Cookie", format!("pos_session={token}"))
        .send()
        .await
        .expect("answers")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_poll_does_not_keep_an_unattended_session_alive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = PosClock::manual(1_800_000_000_000);
    let node = start(&pos_settings(dir.path(), Duration::from_secs(3600)), &clock).await;
    let api = Api::new(&node);
    let ben = api.token("ben", BEN_PIN).await;
    // The page stays open and polls; nobody touches the till for an hour and a minute.
    clock.advance(Duration::from_secs(50 * 60));
    assert_eq!(poll_status(&api, &ben).await, StatusCode::OK);
    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(poll_status(&api, &ben).await, StatusCode::UNAUTHORIZED);
    let (status, body) = api
        .call(
            Method::GET,
            "/api/v1/staff/sessions/current",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "session_expired"),
        "{body}"
    );
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_at_its_maximum_age_however_busy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = PosClock::manual(1_800_000_000_000);
    let mut settings = pos_settings(dir.path(), Duration::from_secs(3600));
    settings.pos.session_max_age = Duration::from_secs(2 * 3600);
    let node = start(&settings, &clock).await;
    let api = Api::new(&node);
    let ben = api.token("ben", BEN_PIN).await;
    let me = || {
        api.call(
            Method::GET,
            "/api/v1/staff/sessions/current",
            Some(&ben),
            None,
            None,
        )
    };
    for _ in 0..2 {
        clock.advance(Duration::from_secs(50 * 60));
        assert_eq!(me().await.0, StatusCode::OK);
    }
    // Used 20 minutes ago, but signed in 2 h 10 min ago: over.
    clock.advance(Duration::from_secs(30 * 60));
    let (status, body) = me().await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "session_expired"),
        "{body}"
    );
    assert!(
        message(&body).contains("signed in more than 2h ago"),
        "{body}"
    );
    assert_eq!(me().await.0, StatusCode::UNAUTHORIZED);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_pins_nor_tokens_reach_the_log() {
    const DORA_PIN: &str = "86429753";
    const WRONG_PIN: &str = "97531864";
    let logs = captured_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = PosClock::manual(1_800_000_000_000);
    let mut settings = pos_settings(dir.path(), Duration::from_secs(3600));
    settings
        .pos
        .staff
        .push(member("dora", "DORA", StaffRole::Clerk, DORA_PIN));
    let node = start(&settings, &clock).await;
    let api = Api::new(&node);
    let (status, _) = api.sign_in("dora", WRONG_PIN).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let token = api.token("dora", DORA_PIN).await;
    let (status, _) = api
        .call(
            Method::GET,
            "/api/v1/staff/sessions/current",
            Some(&token),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(poll_status(&api, &token).await, StatusCode::OK);
    node.stop().await.expect("stops");

    let text = String::from_utf8_lossy(&logs.lock().expect("not poisoned")).into_owned();
    // The capture works: the sign-in and the wrong PIN are logged, with the staff id.
    assert!(
        text.lines()
            .any(|l| l.contains("wrong PIN") && l.contains("dora")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("staff signed in") && l.contains("dora")),
        "{text}"
    );
    let secret = token.trim_start_matches("st_");
    for leak in [DORA_PIN, WRONG_PIN, token.as_str(), secret] {
        assert!(!text.contains(leak), "'{leak}' is in the log");
    }
}
