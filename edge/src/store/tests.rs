//! Unit tests of the store that need its insides: injected flush and journal failures, the
//! merge of hub items (relayed on-hand entries, whole rights states, counts), the catalog
//! version and the journal's acknowledgement markers across a crash.

use super::*;
use crate::ops::{PaymentMethod, PaymentRequest, SaleLineRequest};
use crate::storage::AdjustmentKind;
use crate::storage::StoreError;
use protocol::replication::counter::Entry;
use protocol::replication::sync::Item;
use protocol::replication::{Command, CommandKind};
use protocol::{CategoryId, Currency, Money, ProductId, Variant};
use std::sync::atomic::Ordering;

fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("valid sku")
}

fn loc() -> LocationId {
    LocationId("store-berlin".into())
}

fn hub() -> ReplicaId {
    ReplicaId::hub()
}

fn rid(s: &str) -> ReplicaId {
    ReplicaId(s.into())
}

fn key(s: &str) -> Scarce {
    Scarce::Stock {
        sku: sku(s),
        location: loc(),
    }
}

fn product(sku_text: &str, price: i64) -> Product {
    Product {
        id: ProductId::new(),
        slug: sku_text.to_lowercase(),
        name: sku_text.into(),
        brand: "Omni".into(),
        description: String::new(),
        category: CategoryId("coffee".into()),
        tax_rate_bp: 1900,
        tax_class: "standard".into(),
        image: String::new(),
        variants: vec![Variant {
            sku: sku(sku_text),
            title: "Default".into(),
            price: Money::new(price, Currency::EUR),
            compare_at: None,
            barcode: None,
            weight_grams: 250,
        }],
        attributes: Default::default(),
    }
}

fn category() -> Category {
    Category {
        id: CategoryId("coffee".into()),
        name: "Coffee".into(),
        description: String::new(),
        position: 1,
    }
}

/// A store of replica `replica` at `store-berlin`, with COF-1 (EUR 5.00) in catalog version 1.
fn open(dir: &Path, replica: &str) -> Store {
    let store = Store::open(
        dir,
        4,
        Identity {
            replica: rid(replica),
            location: loc(),
            store_name: "Berlin".into(),
            safety_buffer: 2,
            online_share_percent: 50,
        },
    )
    .expect("opens");
    if store.catalog().version() == 0 {
        store
            .apply_catalog_chunk(
                1,
                1,
                1,
                vec![category()],
                Vec::new(),
                vec![product("COF-1", 500)],
            )
            .expect("catalog");
    }
    store
}

fn receipt(units: i64) -> AdjustmentRequest {
    AdjustmentRequest::Receipt {
        sku: "COF-1".into(),
        units,
        reason: None,
        clerk: None,
    }
}

fn count(on_hand: i64) -> AdjustmentRequest {
    AdjustmentRequest::Count {
        sku: "COF-1".into(),
        on_hand,
        reason: Some("shelf count".into()),
        clerk: None,
    }
}

fn sale(units: i64) -> SaleRequest {
    SaleRequest {
        lines: vec![SaleLineRequest {
            sku: Some("COF-1".into()),
            barcode: None,
            quantity: units,
        }],
        payments: vec![PaymentRequest {
            method: PaymentMethod::Cash,
            amount: format!("{}.00", 5 * units),
            reference: None,
            card: None,
        }],
        customer: None,
        clerk: None,
        override_reason: None,
        coupons: Vec::new(),
    }
}

fn cof(store: &Store) -> StockLine {
    store
        .stock_of(&sku("COF-1"))
        .expect("reads")
        .expect("known")
}

fn stamp() -> Hlc {
    Hlc {
        ms: now_ms(),
        c: 0,
        r: hub(),
    }
}

fn hub_count(on_hand: i64, as_seen: Option<i64>) -> Item {
    Item::Command(Command {
        id: Ulid::new(),
        kind: CommandKind::Count {
            sku: sku("COF-1"),
            location: loc(),
            on_hand,
            as_seen,
        },
        at: stamp(),
    })
}

/// Applies `items` as the hub's next batch.
fn from_hub(store: &Store, items: Vec<Item>) {
    let next = store
        .cursors()
        .expect("cursors")
        .have
        .get(&hub())
        .copied()
        .unwrap_or(0)
        + 1;
    assert_eq!(
        store
            .apply_deltas(&hub(), next, next, items)
            .expect("applies"),
        next
    );
}

fn last_adjustment(store: &Store) -> AdjustmentRecord {
    let (_, v) = store
        .db
        .tree(T::Records)
        .scan_prefix([ADJUSTMENT])
        .last()
        .expect("an adjustment")
        .expect("reads");
    protocol::decode(&v).expect("decodes")
}

// ---- H2: a flush failure after a commit; a journal failure after a durable commit ----------

#[test]
fn a_flush_failure_after_the_commit_keeps_the_seq_and_fails_the_store_until_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin");
    store.adjust(&receipt(10), None).expect("receipt");
    let before = store.cursors().expect("cursors");
    let durable = *store.durable_seq().borrow();
    assert_eq!(durable, before.next_seq - 1);

    store.db.fail_flush.store(true, Ordering::SeqCst);
    let failed = store.sell(&sale(1), Some("till-1"));
    assert!(
        matches!(failed, Err(OpError::Storage(StoreError::Failed(_)))),
        "{failed:?}"
    );
    // The commit happened: its seq is used up, so no later change can overwrite its entry.
    let after = store.cursors().expect("cursors");
    assert_eq!(after.next_seq, before.next_seq + 1);
    assert!(store
        .db
        .contains(T::Outbox, &outbox_key(before.next_seq))
        .expect("reads"));
    // Not announced to the sync task: it is not known to be durable.
    assert_eq!(*store.durable_seq().borrow(), durable);
    assert!(store.failure().is_some());
    assert!(store
        .sync_state()
        .problem
        .is_some_and(|p| p.contains("did not flush")));

    // Every further write is refused, even once the disk is back, until a restart.
    store.db.fail_flush.store(false, Ordering::SeqCst);
    assert!(matches!(
        store.sell(&sale(1), None),
        Err(OpError::Storage(StoreError::Failed(_)))
    ));
    assert!(matches!(
        store.sell(&sale(1), Some("till-1")),
        Err(OpError::Storage(StoreError::Failed(_)))
    ));
    assert!(matches!(
        store.adjust(&receipt(1), None),
        Err(OpError::Storage(StoreError::Failed(_)))
    ));
    assert!(matches!(
        store.apply_deltas(&hub(), 1, 1, vec![]),
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(store.ack(1), Err(StoreError::Failed(_))));
    assert!(matches!(
        store.apply_catalog_chunk(2, 1, 1, vec![], Vec::new(), vec![]),
        Err(StoreError::Failed(_))
    ));
    assert_eq!(store.cursors().expect("cursors").next_seq, after.next_seq);
    // Reads still work.
    assert_eq!(cof(&store).on_hand, 9);
    drop(store);

    // A restart reads the durable state again and writes resume.
    let store = open(dir.path(), "berlin");
    assert!(store.failure().is_none());
    // The till's retry: whether or not the unflushed sale survived, there is one sale.
    store.sell(&sale(1), Some("till-1")).expect("sells");
    assert_eq!(store.sales(10, None).expect("lists").len(), 1);
    let c = store.cursors().expect("cursors");
    assert_eq!(*store.durable_seq().borrow(), c.next_seq - 1);
}

#[test]
fn a_journal_failure_after_a_durable_commit_names_the_sale_and_still_wakes_the_sync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin");
    store.adjust(&receipt(10), None).expect("receipt");
    store.journal.fail_append.store(true, Ordering::SeqCst);
    let failed = store.sell(&sale(2), Some("till-7"));
    let (id, number) = match failed {
        Err(OpError::Storage(StoreError::Unjournaled {
            sale: Some((id, number)),
            ..
        })) => (id, number),
        other => panic!("expected Unjournaled with the sale, got {other:?}"),
    };
    assert_eq!(number, "BERLIN-000001");
    let c = store.cursors().expect("cursors");
    assert_eq!(*store.durable_seq().borrow(), c.next_seq - 1, "sync woken");
    assert!(store.failure().is_none(), "the database is fine");
    let found = store.find_sale(&number).expect("reads").expect("exists");
    assert_eq!(found.entry.sale.id, id);
    assert_eq!(cof(&store).on_hand, 8);
    // The till's retry with the same key finds the sale, not a second one.
    store.journal.fail_append.store(false, Ordering::SeqCst);
    let retry = store.sell(&sale(2), Some("till-7")).expect("replayed");
    assert!(retry.replayed);
    assert_eq!(retry.entry.sale.id, id);
    assert_eq!(store.journal_records(), 0);
    drop(store);
    // On the next open the journal is completed from the outbox.
    let store = open(dir.path(), "berlin");
    assert_eq!(store.journal_records(), 1);
}

// ---- H1: a rebuilt node (relayed on-hand entries, the whole rights state, counts) ------------

/// The hub's whole state for COF-1 as sent to `berlin-2`, the heir of the retired `berlin`:
/// berlin created 10, gave the hub 4 and sold 2; the hub consumed 1 for a click-and-collect
/// order that berlin has handed over (so berlin's on-hand entries are p 10, n 3); at
/// retirement the hub wrote off the 4 berlin still held. Value 10 − 3 − 4 = 3, all held by the
/// hub.
fn heir_state() -> Rights {
    let old = rid("berlin");
    let mut r = Rights::new();
    r.create(&old, 10);
    r.transfer(&old, &hub(), 4).expect("held");
    r.consume(&old, 2).expect("held");
    r.consume(&hub(), 1).expect("held");
    r.retire(&old);
    r
}

#[test]
fn relayed_on_hand_entries_merge_only_from_the_hub_and_only_for_this_location() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin-2");
    let relayed = |location: LocationId| Item::OnHandOf {
        replica: rid("berlin"),
        sku: sku("COF-1"),
        location,
        entry: Entry { p: 10, n: 3 },
    };
    // Not from the hub: ignored.
    store
        .apply_deltas(&rid("hamburg"), 1, 1, vec![relayed(loc())])
        .expect("applies");
    assert_eq!(cof(&store).on_hand, 0);
    // Another location: ignored.
    from_hub(&store, vec![relayed(LocationId("store-hamburg".into()))]);
    assert_eq!(cof(&store).on_hand, 0);
    assert!(store
        .db
        .get::<StoredOnHand>(
            T::Stock,
            &on_hand_key(&LocationId("store-hamburg".into()), &sku("COF-1"))
        )
        .expect("reads")
        .is_none());
    // The hub, for this location: merged as berlin's entries (idempotently).
    from_hub(&store, vec![relayed(loc())]);
    from_hub(&store, vec![relayed(loc()), relayed(loc())]);
    assert_eq!(cof(&store).on_hand, 7);
    // This node's own entries stay its own; it does not send berlin's.
    store.adjust(&receipt(2), None).expect("receipt");
    assert_eq!(cof(&store).on_hand, 9);
    let entry = store.cursors().expect("cursors").next_seq - 1;
    let out: OutboxEntry = store
        .db
        .get(T::Outbox, &outbox_key(entry))
        .expect("reads")
        .expect("entry");
    assert!(out
        .items
        .iter()
        .all(|i| !matches!(i, Item::OnHandOf { .. })));
    assert!(out
        .items
        .iter()
        .any(|i| matches!(i, Item::OnHand { entry, .. } if *entry == Entry { p: 2, n: 0 })));
}

#[test]
fn the_whole_rights_state_from_the_hub_is_merged_and_never_lowers_this_nodes_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin-2");
    store.adjust(&receipt(2), None).expect("receipt");
    let mut sent = heir_state();
    // The hub's view of this node's row is behind (it has not merged the receipt yet).
    sent.create(&rid("berlin-2"), 1);
    from_hub(
        &store,
        vec![Item::Rights {
            key: key("COF-1"),
            state: sent.clone(),
        }],
    );
    let stored: StoredRights = store
        .db
        .get(T::Stock, &rights_key(&key("COF-1")))
        .expect("reads")
        .expect("stored");
    let mut expected = sent;
    let mut mine = Rights::new();
    mine.create(&rid("berlin-2"), 2);
    expected.merge(&mine);
    assert_eq!(
        stored.state, expected,
        "every row kept, the own row at its max"
    );
    assert_eq!(stored.state.w.get(&rid("berlin")), Some(&4));
    let line = cof(&store);
    assert_eq!((line.value, line.hub_rights, line.node_rights), (5, 3, 2));
}

#[test]
fn a_count_moves_rights_against_the_value_and_on_hand_against_on_hand() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin-2");
    // The heir's view: berlin's on-hand entries (7 on the shelf) and the whole rights state
    // (value 3, held by the hub).
    from_hub(
        &store,
        vec![
            Item::OnHandOf {
                replica: rid("berlin"),
                sku: sku("COF-1"),
                location: loc(),
                entry: Entry { p: 10, n: 3 },
            },
            Item::Rights {
                key: key("COF-1"),
                state: heir_state(),
            },
        ],
    );
    let line = cof(&store);
    assert_eq!((line.on_hand, line.value, line.node_rights), (7, 3, 0));

    // The shelf holds 7: on hand is right, but only 3 units carry a right: create 4.
    let r = store.adjust(&count(7), None).expect("count");
    assert_eq!(
        (
            r.record.delta,
            r.record.rights_created,
            r.record.rights_consumed
        ),
        (0, 4, 0)
    );
    let line = cof(&store);
    assert_eq!(
        (line.on_hand, line.value, line.node_rights, line.hub_rights),
        (7, 7, 4, 3)
    );
    // Selling all 7 is not possible from here: the hub holds 3 of them.
    assert!(matches!(
        store.sell(&sale(5), None),
        Err(OpError::InsufficientRights(_))
    ));

    // The shelf holds 2: on hand −5; value 7 → 2 consumes 5, the node holds 4: a deficit of 1.
    let r = store.adjust(&count(2), None).expect("count");
    assert_eq!(
        (
            r.record.delta,
            r.record.rights_created,
            r.record.rights_consumed
        ),
        (-5, 0, 4)
    );
    assert_eq!(r.record.deficit.as_ref().map(|d| d.units), Some(1));
    let line = cof(&store);
    assert_eq!((line.on_hand, line.node_rights), (2, 0));
    // The deficit is journaled for the hub to settle from its rights.
    assert_eq!(store.journal_records(), 1);
}

#[test]
fn a_count_after_a_replay_realigns_on_hand_and_rights() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin-2");
    store.adjust(&receipt(2), None).expect("receipt");
    // A replayed sale of 5 took on hand to −3 and the 2 rights (3 units as a deficit).
    let mut over = sale(5);
    over.override_reason = Some("replayed".into());
    store.sell(&over, None).expect("sold");
    let line = cof(&store);
    assert_eq!((line.on_hand, line.value), (-3, 0));
    // The shelf holds 4: on hand +7, rights +4 (not +7).
    let r = store.adjust(&count(4), None).expect("count");
    assert_eq!((r.record.delta, r.record.rights_created), (7, 4));
    let line = cof(&store);
    assert_eq!((line.on_hand, line.value, line.node_rights), (4, 4, 4));
    // A count that changes nothing makes no outbox entry for states.
    let before = store.cursors().expect("cursors").next_seq;
    let r = store.adjust(&count(4), None).expect("count");
    assert_eq!((r.record.delta, r.record.rights_created), (0, 0));
    assert_eq!(store.cursors().expect("cursors").next_seq, before);
}

// ---- M1: a forwarded count with `as_seen` is a difference ------------------------------------

#[test]
fn a_late_forwarded_count_applies_its_difference_to_what_the_node_has_now() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin");
    store.adjust(&receipt(10), None).expect("receipt");
    // The hub saw 10 and forwarded an ERP count of 8; meanwhile the node sold 3.
    store.sell(&sale(3), None).expect("sold");
    from_hub(&store, vec![hub_count(8, Some(10))]);
    let line = cof(&store);
    assert_eq!((line.on_hand, line.value, line.node_rights), (5, 5, 5));
    let r = last_adjustment(&store);
    assert_eq!(
        (r.kind, r.delta, r.rights_consumed),
        (AdjustmentKind::HubCount, -2, 2)
    );
    // A count up as a difference: +4 where the hub saw 5.
    from_hub(&store, vec![hub_count(9, Some(5))]);
    assert_eq!((cof(&store).on_hand, cof(&store).value), (9, 9));
    // Never below 0.
    from_hub(&store, vec![hub_count(0, Some(20))]);
    assert_eq!((cof(&store).on_hand, cof(&store).value), (0, 0));
    // Without `as_seen` the count is absolute.
    from_hub(&store, vec![hub_count(6, None)]);
    assert_eq!((cof(&store).on_hand, cof(&store).value), (6, 6));
    // The same command twice is applied once.
    let once = hub_count(7, Some(6));
    from_hub(&store, vec![once.clone()]);
    from_hub(&store, vec![once]);
    assert_eq!(cof(&store).on_hand, 7);
    // Another location's count is ignored.
    from_hub(
        &store,
        vec![Item::Command(Command {
            id: Ulid::new(),
            kind: CommandKind::Count {
                sku: sku("COF-1"),
                location: LocationId("store-hamburg".into()),
                on_hand: 100,
                as_seen: Some(1),
            },
            at: stamp(),
        })],
    );
    assert_eq!(cof(&store).on_hand, 7);
}

// ---- M3: the catalog follows the hub, down as well -------------------------------------------

#[test]
fn the_catalog_switches_to_any_other_complete_version_also_a_lower_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin");
    let v5 = store
        .apply_catalog_chunk(
            5,
            1,
            1,
            vec![category()],
            Vec::new(),
            vec![product("COF-1", 600)],
        )
        .expect("applies");
    assert_eq!(v5, Some(5));
    // The hub was restored from a backup: version 3, in two parts.
    assert_eq!(
        store
            .apply_catalog_chunk(
                3,
                1,
                2,
                vec![category()],
                Vec::new(),
                vec![product("COF-1", 450)]
            )
            .expect("applies"),
        None
    );
    assert_eq!(store.catalog().version(), 5, "not before the last part");
    assert_eq!(
        store
            .apply_catalog_chunk(3, 2, 2, vec![], Vec::new(), vec![product("TEA-1", 250)])
            .expect("applies"),
        Some(3)
    );
    let catalog = store.catalog();
    assert_eq!(catalog.version(), 3);
    assert_eq!(
        catalog
            .snapshot
            .product_by_sku(&sku("COF-1"))
            .map(|p| p.variants[0].price.minor),
        Some(450)
    );
    assert!(catalog.snapshot.product_by_sku(&sku("TEA-1")).is_some());
    // The version in use again: nothing to do.
    assert_eq!(
        store
            .apply_catalog_chunk(3, 1, 1, vec![], Vec::new(), vec![])
            .expect("applies"),
        None
    );
    drop(catalog);
    drop(store);
    assert_eq!(open(dir.path(), "berlin").catalog().version(), 3);
}

// ---- M6: the journal keeps acknowledgements across a crash -----------------------------------

#[test]
fn a_crash_between_the_journal_compaction_and_the_outbox_prune_replays_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sold: Vec<Ulid> = {
        let store = open(dir.path(), "berlin");
        store.adjust(&receipt(10), None).expect("receipt"); // seq 1
        let a = store.sell(&sale(1), None).expect("sold"); // seq 2
        let b = store.sell(&sale(1), None).expect("sold"); // seq 3
        assert_eq!(store.journal_records(), 2);
        // The hub acknowledged 3; the node dies after the journal learned of it and before
        // the database pruned the outbox.
        assert!(store
            .journal
            .compact(3, &rid("berlin"), &loc())
            .expect("compacts"));
        vec![a.entry.sale.id, b.entry.sale.id]
    };
    let path = dir.path().join(crate::journal::JOURNAL_FILE);
    let scan = crate::journal::read_journal(&path).expect("reads");
    assert_eq!(
        scan.records.first().and_then(|r| r.acked_upto),
        Some(3),
        "a rewritten journal starts with its acknowledgement"
    );
    {
        let store = open(dir.path(), "berlin");
        assert_eq!(store.cursors().expect("cursors").acked, 0, "not pruned");
        assert_eq!(
            store.journal_records(),
            0,
            "the reopened node does not put acknowledged sales back into the journal"
        );
        // The hub's Welcome acknowledges them again: the prune completes, flushed.
        assert_eq!(store.ack(3).expect("acks"), 3);
    }
    // A rebuilt node replaying this journal records nothing the hub already has.
    let records = crate::journal::read_journal(&path).expect("reads").records;
    let new_dir = tempfile::tempdir().expect("temp dir");
    let heir = open(new_dir.path(), "berlin-2");
    let report = heir.replay(records).expect("replays");
    assert_eq!(report.replayed, 0);
    for id in sold {
        assert!(heir.sale(id).expect("reads").is_none());
    }
}

#[test]
fn a_journal_record_put_back_below_the_marker_is_not_replayed() {
    // Even a record that came back after the marker (e.g. completed from an outbox whose prune
    // was lost) is skipped by a replay: the marker at the head covers it.
    let dir = tempfile::tempdir().expect("temp dir");
    let (acked_sale, open_sale) = {
        let store = open(dir.path(), "berlin");
        store.adjust(&receipt(10), None).expect("receipt"); // seq 1
        let a = store.sell(&sale(1), None).expect("sold"); // seq 2
        assert_eq!(store.ack(2).expect("acks"), 2);
        let b = store.sell(&sale(1), None).expect("sold"); // seq 3
        let path = dir.path().join(crate::journal::JOURNAL_FILE);
        let mut records = crate::journal::read_journal(&path).expect("reads").records;
        assert_eq!(records[0].acked_upto, Some(2));
        // Put the acknowledged sale's record back at the end, as a lost prune would.
        records.push(JournalRecord {
            seq: 2,
            replica: rid("berlin"),
            location: loc(),
            sale: Some(a.entry.sale.clone()),
            deficits: vec![],
            returned: None,
            acked_upto: None,
        });
        store.journal.append(&records[2..]).expect("appends");
        (a.entry.sale.id, b.entry.sale.id)
    };
    let path = dir.path().join(crate::journal::JOURNAL_FILE);
    let records = crate::journal::read_journal(&path).expect("reads").records;
    let new_dir = tempfile::tempdir().expect("temp dir");
    let heir = open(new_dir.path(), "berlin-2");
    heir.adjust(&receipt(5), None).expect("receipt");
    let report = heir.replay(records).expect("replays");
    assert_eq!((report.replayed, report.already_synced), (1, 1));
    assert!(heir.sale(acked_sale).expect("reads").is_none());
    assert!(heir.sale(open_sale).expect("reads").is_some());
}

#[test]
fn a_flush_failure_on_an_ack_fails_the_store_but_the_journal_knows_the_ack() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), "berlin");
    store.adjust(&receipt(10), None).expect("receipt");
    store.sell(&sale(1), None).expect("sold");
    store.db.fail_flush.store(true, Ordering::SeqCst);
    assert!(matches!(store.ack(2), Err(StoreError::Failed(_))));
    assert_eq!(store.cursors().expect("cursors").acked, 2, "committed");
    assert_eq!(store.journal.marked(), 2);
    assert_eq!(store.journal_records(), 0);
    assert!(store.failure().is_some());
}

// ---- coupons at the till -------------------------------------------------------------------

fn coupon_promotion(id: &str) -> Promotion {
    Promotion {
        id: PromotionId::parse(id).expect("valid id"),
        name: format!("Promotion {id}"),
        spec: protocol::promotion::PromotionSpec::from_json(
            r#"{"conditions": [{"type": "coupon"}], "benefit": {"type": "percent_off_basket", "percent_bp": 1000}}"#,
        )
        .expect("valid spec"),
        created_seq: 1,
    }
}

fn terms(code: &str, limited: bool, per_customer: Option<u64>) -> Item {
    Item::Coupon(CouponTerms {
        code: code.into(),
        promotion: PromotionId::parse("SPRING").expect("id"),
        expires_at_ms: None,
        per_customer,
        limited,
        at: stamp(),
    })
}

/// A store with 20 COF-1 and the SPRING promotion (10 % off with a coupon) in its catalog.
fn coupon_store(dir: &Path) -> Store {
    let store = open(dir, "berlin");
    store
        .apply_catalog_chunk(
            2,
            0,
            1,
            vec![category()],
            vec![coupon_promotion("SPRING")],
            vec![product("COF-1", 500)],
        )
        .expect("catalog");
    store.adjust(&receipt(20), None).expect("receipt");
    store
}

fn with_coupons(codes: &[&str], customer: Option<protocol::CustomerId>) -> SaleRequest {
    SaleRequest {
        coupons: codes.iter().map(|c| c.to_string()).collect(),
        customer,
        ..sale(1)
    }
}

fn refusal(result: Result<SaleReceipt, OpError>) -> (String, String) {
    match result {
        Err(OpError::Invalid { code, message, .. }) => (code.to_string(), message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_offline_node_redeems_exactly_the_rights_it_was_granted_then_refuses() {
    let dir = tempfile::tempdir().expect("dir");
    let store = coupon_store(dir.path());
    let me = rid("berlin");
    let coupon = Scarce::Coupon {
        code: "SPRING10".into(),
    };
    // The hub created 10 redemptions and granted this node 3; the link then goes down (the
    // store was never connected in this test: everything below happens offline).
    let mut at_hub = Rights::new();
    at_hub.create(&hub(), 10);
    at_hub.transfer(&hub(), &me, 3).expect("held");
    from_hub(
        &store,
        vec![
            terms("SPRING10", true, None),
            Item::Rights {
                key: coupon.clone(),
                state: at_hub.row(&hub()),
            },
        ],
    );
    assert!(!store.is_connected());
    for _ in 0..3 {
        // Typed in lower case with spaces: normalised like the hub's basket coupons.
        let sold = store
            .sell(&with_coupons(&[" spring10 "], None), None)
            .expect("redeemed from a granted right");
        assert_eq!(sold.entry.sale.coupons, vec!["SPRING10".to_string()]);
        assert_eq!(sold.entry.sale.total.minor, 450, "10 % off EUR 5.00");
        assert_eq!(sold.entry.sale.promotions.applied[0].id.as_str(), "SPRING");
    }
    let receipts = store.cursors().expect("cursors").next_receipt;
    let (code, message) = refusal(store.sell(&with_coupons(&["SPRING10"], None), None));
    assert_eq!(code, "invalid_coupon");
    assert!(
        message.contains("holds no more redemptions") && message.contains("3 used here"),
        "{message}"
    );
    assert_eq!(
        store.cursors().expect("cursors").next_receipt,
        receipts,
        "nothing recorded"
    );
    // The node's row tells the hub it used 3 and created none.
    let (_, last) = store
        .db
        .tree(T::Outbox)
        .iter()
        .last()
        .expect("an entry")
        .expect("reads");
    let entry: OutboxEntry = protocol::decode(&last).expect("decodes");
    let row = entry
        .items
        .iter()
        .find_map(|i| match i {
            Item::Rights { key, state } if *key == coupon => Some(state.clone()),
            _ => None,
        })
        .expect("the coupon's row");
    assert_eq!(row.u.get(&me), Some(&3));
    assert_eq!(row.created(), 0);
    // A code the hub never sent (a private single-use one, or a typo) is refused with why.
    let (code, message) = refusal(store.sell(&with_coupons(&["VIP-7K2M9Q4X8Z3A"], None), None));
    assert_eq!(code, "invalid_coupon");
    assert!(message.contains("can only be used online"), "{message}");
}

#[test]
fn an_ended_coupon_is_refused_and_its_rights_go_back_to_the_hub() {
    let dir = tempfile::tempdir().expect("dir");
    let store = coupon_store(dir.path());
    let me = rid("berlin");
    let coupon = Scarce::Coupon {
        code: "SPRING10".into(),
    };
    let mut at_hub = Rights::new();
    at_hub.create(&hub(), 10);
    at_hub.transfer(&hub(), &me, 4).expect("held");
    from_hub(
        &store,
        vec![
            terms("SPRING10", true, None),
            Item::Rights {
                key: coupon.clone(),
                state: at_hub.row(&hub()),
            },
        ],
    );
    store
        .sell(&with_coupons(&["SPRING10"], None), None)
        .expect("redeemed");
    from_hub(
        &store,
        vec![Item::Command(Command {
            id: Ulid::new(),
            kind: CommandKind::EndCoupon {
                code: "SPRING10".into(),
            },
            at: stamp(),
        })],
    );
    let (code, message) = refusal(store.sell(&with_coupons(&["SPRING10"], None), None));
    assert_eq!(code, "invalid_coupon");
    assert!(message.contains("has ended"), "{message}");
    let held: StoredRights = store
        .db
        .get(T::Stock, &rights_key(&coupon))
        .expect("reads")
        .expect("row");
    assert_eq!(held.state.held(&me), 0);
    assert_eq!(held.state.r[&me][&hub()], 3, "the 3 unused handed back");
    let mut merged = at_hub;
    merged.merge(&held.state.row(&me));
    assert_eq!(merged.held(&hub()), 9);
}

#[test]
fn a_per_customer_coupon_needs_the_customer_and_counts_their_uses_here() {
    let dir = tempfile::tempdir().expect("dir");
    let store = coupon_store(dir.path());
    from_hub(&store, vec![terms("ONCE", false, Some(1))]);
    let (_, message) = refusal(store.sell(&with_coupons(&["ONCE"], None), None));
    assert!(message.contains("identify the customer"), "{message}");
    let ada = protocol::CustomerId::new();
    let sold = store
        .sell(&with_coupons(&["once"], Some(ada)), None)
        .expect("first use");
    assert_eq!(sold.entry.sale.coupons, vec!["ONCE".to_string()]);
    let (_, message) = refusal(store.sell(&with_coupons(&["ONCE"], Some(ada)), None));
    assert!(message.contains("as often as it allows"), "{message}");
    store
        .sell(
            &with_coupons(&["ONCE"], Some(protocol::CustomerId::new())),
            None,
        )
        .expect("another customer");
}

#[test]
fn a_retried_sale_gets_its_receipt_even_after_its_coupon_ended() {
    let dir = tempfile::tempdir().expect("dir");
    let store = coupon_store(dir.path());
    let me = rid("berlin");
    let mut at_hub = Rights::new();
    at_hub.create(&hub(), 10);
    at_hub.transfer(&hub(), &me, 2).expect("held");
    from_hub(
        &store,
        vec![
            terms("SPRING10", true, None),
            Item::Rights {
                key: Scarce::Coupon {
                    code: "SPRING10".into(),
                },
                state: at_hub.row(&hub()),
            },
        ],
    );
    let sale = with_coupons(&["SPRING10"], None);
    let first = store.sell(&sale, Some("till-1-0042")).expect("sold");
    assert!(!first.replayed);
    // The hub ends the code before the till's retry (its answer was lost) comes in.
    from_hub(
        &store,
        vec![Item::Command(Command {
            id: Ulid::new(),
            kind: CommandKind::EndCoupon {
                code: "SPRING10".into(),
            },
            at: stamp(),
        })],
    );
    let again = store
        .sell(&sale, Some("till-1-0042"))
        .expect("the retry gets the stored receipt, not a refusal");
    assert!(again.replayed);
    assert_eq!(again.entry.sale.id, first.entry.sale.id);
    assert_eq!(again.entry.sale.total, first.entry.sale.total);
    // A new sale with the code is refused: it has ended.
    let (code, _) = refusal(store.sell(&sale, Some("till-1-0043")));
    assert_eq!(code, "invalid_coupon");
}
