//! The node's HTTP API against a real server on port 0 (the hub is unreachable: the node keeps
//! selling): authentication, sales, refusals with JSON bodies, stock, products, deficits, sync
//! status, health.

mod common;

use common::*;
use edge_node::{EdgeHandle, EdgeNode};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn start() -> (tempfile::TempDir, EdgeHandle, reqwest::Client) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens there: the node is offline from the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let node = EdgeNode::start(settings(dir.path(), &format!("ws://127.0.0.1:{port}/sync")))
        .await
        .expect("starts");
    let (categories, products) = catalog();
    let store = node.store();
    tokio::task::spawn_blocking(move || {
        store.apply_catalog_chunk(1, 1, 1, categories, Vec::new(), products)
    })
    .await
    .expect("joins")
    .expect("catalog installs");
    (dir, node, reqwest::Client::new())
}

async fn call(
    client: &reqwest::Client,
    node: &EdgeHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client
        .request(method, format!("{}{path}", node.base_url))
        .bearer_auth(API_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("answers");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_sells_over_http_while_the_hub_is_unreachable() {
    let (_dir, node, client) = start().await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    let (status, body) = call(
        &client,
        &node,
        post.clone(),
        "/api/v1/stock/adjustments",
        Some(json!({"kind": "receipt", "sku": "COF-1", "units": 5, "reason": "delivery 42"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["rights_created"], 5);

    let sale_body = json!({
        "lines": [{"sku": "COF-1", "quantity": 2}, {"barcode": "4000000000011", "quantity": 1}],
        "payments": [{"method": "card", "amount": "10.00", "reference": "T-77"}, {"method": "cash", "amount": "5.00"}],
        "clerk": "anna"
    });
    let res = client
        .post(format!("{}/api/v1/sales", node.base_url))
        .bearer_auth(API_TOKEN)
        .header("Idempotency-Key", "till-1-0001")
        .json(&sale_body)
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::CREATED);
    let sold: Value = res.json().await.expect("json");
    assert_eq!(sold["number"], "BERLIN-000001");
    assert_eq!(sold["total"], "14.97");
    assert_eq!(sold["currency"], "EUR");
    assert_eq!(sold["change_due"], "0.03");
    assert_eq!(
        sold["lines"][0]["quantity"], 3,
        "lines of one SKU are added up"
    );
    assert_eq!(sold["lines"][0]["unit_price"], "4.99");

    let res = client
        .post(format!("{}/api/v1/sales", node.base_url))
        .bearer_auth(API_TOKEN)
        .header("Idempotency-Key", "till-1-0001")
        .json(&sale_body)
        .send()
        .await
        .expect("answers");
    assert_eq!(
        res.headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let again: Value = res.json().await.expect("json");
    assert_eq!(again, sold);

    let (status, found) = call(
        &client,
        &node,
        get.clone(),
        "/api/v1/sales/BERLIN-000001",
        None,
    )
    .await;
    assert_eq!((status, &found["id"]), (StatusCode::OK, &sold["id"]));
    let id = sold["id"].as_str().expect("id").to_string();
    let (status, _) = call(
        &client,
        &node,
        get.clone(),
        &format!("/api/v1/sales/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &client,
        &node,
        get.clone(),
        "/api/v1/sales/berlin-999999",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Only 2 rights left: a sale of 3 is refused, naming the SKU and what is held.
    let (status, body) = call(&client, &node, post.clone(), "/api/v1/sales",
        Some(json!({"lines": [{"sku": "COF-1", "quantity": 3}], "payments": [{"method": "cash", "amount": "20"}]}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_rights");
    assert_eq!(
        body["error"]["details"]["short"][0],
        json!({"sku": "COF-1", "requested": 3, "held": 2})
    );

    // With an override it goes through, with a deficit.
    let (status, body) = call(&client, &node, post.clone(), "/api/v1/sales",
        Some(json!({"lines": [{"sku": "COF-1", "quantity": 3}], "payments": [{"method": "cash", "amount": "20"}],
                    "override_reason": "customer has the units in hand", "clerk": "anna"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["deficits"][0]["units"], 1);

    let (status, body) = call(&client, &node, get.clone(), "/api/v1/deficits", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["deficits"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["deficits"][0]["settlement"], Value::Null);

    let (status, body) = call(&client, &node, get.clone(), "/api/v1/sales?limit=1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sales"].as_array().map(Vec::len), Some(1));
    let cursor = body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, body) = call(
        &client,
        &node,
        get.clone(),
        &format!("/api/v1/sales?limit=5&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(body["sales"][0]["number"], "BERLIN-000001");
    assert_eq!(body["next_cursor"], Value::Null);

    let (status, body) = call(&client, &node, get.clone(), "/api/v1/stock", None).await;
    assert_eq!(status, StatusCode::OK);
    let cof = body["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["sku"] == "COF-1"))
        .cloned()
        .expect("listed");
    assert_eq!(
        (
            cof["on_hand"].as_i64(),
            cof["node_rights"].as_u64(),
            cof["hub_rights"].as_u64()
        ),
        (Some(-1), Some(0), Some(0))
    );
    let (status, body) = call(&client, &node, get.clone(), "/api/v1/stock/TEA-1", None).await;
    assert_eq!(
        (status, body["on_hand"].as_i64()),
        (StatusCode::OK, Some(0))
    );
    let (status, _) = call(&client, &node, get.clone(), "/api/v1/stock/NOPE-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = call(
        &client,
        &node,
        get.clone(),
        "/api/v1/products?q=coffee",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["products"][0]["variants"][0]["price"], "4.99");
    let (_, body) = call(
        &client,
        &node,
        get.clone(),
        "/api/v1/products?barcode=4000000000035",
        None,
    )
    .await;
    assert_eq!(body["products"][0]["name"], "Mug");

    let (status, body) = call(&client, &node, get.clone(), "/api/v1/sync", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["connected"], false);
    assert_eq!(body["pending"]["entries"], 3);
    assert_eq!(body["catalog_version"], 1);
    assert!(body["pending"]["items"].as_u64().unwrap_or(0) >= 3);

    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_that_say_what_to_fix() {
    let (_dir, node, client) = start().await;
    let url = format!("{}/api/v1/sales", node.base_url);

    let res = client
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthenticated");
    let res = client
        .get(format!("{}/api/v1/stock", node.base_url))
        .bearer_auth("wrong-token-000000000")
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let res = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{\"lines\": [")
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "malformed_json");

    let post = reqwest::Method::POST;
    let cases = [
        (
            json!({"lines": [{"sku": "COF-1", "quantity": 1, "price": "0.01"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"lines": [{"sku": "COF-1", "quantity": "two"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"lines": [{"sku": "COF-1", "quantity": 0}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_sale",
        ),
        (
            json!({"lines": [{"sku": "NOPE-1", "quantity": 1}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_item",
        ),
        (
            json!({"lines": [{"barcode": "000", "quantity": 1}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_item",
        ),
        (
            json!({"lines": [{"sku": "COF-1", "quantity": 1}], "payments": [{"method": "bitcoin", "amount": "5"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"lines": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_lines",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = call(
            &client,
            &node,
            post.clone(),
            "/api/v1/sales",
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (status, body) = call(
        &client,
        &node,
        post.clone(),
        "/api/v1/sales",
        Some(json!({"lines": [{"sku": "COF-1", "quantity": 1000}]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["details"]["fields"][0]["field"],
        "lines[0].quantity"
    );
    let (status, body) = call(
        &client,
        &node,
        post.clone(),
        "/api/v1/stock/adjustments",
        Some(json!({"kind": "teleport", "sku": "COF-1", "units": 1})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field"))
    );
    let (status, _) = call(
        &client,
        &node,
        reqwest::Method::GET,
        "/api/v1/sales?limit=0",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &client,
        &node,
        reqwest::Method::GET,
        "/api/v1/sales?cursor=nope",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(
        &client,
        &node,
        reqwest::Method::GET,
        "/api/v1/nothing-here",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );

    // Health needs no token.
    let res = client
        .get(format!("{}/healthz", node.base_url))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .get(format!("{}/readyz", node.base_url))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body, json!({"storage": true, "sync_task": true}));

    // Nothing above was written.
    let (_, body) = call(&client, &node, reqwest::Method::GET, "/api/v1/sync", None).await;
    assert_eq!(body["pending"]["entries"], 0);
    node.stop().await.expect("stops");
}
