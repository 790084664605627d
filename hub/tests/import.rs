//! The ERP importer over HTTP, in-process: signed and admin pushes, bad rows, idempotency and
//! ordering, store stock forwarded to an offline node, the admin views, and the scheduled pull
//! from a small feed server resuming from its stored cursor after a restart.

mod common;

use channels::Backend;
use common::{client, eventually, SendForJson};
use hub::config::{EdgeNodeSettings, PullSettings};
use hub::HubSettings;
use protocol::feed::{FeedKind, SIGNATURE_HEADER};
use protocol::{LocationId, Sku};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: &str = "import-admin-token";
const SECRET: &str = "erp-push-secret";
const WAIT: Duration = Duration::from_secs(15);

fn settings(dir: &std::path::Path) -> HubSettings {
    let mut s = common::settings(dir);
    s.admin_token = Some(ADMIN.to_string().into());
    s.import.push_secret = Some(SECRET.to_string().into());
    s.edge.nodes = vec![EdgeNodeSettings {
        replica: "berlin".into(),
        location: "store-berlin".into(),
        name: "Berlin".into(),
        credential_sha256: hex::encode(hub::auth::token_hash("berlin-credential")),
    }];
    s
}

async fn spawn_with(make: impl FnOnce(&std::path::Path) -> HubSettings) -> common::TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = make(dir.path());
    common::spawn_with(dir, s, Arc::new(hub::clock::SystemClock), true).await
}

async fn spawn() -> common::TestHub {
    spawn_with(settings).await
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hub::payments::webhook::sign(secret, t, body))
}

/// A push signed with `secret` at time `t`.
fn signed(
    c: &reqwest::Client,
    hub: &common::TestHub,
    feed: &str,
    content_type: &str,
    body: &str,
    secret: &str,
    t: i64,
) -> reqwest::RequestBuilder {
    c.post(hub.url(&format!("/api/v1/import/{feed}")))
        .header("content-type", content_type)
        .header(SIGNATURE_HEADER, signature(secret, t, body.as_bytes()))
        .body(body.to_string())
}

fn push(
    c: &reqwest::Client,
    hub: &common::TestHub,
    feed: &str,
    rows: Value,
) -> reqwest::RequestBuilder {
    let body = json!({ "rows": rows }).to_string();
    signed(c, hub, feed, "application/json", &body, SECRET, now())
}

async fn status_and_body(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("sent");
    let status = res.status();
    (status, res.json().await.expect("a JSON body"))
}

fn has(hub: &common::TestHub, sku: &str) -> bool {
    hub.handle
        .backend
        .catalog()
        .product_by_sku(&Sku::parse(sku).expect("sku"))
        .is_some()
}

fn price(hub: &common::TestHub, sku: &str) -> i64 {
    let sku = Sku::parse(sku).expect("sku");
    let catalog = hub.handle.backend.catalog();
    catalog
        .product_by_sku(&sku)
        .and_then(|p| p.variant(&sku))
        .map(|v| v.price.minor)
        .expect("in the catalog")
}

fn counts(report: &Value) -> [u64; 4] {
    ["applied", "unchanged", "stale", "rejected"].map(|k| report[k].as_u64().expect("a count"))
}

fn product(code: &str, sku: &str, name: &str, price: &str, version: u32) -> Value {
    json!({"product": code, "sku": sku, "name": name, "category": "coffee", "price": price,
           "currency": "EUR", "version": version.to_string()})
}

#[actix_web::test]
async fn signed_pushes_are_applied_and_anything_else_refused_with_a_reason() {
    let hub = spawn().await;
    let c = client();
    let (status, report) = status_and_body(push(
        &c,
        &hub,
        "products",
        json!([product("ERP-1", "ERP-1-A", "Dark Roast", "9.90", 1)]),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(counts(&report), [1, 0, 0, 0]);
    assert_eq!(
        (report["source"].as_str(), report["by"].as_str()),
        (Some("push"), Some("erp"))
    );
    assert!(has(&hub, "ERP-1-A"));

    let body = json!({"rows": [product("ERP-2", "ERP-2-A", "Light Roast", "8.90", 1)]}).to_string();
    let refused = [
        (
            signed(
                &c,
                &hub,
                "products",
                "application/json",
                &body,
                "wrong-secret",
                now(),
            ),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            signed(
                &c,
                &hub,
                "products",
                "application/json",
                &body,
                SECRET,
                now() - 3600,
            ),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            c.post(hub.url("/api/v1/import/products"))
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, "v1=abc")
                .body(body.clone()),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            c.post(hub.url("/api/v1/import/products"))
                .header("content-type", "application/json")
                .body(body.clone()),
            StatusCode::UNAUTHORIZED,
            "import_auth_required",
        ),
        (
            c.post(hub.url("/api/v1/import/products"))
                .bearer_auth("not-the-admin-token")
                .header("content-type", "application/json")
                .body(body.clone()),
            StatusCode::UNAUTHORIZED,
            "bad_token",
        ),
        (
            signed(&c, &hub, "orders", "application/json", &body, SECRET, now()),
            StatusCode::NOT_FOUND,
            "unknown_feed",
        ),
        (
            signed(&c, &hub, "products", "text/plain", &body, SECRET, now()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            signed(
                &c,
                &hub,
                "products",
                "application/json",
                "{\"rows\": [",
                SECRET,
                now(),
            ),
            StatusCode::BAD_REQUEST,
            "unreadable_body",
        ),
        (
            signed(
                &c,
                &hub,
                "products",
                "application/json",
                "{\"feed\":\"stock\",\"rows\":[]}",
                SECRET,
                now(),
            ),
            StatusCode::BAD_REQUEST,
            "unreadable_body",
        ),
        (
            c.get(hub.url("/api/v1/import/products")).bearer_auth(ADMIN),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in refused {
        let (got, body) = status_and_body(req).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(!body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty());
    }
    assert!(!has(&hub, "ERP-2-A"), "nothing refused was applied");

    // The admin token works too (the CLI's upload), with CSV.
    let csv = "product,sku,name,category,price,currency,version\nERP-2,ERP-2-A,Light Roast,coffee,8.90,EUR,1\n";
    let (status, report) = status_and_body(
        c.post(hub.url("/api/v1/import/products"))
            .bearer_auth(ADMIN)
            .header("content-type", "text/csv; charset=utf-8")
            .body(csv),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["source"].as_str(), report["by"].as_str()),
        (Some("upload"), Some("admin"))
    );
    assert!(has(&hub, "ERP-2-A"));
}

#[actix_web::test]
async fn without_a_push_secret_signed_pushes_are_off() {
    let hub = spawn_with(|dir| {
        let mut s = settings(dir);
        s.import.push_secret = None;
        s
    })
    .await;
    let (status, body) = status_and_body(push(&client(), &hub, "products", json!([]))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("signed_push_off"))
    );
}

#[actix_web::test]
async fn a_body_over_the_limit_is_refused_with_413_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = spawn().await;
    let mut stream = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connects");
    let head = format!(
        "POST /api/v1/import/products HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        hub.addr,
        64 * 1024 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).await.expect("written");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
}

/// A back-office user with `roles` and an API token of theirs.
async fn user_token(
    hub: &common::TestHub,
    c: &reqwest::Client,
    email: &str,
    roles: &[&str],
) -> String {
    let user = c
        .post(hub.url("/api/v1/admin/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"email": email, "name": "Importer", "roles": roles}))
        .json_body()
        .await;
    let id = user["id"].as_str().expect("a user id");
    let token = c
        .post(hub.url(&format!("/api/v1/admin/users/{id}/tokens")))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "import"}))
        .json_body()
        .await;
    token["token"].as_str().expect("a token").to_string()
}

fn upload(
    c: &reqwest::Client,
    hub: &common::TestHub,
    feed: &str,
    token: &str,
    rows: Value,
) -> reqwest::RequestBuilder {
    c.post(hub.url(&format!("/api/v1/import/{feed}")))
        .bearer_auth(token)
        .json(&json!({ "rows": rows }))
}

#[actix_web::test]
async fn promotions_and_coupons_come_only_from_the_erp_or_the_admin_token() {
    let hub = spawn().await;
    let c = client();
    let merch = user_token(&hub, &c, "merch@example.com", &["merchandiser"]).await;
    let bo_admin = user_token(&hub, &c, "boss@example.com", &["admin"]).await;
    let definition =
        json!({"benefit": {"type": "percent_off_basket", "percent_bp": 500}}).to_string();
    let promotion = |id: &str| json!([{"id": id, "name": "Five off", "definition": definition, "version": "1"}]);
    let coupon = |code: &str| json!([{"code": code, "promotion": "ERP-5", "version": "1"}]);

    // A merchandiser still imports the catalog feeds (the CLI's upload).
    let (status, report) = status_and_body(upload(
        &c,
        &hub,
        "products",
        &merch,
        json!([product("M-1", "M-1-A", "Merch Roast", "6.00", 1)]),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["by"], "merch@example.com");
    assert!(has(&hub, "M-1-A"));

    // Promotions and coupons would arrive approved, past the four-eyes rule: refused for any
    // back-office user, whichever role, with the credential that may import them.
    for token in [&merch, &bo_admin] {
        for (feed, rows) in [
            ("promotions", promotion("ERP-5")),
            ("coupons", coupon("ERP-FIVE")),
        ] {
            let (status, body) = status_and_body(upload(&c, &hub, feed, token, rows)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{feed}: {body}");
            assert_eq!(body["error"]["code"], "feed_needs_erp_or_admin", "{body}");
            let message = body["error"]["message"].as_str().expect("a message");
            assert!(
                message.contains(SIGNATURE_HEADER) && message.contains("admin token"),
                "{message}"
            );
        }
    }
    let promotions = |c: &reqwest::Client| {
        c.get(hub.url("/api/v1/backoffice/promotions/ERP-5"))
            .bearer_auth(&merch)
            .send()
    };
    assert_eq!(
        promotions(&c).await.expect("sent").status(),
        StatusCode::NOT_FOUND,
        "nothing refused was applied"
    );

    // The ERP's signed push and the admin token still import them.
    let (status, report) = status_and_body(push(&c, &hub, "promotions", promotion("ERP-5"))).await;
    assert_eq!(
        (status, counts(&report)),
        (StatusCode::OK, [1, 0, 0, 0]),
        "{report}"
    );
    let (status, report) =
        status_and_body(upload(&c, &hub, "coupons", ADMIN, coupon("ERP-FIVE"))).await;
    assert_eq!(
        (status, counts(&report)),
        (StatusCode::OK, [1, 0, 0, 0]),
        "{report}"
    );
    assert_eq!(promotions(&c).await.expect("sent").status(), StatusCode::OK);
}

/// Sends the head of a signed push whose body never comes, and answers the status line the
/// hub gives without it.
async fn answer_without_body(hub: &common::TestHub, signature: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connects");
    let head = format!(
        "POST /api/v1/import/products HTTP/1.1\r\nHost: {}\r\n{SIGNATURE_HEADER}: {signature}\r\n\
         Content-Type: application/json\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n",
        hub.addr
    );
    stream.write_all(head.as_bytes()).await.expect("written");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_web::test]
async fn a_signed_push_is_refused_before_its_body_is_read() {
    let hub = spawn().await;
    let t = now();
    for (signature, reason) in [
        (format!("t={},v1=00", t - 3600), "more than the"),
        ("v1=00".to_string(), "must be t=<unix time>"),
        (format!("t={t}"), "must be t=<unix time>"),
    ] {
        let text = answer_without_body(&hub, &signature).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{signature}: {text}");
        assert!(
            text.contains("bad_signature") && text.contains(reason),
            "{text}"
        );
    }
    let off = spawn_with(|dir| {
        let mut s = settings(dir);
        s.import.push_secret = None;
        s
    })
    .await;
    let text = answer_without_body(&off, &format!("t={t},v1=00")).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("signed_push_off"), "{text}");
}

#[actix_web::test]
async fn bad_rows_are_reported_whole_and_the_rest_applied() {
    let hub = spawn().await;
    let c = client();
    let csv = "product,sku,name,category,price,currency,barcode,version
GOOD-1,GOOD-1-A,Good One,coffee,5.00,EUR,,1
BAD-1,BAD-1-A,Bad Currency,coffee,5.00,EURO,,1
BAD-2,BAD-2-A,\"Broken \"quote\", here\",coffee,5.00,EUR,,1
BAD-3,BAD-3-A,Bad Barcode,coffee,5.00,EUR,4006381333932,1
BAD-4,,No Sku,coffee,twelve,EUR,,1
GOOD-2,GOOD-2-A,Good Two,coffee,6.00,EUR,4006381333931,1
";
    let (status, report) =
        status_and_body(signed(&c, &hub, "products", "text/csv", csv, SECRET, now())).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(counts(&report), [2, 0, 0, 4], "{report}");
    let errors: Vec<(u64, String)> = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().expect("row"),
                e["field"].as_str().expect("field").to_string(),
            )
        })
        .collect();
    assert!(errors.contains(&(2, "currency".into())), "{errors:?}");
    assert!(
        errors.contains(&(3, String::new())),
        "the malformed record: {errors:?}"
    );
    assert!(errors.contains(&(4, "barcode".into())), "{errors:?}");
    assert!(
        errors.contains(&(5, "sku".into())) && errors.contains(&(5, "price".into())),
        "{errors:?}"
    );
    assert!(has(&hub, "GOOD-1-A") && has(&hub, "GOOD-2-A"));
    for sku in ["BAD-1-A", "BAD-3-A"] {
        assert!(!has(&hub, sku), "{sku} was rejected whole");
    }
    // JSON: a row that is not an object, and an unknown column (a warning, not an error).
    let (_, report) = status_and_body(push(
        &c,
        &hub,
        "prices",
        json!([
            {"sku": "GOOD-1-A", "currency": "EUR", "price": "4.50", "version": "1", "colour": "red"},
            "not a row",
            {"sku": "GOOD-2-A", "currency": "EUR", "price": "-1", "version": "1"},
            {"sku": "NOWHERE", "currency": "EUR", "price": "1.00", "version": "1"},
        ]),
    ))
    .await;
    assert_eq!(counts(&report), [1, 0, 0, 3], "{report}");
    assert_eq!(report["warnings"][0]["field"], "colour");
    assert_eq!(price(&hub, "GOOD-1-A"), 450);
    assert_eq!(price(&hub, "GOOD-2-A"), 600);
}

#[actix_web::test]
async fn the_same_feed_twice_changes_nothing_and_older_versions_are_ignored() {
    let hub = spawn().await;
    let c = client();
    // The seeded BEANS (12.99) is taken over by the price book.
    let rows = json!([
        {"sku": "BEANS", "currency": "EUR", "price": "11.99", "compare_at": "12.99", "version": "2"},
        {"sku": "TEA", "price_list": "member", "currency": "EUR", "price": "3.99", "version": "1"},
    ]);
    let (_, first) = status_and_body(push(&c, &hub, "prices", rows.clone())).await;
    assert_eq!(counts(&first), [2, 0, 0, 0], "{first}");
    assert_eq!(price(&hub, "BEANS"), 1199);
    assert_eq!(price(&hub, "TEA"), 450, "another list is stored, not sold");
    let version = hub.handle.backend.catalog().version;
    let (_, second) = status_and_body(push(&c, &hub, "prices", rows)).await;
    assert_eq!(counts(&second), [0, 2, 0, 0], "{second}");
    assert_eq!(
        hub.handle.backend.catalog().version,
        version,
        "no new snapshot"
    );
    let (_, late) = status_and_body(push(
        &c,
        &hub,
        "prices",
        json!([{"sku": "BEANS", "currency": "EUR", "price": "1.00", "version": "1"}]),
    ))
    .await;
    assert_eq!(counts(&late), [0, 0, 1, 0], "{late}");
    assert_eq!(price(&hub, "BEANS"), 1199);
}

#[actix_web::test]
async fn store_stock_is_queued_for_the_offline_node_and_unknown_locations_rejected() {
    let hub = spawn().await;
    let c = client();
    let (_, report) = status_and_body(push(
        &c,
        &hub,
        "stock",
        json!([
            {"sku": "TEA", "location": "store-berlin", "kind": "level", "quantity": "7", "version": "1"},
            {"sku": "TEA", "location": "store-atlantis", "kind": "level", "quantity": "7", "version": "1"},
            {"sku": "TEA", "location": "online", "kind": "delta", "quantity": "4", "movement": "MV-1", "version": "1"},
            {"sku": "TEA", "location": "online", "kind": "delta", "quantity": "-100", "movement": "MV-2", "version": "1"},
        ]),
    ))
    .await;
    assert_eq!(counts(&report), [2, 0, 0, 2], "{report}");
    assert_eq!(report["errors"][0]["field"], "location");
    assert!(report["errors"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("store-atlantis"));
    assert_eq!(report["errors"][1]["field"], "quantity");
    let node = c
        .get(hub.url("/api/v1/admin/edge/nodes/berlin"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(node["unacknowledged"]["hub_to_node"], 1, "{node}");
    let level = |location: &str| {
        hub.handle
            .inventory
            .level(
                &LocationId(location.into()),
                &Sku::parse("TEA").expect("sku"),
            )
            .map(|l| l.on_hand)
    };
    assert_eq!(
        level("store-berlin").unwrap_or(0),
        0,
        "never applied by the hub"
    );
    assert_eq!(level("online"), Some(9), "5 seeded + 4");
}

#[actix_web::test]
async fn runs_and_cursors_are_there_for_the_admin() {
    let hub = spawn().await;
    let c = client();
    let (_, report) = status_and_body(push(
        &c,
        &hub,
        "products",
        json!([
            product("R-1", "R-1-A", "Roast", "7.00", 1),
            product("R-2", "", "No Sku", "7.00", 1)
        ]),
    ))
    .await;
    let id = report["id"].as_str().expect("id").to_string();
    let runs = c
        .get(hub.url("/api/v1/admin/import/runs?limit=5"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(runs["runs"][0]["id"], id.as_str(), "{runs}");
    assert_eq!(runs["runs"][0]["rejected"], 1);
    let full = c
        .get(hub.url(&format!("/api/v1/admin/import/runs/{id}")))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(full["errors"][0]["field"], "sku", "{full}");
    for (path, status) in [
        ("/api/v1/admin/import/runs/not-an-id", StatusCode::NOT_FOUND),
        (
            "/api/v1/admin/import/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ",
            StatusCode::NOT_FOUND,
        ),
        ("/api/v1/admin/import/runs?limit=x", StatusCode::BAD_REQUEST),
    ] {
        let res = c
            .get(hub.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), status, "{path}");
    }
    let res = c
        .get(hub.url("/api/v1/admin/import/runs"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let cursors = c
        .get(hub.url("/api/v1/admin/import/cursors"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert!(cursors["pull"].is_null(), "no pull configured: {cursors}");
    let feeds: Vec<&str> = cursors["feeds"]
        .as_array()
        .expect("feeds")
        .iter()
        .filter_map(|f| f["feed"].as_str())
        .collect();
    assert!(
        feeds.starts_with(&["products", "prices", "stock"]),
        "{feeds:?}"
    );
}

/// A small ERP: feeds of fixed rows served by cursor `c<n>`, remembering each `since` asked.
#[derive(Default)]
struct Erp {
    products: Vec<Value>,
    asked: Vec<String>,
    /// Answers "more" with the cursor it was given (an ERP bug the pull must not spin on).
    stuck: bool,
}

async fn serve_feed(
    erp: actix_web::web::Data<Mutex<Erp>>,
    feed: actix_web::web::Path<String>,
    query: actix_web::web::Query<std::collections::HashMap<String, String>>,
) -> actix_web::HttpResponse {
    let mut erp = erp.lock().expect("erp");
    let since = query.get("since").cloned().unwrap_or_default();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000);
    let start: usize = match since.strip_prefix('c') {
        Some(n) => n.parse().unwrap_or(0),
        None => 0,
    };
    let rows: Vec<Value> = match feed.as_str() {
        "products" => {
            erp.asked.push(since.clone());
            erp.products
                .iter()
                .skip(start)
                .take(limit)
                .cloned()
                .collect()
        }
        _ => Vec::new(),
    };
    let total = if feed.as_str() == "products" {
        erp.products.len()
    } else {
        0
    };
    let next = start + rows.len();
    let (next_cursor, has_more) = match erp.stuck && feed.as_str() == "products" {
        true => (since, true),
        false => (format!("c{next}"), next < total),
    };
    actix_web::HttpResponse::Ok().json(json!({
        "feed": feed.as_str(), "rows": rows, "next_cursor": next_cursor, "has_more": has_more,
    }))
}

async fn start_erp(erp: Arc<Mutex<Erp>>) -> String {
    let data = actix_web::web::Data::from(erp);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
    let addr = listener.local_addr().expect("addr");
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .route("/feeds/{feed}", actix_web::web::get().to(serve_feed))
    })
    .workers(1)
    .listen(listener)
    .expect("listens")
    .run();
    actix_web::rt::spawn(server);
    format!("http://{addr}")
}

/// A hub in a thread of its own (its own actix System), so it can be stopped and its data
/// directory opened again by the next one.
struct ThreadHub {
    addr: std::net::SocketAddr,
    server: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

fn start_in_thread(settings: HubSettings) -> ThreadHub {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            // The previous hub's last blocking tasks (a flush, a batch) may hold the database a
            // moment after its thread ended: wait for its lock, within a deadline.
            let deadline = std::time::Instant::now() + WAIT;
            let app = loop {
                match hub::Application::build(settings.clone(), Arc::new(hub::clock::SystemClock))
                    .await
                {
                    Ok(app) => break app,
                    Err(e)
                        if e.to_string().contains("could not acquire lock")
                            && std::time::Instant::now() < deadline =>
                    {
                        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("hub builds: {e}"),
                }
            };
            tx.send((app.address(), app.server_handle())).expect("told");
            app.run().await.expect("hub ran");
        });
    });
    let (addr, server) = rx.recv_timeout(WAIT * 2).expect("the hub started");
    ThreadHub {
        addr,
        server,
        thread,
    }
}

async fn cursor_of(c: &reqwest::Client, addr: std::net::SocketAddr) -> Option<String> {
    let v = c
        .get(format!("http://{addr}/api/v1/admin/import/cursors"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    v["feeds"][0]["cursor"].as_str().map(str::to_string)
}

#[actix_web::test]
async fn the_pull_stores_its_cursor_and_resumes_from_it_after_a_restart() {
    let erp = Arc::new(Mutex::new(Erp {
        products: (0..5)
            .map(|i| {
                product(
                    &format!("P{i}"),
                    &format!("P{i}-A"),
                    &format!("Pulled {i}"),
                    "3.00",
                    1,
                )
            })
            .collect(),
        ..Erp::default()
    }));
    let base_url = start_erp(erp.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let make = |dir: &std::path::Path| {
        let mut s = settings(dir);
        s.import.pull = Some(PullSettings {
            base_url: base_url.clone(),
            every: Duration::from_millis(50),
            page_size: 2,
            feeds: vec![FeedKind::Products, FeedKind::Prices],
            ..PullSettings::default()
        });
        s
    };
    let c = client();
    let first = start_in_thread(make(dir.path()));
    eventually(WAIT, || async {
        (cursor_of(&c, first.addr).await.as_deref() == Some("c5")).then_some(())
    })
    .await;
    let runs = c
        .get(format!("http://{}/api/v1/admin/import/runs", first.addr))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    let pulled: Vec<&Value> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["source"] == "pull" && r["feed"] == "products")
        .collect();
    assert_eq!(pulled.len(), 1, "three pages, one run: {runs}");
    assert_eq!(
        (pulled[0]["rows"].as_u64(), pulled[0]["applied"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(pulled[0]["cursor"], "c5");
    first.server.stop(true).await;
    first.thread.join().expect("the first hub stopped");

    {
        let mut erp = erp.lock().expect("erp");
        erp.asked.clear();
        erp.products
            .push(product("P5", "P5-A", "Pulled 5", "3.00", 1));
    }
    let second = start_in_thread(make(dir.path()));
    eventually(WAIT, || async {
        (cursor_of(&c, second.addr).await.as_deref() == Some("c6")).then_some(())
    })
    .await;
    let first_asked = erp.lock().expect("erp").asked.first().cloned();
    assert_eq!(
        first_asked.as_deref(),
        Some("c5"),
        "resumed from the stored cursor"
    );
    let runs = c
        .get(format!("http://{}/api/v1/admin/import/runs", second.addr))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(runs["runs"][0]["rows"], 1, "only the new row: {runs}");
    assert_eq!(runs["runs"][0]["applied"], 1);
    let detail = c
        .get(format!("http://{}/api/v1/products/pulled-5", second.addr))
        .json_body()
        .await;
    assert_eq!(detail["slug"], "pulled-5", "{detail}");
    let status = c
        .get(format!(
            "http://{}/api/v1/admin/import/cursors",
            second.addr
        ))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(status["feeds"][0]["status"]["failures"], 0, "{status}");
    second.server.stop(true).await;
    second.thread.join().expect("the second hub stopped");
}

/// A hub pulling the products feed from `base_url` every 20 ms, two rows a page, backing off
/// up to a minute.
async fn spawn_pulling(base_url: &str) -> common::TestHub {
    spawn_with(|dir| {
        let mut s = settings(dir);
        s.import.pull = Some(PullSettings {
            base_url: base_url.to_string(),
            every: Duration::from_millis(20),
            max_backoff: Duration::from_secs(60),
            page_size: 2,
            feeds: vec![FeedKind::Products],
            ..PullSettings::default()
        });
        s
    })
    .await
}

#[actix_web::test]
async fn a_cursor_that_does_not_advance_fails_the_round_and_backs_off() {
    let erp = Arc::new(Mutex::new(Erp {
        products: (0..3)
            .map(|i| product(&format!("S{i}"), &format!("S{i}-A"), "Stuck", "3.00", 1))
            .collect(),
        stuck: true,
        ..Erp::default()
    }));
    let base_url = start_erp(erp.clone()).await;
    let hub = spawn_pulling(&base_url).await;
    let c = client();
    let status = |c: &reqwest::Client| {
        c.get(hub.url("/api/v1/admin/import/cursors"))
            .bearer_auth(ADMIN)
            .json_body()
    };
    eventually(WAIT, || async {
        (status(&c).await["feeds"][0]["status"]["failures"].as_u64() >= Some(3)).then_some(())
    })
    .await;
    // Asked first, then the status: a round may have begun in between, no more.
    let asked = erp.lock().expect("erp").asked.clone();
    let cursors = status(&c).await;
    let feed = &cursors["feeds"][0];
    let failures = feed["status"]["failures"].as_u64().expect("failures");
    assert!(
        asked.len() as u64 <= failures + 1,
        "one request a round, rounds backed off: {} asks for {failures} failed rounds",
        asked.len()
    );
    assert!(asked.iter().all(String::is_empty), "{asked:?}");
    let error = feed["status"]["last_error"].as_str().expect("an error");
    assert!(error.contains("does not advance"), "{error}");
    assert!(feed["cursor"].is_null(), "no cursor stored: {cursors}");
    let runs = c
        .get(hub.url("/api/v1/admin/import/runs"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    let run = &runs["runs"][0];
    assert_eq!(
        (&run["source"], &run["feed"]),
        (&json!("pull"), &json!("products")),
        "{runs}"
    );
    assert!(
        run["failed"]
            .as_str()
            .is_some_and(|f| f.contains("does not advance")),
        "{runs}"
    );
    assert!(!has(&hub, "S0-A"), "a page that loops is not applied");
}

#[actix_web::test]
async fn a_pulled_round_of_products_is_published_as_one_catalog_snapshot() {
    let erp = Arc::new(Mutex::new(Erp::default()));
    let base_url = start_erp(erp.clone()).await;
    let hub = spawn_pulling(&base_url).await;
    let c = client();
    let cursor = |c: &reqwest::Client| {
        c.get(hub.url("/api/v1/admin/import/cursors"))
            .bearer_auth(ADMIN)
            .json_body()
    };
    // A first round with nothing to import, then five products in three pages.
    eventually(WAIT, || async {
        (cursor(&c).await["feeds"][0]["cursor"] == "c0").then_some(())
    })
    .await;
    let before = hub.handle.backend.catalog().version;
    erp.lock().expect("erp").products = (0..5)
        .map(|i| {
            product(
                &format!("B{i}"),
                &format!("B{i}-A"),
                &format!("Batch {i}"),
                "3.00",
                1,
            )
        })
        .collect();
    eventually(WAIT, || async {
        (cursor(&c).await["feeds"][0]["cursor"] == "c5").then_some(())
    })
    .await;
    assert!((0..5).all(|i| has(&hub, &format!("B{i}-A"))));
    assert_eq!(
        hub.handle.backend.catalog().version,
        before + 1,
        "three pages, one snapshot"
    );
}
