//! The node's state and its single writer. Every change — a sale, a stock adjustment, the merge
//! of a hub batch, an acknowledgement — runs under one lock: it reads what it needs, builds its
//! writes (states, records, the outbox entry, the cursors), commits them in one sled
//! transaction, flushes, appends sales and deficits to the journal (fsync'd), and only then
//! returns. Methods here block: async callers run them on `spawn_blocking`.
//!
//! A flush that fails after a commit puts the store in a failed state: every further write is
//! refused ([`StoreError::Failed`]) and `/readyz` answers 503 until the node is restarted.

mod batch;
mod catalog;
mod change;
mod check;
mod pickup;
mod returns;

use crate::journal::{Journal, JournalRecord};
use crate::ops::{
    AdjustmentReceipt, AdjustmentRequest, DeficitView, ManualAdjustments, OpError, ReplayReport,
    SaleReceipt, SaleRequest, Shortage, StockLine, MAX_SALE_COUPONS,
};
use crate::storage::{
    coupon_key, id_of_key, idempotency_key, number_key, on_hand_key, on_hand_prefix, outbox_key,
    record_key, rights_key, sale_key, staged_key, stock_rights_prefix, AdjustmentRecord,
    CatalogMeta, Cursors, Db, IdRef, OutboxEntry, SaleEntry, StagedChunk, StoreError,
    StoredConflict, StoredCoupon, StoredDeficit, StoredOnHand, StoredPromotion, StoredRights,
    StoredSettlement, WriteSet, ADJUSTMENT, CATALOG_META, CONFLICT, CURSORS, DEFICIT, PROMOTION,
    SETTLEMENT, T,
};
pub(crate) use batch::Batch;
use batch::BatchBuilder;
pub use catalog::{CatalogChanges, CatalogDeltaPart, DeltaOutcome};
use change::Change;
pub(crate) use check::change_due as change_due_of;
pub(crate) use check::PricedManual;
use check::{change_due, check_adjustment, check_idempotency_key, parse_payments, price_sale};
pub use pickup::Pickup;
use protocol::promotion::{Promotion, PromotionId, PromotionSet};
use protocol::replication::sync::{Item, Scarce};
use protocol::replication::{CouponTerms, Hlc, HybridClock, ReplicaId, Rights, SaleRecord};
use protocol::{CatalogQuery, CatalogSnapshot, Category, LocationId, Product, Sku};
pub use returns::{
    plan as plan_return, refunded, refunded_unapproved, unapproved_note, ExchangeRequest, ReturnBy,
    ReturnEntry, ReturnLineRequest, ReturnReceipt, ReturnRequest, ReturnableSale,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use ulid::Ulid;

/// Items per outbox entry: a change with more (the policy pass after `Welcome` over many SKUs)
/// is split over several entries, so any entry fits in one `Deltas` batch.
pub(crate) const MAX_ENTRY_ITEMS: usize = 250;
/// SKUs per change in the policy pass after `Welcome`.
const POLICY_CHUNK: usize = 100;

/// The node's wall clock in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Who the node is and how it shares rights.
#[derive(Debug, Clone)]
pub struct Identity {
    pub replica: ReplicaId,
    pub location: LocationId,
    pub store_name: String,
    pub safety_buffer: u64,
    pub online_share_percent: u8,
}

/// The replicated catalog in use, with its barcode index and the promotions that came with it.
pub struct Catalog {
    pub snapshot: CatalogSnapshot,
    /// The promotions live on the hub when this version was issued, indexed for pricing: every
    /// sale is priced with them, online or offline.
    pub promotions: PromotionSet,
    /// The hub's fingerprint of this version's content (empty when not known).
    pub fingerprint: String,
    barcodes: HashMap<String, Sku>,
}

impl Catalog {
    fn new(snapshot: CatalogSnapshot, promotions: Vec<Promotion>, fingerprint: String) -> Catalog {
        let barcodes = snapshot
            .products()
            .iter()
            .flat_map(|p| p.variants.iter())
            .filter_map(|v| v.barcode.clone().map(|b| (b, v.sku.clone())))
            .collect();
        Catalog {
            snapshot,
            promotions: PromotionSet::new(promotions),
            fingerprint,
            barcodes,
        }
    }

    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    /// The SKU with this barcode.
    pub fn sku_by_barcode(&self, barcode: &str) -> Option<&Sku> {
        self.barcodes.get(barcode)
    }
}

/// What the sync task reports, for `GET /api/v1/sync`.
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    pub running: bool,
    pub connected: bool,
    /// Connected since, or offline since (ms).
    pub since_ms: Option<u64>,
    pub last_ack_ms: Option<u64>,
    pub skew_ms: Option<i64>,
    pub last_close: Option<String>,
    /// When the next connection attempt starts (ms), while offline.
    pub next_attempt_ms: Option<u64>,
    /// The delay chosen before that attempt (ms).
    pub backoff_ms: Option<u64>,
    /// A problem a person must look at (e.g. the hub is behind what it acknowledged).
    pub problem: Option<String>,
}

/// The state the writer lock guards.
pub(crate) struct Writer {
    cursors: Cursors,
    clock: HybridClock,
    /// Rights asked of the hub per SKU and not answered yet (not asked again meanwhile).
    wanted: HashMap<Sku, u64>,
}

/// The node's storage and domain operations.
pub struct Store {
    me: Identity,
    hub: ReplicaId,
    db: Db,
    journal: Journal,
    writer: Mutex<Writer>,
    catalog: RwLock<Arc<Catalog>>,
    catalog_writer: Mutex<()>,
    /// The highest own seq that is durable (the sync task sends up to it).
    durable: tokio::sync::watch::Sender<u64>,
    connected: AtomicBool,
    sync: Mutex<SyncState>,
    /// Set when a flush failed after a commit: writes are refused until a restart.
    failed: OnceLock<String>,
}

impl Store {
    /// Opens (or creates) the node's database and journal in `dir`. A journal missing records
    /// of unacknowledged outbox entries (a crash between the commit and the journal write) gets
    /// them appended.
    #[tracing::instrument(skip_all, fields(dir = %dir.display(), replica = %me.replica))]
    pub fn open(dir: &Path, cache_mb: u64, me: Identity) -> Result<Store, StoreError> {
        let db = Db::open(dir, cache_mb)?;
        let (journal, journaled) = Journal::open(dir)?;
        let cursors: Cursors = db.get(T::Meta, CURSORS)?.unwrap_or_default();
        let mut clock = HybridClock::new(me.replica.clone());
        let offset = cursors.clock_offset_ms;
        if offset >= 0 {
            clock.learn(0, offset.unsigned_abs());
        } else {
            clock.learn(offset.unsigned_abs(), 0);
        }
        clock.observe(&Hlc {
            ms: cursors.clock_ms,
            c: 0,
            r: me.replica.clone(),
        });
        let catalog = load_catalog(&db)?;
        let (durable, _) = tokio::sync::watch::channel(cursors.last_seq());
        let store = Store {
            hub: ReplicaId::hub(),
            db,
            journal,
            writer: Mutex::new(Writer {
                cursors,
                clock,
                wanted: HashMap::new(),
            }),
            catalog: RwLock::new(Arc::new(catalog)),
            catalog_writer: Mutex::new(()),
            durable,
            connected: AtomicBool::new(false),
            sync: Mutex::new(SyncState::default()),
            failed: OnceLock::new(),
            me,
        };
        store.complete_journal(&journaled)?;
        let acked = store.lock()?.cursors.acked;
        store
            .journal
            .compact(acked, &store.me.replica, &store.me.location)?;
        Ok(store)
    }

    fn complete_journal(&self, journaled: &[JournalRecord]) -> Result<(), StoreError> {
        let mut known: BTreeSet<Ulid> = BTreeSet::new();
        for r in journaled {
            known.extend(r.sale.iter().map(|s| s.id));
            known.extend(r.deficits.iter().map(|d| d.id));
            known.extend(r.returned.iter().map(|x| x.id));
        }
        // Entries at or below the journal's last acknowledgement marker are on the hub: the
        // journal may have forgotten them before a crash kept the database from pruning them.
        let acked = self.lock()?.cursors.acked.max(self.journal.marked());
        let mut missing = Vec::new();
        for kv in self.db.tree(T::Outbox).range(outbox_key(acked + 1)..) {
            let (key, value) = kv?;
            let seq = seq_of_key(&key)?;
            let entry: OutboxEntry = protocol::decode(&value)?;
            let mut record = JournalRecord {
                seq,
                replica: self.me.replica.clone(),
                location: self.me.location.clone(),
                sale: None,
                deficits: Vec::new(),
                returned: None,
                acked_upto: None,
            };
            for item in entry.items {
                match item {
                    Item::Sale(s) if !known.contains(&s.id) => record.sale = Some(s),
                    Item::Deficit(d) if !known.contains(&d.id) => record.deficits.push(d),
                    Item::Return(r) if !known.contains(&r.id) => record.returned = Some(r),
                    _ => {}
                }
            }
            if record.sale.is_some() || !record.deficits.is_empty() || record.returned.is_some() {
                missing.push(record);
            }
        }
        if !missing.is_empty() {
            tracing::warn!(
                records = missing.len(),
                "the journal lacked records of unacknowledged changes (a crash before the journal write); appended them"
            );
            self.journal.append(&missing)?;
        }
        Ok(())
    }

    pub fn identity(&self) -> &Identity {
        &self.me
    }

    fn lock(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        self.writer
            .lock()
            .map_err(|_| StoreError::Corrupt("the writer lock is poisoned".into()))
    }

    /// The writer lock, for a change: refused once the store has failed.
    fn writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        self.refuse_if_failed()?;
        let w = self.lock()?;
        // It may have failed while this thread waited for the lock.
        self.refuse_if_failed()?;
        Ok(w)
    }

    fn refuse_if_failed(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Why the store refuses writes (a flush failed after a commit), if it does. Only a restart
    /// clears it: the database is reopened and its durable state read again.
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// Makes every later flush fail (unit tests).
    #[cfg(test)]
    pub(crate) fn inject_flush_failure(&self) {
        self.db
            .fail_flush
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Flushes after a commit; a failure puts the store in the failed state (returned as
    /// [`StoreError::Failed`]).
    pub(crate) fn flush_or_fail(&self, what: &str) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| {
            let why = format!("the database did not flush {what}: {e}");
            if self.failed.set(why.clone()).is_ok() {
                tracing::error!(
                    error = %e,
                    "{why}; the node refuses every write until it is restarted"
                );
            }
            StoreError::Failed(self.failed.get().cloned().unwrap_or(why))
        })
    }

    /// The catalog in use.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The node's clock, corrected by the offset learned from the hub at the last `Welcome`
    /// (kept across restarts): the time promotion windows are judged by at the till, offline
    /// too.
    pub fn corrected_now(&self) -> Result<time::OffsetDateTime, StoreError> {
        let offset = self.lock()?.clock.offset_ms();
        let local = time::OffsetDateTime::now_utc();
        Ok(local
            .checked_add(time::Duration::milliseconds(offset))
            .unwrap_or(local))
    }

    /// Watches the highest durable own seq (changes whenever a local change lands).
    pub fn durable_seq(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// The cursors as they stand.
    pub fn cursors(&self) -> Result<Cursors, StoreError> {
        Ok(self.lock()?.cursors.clone())
    }

    /// Whether the database answers a read.
    pub fn healthy(&self) -> bool {
        self.db.healthy()
    }

    /// The database, for the POS's reads of its own tree.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// A change local to this node that goes nowhere (no outbox entry): staff PIN failures
    /// and sessions, tills. `f` reads what it needs under the writer lock, so it never
    /// interleaves with a sale, and returns its writes, committed in one transaction and
    /// flushed before this returns.
    pub(crate) fn local_change<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Db) -> Result<(WriteSet, R), E>,
    ) -> Result<R, E> {
        let _writer = self.writer()?;
        let (writes, out) = f(&self.db)?;
        if !writes.is_empty() {
            self.db.commit(&writes)?;
            self.flush_or_fail("a POS change")?;
        }
        Ok(out)
    }

    /// Queues records for the hub (board events) as one durable change: in the outbox, so
    /// they reach the hub after any outage, exactly once.
    pub(crate) fn queue_records(&self, items: Vec<Item>) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut w = self.writer()?;
        let mut ch = Change::new(self, &mut w);
        for item in items {
            ch.push_record(item);
        }
        ch.finish()?;
        Ok(())
    }

    /// Whether a sale was recorded with this idempotency key (a retry gets the first receipt).
    pub(crate) fn has_sale_key(&self, key: &str) -> Result<bool, OpError> {
        match check_idempotency_key(Some(key))? {
            Some(k) => Ok(self
                .db
                .contains(T::Sales, &idempotency_key(&format!("sale:{k}")))?),
            None => Ok(false),
        }
    }

    /// Records a conflict this node found (`kind`, `detail`), sent to the hub like its other
    /// records, with node-local writes made by `f` (given the conflict's id and time), in one
    /// change: one transaction with its outbox entry, flushed.
    pub(crate) fn record_conflict_with(
        &self,
        kind: &str,
        detail: String,
        f: impl FnOnce(
            &Db,
            &mut WriteSet,
            &protocol::replication::ConflictRecord,
        ) -> Result<(), StoreError>,
    ) -> Result<protocol::replication::ConflictRecord, StoreError> {
        let mut w = self.writer()?;
        let mut ch = Change::new(self, &mut w);
        let record = ch.conflict(kind, detail)?;
        f(&self.db, &mut ch.writes, &record)?;
        ch.finish()?;
        Ok(record)
    }

    /// Flushes everything (graceful shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()
    }

    /// Records in the journal (not yet acknowledged by the hub).
    pub fn journal_records(&self) -> usize {
        self.journal.records()
    }

    // ---- sales ------------------------------------------------------------------------------

    /// Records a sale: prices it from the replicated catalog, consumes the node's rights
    /// (refusing units beyond them unless `override_reason` is given, which makes deficit
    /// records), and answers only once it is durable. A retry with the same idempotency key
    /// returns the first sale unchanged.
    pub fn sell(
        &self,
        req: &SaleRequest,
        idempotency: Option<&str>,
    ) -> Result<SaleReceipt, OpError> {
        self.sell_at(req, idempotency, None)
    }

    /// Records a sale as [`Store::sell`] does; with `till`, rung up by a signed-in staff
    /// member at an open till: refused (`till_closed`) unless that till is open, the staff id
    /// becomes the sale's clerk, and the till's running totals change in the sale's own write.
    pub fn sell_at(
        &self,
        req: &SaleRequest,
        idempotency: Option<&str>,
        till: Option<&crate::pos::TillSale>,
    ) -> Result<SaleReceipt, OpError> {
        self.sell_with(req, idempotency, till, &ManualAdjustments::default())
    }

    /// Whether a sale was recorded under this `Idempotency-Key` (e.g. the till page's sale
    /// key): a sale that is rung up is sold, whatever a page still shows.
    pub fn sale_recorded(&self, idempotency: &str) -> Result<bool, StoreError> {
        let key = idempotency_key(&format!("sale:{idempotency}"));
        Ok(self.db.get::<IdRef>(T::Sales, &key)?.is_some())
    }

    /// Records a sale as [`Store::sell_at`] does, with manual price adjustments of its lines
    /// approved by a manager (whose PIN the caller checked): the adjusted lines take no
    /// promotion, and each adjustment goes to the POS audit in the sale's own write.
    pub fn sell_with(
        &self,
        req: &SaleRequest,
        idempotency: Option<&str>,
        till: Option<&crate::pos::TillSale>,
        manual: &ManualAdjustments,
    ) -> Result<SaleReceipt, OpError> {
        let outcome = self.record_sale(req, idempotency, till, manual);
        crate::metrics::sale(&outcome);
        outcome
    }

    #[tracing::instrument(skip_all, fields(lines = req.lines.len(), till = till.map(|t| t.till.as_str()), manual = manual.any()))]
    fn record_sale(
        &self,
        req: &SaleRequest,
        idempotency: Option<&str>,
        till: Option<&crate::pos::TillSale>,
        manual: &ManualAdjustments,
    ) -> Result<SaleReceipt, OpError> {
        let idem = check_idempotency_key(idempotency)?.map(|k| format!("sale:{k}"));
        // A retry of a sale already made gets its receipt, whatever changed since (a code
        // ended, a price changed): looked up before pricing, and again under the writer lock
        // for a retry racing its first attempt.
        let replayed = |key: &str| -> Result<Option<SaleReceipt>, OpError> {
            // A store that failed a flush answers nothing until a restart: the sale found may
            // be one whose write was never made durable.
            self.refuse_if_failed()?;
            let Some(found) = self.db.get::<IdRef>(T::Sales, &idempotency_key(key))? else {
                return Ok(None);
            };
            // The first answer was given only once durable; make sure that is still so.
            self.db.flush()?;
            Ok(Some(SaleReceipt {
                replayed: true,
                ..self.sale_receipt(found.id)?
            }))
        };
        if let Some(receipt) = idem.as_deref().map(replayed).transpose()?.flatten() {
            return Ok(receipt);
        }
        let now = self.corrected_now()?;
        let coupons = self.coupon_terms(req, now)?;
        let priced = price_sale(
            &self.catalog(),
            &self.me.location,
            now,
            req,
            &coupons,
            manual,
        )?;
        let payments = parse_payments(req, priced.total)?;
        let mut w = self.writer()?;
        if let Some(receipt) = idem.as_deref().map(replayed).transpose()?.flatten() {
            return Ok(receipt);
        }
        let clerk = till.map(|t| t.staff.clone()).or(priced.clerk);
        let mut ch = Change::new(self, &mut w);
        let mut short = Vec::new();
        for (sku, qty) in &priced.units {
            let held = ch.held(sku)?;
            if held < *qty {
                short.push(Shortage {
                    sku: sku.clone(),
                    requested: *qty,
                    held,
                });
            }
        }
        // Units on the click-and-collect pick list are never sold at the till, override or not.
        pickup::refuse_held(&mut ch, &priced.units)?;
        if !short.is_empty() && priced.override_reason.is_none() {
            return Err(OpError::InsufficientRights(short));
        }
        for terms in &coupons {
            ch.redeem_coupon(terms, req.customer)?;
        }
        let at = ch.stamp();
        let id = Ulid::new();
        let number = protocol::replication::receipt_number(
            &protocol::replication::receipt_prefix(&self.me.location, &self.me.replica),
            ch.cursors.next_receipt,
        );
        ch.cursors.next_receipt += 1;
        let sale = SaleRecord {
            id,
            number,
            replica: self.me.replica.clone(),
            location: self.me.location.clone(),
            at: at.clone(),
            lines: priced.lines,
            total: priced.total,
            taxes: priced.taxes,
            payments,
            customer: req.customer,
            clerk: clerk.clone(),
            promotions: priced.promotions,
            coupons: coupons.iter().map(|c| c.code.clone()).collect(),
        };
        let manual_lines = priced.manual;
        let mut deficits = Vec::new();
        for (sku, qty) in &priced.units {
            let consumed = ch.take_stock(sku, *qty)?;
            if consumed < *qty {
                let reason = priced.override_reason.clone().unwrap_or_default();
                deficits.push(ch.deficit(
                    sku,
                    qty - consumed,
                    reason,
                    Some(id),
                    clerk.clone(),
                    &at,
                )?);
            }
            ch.policy(sku)?;
        }
        let till = match till {
            Some(t) => Some(crate::pos::till::ring_up(
                &self.db,
                &mut ch.writes,
                t,
                &sale,
                change_due(&sale),
                &manual_lines,
            )?),
            None => None,
        };
        crate::pos::overrides::record(
            &mut ch.writes,
            &sale,
            till.as_ref(),
            &manual_lines,
            now_ms(),
        )?;
        crate::pos::card::record(&self.db, &mut ch.writes, req, &sale)?;
        let entry = SaleEntry {
            sale,
            deficits: deficits.iter().map(|d| d.id).collect(),
            replayed_from: None,
            till,
        };
        ch.record_sale(&entry, idem.as_deref())?;
        ch.finish()?;
        drop(w);
        fail::fail_point!("edge.sale.after_commit", |_| std::process::abort());
        Ok(SaleReceipt {
            change_due: change_due(&entry.sale),
            entry,
            deficits,
            replayed: false,
        })
    }

    /// Prices a sale request with the same code as [`Store::sell_at`] (catalog, promotions,
    /// coupons at this store, now) without recording anything: the till's running total.
    pub fn quote(&self, req: &SaleRequest) -> Result<crate::ops::SaleQuote, OpError> {
        self.quote_with(req, &ManualAdjustments::default())
    }

    /// Prices a sale request with manual adjustments as [`Store::sell_with`] would, recording
    /// nothing.
    pub fn quote_with(
        &self,
        req: &SaleRequest,
        manual: &ManualAdjustments,
    ) -> Result<crate::ops::SaleQuote, OpError> {
        let now = self.corrected_now()?;
        let coupons = self.coupon_terms(req, now)?;
        let priced = price_sale(
            &self.catalog(),
            &self.me.location,
            now,
            req,
            &coupons,
            manual,
        )?;
        Ok(crate::ops::SaleQuote {
            lines: priced.lines,
            total: priced.total,
            taxes: priced.taxes,
            promotions: priced.promotions,
            coupons: coupons.into_iter().map(|c| c.code).collect(),
        })
    }

    /// A sale by id, with its deficits.
    pub fn sale(&self, id: Ulid) -> Result<Option<SaleReceipt>, StoreError> {
        match self.db.get::<SaleEntry>(T::Sales, &sale_key(id))? {
            Some(_) => self.sale_receipt(id).map(Some).or_else(|e| match e {
                OpError::Storage(s) => Err(s),
                _ => Ok(None),
            }),
            None => Ok(None),
        }
    }

    /// A sale by id or receipt number.
    pub fn find_sale(&self, id_or_number: &str) -> Result<Option<SaleReceipt>, StoreError> {
        if let Ok(id) = Ulid::from_string(id_or_number) {
            if let Some(found) = self.sale(id)? {
                return Ok(Some(found));
            }
        }
        match self.db.get::<IdRef>(T::Sales, &number_key(id_or_number))? {
            Some(r) => self.sale(r.id),
            None => Ok(None),
        }
    }

    fn sale_receipt(&self, id: Ulid) -> Result<SaleReceipt, OpError> {
        let entry: SaleEntry = self
            .db
            .get(T::Sales, &sale_key(id))?
            .ok_or_else(|| OpError::NotFound(format!("sale {id}")))?;
        let mut deficits = Vec::with_capacity(entry.deficits.len());
        for d in &entry.deficits {
            if let Some(StoredDeficit(record)) =
                self.db.get(T::Records, &record_key(DEFICIT, *d))?
            {
                deficits.push(record);
            }
        }
        Ok(SaleReceipt {
            change_due: change_due(&entry.sale),
            entry,
            deficits,
            replayed: false,
        })
    }

    /// Sales, newest first: up to `limit` after the sale `before` (exclusive).
    pub fn sales(
        &self,
        limit: usize,
        before: Option<Ulid>,
    ) -> Result<Vec<SaleReceipt>, StoreError> {
        let tree = self.db.tree(T::Sales);
        let end = match before {
            Some(id) => sale_key(id),
            None => vec![b'i' + 1],
        };
        let mut out = Vec::new();
        for kv in tree.range(vec![b'i']..end).rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = kv?;
            if let Some(id) = id_of_key(&key) {
                if let Some(found) = self.sale(id)? {
                    out.push(found);
                }
            }
        }
        Ok(out)
    }

    // ---- stock adjustments ------------------------------------------------------------------

    /// Records a receipt, count or damage with its outbox entry, durably.
    #[tracing::instrument(skip_all)]
    pub fn adjust(
        &self,
        req: &AdjustmentRequest,
        idempotency: Option<&str>,
    ) -> Result<AdjustmentReceipt, OpError> {
        let idem = check_idempotency_key(idempotency)?.map(|k| format!("adj:{k}"));
        let a = check_adjustment(&self.catalog(), req)?;
        let mut w = self.writer()?;
        if let Some(key) = &idem {
            if let Some(found) = self.db.get::<IdRef>(T::Sales, &idempotency_key(key))? {
                self.db.flush()?;
                let record: AdjustmentRecord = self
                    .db
                    .get(T::Records, &record_key(ADJUSTMENT, found.id))?
                    .ok_or_else(|| OpError::NotFound(format!("adjustment {}", found.id)))?;
                return Ok(AdjustmentReceipt {
                    record,
                    replayed: true,
                });
            }
        }
        let mut ch = Change::new(self, &mut w);
        let record = ch.adjust(a.kind, &a.sku, a.target, a.reason, a.clerk, None)?;
        if let Some(key) = &idem {
            ch.writes
                .put(T::Sales, idempotency_key(key), &IdRef { id: record.id })?;
        }
        ch.finish()?;
        Ok(AdjustmentReceipt {
            record,
            replayed: false,
        })
    }

    // ---- reads ------------------------------------------------------------------------------

    /// Stock of every SKU the node has seen at its location, by SKU.
    pub fn stock(&self) -> Result<Vec<StockLine>, StoreError> {
        let loc = &self.me.location;
        let mut lines: BTreeMap<Sku, (i64, Option<Rights>)> = BTreeMap::new();
        for kv in self.db.tree(T::Stock).scan_prefix(on_hand_prefix(loc)) {
            let (_, v) = kv?;
            let s: StoredOnHand = protocol::decode(&v)?;
            lines.entry(s.sku).or_default().0 = s.state.value();
        }
        for kv in self.db.tree(T::Stock).scan_prefix(stock_rights_prefix(loc)) {
            let (_, v) = kv?;
            let s: StoredRights = protocol::decode(&v)?;
            if let Scarce::Stock { sku, .. } = s.key {
                lines.entry(sku).or_default().1 = Some(s.state);
            }
        }
        let catalog = self.catalog();
        Ok(lines
            .into_iter()
            .map(|(sku, (on_hand, rights))| self.stock_line(&catalog, sku, on_hand, rights))
            .collect())
    }

    /// Stock of one SKU (zeros for a SKU the node has not seen; `None` if the catalog does not
    /// know it either).
    pub fn stock_of(&self, sku: &Sku) -> Result<Option<StockLine>, StoreError> {
        let loc = &self.me.location;
        let on_hand: Option<StoredOnHand> = self.db.get(T::Stock, &on_hand_key(loc, sku))?;
        let rights: Option<StoredRights> = self.db.get(
            T::Stock,
            &rights_key(&Scarce::Stock {
                sku: sku.clone(),
                location: loc.clone(),
            }),
        )?;
        let catalog = self.catalog();
        if on_hand.is_none() && rights.is_none() && catalog.snapshot.product_by_sku(sku).is_none() {
            return Ok(None);
        }
        Ok(Some(self.stock_line(
            &catalog,
            sku.clone(),
            on_hand.map_or(0, |s| s.state.value()),
            rights.map(|r| r.state),
        )))
    }

    fn stock_line(
        &self,
        catalog: &Catalog,
        sku: Sku,
        on_hand: i64,
        rights: Option<Rights>,
    ) -> StockLine {
        let rights = rights.unwrap_or_default();
        StockLine {
            name: catalog
                .snapshot
                .product_by_sku(&sku)
                .map(|p| match p.variant(&sku) {
                    Some(v) if !v.title.is_empty() && v.title != "Default" => {
                        format!("{} – {}", p.name, v.title)
                    }
                    _ => p.name.clone(),
                }),
            node_rights: rights.held(&self.me.replica),
            hub_rights: rights.held(&self.hub),
            value: i64::try_from(rights.value()).unwrap_or(i64::MAX),
            on_hand,
            sku,
        }
    }

    /// Catalog products matching a text query (or with a barcode), up to `limit`.
    pub fn products(
        &self,
        text: Option<&str>,
        barcode: Option<&str>,
        limit: usize,
    ) -> Vec<Product> {
        let catalog = self.catalog();
        if let Some(code) = barcode {
            return catalog
                .sku_by_barcode(code.trim())
                .and_then(|sku| catalog.snapshot.product_by_sku(sku))
                .into_iter()
                .cloned()
                .collect();
        }
        catalog
            .snapshot
            .query(&CatalogQuery {
                text: text.map(str::to_string),
                limit,
                ..Default::default()
            })
            .map(|page| page.items.into_iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Deficit records, newest first, with the hub's settlement where it arrived.
    pub fn deficits(
        &self,
        limit: usize,
        before: Option<Ulid>,
    ) -> Result<Vec<DeficitView>, StoreError> {
        let end = match before {
            Some(id) => record_key(DEFICIT, id),
            None => vec![DEFICIT + 1],
        };
        let mut out = Vec::new();
        for kv in self.db.tree(T::Records).range(vec![DEFICIT]..end).rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv?;
            let StoredDeficit(deficit) = protocol::decode(&v)?;
            let settlement = self
                .db
                .get::<StoredSettlement>(T::Records, &record_key(SETTLEMENT, deficit.id))?
                .map(|s| s.0);
            out.push(DeficitView {
                deficit,
                settlement,
            });
        }
        Ok(out)
    }

    /// Conflicts the hub reported, newest first.
    pub fn conflicts(
        &self,
        limit: usize,
    ) -> Result<Vec<protocol::replication::ConflictRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .db
            .tree(T::Records)
            .scan_prefix([CONFLICT])
            .rev()
            .take(limit)
        {
            let (_, v) = kv?;
            out.push(protocol::decode::<StoredConflict>(&v)?.0);
        }
        Ok(out)
    }

    /// What the sync task last reported (a failed store's reason as the problem).
    pub fn sync_state(&self) -> SyncState {
        let mut state = match self.sync.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(why) = self.failure() {
            state.problem = Some(why);
        }
        state
    }

    pub(crate) fn update_sync(&self, f: impl FnOnce(&mut SyncState)) {
        match self.sync.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    // ---- sync: what the session reads and applies ------------------------------------------

    /// What `Hello` says: the have vector, the catalog version and the pending entries.
    pub(crate) fn hello_state(&self) -> Result<(BTreeMap<ReplicaId, u64>, u64, u64), StoreError> {
        let c = self.cursors()?;
        let pending = c.pending_entries();
        Ok((c.have, self.catalog().version(), pending))
    }

    /// Takes in the hub's `Welcome`: learns its time (returns the skew), drops what it already
    /// has from the outbox, marks the node connected and runs the rights policy over every SKU.
    /// Returns (skew, first own seq to send).
    #[tracing::instrument(skip_all)]
    pub(crate) fn welcome(
        &self,
        hub_have_me: u64,
        hub_time_ms: u64,
        local_ms: u64,
    ) -> Result<(i64, u64), StoreError> {
        self.refuse_if_failed()?;
        self.update_sync(|s| s.problem = None);
        let skew = self.lock()?.clock.learn(local_ms, hub_time_ms);
        let last = self.lock()?.cursors.last_seq();
        let acked = self.lock()?.cursors.acked;
        if hub_have_me < acked {
            let problem = format!(
                "the hub has seq {hub_have_me} from replica {} but acknowledged {acked} before (restored from a backup?): the records of entries {}..={acked} are gone from this node's outbox; later states still reach the hub",
                self.me.replica,
                hub_have_me + 1
            );
            tracing::error!("{problem}");
            self.update_sync(|s| s.problem = Some(problem));
        }
        self.ack(hub_have_me.min(last))?;
        self.connected.store(true, Ordering::SeqCst);
        self.lock()?.wanted.clear();
        let keys: Vec<Sku> = self
            .db
            .tree(T::Stock)
            .scan_prefix(stock_rights_prefix(&self.me.location))
            .values()
            .map(|v| -> Result<Option<Sku>, StoreError> {
                let s: StoredRights = protocol::decode(&v?)?;
                Ok(match s.key {
                    Scarce::Stock { sku, .. } => Some(sku),
                    Scarce::Coupon { .. } => None,
                })
            })
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?;
        for chunk in keys.chunks(POLICY_CHUNK) {
            let mut w = self.writer()?;
            let mut ch = Change::new(self, &mut w);
            for sku in chunk {
                ch.policy(sku)?;
            }
            ch.finish()?;
        }
        Ok((skew, hub_have_me.min(last) + 1))
    }

    /// The link is down: the policy stops granting until the next `Welcome`.
    pub(crate) fn disconnected(&self) {
        self.connected.store(false, Ordering::SeqCst);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Drops own outbox entries up to `seq` (the hub has them durably) and compacts the
    /// journal. Returns the acknowledged seq now in force.
    ///
    /// The journal learns of the acknowledgement first (a marker, or a rewrite that starts with
    /// one), then the database prunes the outbox and is flushed. Whatever a crash interrupts,
    /// the journal never lacks the acknowledgement of a record it dropped, so a replay of it
    /// never records a sale the hub acknowledged a second time; and since the prune is flushed,
    /// a reopened node does not put dropped records back into the journal either (it also skips
    /// outbox entries at or below the journal's marker when completing the journal).
    pub(crate) fn ack(&self, seq: u64) -> Result<u64, StoreError> {
        let seq = {
            let w = self.writer()?;
            let seq = seq.min(w.cursors.last_seq());
            if seq <= w.cursors.acked {
                return Ok(w.cursors.acked);
            }
            seq
        };
        // The hub has everything up to `seq` durably: the journal may forget it now.
        self.journal
            .compact(seq, &self.me.replica, &self.me.location)?;
        let mut w = self.writer()?;
        if seq <= w.cursors.acked {
            return Ok(w.cursors.acked);
        }
        let mut writes = WriteSet::default();
        let mut items = 0u64;
        for kv in self
            .db
            .tree(T::Outbox)
            .range(outbox_key(w.cursors.acked + 1)..=outbox_key(seq))
        {
            let (key, value) = kv?;
            let entry: OutboxEntry = protocol::decode(&value)?;
            items += entry.items.len() as u64;
            writes.remove(T::Outbox, key.to_vec());
        }
        let mut cursors = w.cursors.clone();
        cursors.acked = seq;
        cursors.pending_items = cursors.pending_items.saturating_sub(items);
        writes.put(T::Meta, CURSORS.to_vec(), &cursors)?;
        self.db.commit(&writes)?;
        w.cursors = cursors;
        drop(w);
        self.flush_or_fail(&format!("the acknowledgement of seq {seq}"))?;
        Ok(seq)
    }

    /// Reads the next batch of own outbox entries from `from` up to `upto` (durable ones),
    /// bounded by `MAX_BATCH_ITEMS`/`MAX_BATCH_BYTES`, with `OnHand`/`Rights` items coalesced
    /// per key (they are absolute states: only the latest counts). Whole entries only.
    pub(crate) fn outbox_batch(&self, from: u64, upto: u64) -> Result<Option<Batch>, StoreError> {
        if from > upto {
            return Ok(None);
        }
        let mut batch = BatchBuilder::default();
        let mut to = None;
        for kv in self
            .db
            .tree(T::Outbox)
            .range(outbox_key(from)..=outbox_key(upto))
        {
            let (key, value) = kv?;
            let seq = seq_of_key(&key)?;
            let entry: OutboxEntry = protocol::decode(&value)?;
            if !batch.try_add(entry.items, to.is_none()) {
                break;
            }
            to = Some(seq);
        }
        Ok(to.map(|to| Batch {
            from,
            to,
            items: batch.items,
        }))
    }

    /// Applies a hub batch: merges its states, stores its records, applies its commands once,
    /// and stores `have[origin] = to` in the same durable write. Returns the seq to acknowledge
    /// (`have` unchanged for a duplicate or a gap).
    #[tracing::instrument(skip_all, fields(origin = %origin, from, to, items = items.len()))]
    pub(crate) fn apply_deltas(
        &self,
        origin: &ReplicaId,
        from: u64,
        to: u64,
        items: Vec<Item>,
    ) -> Result<u64, StoreError> {
        let mut w = self.writer()?;
        let have = w.cursors.have.get(origin).copied().unwrap_or(0);
        if to <= have {
            tracing::debug!(have, "duplicate batch: nothing to do");
            return Ok(have);
        }
        if from > have + 1 {
            tracing::warn!(have, "gap before this batch: asking the hub to rewind");
            return Ok(have);
        }
        let mut ch = Change::new(self, &mut w);
        let mut touched = BTreeSet::new();
        for item in items {
            ch.merge_item(origin, item, &mut touched)?;
        }
        for sku in &touched {
            ch.policy(sku)?;
        }
        ch.cursors.have.insert(origin.clone(), to);
        ch.finish()?;
        Ok(to)
    }

    /// Stores one `Catalog` chunk; when every part of its version is stored, switches to that
    /// version — its categories, products and promotions, in one atomic batch — and returns it.
    /// The version's fingerprint is not known (see [`Store::apply_catalog_part`]).
    pub fn apply_catalog_chunk(
        &self,
        version: u64,
        part: u32,
        parts: u32,
        categories: Vec<Category>,
        promotions: Vec<Promotion>,
        products: Vec<Product>,
    ) -> Result<Option<u64>, StoreError> {
        let chunk = StagedChunk {
            parts,
            categories,
            promotions,
            products,
            fingerprint: String::new(),
        };
        self.apply_catalog_part(version, part, chunk)
    }

    /// [`Store::apply_catalog_chunk`] for a chunk as the hub sent it, with the version's
    /// fingerprint (kept with the version once switched).
    #[tracing::instrument(skip_all, fields(version, part, parts = chunk.parts))]
    pub(crate) fn apply_catalog_part(
        &self,
        version: u64,
        part: u32,
        chunk: StagedChunk,
    ) -> Result<Option<u64>, StoreError> {
        let _guard = self
            .catalog_writer
            .lock()
            .map_err(|_| StoreError::Corrupt("catalog lock poisoned".into()))?;
        self.refuse_if_failed()?;
        // The hub sends a catalog only when the versions differ; after a restore of the hub its
        // version may be lower than this node's, and the node follows it down as well.
        let current = self.catalog().version();
        if version == current || version == 0 {
            return Ok(None);
        }
        let tree = self.db.tree(T::Catalog);
        let mut stage = sled::Batch::default();
        // Chunks of any other version are stale now.
        for key in tree.scan_prefix(b"s").keys() {
            let key = key?;
            if key.get(1..9) != Some(&version.to_be_bytes()[..]) {
                stage.remove(key);
            }
        }
        let parts = chunk.parts.max(1);
        stage.insert(staged_key(version, part), protocol::encode(&chunk)?);
        tree.apply_batch(stage)?;
        let mut prefix = vec![b's'];
        prefix.extend_from_slice(&version.to_be_bytes());
        let staged: Vec<StagedChunk> = tree
            .scan_prefix(&prefix)
            .values()
            .map(|v| Ok(protocol::decode(&v?)?))
            .collect::<Result<_, StoreError>>()?;
        if staged.len() < parts as usize {
            return Ok(None);
        }
        let mut categories: BTreeMap<String, Category> = BTreeMap::new();
        let mut promotions: BTreeMap<PromotionId, Promotion> = BTreeMap::new();
        let mut products: BTreeMap<protocol::ProductId, Product> = BTreeMap::new();
        let mut fingerprint = String::new();
        for c in staged {
            if !c.fingerprint.is_empty() {
                fingerprint = c.fingerprint;
            }
            categories.extend(c.categories.into_iter().map(|c| (c.id.0.clone(), c)));
            promotions.extend(c.promotions.into_iter().map(|p| (p.id.clone(), p)));
            products.extend(c.products.into_iter().map(|p| (p.id, p)));
        }
        let mut switch = sled::Batch::default();
        for key in tree.iter().keys() {
            switch.remove(key?);
        }
        for p in products.values() {
            let mut key = vec![b'p'];
            key.extend_from_slice(&p.id.to_bytes());
            switch.insert(key, protocol::encode(p)?);
        }
        for c in categories.values() {
            let mut key = vec![b'c'];
            key.extend_from_slice(c.id.0.as_bytes());
            switch.insert(key, protocol::encode(c)?);
        }
        for p in promotions.values() {
            let mut key = vec![PROMOTION];
            key.extend_from_slice(p.id.as_str().as_bytes());
            switch.insert(key, protocol::encode(&StoredPromotion(p.clone()))?);
        }
        let meta = CatalogMeta {
            version,
            fingerprint: fingerprint.clone(),
        };
        switch.insert(CATALOG_META, protocol::encode(&meta)?);
        tree.apply_batch(switch)?;
        self.flush_or_fail(&format!("the switch to catalog version {version}"))?;
        let catalog = Catalog::new(
            CatalogSnapshot::new(
                version,
                categories.into_values().collect(),
                products.into_values().collect(),
            ),
            promotions.into_values().collect(),
            fingerprint,
        );
        let live = catalog.promotions.len();
        match self.catalog.write() {
            Ok(mut c) => *c = Arc::new(catalog),
            Err(p) => *p.into_inner() = Arc::new(catalog),
        }
        tracing::info!(
            version,
            previous = current,
            promotions = live,
            "catalog switched"
        );
        Ok(Some(version))
    }

    // ---- coupons ----------------------------------------------------------------------------

    /// The terms of the coupon codes a sale presents, each checked as far as it can be without
    /// the writer lock: normalised (trimmed, upper case, duplicates dropped), known to this node
    /// (public codes the hub sent; a single-use code never is), not ended, not expired at
    /// `now`, and with the customer named when the code is limited per customer. The rights
    /// and the customer's count are checked under the lock ([`Change::redeem_coupon`]).
    fn coupon_terms(
        &self,
        req: &SaleRequest,
        now: time::OffsetDateTime,
    ) -> Result<Vec<CouponTerms>, OpError> {
        if req.coupons.len() > MAX_SALE_COUPONS {
            return Err(OpError::invalid(
                "invalid_coupon",
                format!("a sale takes at most {MAX_SALE_COUPONS} coupon codes"),
            ));
        }
        let now_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let mut out: Vec<CouponTerms> = Vec::new();
        for typed in &req.coupons {
            let code = normalize_coupon(typed);
            if out.iter().any(|t| t.code == code) {
                continue;
            }
            let refuse = |reason: String| {
                Err(OpError::invalid(
                    "invalid_coupon",
                    format!("coupon {}: {reason}", shown(&code)),
                ))
            };
            let Some(stored) = self
                .db
                .get::<StoredCoupon>(T::Records, &coupon_key(&code))?
            else {
                return refuse(
                    "this code is not known at this store; a personal (single-use) code can only be used online".into(),
                );
            };
            if stored.ended {
                return refuse("this coupon has ended".into());
            }
            if stored.terms.expires_at_ms.is_some_and(|e| e <= now_ms) {
                return refuse("this coupon expired".into());
            }
            if let Some(other) = out.iter().find(|t| t.promotion == stored.terms.promotion) {
                return refuse(format!(
                    "it unlocks the same promotion as coupon {}: one is enough",
                    other.code
                ));
            }
            if stored.terms.per_customer.is_some() && req.customer.is_none() {
                return refuse(
                    "this coupon is limited per customer: identify the customer (customer) to use it".into(),
                );
            }
            out.push(stored.terms);
        }
        Ok(out)
    }

    /// The coupon codes this node may redeem, with the redemption rights it holds of each
    /// limited one (`None`: unlimited).
    pub fn coupons(&self) -> Result<Vec<(CouponTerms, bool, Option<u64>)>, StoreError> {
        let mut out = Vec::new();
        for v in self
            .db
            .tree(T::Records)
            .scan_prefix(coupon_key(""))
            .values()
        {
            let stored: StoredCoupon = protocol::decode(&v?)?;
            let held = if stored.terms.limited {
                let key = Scarce::Coupon {
                    code: stored.terms.code.clone(),
                };
                let rights: Option<StoredRights> = self.db.get(T::Stock, &rights_key(&key))?;
                Some(rights.map_or(0, |r| r.state.held(&self.me.replica)))
            } else {
                None
            };
            out.push((stored.terms, stored.ended, held));
        }
        Ok(out)
    }

    // ---- recovery ---------------------------------------------------------------------------

    /// Replays an old journal (of a retired replica of this store): each sale this node does
    /// not have yet is recorded again with its id and number, against this node's rights (units
    /// beyond them become deficit records), and queued to the hub, which dedupes by sale id.
    #[tracing::instrument(skip_all, fields(records = records.len()))]
    pub fn replay(&self, records: Vec<JournalRecord>) -> Result<ReplayReport, OpError> {
        let mut report = ReplayReport::default();
        // What the hub acknowledged before the old node died is on the hub already: replaying it
        // would take its stock a second time.
        let acked = records
            .iter()
            .filter_map(|r| r.acked_upto)
            .max()
            .unwrap_or(0);
        for record in records {
            if record.acked_upto.is_some() {
                continue;
            }
            if record.seq <= acked {
                report.already_synced += 1;
                continue;
            }
            if let Some(r) = record.returned {
                if self.replay_return(r, &record.replica, &mut report)? {
                    report.returns_replayed += 1;
                }
                if record.sale.is_none() {
                    continue;
                }
            }
            let Some(sale) = record.sale else {
                report.skipped.push(format!(
                    "{} deficit record(s) of a stock movement of {} (seq {}): a count at the rebuilt store supersedes them",
                    record.deficits.len(),
                    record.replica,
                    record.seq
                ));
                continue;
            };
            if sale.location != self.me.location {
                report.skipped.push(format!(
                    "sale {} ({}) was made at {}, not at this node's location {}",
                    sale.number, sale.id, sale.location, self.me.location
                ));
                continue;
            }
            let mut w = self.writer()?;
            if self.db.contains(T::Sales, &sale_key(sale.id))? {
                report.already_present += 1;
                continue;
            }
            let mut ch = Change::new(self, &mut w);
            let at = ch.stamp();
            let mut units: BTreeMap<Sku, u64> = BTreeMap::new();
            for line in &sale.lines {
                *units.entry(line.sku.clone()).or_default() += u64::from(line.quantity);
            }
            let mut deficits = Vec::new();
            for (sku, qty) in &units {
                let consumed = ch.take_stock(sku, *qty)?;
                if consumed < *qty {
                    report.deficit_units += qty - consumed;
                    let reason = format!(
                        "replayed from the journal of {}: sold beyond this node's rights",
                        record.replica
                    );
                    deficits.push(
                        ch.deficit(
                            sku,
                            qty - consumed,
                            reason,
                            Some(sale.id),
                            sale.clerk.clone(),
                            &at,
                        )?
                        .id,
                    );
                }
                ch.policy(sku)?;
            }
            let entry = SaleEntry {
                sale,
                deficits,
                replayed_from: Some(record.replica.clone()),
                till: None,
            };
            ch.record_sale(&entry, None)?;
            ch.finish()?;
            report.replayed += 1;
        }
        Ok(report)
    }
}

/// A coupon code as typed, normalised as the hub normalises basket coupons: trimmed, upper case.
pub fn normalize_coupon(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

/// A code as it may be echoed in a message: at most 32 characters, nothing but what codes are
/// made of.
fn shown(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect()
}

fn seq_of_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt("an outbox key is not a seq".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

fn load_catalog(db: &Db) -> Result<Catalog, StoreError> {
    let meta: CatalogMeta = db.get(T::Catalog, CATALOG_META)?.unwrap_or_default();
    let tree = db.tree(T::Catalog);
    let products = tree
        .scan_prefix(b"p")
        .values()
        .map(|v| Ok(protocol::decode::<Product>(&v?)?))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let categories = tree
        .scan_prefix(b"c")
        .values()
        .map(|v| Ok(protocol::decode::<Category>(&v?)?))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let promotions = tree
        .scan_prefix([PROMOTION])
        .values()
        .map(|v| Ok(protocol::decode::<StoredPromotion>(&v?)?.0))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Catalog::new(
        CatalogSnapshot::new(meta.version, categories, products),
        promotions,
        meta.fingerprint,
    ))
}

#[cfg(test)]
mod tests;
