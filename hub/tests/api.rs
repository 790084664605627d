//! The JSON API against a real hub on port 0.

mod common;

use common::{client, eventually, spawn, SendForJson};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn error_code(res: reqwest::Response) -> (StatusCode, String) {
    let status = res.status();
    let body: Value = res.json().await.expect("error bodies are JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_string();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message says what to fix"
    );
    (status, code)
}

#[actix_web::test]
async fn catalog_lists_searches_pages_and_details() {
    let hub = spawn().await;
    let c = client();
    let cats: Value = c.get(hub.url("/api/v1/categories")).json_body().await;
    assert_eq!(cats["items"].as_array().map(Vec::len), Some(2));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = hub.url("/api/v1/products?category=coffee&sort=price_asc&limit=7");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = c.get(url).json_body().await;
        assert_eq!(page["total"], 32);
        for item in page["items"].as_array().expect("items") {
            seen.push(item["from_price"]["minor"].as_i64().expect("price"));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 32);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "sorted by price");

    let found: Value = c.get(hub.url("/api/v1/products?q=green")).json_body().await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["slug"], "green-tea");

    let detail: Value = c
        .get(hub.url("/api/v1/products/green-tea"))
        .json_body()
        .await;
    assert_eq!(detail["variants"][0]["sku"], "TEA");
    assert_eq!(detail["variants"][0]["available"], 5);
    assert_eq!(
        detail["variants"][0]["price"],
        json!({"minor": 450, "currency": "EUR"})
    );

    for (url, status, code) in [
        ("/api/v1/products/no-such-thing", 404, "not_found"),
        ("/api/v1/products?category=shoes", 404, "not_found"),
        ("/api/v1/products?sort=cheapest", 400, "bad_sort"),
        ("/api/v1/products?limit=0", 400, "bad_limit"),
        ("/api/v1/products?cursor=zz", 400, "bad_cursor"),
        ("/api/v1/products?limit=abc", 400, "bad_query"),
        ("/api/v1/nowhere", 404, "no_route"),
        (
            "/api/v1/baskets/01ARZ3NDEKTSV4RRFFQ69G5FAV/nowhere",
            404,
            "no_route",
        ),
    ] {
        let (s, got) = error_code(c.get(hub.url(url)).send().await.expect("sent")).await;
        assert_eq!((s.as_u16(), got.as_str()), (status, code), "{url}");
    }
}

#[actix_web::test]
async fn anonymous_basket_lifecycle_and_bad_input() {
    let hub = spawn().await;
    let c = client();
    let created: Value = c.post(hub.url("/api/v1/baskets")).json_body().await;
    let id = created["id"].as_str().expect("id").to_string();
    let token = created["token"].as_str().expect("token").to_string();
    assert_eq!(token.len(), 22, "128 random bits");
    let lines = hub.url(&format!("/api/v1/baskets/{id}/lines"));

    let res = c
        .post(&lines)
        .header("x-basket-token", &token)
        .json(&json!({"sku": "BEANS", "quantity": 2}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.expect("json");
    assert_eq!(view["lines"][0]["quantity"], 2);
    assert_eq!(
        view["lines"][0]["unit_price"]["minor"], 1299,
        "the hub prices the line"
    );
    assert_eq!(view["total"]["minor"], 2598);
    assert_eq!(
        view["taxes"][0]["tax"]["minor"], 170,
        "7% included in 25.98"
    );

    let patch = hub.url(&format!("/api/v1/baskets/{id}/lines/BEANS"));
    let view: Value = c
        .patch(&patch)
        .header("x-basket-token", &token)
        .json(&json!({"quantity": 5}))
        .json_body()
        .await;
    assert_eq!(view["lines"][0]["quantity"], 5);

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(&lines).json(&json!({"sku": "TEA", "quantity": 0})),
            422,
            "quantity_out_of_range",
        ),
        (
            c.post(&lines)
                .json(&json!({"sku": "TEA", "quantity": 1000})),
            422,
            "quantity_out_of_range",
        ),
        (
            c.post(&lines).json(&json!({"sku": "TEA", "quantity": 6})),
            422,
            "insufficient_stock",
        ),
        (
            c.post(&lines).json(&json!({"sku": "CUPS", "quantity": 1})),
            422,
            "insufficient_stock",
        ),
        (
            c.post(&lines).json(&json!({"sku": "NOPE", "quantity": 1})),
            404,
            "not_found",
        ),
        (
            c.post(&lines)
                .json(&json!({"sku": "bad sku!", "quantity": 1})),
            422,
            "invalid_sku",
        ),
        (
            c.post(&lines)
                .json(&json!({"sku": "TEA", "quantity": 1, "unit_price": 1})),
            422,
            "invalid_field",
        ),
        (
            c.post(&lines)
                .header("content-type", "application/json")
                .body("{\"sku\": "),
            400,
            "malformed_json",
        ),
        (
            c.post(&lines)
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"sku\":\"{}\",\"quantity\":1}}",
                    "A".repeat(70 * 1024)
                )),
            413,
            "payload_too_large",
        ),
        (
            c.patch(&patch).json(&json!({"quantity": -1})),
            422,
            "quantity_out_of_range",
        ),
        (
            c.delete(hub.url(&format!("/api/v1/baskets/{id}/lines/TEA"))),
            404,
            "not_found",
        ),
    ];
    for (req, status, code) in cases {
        let (s, got) = error_code(
            req.header("x-basket-token", &token)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!((s.as_u16(), got.as_str()), (status, code));
    }
    let unchanged: Value = c
        .get(hub.url(&format!("/api/v1/baskets/{id}")))
        .header("x-basket-token", &token)
        .json_body()
        .await;
    assert_eq!(
        unchanged["lines"].as_array().map(Vec::len),
        Some(1),
        "refused changes changed nothing"
    );
    assert_eq!(unchanged["version"], 2);

    let res = c
        .delete(hub.url(&format!("/api/v1/baskets/{id}/lines/BEANS")))
        .header("x-basket-token", &token)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    c.post(&lines)
        .header("x-basket-token", &token)
        .json(&json!({"sku": "TEA", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    let cleared: Value = c
        .delete(&lines)
        .header("x-basket-token", &token)
        .json_body()
        .await;
    assert_eq!(cleared["lines"], json!([]));

    // Without the token, or with another basket's, the basket does not exist.
    let (s, _) = error_code(
        c.get(hub.url(&format!("/api/v1/baskets/{id}")))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 404);
    let other: Value = c.post(hub.url("/api/v1/baskets")).json_body().await;
    let other_token = other["token"].as_str().expect("token");
    let (s, _) = error_code(
        c.get(hub.url(&format!("/api/v1/baskets/{id}")))
            .header("x-basket-token", other_token)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = error_code(
        c.get(hub.url("/api/v1/baskets/not-a-ulid"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 404);
}

#[actix_web::test]
async fn customers_register_sign_in_and_see_only_their_own() {
    let hub = spawn().await;
    let c = client();
    let ada = hub.register(&c, "Ada@Example.com").await;
    let ada_token = ada["session_token"].as_str().expect("token").to_string();
    let ada_basket = ada["basket"]["id"].as_str().expect("basket").to_string();

    let (s, code) = error_code(
        c.post(hub.url("/api/v1/customers"))
            .json(
                &json!({"email": "ada@example.com", "name": "Ada", "password": "another long one"}),
            )
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (409, "email_taken"));
    for (body, code) in [
        (
            json!({"email": "nope", "name": "A", "password": "long enough pw"}),
            "invalid_email",
        ),
        (
            json!({"email": "b@example.com", "name": "", "password": "long enough pw"}),
            "invalid_name",
        ),
        (
            json!({"email": "b@example.com", "name": "B", "password": "short"}),
            "weak_password",
        ),
    ] {
        let (s, got) = error_code(
            c.post(hub.url("/api/v1/customers"))
                .json(&body)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!((s.as_u16(), got.as_str()), (422, code));
    }

    let (s, code) = error_code(
        c.post(hub.url("/api/v1/sessions"))
            .json(&json!({"email": "ada@example.com", "password": "wrong password"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (401, "bad_credentials"));
    let phone: Value = c
        .post(hub.url("/api/v1/sessions"))
        .header("x-channel", "mobile")
        .json(&json!({"email": "ADA@example.com ", "password": "correct horse battery"}))
        .json_body()
        .await;
    let phone_token = phone["session_token"].as_str().expect("token").to_string();
    assert_ne!(phone_token, ada_token);
    assert_eq!(
        phone["basket"]["id"],
        ada_basket.as_str(),
        "one basket on every device"
    );

    let me: Value = c
        .get(hub.url("/api/v1/customers/me"))
        .bearer_auth(&phone_token)
        .json_body()
        .await;
    assert_eq!(me["email"], "ada@example.com");
    assert!(me.get("password_hash").is_none());

    // Added on the phone, seen on the laptop.
    let res = c
        .post(hub.url(&format!("/api/v1/baskets/{ada_basket}/lines")))
        .bearer_auth(&phone_token)
        .json(&json!({"sku": "BEANS", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let laptop: Value = c
        .get(hub.url("/api/v1/basket"))
        .bearer_auth(&ada_token)
        .json_body()
        .await;
    assert_eq!(laptop["lines"][0]["sku"], "BEANS");

    // Bob sees neither Ada's basket nor her timeline.
    let bob = hub.register(&c, "bob@example.com").await;
    let bob_token = bob["session_token"].as_str().expect("token");
    let (s, _) = error_code(
        c.get(hub.url(&format!("/api/v1/baskets/{ada_basket}")))
            .bearer_auth(bob_token)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = error_code(
        c.post(hub.url(&format!("/api/v1/baskets/{ada_basket}/lines")))
            .bearer_auth(bob_token)
            .json(&json!({"sku": "BEANS", "quantity": 1}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 404);

    let ada_events = eventually(Duration::from_secs(5), || async {
        let v: Value = c
            .get(hub.url("/api/v1/customers/me/events"))
            .bearer_auth(&ada_token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let kinds: Vec<String> = v["items"]
            .as_array()?
            .iter()
            .filter_map(|e| e["kind"].as_str().map(String::from))
            .collect();
        kinds
            .contains(&"basket_line_added".to_string())
            .then_some(v)
    })
    .await;
    let items = ada_events["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .all(|e| e["subject"]["id"] == ada["customer"]["id"]),
        "only Ada's own events"
    );
    assert!(items.iter().any(|e| e["kind"] == "registered"));
    assert!(items
        .iter()
        .any(|e| e["kind"] == "signed_in" && e["channel"] == "mobile"));
    let bob_events: Value = c
        .get(hub.url("/api/v1/customers/me/events"))
        .bearer_auth(bob_token)
        .json_body()
        .await;
    assert!(bob_events["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|e| e["subject"]["id"] == bob["customer"]["id"]));

    // Sign out ends the session.
    let res = c
        .delete(hub.url("/api/v1/sessions/current"))
        .bearer_auth(&phone_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 204);
    let (s, code) = error_code(
        c.get(hub.url("/api/v1/customers/me"))
            .bearer_auth(&phone_token)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (401, "invalid_token"));
    let (s, _) = error_code(
        c.get(hub.url("/api/v1/customers/me"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 401);
}

#[actix_web::test]
async fn anonymous_basket_merges_at_sign_in_capped_by_stock() {
    let hub = spawn().await;
    let c = client();
    let ada = hub.register(&c, "merge@example.com").await;
    let token = ada["session_token"].as_str().expect("token");
    let basket = ada["basket"]["id"].as_str().expect("id");
    c.post(hub.url(&format!("/api/v1/baskets/{basket}/lines")))
        .bearer_auth(token)
        .json(&json!({"sku": "TEA", "quantity": 3}))
        .send()
        .await
        .expect("sent");

    let anon: Value = c.post(hub.url("/api/v1/baskets")).json_body().await;
    let anon_id = anon["id"].as_str().expect("id");
    let anon_token = anon["token"].as_str().expect("token");
    for (sku, q) in [("TEA", 4), ("BEANS", 2)] {
        let res = c
            .post(hub.url(&format!("/api/v1/baskets/{anon_id}/lines")))
            .header("x-basket-token", anon_token)
            .json(&json!({"sku": sku, "quantity": q}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 200);
    }
    let signed: Value = c
        .post(hub.url("/api/v1/sessions"))
        .header("x-basket-token", anon_token)
        .json(&json!({"email": "merge@example.com", "password": "correct horse battery"}))
        .json_body()
        .await;
    let lines = signed["basket"]["lines"].as_array().expect("lines");
    let qty = |sku: &str| {
        lines
            .iter()
            .find(|l| l["sku"] == sku)
            .and_then(|l| l["quantity"].as_i64())
    };
    assert_eq!(qty("TEA"), Some(5), "3 + 4 capped at the 5 in stock");
    assert_eq!(qty("BEANS"), Some(2));
    let closed: Value = c
        .get(hub.url(&format!("/api/v1/baskets/{anon_id}")))
        .header("x-basket-token", anon_token)
        .json_body()
        .await;
    assert_eq!(
        closed["lines"],
        json!([]),
        "the anonymous basket is emptied and closed"
    );
    let res = c
        .post(hub.url(&format!("/api/v1/baskets/{anon_id}/lines")))
        .header("x-basket-token", anon_token)
        .json(&json!({"sku": "BEANS", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 422);
}

#[actix_web::test]
async fn sign_in_is_rate_limited_per_account() {
    let dir = tempfile::tempdir().expect("dir");
    let mut s = common::settings(dir.path());
    s.channels.sign_in_per_account_per_minute = 3;
    let hub = common::spawn_with(dir, s, std::sync::Arc::new(hub::clock::SystemClock), true).await;
    let c = client();
    for _ in 0..3 {
        let res = c
            .post(hub.url("/api/v1/sessions"))
            .json(&json!({"email": "victim@example.com", "password": "guess guess guess"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 401);
    }
    let res = c
        .post(hub.url("/api/v1/sessions"))
        .json(&json!({"email": "Victim@example.com", "password": "guess guess guess"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 429);
    let retry: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry));
    let res = c
        .post(hub.url("/api/v1/sessions"))
        .json(&json!({"email": "other@example.com", "password": "guess guess guess"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 401, "another account is not limited");
}

#[actix_web::test]
async fn live_basket_pushes_changes_to_every_device() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let hub = spawn().await;
    let c = client();
    let ada = hub.register(&c, "live@example.com").await;
    let token = ada["session_token"].as_str().expect("token");
    let basket = ada["basket"]["id"].as_str().expect("id");
    let mut req = format!("ws://{}/api/v1/baskets/{basket}/live", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgraded");
    let first = socket.next().await.expect("a frame").expect("ok");
    let first: Value = serde_json::from_str(first.to_text().expect("text")).expect("json");
    assert_eq!(first["id"], basket);

    let started = std::time::Instant::now();
    c.post(hub.url(&format!("/api/v1/baskets/{basket}/lines")))
        .bearer_auth(token)
        .json(&json!({"sku": "BEANS", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    let update = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let frame = socket.next().await.expect("frame").expect("ok");
            if frame.is_text() {
                return frame;
            }
        }
    })
    .await
    .expect("within a second");
    let update: Value = serde_json::from_str(update.to_text().expect("text")).expect("json");
    assert_eq!(update["lines"][0]["sku"], "BEANS");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Someone else's basket cannot be watched; a foreign origin cannot use a cookie.
    let mut req = format!("ws://{}/api/v1/baskets/{basket}/live", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "cookie",
        format!("omnihub_session={token}").parse().expect("header"),
    );
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().expect("header"));
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let mut req = format!("ws://{}/api/v1/baskets/{basket}/live", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "cookie",
        format!("omnihub_session={token}").parse().expect("header"),
    );
    req.headers_mut().insert(
        "origin",
        format!("http://{}", hub.addr).parse().expect("header"),
    );
    assert!(
        tokio_tungstenite::connect_async(req).await.is_ok(),
        "same-origin browsers may"
    );
    let res = c
        .get(hub.url(&format!("/api/v1/baskets/{basket}/live")))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 404, "anonymous callers see nothing");
}

#[actix_web::test]
async fn health_and_openapi() {
    let hub = spawn().await;
    let c = client();
    assert_eq!(
        c.get(hub.url("/healthz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    assert_eq!(
        c.get(hub.url("/readyz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    let doc: Value = c.get(hub.url("/api/v1/openapi.json")).json_body().await;
    assert_eq!(doc["openapi"], "3.0.3");
}

#[actix_web::test]
async fn ops_endpoints_require_the_ops_token_when_one_is_set() {
    let dir = tempfile::tempdir().expect("dir");
    let mut s = common::settings(dir.path());
    s.ops_token = Some(secrecy::SecretString::from("ops-secret-for-tests"));
    let hub = common::spawn_with(dir, s, std::sync::Arc::new(hub::clock::SystemClock), false).await;
    let c = client();
    for path in ["/ops/stats", "/metrics"] {
        let (status, code) = error_code(c.get(hub.url(path)).send().await.expect("sent")).await;
        assert_eq!(
            (status.as_u16(), code.as_str()),
            (401, "ops_token_required"),
            "{path}"
        );
        let wrong = c
            .get(hub.url(path))
            .bearer_auth("ops-secret-for-tesTS")
            .send()
            .await
            .expect("sent");
        assert_eq!(wrong.status(), 401, "{path}");
        let right = c
            .get(hub.url(path))
            .bearer_auth("ops-secret-for-tests")
            .send()
            .await
            .expect("sent");
        assert_eq!(right.status(), 200, "{path}");
    }
    assert_eq!(
        c.get(hub.url("/healthz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200,
        "health stays open"
    );
}

#[actix_web::test]
async fn basket_currency_is_checked() {
    let hub = spawn().await;
    let c = client();
    let url = hub.url("/api/v1/baskets");
    let ok = c
        .post(&url)
        .json(&json!({"currency": "eur"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 201);
    for (body, status, code) in [
        (json!({"currency": "XYZ"}), 422, "unknown_currency"),
        (json!({"currency": "JPY"}), 422, "currency_not_sold"),
        (json!({"currency": "EUR", "price": 1}), 422, "invalid_field"),
    ] {
        let (s, got) = error_code(c.post(&url).json(&body).send().await.expect("sent")).await;
        assert_eq!((s.as_u16(), got.as_str()), (status, code), "{body}");
    }
    let (s, code) = error_code(
        c.post(&url)
            .header("content-type", "application/json")
            .body("{\"currency\":")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "malformed_json"));
    let (s, code) = error_code(
        c.post(&url)
            .body(" ".repeat(70 * 1024))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (413, "payload_too_large"));
}
