//! Shared state across hub nodes on one PostgreSQL (`storage = "cluster"`): three in-process
//! `hub::Application`s on a fresh schema. A catalog change made through one node is served by
//! the others (cross-node cache invalidation, `hub::cluster::notify`); order numbers minted on
//! all nodes at once are distinct (the engine mints them); the last units of a SKU held on two
//! nodes at once go to one of them (the store arbitrates stock, `Change::SwapStock`), and the
//! third node's stock view follows.
//!
//! Compiled with the `cluster-tests` feature; needs PostgreSQL at `OMNIHUB_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`). The schema is dropped afterwards.

#![cfg(feature = "cluster-tests")]

mod common;

use common::cluster::{on_schema, settled, start, Node};
use channels::Backend;
use common::{eventually, product};
use hub::actors::inventory::HoldFailure;
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
}

async fn last_units_have_one_winner(nodes: &[&Node]) {
    let online = LocationId::online();
    let tea = Sku::parse("TEA").expect("sku");
    // Every node's view agrees there are 5 (the seed set them on each node).
    for n in nodes {
        eventually(PROPAGATION, || async {
            (n.handle.inventory.available(&online, std::slice::from_ref(&tea)) == [5]).then_some(())
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

#[actix_web::test]
async fn caches_order_numbers_and_stock_are_shared_across_nodes() {
    on_schema(|schema| async move {
        let a = start("node-a", &schema).await;
        let b = start("node-b", &schema).await;
        let c = start("node-c", &schema).await;
        settled(&[&a, &b, &c]).await;
        let nodes = [&a, &b, &c];
        catalog_change_is_served_by_every_node(&nodes).await;
        order_numbers_are_distinct_across_nodes(&nodes).await;
        last_units_have_one_winner(&nodes).await;
        for n in [a, b, c] {
            n.server.stop(true).await;
            n.stopped
                .await
                .expect("the node ran")
                .expect("the node stopped cleanly");
        }
    })
    .await;
}
