//! The embedded default: sled, one directory, no server.
//!
//! Writes go to one writer thread that **group-commits**: it takes every unit of work waiting in
//! its queue, applies them as one atomic batch per tree, flushes once, and only then acknowledges
//! each. Under load one fsync covers many requests; alone, a request pays one fsync.
//!
//! Point reads (a basket, a session) are direct sled lookups, served from sled's page cache;
//! scans run on the blocking pool.

use super::{
    BasketStore, CatalogStore, Change, Committer, CustomerStore, EventLog, InventoryStore,
    OrderStore, Outbox, Result, Sequenced, Storage, StorageError, UnitOfWork,
};
use async_trait::async_trait;
use protocol::order::{CheckoutRecord, HoldRecord, OrderRecord};
use protocol::{
    codec, Basket, BasketId, Category, CustomerId, CustomerRecord, Event, EventId, OutboxMessage,
    Product, SessionRecord, StockLevel, Stored,
};
use protocol::{CheckoutId, LocationId, OrderId, Sku};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, watch};

mod event_log;
mod oauth;
mod outbox_counts;

/// A staged write: a key and its new value, or `None` to remove it.
type Staged = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Largest number of queued units folded into one group commit.
const MAX_GROUP: usize = 1024;

enum Job {
    Commit(UnitOfWork, oneshot::Sender<Result<()>>),
    /// Events to append; `true`: fresh (see [`event_log::Fresh`]).
    Append(Arc<[Event]>, bool, oneshot::Sender<Result<()>>),
    Rewrite(
        Vec<Sequenced>,
        Option<CustomerId>,
        oneshot::Sender<Result<()>>,
    ),
}

/// The event log's append order: every writer of the events tree (the storage writer, a
/// module committing events in its own transaction) numbers its events under this lock and
/// applies them before letting go, so numbers reach the tree in order; after its flush it
/// publishes the last number, and readers never read past the published one (no gap can
/// appear below it).
#[derive(Clone)]
pub struct EventSequencer(Arc<SequencerState>);

struct SequencerState {
    /// The last number handed out.
    last: Mutex<u64>,
    durable: watch::Sender<u64>,
    /// The storage writer's recent appends, for the readers tailing the log.
    tail: Mutex<Tail>,
}

/// Events kept in memory by [`Tail`]: about a few seconds of peak ingestion, so consumers that
/// keep up (the analyst, the recommender, the experiment counter) read what was just appended
/// without decoding it, each from the same `Arc`s. A consumer further behind reads the log.
const TAIL_EVENTS: usize = 262_144;

/// The storage writer's recent appends as it numbered them, oldest first. Other writers of the
/// log (a module numbering events in its own transaction) leave gaps here: a read stops at a
/// gap and the reader goes to the tree for the rest. Emptied when events are rewritten in
/// place (erasure), so it never answers an event's earlier form.
#[derive(Default)]
struct Tail {
    runs: std::collections::VecDeque<Arc<[Sequenced]>>,
    events: usize,
}

impl Tail {
    fn push(&mut self, run: Vec<Sequenced>) {
        if run.is_empty() {
            return;
        }
        self.events += run.len();
        self.runs.push_back(run.into());
        while self.events > TAIL_EVENTS && self.runs.len() > 1 {
            if let Some(old) = self.runs.pop_front() {
                self.events -= old.len();
            }
        }
    }

    fn clear(&mut self) {
        self.runs.clear();
        self.events = 0;
    }

    /// Up to `limit` events from `after + 1` through `upto` without a gap, if the tail holds
    /// `after + 1` (an empty answer otherwise).
    fn read(&self, after: u64, upto: u64, limit: usize) -> super::SharedEvents {
        let mut out = super::SharedEvents::default();
        let mut next = after + 1;
        // Runs are in append order and each is consecutive (`run[i].seq == run[0].seq + i`).
        let from = self
            .runs
            .partition_point(|run| run.last().is_some_and(|s| s.seq < next));
        for run in self.runs.iter().skip(from) {
            let first = run[0].seq;
            if first > next || next > upto || out.len() == limit {
                break;
            }
            let start = (next - first) as usize;
            let room = (limit - out.len()) as u64;
            let last = run[run.len() - 1].seq.min(upto).min(next + room - 1);
            let end = start + (last + 1 - next) as usize;
            out.push(run.clone(), start..end);
            next = last + 1;
        }
        out
    }
}

/// Holds the append order while a writer numbers and applies its events.
pub struct SequenceLock<'a> {
    last: MutexGuard<'a, u64>,
    start: u64,
    numbered: HashSet<EventId>,
}

impl EventSequencer {
    fn open(db: &sled::Db, events: &sled::Tree) -> Result<EventSequencer> {
        event_log::convert_old_layout(db, events)?;
        let last = event_log::last_sequence(events)?;
        Ok(EventSequencer(Arc::new(SequencerState {
            last: Mutex::new(last),
            durable: watch::channel(last).0,
            tail: Mutex::new(Tail::default()),
        })))
    }

    /// Takes the append order (other writers of the log wait until the lock is dropped).
    pub fn lock(&self) -> SequenceLock<'_> {
        let last = self.0.last.lock().unwrap_or_else(|p| p.into_inner());
        let start = *last;
        SequenceLock {
            last,
            start,
            numbered: HashSet::new(),
        }
    }

    /// Announces that every event up to `last` is durable (call after the flush).
    pub fn published(&self, last: u64) {
        self.0.durable.send_if_modified(|v| {
            let newer = last > *v;
            if newer {
                *v = last;
            }
            newer
        });
    }

    fn durable(&self) -> u64 {
        *self.0.durable.borrow()
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.0.tail.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SequenceLock<'_> {
    /// The log entries for `events`, numbered in order: the chunks, the id index and the
    /// timelines. An event already in `log` (or numbered before under this lock) gets none, so
    /// appending twice is harmless.
    pub fn number(
        &mut self,
        log: &sled::Tree,
        events: &[Event],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.number_with(log, events.to_vec(), &event_log::Fresh::NONE)
            .map(|(entries, _)| entries)
    }

    /// [`SequenceLock::number`] of owned events where `fresh` marks the events that need no id
    /// index; also answers the events it numbered.
    fn number_with(
        &mut self,
        log: &sled::Tree,
        events: Vec<Event>,
        fresh: &event_log::Fresh<'_>,
    ) -> Result<(event_log::Entries, Vec<Sequenced>)> {
        event_log::number(log, &mut self.last, &mut self.numbered, events, fresh)
    }

    /// Takes back the numbers handed out under this lock (their write failed).
    pub fn undo(&mut self) {
        *self.last = self.start;
        self.numbered.clear();
    }

    /// The last number handed out.
    pub fn last(&self) -> u64 {
        *self.last
    }
}

/// Sled storage with a group-committing writer.
pub struct SledStorage {
    db: sled::Db,
    entities: sled::Tree,
    events: sled::Tree,
    writer: mpsc::Sender<Job>,
    running: Arc<AtomicBool>,
    sequencer: EventSequencer,
    /// Pending and dead outbox messages per destination, kept by the writer.
    outbox_counts: Arc<outbox_counts::OutboxCounts>,
}

fn io(e: sled::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

fn key(prefix: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 1 + rest.len());
    k.extend_from_slice(prefix.as_bytes());
    k.push(b'/');
    k.extend_from_slice(rest);
    k
}

fn stock_key(level: &StockLevel) -> Vec<u8> {
    let mut rest = level.location.0.as_bytes().to_vec();
    rest.push(0);
    rest.extend_from_slice(level.sku.as_str().as_bytes());
    key("stock", &rest)
}

fn outbox_space_key(space: &str, destination: &str, id: ulid::Ulid) -> Vec<u8> {
    let mut rest = destination.as_bytes().to_vec();
    rest.push(0);
    rest.extend_from_slice(&id.0.to_be_bytes());
    key(space, &rest)
}

fn outbox_key(destination: &str, id: ulid::Ulid) -> Vec<u8> {
    outbox_space_key("outbox", destination, id)
}

fn hold_key(checkout: CheckoutId, location: &LocationId, sku: &Sku) -> Vec<u8> {
    let mut rest = checkout.to_bytes().to_vec();
    rest.extend_from_slice(location.0.as_bytes());
    rest.push(0);
    rest.extend_from_slice(sku.as_str().as_bytes());
    key("hold", &rest)
}

fn customer_order_key(customer: CustomerId, order: OrderId) -> Vec<u8> {
    let mut rest = customer.to_bytes().to_vec();
    rest.extend_from_slice(&order.to_bytes());
    key("ocust", &rest)
}

fn id_from(bytes: &[u8]) -> Option<ulid::Ulid> {
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|b| ulid::Ulid(u128::from_be_bytes(b)))
}

fn timeline_key(customer: CustomerId, event: EventId) -> Vec<u8> {
    let mut rest = customer.to_bytes().to_vec();
    rest.extend_from_slice(&event.to_bytes());
    key("t", &rest)
}

/// Follows an index: every key under `index` (newest first with `newest_first`) names, after the
/// prefix, the key of an entity under `entity`; answers up to `limit` of those entities.
async fn follow_index<T: Stored + Send + 'static>(
    tree: sled::Tree,
    index: Vec<u8>,
    entity: &'static str,
    newest_first: bool,
    limit: usize,
) -> Result<Vec<T>> {
    tokio::task::spawn_blocking(move || {
        let scan = tree.scan_prefix(&index);
        let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if newest_first
        {
            Box::new(scan.rev())
        } else {
            Box::new(scan)
        };
        let mut out = Vec::new();
        for kv in keys.take(limit) {
            let (k, _) = kv.map_err(io)?;
            if let Some(v) = tree.get(key(entity, &k[index.len()..])).map_err(io)? {
                out.push(codec::decode::<T>(&v)?);
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| StorageError::Io(e.to_string()))?
}

fn decode_opt<T: Stored>(value: Option<sled::IVec>) -> Result<Option<T>> {
    value
        .map(|v| codec::decode::<T>(&v))
        .transpose()
        .map_err(StorageError::from)
}

impl SledStorage {
    /// Opens (or creates) the database in `dir`. `cache_mb` bounds sled's page cache.
    pub fn open(dir: &Path, cache_mb: u64) -> Result<Arc<SledStorage>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_mb * 1024 * 1024)
            .open()
            .map_err(io)?;
        let entities = db.open_tree("entities").map_err(io)?;
        // A secret for signed links, made at the first start and kept with the data.
        let secret_key = key("meta", b"link_secret");
        if !entities.contains_key(&secret_key).map_err(io)? {
            let mut secret = [0u8; 32];
            getrandom::getrandom(&mut secret)
                .map_err(|e| StorageError::Io(format!("no randomness for the link secret: {e}")))?;
            entities.insert(secret_key, secret.to_vec()).map_err(io)?;
            entities.flush().map_err(io)?;
        }
        let events = db.open_tree("events").map_err(io)?;
        let sequencer = EventSequencer::open(&db, &events)?;
        let outbox_counts = Arc::new(outbox_counts::OutboxCounts::scan(&entities)?);
        let (tx, rx) = mpsc::channel();
        let running = Arc::new(AtomicBool::new(true));
        let mut writer = Writer {
            retried: HashSet::new(),
            db: db.clone(),
            entities: entities.clone(),
            events: events.clone(),
            sequencer: sequencer.clone(),
            outbox_counts: outbox_counts.clone(),
        };
        let flag = running.clone();
        std::thread::Builder::new()
            .name("sled-writer".into())
            .spawn(move || {
                writer.run(rx);
                flag.store(false, Ordering::SeqCst);
            })
            .map_err(|e| StorageError::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(Arc::new(SledStorage {
            db,
            entities,
            events,
            writer: tx,
            running,
            sequencer,
            outbox_counts,
        }))
    }

    /// The event log's append order, for a module that writes events in its own transaction
    /// (see [`SledStorage::module_trees`]): number them under its lock, apply, flush, publish.
    pub fn event_sequencer(&self) -> EventSequencer {
        self.sequencer.clone()
    }

    /// The database, a tree of another hub module's own (e.g. the edge replica state) and the
    /// event log's tree, for a module that commits its changes with the events they cause in one
    /// sled transaction of its own. Event entries for that tree come from [`event_entries`].
    pub fn module_trees(&self, name: &str) -> Result<(sled::Db, sled::Tree, sled::Tree)> {
        let own = self.db.open_tree(name).map_err(io)?;
        Ok((self.db.clone(), own, self.events.clone()))
    }

    /// The hub modules' own trees in this database (`super::kv`): the same sled trees, byte
    /// for byte, that [`SledStorage::module_trees`] opens.
    pub fn keyspace(&self) -> super::kv::Keyspace {
        super::kv::Keyspace::sled(self.db.clone())
    }

    /// The token hashes of a customer's sessions (a scan: for erasure, which is rare).
    pub async fn sessions_of(&self, customer: CustomerId) -> Result<Vec<[u8; 32]>> {
        let tree = self.entities.clone();
        tokio::task::spawn_blocking(move || {
            let prefix = key("session", &[]);
            let mut out = Vec::new();
            for kv in tree.scan_prefix(&prefix) {
                let (k, v) = kv.map_err(io)?;
                let session: SessionRecord = codec::decode(&v)?;
                if let (true, Ok(hash)) = (
                    session.customer == customer,
                    <[u8; 32]>::try_from(&k[prefix.len()..]),
                ) {
                    out.push(hash);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Io(e.to_string()))?
    }

    /// Flushes everything to disk (on shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(io)
    }

    fn get<T: Stored>(&self, k: &[u8]) -> Result<Option<T>> {
        decode_opt(self.entities.get(k).map_err(io)?)
    }

    async fn submit(&self, make: impl FnOnce(oneshot::Sender<Result<()>>) -> Job) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    async fn scan<T: Stored + Send + 'static>(&self, prefix: &'static str) -> Result<Vec<T>> {
        let tree = self.entities.clone();
        tokio::task::spawn_blocking(move || {
            tree.scan_prefix(key(prefix, &[]))
                .map(|kv| {
                    kv.map_err(io)
                        .and_then(|(_, v)| codec::decode::<T>(&v).map_err(StorageError::from))
                })
                .collect()
        })
        .await
        .map_err(|e| StorageError::Io(e.to_string()))?
    }
}

struct Writer {
    /// Fresh events applied whose flush failed (their append answered an error, so the
    /// recorder sends them again): a retry keeps their first sequence. Rare; kept for the
    /// process's life, as the recorder's buffer is.
    retried: HashSet<EventId>,
    db: sled::Db,
    entities: sled::Tree,
    events: sled::Tree,
    sequencer: EventSequencer,
    outbox_counts: Arc<outbox_counts::OutboxCounts>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    /// Applies a group as one batch per tree, flushes once, then answers every job.
    fn commit_group(&mut self, group: Vec<Job>) {
        let mut entity_batch = sled::Batch::default();
        let mut event_batch = sled::Batch::default();
        let mut claimed: HashSet<Vec<u8>> = HashSet::new();
        let mut answers: Vec<(oneshot::Sender<Result<()>>, Result<()>)> =
            Vec::with_capacity(group.len());
        // The events the group appends, in order, for their sequence numbers.
        let mut appended: Vec<Event> = Vec::new();
        let mut fresh: Vec<bool> = Vec::new();
        let mut touched = outbox_counts::Touched::default();
        for job in group {
            match job {
                Job::Commit(unit, reply) => {
                    let staged = self.stage_unit(&unit, &mut claimed);
                    if let Ok(ops) = staged.as_ref() {
                        for (k, v) in ops {
                            touched.note(&self.entities, k);
                            match v {
                                Some(v) => entity_batch.insert(k.as_slice(), v.as_slice()),
                                None => entity_batch.remove(k.as_slice()),
                            }
                        }
                        appended.extend(unit.events.iter().cloned());
                        fresh.resize(appended.len(), false);
                    }
                    answers.push((reply, staged.map(|_| ())));
                }
                Job::Append(events, is_fresh, reply) => {
                    appended.extend(events.iter().cloned());
                    fresh.resize(appended.len(), is_fresh);
                    answers.push((reply, Ok(())));
                }
                Job::Rewrite(events, forget, reply) => {
                    // The tail must not answer these events' earlier form.
                    self.sequencer.tail().clear();
                    let staged = event_log::rewrite(&self.events, &events, forget);
                    if let Ok(ops) = &staged {
                        for (k, v) in ops {
                            match v {
                                Some(v) => event_batch.insert(k.clone(), v.clone()),
                                None => event_batch.remove(k.clone()),
                            }
                        }
                    }
                    answers.push((reply, staged.map(|_| ())));
                }
            }
        }
        let mut order = self.sequencer.lock();
        let numbered = self.pseudonymise_erased(&mut appended).and_then(|()| {
            let fresh = event_log::Fresh {
                flags: &fresh,
                retried: Some(&self.retried),
            };
            order.number_with(&self.events, appended, &fresh)
        });
        let (applied, kept) = match numbered {
            Ok((numbers, kept)) => {
                for (k, v) in numbers {
                    event_batch.insert(k, v);
                }
                let applied = self
                    .entities
                    .apply_batch(entity_batch)
                    .and_then(|_| self.events.apply_batch(event_batch));
                (applied, kept)
            }
            Err(e) => {
                for (reply, _) in answers {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let applied_ok = applied.is_ok();
        if !applied_ok {
            order.undo();
        } else {
            touched.settle(&self.entities, &self.outbox_counts);
        }
        let last = order.last();
        drop(order);
        // Crash tests stop the process here: applied in memory, not yet flushed, nothing acked.
        fail::fail_point!("sled.before_flush", |_| std::process::abort());
        let flush_started = std::time::Instant::now();
        let written = applied
            .and_then(|_| self.db.flush().map(|_| ()))
            .map_err(io);
        let m = crate::monitor::metrics::metrics();
        m.storage_flush
            .observe(flush_started.elapsed().as_secs_f64());
        m.storage_group.observe(answers.len() as f64);
        if written.is_ok() {
            // Into the tail before the readers learn of them.
            self.sequencer.tail().push(kept);
            self.sequencer.published(last);
        } else if applied_ok {
            // Applied but not flushed: the events are in the tree; a retry of the fresh ones
            // must not number them again (the others are found by the id index anyway).
            self.retried.extend(kept.iter().map(|s| s.event.id));
        }
        for (reply, staged) in answers {
            let outcome = match (&written, staged) {
                (_, Err(e)) => Err(e),
                (Err(e), Ok(())) => Err(e.clone()),
                (Ok(()), Ok(())) => Ok(()),
            };
            let _ = reply.send(outcome);
        }
    }

    /// Events of an erased customer (a late event, or one recorded while the erasure ran) are
    /// stored pseudonymised, under the customer's pseudonym ([`Change::MarkErased`]).
    fn pseudonymise_erased(&self, events: &mut [Event]) -> Result<()> {
        for e in events.iter_mut() {
            let protocol::Subject::Customer(c) = e.subject else {
                continue;
            };
            let Some(raw) = self
                .entities
                .get(key("erased", &c.to_bytes()))
                .map_err(io)?
            else {
                continue;
            };
            let Ok(bytes) = <[u8; 16]>::try_from(raw.as_ref()) else {
                continue;
            };
            let pseudonym = protocol::AnonymousId(ulid::Ulid(u128::from_be_bytes(bytes)));
            *e = protocol::privacy::pseudonymised(e.clone(), pseudonym);
        }
        Ok(())
    }

    /// Encodes a unit's changes into key/value operations after checking its preconditions;
    /// nothing of a unit that fails is staged.
    fn stage_unit(&self, unit: &UnitOfWork, claimed: &mut HashSet<Vec<u8>>) -> Result<Staged> {
        let mut ops = Vec::with_capacity(unit.changes.len() + unit.outbox.len());
        let mut new_claims = Vec::new();
        for change in &unit.changes {
            let op = match change {
                Change::PutBasket(b) => (key("basket", &b.id.to_bytes()), Some(codec::encode(b)?)),
                Change::PutBasketToken { token_hash, basket } => {
                    (key("btoken", token_hash), Some(basket.to_bytes().to_vec()))
                }
                Change::PutCustomer(c) => {
                    (key("customer", &c.id.to_bytes()), Some(codec::encode(c)?))
                }
                Change::ClaimEmail { email, customer } => {
                    let k = key("email", email.as_bytes());
                    let taken =
                        claimed.contains(&k) || self.entities.contains_key(&k).map_err(io)?;
                    if taken {
                        return Err(StorageError::Conflict(format!(
                            "email {email} is already registered"
                        )));
                    }
                    new_claims.push(k.clone());
                    (k, Some(customer.to_bytes().to_vec()))
                }
                Change::ClaimAlias { alias, customer } => {
                    let k = key("alias", &alias.key_bytes());
                    let mine = customer.to_bytes();
                    let held_by_other = match self.entities.get(&k).map_err(io)? {
                        Some(v) => v.as_ref() != mine.as_slice(),
                        None => false,
                    };
                    if claimed.contains(&k) || held_by_other {
                        let what = match alias {
                            super::CustomerAlias::Phone(_) => "phone number",
                            super::CustomerAlias::Loyalty(_) => "loyalty number",
                        };
                        return Err(StorageError::Conflict(format!(
                            "this {what} belongs to another customer"
                        )));
                    }
                    new_claims.push(k.clone());
                    (k, Some(mine.to_vec()))
                }
                Change::ReleaseAlias(alias) => (key("alias", &alias.key_bytes()), None),
                Change::ReleaseEmail(email) => (key("email", email.as_bytes()), None),
                Change::PutSession {
                    token_hash,
                    session,
                } => (key("session", token_hash), Some(codec::encode(session)?)),
                Change::DeleteSession { token_hash } => (key("session", token_hash), None),
                Change::PutStock(level) | Change::SwapStock { level, .. } => {
                    (stock_key(level), Some(codec::encode(level)?))
                }
                Change::PutCategory(c) => {
                    (key("category", c.id.0.as_bytes()), Some(codec::encode(c)?))
                }
                Change::PutProduct(p) => {
                    (key("product", &p.id.to_bytes()), Some(codec::encode(p)?))
                }
                Change::DeleteProduct(id) => (key("product", &id.to_bytes()), None),
                Change::PutCheckout(c) => {
                    let open = key("ocheckout", &c.id.to_bytes());
                    ops.push((open, c.state.is_open().then(Vec::new)));
                    (key("checkout", &c.id.to_bytes()), Some(codec::encode(c)?))
                }
                Change::PutHold(h) => (
                    hold_key(h.checkout, &h.location, &h.sku),
                    Some(codec::encode(h)?),
                ),
                Change::DeleteHold {
                    checkout,
                    sku,
                    location,
                } => (hold_key(*checkout, location, sku), None),
                Change::CreateOrder(o) => {
                    let claim = key("corder", &o.checkout.to_bytes());
                    let taken = claimed.contains(&claim)
                        || self.entities.contains_key(&claim).map_err(io)?;
                    if taken {
                        return Err(StorageError::Conflict(format!(
                            "checkout {} already has an order",
                            o.checkout
                        )));
                    }
                    new_claims.push(claim.clone());
                    ops.push((claim, Some(o.id.to_bytes().to_vec())));
                    ops.push((
                        key("onum", o.number.as_bytes()),
                        Some(o.id.to_bytes().to_vec()),
                    ));
                    if let Some(c) = o.customer {
                        ops.push((customer_order_key(c, o.id), Some(Vec::new())));
                    }
                    ops.push((key("odue", &o.id.to_bytes()), o.owes().then(Vec::new)));
                    (key("order", &o.id.to_bytes()), Some(codec::encode(o)?))
                }
                Change::PutOrder(o) => {
                    ops.push((key("odue", &o.id.to_bytes()), o.owes().then(Vec::new)));
                    (key("order", &o.id.to_bytes()), Some(codec::encode(o)?))
                }
                Change::MarkWebhookEvent(id) => (key("whevent", id.as_bytes()), Some(Vec::new())),
                Change::PutImportMarks(m) => (
                    key("impmarks", &m.id.0.to_be_bytes()),
                    Some(codec::encode(m)?),
                ),
                Change::AckOutbox { destination, id } => (outbox_key(destination, *id), None),
                Change::PutOutbox(m) => (outbox_key(&m.destination, m.id), Some(codec::encode(m)?)),
                Change::DeadLetter(m) => {
                    ops.push((outbox_key(&m.destination, m.id), None));
                    (
                        outbox_space_key("outdead", &m.destination, m.id),
                        Some(codec::encode(m)?),
                    )
                }
                Change::RetryDeadLetter(m) => {
                    ops.push((outbox_space_key("outdead", &m.destination, m.id), None));
                    (outbox_key(&m.destination, m.id), Some(codec::encode(m)?))
                }
                Change::DiscardDeadLetter { destination, id } => {
                    (outbox_space_key("outdead", destination, *id), None)
                }
                Change::MarkErased {
                    customer,
                    pseudonym,
                } => (
                    key("erased", &customer.to_bytes()),
                    Some(pseudonym.to_bytes().to_vec()),
                ),
                Change::PutPendingReminder(r) => (
                    key("preminder", &r.customer.to_bytes()),
                    Some(codec::encode(r)?),
                ),
                Change::OAuth(change) => {
                    ops.extend(oauth::stage(
                        &self.entities,
                        change,
                        claimed,
                        &mut new_claims,
                    )?);
                    continue;
                }
            };
            ops.push(op);
        }
        for message in &unit.outbox {
            // Queued once per key: a message whose key was queued before is left out (not an
            // error: the unit's other changes stand).
            if !message.key.is_empty() {
                let k = key("okey", message.key.as_bytes());
                if claimed.contains(&k) || self.entities.contains_key(&k).map_err(io)? {
                    continue;
                }
                new_claims.push(k.clone());
                ops.push((k, Some(message.id.0.to_be_bytes().to_vec())));
            }
            ops.push((
                outbox_key(&message.destination, message.id),
                Some(codec::encode(message)?),
            ));
        }
        claimed.extend(new_claims);
        Ok(ops)
    }
}

#[async_trait]
impl Committer for SledStorage {
    async fn commit(&self, unit: UnitOfWork) -> Result<()> {
        self.submit(|tx| Job::Commit(unit, tx)).await
    }
}

#[async_trait]
impl BasketStore for SledStorage {
    async fn basket(&self, id: BasketId) -> Result<Option<Basket>> {
        self.get(&key("basket", &id.to_bytes()))
    }

    async fn basket_for_token(&self, token_hash: [u8; 32]) -> Result<Option<BasketId>> {
        let raw = self.entities.get(key("btoken", &token_hash)).map_err(io)?;
        Ok(raw
            .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok())
            .map(|b| BasketId(ulid::Ulid(u128::from_be_bytes(b)))))
    }

    async fn pending_reminders(&self) -> Result<Vec<protocol::automation::PendingReminder>> {
        self.scan("preminder").await
    }

    async fn clear_pending_reminder(
        &self,
        reminder: &protocol::automation::PendingReminder,
    ) -> Result<()> {
        let k = key("preminder", &reminder.customer.to_bytes());
        let expected = codec::encode(reminder)?;
        // Only the reminder that was armed: a newer basket change wrote another, which stays
        // for its own arming. Not flushed: a clear lost in a crash only re-arms the same timer.
        let _ = self
            .entities
            .compare_and_swap(k, Some(expected), None as Option<&[u8]>)
            .map_err(io)?;
        Ok(())
    }
}

#[async_trait]
impl CustomerStore for SledStorage {
    async fn sessions_of(&self, customer: CustomerId) -> Result<Vec<[u8; 32]>> {
        SledStorage::sessions_of(self, customer).await
    }

    async fn customer(&self, id: CustomerId) -> Result<Option<CustomerRecord>> {
        self.get(&key("customer", &id.to_bytes()))
    }

    async fn customer_by_email(&self, email: &str) -> Result<Option<CustomerRecord>> {
        let raw = self
            .entities
            .get(key("email", email.as_bytes()))
            .map_err(io)?;
        match raw.and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok()) {
            Some(b) => {
                self.customer(CustomerId(ulid::Ulid(u128::from_be_bytes(b))))
                    .await
            }
            None => Ok(None),
        }
    }

    async fn customer_by_alias(
        &self,
        alias: &super::CustomerAlias,
    ) -> Result<Option<CustomerRecord>> {
        let raw = self
            .entities
            .get(key("alias", &alias.key_bytes()))
            .map_err(io)?;
        match raw.and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok()) {
            Some(b) => {
                self.customer(CustomerId(ulid::Ulid(u128::from_be_bytes(b))))
                    .await
            }
            None => Ok(None),
        }
    }

    async fn session(&self, token_hash: [u8; 32]) -> Result<Option<SessionRecord>> {
        self.get(&key("session", &token_hash))
    }

    async fn link_secret(&self) -> Result<[u8; 32]> {
        let raw = self
            .entities
            .get(key("meta", b"link_secret"))
            .map_err(io)?
            .ok_or_else(|| StorageError::Io("the link secret is missing".into()))?;
        <[u8; 32]>::try_from(raw.as_ref())
            .map_err(|_| StorageError::Io("the link secret is damaged".into()))
    }
}

#[async_trait]
impl CatalogStore for SledStorage {
    async fn catalog(&self) -> Result<(Vec<Category>, Vec<Product>)> {
        Ok((self.scan("category").await?, self.scan("product").await?))
    }
}

#[async_trait]
impl InventoryStore for SledStorage {
    async fn stock_levels(&self) -> Result<Vec<StockLevel>> {
        self.scan("stock").await
    }

    async fn import_marks(&self) -> Result<Vec<super::ImportMarks>> {
        self.scan("impmarks").await
    }
}

#[async_trait]
impl OrderStore for SledStorage {
    async fn checkout(&self, id: CheckoutId) -> Result<Option<CheckoutRecord>> {
        self.get(&key("checkout", &id.to_bytes()))
    }

    async fn open_checkouts(&self, limit: usize) -> Result<Vec<CheckoutRecord>> {
        let index = key("ocheckout", &[]);
        follow_index(self.entities.clone(), index, "checkout", false, limit).await
    }

    async fn holds(&self) -> Result<Vec<HoldRecord>> {
        self.scan("hold").await
    }

    async fn order(&self, id: OrderId) -> Result<Option<OrderRecord>> {
        self.get(&key("order", &id.to_bytes()))
    }

    async fn order_by_number(&self, number: &str) -> Result<Option<OrderRecord>> {
        let raw = self
            .entities
            .get(key("onum", number.as_bytes()))
            .map_err(io)?;
        match raw.and_then(|v| id_from(&v)) {
            Some(id) => self.order(OrderId(id)).await,
            None => Ok(None),
        }
    }

    async fn order_for_checkout(&self, checkout: CheckoutId) -> Result<Option<OrderId>> {
        let raw = self
            .entities
            .get(key("corder", &checkout.to_bytes()))
            .map_err(io)?;
        Ok(raw.and_then(|v| id_from(&v)).map(OrderId))
    }

    async fn orders_of(&self, customer: CustomerId, limit: usize) -> Result<Vec<OrderRecord>> {
        let index = key("ocust", &customer.to_bytes());
        follow_index(self.entities.clone(), index, "order", true, limit).await
    }

    async fn orders(&self, before: Option<OrderId>, limit: usize) -> Result<Vec<OrderRecord>> {
        let tree = self.entities.clone();
        tokio::task::spawn_blocking(move || {
            let start = key("order", &[]);
            let end = match before {
                Some(id) => key("order", &id.to_bytes()),
                None => key("order", &[0xff; 17]),
            };
            tree.range(start..end)
                .rev()
                .take(limit)
                .map(|kv| {
                    kv.map_err(io).and_then(|(_, v)| {
                        codec::decode::<OrderRecord>(&v).map_err(StorageError::from)
                    })
                })
                .collect()
        })
        .await
        .map_err(|e| StorageError::Io(e.to_string()))?
    }

    async fn last_order_sequence(&self, prefix: &str) -> Result<u64> {
        let tree = self.entities.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let scan = key("onum", format!("{prefix}-").as_bytes());
            let mut last = 0;
            for kv in tree.scan_prefix(&scan) {
                let (k, _) = kv.map_err(io)?;
                let number = String::from_utf8_lossy(&k[key("onum", &[]).len()..]).into_owned();
                if let Some(n) = protocol::order::order_sequence(&number, &prefix) {
                    last = last.max(n);
                }
            }
            Ok(last)
        })
        .await
        .map_err(|e| StorageError::Io(e.to_string()))?
    }

    async fn orders_owing_work(&self, limit: usize) -> Result<Vec<OrderRecord>> {
        let index = key("odue", &[]);
        follow_index(self.entities.clone(), index, "order", false, limit).await
    }

    async fn webhook_seen(&self, event_id: &str) -> Result<bool> {
        self.entities
            .contains_key(key("whevent", event_id.as_bytes()))
            .map_err(io)
    }
}

#[async_trait]
impl EventLog for SledStorage {
    async fn append(&self, events: Arc<[Event]>) -> Result<()> {
        self.submit(|tx| Job::Append(events, false, tx)).await
    }

    async fn append_fresh(&self, events: Arc<[Event]>) -> Result<()> {
        self.submit(|tx| Job::Append(events, true, tx)).await
    }

    async fn timeline(&self, customer: CustomerId, limit: usize) -> Result<Vec<Event>> {
        let tree = self.events.clone();
        blocking(move || event_log::timeline(&tree, customer, limit)).await
    }

    async fn read_sequenced(&self, after: u64, limit: usize) -> Result<Vec<Sequenced>> {
        let upto = self.sequencer.durable();
        if after >= upto {
            return Ok(Vec::new());
        }
        let tree = self.events.clone();
        blocking(move || event_log::read_sequenced(&tree, after, upto, limit)).await
    }

    async fn read_shared(&self, after: u64, limit: usize) -> Result<super::SharedEvents> {
        let upto = self.sequencer.durable();
        if after >= upto || limit == 0 {
            return Ok(super::SharedEvents::default());
        }
        let recent = self.sequencer.tail().read(after, upto, limit);
        if !recent.is_empty() {
            return Ok(recent);
        }
        let tree = self.events.clone();
        Ok(
            blocking(move || event_log::read_sequenced(&tree, after, upto, limit))
                .await?
                .into(),
        )
    }

    fn appended(&self) -> watch::Receiver<u64> {
        self.sequencer.0.durable.subscribe()
    }

    async fn rewrite(&self, events: Vec<Sequenced>, forget: Option<CustomerId>) -> Result<()> {
        self.submit(|tx| Job::Rewrite(events, forget, tx)).await
    }
}

/// Runs a blocking read on the blocking pool.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| StorageError::Io(e.to_string()))?
}

/// Scans the messages under one destination of an outbox tree (`outbox` or `outdead`).
fn scan_outbox(
    tree: &sled::Tree,
    space: &str,
    destination: &str,
    limit: usize,
) -> Result<Vec<OutboxMessage>> {
    let mut prefix = key(space, destination.as_bytes());
    prefix.push(0);
    tree.scan_prefix(prefix)
        .take(limit)
        .map(|kv| {
            kv.map_err(io)
                .and_then(|(_, v)| codec::decode(&v).map_err(StorageError::from))
        })
        .collect()
}

#[async_trait]
impl Outbox for SledStorage {
    async fn pending(&self, destination: &str, limit: usize) -> Result<Vec<OutboxMessage>> {
        let tree = self.entities.clone();
        let destination = destination.to_string();
        tokio::task::spawn_blocking(move || scan_outbox(&tree, "outbox", &destination, limit))
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?
    }

    async fn dead_letters(&self, destination: &str, limit: usize) -> Result<Vec<OutboxMessage>> {
        let tree = self.entities.clone();
        let destination = destination.to_string();
        tokio::task::spawn_blocking(move || scan_outbox(&tree, "outdead", &destination, limit))
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?
    }

    async fn dead_letter(
        &self,
        destination: &str,
        id: ulid::Ulid,
    ) -> Result<Option<OutboxMessage>> {
        self.get(&outbox_space_key("outdead", destination, id))
    }

    /// From the writer's counts, plus one read per destination for its oldest message: no
    /// scan of the backlog.
    async fn backlog(&self) -> Result<std::collections::BTreeMap<String, super::OutboxBacklog>> {
        let mut out = std::collections::BTreeMap::new();
        for (destination, counts) in self.outbox_counts.all() {
            let oldest = if counts.pending > 0 {
                let prefix = outbox_space_key(outbox_counts::PENDING, &destination, ulid::Ulid(0));
                // Keys are in id (time) order: the first under the prefix is the oldest.
                let prefix = &prefix[..prefix.len() - 16];
                match self.entities.scan_prefix(prefix).next() {
                    Some(kv) => {
                        let (_, v) = kv.map_err(io)?;
                        Some(codec::decode::<OutboxMessage>(&v)?.created_at)
                    }
                    None => None,
                }
            } else {
                None
            };
            out.insert(
                destination,
                super::OutboxBacklog {
                    pending: counts.pending,
                    dead: counts.dead,
                    oldest,
                },
            );
        }
        Ok(out)
    }
}

impl Storage for SledStorage {
    fn healthy(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{AnonymousId, Channel, EventKind, Subject};

    fn run(first: u64, n: usize) -> Vec<Sequenced> {
        let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid time");
        (0..n)
            .map(|i| Sequenced {
                seq: first + i as u64,
                event: Event::new(
                    at,
                    Subject::Anonymous(AnonymousId::new()),
                    Channel::Web,
                    EventKind::ProductView,
                ),
            })
            .collect()
    }

    fn seqs(read: &super::super::SharedEvents) -> Vec<u64> {
        read.iter().map(|s| s.seq).collect()
    }

    #[test]
    fn the_tail_answers_consecutive_events_and_stops_at_a_gap_a_limit_or_the_durable_end() {
        let mut tail = Tail::default();
        tail.push(run(1, 10));
        tail.push(run(11, 5));
        // 16..=20 were numbered by another writer of the log: not here.
        tail.push(run(21, 10));
        assert_eq!(seqs(&tail.read(0, 100, 100)), (1..=15).collect::<Vec<_>>());
        assert_eq!(seqs(&tail.read(7, 100, 4)), vec![8, 9, 10, 11]);
        assert_eq!(seqs(&tail.read(7, 12, 100)), vec![8, 9, 10, 11, 12]);
        assert!(
            tail.read(15, 100, 100).is_empty(),
            "the gap is read from the log"
        );
        assert_eq!(
            seqs(&tail.read(20, 100, 100)),
            (21..=30).collect::<Vec<_>>()
        );
        assert_eq!(tail.read(24, 100, 100).last().map(|s| s.seq), Some(30));
        assert!(tail.read(30, 100, 100).is_empty());
        assert!(
            tail.read(5, 5, 100).is_empty(),
            "nothing past the durable end"
        );
        assert_eq!(tail.read(0, 100, 100).len(), 15);
    }

    #[test]
    fn the_tail_keeps_its_newest_events_within_its_bound_and_empties_on_a_rewrite() {
        let mut tail = Tail::default();
        let per = TAIL_EVENTS / 4;
        for i in 0..6u64 {
            tail.push(run(1 + i * per as u64, per));
        }
        assert!(tail.events <= TAIL_EVENTS);
        assert!(tail.read(0, u64::MAX, 10).is_empty(), "the oldest went");
        let last = 6 * per as u64;
        assert_eq!(
            seqs(&tail.read(last - 3, last, 10)),
            vec![last - 2, last - 1, last]
        );
        tail.clear();
        assert!(tail.read(last - 3, last, 10).is_empty());
    }

    #[tokio::test]
    async fn shared_reads_give_what_the_log_gives_from_the_tail_and_from_the_tree() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let storage = SledStorage::open(dir.path(), 16).expect("opened");
        let mut all = Vec::new();
        for n in [300, 1, 700] {
            let batch: Vec<Event> = run(0, n).into_iter().map(|s| s.event).collect();
            all.extend(batch.clone());
            storage.append_fresh(batch.into()).await.expect("appended");
        }
        for (after, limit) in [(0, 5_000), (0, 10), (299, 3), (301, 1_000), (1_000, 10)] {
            let want = storage.read_sequenced(after, limit).await.expect("read");
            let shared = storage.read_shared(after, limit).await.expect("read");
            assert_eq!(
                shared.iter().cloned().collect::<Vec<_>>(),
                want,
                "after {after}"
            );
        }
        // After a rewrite the tail is gone: reads come from the tree, rewritten.
        let first = storage.read_sequenced(0, 1).await.expect("read").remove(0);
        let changed = Sequenced {
            seq: first.seq,
            event: Event {
                channel: Channel::Pos,
                ..first.event
            },
        };
        storage
            .rewrite(vec![changed.clone()], None)
            .await
            .expect("rewritten");
        let shared = storage.read_shared(0, 1).await.expect("read");
        assert_eq!(shared.iter().next(), Some(&changed));
        assert_eq!(
            storage.read_shared(0, 5_000).await.expect("read").len(),
            all.len()
        );
    }
}
