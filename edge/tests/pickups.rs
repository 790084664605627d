//! Click-and-collect at the store (issue 6, POS point 7), against a real node on port 0 and a
//! fake hub playing its side of the sync protocol: the hub's `Command(Pickup)` puts an order on
//! the pick list (once, however often it is sent); units on it are refused to a walk-in sale,
//! with or without a manager's override, while the rest of the shelf still sells; picking and
//! the handover work offline and reach the hub as `Item::Pickup` reports when the link is back;
//! a cancellation releases the units (the node creates rights for them again); unknown orders,
//! other stores' orders, a short pick beyond the order and the node's machine token are
//! refused with what to do.

mod common;

use common::pos::*;
use common::*;
use edge_node::{EdgeHandle, EdgeNode, EdgeSettings, StaffRole};
use protocol::replication::sync::{Frame, Item, Scarce};
use protocol::replication::{
    Command, CommandKind, Hlc, PickupLine, PickupOrder, PickupState, ReplicaId, Rights,
};
use protocol::{LocationId, OrderId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const MARA_PIN: &str = "80953172"; // manager
const BEN_PIN: &str = "123456"; // clerk

fn now_ms() -> u64 {
    edge_node::store::now_ms()
}

fn hub_stamp() -> Hlc {
    Hlc {
        ms: now_ms(),
        c: 0,
        r: ReplicaId::hub(),
    }
}

fn node_settings(dir: &std::path::Path, hub: &FakeHub) -> EdgeSettings {
    let mut s = settings(dir, &hub.url);
    s.pos.tills = vec!["1".into()];
    s.pos.staff = vec![
        member("mara", "MARA", StaffRole::Manager, MARA_PIN),
        member("ben", "BEN", StaffRole::Clerk, BEN_PIN),
    ];
    s
}

/// Hello → Welcome, saying the hub has `have` of the node's changes.
async fn handshake(session: &mut HubSession, replica: &ReplicaId, have: u64) {
    let hello = session.recv().await;
    assert!(matches!(hello, Frame::Hello { .. }), "{hello:?}");
    session
        .send(&Frame::Welcome {
            have: BTreeMap::from([(replica.clone(), have)]),
            catalog_version: 1,
            hub_time_ms: now_ms(),
        })
        .await;
}

/// Sends the hub's batch `seq` and waits for the node's acknowledgement of it.
async fn deliver(session: &mut HubSession, seq: u64, items: Vec<Item>) {
    session
        .send(&Frame::Deltas {
            origin: ReplicaId::hub(),
            from_seq: seq,
            to_seq: seq,
            items,
        })
        .await;
    session
        .recv_until(|f| match f {
            Frame::Ack { origin, seq: s } if origin.is_hub() && s >= seq => Some(()),
            _ => None,
        })
        .await;
}

fn order(number: &str, sku_text: &str, quantity: u32, at: LocationId) -> PickupOrder {
    PickupOrder {
        order: OrderId::new(),
        number: number.into(),
        location: at,
        customer_name: "Jo Shopper".into(),
        lines: vec![PickupLine {
            sku: sku(sku_text),
            name: "an item".into(),
            quantity,
        }],
    }
}

fn pickup_command(o: &PickupOrder) -> Item {
    Item::Command(Command {
        id: ulid::Ulid::new(),
        kind: CommandKind::Pickup(o.clone()),
        at: hub_stamp(),
    })
}

/// The hub's row of the counter of `sku` at the store after consuming `units` of the rights
/// the node granted it (`granted`).
fn hub_consumed(node: &ReplicaId, sku_text: &str, granted: u64, units: u64) -> Item {
    let hub = ReplicaId::hub();
    let mut r = Rights::new();
    r.create(node, granted);
    r.transfer(node, &hub, granted).expect("transfer");
    r.consume(&hub, units).expect("consume");
    Item::Rights {
        key: Scarce::Stock {
            sku: sku(sku_text),
            location: location(),
        },
        state: r.row(&hub),
    }
}

async fn stock(node: &EdgeHandle, sku_text: &str) -> edge_node::StockLine {
    let store = node.store();
    let s = sku(sku_text);
    tokio::task::spawn_blocking(move || store.stock_of(&s))
        .await
        .expect("joins")
        .expect("reads")
        .expect("a stock line")
}

async fn pickups(api: &Api, token: &str) -> Value {
    let (status, body) = api
        .call(Method::GET, "/api/v1/pickups", Some(token), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn sale(quantity: u32, override_reason: Option<&str>) -> Value {
    let mut s = json!({
        "lines": [{"sku": "COF-1", "quantity": quantity}],
        "payments": [{"method": "cash", "amount": "100.00"}],
    });
    if let Some(r) = override_reason {
        s["override_reason"] = json!(r);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_list_is_kept_from_walk_ins_and_picked_and_handed_over_offline() {
    let mut hub = FakeHub::start(Door::Check).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = EdgeNode::start(node_settings(dir.path(), &hub))
        .await
        .expect("starts");
    let me = node.store().identity().replica.clone();
    let (categories, products) = catalog();
    install_catalog(&node, categories, products, false).await;
    let mut session = hub.session().await;
    handshake(&mut session, &me, 0).await;
    let api = Api::new(&node);
    api.receive(&[("COF-1", 10)]).await;
    // Connected, the node grants the hub floor((10 − 2) × 50 %) = 4 rights and keeps 6.
    let granted = eventually(5, "the grant to the hub", || {
        let s = node.store().stock_of(&sku("COF-1")).ok().flatten()?;
        (s.hub_rights == 4).then_some(s.hub_rights)
    })
    .await;
    let ben = api.token("ben", BEN_PIN).await;
    let mara = api.token("mara", MARA_PIN).await;
    api.open_till(&ben).await;

    // The hub promised 3 coffees for pickup: its row (3 of its 4 rights consumed) and the
    // pick-list command, in one batch; the same order again (a new command id) in the next.
    let w1 = order("W-000101", "COF-1", 3, location());
    deliver(
        &mut session,
        1,
        vec![hub_consumed(&me, "COF-1", granted, 3), pickup_command(&w1)],
    )
    .await;
    deliver(&mut session, 2, vec![pickup_command(&w1)]).await;
    let list = pickups(&api, &ben).await;
    assert_eq!(
        list["open"], 1,
        "the order is on the pick list once: {list}"
    );
    let p = &list["pickups"][0];
    assert_eq!(
        (&p["number"], &p["status"]),
        (&json!("W-000101"), &json!("waiting"))
    );
    assert_eq!(p["lines"][0]["quantity"], 3);
    let s = stock(&node, "COF-1").await;
    // 7 rights left between node and hub (the node rebalances the hub's share), 10 on hand.
    assert_eq!(
        (s.on_hand, s.value, s.node_rights + s.hub_rights),
        (10, 7, 7),
        "{s:?}"
    );

    // 10 on the shelf, 3 set aside: 8 is refused even with a manager's override, 7 sells
    // (from the node's rights, the rest as a deficit).
    let (status, body) = api.sell(&ben, Some("1"), sale(8, None)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "held_for_pickup"),
        "{body}"
    );
    let (status, body) = api
        .sell(
            &mara,
            Some("1"),
            sale(8, Some("the customer has them in hand")),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "held_for_pickup"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("3 set aside"),
        "{body}"
    );
    let (status, body) = api
        .sell(
            &mara,
            Some("1"),
            sale(7, Some("the customer has them in hand")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api.sell(&mara, Some("1"), sale(1, Some("one more"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "held_for_pickup"),
        "the last 3 are the pickup's: {body}"
    );

    // The link goes down; the clerk picks and hands over offline.
    drop(session);
    eventually(5, "the node to notice it is offline", || {
        (!node.store().is_connected()).then_some(())
    })
    .await;
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/pickups/W-000101/handover",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "not_picked"),
        "{body}"
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/pickups/W-000101/pick",
            Some(API_TOKEN),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "a person picks: {body}"
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/pickups/W-000101/pick",
            Some(&ben),
            None,
            Some(json!({"short": [{"sku": "COF-1", "quantity": 4}]})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_short"),
        "{body}"
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/pickups/W-000101/pick",
            Some(&ben),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("ready_for_pickup")),
        "{body}"
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/pickups/W-000101/handover",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("collected")),
        "{body}"
    );
    let (status, again) = api
        .call(
            Method::POST,
            "/api/v1/pickups/W-000101/handover",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, &again["handed_over_at"]),
        (StatusCode::OK, &body["handed_over_at"]),
        "a second handover changes nothing"
    );
    // The units left the shelf; the rights were the hub's, so the node's are untouched.
    let s = stock(&node, "COF-1").await;
    assert_eq!((s.on_hand, s.node_rights), (0, 0), "{s:?}");
    assert_eq!(pickups(&api, &ben).await["open"], 0);
    let (status, body) = api.sell(&mara, Some("1"), sale(1, Some("found one"))).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "nothing is set aside any more: {body}"
    );

    // Unknown orders are 404.
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/pickups/W-999999/pick",
            Some(&ben),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{body}"
    );

    // Back online: the reports reach the hub (picked, then collected).
    let mut session = hub.session().await;
    handshake(&mut session, &me, 0).await;
    let mut states = Vec::new();
    session
        .recv_until(|f| {
            if let Frame::Deltas { items, .. } = f {
                for i in items {
                    if let Item::Pickup(r) = i {
                        assert_eq!((r.order, &r.location), (w1.order, &location()));
                        states.push(r.state);
                    }
                }
            }
            states.contains(&PickupState::Collected).then_some(())
        })
        .await;
    assert_eq!(states, vec![PickupState::Ready, PickupState::Collected]);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pickup_releases_its_units_and_other_stores_orders_are_ignored() {
    let mut hub = FakeHub::start(Door::Check).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = EdgeNode::start(node_settings(dir.path(), &hub))
        .await
        .expect("starts");
    let me = node.store().identity().replica.clone();
    let (categories, products) = catalog();
    install_catalog(&node, categories, products, false).await;
    let mut session = hub.session().await;
    handshake(&mut session, &me, 0).await;
    let api = Api::new(&node);
    api.receive(&[("COF-1", 10)]).await;
    let granted = eventually(5, "the grant to the hub", || {
        let s = node.store().stock_of(&sku("COF-1")).ok().flatten()?;
        (s.hub_rights == 4).then_some(s.hub_rights)
    })
    .await;
    let ben = api.token("ben", BEN_PIN).await;

    let mine = order("W-000201", "COF-1", 2, location());
    let elsewhere = order("W-000202", "COF-1", 1, LocationId("store-paris".into()));
    deliver(
        &mut session,
        1,
        vec![
            hub_consumed(&me, "COF-1", granted, 2),
            pickup_command(&mine),
            pickup_command(&elsewhere),
        ],
    )
    .await;
    let list = pickups(&api, &ben).await;
    assert_eq!(list["open"], 1, "only this store's order: {list}");
    let (status, body) = api
        .call(
            Method::GET,
            "/api/v1/pickups/W-000202",
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let before = stock(&node, "COF-1").await;

    deliver(
        &mut session,
        2,
        vec![Item::Command(Command {
            id: ulid::Ulid::new(),
            kind: CommandKind::CancelPickup {
                order: mine.order,
                location: location(),
                reason: "the shopper cancelled".into(),
            },
            at: hub_stamp(),
        })],
    )
    .await;
    let after = stock(&node, "COF-1").await;
    // The node created rights for the 2 units again (then shares by its policy), on hand is
    // unchanged: the value (sellable anywhere) is back up by 2.
    assert_eq!(after.on_hand, before.on_hand);
    assert_eq!(after.value, before.value + 2, "{before:?} → {after:?}");
    let list = pickups(&api, &ben).await;
    assert_eq!(list["open"], 0, "{list}");
    assert_eq!(list["pickups"][0]["status"], "cancelled", "{list}");
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/pickups/W-000201/pick",
            Some(&ben),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "pickup_cancelled"),
        "{body}"
    );
    // Nothing is set aside: all 10 sell (within the node's rights and an override).
    let mara = api.token("mara", MARA_PIN).await;
    api.open_till(&mara).await;
    let (status, body) = api
        .sell(&mara, Some("1"), sale(10, Some("clearing the shelf")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.stop().await.expect("stops");
}
