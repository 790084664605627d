//! Promotions that come with the catalog: a fake hub sends a `Catalog` version whose part 0
//! carries promotions; the node switches to it, prices sales with them on the POS channel in its
//! own store (payments and change against the discounted total), shows what applied over HTTP,
//! keeps them across a restart while offline, and drops one the next version no longer has.

mod common;

use common::*;
use edge_node::{EdgeHandle, EdgeNode};
use futures_util::StreamExt;
use protocol::promotion::{Promotion, PromotionId, PromotionSpec};
use protocol::replication::sync::Frame;
use protocol::replication::ReplicaId;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn promotion(id: &str, seq: u64, spec: &str) -> Promotion {
    Promotion {
        id: PromotionId::parse(id).expect("valid id"),
        name: format!("Promotion {id}"),
        spec: PromotionSpec::from_json(spec).expect("valid spec"),
        created_seq: seq,
    }
}

/// 15 % off coffee at the tills of this store; tea three for two; two that must not apply here:
/// one for the web only, one for another store.
fn promotions() -> Vec<Promotion> {
    vec![
        promotion(
            "COF15",
            1,
            r#"{"conditions": [{"type": "channel", "any_of": ["pos"]},
                               {"type": "store", "any_of": ["store-berlin"]}],
                "combination": {"type": "stackable", "group": "coffee"},
                "benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["COF-1"]}, "percent_bp": 1500}}"#,
        ),
        promotion(
            "TEA3FOR2",
            2,
            r#"{"combination": {"type": "stackable", "group": "tea"},
                "benefit": {"type": "buy_x_get_y", "buy": {"type": "skus", "skus": ["TEA-1"]}, "buy_quantity": 2,
                            "get": {"type": "skus", "skus": ["TEA-1"]}, "get_quantity": 1, "percent_bp": 10000}}"#,
        ),
        promotion(
            "WEB50",
            3,
            r#"{"conditions": [{"type": "channel", "any_of": ["web"]}],
                "combination": {"type": "stackable", "group": "web"},
                "benefit": {"type": "percent_off_basket", "percent_bp": 5000}}"#,
        ),
        promotion(
            "PARIS20",
            4,
            r#"{"conditions": [{"type": "store", "any_of": ["store-paris"]}],
                "combination": {"type": "stackable", "group": "paris"},
                "benefit": {"type": "percent_off_basket", "percent_bp": 2000}}"#,
        ),
    ]
}

async fn start_node(dir: &Path, hub_url: &str) -> EdgeHandle {
    EdgeNode::start(settings(dir, hub_url))
        .await
        .expect("starts")
}

/// Hello → Welcome (the hub has nothing of the node's and says its catalog is `version`).
async fn welcome(session: &mut HubSession, version: u64) {
    match session.recv().await {
        Frame::Hello { .. } => {}
        other => panic!("expected Hello, got {other:?}"),
    }
    session
        .send(&Frame::Welcome {
            have: BTreeMap::from([(ReplicaId("berlin".into()), 0)]),
            catalog_version: version,
            hub_time_ms: edge_node::store::now_ms(),
        })
        .await;
}

/// The catalog at `version` in two parts, the promotions in part 0 beside the categories.
async fn send_catalog(
    session: &mut HubSession,
    node: &EdgeHandle,
    version: u64,
    promotions: Vec<Promotion>,
) {
    let (categories, products) = catalog();
    let (first, second) = products.split_at(1);
    session
        .send(&Frame::Catalog {
            version,
            part: 0,
            parts: 2,
            categories,
            promotions,
            products: first.to_vec(),
            fingerprint: String::new(),
        })
        .await;
    session
        .send(&Frame::Catalog {
            version,
            part: 1,
            parts: 2,
            categories: Vec::new(),
            promotions: Vec::new(),
            products: second.to_vec(),
            fingerprint: String::new(),
        })
        .await;
    let store = node.store();
    eventually(5, "the catalog switch", || {
        (store.catalog().version() == version).then_some(())
    })
    .await;
}

async fn call(
    node: &EdgeHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", node.base_url))
        .bearer_auth(API_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("answers");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn sell(node: &EdgeHandle, payments: Value) -> (StatusCode, Value) {
    call(
        node,
        reqwest::Method::POST,
        "/api/v1/sales",
        Some(json!({
            "lines": [{"sku": "COF-1", "quantity": 2}, {"sku": "TEA-1", "quantity": 3}],
            "payments": payments,
            "clerk": "anna",
        })),
    )
    .await
}

fn applied(sale: &Value) -> Vec<(String, String)> {
    sale["promotions"]["applied"]
        .as_array()
        .expect("applied promotions")
        .iter()
        .map(|a| {
            (
                a["id"].as_str().expect("id").to_string(),
                a["amount"].as_str().expect("amount").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_arrive_with_the_catalog_and_discount_sales_online_offline_and_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = FakeHub::start(Door::Check).await;
    let node = start_node(dir.path(), &hub.url).await;
    let mut session = hub.session().await;
    welcome(&mut session, 2).await;
    send_catalog(&mut session, &node, 2, promotions()).await;
    let store = node.store();
    store.adjust(&receipt("COF-1", 40), None).expect("receipt");
    store.adjust(&receipt("TEA-1", 40), None).expect("receipt");

    let (status, listed) = call(&node, reqwest::Method::GET, "/api/v1/promotions", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["catalog_version"], 2);
    let ids: Vec<&str> = listed["promotions"]
        .as_array()
        .expect("promotions")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["COF15", "TEA3FOR2", "WEB50", "PARIS20"]);

    // 2 coffees at 4.99 (19 %) and 3 teas at 2.50 (7 %): 17.48 at shelf prices. 15 % off the
    // coffees is 1.50 (1.497 rounded), the third tea is free (2.50): 13.48 to pay. The web and
    // Paris promotions do not apply at this till.
    let (status, sale) = sell(&node, json!([{"method": "cash", "amount": "20.00"}])).await;
    assert_eq!(status, StatusCode::CREATED, "{sale}");
    assert_eq!(
        (&sale["subtotal"], &sale["discount"], &sale["total"]),
        (&json!("17.48"), &json!("4.00"), &json!("13.48"))
    );
    assert_eq!(
        sale["change_due"], "6.52",
        "change from the discounted total"
    );
    assert_eq!(
        applied(&sale),
        [
            ("COF15".to_string(), "1.50".to_string()),
            ("TEA3FOR2".to_string(), "2.50".to_string())
        ]
    );
    let lines: Vec<(&str, &str, &str)> = sale["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().expect("sku"),
                l["discount"].as_str().expect("discount"),
                l["total"].as_str().expect("total"),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [("COF-1", "1.50", "8.48"), ("TEA-1", "2.50", "5.00")]
    );
    // Tax per rate on the discounted lines: 19 % in 8.48 is 1.35, 7 % in 5.00 is 0.33.
    let taxes: Vec<(u64, &str)> = sale["taxes"]
        .as_array()
        .expect("taxes")
        .iter()
        .map(|t| {
            (
                t["rate_bp"].as_u64().expect("rate"),
                t["tax"].as_str().expect("tax"),
            )
        })
        .collect();
    assert_eq!(taxes, [(700, "0.33"), (1900, "1.35")]);
    let id = sale["id"].as_str().expect("id").to_string();
    let (status, again) = call(
        &node,
        reqwest::Method::GET,
        &format!("/api/v1/sales/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["promotions"], sale["promotions"]);
    assert_eq!(again["discount"], "4.00");
    // The record that goes to the hub says what applied (and not what did not).
    let record = store
        .find_sale(&id)
        .expect("reads")
        .expect("found")
        .entry
        .sale;
    assert_eq!(record.total.minor, 1348);
    assert_eq!(record.promotions.applied.len(), 2);
    assert!(record.promotions.not_applied.is_empty());

    // Card covers the discounted total exactly; the shelf total would overpay by card.
    let (status, _) = sell(&node, json!([{"method": "card", "amount": "13.48"}])).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, refused) = sell(&node, json!([{"method": "card", "amount": "17.48"}])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "overpaid");

    // Restarted with the hub unreachable: the promotions are still there, sales still get them.
    // (The hub side keeps reading, so the node's close is answered.)
    drop(store);
    let drained = tokio::spawn(async move { while session.ws.next().await.is_some() {} });
    node.stop().await.expect("stops");
    drained.await.expect("drained");
    let unreachable = FakeHub::start(Door::Refuse).await;
    let node = start_node(dir.path(), &unreachable.url).await;
    assert!(!node.sync_state().connected);
    assert_eq!(node.store().catalog().promotions.len(), 4);
    let (status, sale) = sell(&node, json!([{"method": "cash", "amount": "13.48"}])).await;
    assert_eq!(status, StatusCode::CREATED, "{sale}");
    assert_eq!(
        (&sale["total"], &sale["change_due"]),
        (&json!("13.48"), &json!("0.00"))
    );
    assert_eq!(applied(&sale).len(), 2);
    node.stop().await.expect("stops");

    // Back online, the hub's next version no longer has the coffee promotion (it ended).
    let node = start_node(dir.path(), &hub.url).await;
    let mut session = hub.session().await;
    welcome(&mut session, 3).await;
    let left: Vec<Promotion> = promotions()
        .into_iter()
        .filter(|p| p.id.as_str() != "COF15")
        .collect();
    send_catalog(&mut session, &node, 3, left).await;
    let (status, sale) = sell(&node, json!([{"method": "cash", "amount": "20.00"}])).await;
    assert_eq!(status, StatusCode::CREATED, "{sale}");
    assert_eq!(
        (&sale["discount"], &sale["total"]),
        (&json!("2.50"), &json!("14.98"))
    );
    assert_eq!(
        applied(&sale),
        [("TEA3FOR2".to_string(), "2.50".to_string())]
    );
    let (_, listed) = call(&node, reqwest::Method::GET, "/api/v1/promotions", None).await;
    assert_eq!(listed["promotions"].as_array().map(Vec::len), Some(3));
    let drained = tokio::spawn(async move { while session.ws.next().await.is_some() {} });
    node.stop().await.expect("stops");
    drained.await.expect("drained");
}
