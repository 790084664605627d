//! Shared state across hub nodes on one PostgreSQL (`storage = "cluster"`): three in-process
//! `hub::Application`s on a fresh schema per test. A catalog change made through one node is
//! served by the others (cross-node cache invalidation, `hub::cluster::notify`); order numbers
//! minted on all nodes at once are distinct (the engine mints them); the last units of a SKU
//! held on two nodes at once go to one of them (the store arbitrates stock,
//! `Change::SwapStock`), and the third node's stock view follows; a store's edge node synced
//! through one hub node continues through another after the first stops, without sending
//! again what was acknowledged.
//!
//! Compiled with the `cluster-tests` feature; needs PostgreSQL at `OMNIHUB_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`). The schema is dropped afterwards.

#![cfg(feature = "cluster-tests")]

mod common;

use channels::Backend;
use common::cluster::{on_schema, settled, start, start_from, Node};
use common::edge_node::{self, berlin, connect_to, sale, sku, store_berlin, tea_key, BERLIN};
use common::{client, eventually, product, SendForJson};
use hub::actors::inventory::HoldFailure;
use hub::storage::{Change, UnitOfWork};
use protocol::replication::counter::Entry;
use protocol::replication::sync::{Frame, Item, Vector};
use protocol::replication::Rights;
use protocol::{CheckoutId, LocationId, Sku};
use std::time::Duration;

/// How long a change on one node may take to show on another.
const PROPAGATION: Duration = Duration::from_secs(10);

async fn catalog_change_is_served_by_every_node(nodes: &[&Node]) {
    nodes[0]
        .handle
        .upsert_catalog(
            Vec::new(),
            vec![product("Cluster Blend", "CLUSTER-1", 999, "coffee")],
        )
        .await
        .expect("stored through node a");
    for n in &nodes[1..] {
        eventually(PROPAGATION, || async {
            n.handle
                .backend
                .catalog()
                .product_by_slug("cluster-blend")
                .map(|p| p.name.clone())
        })
        .await;
    }
}

async fn order_numbers_are_distinct_across_nodes(nodes: &[&Node]) {
    const N: usize = 30;
    let mints = (0..N).map(|i| {
        let storage = nodes[i % nodes.len()].handle.storage.clone();
        async move {
            storage
                .next_order_sequence(hub::actors::checkout::ORDER_PREFIX)
                .await
                .expect("minted")
                .expect("the cluster storage mints order numbers")
        }
    });
    let mut numbers = futures_util::future::join_all(mints).await;
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), N, "every number once: {numbers:?}");
    // And the store keeps a number to one order: the same number again, through another node,
    // is refused.
    let number = protocol::order::online_order_number(numbers[0]);
    let order = |node: &Node| {
        let at = time::OffsetDateTime::now_utc();
        let customer = protocol::CustomerId::new();
        let record = common::order_record(
            protocol::OrderId::new(),
            &number,
            customer,
            "a@example.com",
            at,
        );
        let storage = node.handle.storage.clone();
        async move {
            storage
                .commit(UnitOfWork::new().with(Change::CreateOrder(record)))
                .await
        }
    };
    order(nodes[0])
        .await
        .expect("the first order with the number");
    assert!(
        order(nodes[1]).await.is_err(),
        "a second order with number {number} is refused"
    );
}

async fn last_units_have_one_winner(nodes: &[&Node]) {
    let online = LocationId::online();
    let tea = Sku::parse("TEA").expect("sku");
    // Every node's view agrees there are 5 (the seed set them on each node).
    for n in nodes {
        eventually(PROPAGATION, || async {
            (n.handle
                .inventory
                .available(&online, std::slice::from_ref(&tea))
                == [5])
            .then_some(())
        })
        .await;
    }
    let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let all_five = [(tea.clone(), 5)];
    let (on_a, on_b) = futures_util::join!(
        nodes[0]
            .handle
            .inventory
            .hold(CheckoutId::new(), &online, &all_five, until),
        nodes[1]
            .handle
            .inventory
            .hold(CheckoutId::new(), &online, &all_five, until),
    );
    let won = [&on_a, &on_b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "one winner: a {on_a:?}, b {on_b:?}");
    let lost = if on_a.is_ok() { on_b } else { on_a };
    assert!(
        matches!(&lost, Err(HoldFailure::Short(short)) if short == &[(tea.clone(), 0)]),
        "the other finds none left: {lost:?}"
    );
    let stored = nodes[2]
        .handle
        .storage
        .stock_level(&online, &tea)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!((stored.on_hand, stored.held), (5, 5), "{stored:?}");
    // The node that took no part sees it too.
    eventually(PROPAGATION, || async {
        (nodes[2]
            .handle
            .inventory
            .available(&online, std::slice::from_ref(&tea))
            == [0])
        .then_some(())
    })
    .await;
}

/// Three nodes on `schema`, every shard owned.
async fn three(schema: &str) -> [Node; 3] {
    let a = start("node-a", schema).await;
    let b = start("node-b", schema).await;
    let c = start("node-c", schema).await;
    settled(&[&a, &b, &c]).await;
    [a, b, c]
}

/// Until `node`'s edge replica offers the seeded catalog (it looks every 250 ms), so a store's
/// first welcome brings it.
async fn catalog_offered(node: &Node) {
    eventually(PROPAGATION, || async {
        let live = node.handle.edge.live().await.expect("live");
        live.iter().all(|n| n.catalog_version >= 2).then_some(())
    })
    .await;
}

/// Stops the nodes still running, each to its end.
async fn stop(nodes: impl IntoIterator<Item = Node>) {
    for n in nodes {
        n.server.stop(true).await;
        n.stopped
            .await
            .expect("the node ran")
            .expect("the node stopped cleanly");
    }
}

#[actix_web::test]
async fn a_catalog_change_on_one_node_is_served_by_the_others() {
    on_schema(|schema| async move {
        let nodes = three(&schema).await;
        catalog_change_is_served_by_every_node(&nodes.iter().collect::<Vec<_>>()).await;
        stop(nodes).await;
    })
    .await;
}

#[actix_web::test]
async fn order_numbers_minted_on_three_nodes_at_once_are_distinct() {
    on_schema(|schema| async move {
        let nodes = three(&schema).await;
        order_numbers_are_distinct_across_nodes(&nodes.iter().collect::<Vec<_>>()).await;
        stop(nodes).await;
    })
    .await;
}

#[actix_web::test]
async fn the_last_units_held_on_two_nodes_at_once_have_one_winner() {
    on_schema(|schema| async move {
        let nodes = three(&schema).await;
        last_units_have_one_winner(&nodes.iter().collect::<Vec<_>>()).await;
        stop(nodes).await;
    })
    .await;
}

#[actix_web::test]
async fn an_edge_node_continues_through_another_hub_node() {
    on_schema(|schema| async move {
        let mut nodes = Vec::new();
        for id in ["node-a", "node-b", "node-c"] {
            nodes.push(start_from(id, &schema, edge_node::settings, |_| {}).await);
        }
        settled(&nodes.iter().collect::<Vec<_>>()).await;
        let c = client();
        // Synced through node a: the store's on hand, rights and a sale, acknowledged.
        catalog_offered(&nodes[0]).await;
        let mut store = connect_to(nodes[0].addr, Some(BERLIN))
            .await
            .expect("upgraded");
        store
            .handshake("berlin", "store-berlin", Vector::new(), None)
            .await;
        let mut rights = Rights::new();
        rights.create(&berlin(), 10);
        let first = sale(2);
        let batch = vec![
            Item::OnHand {
                sku: sku("TEA"),
                location: store_berlin(),
                entry: Entry { p: 10, n: 2 },
            },
            Item::Rights {
                key: tea_key(),
                state: rights,
            },
            Item::Sale(first.clone()),
        ];
        assert_eq!(store.deltas(1, 2, batch).await, 2, "acknowledged by node a");
        drop(store);
        // Node a stops; the store reconnects to node b.
        let a = nodes.remove(0);
        stop([a]).await;
        catalog_offered(&nodes[0]).await;
        let mut store = connect_to(nodes[0].addr, Some(BERLIN))
            .await
            .expect("upgraded");
        let welcome = store
            .handshake("berlin", "store-berlin", Vector::new(), None)
            .await;
        let Frame::Welcome { have, .. } = &welcome else {
            panic!("expected a welcome, got {welcome:?}");
        };
        assert_eq!(
            have.get(&berlin()),
            Some(&2),
            "node b knows what node a acknowledged: nothing is sent again"
        );
        // The store continues after it; its first sale, were it sent again, counts once.
        let second = sale(1);
        assert_eq!(
            store
                .deltas(
                    3,
                    3,
                    vec![Item::Sale(first.clone()), Item::Sale(second.clone())]
                )
                .await,
            3
        );
        for n in &nodes {
            let sales = c
                .get(n.url("/api/v1/admin/edge/sales?location=store-berlin"))
                .bearer_auth(edge_node::ADMIN)
                .json_body()
                .await;
            assert_eq!(sales["count"], 2, "on {}: no sale twice: {sales}", n.id);
        }
        // The store's on hand reaches every remaining node's stock view.
        for n in &nodes {
            eventually(PROPAGATION, || async {
                n.handle
                    .inventory
                    .level(&store_berlin(), &sku("TEA"))
                    .filter(|l| l.on_hand == 8)
            })
            .await;
        }
        drop(store);
        stop(nodes).await;
    })
    .await;
}
