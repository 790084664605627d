//! Coupons at the till: a fake hub sends a node a coupon's terms and a share of its redemption
//! rights; the node prices sales with the promotion the code unlocks, says which coupon a sale
//! used, refuses with a reason (422, nothing recorded) a code it does not know, and once the
//! link is down redeems exactly the rights it holds, then refuses; back online, its row tells
//! the hub what it used.

mod common;

use common::*;
use edge_node::EdgeNode;
use protocol::promotion::{Promotion, PromotionId, PromotionSpec};
use protocol::replication::sync::{Frame, Item, Scarce};
use protocol::replication::{CouponTerms, Hlc, ReplicaId, Rights};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn spring() -> Promotion {
    Promotion {
        id: PromotionId::parse("SPRING").expect("valid id"),
        name: "Spring coupon".into(),
        spec: PromotionSpec::from_json(
            r#"{"conditions": [{"type": "coupon"}], "benefit": {"type": "percent_off_basket", "percent_bp": 1000}}"#,
        )
        .expect("valid spec"),
        created_seq: 1,
    }
}

async fn sell(node: &edge_node::EdgeHandle, coupons: &[&str]) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/sales", node.base_url))
        .bearer_auth(API_TOKEN)
        .json(&json!({
            "lines": [{"sku": "COF-1", "quantity": 2}],
            "payments": [{"method": "cash", "amount": "20.00"}],
            "coupons": coupons,
        }))
        .send()
        .await
        .expect("answers");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_redeems_its_share_of_a_coupon_offline_then_refuses_with_a_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = FakeHub::start(Door::Check).await;
    let node = EdgeNode::start(settings(dir.path(), &hub.url))
        .await
        .expect("starts");
    let store = node.store();
    let (categories, products) = catalog();
    store
        .apply_catalog_chunk(2, 0, 1, categories, vec![spring()], products)
        .expect("catalog");
    store.adjust(&receipt("COF-1", 40), None).expect("receipt");

    let mut session = hub.session().await;
    assert!(matches!(session.recv().await, Frame::Hello { .. }));
    session
        .send(&Frame::Welcome {
            have: BTreeMap::from([(ReplicaId("berlin".into()), 0)]),
            catalog_version: 2,
            hub_time_ms: edge_node::store::now_ms(),
        })
        .await;
    let me = ReplicaId("berlin".into());
    let mut at_hub = Rights::new();
    at_hub.create(&ReplicaId::hub(), 10);
    at_hub.transfer(&ReplicaId::hub(), &me, 2).expect("held");
    let key = Scarce::Coupon {
        code: "SPRING10".into(),
    };
    session
        .send(&Frame::Deltas {
            origin: ReplicaId::hub(),
            from_seq: 1,
            to_seq: 1,
            items: vec![
                Item::Coupon(CouponTerms {
                    code: "SPRING10".into(),
                    promotion: spring().id,
                    expires_at_ms: None,
                    per_customer: None,
                    limited: true,
                    at: Hlc {
                        ms: edge_node::store::now_ms(),
                        c: 0,
                        r: ReplicaId::hub(),
                    },
                }),
                Item::Rights {
                    key: key.clone(),
                    state: at_hub.row(&ReplicaId::hub()),
                },
            ],
        })
        .await;
    session
        .recv_until(|f| matches!(f, Frame::Ack { seq: 1, .. }).then_some(()))
        .await;

    // A code the hub never sent: refused with why, nothing recorded.
    let (status, refused) = sell(&node, &["VIP-7K2M9Q4X8Z3A"]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_coupon");
    assert!(refused["error"]["message"]
        .as_str()
        .expect("message")
        .contains("only be used online"));

    // The link goes down; the two granted redemptions are used, each sale priced with the
    // promotion and saying which coupon it used.
    drop(session);
    eventually(5, "offline", || (!store.is_connected()).then_some(())).await;
    let (status, listed) = {
        let res = reqwest::Client::new()
            .get(format!("{}/api/v1/coupons", node.base_url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("answers");
        (res.status(), res.json::<Value>().await.expect("json"))
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["coupons"][0]["rights_held"], 2, "{listed}");
    for _ in 0..2 {
        let (status, sale) = sell(&node, &["spring10"]).await;
        assert_eq!(status, StatusCode::CREATED, "{sale}");
        assert_eq!(sale["coupons"], json!(["SPRING10"]));
        assert_eq!(sale["promotions"]["applied"][0]["id"], "SPRING", "{sale}");
        assert_ne!(sale["discount"], "0.00", "{sale}");
    }
    let (status, refused) = sell(&node, &["SPRING10"]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_coupon");
    assert!(
        refused["error"]["message"]
            .as_str()
            .expect("message")
            .contains("holds no more redemptions"),
        "{refused}"
    );
    assert_eq!(
        store.sales(10, None).expect("sales").len(),
        2,
        "the refused sale is not recorded"
    );

    // Back online: the node's row tells the hub it used 2 and created none.
    let mut session = hub.session().await;
    assert!(matches!(session.recv().await, Frame::Hello { .. }));
    session
        .send(&Frame::Welcome {
            have: BTreeMap::from([(me.clone(), 0)]),
            catalog_version: 2,
            hub_time_ms: edge_node::store::now_ms(),
        })
        .await;
    let row = session
        .recv_until(|f| match f {
            Frame::Deltas { items, .. } => items.into_iter().find_map(|i| match i {
                Item::Rights { key: k, state } if k == key => Some(state),
                _ => None,
            }),
            _ => None,
        })
        .await;
    assert_eq!(row.u.get(&me), Some(&2));
    assert_eq!(row.created(), 0);
    drop(store);
    node.stop().await.expect("stops");
}
