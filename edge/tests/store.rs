//! The node's domain operations in-process (no HTTP, no hub): sales against rights, refusals
//! that change nothing, overrides, idempotency, adjustments, durability across reopening, the
//! journal and its replay on a rebuilt node.

mod common;

use common::*;
use edge_node::{
    read_journal, AdjustmentRequest, OpError, PaymentMethod, PaymentRequest, SaleRequest,
    JOURNAL_FILE,
};

fn stock(store: &edge_node::Store, s: &str) -> edge_node::StockLine {
    store.stock_of(&sku(s)).expect("reads").expect("known sku")
}

#[test]
fn a_sale_consumes_rights_and_on_hand_and_is_priced_from_the_catalog() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    store.adjust(&receipt("COF-1", 10), None).expect("receipt");
    store.adjust(&receipt("TEA-1", 3), None).expect("receipt");
    let before = store.cursors().expect("cursors");

    let mut req = sale(vec![line("COF-1", 2), line("TEA-1", 1)], "20.00");
    req.lines[1] = edge_node::SaleLineRequest {
        sku: None,
        barcode: Some("4000000000028".into()),
        quantity: 1,
    };
    let r = store.sell(&req, None).expect("sold");
    let s = &r.entry.sale;
    assert_eq!(s.total.minor, 2 * 499 + 250);
    assert_eq!(r.change_due.minor, 2000 - 1248);
    assert_eq!(s.number, "BERLIN-000001");
    assert!(r.deficits.is_empty());
    // Tax per rate on the summed lines: 19 % of 9.98 and 7 % of 2.50.
    let taxes: Vec<(u32, i64)> = s.taxes.iter().map(|t| (t.rate_bp, t.tax.minor)).collect();
    assert_eq!(taxes, vec![(700, 16), (1900, 159)]);

    let cof = stock(&store, "COF-1");
    assert_eq!((cof.on_hand, cof.node_rights, cof.value), (8, 8, 8));
    assert_eq!(stock(&store, "TEA-1").node_rights, 2);

    // One outbox entry for the sale, journaled.
    let after = store.cursors().expect("cursors");
    assert_eq!(after.next_seq, before.next_seq + 1);
    assert_eq!(store.journal_records(), 1);
    let journal = read_journal(&dir.path().join(JOURNAL_FILE)).expect("reads");
    assert_eq!(journal.records[0].sale.as_ref().map(|s| s.id), Some(s.id));
    assert_eq!(journal.records[0].seq, after.next_seq - 1);

    let second = store
        .sell(&sale(vec![line("COF-1", 1)], "4.99"), None)
        .expect("sold");
    assert_eq!(second.entry.sale.number, "BERLIN-000002");
    assert_eq!(second.change_due.minor, 0);
    let found = store
        .find_sale("BERLIN-000001")
        .expect("reads")
        .expect("found");
    assert_eq!(found.entry.sale.id, s.id);
    let listed = store.sales(10, None).expect("lists");
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0].entry.sale.id, second.entry.sale.id,
        "newest first"
    );
    let older = store.sales(10, Some(second.entry.sale.id)).expect("lists");
    assert_eq!(older.len(), 1);
}

#[test]
fn a_sale_beyond_the_rights_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    store.adjust(&receipt("COF-1", 1), None).expect("receipt");
    let before = store.cursors().expect("cursors");
    let err = store
        .sell(
            &sale(vec![line("COF-1", 3), line("TEA-1", 1)], "50.00"),
            None,
        )
        .expect_err("refused");
    match &err {
        OpError::InsufficientRights(short) => {
            let got: Vec<(String, u64, u64)> = short
                .iter()
                .map(|s| (s.sku.to_string(), s.requested, s.held))
                .collect();
            assert_eq!(got, vec![("COF-1".into(), 3, 1), ("TEA-1".into(), 1, 0)]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("override_reason"));
    assert_eq!(store.cursors().expect("cursors"), before);
    assert_eq!(stock(&store, "COF-1").on_hand, 1);
    assert!(store.sales(10, None).expect("lists").is_empty());
    assert_eq!(store.journal_records(), 0);
}

#[test]
fn an_override_sells_anyway_and_writes_a_linked_deficit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    store.adjust(&receipt("COF-1", 1), None).expect("receipt");
    let mut req = sale(vec![line("COF-1", 3)], "14.97");
    req.override_reason = Some("customer holds the units, shelf count is off".into());
    let r = store.sell(&req, None).expect("sold by override");
    assert_eq!(r.deficits.len(), 1);
    let d = &r.deficits[0];
    assert_eq!((d.sku.as_str(), d.units), ("COF-1", 2));
    assert_eq!(d.sale, Some(r.entry.sale.id));
    assert_eq!(d.clerk.as_deref(), Some("anna"));
    assert_eq!(d.reason, "customer holds the units, shelf count is off");
    let cof = stock(&store, "COF-1");
    assert_eq!((cof.on_hand, cof.node_rights), (-2, 0));
    let listed = store.deficits(10, None).expect("lists");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].settlement.is_none());
    let journal = read_journal(&dir.path().join(JOURNAL_FILE)).expect("reads");
    assert_eq!(journal.records.last().map(|r| r.deficits.len()), Some(1));

    req.override_reason = Some("  ".into());
    assert!(matches!(
        store.sell(&req, None),
        Err(OpError::Invalid {
            code: "invalid_sale",
            ..
        })
    ));
}

#[test]
fn a_retry_with_the_same_idempotency_key_returns_the_first_sale() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    store.adjust(&receipt("COF-1", 5), None).expect("receipt");
    let req = sale(vec![line("COF-1", 1)], "5.00");
    let first = store.sell(&req, Some("till-1-0001")).expect("sold");
    let again = store.sell(&req, Some("till-1-0001")).expect("replayed");
    assert!(again.replayed && !first.replayed);
    assert_eq!(again.entry, first.entry);
    assert_eq!(stock(&store, "COF-1").on_hand, 4, "sold once");
    let other = store.sell(&req, Some("till-1-0002")).expect("sold");
    assert_ne!(other.entry.sale.id, first.entry.sale.id);
    assert!(matches!(
        store.sell(&req, Some("has space")),
        Err(OpError::Invalid {
            code: "bad_idempotency_key",
            ..
        })
    ));
}

#[test]
fn bad_requests_are_refused_with_the_field_to_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    store.adjust(&receipt("COF-1", 5), None).expect("receipt");
    let field = |r: Result<edge_node::SaleReceipt, OpError>| match r {
        Err(OpError::Invalid { code, problems, .. }) => (
            code,
            problems
                .first()
                .map(|p| p.field.clone())
                .unwrap_or_default(),
        ),
        other => panic!("{other:?}"),
    };
    let cases: Vec<(SaleRequest, &str, &str)> = vec![
        (sale(vec![], "1.00"), "no_lines", ""),
        (
            sale(vec![line("COF-1", 0)], "1.00"),
            "invalid_sale",
            "lines[0].quantity",
        ),
        (
            sale(vec![line("COF-1", 1000)], "1.00"),
            "invalid_sale",
            "lines[0].quantity",
        ),
        (
            sale(vec![line("NOPE-9", 1)], "1.00"),
            "unknown_item",
            "lines[0].sku",
        ),
        (
            sale(vec![line("bad sku", 1)], "1.00"),
            "invalid_sale",
            "lines[0].sku",
        ),
        (
            sale(vec![line("COF-1", 600), line("COF-1", 600)], "1.00"),
            "invalid_sale",
            "lines (COF-1)",
        ),
        (sale(vec![line("COF-1", 1)], "4.98"), "payment_short", ""),
        (
            sale(vec![line("COF-1", 1)], "4.999"),
            "invalid_payment",
            "payments[0].amount",
        ),
        (
            sale(vec![line("COF-1", 1)], "-5"),
            "invalid_payment",
            "payments[0].amount",
        ),
    ];
    for (req, code, path) in cases {
        assert_eq!(
            field(store.sell(&req, None)),
            (code, path.to_string()),
            "{req:?}"
        );
    }
    let mut card = sale(vec![line("COF-1", 1)], "5.00");
    card.payments[0] = PaymentRequest {
        method: PaymentMethod::Card,
        amount: "5.00".into(),
        reference: Some("T-1".into()),
        card: None,
    };
    assert_eq!(field(store.sell(&card, None)).0, "overpaid");
    let mut both = sale(vec![line("COF-1", 1)], "1.00");
    both.lines[0].barcode = Some("4000000000011".into());
    assert_eq!(field(store.sell(&both, None)).1, "lines[0]");
    assert_eq!(
        stock(&store, "COF-1").on_hand,
        5,
        "nothing was half-written"
    );
    assert!(store.sales(10, None).expect("lists").is_empty());
}

#[test]
fn adjustments_move_stock_and_rights_and_record_deficits_beyond_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), "berlin");
    let r = store.adjust(&receipt("MUG-1", 4), None).expect("receipt");
    assert_eq!((r.record.delta, r.record.rights_created), (4, 4));

    let count_up = AdjustmentRequest::Count {
        sku: "MUG-1".into(),
        on_hand: 6,
        reason: Some("weekly count".into()),
        clerk: Some("ben".into()),
    };
    let r = store.adjust(&count_up, None).expect("count");
    assert_eq!(
        (
            r.record.delta,
            r.record.on_hand_after,
            r.record.rights_created
        ),
        (2, 6, 2)
    );

    let damage = AdjustmentRequest::Damage {
        sku: "MUG-1".into(),
        units: 2,
        reason: "dropped".into(),
        clerk: None,
    };
    let r = store.adjust(&damage, Some("dmg-1")).expect("damage");
    assert_eq!((r.record.delta, r.record.rights_consumed), (-2, 2));
    assert!(r.record.deficit.is_none());
    let again = store.adjust(&damage, Some("dmg-1")).expect("replayed");
    assert!(again.replayed);
    assert_eq!(again.record, r.record);
    let m = stock(&store, "MUG-1");
    assert_eq!((m.on_hand, m.node_rights, m.value), (4, 4, 4));

    // Sell 3 of the 4 by override-free sale, then count the shelf at 0: one unit is gone, and
    // a count down beyond the rights would be a deficit — here the node still holds 1.
    store
        .sell(&sale(vec![line("MUG-1", 3)], "36.00"), None)
        .expect("sold");
    let count_down = AdjustmentRequest::Count {
        sku: "MUG-1".into(),
        on_hand: 0,
        reason: None,
        clerk: None,
    };
    let r = store.adjust(&count_down, None).expect("count");
    assert_eq!((r.record.delta, r.record.rights_consumed), (-1, 1));
    assert!(r.record.deficit.is_none());
    // Damage with no rights left: a deficit record, journaled.
    let r = store.adjust(&damage, None).expect("damage");
    let d = r.record.deficit.expect("a deficit");
    assert_eq!(d.units, 2);
    assert!(d.reason.contains("dropped"));
    assert_eq!(stock(&store, "MUG-1").on_hand, -2);
    let journal = read_journal(&dir.path().join(JOURNAL_FILE)).expect("reads");
    assert!(journal
        .records
        .iter()
        .any(|j| j.deficits.iter().any(|x| x.id == d.id)));

    for bad in [
        receipt("MUG-1", 0),
        receipt("NOPE-1", 1),
        AdjustmentRequest::Damage {
            sku: "MUG-1".into(),
            units: 1,
            reason: " ".into(),
            clerk: None,
        },
        AdjustmentRequest::Count {
            sku: "MUG-1".into(),
            on_hand: -1,
            reason: None,
            clerk: None,
        },
    ] {
        assert!(
            matches!(store.adjust(&bad, None), Err(OpError::Invalid { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn everything_survives_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sold = {
        let store = open_store(dir.path(), "berlin");
        store.adjust(&receipt("COF-1", 3), None).expect("receipt");
        store
            .sell(&sale(vec![line("COF-1", 1)], "5.00"), Some("k1"))
            .expect("sold")
    };
    let store = open_store(dir.path(), "berlin");
    assert_eq!(store.catalog().version(), 1);
    assert_eq!(stock(&store, "COF-1").on_hand, 2);
    let again = store
        .sell(&sale(vec![line("COF-1", 1)], "5.00"), Some("k1"))
        .expect("replayed");
    assert_eq!(again.entry, sold.entry);
    let next = store
        .sell(&sale(vec![line("COF-1", 1)], "5.00"), None)
        .expect("sold");
    assert_eq!(next.entry.sale.number, "BERLIN-000002");
    assert!(
        next.entry.sale.at > sold.entry.sale.at,
        "stamps keep growing"
    );
    let c = store.cursors().expect("cursors");
    assert_eq!((c.next_seq, c.pending_entries()), (4, 3));
}

#[test]
fn a_rebuilt_node_replays_the_old_journal_keeping_ids_and_numbers() {
    let old_dir = tempfile::tempdir().expect("temp dir");
    let (sold, overridden) = {
        let old = open_store(old_dir.path(), "berlin");
        old.adjust(&receipt("COF-1", 5), None).expect("receipt");
        let sold = old
            .sell(&sale(vec![line("COF-1", 2)], "10.00"), None)
            .expect("sold");
        let mut req = sale(vec![line("COF-1", 4)], "20.00");
        req.override_reason = Some("last units on the shelf".into());
        let overridden = old.sell(&req, None).expect("sold");
        (sold, overridden)
    };
    let old_journal = old_dir.path().join(JOURNAL_FILE);
    assert_eq!(read_journal(&old_journal).expect("reads").records.len(), 2);

    // The rebuilt node: a new replica id; a count recreated 3 units of rights.
    let new_dir = tempfile::tempdir().expect("temp dir");
    let new = open_store(new_dir.path(), "berlin-2");
    new.adjust(&receipt("COF-1", 3), None).expect("receipt");
    let records = read_journal(&old_journal).expect("reads").records;
    let report = new.replay(records.clone()).expect("replays");
    assert_eq!((report.replayed, report.already_present), (2, 0));
    // 2 + 4 sold against 3 rights: 3 units beyond them.
    assert_eq!(report.deficit_units, 3);

    let got = new
        .find_sale("BERLIN-000001")
        .expect("reads")
        .expect("kept its number");
    assert_eq!(got.entry.sale.id, sold.entry.sale.id);
    assert_eq!(got.entry.sale, sold.entry.sale, "the record is unchanged");
    assert_eq!(
        got.entry.replayed_from.as_ref().map(|r| r.as_str()),
        Some("berlin")
    );
    let got = new
        .find_sale(&overridden.entry.sale.id.to_string())
        .expect("reads")
        .expect("found by id");
    assert_eq!(got.deficits.iter().map(|d| d.units).sum::<u64>(), 3);
    assert!(got
        .deficits
        .iter()
        .all(|d| d.replica.as_str() == "berlin-2"));
    let cof = stock(&new, "COF-1");
    assert_eq!((cof.on_hand, cof.node_rights), (3 - 6, 0));
    // The replayed sales are queued to the hub and journaled on the new node.
    assert_eq!(new.journal_records(), 2);

    let again = new.replay(records).expect("replays");
    assert_eq!(
        (again.replayed, again.already_present),
        (0, 2),
        "a replay is idempotent"
    );
    let next = new.sell(&sale(vec![line("TEA-1", 1)], "2.50"), None);
    assert!(matches!(next, Err(OpError::InsufficientRights(_))));
    // The rebuilt node's own numbers carry its replica: never one of the old node's.
    new.adjust(&receipt("COF-1", 1), None).expect("receipt");
    let own = new
        .sell(&sale(vec![line("COF-1", 1)], "5.00"), None)
        .expect("sold");
    assert_eq!(own.entry.sale.number, "BERLIN-2-000001");
}

#[test]
fn a_journal_missing_a_committed_sale_gets_it_back_on_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sold = {
        let store = open_store(dir.path(), "berlin");
        store.adjust(&receipt("COF-1", 3), None).expect("receipt");
        store
            .sell(&sale(vec![line("COF-1", 1)], "5.00"), None)
            .expect("sold")
    };
    // As if the process died after the sled commit but before the journal write.
    std::fs::write(dir.path().join(JOURNAL_FILE), b"").expect("truncates");
    let store = open_store(dir.path(), "berlin");
    assert_eq!(store.journal_records(), 1);
    let journal = read_journal(&dir.path().join(JOURNAL_FILE)).expect("reads");
    assert_eq!(
        journal.records[0].sale.as_ref().map(|s| s.id),
        Some(sold.entry.sale.id)
    );
}
