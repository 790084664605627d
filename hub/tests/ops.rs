//! Operations monitoring against a real hub on port 0: the Prometheus exposition, request ids,
//! the separate metrics listener, readiness, the outbox counters, the ops page with its sign-in,
//! CSRF and dead-letter buttons, and its live feed watching an edge node come and go.

mod common;

use common::{client, eventually};
use futures_util::SinkExt;
use hub::storage::{Change, UnitOfWork};
use protocol::replication::sync::{encode_frame, Frame, Vector, PROTOCOL_VERSION};
use protocol::replication::ReplicaId;
use protocol::{LocationId, OutboxMessage};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const OPS_TOKEN: &str = "ops-token-for-the-tests-0123456789";
const ADMIN_TOKEN: &str = "admin-token-for-the-tests-0123456789";
const PAYMENTS_SECRET: &str = "sk_test_not_shown_anywhere_98765";
const BERLIN: &str = "berlin-credential-for-ops";
const WAIT: Duration = Duration::from_secs(10);

/// A guarded hub (ops token, admin token, a payment key of its own) with one edge node.
fn guarded(dir: &std::path::Path) -> hub::HubSettings {
    let mut s = common::settings(dir);
    s.ops_token = Some(OPS_TOKEN.to_string().into());
    s.admin_token = Some(ADMIN_TOKEN.to_string().into());
    s.payments.secret_key = PAYMENTS_SECRET.to_string().into();
    s.ops.live_every = Duration::from_millis(200);
    s.edge.nodes = vec![hub::config::EdgeNodeSettings {
        replica: "berlin".into(),
        location: "store-berlin".into(),
        name: "Berlin Mitte".into(),
        credential_sha256: hex::encode(hub::auth::token_hash(BERLIN)),
    }];
    s
}

async fn spawn_guarded() -> common::TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = guarded(dir.path());
    common::spawn_with(dir, s, Arc::new(hub::clock::SystemClock), true).await
}

async fn metrics_text(c: &reqwest::Client, url: String, token: Option<&str>) -> String {
    let mut req = c.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain; version=0.0.4"));
    res.text().await.expect("text")
}

/// Parses the text exposition strictly enough to catch a broken line: every sample is
/// `name{labels} value` with a known metric name and a number.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("a name");
            let kind = parts.next().expect("a type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        let name = series.split('{').next().expect("a name");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "no TYPE for {line}");
        samples.insert(series.to_string(), value);
    }
    samples
}

#[actix_web::test]
async fn metrics_parse_and_count_requests_by_route_pattern() {
    let hub = common::spawn().await;
    let c = client();
    for _ in 0..3 {
        let res = c
            .get(hub.url("/api/v1/products/house-beans"))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
    }
    let before = parse_exposition(&metrics_text(&c, hub.url("/metrics"), None).await);
    let series = |pattern: &str| {
        format!("omnihub_http_requests_total{{method=\"GET\",route=\"{pattern}\",status=\"2xx\"}}")
    };
    let products = series("/api/v1/products/{slug}");
    let counted = before.get(&products).copied().unwrap_or(0.0);
    assert!(counted >= 3.0, "{products}: {counted}");
    for key in [
        "omnihub_active_actors{kind=\"basket\"}",
        "omnihub_active_actors{kind=\"customer\"}",
        "omnihub_actor_activations_total",
        "omnihub_analyst_lag_events",
        "omnihub_edge_nodes_connected",
        "omnihub_outbox_breaker_open{destination=\"oms\"}",
        "omnihub_storage_flush_seconds_count",
        "process_resident_memory_bytes",
    ] {
        assert!(before.contains_key(key), "{key} missing");
    }
    assert!(before.keys().any(
        |k| k.starts_with("omnihub_http_request_duration_seconds_bucket")
            && k.contains("route=\"/api/v1/products/{slug}\"")
    ));
    // Raw paths never become labels: the slug is not a series.
    assert!(!before.keys().any(|k| k.contains("house-beans")));

    // A basket: an actor is activated and the counters move.
    let res = c
        .post(hub.url("/api/v1/baskets"))
        .json(&serde_json::json!({"currency": "EUR"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
    c.get(hub.url("/no/such/page")).send().await.expect("sent");
    // A webhook with no signature: refused, and counted by its refusal's code.
    let refused = c
        .post(hub.url("/webhooks/payments"))
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let after = parse_exposition(&metrics_text(&c, hub.url("/metrics"), None).await);
    let webhook = "omnihub_webhooks_total{outcome=\"bad_signature\",source=\"payments\"}";
    assert!(
        after.get(webhook).copied().unwrap_or(0.0) > before.get(webhook).copied().unwrap_or(0.0),
        "{webhook}"
    );
    assert!(after[&products] >= counted);
    assert!(after["omnihub_actor_activations_total"] > before["omnihub_actor_activations_total"]);
    assert!(after["omnihub_active_actors{kind=\"basket\"}"] >= 1.0);
    assert!(
        after["omnihub_storage_flush_seconds_count"]
            > before["omnihub_storage_flush_seconds_count"]
    );
    assert!(
        after
            .get("omnihub_http_requests_total{method=\"POST\",route=\"/api/v1/baskets\",status=\"2xx\"}")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(after
        .keys()
        .any(|k| k.starts_with("omnihub_http_requests_total")
            && k.contains("route=\"unmatched\"")
            && k.contains("status=\"4xx\"")));
}

#[actix_web::test]
async fn a_request_id_is_echoed_or_made() {
    let hub = common::spawn().await;
    let c = client();
    let cases = [
        (Some("trace-abc_123.x"), Some("trace-abc_123.x")),
        (Some("not a sane id"), None),
        (None, None),
    ];
    for (sent, echoed) in cases {
        let mut req = c.get(hub.url("/healthz"));
        if let Some(id) = sent {
            req = req.header("X-Request-Id", id);
        }
        let res = req.send().await.expect("sent");
        let id = res.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        match echoed {
            Some(e) => assert_eq!(id, e),
            None => {
                assert_eq!(id.len(), 26, "a new ULID: {id}");
                assert!(id.parse::<ulid::Ulid>().is_ok(), "{id}");
            }
        }
    }
    // Errors carry one too.
    let res = c.get(hub.url("/no/such/page")).send().await.expect("sent");
    assert!(res.headers().contains_key("x-request-id"));
}

#[actix_web::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = common::settings(dir.path());
    s.ops.metrics_address = Some("127.0.0.1:0".parse().expect("addr"));
    s.ops_token = Some(OPS_TOKEN.to_string().into());
    let app = hub::Application::build(s, Arc::new(hub::clock::SystemClock))
        .await
        .expect("hub builds");
    let main = app.address();
    let metrics = app.metrics_address().expect("a metrics listener");
    assert_ne!(main, metrics);
    let server = app.server_handle();
    actix_web::rt::spawn(app.run());
    let c = client();
    let status = |url: String, token: bool| {
        let c = c.clone();
        async move {
            let mut req = c.get(url);
            if token {
                req = req.bearer_auth(OPS_TOKEN);
            }
            req.send().await.expect("sent").status()
        }
    };
    let cases = [
        (
            format!("http://{main}/metrics"),
            true,
            StatusCode::NOT_FOUND,
        ),
        (format!("http://{main}/healthz"), false, StatusCode::OK),
        (
            format!("http://{main}/api/v1/products"),
            false,
            StatusCode::OK,
        ),
        (format!("http://{metrics}/metrics"), true, StatusCode::OK),
        (
            format!("http://{metrics}/metrics"),
            false,
            StatusCode::UNAUTHORIZED,
        ),
        (format!("http://{metrics}/healthz"), false, StatusCode::OK),
        (format!("http://{metrics}/readyz"), false, StatusCode::OK),
        (
            format!("http://{metrics}/api/v1/products"),
            false,
            StatusCode::NOT_FOUND,
        ),
        (format!("http://{metrics}/ops"), true, StatusCode::NOT_FOUND),
    ];
    for (url, token, expected) in cases {
        assert_eq!(status(url.clone(), token).await, expected, "{url}");
    }
    let text = metrics_text(&c, format!("http://{metrics}/metrics"), Some(OPS_TOKEN)).await;
    assert!(text.contains("omnihub_active_actors"));
    server.stop(true).await;
}

#[actix_web::test]
async fn readiness_covers_storage_and_every_worker() {
    let hub = common::spawn().await;
    let c = client();
    let body: Value = eventually(WAIT, || async {
        let res = c.get(hub.url("/readyz")).send().await.expect("sent");
        (res.status() == StatusCode::OK).then_some(res)
    })
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(body["status"], "ready");
    for check in [
        "storage",
        "directory",
        "recorder",
        "outbox_workers",
        "analyst",
        "automation",
        "sweeper",
        "edge_replica",
    ] {
        assert_eq!(body["checks"][check], true, "{check}");
    }
    // The analyst stopped: not ready, and the body says why.
    hub.handle.experience.stop();
    let body: Value = eventually(WAIT, || async {
        let res = c.get(hub.url("/readyz")).send().await.expect("sent");
        (res.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(res)
    })
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["checks"]["analyst"], false);
    assert_eq!(body["checks"]["storage"], true);
}

fn message(destination: &str) -> OutboxMessage {
    OutboxMessage::new(
        destination,
        "test.message",
        String::new(),
        "{}".into(),
        time::OffsetDateTime::now_utc(),
    )
}

async fn commit(hub: &common::TestHub, unit: UnitOfWork) {
    hub.handle.storage.commit(unit).await.expect("committed");
}

/// Dead letters for a destination no worker delivers to (nothing moves them but the operator).
async fn dead_letters(hub: &common::TestHub, n: usize) -> Vec<OutboxMessage> {
    let letters: Vec<OutboxMessage> = (0..n)
        .map(|_| OutboxMessage {
            payload: r#"{"email":"dead-letter-payload@example.com"}"#.into(),
            ..message("archive")
        })
        .collect();
    let mut unit = UnitOfWork::new();
    for m in &letters {
        let mut m = m.clone();
        m.attempts = 10;
        m.last_error = Some("503 from the archive".into());
        unit = unit.with(Change::DeadLetter(m));
    }
    commit(hub, unit).await;
    letters
}

async fn backlog(hub: &common::TestHub, destination: &str) -> (u64, u64) {
    let b = hub.handle.storage_backlog().await.expect("backlog");
    b.get(destination).map_or((0, 0), |b| (b.pending, b.dead))
}

#[actix_web::test]
async fn the_outbox_backlog_is_counted_as_it_is_written() {
    let hub = common::spawn().await;
    let queued: Vec<OutboxMessage> = (0..5).map(|_| message("archive")).collect();
    let mut unit = UnitOfWork::new();
    for m in &queued {
        unit = unit.with_message(m.clone());
    }
    commit(&hub, unit).await;
    assert_eq!(backlog(&hub, "archive").await, (5, 0));
    // A reschedule of a queued message is not a new one.
    let mut again = queued[0].clone();
    again.attempts = 1;
    commit(&hub, UnitOfWork::new().with(Change::PutOutbox(again))).await;
    assert_eq!(backlog(&hub, "archive").await, (5, 0));
    commit(
        &hub,
        UnitOfWork::new()
            .with(Change::AckOutbox {
                destination: "archive".into(),
                id: queued[1].id,
            })
            .with(Change::DeadLetter(queued[2].clone())),
    )
    .await;
    assert_eq!(backlog(&hub, "archive").await, (3, 1));
    // Acknowledging twice (a redelivery) changes nothing.
    commit(
        &hub,
        UnitOfWork::new().with(Change::AckOutbox {
            destination: "archive".into(),
            id: queued[1].id,
        }),
    )
    .await;
    commit(
        &hub,
        UnitOfWork::new().with(Change::RetryDeadLetter(queued[2].clone())),
    )
    .await;
    assert_eq!(backlog(&hub, "archive").await, (4, 0));
    let b = hub.handle.storage_backlog().await.expect("backlog");
    assert_eq!(
        b["archive"].oldest.map(|t| t.unix_timestamp()),
        Some(queued[0].created_at.unix_timestamp()),
        "the oldest is the first queued"
    );
    for m in &queued {
        commit(
            &hub,
            UnitOfWork::new().with(Change::AckOutbox {
                destination: "archive".into(),
                id: m.id,
            }),
        )
        .await;
    }
    assert_eq!(backlog(&hub, "archive").await, (0, 0));
    assert!(!hub
        .handle
        .storage_backlog()
        .await
        .expect("backlog")
        .contains_key("archive"));
}

/// A client that keeps cookies and does not follow redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .expect("client")
}

async fn sign_in(hub: &common::TestHub, b: &reqwest::Client) {
    let res = b
        .post(hub.url("/ops/login"))
        .form(&[("token", OPS_TOKEN)])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res.headers()["set-cookie"].to_str().expect("ascii");
    assert!(cookie.starts_with("omnihub_ops="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ops"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(OPS_TOKEN));
}

fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"ops-csrf\" content=\"")
        .expect("csrf meta")
        + 25;
    page[at..].split('"').next().expect("token").to_string()
}

#[actix_web::test]
async fn the_ops_page_needs_a_sign_in_and_retries_and_discards_dead_letters() {
    let hub = spawn_guarded().await;
    let letters = dead_letters(&hub, 2).await;
    let b = browser();
    // Without a session: to the sign-in form; the API answers 401.
    let res = b.get(hub.url("/ops")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/ops/login");
    let res = b.get(hub.url("/ops/live")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let form = b.get(hub.url("/ops/login")).send().await.expect("sent");
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.text().await.expect("html").contains("name=\"token\""));
    let wrong = b
        .post(hub.url("/ops/login"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let foreign = b
        .post(hub.url("/ops/login"))
        .header("Origin", "https://evil.example")
        .form(&[("token", OPS_TOKEN)])
        .send()
        .await
        .expect("sent");
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);

    sign_in(&hub, &b).await;
    let page = b.get(hub.url("/ops")).send().await.expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .contains("frame-ancestors 'none'"));
    let page = page.text().await.expect("html");
    for shown in [
        "Berlin Mitte",
        "archive",
        &letters[0].id.to_string(),
        "503 from the archive",
    ] {
        assert!(page.contains(shown), "{shown} not on the page");
    }
    let csrf = csrf_of(&page);
    assert_eq!(csrf.len(), 64);

    let retry = |id: ulid::Ulid| hub.url(&format!("/ops/outbox/archive/dead/{id}/retry"));
    // With the cookie alone, a change needs the page's CSRF token.
    let res = b.post(retry(letters[0].id)).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = b
        .post(retry(letters[0].id))
        .header("X-Ops-Csrf", "0".repeat(64))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // From another site, even with the token: refused.
    let res = b
        .post(retry(letters[0].id))
        .header("X-Ops-Csrf", &csrf)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(backlog(&hub, "archive").await, (0, 2));

    let res = b
        .post(retry(letters[0].id))
        .header("X-Ops-Csrf", &csrf)
        .header("Origin", format!("http://{}", hub.addr))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(backlog(&hub, "archive").await, (1, 1));
    let res = b
        .delete(hub.url(&format!("/ops/outbox/archive/dead/{}", letters[1].id)))
        .header("X-Ops-Csrf", &csrf)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(backlog(&hub, "archive").await, (1, 0));
    // Both changes are in the audit list, by the ops token, with what identifies the message
    // (never its payload).
    let audit: serde_json::Value = client()
        .get(hub.url("/api/v1/backoffice/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let entries = audit["entries"].as_array().expect("entries");
    for (action, letter) in [
        ("outbox.dead_letter.retry", &letters[0]),
        ("outbox.dead_letter.discard", &letters[1]),
    ] {
        let entry = entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("{action} not audited: {audit}"));
        assert_eq!(entry["who"], "ops-token");
        assert_eq!(
            entry["subject"],
            format!("dead_letter/archive/{}", letter.id)
        );
        assert!(entry["before"]
            .as_str()
            .expect("before")
            .contains("503 from the archive"));
        assert!(!entry
            .to_string()
            .contains("dead-letter-payload@example.com"));
    }

    // Signed out: the cookie is gone.
    let res = b.post(hub.url("/ops/logout")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = b.get(hub.url("/ops")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[actix_web::test]
async fn no_configured_secret_appears_on_the_page_or_in_the_feed() {
    let hub = spawn_guarded().await;
    dead_letters(&hub, 1).await;
    let b = browser();
    sign_in(&hub, &b).await;
    let page = b
        .get(hub.url("/ops"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html");
    let mut feed = Sse::open(&b, hub.url("/ops/live")).await;
    let event = feed.next_json().await.to_string();
    let snapshot = b
        .get(hub.url("/ops/snapshot"))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("json");
    let metrics = metrics_text(&client(), hub.url("/metrics"), Some(OPS_TOKEN)).await;
    for secret in [
        OPS_TOKEN,
        ADMIN_TOKEN,
        PAYMENTS_SECRET,
        BERLIN,
        "whsec_omnihub_demo",
        "whsec_oms_demo",
        "oms_test_key",
    ] {
        for (what, text) in [
            ("page", &page),
            ("feed", &event),
            ("snapshot", &snapshot),
            ("metrics", &metrics),
        ] {
            assert!(!text.contains(secret), "{secret} in the {what}");
        }
    }
}

/// A Server-Sent Events stream read event by event.
struct Sse {
    res: reqwest::Response,
    buffer: String,
}

impl Sse {
    async fn open(c: &reqwest::Client, url: String) -> Sse {
        let res = c.get(url).send().await.expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Sse {
            res,
            buffer: String::new(),
        }
    }

    /// The data of the next `snapshot` event, as JSON.
    async fn next_json(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .filter(|_| event.contains("event: snapshot"))
                {
                    return serde_json::from_str(data).expect("JSON data");
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.res.chunk())
                .await
                .expect("an event in time")
                .expect("readable")
                .expect("the stream goes on");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until `check` finds what it waits for.
    async fn until<T>(&mut self, mut check: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let event = self.next_json().await;
            if let Some(found) = check(&event) {
                return found;
            }
            assert!(std::time::Instant::now() < deadline, "not seen: {event}");
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A store node's end of the sync socket: connected, said hello, reports its boards.
async fn node_connects(hub: &common::TestHub) -> Socket {
    let mut req = format!("ws://{}/api/v1/edge/sync", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {BERLIN}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connected");
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        replica: ReplicaId("berlin".into()),
        location: LocationId("store-berlin".into()),
        have: Vector::new(),
        catalog_version: 0,
        time_ms: time::OffsetDateTime::now_utc().unix_timestamp() as u64 * 1000,
        pending: 3,
        catalog_fingerprint: String::new(),
        catalog_deltas: false,
        coupons: false,
    };
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() as u64 * 1000;
    let report = Frame::BoardsReport {
        boards: vec![
            protocol::board::BoardReport {
                id: "entrance".into(),
                name: "Entrance TV".into(),
                connections: 1,
                last_seen_ms: Some(now_ms),
                dark: false,
            },
            protocol::board::BoardReport {
                id: "kiosk".into(),
                name: "Coffee kiosk".into(),
                connections: 0,
                last_seen_ms: None,
                dark: true,
            },
        ],
    };
    for frame in [hello, report] {
        ws.send(Message::Binary(
            encode_frame(&frame).expect("encodes").into(),
        ))
        .await
        .expect("sent");
    }
    ws
}

fn node_of(event: &Value) -> Value {
    event["snapshot"]["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["replica"] == "berlin"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[actix_web::test]
async fn the_live_feed_shows_a_node_and_its_boards_come_and_go() {
    let hub = spawn_guarded().await;
    let b = browser();
    sign_in(&hub, &b).await;
    let mut feed = Sse::open(&b, hub.url("/ops/live")).await;
    let first = feed.next_json().await;
    assert_eq!(node_of(&first)["connected"], false);
    assert!(first["html"]["nodes"]
        .as_str()
        .expect("html")
        .contains("Berlin Mitte"));

    let ws = node_connects(&hub).await;
    let online = feed
        .until(|e| {
            let n = node_of(e);
            (n["connected"] == true && n["boards"].as_array().is_some_and(|b| b.len() == 2))
                .then_some(e.clone())
        })
        .await;
    let node = node_of(&online);
    assert_eq!(node["boards"][0]["online"], true);
    assert_eq!(node["boards"][1]["online"], false);
    assert!(online["html"]["boards"]
        .as_str()
        .expect("html")
        .contains("Entrance TV"));
    let metrics =
        parse_exposition(&metrics_text(&client(), hub.url("/metrics"), Some(OPS_TOKEN)).await);
    assert_eq!(metrics["omnihub_edge_nodes_connected"], 1.0);
    assert_eq!(metrics["omnihub_boards_online{node=\"berlin\"}"], 1.0);
    assert_eq!(metrics["omnihub_boards_configured{node=\"berlin\"}"], 2.0);

    // The link is cut: the page shows the node offline, since when.
    drop(ws);
    let offline = feed
        .until(|e| {
            let n = node_of(e);
            (n["connected"] == false && n["since"].is_string()).then_some(e.clone())
        })
        .await;
    assert!(offline["html"]["nodes"]
        .as_str()
        .expect("html")
        .contains("offline"));
}

#[actix_web::test]
async fn viewers_share_one_snapshot_per_tick() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = common::settings(dir.path());
    s.ops.live_every = Duration::from_millis(200);
    let app = hub::Application::build(s, Arc::new(hub::clock::SystemClock))
        .await
        .expect("hub builds");
    let addr = app.address();
    let feed = app.live_feed();
    let server = app.server_handle();
    actix_web::rt::spawn(app.run());
    let c = client();
    let mut viewers = Vec::new();
    for _ in 0..5 {
        viewers.push(Sse::open(&c, format!("http://{addr}/ops/live")).await);
    }
    let start = feed.taken();
    for _ in 0..3 {
        for v in &mut viewers {
            let event = v.next_json().await;
            assert!(event["snapshot"]["at"].is_string());
        }
    }
    let taken = feed.taken() - start;
    // Three rounds of five viewers each: one snapshot per tick, not one per viewer.
    assert!(
        (2..=6).contains(&taken),
        "{taken} snapshots for 15 deliveries"
    );
    server.stop(true).await;
}

#[test]
fn the_grafana_dashboard_is_a_model_over_metrics_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("deploy/grafana/omnihub.json")).expect("read");
    let dashboard: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(dashboard["uid"], "omnihub");
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let sources = ["hub/src/monitor/metrics.rs", "edge/src/metrics.rs"]
        .iter()
        .map(|p| std::fs::read_to_string(root.join(p)).expect("read"))
        .collect::<Vec<_>>()
        .join("\n");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = 0;
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("an id")), "{panel}");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{panel}");
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for t in targets {
            assert!(t["refId"].is_string());
            let expr = t["expr"].as_str().expect("an expression");
            exprs += 1;
            // Every metric the panel reads is one the hub or a node exposes.
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(word.starts_with("omnihub_") || word.starts_with("process_")) {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                assert!(
                    sources.contains(&format!("\"{family}\"")),
                    "{family} (in {expr}) is not a metric of the hub or the node"
                );
            }
        }
    }
    assert!(exprs >= 20, "{exprs} queries");
}
