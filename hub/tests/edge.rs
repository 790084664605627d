//! Edge-node sync against a real hub on port 0, with a WebSocket client in the test speaking the
//! frames of `protocol::replication::sync` as a node would.

mod common;

use common::{client, eventually, SendForJson};
use futures_util::SinkExt;
use protocol::replication::counter::Entry;
use protocol::replication::sync::{
    close, decode_frame, Frame, Item, Scarce, Vector, CATALOG_CHUNK, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use protocol::replication::{Command, CommandKind, DeficitRecord, ReplicaId, Rights, SaleRecord};
use protocol::LocationId;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use ulid::Ulid;

use common::edge_node::*;

fn admin(c: &reqwest::Client, hub: &common::TestHub, path: &str) -> reqwest::RequestBuilder {
    c.get(hub.url(path)).bearer_auth(ADMIN)
}

async fn node_view(c: &reqwest::Client, hub: &common::TestHub, replica: &str) -> Value {
    admin(c, hub, &format!("/api/v1/admin/edge/nodes/{replica}"))
        .json_body()
        .await
}

#[actix_web::test]
async fn only_known_live_credentials_may_upgrade() {
    let hub = spawn().await;
    let c = client();
    let url = hub.url("/api/v1/edge/sync");
    for (auth, code) in [
        (None, "edge_credential_required"),
        (Some("Bearer not-a-node"), "unknown_node"),
        (
            Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            "edge_credential_required",
        ),
    ] {
        let mut req = c.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.expect("sent");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = res.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], code);
    }
    // Through a WebSocket client: refused before the upgrade.
    match connect(&hub, Some("wrong")).await {
        Err(e) => match *e {
            tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 401),
            other => panic!("expected an HTTP refusal, got {other}"),
        },
        Ok(_) => panic!("a bad credential was upgraded"),
    }
    assert!(connect(&hub, None).await.is_err());

    // A retired node's credential is refused from then on.
    let retired: Value = c
        .post(hub.url("/api/v1/admin/edge/nodes/paris/retire"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(retired["replica"], "paris");
    let res = c.get(&url).bearer_auth(PARIS).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "node_retired");
    assert!(connect(&hub, Some(PARIS)).await.is_err());
    assert_eq!(node_view(&c, &hub, "paris").await["retired"], true);
    assert!(connect(&hub, Some(BERLIN)).await.is_ok());
}

#[actix_web::test]
async fn a_wrong_version_or_replica_is_closed_with_a_reason() {
    let hub = spawn().await;
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.send(&Frame::Hello {
        version: PROTOCOL_VERSION + 98,
        replica: berlin(),
        location: store_berlin(),
        have: Vector::new(),
        catalog_version: 0,
        time_ms: 0,
        pending: 0,
        catalog_fingerprint: String::new(),
        catalog_deltas: false,
        coupons: false,
    })
    .await;
    let (code, reason) = node.closed().await;
    assert_eq!(code, close::UNSUPPORTED_VERSION);
    let expected = format!("version {}", PROTOCOL_VERSION + 98);
    assert!(reason.contains(&expected), "{reason}");

    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.send(&hello("paris", "store-paris", Vector::new(), 0))
        .await;
    let (code, reason) = node.closed().await;
    assert_eq!(code, close::WRONG_REPLICA);
    assert!(reason.contains("berlin"), "{reason}");

    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.send(&Frame::Heartbeat {
        time_ms: 0,
        pending: 0,
    })
    .await;
    let (code, reason) = node.closed().await;
    assert_eq!(code, close::MALFORMED);
    assert!(reason.contains("hello"), "{reason}");
}

#[actix_web::test]
async fn deltas_are_applied_once_acked_and_gaps_answered() {
    let hub = spawn().await;
    let c = client();
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    let welcome = node
        .handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    match welcome {
        Frame::Welcome {
            have, hub_time_ms, ..
        } => {
            assert_eq!(have.get(&berlin()), Some(&0));
            assert!(hub_time_ms > 1_600_000_000_000);
        }
        other => panic!("{other:?}"),
    }
    let mut rights = Rights::new();
    rights.create(&berlin(), 10);
    let first_sale = sale(2);
    let batch = vec![
        Item::OnHand {
            sku: sku("TEA"),
            location: store_berlin(),
            entry: Entry { p: 10, n: 2 },
        },
        Item::Rights {
            key: tea_key(),
            state: rights.clone(),
        },
        Item::Sale(first_sale.clone()),
        Item::Unknown,
    ];
    assert_eq!(node.deltas(1, 2, batch.clone()).await, 2);
    // The same batch again: acknowledged, nothing changes.
    assert_eq!(node.deltas(1, 2, batch).await, 2);
    // A gap: the hub answers what it has.
    assert_eq!(node.deltas(5, 6, vec![Item::Sale(sale(1))]).await, 2);
    // Overlapping the last batch: applied, the sale in it counted once.
    let second = sale(1);
    assert_eq!(
        node.deltas(
            2,
            3,
            vec![Item::Sale(first_sale.clone()), Item::Sale(second.clone())]
        )
        .await,
        3
    );

    let sales = admin(&c, &hub, "/api/v1/admin/edge/sales?location=store-berlin")
        .json_body()
        .await;
    assert_eq!(sales["count"], 2, "{sales}");
    assert_eq!(sales["sales"][0]["id"], json!(second.id), "newest first");
    assert_eq!(sales["sales"][1]["id"], json!(first_sale.id));
    let elsewhere = admin(&c, &hub, "/api/v1/admin/edge/sales?location=store-paris")
        .json_body()
        .await;
    assert_eq!(elsewhere["count"], 0);

    // Each new sale is an interaction event on the POS channel, once.
    hub.handle.drain_events().await;
    let events: Vec<protocol::Event> =
        hub::storage::EventLog::read_sequenced(hub.handle.storage.as_ref(), 0, 10_000)
            .await
            .expect("events")
            .into_iter()
            .map(|s| s.event)
            .collect();
    let pos: Vec<_> = events
        .iter()
        .filter(|e| e.channel == protocol::Channel::Pos)
        .collect();
    assert_eq!(pos.len(), 2);
    assert!(pos
        .iter()
        .any(|e| e.payload.get("sale") == Some(&first_sale.id.to_string())));

    // The store's on hand reaches the inventory view the storefront reads.
    let level = eventually(WAIT, || async {
        let l = admin(&c, &hub, "/api/v1/admin/stock/TEA?location=store-berlin")
            .json_body()
            .await;
        (l["on_hand"] == 8).then_some(l)
    })
    .await;
    assert_eq!(level["location"], "store-berlin");

    let view = node_view(&c, &hub, "berlin").await;
    assert_eq!(view["have"]["hub"]["berlin"], 3);
    assert_eq!(view["connected"], true);
    assert!(view["last_sync"].is_string());
    let tea = view["rights"]
        .as_array()
        .expect("rights")
        .iter()
        .find(|r| r["sku"] == "TEA")
        .expect("TEA rights")
        .clone();
    assert_eq!(
        (
            tea["value"].clone(),
            tea["node_holds"].clone(),
            tea["on_hand"].clone()
        ),
        (json!(10), json!(10), json!(8))
    );
}

fn deficit(units: u64) -> DeficitRecord {
    DeficitRecord {
        id: Ulid::new(),
        replica: berlin(),
        location: store_berlin(),
        sku: sku("TEA"),
        units,
        reason: "sold at the till beyond the node's rights".into(),
        sale: None,
        clerk: Some("ada".into()),
        at: stamp(),
    }
}

#[actix_web::test]
async fn deficits_are_settled_from_hub_rights_and_want_rights_answered() {
    let hub = spawn().await;
    let c = client();
    let hub_id = ReplicaId::hub();
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    // The node created 10 and granted the hub 6.
    let mut rights = Rights::new();
    rights.create(&berlin(), 10);
    rights.transfer(&berlin(), &hub_id, 6).expect("held");
    let first = deficit(4);
    assert_eq!(
        node.deltas(
            1,
            1,
            vec![
                Item::Rights {
                    key: tea_key(),
                    state: rights.clone(),
                },
                Item::Deficit(first.clone()),
            ],
        )
        .await,
        1
    );
    let (from, to, items) = node.hub_batch().await;
    assert_eq!((from, to), (1, 1));
    let settlement = items
        .iter()
        .find_map(|i| match i {
            Item::Settlement(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a settlement");
    assert_eq!(
        (settlement.deficit, settlement.settled, settlement.short),
        (first.id, 4, 0)
    );
    let hub_row = items
        .iter()
        .find_map(|i| match i {
            Item::Rights { key, state } if key == &tea_key() => Some(state.clone()),
            _ => None,
        })
        .expect("the hub's rights row");
    assert_eq!(hub_row.u.get(&hub_id), Some(&4), "the hub consumed 4");
    node.send(&Frame::Ack {
        origin: hub_id.clone(),
        seq: to,
    })
    .await;

    // A second deficit beyond what the hub holds (2 left): settled 2, 3 short.
    let second = deficit(5);
    assert_eq!(
        node.deltas(2, 2, vec![Item::Deficit(second.clone())]).await,
        2
    );
    let (from, to, items) = node.hub_batch().await;
    assert_eq!((from, to), (2, 2));
    let settlement = items
        .iter()
        .find_map(|i| match i {
            Item::Settlement(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a settlement");
    assert_eq!((settlement.settled, settlement.short), (2, 3));
    node.send(&Frame::Ack {
        origin: hub_id.clone(),
        seq: to,
    })
    .await;

    let view = node_view(&c, &hub, "berlin").await;
    let deficits = view["deficits"].as_array().expect("deficits");
    assert_eq!(deficits.len(), 2);
    let open = view["unsettled_deficits"].as_array().expect("unsettled");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["id"], json!(second.id));
    assert_eq!(open[0]["settlement"]["short"], 3);

    // The node grants the hub 3 more, then wants rights back: the hub hands back all 3.
    rights.transfer(&berlin(), &hub_id, 3).expect("held");
    let want = Command {
        id: Ulid::new(),
        kind: CommandKind::WantRights {
            sku: sku("TEA"),
            location: store_berlin(),
            units: 2,
        },
        at: stamp(),
    };
    assert_eq!(
        node.deltas(
            3,
            3,
            vec![
                Item::Rights {
                    key: tea_key(),
                    state: rights.clone(),
                },
                Item::Command(want),
            ],
        )
        .await,
        3
    );
    let (from, to, items) = node.hub_batch().await;
    assert_eq!((from, to), (3, 3));
    let row = items
        .iter()
        .find_map(|i| match i {
            Item::Rights { key, state } if key == &tea_key() => Some(state.clone()),
            _ => None,
        })
        .expect("the hub's rights row");
    let mut merged = rights.clone();
    merged.merge(&row);
    assert_eq!(merged.held(&hub_id), 0, "the hub kept nothing");
    assert_eq!(row.r.get(&hub_id).and_then(|r| r.get(&berlin())), Some(&3));
    node.send(&Frame::Ack {
        origin: hub_id,
        seq: to,
    })
    .await;
    eventually(WAIT, || async {
        let v = node_view(&c, &hub, "berlin").await;
        (v["unacknowledged"]["hub_to_node"] == 0).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn malformed_text_and_oversized_frames_close_and_change_nothing() {
    let hub = spawn().await;
    let c = client();
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    node.ws
        .send(Message::Binary(vec![0xc1, 0xff, 0x00, 0x13].into()))
        .await
        .expect("sent");
    let (code, reason) = node.closed().await;
    assert_eq!(code, close::MALFORMED);
    assert!(reason.contains("undecodable"), "{reason}");

    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    let welcome = node
        .handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    assert!(matches!(welcome, Frame::Welcome { ref have, .. } if have.get(&berlin()) == Some(&0)));
    node.ws
        .send(Message::Text("{\"t\":\"hello\"}".into()))
        .await
        .expect("sent");
    let (code, reason) = node.closed().await;
    assert_eq!(code, close::MALFORMED);
    assert!(reason.contains("binary"), "{reason}");

    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    node.ws
        .send(Message::Binary(vec![0u8; MAX_FRAME_BYTES + 1].into()))
        .await
        .expect("sent");
    let (code, _) = node.closed().await;
    assert_eq!(code, close::TOO_BIG);

    assert_eq!(
        node_view(&c, &hub, "berlin").await["have"]["hub"]["berlin"],
        0
    );
    let sales = admin(&c, &hub, "/api/v1/admin/edge/sales")
        .json_body()
        .await;
    assert_eq!(sales["count"], 0);
}

#[actix_web::test]
async fn the_admin_view_shows_nodes_and_a_new_session_replaces_the_old() {
    let hub = spawn().await;
    let c = client();
    let list = admin(&c, &hub, "/api/v1/admin/edge/nodes")
        .json_body()
        .await;
    let nodes = list["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["replica"], "berlin");
    assert_eq!(nodes[0]["name"], "Store berlin");
    assert_eq!(nodes[0]["connected"], false);
    assert_eq!(nodes[0]["never_connected"], true);
    let res = c
        .get(hub.url("/api/v1/admin/edge/nodes"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "behind the admin token"
    );
    assert_eq!(
        admin(&c, &hub, "/api/v1/admin/edge/nodes/nowhere")
            .send()
            .await
            .expect("sent")
            .status(),
        StatusCode::NOT_FOUND
    );

    let mut first = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    first
        .handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let view = node_view(&c, &hub, "berlin").await;
    assert_eq!(view["connected"], true);
    assert!(view["connected_since"].is_string());
    assert_eq!(
        view["skew_exceeds_limit"], true,
        "the test node's clock is years behind"
    );
    assert_eq!(view["conflicts"][0]["kind"], "clock_skew");

    let mut second = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    second
        .handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let (code, _) = first.closed().await;
    assert_eq!(code, close::REPLACED);
    assert_eq!(node_view(&c, &hub, "berlin").await["connected"], true);

    second.ws.close(None).await.expect("closed");
    let view = eventually(WAIT, || async {
        let v = node_view(&c, &hub, "berlin").await;
        (v["connected"] == false).then_some(v)
    })
    .await;
    assert!(view["offline_since"].is_string());

    let metrics = c
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("omnihub_edge_nodes_connected 0"),
        "{metrics}"
    );
    assert!(metrics.contains("omnihub_edge_outbox_unacked{node=\"berlin\"} 0"));
}

#[actix_web::test]
async fn a_store_stock_count_becomes_a_command_delivered_on_connect() {
    let hub = spawn().await;
    let c = client();
    let res = c
        .put(hub.url("/api/v1/admin/stock/TEA"))
        .bearer_auth(ADMIN)
        .json(&json!({"on_hand": 7, "location": "store-berlin"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let queued: Value = res.json().await.expect("JSON");
    assert_eq!(queued["node"], "berlin");
    let command: Ulid = queued["command"]
        .as_str()
        .expect("id")
        .parse()
        .expect("ulid");
    // Not applied by the hub: only the node creates the store's stock and rights.
    let level = admin(&c, &hub, "/api/v1/admin/stock/TEA?location=store-berlin")
        .json_body()
        .await;
    assert_eq!(level["on_hand"], 0);
    assert_eq!(
        node_view(&c, &hub, "berlin").await["unacknowledged"]["hub_to_node"],
        1
    );
    let unknown = c
        .put(hub.url("/api/v1/admin/stock/TEA"))
        .bearer_auth(ADMIN)
        .json(&json!({"on_hand": 7, "location": "store-nowhere"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let (from, to, items) = node.hub_batch().await;
    assert_eq!((from, to), (1, 1));
    match &items[..] {
        [Item::Command(Command {
            id,
            kind:
                CommandKind::Count {
                    sku: s,
                    location,
                    on_hand,
                    as_seen,
                },
            ..
        })] => {
            assert_eq!(*id, command);
            assert_eq!(
                (s.as_str(), location.0.as_str(), *on_hand),
                ("TEA", "store-berlin", 7)
            );
            assert_eq!(*as_seen, Some(0), "the hub had seen nothing on hand there");
        }
        other => panic!("expected the count command, got {other:?}"),
    }
    // Not acknowledged: on the next connection it comes again.
    drop(node);
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let (from, to, _) = node.hub_batch().await;
    assert_eq!((from, to), (1, 1));
    node.send(&Frame::Ack {
        origin: ReplicaId::hub(),
        seq: 1,
    })
    .await;
    eventually(WAIT, || async {
        let v = node_view(&c, &hub, "berlin").await;
        (v["unacknowledged"]["hub_to_node"] == 0).then_some(())
    })
    .await;
    // Known to the node (have[hub] = 1): nothing is sent again.
    drop(node);
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake(
        "berlin",
        "store-berlin",
        BTreeMap::from([(ReplicaId::hub(), 1)]),
        None,
    )
    .await;
    assert_eq!(
        node.deltas(1, 1, Vec::new()).await,
        1,
        "the next frame is the ack, no resend"
    );
}

#[actix_web::test]
async fn the_catalog_goes_in_chunks_to_a_node_that_is_behind() {
    let hub = spawn().await;
    let seeded = hub_catalog_version(&client(), &hub).await;
    let more: Vec<protocol::Product> = (0..CATALOG_CHUNK * 2)
        .map(|i| {
            common::product(
                &format!("Extra {i:03}"),
                &format!("EXTRA-{i}"),
                100,
                "coffee",
            )
        })
        .collect();
    hub.handle
        .upsert_catalog(Vec::new(), more)
        .await
        .expect("stored");
    let total = channels::Backend::catalog(hub.handle.backend.as_ref())
        .products()
        .len();
    let parts = total.div_ceil(CATALOG_CHUNK) as u32;
    assert_eq!(parts, 3);
    // The replica notices the new snapshot on its next look.
    let version = eventually(WAIT, || async {
        let v = admin(&client(), &hub, "/api/v1/admin/edge/nodes/berlin")
            .json_body()
            .await;
        let version = v["catalog_version"]["hub"].as_u64()?;
        (version > seeded).then_some(version)
    })
    .await;

    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.send(&hello("berlin", "store-berlin", Vector::new(), 0))
        .await;
    assert!(
        matches!(node.recv().await, Frame::Welcome { catalog_version, .. } if catalog_version == version)
    );
    let mut products = 0;
    for expected in 0..parts {
        match node.recv().await {
            Frame::Catalog {
                version: v,
                part,
                parts: n,
                categories,
                products: p,
                ..
            } => {
                assert_eq!((v, part, n), (version, expected, parts));
                assert_eq!(
                    categories.is_empty(),
                    part != 0,
                    "categories travel in part 0"
                );
                products += p.len();
            }
            other => panic!("expected a catalog chunk, got {other:?}"),
        }
    }
    assert_eq!(products, total);

    // Up to date: no catalog after the welcome; a change while connected is sent at once.
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), Some(version))
        .await;
    assert_eq!(node.deltas(1, 1, Vec::new()).await, 1);
    hub.handle
        .upsert_catalog(
            Vec::new(),
            vec![common::product("Late Arrival", "LATE", 999, "tea")],
        )
        .await
        .expect("stored");
    match node.recv().await {
        Frame::Catalog {
            version: v,
            part: 0,
            parts: n,
            ..
        } => {
            assert_eq!((v, n), (version + 1, parts));
        }
        other => panic!("expected the new catalog, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_silent_node_gets_heartbeats_then_is_closed_idle() {
    let hub = spawn_with(|dir| {
        let mut s = settings(dir);
        s.edge.heartbeat_every = Duration::from_millis(100);
        s.edge.idle_timeout = Duration::from_millis(600);
        s
    })
    .await;
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.send(&hello("berlin", "store-berlin", Vector::new(), 0))
        .await;
    let mut heartbeats = 0;
    let code = loop {
        match node.next_message().await {
            Some(Message::Binary(bytes)) => {
                if matches!(decode_frame(&bytes), Ok(Frame::Heartbeat { .. })) {
                    heartbeats += 1;
                }
            }
            Some(Message::Close(Some(frame))) => break u16::from(frame.code),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, close::IDLE);
    assert!(heartbeats >= 2, "{heartbeats} heartbeats");
}

#[actix_web::test]
async fn retiring_a_replica_writes_off_its_rights_and_the_rebuilt_node_learns_it() {
    const BERLIN_2: &str = "berlin-2-credential";
    let hub = spawn_with(|dir| {
        let mut s = settings(dir);
        s.edge
            .nodes
            .push(node_settings("berlin-2", "store-berlin", BERLIN_2));
        s
    })
    .await;
    let c = client();
    let mut old = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    old.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    // The old node created 10 and granted the hub 4; it still holds 6.
    let mut rights = Rights::new();
    rights.create(&berlin(), 10);
    rights
        .transfer(&berlin(), &ReplicaId::hub(), 4)
        .expect("held");
    let grant = vec![
        Item::Rights {
            key: tea_key(),
            state: rights,
        },
        Item::OnHand {
            sku: sku("TEA"),
            location: store_berlin(),
            entry: Entry { p: 10, n: 1 },
        },
    ];
    assert_eq!(old.deltas(1, 1, grant).await, 1);

    let retired: Value = c
        .post(hub.url("/api/v1/admin/edge/nodes/berlin/retire"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(
        retired["written_off"],
        json!([{"key": {"t": "stock", "sku": "TEA", "location": "store-berlin"}, "units": 6}])
    );
    let (code, reason) = old.closed().await;
    assert_eq!(code, close::WRONG_REPLICA);
    assert!(reason.contains("retired"), "{reason}");
    let again: Value = c
        .post(hub.url("/api/v1/admin/edge/nodes/berlin/retire"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(
        again["retired_at"], retired["retired_at"],
        "retiring is idempotent"
    );

    // Stock news for the store now goes to the rebuilt node, after the write-off.
    let res = c
        .put(hub.url("/api/v1/admin/stock/TEA"))
        .bearer_auth(ADMIN)
        .json(&json!({"on_hand": 12, "location": "store-berlin"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let queued: Value = res.json().await.expect("JSON");
    assert_eq!(queued["node"], "berlin-2");

    let mut new = connect(&hub, Some(BERLIN_2)).await.expect("upgraded");
    new.handshake("berlin-2", "store-berlin", Vector::new(), None)
        .await;
    let (from, mut to, mut items) = new.hub_batch().await;
    assert_eq!(from, 1);
    let last = node_view(&c, &hub, "berlin-2").await["unacknowledged"]["hub_to_node"]
        .as_u64()
        .expect("backlog");
    while to < last {
        let (_, more_to, more) = new.hub_batch().await;
        to = more_to;
        items.extend(more);
    }
    let row = items
        .iter()
        .find_map(|i| match i {
            Item::Rights { key, state } if key == &tea_key() => Some(state.clone()),
            _ => None,
        })
        .expect("the location's rights with the write-off");
    assert_eq!(row.w.get(&berlin()), Some(&6));
    // The whole state, the old node's row included: the rebuilt node sees only 4 sellable.
    assert_eq!(
        row.r.get(&berlin()).and_then(|r| r.get(&berlin())),
        Some(&10)
    );
    assert_eq!(row.value(), 4);
    // And the old node's on-hand entries, so its view of the shelf is whole too.
    assert!(items.iter().any(|i| matches!(
        i,
        Item::OnHandOf { replica, sku: s, location, entry }
            if replica == &berlin() && s == &sku("TEA") && location == &store_berlin()
                && *entry == Entry { p: 10, n: 1 }
    )));
    assert!(items.iter().any(|i| matches!(
        i,
        Item::Command(Command {
            kind: CommandKind::Count { on_hand: 12, .. },
            ..
        })
    )));

    let view = node_view(&c, &hub, "berlin-2").await;
    let tea = view["rights"]
        .as_array()
        .expect("rights")
        .iter()
        .find(|r| r["sku"] == "TEA")
        .expect("TEA")
        .clone();
    assert_eq!(
        (tea["value"].clone(), tea["hub_holds"].clone()),
        (json!(4), json!(4)),
        "only the hub's 4 are still sellable"
    );
    let old_view = node_view(&c, &hub, "berlin").await;
    assert_eq!(old_view["retired"], true);
    assert_eq!(old_view["written_off"][0]["units"], 6);
}

#[actix_web::test]
async fn a_hub_with_bad_edge_settings_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    s.edge.nodes[1].replica = "berlin".into();
    match hub::Application::build(s, Arc::new(hub::clock::SystemClock)).await {
        Err(hub::HubError::Config(e)) => assert!(e.contains("listed twice"), "{e}"),
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("started with a replica listed twice"),
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    s.edge.nodes[1].credential_sha256 = s.edge.nodes[0].credential_sha256.to_uppercase();
    match hub::Application::build(s, Arc::new(hub::clock::SystemClock)).await {
        Err(hub::HubError::Config(e)) => {
            assert!(e.contains("same credential_sha256"), "{e}");
            assert!(e.contains("berlin") && e.contains("paris"), "{e}");
        }
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("started with one credential for two nodes"),
    }
}

#[actix_web::test]
async fn a_forwarded_count_carries_the_on_hand_the_hub_saw() {
    let hub = spawn().await;
    let c = client();
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    // The node received 10 and sold 2: the hub has merged 8 on hand.
    let on_hand = vec![Item::OnHand {
        sku: sku("TEA"),
        location: store_berlin(),
        entry: Entry { p: 10, n: 2 },
    }];
    assert_eq!(node.deltas(1, 1, on_hand).await, 1);
    let res = c
        .put(hub.url("/api/v1/admin/stock/TEA"))
        .bearer_auth(ADMIN)
        .json(&json!({"on_hand": 7, "location": "store-berlin"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let (_, _, items) = node.hub_batch().await;
    match &items[..] {
        [Item::Command(Command {
            kind: CommandKind::Count {
                on_hand, as_seen, ..
            },
            ..
        })] => assert_eq!((*on_hand, *as_seen), (7, Some(8))),
        other => panic!("expected the count command, got {other:?}"),
    }
}

/// The hub's catalog version as the admin view shows it.
async fn hub_catalog_version(c: &reqwest::Client, hub: &common::TestHub) -> u64 {
    node_view(c, hub, "berlin").await["catalog_version"]["hub"]
        .as_u64()
        .expect("a version")
}

#[actix_web::test]
async fn a_node_ahead_of_the_hubs_catalog_makes_the_hub_raise_its_version() {
    let hub = spawn().await;
    let c = client();
    // The seeded catalog is noticed (version 2 or later).
    let version = eventually(WAIT, || async {
        let v = hub_catalog_version(&c, &hub).await;
        (v >= 2).then_some(v)
    })
    .await;
    // A node that has a later version (the hub was restored from a backup): the hub goes above
    // it, durably, and sends its catalog under the new version.
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    let welcome = node
        .handshake("berlin", "store-berlin", Vector::new(), Some(version + 5))
        .await;
    let raised = version + 6;
    assert!(
        matches!(welcome, Frame::Welcome { catalog_version, .. } if catalog_version == raised),
        "{welcome:?}"
    );
    assert_eq!(hub_catalog_version(&c, &hub).await, raised);
    // Once the node has it, reconnecting changes nothing: no new version, no catalog.
    drop(node);
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), Some(raised))
        .await;
    assert_eq!(node.deltas(1, 1, Vec::new()).await, 1, "no catalog came");
    assert_eq!(hub_catalog_version(&c, &hub).await, raised);
    // Another node claiming the same number, which this hub never gave it, had another
    // catalog under it: the hub goes above it too.
    let mut paris = connect(&hub, Some(PARIS)).await.expect("upgraded");
    let welcome = paris
        .handshake("paris", "store-paris", Vector::new(), Some(raised))
        .await;
    assert!(
        matches!(welcome, Frame::Welcome { catalog_version, .. } if catalog_version == raised + 1),
        "{welcome:?}"
    );
    // Berlin, still connected, is offered the new version at once.
    match node.recv().await {
        Frame::Catalog {
            version: v,
            part: 0,
            ..
        } => assert_eq!(v, raised + 1),
        other => panic!("expected the new catalog, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_node_configured_after_a_retirement_gets_the_location_on_first_connect() {
    const BERLIN_2: &str = "berlin-2-credential";
    let hub = spawn_with(|dir| {
        let mut s = settings(dir);
        s.edge
            .nodes
            .push(node_settings("berlin-2", "store-berlin", BERLIN_2));
        s
    })
    .await;
    let c = client();
    let mut old = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    old.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let mut rights = Rights::new();
    rights.create(&berlin(), 10);
    rights
        .transfer(&berlin(), &ReplicaId::hub(), 4)
        .expect("held");
    let state = vec![
        Item::Rights {
            key: tea_key(),
            state: rights,
        },
        Item::OnHand {
            sku: sku("TEA"),
            location: store_berlin(),
            entry: Entry { p: 10, n: 0 },
        },
    ];
    assert_eq!(old.deltas(1, 1, state).await, 1);
    let res = c
        .post(hub.url("/api/v1/admin/edge/nodes/berlin/retire"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success());
    // The node's first connection says it has everything queued so far, as a node configured
    // only after the retirement would have nothing of it queued: the location comes again.
    let queued = node_view(&c, &hub, "berlin-2").await["unacknowledged"]["hub_to_node"]
        .as_u64()
        .expect("backlog");
    assert!(queued >= 1, "the retirement relayed the location");
    let have = BTreeMap::from([(ReplicaId::hub(), queued)]);
    let mut new = connect(&hub, Some(BERLIN_2)).await.expect("upgraded");
    new.handshake("berlin-2", "store-berlin", have, None).await;
    let (from, to, items) = new.hub_batch().await;
    assert_eq!(from, queued + 1);
    let row = items
        .iter()
        .find_map(|i| match i {
            Item::Rights { key, state } if key == &tea_key() => Some(state.clone()),
            _ => None,
        })
        .expect("the location's rights");
    assert_eq!(
        row.r.get(&berlin()).and_then(|r| r.get(&berlin())),
        Some(&10)
    );
    assert_eq!(row.w.get(&berlin()), Some(&6));
    assert!(items.iter().any(|i| matches!(
        i,
        Item::OnHandOf { replica, entry, .. } if replica == &berlin() && entry.p == 10
    )));
    new.send(&Frame::Ack {
        origin: ReplicaId::hub(),
        seq: to,
    })
    .await;
    // Not the first connection any more: nothing is relayed again.
    drop(new);
    let mut new = connect(&hub, Some(BERLIN_2)).await.expect("upgraded");
    let have = BTreeMap::from([(ReplicaId::hub(), to)]);
    new.handshake("berlin-2", "store-berlin", have, None).await;
    assert_eq!(
        node_view(&c, &hub, "berlin-2").await["unacknowledged"]["hub_to_node"],
        0
    );
}

#[actix_web::test]
async fn a_node_cannot_create_coupons_or_sell_for_another_store() {
    let hub = spawn().await;
    let c = client();
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let mut coupon = Rights::new();
    coupon.create(&berlin(), 100);
    let mut foreign = sale(1);
    foreign.location = LocationId("store-paris".into());
    let batch = vec![
        Item::Rights {
            key: Scarce::Coupon {
                code: "SPRING".into(),
            },
            state: coupon,
        },
        Item::Sale(foreign.clone()),
    ];
    assert_eq!(node.deltas(1, 1, batch).await, 1);
    for location in ["store-paris", "store-berlin"] {
        let sales = admin(
            &c,
            &hub,
            &format!("/api/v1/admin/edge/sales?location={location}"),
        )
        .json_body()
        .await;
        assert_eq!(sales["count"], 0, "{location}: {sales}");
    }
    let view = node_view(&c, &hub, "berlin").await;
    let kinds: Vec<&str> = view["conflicts"]
        .as_array()
        .expect("conflicts")
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"coupon_creation"), "{kinds:?}");
    assert!(kinds.contains(&"foreign_location"), "{kinds:?}");
    let created = hub
        .handle
        .edge
        .store()
        .rights(&Scarce::Coupon {
            code: "SPRING".into(),
        })
        .await
        .expect("reads")
        .map_or(0, |r| r.created());
    assert_eq!(created, 0, "no redemption was created by the node");
}

#[actix_web::test]
async fn a_gap_in_the_hubs_outbox_is_recorded_once_per_session() {
    let hub = spawn().await;
    let c = client();
    let count = |n: i64| {
        let c = c.clone();
        let url = hub.url("/api/v1/admin/stock/TEA");
        async move {
            let res = c
                .put(url)
                .bearer_auth(ADMIN)
                .json(&json!({"on_hand": n, "location": "store-berlin"}))
                .send()
                .await
                .expect("sent");
            assert_eq!(res.status(), StatusCode::ACCEPTED);
        }
    };
    count(1).await;
    count(2).await;
    // The node has the first two: the hub drops them.
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake(
        "berlin",
        "store-berlin",
        BTreeMap::from([(ReplicaId::hub(), 2)]),
        None,
    )
    .await;
    assert_eq!(node.deltas(1, 1, Vec::new()).await, 1);
    drop(node);
    count(3).await;
    // The node comes back having lost them (say, restored from a backup): the hub cannot
    // resend entries 1 and 2.
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let gaps = || async {
        node_view(&c, &hub, "berlin").await["conflicts"]
            .as_array()
            .expect("conflicts")
            .iter()
            .filter(|c| c["kind"] == "outbox_gap")
            .count()
    };
    eventually(WAIT, || async { (gaps().await == 1).then_some(()) }).await;
    // More of the hub's changes for the node: each finds the same gap, none records it again.
    count(4).await;
    count(5).await;
    assert_eq!(node.deltas(1, 1, Vec::new()).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gaps().await, 1);
}

#[actix_web::test]
async fn sequences_and_versions_at_the_top_of_u64_are_handled() {
    let hub = spawn().await;
    let c = client();
    // A node claiming more of the hub's stream than the hub could ever send is refused.
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.send(&hello(
        "berlin",
        "store-berlin",
        BTreeMap::from([(ReplicaId::hub(), u64::MAX)]),
        0,
    ))
    .await;
    let (code, reason) = node.closed().await;
    assert_eq!(code, close::MALFORMED);
    assert!(reason.contains("have[hub]"), "{reason}");

    // A catalog version that cannot be passed: the hub keeps its own and goes on.
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    let welcome = node
        .handshake("berlin", "store-berlin", Vector::new(), Some(u64::MAX))
        .await;
    assert!(
        matches!(welcome, Frame::Welcome { catalog_version, .. } if catalog_version < u64::MAX)
    );
    // The node's own sequences up to u64::MAX: applied, then every resend is a duplicate.
    let sold = sale(1);
    assert_eq!(
        node.deltas(1, u64::MAX, vec![Item::Sale(sold.clone())])
            .await,
        u64::MAX
    );
    assert_eq!(node.deltas(u64::MAX, u64::MAX, Vec::new()).await, u64::MAX);
    assert_eq!(node.deltas(1, 1, Vec::new()).await, u64::MAX);
    let view = node_view(&c, &hub, "berlin").await;
    assert_eq!(view["have"]["hub"]["berlin"], json!(u64::MAX));
    let sales = admin(&c, &hub, "/api/v1/admin/edge/sales")
        .json_body()
        .await;
    assert_eq!(sales["count"], 1);
}

/// A back-office user made with the admin token, and a token of theirs.
async fn back_office_user(
    c: &reqwest::Client,
    hub: &common::TestHub,
    email: &str,
    roles: &[&str],
) -> String {
    let user: Value = c
        .post(hub.url("/api/v1/admin/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"email": email, "name": "Tester", "roles": roles}))
        .json_body()
        .await;
    let id = user["id"].as_str().expect("a user id");
    let token: Value = c
        .post(hub.url(&format!("/api/v1/admin/users/{id}/tokens")))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "edge tests"}))
        .json_body()
        .await;
    token["token"].as_str().expect("a token").to_string()
}

/// Reads the hub's next catalog offer to the end: its version and the promotions of part 0.
async fn next_catalog(node: &mut Node) -> (u64, Vec<String>) {
    let mut promoted = None;
    loop {
        match node.recv().await {
            Frame::Catalog {
                version,
                part,
                parts,
                promotions,
                ..
            } => {
                if part == 0 {
                    promoted = Some(promotions.iter().map(|p| p.id.to_string()).collect());
                } else {
                    assert!(promotions.is_empty(), "promotions travel in part 0");
                }
                if part + 1 == parts {
                    return (version, promoted.expect("part 0 came first"));
                }
            }
            other => panic!("expected a catalog offer, got {other:?}"),
        }
    }
}

#[actix_web::test]
async fn a_promotion_going_live_or_ending_gives_connected_nodes_a_new_catalog_version() {
    let hub = spawn().await;
    let c = client();
    let merchandiser = back_office_user(&c, &hub, "merch@example.com", &["merchandiser"]).await;
    let approver = back_office_user(&c, &hub, "approver@example.com", &["approver"]).await;
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    let welcome = node
        .handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let Frame::Welcome {
        catalog_version: before,
        ..
    } = welcome
    else {
        panic!("expected welcome, got {welcome:?}");
    };

    let res = c
        .post(hub.url("/api/v1/backoffice/promotions"))
        .bearer_auth(&merchandiser)
        .json(&json!({
            "id": "TILL10",
            "name": "Ten percent off tea at the till",
            "spec": {"conditions": [{"type": "channel", "any_of": ["pos"]}],
                     "benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["TEA"]}, "percent_bp": 1000}},
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
    // A draft is not live: the node's next frame is the one that follows the approval.
    let res = c
        .post(hub.url("/api/v1/backoffice/promotions/TILL10/approve"))
        .bearer_auth(&approver)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let (live, promoted) = next_catalog(&mut node).await;
    assert!(live > before, "{live} after {before}");
    assert_eq!(promoted, ["TILL10"]);
    assert_eq!(hub_catalog_version(&c, &hub).await, live);

    // A node connecting later is offered that version, promotion included.
    let mut paris = connect(&hub, Some(PARIS)).await.expect("upgraded");
    paris
        .send(&hello("paris", "store-paris", Vector::new(), before))
        .await;
    assert!(
        matches!(paris.recv().await, Frame::Welcome { catalog_version, .. } if catalog_version == live)
    );
    assert_eq!(
        next_catalog(&mut paris).await,
        (live, vec!["TILL10".to_string()])
    );

    // Ended: both nodes get the next version, without it.
    let res = c
        .post(hub.url("/api/v1/backoffice/promotions/TILL10/end"))
        .bearer_auth(&approver)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let (ended, promoted) = next_catalog(&mut node).await;
    assert!(ended > live);
    assert!(promoted.is_empty());
    assert_eq!(next_catalog(&mut paris).await, (ended, Vec::new()));
}

/// Reads the hub's stream (acknowledging each batch, skipping catalog offers) until `done`
/// says the items read so far are enough: answers them.
async fn hub_items_until(node: &mut Node, mut done: impl FnMut(&[Item]) -> bool) -> Vec<Item> {
    let mut seen = Vec::new();
    loop {
        match node.recv().await {
            Frame::Deltas { to_seq, items, .. } => {
                node.send(&Frame::Ack {
                    origin: ReplicaId::hub(),
                    seq: to_seq,
                })
                .await;
                seen.extend(items);
                if done(&seen) {
                    return seen;
                }
            }
            Frame::Catalog { .. } => {}
            other => panic!("expected the hub's stream, got {other:?}"),
        }
    }
}

/// The uses the back office counts for a coupon code of SPRING.
fn coupon_uses(hub: &common::TestHub, code: &str) -> u64 {
    hub.handle
        .backoffice
        .coupons("SPRING")
        .expect("coupons")
        .into_iter()
        .find(|c| c.code == code)
        .expect("the code")
        .uses
}

async fn coupon_row(c: &reqwest::Client, hub: &common::TestHub, code: &str) -> Option<Value> {
    let view: Value = admin(c, hub, "/api/v1/admin/edge/coupons")
        .json_body()
        .await;
    view["coupons"]
        .as_array()?
        .iter()
        .find(|r| r["code"] == code)
        .cloned()
}

fn coupon_sale(code: &str, customer: Option<protocol::CustomerId>) -> SaleRecord {
    SaleRecord {
        coupons: vec![code.to_string()],
        customer,
        ..sale(1)
    }
}

#[actix_web::test]
async fn a_limited_coupon_is_shared_between_online_and_a_store_and_never_used_beyond_its_limit() {
    let hub = spawn_with(|dir| {
        let mut s = settings(dir);
        s.edge.coupon_grant_per_node = 3;
        s.edge.coupon_grant_percent = 50;
        s
    })
    .await;
    let c = client();
    let merchandiser = back_office_user(&c, &hub, "merch@example.com", &["merchandiser"]).await;
    let approver = back_office_user(&c, &hub, "approver@example.com", &["approver"]).await;
    for (path, token, body, status) in [
        (
            "/api/v1/backoffice/promotions".to_string(),
            &merchandiser,
            json!({"id": "SPRING", "name": "Spring coupon",
                   "spec": {"conditions": [{"type": "coupon"}],
                            "benefit": {"type": "percent_off_basket", "percent_bp": 1000}}}),
            StatusCode::CREATED,
        ),
        (
            "/api/v1/backoffice/promotions/SPRING/approve".to_string(),
            &approver,
            json!({}),
            StatusCode::OK,
        ),
        (
            "/api/v1/backoffice/promotions/SPRING/coupons".to_string(),
            &merchandiser,
            json!({"code": "spring6", "max_uses": 6}),
            StatusCode::CREATED,
        ),
        (
            "/api/v1/backoffice/promotions/SPRING/coupons".to_string(),
            &merchandiser,
            json!({"code": "once-each", "max_uses_per_customer": 1}),
            StatusCode::CREATED,
        ),
    ] {
        let res = c
            .post(hub.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), status, "{path}");
    }
    let key = Scarce::Coupon {
        code: "SPRING6".into(),
    };

    // Berlin connects: it gets the code's terms and half of the 6 redemptions (at most 3).
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let has_grant = |i: &Item| matches!(i, Item::Rights { key: k, state } if *k == key && state.held(&berlin()) > 0);
    let has_terms = |i: &Item| matches!(i, Item::Coupon(t) if t.code == "SPRING6");
    let items = hub_items_until(&mut node, |seen| {
        seen.iter().any(has_grant) && seen.iter().any(has_terms)
    })
    .await;
    let terms = items
        .iter()
        .find_map(|i| match i {
            Item::Coupon(t) if t.code == "SPRING6" => Some(t.clone()),
            _ => None,
        })
        .expect("terms");
    assert!(terms.limited);
    assert_eq!(terms.promotion.as_str(), "SPRING");
    let mut granted = Rights::new();
    for i in &items {
        if let Item::Rights { key: k, state } = i {
            if *k == key {
                granted.merge(state);
            }
        }
    }
    assert_eq!(granted.held(&berlin()), 3);
    assert_eq!(
        granted.created(),
        6,
        "the hub alone created the redemptions"
    );

    // Online, only what the hub kept can be used: 3 orders, then the code is used up there.
    let bo = &hub.handle.backoffice;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let order = protocol::OrderId::new();
        bo.redeem("SPRING6", None, order)
            .await
            .expect("an online use");
        orders.push(order);
    }
    let refused = bo.redeem("SPRING6", None, protocol::OrderId::new()).await;
    assert!(refused.is_err(), "{refused:?}");

    // Offline, the store used its 3 (its row: 3 consumed, nothing created), one sale each.
    let mut at_node = granted.clone();
    at_node.consume(&berlin(), 3).expect("held");
    let mut items: Vec<Item> = (0..3)
        .map(|_| Item::Sale(coupon_sale("SPRING6", None)))
        .collect();
    items.push(Item::Rights {
        key: key.clone(),
        state: at_node.row(&berlin()),
    });
    assert_eq!(node.deltas(1, 1, items).await, 1);

    // The hub's usage of the code counts the store's 3 beside the 3 online: 6 of 6.
    assert_eq!(coupon_uses(&hub, "SPRING6"), 6);
    // The hub's counter follows the online uses at its next coupon pass (twice a second).
    let row = eventually(WAIT, || async {
        let row = coupon_row(&c, &hub, "SPRING6").await?;
        (row["hub_consumed"] == 3).then_some(row)
    })
    .await;
    assert_eq!(row["hub_holds"], 0, "{row}");
    assert_eq!(row["store_uses"], 3, "{row}");
    assert_eq!(row["stores"]["berlin"]["used"], 3, "{row}");
    assert_eq!(row["stores"]["berlin"]["holds"], 0, "{row}");

    // A cancelled online order gives its use back: it can be used once more, online or by a
    // store, not both.
    bo.release("SPRING6", orders[0]).await.expect("released");
    eventually(WAIT, || async {
        let row = coupon_row(&c, &hub, "SPRING6").await?;
        (row["hub_holds"] == 1).then_some(())
    })
    .await;
    bo.redeem("SPRING6", None, protocol::OrderId::new())
        .await
        .expect("the use given back");
    assert!(bo
        .redeem("SPRING6", None, protocol::OrderId::new())
        .await
        .is_err());
    assert_eq!(coupon_uses(&hub, "SPRING6"), 6);

    // Two offline redemptions by one customer of a once-per-customer code: both sales stand,
    // and the hub records the broken limit as a conflict for a person.
    let ada = protocol::CustomerId::new();
    assert_eq!(
        node.deltas(
            2,
            2,
            vec![
                Item::Sale(coupon_sale("ONCE-EACH", Some(ada))),
                Item::Sale(coupon_sale("ONCE-EACH", Some(ada))),
            ],
        )
        .await,
        2
    );
    let view = node_view(&c, &hub, "berlin").await;
    let conflicts: Vec<&Value> = view["conflicts"]
        .as_array()
        .expect("conflicts")
        .iter()
        .filter(|c| c["kind"] == "coupon_per_customer_limit")
        .collect();
    assert_eq!(conflicts.len(), 1, "{view}");
    assert!(conflicts[0]["detail"]
        .as_str()
        .expect("detail")
        .contains("ONCE-EACH"));
    // The customer's store uses count online too.
    assert!(bo
        .check("ONCE-EACH", Some(ada), time::OffsetDateTime::now_utc())
        .is_err());
}

#[actix_web::test]
async fn a_coupon_that_ends_calls_back_the_rights_a_store_holds() {
    let hub = spawn_with(|dir| {
        let mut s = settings(dir);
        s.edge.coupon_grant_per_node = 3;
        s.edge.coupon_grant_percent = 50;
        s
    })
    .await;
    let c = client();
    let merchandiser = back_office_user(&c, &hub, "merch@example.com", &["merchandiser"]).await;
    let approver = back_office_user(&c, &hub, "approver@example.com", &["approver"]).await;
    for (path, token, body) in [
        (
            "/api/v1/backoffice/promotions",
            &merchandiser,
            json!({"id": "SPRING", "name": "Spring coupon",
                   "spec": {"conditions": [{"type": "coupon"}],
                            "benefit": {"type": "percent_off_basket", "percent_bp": 1000}}}),
        ),
        (
            "/api/v1/backoffice/promotions/SPRING/approve",
            &approver,
            json!({}),
        ),
        (
            "/api/v1/backoffice/promotions/SPRING/coupons",
            &merchandiser,
            json!({"code": "LATER4", "max_uses": 4}),
        ),
    ] {
        let res = c
            .post(hub.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success(), "{path}: {}", res.status());
    }
    let key = Scarce::Coupon {
        code: "LATER4".into(),
    };
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    // Topped up to 3 (2, then 1 more: never over half of what the hub holds per grant).
    let mut at_node = Rights::new();
    hub_items_until(&mut node, |seen| {
        for i in seen {
            if let Item::Rights { key: k, state } = i {
                if *k == key {
                    at_node.merge(state);
                }
            }
        }
        at_node.held(&berlin()) == 3
    })
    .await;
    assert_eq!(
        coupon_uses(&hub, "LATER4"),
        3,
        "the store's 3 count as taken"
    );
    assert!(hub
        .handle
        .backoffice
        .check("LATER4", None, time::OffsetDateTime::now_utc())
        .is_ok());

    // The promotion ends: the hub asks the store for the rights back.
    let res = c
        .post(hub.url("/api/v1/backoffice/promotions/SPRING/end"))
        .bearer_auth(&approver)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let items = hub_items_until(&mut node, |seen| {
        seen.iter().any(|i| {
            matches!(i, Item::Command(Command { kind: CommandKind::EndCoupon { code }, .. }) if code == "LATER4")
        })
    })
    .await;
    assert!(!items.is_empty());
    // The node hands back what it holds; the hub counts them no more.
    at_node
        .transfer(&berlin(), &ReplicaId::hub(), 3)
        .expect("held");
    assert_eq!(
        node.deltas(
            1,
            1,
            vec![Item::Rights {
                key: key.clone(),
                state: at_node.row(&berlin()),
            }],
        )
        .await,
        1
    );
    eventually(WAIT, || async {
        (coupon_uses(&hub, "LATER4") == 0).then_some(())
    })
    .await;
    let row = coupon_row(&c, &hub, "LATER4").await.expect("row");
    assert_eq!(row["hub_holds"], 4, "{row}");
    assert_eq!(row["stores"]["berlin"]["holds"], 0, "{row}");
}

/// Makes live promotions and their codes as business users do: each `(promotion, spec, code
/// and limits)`.
async fn live_codes(c: &reqwest::Client, hub: &common::TestHub, codes: &[(&str, Value, Value)]) {
    let merchandiser = back_office_user(c, hub, "merch@example.com", &["merchandiser"]).await;
    let approver = back_office_user(c, hub, "approver@example.com", &["approver"]).await;
    for (promotion, spec, coupon) in codes {
        for (path, token, body) in [
            (
                "/api/v1/backoffice/promotions".to_string(),
                &merchandiser,
                json!({"id": promotion, "name": promotion, "spec": spec}),
            ),
            (
                format!("/api/v1/backoffice/promotions/{promotion}/approve"),
                &approver,
                json!({}),
            ),
            (
                format!("/api/v1/backoffice/promotions/{promotion}/coupons"),
                &merchandiser,
                coupon.clone(),
            ),
        ] {
            let res = c
                .post(hub.url(&path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("sent");
            assert!(res.status().is_success(), "{path}: {}", res.status());
        }
    }
}

fn uses_of(hub: &common::TestHub, promotion: &str, code: &str) -> u64 {
    hub.handle
        .backoffice
        .coupons(promotion)
        .expect("coupons")
        .into_iter()
        .find(|c| c.code == code)
        .expect("the code")
        .uses
}

#[actix_web::test]
async fn codes_of_a_promotion_limited_online_are_not_shared_with_the_stores() {
    let hub = spawn().await;
    let c = client();
    let coupon = json!({"type": "coupon"});
    let off = json!({"type": "percent_off_basket", "percent_bp": 1000});
    live_codes(
        &c,
        &hub,
        &[
            (
                "CAPPED",
                json!({"conditions": [coupon], "benefit": off, "limits": {"total": 100}}),
                json!({"code": "capped5", "max_uses": 5}),
            ),
            (
                "SPRING",
                json!({"conditions": [coupon], "benefit": off}),
                json!({"code": "open5", "max_uses": 5}),
            ),
        ],
    )
    .await;
    let mut node = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    node.handshake("berlin", "store-berlin", Vector::new(), None)
        .await;
    let open = Scarce::Coupon {
        code: "OPEN5".into(),
    };
    // The pass that grants OPEN5 has been over CAPPED5 too.
    let items = hub_items_until(&mut node, |seen| {
        seen.iter()
            .any(|i| matches!(i, Item::Rights { key, state } if *key == open && state.held(&berlin()) > 0))
    })
    .await;
    let capped = |i: &Item| match i {
        Item::Coupon(t) => t.code == "CAPPED5",
        Item::Rights {
            key: Scarce::Coupon { code },
            ..
        } => code == "CAPPED5",
        _ => false,
    };
    assert!(!items.iter().any(capped), "{items:?}");
    assert_eq!(
        uses_of(&hub, "CAPPED", "CAPPED5"),
        0,
        "nothing away at the stores"
    );
    assert_eq!(uses_of(&hub, "SPRING", "OPEN5"), 1, "one granted to berlin");
}

#[actix_web::test]
async fn a_node_from_before_coupons_is_granted_none() {
    let hub = spawn_with(|dir| {
        let mut s = settings(dir);
        s.edge.coupon_grant_per_node = 2;
        s.edge.coupon_grant_percent = 50;
        s
    })
    .await;
    let c = client();
    live_codes(
        &c,
        &hub,
        &[(
            "SPRING",
            json!({"conditions": [{"type": "coupon"}],
                   "benefit": {"type": "percent_off_basket", "percent_bp": 1000}}),
            json!({"code": "open10", "max_uses": 10}),
        )],
    )
    .await;
    // Berlin runs an older build: its Hello says nothing of coupons.
    let mut old = connect(&hub, Some(BERLIN)).await.expect("upgraded");
    old.send(&hello_before_coupons("berlin", "store-berlin"))
        .await;
    assert!(matches!(old.recv().await, Frame::Welcome { .. }));
    // Paris takes coupons: the pass that grants it is over every node connected.
    let mut paris = connect(&hub, Some(PARIS)).await.expect("upgraded");
    paris
        .handshake("paris", "store-paris", Vector::new(), None)
        .await;
    let key = Scarce::Coupon {
        code: "OPEN10".into(),
    };
    let paris_id = ReplicaId("paris".into());
    hub_items_until(&mut paris, |seen| {
        seen.iter().any(
            |i| matches!(i, Item::Rights { key: k, state } if *k == key && state.held(&paris_id) > 0),
        )
    })
    .await;
    // Paris holds its 2 (topped up to coupon_grant_per_node at once): the hub keeps the 8
    // others, none went to berlin.
    let row = coupon_row(&c, &hub, "OPEN10")
        .await
        .expect("the code's row");
    assert_eq!(row["hub_holds"], 8, "{row}");
    assert_eq!(
        uses_of(&hub, "SPRING", "OPEN10"),
        2,
        "only paris's count as away"
    );
}
