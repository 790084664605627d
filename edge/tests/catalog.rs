//! Catalog deltas on the node: a delta in parts switches the catalog at its last part to
//! exactly what the whole snapshot of that version gives, and keeps it across a restart; a
//! crash between parts leaves the old version whole; a delta from another version is refused
//! (and, over sync, answered with `CatalogWanted`); `Hello` tells the hub the node reads deltas
//! and which content it has; boards ask what changed since a version over HTTP.

mod common;

use common::*;
use edge_node::store::{CatalogDeltaPart, DeltaOutcome};
use edge_node::{EdgeNode, Store};
use protocol::promotion::{Promotion, PromotionId, PromotionSpec};
use protocol::replication::sync::Frame;
use protocol::replication::ReplicaId;
use protocol::{Category, CategoryId, Currency, Money, Product, ProductId};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;

/// Opens a store again after the previous one was dropped. sled lets go of its directory's
/// lock when its last background handle ends, which can be just after the drop returns: the
/// lock error alone is polled, for at most ten seconds.
fn reopen(dir: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir, 4, identity("berlin")) {
            Ok(store) => return store,
            Err(e)
                if format!("{e:?}").contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopens: {e:?}"),
        }
    }
}

fn promotion(id: &str) -> Promotion {
    Promotion {
        id: PromotionId::parse(id).expect("valid id"),
        name: format!("Promotion {id}"),
        spec: PromotionSpec::from_json(
            r#"{"conditions": [{"type": "channel", "any_of": ["pos"]}],
                "benefit": {"type": "percent_off_basket", "percent_bp": 1000}}"#,
        )
        .expect("valid spec"),
        created_seq: 1,
    }
}

fn by_sku(store: &Store, sku_text: &str) -> Product {
    store
        .catalog()
        .snapshot
        .product_by_sku(&sku(sku_text))
        .expect("in the catalog")
        .clone()
}

fn repriced(mut p: Product, minor: i64) -> Product {
    p.variants[0].price = Money::new(minor, Currency::EUR);
    p
}

fn new_product() -> Product {
    let mut p = repriced(catalog().1[0].clone(), 350);
    p.id = ProductId::new();
    p.slug = "cocoa".into();
    p.name = "Cocoa".into();
    p.variants[0].sku = sku("COC-1");
    p.variants[0].barcode = Some("4000000000042".into());
    p
}

fn tea_category() -> Category {
    Category {
        id: CategoryId("tea".into()),
        name: "Tea".into(),
        description: "Leaves".into(),
        position: 2,
    }
}

/// A part of the delta 1 → 2; fields not given are empty.
fn part(from: u64, to: u64, part: u32, parts: u32) -> CatalogDeltaPart {
    CatalogDeltaPart {
        from_version: from,
        to_version: to,
        fingerprint: format!("f{to}"),
        part,
        parts,
        categories: Vec::new(),
        removed_categories: Vec::new(),
        promotions: None,
        removed: Vec::new(),
        products: Vec::new(),
    }
}

/// Version 2 of the test catalog as a delta from 1 in two parts: coffee repriced, tea gone,
/// cocoa new, a tea category, a promotion; and the same version as a whole.
fn version_2(store: &Store) -> (Vec<CatalogDeltaPart>, (Vec<Category>, Vec<Product>)) {
    let coffee = repriced(by_sku(store, "COF-1"), 529);
    let tea = by_sku(store, "TEA-1");
    let mut first = part(1, 2, 0, 2);
    first.categories = vec![tea_category()];
    first.promotions = Some(vec![promotion("POS10")]);
    first.removed = vec![tea.id];
    first.products = vec![coffee.clone()];
    let mut second = part(1, 2, 1, 2);
    second.products = vec![new_product()];
    let coffee_id = coffee.id;
    let v1 = store.catalog();
    let mut categories = v1.snapshot.categories().to_vec();
    categories.push(tea_category());
    let whole: Vec<Product> = v1
        .snapshot
        .products()
        .iter()
        .filter(|p| p.id != tea.id && p.id != coffee_id)
        .cloned()
        .chain([coffee, second.products[0].clone()])
        .collect();
    (vec![first, second], (categories, whole))
}

/// The catalog in use, as comparable content.
fn content(store: &Store) -> (u64, Vec<Category>, Vec<Product>, Vec<Promotion>) {
    let c = store.catalog();
    (
        c.version(),
        c.snapshot.categories().to_vec(),
        c.snapshot.products().to_vec(),
        c.promotions.promotions().to_vec(),
    )
}

#[test]
fn a_delta_gives_what_the_snapshot_gives_and_a_crash_between_parts_leaves_the_old_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    // The same catalog at version 1 elsewhere, to receive version 2 whole.
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other = Store::open(other_dir.path(), 4, identity("berlin")).expect("opens");
    let v1 = store.catalog();
    other
        .apply_catalog_chunk(
            1,
            0,
            1,
            v1.snapshot.categories().to_vec(),
            Vec::new(),
            v1.snapshot.products().to_vec(),
        )
        .expect("installs");
    assert_eq!(content(&other), content(&store));

    let (delta, (categories, products)) = version_2(&store);
    let before = content(&store);
    assert_eq!(
        store.apply_catalog_delta(delta[0].clone()).expect("stored"),
        DeltaOutcome::Staged
    );
    assert_eq!(
        content(&store),
        before,
        "nothing switches before the last part"
    );
    // The node dies between the parts: the old version is whole after the restart.
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(content(&store), before);
    assert_eq!(store.catalog().fingerprint, "");
    // The hub sends the delta again from its first part once the node is back.
    for p in &delta {
        let outcome = store.apply_catalog_delta(p.clone()).expect("applied");
        assert_eq!(
            outcome,
            if p.part + 1 == p.parts {
                DeltaOutcome::Switched(2)
            } else {
                DeltaOutcome::Staged
            }
        );
    }
    assert_eq!(store.catalog().fingerprint, "f2");
    // The whole version 2 gives exactly the same catalog.
    other
        .apply_catalog_chunk(2, 0, 1, categories, vec![promotion("POS10")], products)
        .expect("switches");
    let after = content(&store);
    assert_eq!(after, content(&other));
    assert_eq!(after.2.len(), 3);
    assert!(store
        .catalog()
        .snapshot
        .product_by_sku(&sku("TEA-1"))
        .is_none());
    assert_eq!(
        store.catalog().sku_by_barcode("4000000000042"),
        Some(&sku("COC-1"))
    );
    // Kept across a restart, fingerprint included.
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(content(&store), after);
    assert_eq!(store.catalog().fingerprint, "f2");
}

#[test]
fn a_delta_from_another_version_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    let before = content(&store);
    let mut stray = part(5, 6, 0, 1);
    stray.removed = vec![by_sku(&store, "COF-1").id];
    assert_eq!(
        store.apply_catalog_delta(stray).expect("answered"),
        DeltaOutcome::Refused { current: 1 }
    );
    assert_eq!(content(&store), before);
    let (delta, _) = version_2(&store);
    for p in &delta {
        store.apply_catalog_delta(p.clone()).expect("applied");
    }
    assert_eq!(store.catalog().version(), 2);
    // The same delta again: the node is past it.
    assert_eq!(
        store
            .apply_catalog_delta(delta[0].clone())
            .expect("answered"),
        DeltaOutcome::Refused { current: 2 }
    );
    assert_eq!(store.catalog().version(), 2);
}

#[test]
fn the_node_tells_what_changed_since_a_version_while_it_knows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    let coffee = repriced(by_sku(&store, "COF-1"), 529);
    let tea = by_sku(&store, "TEA-1");
    let mut to_2 = part(1, 2, 0, 1);
    to_2.products = vec![coffee.clone()];
    store.apply_catalog_delta(to_2).expect("applied");
    let mut to_3 = part(2, 3, 0, 1);
    to_3.removed = vec![tea.id];
    to_3.promotions = Some(vec![promotion("POS10")]);
    store.apply_catalog_delta(to_3).expect("applied");

    let since_1 = store
        .catalog_changes_since(1)
        .expect("reads")
        .expect("known");
    assert_eq!((since_1.since, since_1.version), (1, 3));
    assert_eq!(since_1.products, vec![coffee]);
    assert_eq!(since_1.removed, vec![tea.id]);
    assert_eq!(
        since_1.promotions.map(|p| p.len()),
        Some(1),
        "the promotions changed"
    );
    let since_2 = store
        .catalog_changes_since(2)
        .expect("reads")
        .expect("known");
    assert!(since_2.products.is_empty());
    assert_eq!(since_2.removed, vec![tea.id]);
    let since_3 = store
        .catalog_changes_since(3)
        .expect("reads")
        .expect("known");
    assert!(since_3.products.is_empty() && since_3.removed.is_empty());
    assert!(since_3.promotions.is_none());
    // Older than what it keeps, or a version it never had: the board reloads everything.
    assert!(store.catalog_changes_since(0).expect("reads").is_none());
    assert!(store.catalog_changes_since(9).expect("reads").is_none());
    // A whole catalog switch: everything changed.
    let (categories, products) = catalog();
    store
        .apply_catalog_chunk(4, 0, 1, categories, Vec::new(), products)
        .expect("switches");
    assert!(store.catalog_changes_since(3).expect("reads").is_none());
    assert!(store.catalog_changes_since(4).expect("reads").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_ask_what_changed_since_a_version_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let node = EdgeNode::start(settings(dir.path(), &format!("ws://127.0.0.1:{port}/sync")))
        .await
        .expect("starts");
    let store = node.store();
    let (categories, products) = catalog();
    let coffee = products[0].clone();
    tokio::task::spawn_blocking(move || {
        store.apply_catalog_chunk(1, 0, 1, categories, Vec::new(), products)?;
        let mut to_2 = part(1, 2, 0, 1);
        to_2.products = vec![repriced(coffee, 529)];
        store.apply_catalog_delta(to_2)
    })
    .await
    .expect("joins")
    .expect("applied");
    let client = reqwest::Client::new();
    let get = |since: &str| {
        client
            .get(format!(
                "{}/api/v1/catalog/changes?since={since}",
                node.base_url
            ))
            .bearer_auth(API_TOKEN)
            .send()
    };
    let res = get("1").await.expect("answers");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        (body["since"].as_u64(), body["catalog_version"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(body["products"][0]["variants"][0]["sku"], "COF-1");
    assert_eq!(body["products"][0]["variants"][0]["price"]["minor"], 529);
    assert_eq!(body["removed"], serde_json::json!([]));
    assert!(body["promotions"].is_null(), "unchanged");

    let res = get("0").await.expect("answers");
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "catalog_reload");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("reload the whole catalog")),
        "{body}"
    );
    let res = get("yesterday").await.expect("answers");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "bad_query");
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sync_a_delta_switches_and_one_that_does_not_fit_asks_for_the_whole_catalog() {
    let mut hub = FakeHub::start(Door::Check).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = EdgeNode::start(settings(dir.path(), &hub.url))
        .await
        .expect("starts");
    let mut s = hub.session().await;
    match s.recv().await {
        Frame::Hello {
            catalog_version,
            catalog_fingerprint,
            catalog_deltas,
            ..
        } => {
            assert_eq!((catalog_version, catalog_fingerprint.as_str()), (0, ""));
            assert!(catalog_deltas, "the node reads deltas");
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    let welcome = |version| Frame::Welcome {
        have: BTreeMap::from([(ReplicaId("berlin".into()), 0)]),
        catalog_version: version,
        hub_time_ms: edge_node::store::now_ms(),
    };
    s.send(&welcome(1)).await;
    let (categories, products) = catalog();
    s.send(&Frame::Catalog {
        version: 1,
        part: 0,
        parts: 1,
        categories,
        promotions: Vec::new(),
        products,
        fingerprint: "f1".into(),
    })
    .await;
    let store = node.store();
    eventually(5, "the catalog", || {
        (store.catalog().version() == 1).then_some(())
    })
    .await;
    assert_eq!(store.catalog().fingerprint, "f1");

    let mut to_2 = part(1, 2, 0, 1);
    to_2.products = vec![repriced(by_sku(&store, "MUG-1"), 1100)];
    s.send(&delta_frame(to_2)).await;
    eventually(5, "the delta", || {
        (store.catalog().version() == 2).then_some(())
    })
    .await;
    assert_eq!(
        by_sku(&store, "MUG-1").variants[0].price,
        Money::new(1100, Currency::EUR)
    );
    // A delta from a version the node is not at: it asks for the whole catalog.
    s.send(&delta_frame(part(5, 6, 0, 1))).await;
    let wanted = s
        .recv_until(|f| match f {
            Frame::CatalogWanted { version } => Some(version),
            _ => None,
        })
        .await;
    assert_eq!(wanted, 2);
    assert_eq!(store.catalog().version(), 2);

    // On the next connection the node says what it has.
    drop(s);
    let mut s = hub.session().await;
    match s.recv().await {
        Frame::Hello {
            catalog_version,
            catalog_fingerprint,
            ..
        } => assert_eq!((catalog_version, catalog_fingerprint.as_str()), (2, "f2")),
        other => panic!("expected Hello, got {other:?}"),
    }
    drop(store);
    node.stop().await.expect("stops");
}

fn delta_frame(p: CatalogDeltaPart) -> Frame {
    Frame::CatalogDelta {
        from_version: p.from_version,
        to_version: p.to_version,
        fingerprint: p.fingerprint,
        part: p.part,
        parts: p.parts,
        categories: p.categories,
        removed_categories: p.removed_categories,
        promotions: p.promotions,
        removed: p.removed,
        products: p.products,
    }
}
