//! The sync client against a fake hub written here with tokio-tungstenite: Hello/Welcome, the
//! catalog, outbox batches dropped on Ack, flow control, hub batches applied once (duplicates
//! and gaps answered with `have`), commands, unknown frames ignored, oversized and undecodable
//! frames closed with a reason, reconnecting from the hub's `have`, 401 and version refusals
//! backed off at the maximum (a 401 shown as the sync problem).

mod common;

use common::*;
use edge_node::{EdgeHandle, EdgeNode, SaleRequest};
use protocol::replication::sync::{close, Frame, Item, Scarce, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use protocol::replication::{Command, CommandKind, Hlc, ReplicaId, Rights, Settlement};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn now_ms() -> u64 {
    edge_node::store::now_ms()
}

fn berlin() -> ReplicaId {
    ReplicaId("berlin".into())
}

fn hub_stamp() -> Hlc {
    Hlc {
        ms: now_ms(),
        c: 0,
        r: ReplicaId::hub(),
    }
}

fn cof_key() -> Scarce {
    Scarce::Stock {
        sku: sku("COF-1"),
        location: location(),
    }
}

async fn start_node(hub: &FakeHub) -> (tempfile::TempDir, EdgeHandle) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = EdgeNode::start(settings(dir.path(), &hub.url))
        .await
        .expect("starts");
    (dir, node)
}

/// Plays Hello → Welcome (the hub has `have_berlin` from the node) and sends the catalog.
async fn handshake(session: &mut HubSession, have_berlin: u64) -> Frame {
    let hello = session.recv().await;
    let mut have = BTreeMap::new();
    have.insert(berlin(), have_berlin);
    session
        .send(&Frame::Welcome {
            have,
            catalog_version: 1,
            hub_time_ms: now_ms(),
        })
        .await;
    hello
}

async fn send_catalog(session: &mut HubSession, node: &EdgeHandle) {
    let (categories, products) = catalog();
    let (first, second) = products.split_at(1);
    for (part, chunk) in [(1u32, first), (2, second)] {
        session
            .send(&Frame::Catalog {
                version: 1,
                part,
                parts: 2,
                categories: if part == 1 {
                    categories.clone()
                } else {
                    vec![]
                },
                promotions: vec![],
                products: chunk.to_vec(),
                fingerprint: "f1".into(),
            })
            .await;
    }
    let store = node.store();
    eventually(5, "the catalog switch", || {
        (store.catalog().version() == 1).then_some(())
    })
    .await;
}

async fn next_deltas(session: &mut HubSession) -> (u64, u64, Vec<Item>) {
    session
        .recv_until(|f| match f {
            Frame::Deltas {
                origin,
                from_seq,
                to_seq,
                items,
            } if origin == berlin() => Some((from_seq, to_seq, items)),
            _ => None,
        })
        .await
}

async fn next_ack(session: &mut HubSession) -> u64 {
    session
        .recv_until(|f| match f {
            Frame::Ack { origin, seq } if origin.is_hub() => Some(seq),
            _ => None,
        })
        .await
}

fn rights_in(items: &[Item]) -> Option<Rights> {
    items.iter().find_map(|i| match i {
        Item::Rights { key, state } if *key == cof_key() => Some(state.clone()),
        _ => None,
    })
}

fn hub_deltas(from: u64, to: u64, items: Vec<Item>) -> Frame {
    Frame::Deltas {
        origin: ReplicaId::hub(),
        from_seq: from,
        to_seq: to,
        items,
    }
}

fn node_stock(node: &EdgeHandle, s: &str) -> edge_node::StockLine {
    node.store()
        .stock_of(&sku(s))
        .expect("reads")
        .expect("known")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_syncs_both_ways_and_the_outbox_and_journal_empty_on_ack() {
    let mut hub = FakeHub::start(Door::Check).await;
    let (_dir, node) = start_node(&hub).await;
    let mut s = hub.session().await;
    match handshake(&mut s, 0).await {
        Frame::Hello {
            version,
            replica,
            location: loc,
            have,
            catalog_version,
            pending,
            ..
        } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert_eq!(replica, berlin());
            assert_eq!(loc, location());
            assert!(have.is_empty());
            assert_eq!((catalog_version, pending), (0, 0));
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    send_catalog(&mut s, &node).await;
    let store = node.store();
    eventually(5, "connected", || node.sync_state().connected.then_some(())).await;

    // A receipt: on hand and rights, and the policy grants the hub floor((10 - 2) × 50 %) = 4.
    node.adjust(receipt("COF-1", 10), None)
        .await
        .expect("receipt");
    let (from, to, items) = next_deltas(&mut s).await;
    assert_eq!((from, to), (1, 1));
    assert!(items
        .iter()
        .any(|i| matches!(i, Item::OnHand { entry, .. } if entry.p == 10)));
    let rights = rights_in(&items).expect("the node's rights row");
    assert_eq!(rights.held(&ReplicaId::hub()), 4);
    assert_eq!(rights.held(&berlin()), 6);

    // A sale goes out at once, before the first batch is acknowledged.
    let sold = node
        .sell(sale(vec![line("COF-1", 1)], "5.00"), None)
        .await
        .expect("sold");
    let (from, to, items) = next_deltas(&mut s).await;
    assert_eq!((from, to), (2, 2));
    assert!(items
        .iter()
        .any(|i| matches!(i, Item::Sale(r) if r.id == sold.entry.sale.id)));
    assert_eq!(store.journal_records(), 1);

    s.send(&Frame::Ack {
        origin: berlin(),
        seq: 2,
    })
    .await;
    eventually(5, "the outbox emptied and the journal compacted", || {
        let c = store.cursors().ok()?;
        (c.acked == 2
            && c.pending_entries() == 0
            && c.pending_items == 0
            && store.journal_records() == 0
            && node.sync_state().last_ack_ms.is_some())
        .then_some(())
    })
    .await;

    // A hub batch: the hub hands 1 unit back; applied once, acknowledged once durable.
    let mut hub_rights = Rights::new();
    hub_rights.merge(&rights_in(&items).expect("rights"));
    hub_rights
        .transfer(&ReplicaId::hub(), &berlin(), 1)
        .expect("the hub holds 4");
    let batch = hub_deltas(
        1,
        1,
        vec![Item::Rights {
            key: cof_key(),
            state: hub_rights.row(&ReplicaId::hub()),
        }],
    );
    s.send(&batch).await;
    assert_eq!(next_ack(&mut s).await, 1);
    assert_eq!(node_stock(&node, "COF-1").node_rights, 6);
    assert_eq!(node_stock(&node, "COF-1").hub_rights, 3);
    // The same batch again: harmless, answered with what the node has.
    s.send(&batch).await;
    assert_eq!(next_ack(&mut s).await, 1);
    assert_eq!(node_stock(&node, "COF-1").node_rights, 6);
    assert_eq!(
        store
            .cursors()
            .expect("cursors")
            .have
            .get(&ReplicaId::hub()),
        Some(&1)
    );

    // A frame kind from the future is ignored; the session goes on.
    #[derive(Serialize, Deserialize)]
    struct Telepathy {
        t: String,
        colour: String,
    }
    impl protocol::Stored for Telepathy {
        const KIND: &'static str = "sync";
        const VERSION: u16 = 1;
    }
    s.send_raw(
        protocol::encode(&Telepathy {
            t: "telepathy".into(),
            colour: "blue".into(),
        })
        .expect("encodes"),
    )
    .await;
    // A gap: the node answers with its `have` so the hub rewinds.
    s.send(&hub_deltas(5, 6, vec![])).await;
    assert_eq!(next_ack(&mut s).await, 1);

    // A restock command (applied once, rights created here) and a settlement.
    let deficit = ulid::Ulid::new();
    let restock = Command {
        id: ulid::Ulid::new(),
        kind: CommandKind::Restock {
            sku: sku("TEA-1"),
            location: location(),
            units: 3,
            reason: "order W-1 returned".into(),
        },
        at: hub_stamp(),
    };
    let settlement = Settlement {
        deficit,
        settled: 1,
        short: 0,
        flagged: vec![],
        at: hub_stamp(),
    };
    let batch = hub_deltas(
        2,
        3,
        vec![
            Item::Command(restock.clone()),
            Item::Settlement(settlement),
            Item::Unknown,
        ],
    );
    s.send(&batch).await;
    assert_eq!(next_ack(&mut s).await, 3);
    let (_, _, items) = next_deltas(&mut s).await;
    assert!(items.iter().any(
        |i| matches!(i, Item::OnHand { sku: k, entry, .. } if k.as_str() == "TEA-1" && entry.p == 3)
    ));
    assert_eq!(node_stock(&node, "TEA-1").on_hand, 3);
    // The same command in a later batch is not applied twice.
    s.send(&hub_deltas(4, 4, vec![Item::Command(restock)]))
        .await;
    assert_eq!(next_ack(&mut s).await, 4);
    assert_eq!(node_stock(&node, "TEA-1").on_hand, 3);

    drop(store);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_asks_for_rights_when_short_and_gives_what_its_policy_allows() {
    let mut hub = FakeHub::start(Door::Check).await;
    let (_dir, node) = start_node(&hub).await;
    let mut s = hub.session().await;
    handshake(&mut s, 0).await;
    send_catalog(&mut s, &node).await;
    eventually(5, "connected", || node.sync_state().connected.then_some(())).await;
    node.adjust(receipt("COF-1", 10), None)
        .await
        .expect("receipt");
    next_deltas(&mut s).await; // node 6, hub 4
                               // Sell 5: the node holds 1, below its buffer of 2: it asks the hub for 1.
    node.sell(sale(vec![line("COF-1", 5)], "30.00"), None)
        .await
        .expect("sold");
    let (_, _, items) = next_deltas(&mut s).await;
    let asked = items.iter().find_map(|i| match i {
        Item::Command(Command {
            kind: CommandKind::WantRights { sku: k, units, .. },
            ..
        }) if k.as_str() == "COF-1" => Some(*units),
        _ => None,
    });
    assert_eq!(asked, Some(1));
    // The hub asks the node for 10: it gives what it holds above its buffer (none now).
    let want = Command {
        id: ulid::Ulid::new(),
        kind: CommandKind::WantRights {
            sku: sku("COF-1"),
            location: location(),
            units: 10,
        },
        at: hub_stamp(),
    };
    node.adjust(receipt("COF-1", 4), None)
        .await
        .expect("receipt"); // node 1 + 4 = 5, maybe granting
    let before = node_stock(&node, "COF-1");
    s.send(&hub_deltas(1, 1, vec![Item::Command(want)])).await;
    assert_eq!(next_ack(&mut s).await, 1);
    let after = node_stock(&node, "COF-1");
    assert_eq!(after.node_rights, 2, "keeps its safety buffer");
    assert_eq!(after.hub_rights, before.hub_rights + before.node_rights - 2);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_four_batches_are_in_flight_and_a_reconnect_resumes_from_the_hubs_have() {
    let mut hub = FakeHub::start(Door::Check).await;
    let (_dir, node) = start_node(&hub).await;
    let mut s = hub.session().await;
    handshake(&mut s, 0).await;
    send_catalog(&mut s, &node).await;
    eventually(5, "connected", || node.sync_state().connected.then_some(())).await;
    for i in 1..=4u64 {
        node.adjust(receipt("MUG-1", 1), None)
            .await
            .expect("receipt");
        let (from, to, _) = next_deltas(&mut s).await;
        assert_eq!((from, to), (i, i));
    }
    node.adjust(receipt("MUG-1", 1), None)
        .await
        .expect("receipt");
    node.adjust(receipt("MUG-1", 1), None)
        .await
        .expect("receipt");
    // Four unacknowledged: only heartbeats now. A heartbeat may have been
    // composed between the fifth and the sixth receipt (pending 5); what
    // matters is that nothing but heartbeats arrives until two say 6.
    let mut saw_six = 0;
    for _ in 0..10 {
        match s.next_message().await {
            Some(Message::Binary(b)) => {
                match protocol::replication::sync::decode_frame(&b).expect("decodes") {
                    Frame::Heartbeat { pending, .. } => {
                        assert!(pending == 5 || pending == 6, "pending {pending}");
                        if pending == 6 {
                            saw_six += 1;
                        } else {
                            assert_eq!(saw_six, 0, "pending never goes back down");
                        }
                    }
                    other => panic!("only heartbeats while 4 batches are in flight, got {other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        if saw_six == 2 {
            break;
        }
    }
    assert_eq!(saw_six, 2, "heartbeats report all six entries pending");
    s.send(&Frame::Ack {
        origin: berlin(),
        seq: 2,
    })
    .await;
    // Room for two more: entries 5 and 6 go out, in one batch, the MUG-1 states coalesced.
    let (from, to, items) = next_deltas(&mut s).await;
    assert_eq!((from, to), (5, 6));
    let on_hand: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            Item::OnHand { entry, .. } => Some(entry.p),
            _ => None,
        })
        .collect();
    assert_eq!(on_hand, vec![6], "only the latest state per key");

    // The hub drops the link having applied up to 4; the node resumes from 5.
    drop(s);
    let mut s = hub.session().await;
    match handshake(&mut s, 4).await {
        Frame::Hello { pending, .. } => assert_eq!(pending, 4, "entries 3 to 6 unacknowledged"),
        other => panic!("{other:?}"),
    }
    let (from, to, _) = next_deltas(&mut s).await;
    assert_eq!((from, to), (5, 6));
    let store = node.store();
    assert_eq!(
        store.cursors().expect("cursors").acked,
        4,
        "the Welcome acknowledged 4"
    );
    drop(store);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_with_too_big_and_changes_nothing() {
    let mut hub = FakeHub::start(Door::Check).await;
    let (_dir, node) = start_node(&hub).await;
    let mut s = hub.session().await;
    handshake(&mut s, 0).await;
    eventually(5, "connected", || node.sync_state().connected.then_some(())).await;
    // The node may refuse the frame from its header and cut the link while the rest is still
    // being written: then the write fails here, and the close frame may or may not have been
    // read before the cut. Either way the node's own record of the close is checked below.
    let sent = s
        .try_send_raw(vec![0x90; MAX_FRAME_BYTES + 512 * 1024])
        .await;
    let close_frame = loop {
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            futures_util::StreamExt::next(&mut s.ws),
        )
        .await
        .expect("a message in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => break Some(frame),
            Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(_)) | None if sent.is_err() => break None,
            other => panic!("expected a close, got {other:?} (send: {sent:?})"),
        }
    };
    if let Some(frame) = close_frame {
        assert_eq!(frame.code, CloseCode::from(close::TOO_BIG));
        assert!(frame.reason.as_str().contains("bytes"));
    }
    let store = node.store();
    assert!(store.cursors().expect("cursors").have.is_empty());
    // It reconnects.
    let mut s = hub.session().await;
    handshake(&mut s, 0).await;
    eventually(5, "the close reason shown", || {
        node.sync_state()
            .last_close
            .filter(|r| r.contains(&format!("frame over {MAX_FRAME_BYTES} bytes")))
    })
    .await;
    drop(store);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_frame_closes_with_malformed() {
    let mut hub = FakeHub::start(Door::Check).await;
    let (_dir, node) = start_node(&hub).await;
    let mut s = hub.session().await;
    handshake(&mut s, 0).await;
    s.send_raw(vec![0xc1, 0xff, 0x00, 0x13]).await;
    let close_frame = loop {
        match s.next_message().await {
            Some(Message::Close(Some(frame))) => break frame,
            Some(Message::Binary(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(close_frame.code, CloseCode::from(close::MALFORMED));
    assert!(close_frame.reason.as_str().contains("undecodable"));
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_is_backed_off_and_shown() {
    let hub = FakeHub::start(Door::Refuse).await;
    let (_dir, node) = start_node(&hub).await;
    let state = eventually(5, "the 401 shown", || {
        let s = node.sync_state();
        s.last_close
            .as_deref()
            .is_some_and(|r| r.contains("401"))
            .then_some(s)
    })
    .await;
    assert!(!state.connected);
    assert!(state.running);
    // A person must act (an unknown or retired node, or a wrong credential): it says so, and
    // backs off at the maximum (400 ms in the test settings) rather than growing from 50 ms.
    let problem = state.problem.expect("a problem shown");
    assert!(
        problem.contains("401") && problem.contains("retired"),
        "{problem}"
    );
    let state = eventually(5, "the backoff chosen", || {
        let s = node.sync_state();
        s.backoff_ms.is_some().then_some(s)
    })
    .await;
    assert_eq!(state.backoff_ms, Some(400));
    let shown: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/sync", node.base_url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert!(shown["problem"].as_str().is_some_and(|p| p.contains("401")));
    // Backing off at the maximum, not spinning: a handful of attempts.
    let seen = hub.attempts.load(std::sync::atomic::Ordering::SeqCst);
    eventually(5, "another attempt", || {
        (hub.attempts.load(std::sync::atomic::Ordering::SeqCst) > seen).then_some(())
    })
    .await;
    let t0 = hub.attempts.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let per_second = hub.attempts.load(std::sync::atomic::Ordering::SeqCst) - t0;
    assert!(per_second <= 25, "{per_second} attempts in a second");
    // The node keeps selling offline meanwhile.
    let store = node.store();
    let (categories, products) = catalog();
    store
        .apply_catalog_chunk(1, 1, 1, categories, Vec::new(), products)
        .expect("catalog");
    node.adjust(receipt("COF-1", 1), None)
        .await
        .expect("receipt");
    node.sell(
        SaleRequest {
            ..sale(vec![line("COF-1", 1)], "5")
        },
        None,
    )
    .await
    .expect("sold offline");
    drop(store);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_version_close_is_backed_off_at_the_maximum() {
    let mut hub = FakeHub::start(Door::Check).await;
    let (_dir, node) = start_node(&hub).await;
    let mut s = hub.session().await;
    let _hello = s.recv().await;
    s.ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::from(close::UNSUPPORTED_VERSION),
        reason: "this hub speaks version 2".into(),
    }))
    .await
    .expect("closes");
    let state = eventually(5, "the refusal shown", || {
        let st = node.sync_state();
        (st.last_close
            .as_deref()
            .is_some_and(|r| r.contains("4001") && r.contains("version 2"))
            && st.backoff_ms.is_some())
        .then_some(st)
    })
    .await;
    // backoff_max is 400 ms in the test settings; a jittered first delay would be ≤ 50 ms.
    assert_eq!(state.backoff_ms, Some(400));
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_heir_takes_the_retired_replicas_stock_and_a_count_aligns_its_rights() {
    let mut hub = FakeHub::start(Door::Check).await;
    let (_dir, node) = start_node(&hub).await;
    let mut s = hub.session().await;
    handshake(&mut s, 0).await;
    send_catalog(&mut s, &node).await;
    eventually(5, "connected", || node.sync_state().connected.then_some(())).await;

    // The retired replica received 10, gave the hub 4 and sold 2; the hub consumed 1 of its 4
    // for a click-and-collect order the old replica handed over (3 units left its shelf);
    // retiring it wrote off the 4 it still held.
    let old = ReplicaId("berlin-old".into());
    let mut state = Rights::new();
    state.create(&old, 10);
    state.transfer(&old, &ReplicaId::hub(), 4).expect("held");
    state.consume(&old, 2).expect("held");
    state.consume(&ReplicaId::hub(), 1).expect("held");
    state.retire(&old);
    s.send(&hub_deltas(
        1,
        1,
        vec![
            Item::OnHandOf {
                replica: old.clone(),
                sku: sku("COF-1"),
                location: location(),
                entry: protocol::replication::counter::Entry { p: 10, n: 3 },
            },
            Item::Rights {
                key: cof_key(),
                state,
            },
        ],
    ))
    .await;
    assert_eq!(next_ack(&mut s).await, 1);
    let line = node_stock(&node, "COF-1");
    assert_eq!(
        (line.on_hand, line.value, line.hub_rights, line.node_rights),
        (7, 3, 3, 0)
    );

    // The ERP counted 7 where the hub saw 7 (nothing sold since): rights for the 4 units
    // that carry none.
    let count = Command {
        id: ulid::Ulid::new(),
        kind: CommandKind::Count {
            sku: sku("COF-1"),
            location: location(),
            on_hand: 7,
            as_seen: Some(7),
        },
        at: hub_stamp(),
    };
    s.send(&hub_deltas(2, 2, vec![Item::Command(count)])).await;
    assert_eq!(next_ack(&mut s).await, 2);
    let line = node_stock(&node, "COF-1");
    assert_eq!(
        (line.on_hand, line.value, line.node_rights, line.hub_rights),
        (7, 7, 4, 3)
    );
    // The node ships its own row and entries only.
    let (_, _, items) = next_deltas(&mut s).await;
    let row = rights_in(&items).expect("the node's row");
    assert_eq!(row.r.keys().collect::<Vec<_>>(), vec![&berlin()]);
    assert!(row.w.is_empty());
    assert!(items.iter().all(|i| !matches!(i, Item::OnHandOf { .. })));
    node.stop().await.expect("stops");
}
