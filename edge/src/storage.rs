//! The node's sled database: one `Db` with a few trees, keys with prefixes, every value encoded
//! by `protocol::codec` (MessagePack with field names in a versioned envelope).
//!
//! | tree      | key                                   | value                        |
//! |-----------|---------------------------------------|------------------------------|
//! | `meta`    | `cursors`                             | [`Cursors`]                  |
//! | `catalog` | `v`                                   | [`CatalogMeta`]              |
//! |           | `p` + product id (16 bytes)           | `protocol::Product`          |
//! |           | `c` + category id                     | `protocol::Category`         |
//! |           | `m` + promotion id                    | [`StoredPromotion`]          |
//! |           | `s` + version (be u64) + part (be u32)| [`StagedChunk`]              |
//! |           | `d` + from + to (be u64) + part (be u32) | `store::catalog::StagedDelta` |
//! |           | `h` + version (be u64)                | `store::catalog::CatalogStep` |
//! | `stock`   | `o` + location + `0x00` + SKU         | [`StoredOnHand`]             |
//! |           | `r` + scarce key                      | [`StoredRights`]             |
//! | `sales`   | `i` + sale id (16 bytes)              | [`SaleEntry`]                |
//! |           | `n` + receipt number                  | [`IdRef`]                    |
//! |           | `k` + idempotency key                 | [`IdRef`]                    |
//! | `records` | `d` + deficit id                      | [`StoredDeficit`]            |
//! |           | `s` + deficit id                      | [`StoredSettlement`]         |
//! |           | `x` + conflict id                     | [`StoredConflict`]           |
//! |           | `c` + command id                      | [`AppliedCommand`]           |
//! |           | `a` + adjustment id                   | [`AdjustmentRecord`]         |
//! |           | `u` + coupon code                     | [`StoredCoupon`]             |
//! |           | `w` + code + `0x00` + customer id     | [`CustomerCouponUses`]       |
//! | `outbox`  | own seq (be u64)                      | [`OutboxEntry`]              |
//! | `pos`     | see `crate::pos` (staff PIN failures and sessions, tills, Z-reports)   |
//!
//! Writes go through [`WriteSet`]: built outside the transaction (encoding included), applied in
//! one sled transaction over every tree, so a change and its outbox entry land together or not
//! at all. The caller flushes before answering.

use protocol::codec::{decode, encode, CodecError, Stored};
use protocol::promotion::Promotion;
use protocol::replication::sync::{Item, Scarce};
use protocol::replication::{
    Command, ConflictRecord, DeficitRecord, OnHand, ReplicaId, Rights, SaleRecord, Settlement,
};
use protocol::{Category, LocationId, Product, Sku};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use std::collections::BTreeMap;
use std::path::Path;
use ulid::Ulid;

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value: {0}")]
    Codec(#[from] CodecError),
    #[error("journal: {0}")]
    Journal(#[from] std::io::Error),
    #[error("storage: {0}")]
    Corrupt(String),
    /// The database did not flush a committed change: the node can no longer vouch that what it
    /// answers is durable, so it refuses every further write until it is restarted.
    #[error("storage failed, writes refused until the node is restarted: {0}")]
    Failed(String),
    /// The change is committed and durable in the database (and queued to the hub), but its
    /// journal record could not be written. For a sale, `sale` is its (id, receipt number): the
    /// sale exists and must not be rung up again.
    #[error("{}, but its journal record could not be written: {source}", recorded(.sale))]
    Unjournaled {
        sale: Option<(Ulid, String)>,
        source: Box<StoreError>,
    },
}

fn recorded(sale: &Option<(Ulid, String)>) -> String {
    match sale {
        Some((id, number)) => format!("sale {number} ({id}) is recorded"),
        None => "the change is recorded".into(),
    }
}

/// The trees, in the order a transaction sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum T {
    Meta = 0,
    Catalog = 1,
    Stock = 2,
    Sales = 3,
    Records = 4,
    Outbox = 5,
    /// Node-local POS state (never sent to the hub): `crate::pos`.
    Pos = 6,
}

const TREE_NAMES: [&str; 7] = [
    "meta", "catalog", "stock", "sales", "records", "outbox", "pos",
];

/// The database and its trees.
pub(crate) struct Db {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// Unit tests make `flush` fail with this set.
    #[cfg(test)]
    pub(crate) fail_flush: std::sync::atomic::AtomicBool,
}

/// A set of writes applied atomically by [`Db::commit`].
#[derive(Default)]
pub(crate) struct WriteSet {
    ops: Vec<(T, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteSet {
    pub fn put<V: Stored>(&mut self, tree: T, key: Vec<u8>, value: &V) -> Result<(), StoreError> {
        self.ops.push((tree, key, Some(encode(value)?)));
        Ok(())
    }

    pub fn remove(&mut self, tree: T, key: Vec<u8>) {
        self.ops.push((tree, key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The latest write of `key` in this set, if any (`Some(None)`: removed).
    pub fn pending(&self, tree: T, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ops
            .iter()
            .rev()
            .find(|(t, k, _)| *t == tree && k.as_slice() == key)
            .map(|(_, _, v)| v.as_deref())
    }
}

impl Db {
    pub fn open(dir: &Path, cache_mb: u64) -> Result<Db, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache_mb.saturating_mul(1024 * 1024))
            .open()?;
        let trees = TREE_NAMES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Db {
            db,
            trees,
            #[cfg(test)]
            fail_flush: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn tree(&self, t: T) -> &sled::Tree {
        &self.trees[t as usize]
    }

    pub fn get<V: Stored>(&self, t: T, key: &[u8]) -> Result<Option<V>, StoreError> {
        match self.tree(t).get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn contains(&self, t: T, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.tree(t).contains_key(key)?)
    }

    /// Applies every write in one transaction (not yet flushed).
    pub fn commit(&self, writes: &WriteSet) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        trees
            .as_slice()
            .transaction(|tx| {
                for (t, key, value) in &writes.ops {
                    let tree = &tx[*t as usize];
                    match value {
                        Some(v) => {
                            tree.insert(key.as_slice(), v.as_slice())?;
                        }
                        None => {
                            tree.remove(key.as_slice())?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Corrupt("transaction aborted".into())
                }
            })
    }

    /// Makes everything committed so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.fail_flush.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(
                "injected flush failure",
            ))));
        }
        self.db.flush()?;
        Ok(())
    }

    /// A tree of a module's own, outside the transactional set (`crate::boards`).
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Whether the database answers a read.
    pub fn healthy(&self) -> bool {
        self.tree(T::Meta).get(CURSORS).is_ok()
    }
}

// ---- keys ----------------------------------------------------------------------------------

pub(crate) const CURSORS: &[u8] = b"cursors";
pub(crate) const CATALOG_META: &[u8] = b"v";
/// Prefix of the live promotions in the `catalog` tree.
pub(crate) const PROMOTION: u8 = b'm';

fn prefixed(prefix: u8, rest: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.iter().map(|r| r.len()).sum::<usize>());
    key.push(prefix);
    for r in rest {
        key.extend_from_slice(r);
    }
    key
}

pub(crate) fn on_hand_prefix(location: &LocationId) -> Vec<u8> {
    prefixed(b'o', &[location.0.as_bytes(), &[0]])
}

pub(crate) fn on_hand_key(location: &LocationId, sku: &Sku) -> Vec<u8> {
    prefixed(
        b'o',
        &[location.0.as_bytes(), &[0], sku.as_str().as_bytes()],
    )
}

pub(crate) fn stock_rights_prefix(location: &LocationId) -> Vec<u8> {
    prefixed(b'r', &[b"s", location.0.as_bytes(), &[0]])
}

pub(crate) fn rights_key(key: &Scarce) -> Vec<u8> {
    match key {
        Scarce::Stock { sku, location } => prefixed(
            b'r',
            &[b"s", location.0.as_bytes(), &[0], sku.as_str().as_bytes()],
        ),
        Scarce::Coupon { code } => prefixed(b'r', &[b"c", code.as_bytes()]),
    }
}

pub(crate) fn sale_key(id: Ulid) -> Vec<u8> {
    prefixed(b'i', &[&id.0.to_be_bytes()])
}

pub(crate) fn number_key(number: &str) -> Vec<u8> {
    prefixed(b'n', &[number.as_bytes()])
}

pub(crate) fn idempotency_key(key: &str) -> Vec<u8> {
    prefixed(b'k', &[key.as_bytes()])
}

pub(crate) fn record_key(prefix: u8, id: Ulid) -> Vec<u8> {
    prefixed(prefix, &[&id.0.to_be_bytes()])
}

pub(crate) const DEFICIT: u8 = b'd';
pub(crate) const SETTLEMENT: u8 = b's';
pub(crate) const CONFLICT: u8 = b'x';
pub(crate) const COMMAND: u8 = b'c';
pub(crate) const ADJUSTMENT: u8 = b'a';

/// The terms of a coupon code the hub sent (`records` tree).
pub(crate) fn coupon_key(code: &str) -> Vec<u8> {
    prefixed(b'u', &[code.as_bytes()])
}

/// A customer's redemptions of a coupon code at this node (`records` tree).
pub(crate) fn customer_coupon_key(code: &str, customer: &protocol::CustomerId) -> Vec<u8> {
    prefixed(b'w', &[code.as_bytes(), &[0], &customer.to_bytes()])
}

pub(crate) fn outbox_key(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

pub(crate) fn staged_key(version: u64, part: u32) -> Vec<u8> {
    prefixed(b's', &[&version.to_be_bytes(), &part.to_be_bytes()])
}

/// The id in a key made by [`record_key`] or [`sale_key`].
pub(crate) fn id_of_key(key: &[u8]) -> Option<Ulid> {
    let bytes: [u8; 16] = key.get(1..17)?.try_into().ok()?;
    Some(Ulid(u128::from_be_bytes(bytes)))
}

// ---- stored values -------------------------------------------------------------------------

/// A coupon code the node may redeem at the till, as the hub last described it; `ended` once
/// the hub ended it (the node then refuses it and has handed back its rights).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCoupon {
    pub terms: protocol::replication::CouponTerms,
    #[serde(default)]
    pub ended: bool,
}

/// How often one customer redeemed a coupon code at this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerCouponUses {
    pub uses: u64,
}

macro_rules! stored {
    ($ty:ty, $kind:literal) => {
        impl Stored for $ty {
            const KIND: &'static str = $kind;
            const VERSION: u16 = 1;
        }
    };
}

stored!(StoredCoupon, "edge.coupon");
stored!(CustomerCouponUses, "edge.coupon_uses");

/// The node's sync and numbering cursors, rewritten in every change's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    /// Highest seq applied durably per origin (the hub's stream to this node).
    #[serde(default)]
    pub have: BTreeMap<ReplicaId, u64>,
    /// The seq the node's next own change gets (the first is 1).
    pub next_seq: u64,
    /// Highest own seq the hub acknowledged (outbox entries up to it are gone).
    #[serde(default)]
    pub acked: u64,
    /// Items in the outbox entries not yet acknowledged.
    #[serde(default)]
    pub pending_items: u64,
    /// The next receipt number.
    pub next_receipt: u64,
    /// The clock's last stamp and its correction, so stamps keep growing across restarts.
    #[serde(default)]
    pub clock_ms: u64,
    #[serde(default)]
    pub clock_offset_ms: i64,
}
stored!(Cursors, "edge.cursors");

impl Default for Cursors {
    fn default() -> Self {
        Cursors {
            have: BTreeMap::new(),
            next_seq: 1,
            acked: 0,
            pending_items: 0,
            next_receipt: 1,
            clock_ms: 0,
            clock_offset_ms: 0,
        }
    }
}

impl Cursors {
    /// Outbox entries not acknowledged yet.
    pub fn pending_entries(&self) -> u64 {
        self.next_seq.saturating_sub(1).saturating_sub(self.acked)
    }

    /// The highest own seq made so far.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }
}

/// The catalog version in use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CatalogMeta {
    pub version: u64,
    /// The hub's fingerprint of the version's content (empty: not known, e.g. stored before
    /// catalog deltas, or from a hub before them): told in `Hello`, so the hub sends a delta
    /// only from content it knows.
    #[serde(default)]
    pub fingerprint: String,
}
stored!(CatalogMeta, "edge.catalog_meta");

/// A `Catalog` chunk waiting for the rest of its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StagedChunk {
    pub parts: u32,
    #[serde(default)]
    pub categories: Vec<Category>,
    /// The hub's live promotions (in part 0).
    #[serde(default)]
    pub promotions: Vec<Promotion>,
    pub products: Vec<Product>,
    /// The version's fingerprint, as the hub sent it.
    #[serde(default)]
    pub fingerprint: String,
}
stored!(StagedChunk, "edge.catalog_chunk");

/// A promotion live on the hub when the catalog version in use was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredPromotion(pub Promotion);
stored!(StoredPromotion, "edge.promotion");

/// Stock on hand of a SKU at a location (the PN-counter as this node sees it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredOnHand {
    pub sku: Sku,
    pub location: LocationId,
    pub state: OnHand,
}
stored!(StoredOnHand, "edge.on_hand");

/// A bounded counter as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRights {
    pub key: Scarce,
    pub state: Rights,
}
stored!(StoredRights, "edge.rights");

/// A sale made (or replayed) here, with the deficit records it caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleEntry {
    pub sale: SaleRecord,
    #[serde(default)]
    pub deficits: Vec<Ulid>,
    /// The replica whose journal this sale was replayed from, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_from: Option<ReplicaId>,
    /// The till it was rung up at by a signed-in staff member (absent from sales made with the
    /// node's API token and from sales stored before tills). Local: the hub gets the staff id
    /// as the sale's `clerk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub till: Option<TillMark>,
}
stored!(SaleEntry, "edge.sale");

/// Where a sale was rung up: the till and its open session (one session per Z-report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TillMark {
    pub till: String,
    pub session: Ulid,
}

/// A pointer to a record by id (receipt number and idempotency key indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdRef {
    pub id: Ulid,
}
stored!(IdRef, "edge.id_ref");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct StoredDeficit(pub DeficitRecord);
stored!(StoredDeficit, "edge.deficit");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct StoredSettlement(pub Settlement);
stored!(StoredSettlement, "edge.settlement");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct StoredConflict(pub ConflictRecord);
stored!(StoredConflict, "edge.conflict");

/// A hub command this node has applied (each is applied once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppliedCommand {
    pub command: Command,
    /// The own seq of the change it made, if it made one.
    #[serde(default)]
    pub seq: Option<u64>,
}
stored!(AppliedCommand, "edge.applied_command");

/// What a stock adjustment was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKind {
    Receipt,
    Count,
    Damage,
    /// A `Count` command from the hub (e.g. the ERP's count).
    HubCount,
    /// A `Restock` command from the hub (goods of a cancelled or returned order).
    HubRestock,
}

/// A stock movement made here other than a sale (kept locally for the operator; the hub gets
/// the resulting `OnHand`/`Rights` states and any deficit record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustmentRecord {
    pub id: Ulid,
    pub kind: AdjustmentKind,
    pub sku: Sku,
    /// Units added (positive) or removed (negative).
    pub delta: i64,
    pub on_hand_after: i64,
    pub rights_created: u64,
    pub rights_consumed: u64,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deficit: Option<DeficitRecord>,
    /// The hub command it came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Ulid>,
    pub at_ms: u64,
}
stored!(AdjustmentRecord, "edge.adjustment");

/// One outbox entry: the items of one change, in the order they were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutboxEntry {
    pub items: Vec<Item>,
}
stored!(OutboxEntry, "edge.outbox_entry");

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::replication::Hlc;
    use protocol::{Currency, Money};

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), 4).expect("opens");
        (dir, db)
    }

    #[test]
    fn a_write_set_lands_in_every_tree_at_once_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sku = Sku::parse("COF-1").expect("sku");
        let loc = LocationId("store-berlin".into());
        let me = ReplicaId("berlin".into());
        let mut on_hand = OnHand::new();
        on_hand.add(&me, 5);
        let mut rights = Rights::new();
        rights.create(&me, 5);
        let key = Scarce::Stock {
            sku: sku.clone(),
            location: loc.clone(),
        };
        let cursors = Cursors {
            next_seq: 2,
            pending_items: 2,
            ..Cursors::default()
        };
        {
            let db = Db::open(dir.path(), 4).expect("opens");
            let mut w = WriteSet::default();
            w.put(
                T::Stock,
                on_hand_key(&loc, &sku),
                &StoredOnHand {
                    sku: sku.clone(),
                    location: loc.clone(),
                    state: on_hand.clone(),
                },
            )
            .expect("encodes");
            w.put(
                T::Stock,
                rights_key(&key),
                &StoredRights {
                    key: key.clone(),
                    state: rights.clone(),
                },
            )
            .expect("encodes");
            w.put(
                T::Outbox,
                outbox_key(1),
                &OutboxEntry {
                    items: vec![Item::Rights {
                        key: key.clone(),
                        state: rights.row(&me),
                    }],
                },
            )
            .expect("encodes");
            w.put(T::Meta, CURSORS.to_vec(), &cursors).expect("encodes");
            db.commit(&w).expect("commits");
            db.flush().expect("flushes");
        }
        let db = Db::open(dir.path(), 4).expect("reopens");
        let got: StoredOnHand = db
            .get(T::Stock, &on_hand_key(&loc, &sku))
            .expect("reads")
            .expect("present");
        assert_eq!(got.state.value(), 5);
        let got: StoredRights = db
            .get(T::Stock, &rights_key(&key))
            .expect("reads")
            .expect("present");
        assert_eq!(got.state.held(&me), 5);
        let got: Cursors = db.get(T::Meta, CURSORS).expect("reads").expect("present");
        assert_eq!(got, cursors);
        let entry: OutboxEntry = db
            .get(T::Outbox, &outbox_key(1))
            .expect("reads")
            .expect("present");
        assert_eq!(entry.items.len(), 1);
    }

    #[test]
    fn records_round_trip_and_keys_order_by_id() {
        let (_dir, db) = open();
        let me = ReplicaId("berlin".into());
        let first = Ulid::from_parts(1, 1);
        let second = Ulid::from_parts(2, 1);
        let mut w = WriteSet::default();
        for id in [second, first] {
            let sale = SaleRecord {
                id,
                number: format!("berlin-{}", id.timestamp_ms()),
                replica: me.clone(),
                location: LocationId("store-berlin".into()),
                at: Hlc {
                    ms: 1,
                    c: 0,
                    r: me.clone(),
                },
                lines: vec![],
                total: Money::zero(Currency::EUR),
                taxes: vec![],
                payments: vec![],
                customer: None,
                clerk: Some("anna".into()),
                promotions: Default::default(),
                coupons: Vec::new(),
            };
            w.put(
                T::Sales,
                sale_key(id),
                &SaleEntry {
                    sale,
                    deficits: vec![],
                    replayed_from: None,
                    till: None,
                },
            )
            .expect("encodes");
        }
        db.commit(&w).expect("commits");
        let ids: Vec<Ulid> = db
            .tree(T::Sales)
            .scan_prefix(b"i")
            .keys()
            .map(|k| id_of_key(&k.expect("key")).expect("id"))
            .collect();
        assert_eq!(ids, vec![first, second]);
        let got: SaleEntry = db
            .get(T::Sales, &sale_key(second))
            .expect("reads")
            .expect("present");
        assert_eq!(got.sale.clerk.as_deref(), Some("anna"));
    }

    #[test]
    fn a_value_of_another_kind_is_refused_not_misread() {
        let (_dir, db) = open();
        let mut w = WriteSet::default();
        w.put(
            T::Meta,
            CURSORS.to_vec(),
            &CatalogMeta {
                version: 3,
                fingerprint: String::new(),
            },
        )
        .expect("encodes");
        db.commit(&w).expect("commits");
        assert!(matches!(
            db.get::<Cursors>(T::Meta, CURSORS),
            Err(StoreError::Codec(CodecError::WrongKind { .. }))
        ));
    }
}
