//! Inventory, sharded by SKU: each shard actor is the single writer of the stock levels of its
//! SKUs at every location — on hand, held for checkouts, and available to promise. Writes are
//! serialized by the shard and applied only once durable.
//!
//! Reads (availability on a product page, the stock check when a line is added) do not queue
//! behind writes: each shard publishes its levels in a read view, like the catalog snapshot.
//!
//! Several hub nodes (the cluster storage) each run these shards over the same stored levels,
//! so a node's view can be stale. Every level is written as a swap ([`Change::SwapStock`]):
//! the store refuses it if the stored level is no longer the one the shard computed from, the
//! shard reads the levels again and the write is tried again on them. The store is the
//! arbiter: of two nodes selling the last unit, one commits its hold, the other finds none
//! left. A checkout's holds are read from the store before they are held or ended there.

use crate::monitor::metrics::Queued;
use crate::storage::{Change, Storage, StorageError, UnitOfWork};
use actix::prelude::*;
use protocol::order::HoldRecord;
use protocol::{CheckoutId, LocationId, Sku, StockLevel};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, RwLock};
use time::OffsetDateTime;

type Levels = HashMap<(LocationId, Sku), StockLevel>;
type HoldKey = (CheckoutId, LocationId, Sku);

/// A shard: its writer and its published levels.
type Shard = (Addr<InventoryShard>, Arc<RwLock<Levels>>);

/// One shard: the writer of its SKUs' levels, published in `view`.
pub struct InventoryShard {
    storage: Arc<dyn Storage>,
    /// This shard's index among `count` (which SKUs are its: [`shard_of`]).
    index: usize,
    count: usize,
    view: Arc<RwLock<Levels>>,
    /// The holds on this shard's SKUs (their sum is each level's `held`).
    holds: HashMap<HoldKey, HoldRecord>,
    /// Who is told when online stock comes back (marketing automation), once connected.
    restocks: RestockWatch,
}

/// SKUs whose online available-to-promise went from none to some: back in stock.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Restocked(pub Vec<Sku>);

type RestockWatch = Arc<OnceLock<Recipient<Restocked>>>;

/// Why units could not be held.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HoldFailure {
    /// Not enough available to promise: each short SKU with what is left.
    #[error("not enough stock")]
    Short(Vec<(Sku, i64)>),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Holds units of some of this shard's SKUs for a checkout, all or nothing. Holding again for the
/// same checkout changes nothing.
#[derive(Message)]
#[rtype(result = "Result<(), HoldFailure>")]
pub struct Hold {
    pub checkout: CheckoutId,
    pub location: LocationId,
    pub units: Vec<(Sku, u32)>,
    pub until: OffsetDateTime,
}

/// Ends a checkout's holds on this shard: `consume` turns them into a sale (on hand goes down),
/// otherwise they are given back. Ending them again changes nothing.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct EndHolds {
    pub checkout: CheckoutId,
    pub consume: bool,
}

/// Sets stock levels (a count, a receipt from the ERP or the demo seed) in one durable unit.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct SetStock(pub Vec<StockLevel>);

impl Actor for InventoryShard {
    type Context = Context<Self>;
}

/// How many times a write is tried when another node changed a level it read.
const ATTEMPTS: usize = 8;

/// A level's key in the view.
fn level_key(level: &StockLevel) -> (LocationId, Sku) {
    (level.location.clone(), level.sku.clone())
}

/// Levels read again from the store after a swap was refused, with the refusal.
type Refreshed = Option<(Vec<StockLevel>, StorageError)>;

/// Commits `unit` (nothing if it is empty); if a swap is refused, reads the levels it swapped
/// again (answered with the refusal, for the shard to publish).
async fn commit_or_refresh(
    storage: Arc<dyn Storage>,
    unit: UnitOfWork,
) -> Result<Refreshed, StorageError> {
    if unit.changes.is_empty() {
        return Ok(None);
    }
    let keys: Vec<(LocationId, Sku)> = unit
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::SwapStock { level, .. } => Some(level_key(level)),
            _ => None,
        })
        .collect();
    match storage.commit(unit).await {
        Ok(()) => Ok(None),
        Err(refused @ StorageError::Conflict(_)) => {
            tracing::debug!(error = %refused, "stock changed on another node; reading it again");
            let mut fresh = Vec::with_capacity(keys.len());
            for (location, sku) in &keys {
                fresh.extend(storage.stock_level(location, sku).await?);
            }
            Ok(Some((fresh, refused)))
        }
        Err(e) => Err(e),
    }
}

/// Whether an answer says another node changed a level first (worth trying again).
trait Stale {
    fn stale(&self) -> bool;
}

impl Stale for StorageError {
    fn stale(&self) -> bool {
        matches!(self, StorageError::Conflict(_))
    }
}

impl Stale for HoldFailure {
    fn stale(&self) -> bool {
        matches!(self, HoldFailure::Storage(e) if e.stale())
    }
}

/// Sends `make()` to a shard, again (at most [`ATTEMPTS`] times) while the answer is stale.
async fn send_retrying<M, T, E>(
    shard: &Addr<InventoryShard>,
    make: impl Fn() -> M,
) -> Result<Result<T, E>, StorageError>
where
    M: Message<Result = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Stale + Send + 'static,
    InventoryShard: Handler<M>,
{
    let mut attempt = 1;
    loop {
        let _queued = Queued::at("inventory");
        let answer = shard.send(make()).await.map_err(|_| StorageError::Closed)?;
        match answer {
            Err(e) if e.stale() && attempt < ATTEMPTS => attempt += 1,
            answer => return Ok(answer),
        }
    }
}

/// Publishes levels; answers the online SKUs that had nothing available and now have some.
fn publish(view: &RwLock<Levels>, levels: Vec<StockLevel>) -> Vec<Sku> {
    // Inserts are single calls, so a poisoned lock still holds a consistent map.
    let mut map = view.write().unwrap_or_else(|e| e.into_inner());
    let online = LocationId::online();
    let mut restocked = Vec::new();
    for level in levels {
        let before = map
            .get(&(level.location.clone(), level.sku.clone()))
            .map_or(0, StockLevel::available_to_promise);
        if level.location == online && before <= 0 && level.available_to_promise() > 0 {
            restocked.push(level.sku.clone());
        }
        map.insert((level.location.clone(), level.sku.clone()), level);
    }
    restocked
}

impl Handler<SetStock> for InventoryShard {
    type Result = AtomicResponse<Self, Result<(), StorageError>>;

    fn handle(&mut self, msg: SetStock, _ctx: &mut Context<Self>) -> Self::Result {
        // A count sets what is on hand; what is held for checkouts stays held.
        let levels: Vec<StockLevel> = msg
            .0
            .into_iter()
            .map(|mut level| {
                level.held = self.level(&level.location, &level.sku).held;
                level
            })
            .collect();
        self.commit_levels(levels)
    }
}

impl InventoryShard {
    /// Publishes committed levels and tells the restock watcher what came back.
    fn publish(&self, levels: Vec<StockLevel>) {
        let restocked = publish(&self.view, levels);
        if let (false, Some(watcher)) = (restocked.is_empty(), self.restocks.get()) {
            watcher.do_send(Restocked(restocked));
        }
    }

    /// Stores new levels in one unit of work, then publishes them.
    fn commit_levels(
        &mut self,
        levels: Vec<StockLevel>,
    ) -> AtomicResponse<Self, Result<(), StorageError>> {
        let mut unit = UnitOfWork::new();
        unit.changes
            .extend(levels.iter().cloned().map(|l| self.swap(l)));
        AtomicResponse::new(self.commit_then(unit, move |act| act.publish(levels)))
    }

    /// Writes `level` over the one in the view (refused if the store has another by now).
    fn swap(&self, level: StockLevel) -> Change {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        Change::SwapStock {
            expected: view.get(&level_key(&level)).cloned(),
            level,
        }
    }

    /// Commits `unit`, then runs `done`; if another node changed a level first, publishes the
    /// stored levels instead and answers the conflict (the sender tries again).
    fn commit_then<T: 'static, E: From<StorageError> + 'static>(
        &mut self,
        unit: UnitOfWork,
        done: impl FnOnce(&mut Self) -> T + 'static,
    ) -> ResponseActFuture<Self, Result<T, E>> {
        let storage = self.storage.clone();
        Box::pin(commit_or_refresh(storage, unit).into_actor(self).map(
            move |res, act, _| match res? {
                None => Ok(done(act)),
                Some((fresh, refused)) => {
                    act.publish(fresh);
                    Err(refused.into())
                }
            },
        ))
    }

    /// Before holding or ending a checkout's holds where the store is shared: its holds on
    /// this shard's SKUs are the stored ones (another node may have made or ended them).
    fn with_stored_holds<T: 'static, E: From<StorageError> + 'static>(
        &mut self,
        checkout: CheckoutId,
        then: impl FnOnce(&mut Self) -> ResponseActFuture<Self, Result<T, E>> + 'static,
    ) -> ResponseActFuture<Self, Result<T, E>> {
        if !self.storage.shared() {
            return then(self);
        }
        let storage = self.storage.clone();
        Box::pin(
            async move { storage.holds_of(checkout).await }
                .into_actor(self)
                .then(move |stored, act, _| match stored {
                    Ok(stored) => {
                        act.holds.retain(|(c, _, _), _| *c != checkout);
                        for h in stored {
                            if shard_of(&h.sku, act.count) == act.index {
                                act.holds
                                    .insert((h.checkout, h.location.clone(), h.sku.clone()), h);
                            }
                        }
                        then(act)
                    }
                    Err(e) => Box::pin(actix::fut::ready(Err(e.into()))),
                }),
        )
    }

    fn level(&self, location: &LocationId, sku: &Sku) -> StockLevel {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.get(&(location.clone(), sku.clone()))
            .cloned()
            .unwrap_or_else(|| StockLevel {
                sku: sku.clone(),
                location: location.clone(),
                on_hand: 0,
                held: 0,
            })
    }
}

impl Handler<Hold> for InventoryShard {
    type Result = AtomicResponse<Self, Result<(), HoldFailure>>;

    fn handle(&mut self, msg: Hold, _ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.with_stored_holds(msg.checkout, move |act| act.hold(msg)))
    }
}

impl InventoryShard {
    fn hold(&mut self, msg: Hold) -> ResponseActFuture<Self, Result<(), HoldFailure>> {
        let mut unit = UnitOfWork::new();
        let mut levels = Vec::new();
        let mut records = Vec::new();
        let mut short = Vec::new();
        for (sku, quantity) in &msg.units {
            let k = (msg.checkout, msg.location.clone(), sku.clone());
            if self.holds.contains_key(&k) {
                continue;
            }
            let mut level = self.level(&msg.location, sku);
            if level.available_to_promise() < i64::from(*quantity) {
                short.push((sku.clone(), level.available_to_promise()));
                continue;
            }
            level.held += i64::from(*quantity);
            let record = HoldRecord {
                checkout: msg.checkout,
                sku: sku.clone(),
                location: msg.location.clone(),
                quantity: *quantity,
                until: msg.until,
            };
            unit.changes.push(self.swap(level.clone()));
            unit.changes.push(Change::PutHold(record.clone()));
            levels.push(level);
            records.push(record);
        }
        if !short.is_empty() {
            return Box::pin(actix::fut::ready(Err(HoldFailure::Short(short))));
        }
        self.commit_then(unit, move |act| {
            act.publish(levels);
            for r in records {
                act.holds
                    .insert((r.checkout, r.location.clone(), r.sku.clone()), r);
            }
        })
    }

    fn end_holds(&mut self, msg: EndHolds) -> ResponseActFuture<Self, Result<(), StorageError>> {
        let ending: Vec<HoldKey> = self
            .holds
            .keys()
            .filter(|(c, _, _)| *c == msg.checkout)
            .cloned()
            .collect();
        let mut unit = UnitOfWork::new();
        let mut levels = Vec::new();
        for k in &ending {
            let Some(record) = self.holds.get(k) else {
                continue;
            };
            let mut level = self.level(&record.location, &record.sku);
            level.held = (level.held - i64::from(record.quantity)).max(0);
            if msg.consume {
                level.on_hand -= i64::from(record.quantity);
            }
            unit.changes.push(self.swap(level.clone()));
            unit.changes.push(Change::DeleteHold {
                checkout: record.checkout,
                sku: record.sku.clone(),
                location: record.location.clone(),
            });
            levels.push(level);
        }
        self.commit_then(unit, move |act| {
            act.publish(levels);
            for k in ending {
                act.holds.remove(&k);
            }
        })
    }
}

impl Handler<EndHolds> for InventoryShard {
    type Result = AtomicResponse<Self, Result<(), StorageError>>;

    fn handle(&mut self, msg: EndHolds, _ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.with_stored_holds(msg.checkout, move |act| act.end_holds(msg)))
    }
}

/// Puts units back on hand (a cancelled order that never left the warehouse).
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct Restock {
    pub location: LocationId,
    pub units: Vec<(Sku, u32)>,
}

impl Handler<Restock> for InventoryShard {
    type Result = AtomicResponse<Self, Result<(), StorageError>>;

    fn handle(&mut self, msg: Restock, _ctx: &mut Context<Self>) -> Self::Result {
        let levels: Vec<StockLevel> = msg
            .units
            .iter()
            .map(|(sku, q)| {
                let mut level = self.level(&msg.location, sku);
                level.on_hand += i64::from(*q);
                level
            })
            .collect();
        self.commit_levels(levels)
    }
}

/// How an ERP stock row changes what is on hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    /// A count: on hand becomes this (what is held stays held).
    Set(i64),
    /// A movement: on hand moves by this; refused if it would go below zero.
    Add(i64),
}

/// One ERP stock row for [`ApplyStock`], with the 16-byte digest of its id, recorded with it
/// when it is applied (so it is applied once).
#[derive(Debug, Clone)]
pub struct StockMove {
    pub sku: Sku,
    pub change: StockChange,
    pub mark: Option<[u8; 16]>,
}

/// Applies stock rows at one location in order, each on its own: a move that would take on hand
/// below zero is refused (answered with what is on hand), the others are stored, with one
/// record of their marks, in one durable unit, then published. Answers each move's new on hand,
/// or the refusal.
#[derive(Message)]
#[rtype(result = "Result<Vec<Result<i64, i64>>, StorageError>")]
pub struct ApplyStock {
    pub location: LocationId,
    pub moves: Vec<StockMove>,
}

fn new_marks(rows: usize) -> crate::storage::ImportMarks {
    crate::storage::ImportMarks {
        id: ulid::Ulid::new(),
        digests: Vec::with_capacity(rows * 16),
    }
}

impl Handler<ApplyStock> for InventoryShard {
    type Result = AtomicResponse<Self, Result<Vec<Result<i64, i64>>, StorageError>>;

    fn handle(&mut self, msg: ApplyStock, _ctx: &mut Context<Self>) -> Self::Result {
        let mut levels: HashMap<Sku, StockLevel> = HashMap::new();
        let mut unit = UnitOfWork::new();
        let mut answers = Vec::with_capacity(msg.moves.len());
        let mut marks = new_marks(msg.moves.len());
        for m in msg.moves {
            let level = levels
                .entry(m.sku.clone())
                .or_insert_with(|| self.level(&msg.location, &m.sku));
            let on_hand = match m.change {
                StockChange::Set(n) => n,
                StockChange::Add(d) => level.on_hand.saturating_add(d),
            };
            if on_hand < 0 {
                answers.push(Err(level.on_hand));
                continue;
            }
            level.on_hand = on_hand;
            answers.push(Ok(on_hand));
            if let Some(mark) = m.mark {
                marks.digests.extend_from_slice(&mark);
            }
        }
        if !marks.digests.is_empty() {
            unit.changes.push(Change::PutImportMarks(marks));
        }
        let levels: Vec<StockLevel> = levels.into_values().collect();
        unit.changes
            .extend(levels.iter().cloned().map(|l| self.swap(l)));
        AtomicResponse::new(self.commit_then(unit, move |act| {
            act.publish(levels);
            answers
        }))
    }
}

/// Checkouts whose holds ran out before `now` (for the sweeper's recovery).
#[derive(Message)]
#[rtype(result = "Vec<CheckoutId>")]
pub struct LapsedHolds(pub OffsetDateTime);

impl Handler<LapsedHolds> for InventoryShard {
    type Result = Vec<CheckoutId>;

    fn handle(&mut self, msg: LapsedHolds, _ctx: &mut Context<Self>) -> Vec<CheckoutId> {
        let mut ids: Vec<CheckoutId> = self
            .holds
            .values()
            .filter(|h| h.until < msg.0)
            .map(|h| h.checkout)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Levels read from the store (another node changed them): published as they are.
#[derive(Message)]
#[rtype(result = "()")]
struct Refresh(Vec<StockLevel>);

impl Handler<Refresh> for InventoryShard {
    type Result = ();

    fn handle(&mut self, msg: Refresh, _ctx: &mut Context<Self>) {
        self.publish(msg.0);
    }
}

/// The shards, addressed by SKU.
#[derive(Clone)]
pub struct Inventory {
    shards: Arc<Vec<Shard>>,
    restocks: RestockWatch,
    storage: Arc<dyn Storage>,
    /// Change notifications between hub nodes, once followed.
    changes: Arc<OnceLock<crate::cluster::notify::Changes>>,
}

impl Inventory {
    /// Starts `count` shards with the stored levels.
    pub async fn start(storage: Arc<dyn Storage>, count: usize) -> Result<Inventory, StorageError> {
        let count = count.max(1);
        // The hold records are the truth about what is held; each level's `held` is their sum.
        let holds = storage.holds().await?;
        let mut held: HashMap<(LocationId, Sku), i64> = HashMap::new();
        for h in &holds {
            *held.entry((h.location.clone(), h.sku.clone())).or_default() += i64::from(h.quantity);
        }
        let mut per_shard: Vec<(Vec<StockLevel>, HashMap<HoldKey, HoldRecord>)> =
            vec![(Vec::new(), HashMap::new()); count];
        for mut level in storage.stock_levels().await? {
            level.held = held
                .get(&(level.location.clone(), level.sku.clone()))
                .copied()
                .unwrap_or(0);
            per_shard[shard_of(&level.sku, count)].0.push(level);
        }
        for h in holds {
            per_shard[shard_of(&h.sku, count)]
                .1
                .insert((h.checkout, h.location.clone(), h.sku.clone()), h);
        }
        let restocks: RestockWatch = Arc::new(OnceLock::new());
        let shards = per_shard
            .into_iter()
            .enumerate()
            .map(|(index, (levels, holds))| {
                let view = Arc::new(RwLock::new(Levels::new()));
                publish(&view, levels);
                let shard = InventoryShard {
                    storage: storage.clone(),
                    index,
                    count,
                    view: view.clone(),
                    holds,
                    restocks: restocks.clone(),
                }
                .start();
                (shard, view)
            })
            .collect();
        Ok(Inventory {
            shards: Arc::new(shards),
            restocks,
            storage,
            changes: Arc::default(),
        })
    }

    /// Tells the other hub nodes when this node changed stock, and publishes the stored levels
    /// when another node did (`crate::cluster::notify`; a no-op embedded). Once.
    pub fn follow_changes(&self, changes: crate::cluster::notify::Changes) {
        let this = self.clone();
        changes.on(crate::cluster::notify::Topic::Stock, move || {
            let this = this.clone();
            this.reload_blocking();
        });
        let _ = self.changes.set(changes);
    }

    /// Reads every stored level and publishes it (blocking: a reload runs on the blocking
    /// pool, within the runtime).
    fn reload_blocking(&self) {
        let stored = tokio::runtime::Handle::current().block_on(self.storage.stock_levels());
        match stored {
            Ok(levels) => self.publish_stored(levels),
            Err(e) => tracing::error!(error = %e, "reloading stock another node changed"),
        }
    }

    /// Publishes stored levels into the shards' views (through each shard, in its order).
    fn publish_stored(&self, levels: Vec<StockLevel>) {
        let mut per_shard: Vec<Vec<StockLevel>> = vec![Vec::new(); self.shards.len()];
        for level in levels {
            per_shard[self.index(&level.sku)].push(level);
        }
        for ((shard, _), levels) in self.shards.iter().zip(per_shard) {
            if !levels.is_empty() {
                shard.do_send(Refresh(levels));
            }
        }
    }

    /// After a change is stored: the other nodes read it.
    fn announce(&self) {
        if let Some(changes) = self.changes.get() {
            changes.announce(crate::cluster::notify::Topic::Stock);
        }
    }

    /// Tells `watcher` from now on when a SKU's online stock comes back (set once).
    pub fn on_restock(&self, watcher: Recipient<Restocked>) {
        let _ = self.restocks.set(watcher);
    }

    fn index(&self, sku: &Sku) -> usize {
        shard_of(sku, self.shards.len())
    }

    /// Available-to-promise units of each SKU at `location`, in order.
    pub fn available(&self, location: &LocationId, skus: &[Sku]) -> Vec<i64> {
        skus.iter()
            .map(|sku| {
                let view = self.shards[self.index(sku)]
                    .1
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                view.get(&(location.clone(), sku.clone()))
                    .map_or(0, StockLevel::available_to_promise)
            })
            .collect()
    }

    /// Sets stock levels durably (one unit of work per shard).
    pub async fn set(&self, levels: Vec<StockLevel>) -> Result<(), StorageError> {
        let mut per_shard: Vec<Vec<StockLevel>> = vec![Vec::new(); self.shards.len()];
        for level in levels {
            per_shard[self.index(&level.sku)].push(level);
        }
        for ((shard, _), levels) in self.shards.iter().zip(per_shard) {
            if !levels.is_empty() {
                send_retrying(shard, || SetStock(levels.clone())).await??;
            }
        }
        self.announce();
        Ok(())
    }
}

impl Inventory {
    /// Holds `units` at `location` for a checkout until `until`, all or nothing across shards:
    /// if any SKU is short, whatever was held is given back and every short SKU is reported.
    pub async fn hold(
        &self,
        checkout: CheckoutId,
        location: &LocationId,
        units: &[(Sku, u32)],
        until: OffsetDateTime,
    ) -> Result<(), HoldFailure> {
        let mut per_shard: Vec<Vec<(Sku, u32)>> = vec![Vec::new(); self.shards.len()];
        for (sku, q) in units {
            per_shard[self.index(sku)].push((sku.clone(), *q));
        }
        let mut short = Vec::new();
        let mut failure = None;
        for ((shard, _), units) in self.shards.iter().zip(per_shard) {
            if units.is_empty() {
                continue;
            }
            let sent = send_retrying(shard, || Hold {
                checkout,
                location: location.clone(),
                units: units.clone(),
                until,
            })
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(HoldFailure::Short(s))) => short.extend(s),
                Ok(Err(HoldFailure::Storage(e))) | Err(e) => failure = Some(e),
            }
        }
        if short.is_empty() && failure.is_none() {
            self.announce();
            return Ok(());
        }
        self.end(checkout, false, Some(units)).await?;
        match failure {
            Some(e) => Err(HoldFailure::Storage(e)),
            None => Err(HoldFailure::Short(short)),
        }
    }

    /// Ends a checkout's holds: consumed into a sale, or given back. `units` (the checkout's
    /// lines) names the shards to ask; without it, every shard is asked (recovery).
    pub async fn end(
        &self,
        checkout: CheckoutId,
        consume: bool,
        units: Option<&[(Sku, u32)]>,
    ) -> Result<(), StorageError> {
        let mut asked = vec![units.is_none(); self.shards.len()];
        for (sku, _) in units.unwrap_or_default() {
            asked[self.index(sku)] = true;
        }
        for ((shard, _), ask) in self.shards.iter().zip(asked) {
            if ask {
                send_retrying(shard, || EndHolds { checkout, consume }).await??;
            }
        }
        self.announce();
        Ok(())
    }

    /// Puts units back on hand at `location`.
    pub async fn restock(
        &self,
        location: &LocationId,
        units: &[(Sku, u32)],
    ) -> Result<(), StorageError> {
        let mut per_shard: Vec<Vec<(Sku, u32)>> = vec![Vec::new(); self.shards.len()];
        for (sku, q) in units {
            per_shard[self.index(sku)].push((sku.clone(), *q));
        }
        for ((shard, _), units) in self.shards.iter().zip(per_shard) {
            if !units.is_empty() {
                send_retrying(shard, || Restock {
                    location: location.clone(),
                    units: units.clone(),
                })
                .await??;
            }
        }
        self.announce();
        Ok(())
    }

    /// Applies ERP stock rows at `location` (see [`ApplyStock`]): one durable unit per shard,
    /// the shards in parallel. Answers each move's new on hand or refusal, in order.
    pub async fn apply_stock(
        &self,
        location: &LocationId,
        moves: Vec<StockMove>,
    ) -> Result<Vec<Result<i64, i64>>, StorageError> {
        let count = moves.len();
        let mut per_shard: Vec<(Vec<usize>, Vec<StockMove>)> =
            vec![(Vec::new(), Vec::new()); self.shards.len()];
        for (i, m) in moves.into_iter().enumerate() {
            let shard = &mut per_shard[self.index(&m.sku)];
            shard.0.push(i);
            shard.1.push(m);
        }
        let sends = self
            .shards
            .iter()
            .zip(per_shard)
            .filter(|(_, (indexes, _))| !indexes.is_empty())
            .map(|((shard, _), (indexes, moves))| async move {
                let answer = send_retrying(shard, || ApplyStock {
                    location: location.clone(),
                    moves: moves.clone(),
                })
                .await;
                (indexes, answer)
            });
        let mut answers: Vec<Result<i64, i64>> = vec![Err(0); count];
        for (indexes, sent) in futures_util::future::join_all(sends).await {
            let shard_answers = sent??;
            for (i, a) in indexes.into_iter().zip(shard_answers) {
                answers[i] = a;
            }
        }
        self.announce();
        Ok(answers)
    }

    /// Checkouts with holds that ran out before `now`.
    pub async fn lapsed_holds(&self, now: OffsetDateTime) -> Vec<CheckoutId> {
        let mut ids = Vec::new();
        for (shard, _) in self.shards.iter() {
            let _queued = Queued::at("inventory");
            if let Ok(mut found) = shard.send(LapsedHolds(now)).await {
                ids.append(&mut found);
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// The units on hand and held of one SKU at a location.
    pub fn level(&self, location: &LocationId, sku: &Sku) -> Option<StockLevel> {
        let view = self.shards[self.index(sku)]
            .1
            .read()
            .unwrap_or_else(|e| e.into_inner());
        view.get(&(location.clone(), sku.clone())).cloned()
    }
}

fn shard_of(sku: &Sku, count: usize) -> usize {
    let mut h = DefaultHasher::new();
    sku.hash(&mut h);
    (h.finish() % count as u64) as usize
}
