//! Merging on the hub: turns a node's batch (or an operator's retirement) into one
//! [`EdgeWrite`] — the merged rows, the records that are new, the hub's answers queued in the
//! node's outbox, and the events — so that all of it is committed together or not at all.
//!
//! What the hub does here, and nothing more (`docs/edge-sync.md`, "Who writes what"):
//! - merges the origin's own entries of stock on hand and its own row of each rights counter
//!   (a node never writes another replica's row);
//! - keeps each store sale once, by id, and records an interaction event for it;
//! - keeps each store return once, by id, and records an `over_return` conflict when the
//!   returns of one receipt take a line back beyond what was sold (two stores, one offline);
//! - settles each new deficit from the rights it holds for that location minus what checkouts
//!   hold there, and queues the `Settlement` (with its own rights row) to the node;
//! - answers a node's `WantRights` by handing back every right it holds there but does not hold
//!   for a checkout;
//! - writes off a retired replica's rights, and gives the location's heir (at the retirement,
//!   or at its first connection when configured later) the whole merged state of the location:
//!   every rights row and every other replica's on-hand entries ([`relay_location`]).
//!
//! Items about a location the origin does not own (state, sales, deficits, commands) change
//! nothing and become one conflict record; so does a node's creation of coupon redemptions (only
//! the hub creates them: the creation is dropped, the rest of the row merged).

use super::store::{EdgeStore, EdgeWrite, OnHandRow, RetiredRecord, RightsRow};
use super::{unix_ms, Node, Nodes};
use crate::actors::offers::Offers;
use crate::storage::Result;
use async_trait::async_trait;
use protocol::replication::sync::{item_size, Item, Scarce, MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
use protocol::replication::{
    CommandKind, ConflictRecord, DeficitRecord, HybridClock, OnHand, ReplicaId, Rights, SaleRecord,
    Settlement,
};
use protocol::{AnonymousId, Channel, Event, EventKind, LocationId, Sku, StockLevel, Subject};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;
use ulid::Ulid;

/// What checkouts hold at a location: rights the hub holds for them are never given away.
#[async_trait]
pub trait Holds: Send + Sync {
    /// Units of `sku` held for checkouts at `location`.
    fn held(&self, location: &LocationId, sku: &Sku) -> u64;
    /// The checkouts holding `sku` at `location` (named in a settlement that falls short).
    async fn holders(&self, location: &LocationId, sku: &Sku) -> Vec<String>;
}

/// The hub's holds: the inventory view's `held`, and the stored hold records.
pub struct HubHolds {
    pub inventory: crate::actors::inventory::Inventory,
    pub storage: std::sync::Arc<dyn crate::storage::Storage>,
}

#[async_trait]
impl Holds for HubHolds {
    fn held(&self, location: &LocationId, sku: &Sku) -> u64 {
        self.inventory
            .level(location, sku)
            .map_or(0, |l| u64::try_from(l.held).unwrap_or(0))
    }

    async fn holders(&self, location: &LocationId, sku: &Sku) -> Vec<String> {
        match self.storage.holds().await {
            Ok(holds) => holds
                .into_iter()
                .filter(|h| &h.location == location && &h.sku == sku)
                .map(|h| format!("checkout {}", h.checkout))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the holds to flag");
                Vec::new()
            }
        }
    }
}

/// The state a write touches, loaded on first use, and the write being built.
pub struct Working<'a> {
    store: &'a dyn EdgeStore,
    on_hand: BTreeMap<(LocationId, Sku), OnHand>,
    rights: BTreeMap<Scarce, Rights>,
    dirty_rights: BTreeSet<Scarce>,
    new_ids: BTreeSet<Ulid>,
    /// One outbox entry per node per write; `Rights` items coalesced per key.
    outbox: BTreeMap<ReplicaId, Vec<Item>>,
    pub write: EdgeWrite,
    /// New click-and-collect reports, applied to their orders once the write is durable.
    pub pickups: Vec<protocol::replication::PickupReport>,
}

/// A planned write with what to do once it is durable.
#[derive(Debug, Default)]
pub struct Planned {
    pub write: EdgeWrite,
    /// New stock levels of store locations for the inventory view.
    pub levels: Vec<StockLevel>,
    /// Nodes with new outbox entries.
    pub notify: BTreeSet<ReplicaId>,
    /// New click-and-collect reports (see [`Working::pickups`]).
    pub pickups: Vec<protocol::replication::PickupReport>,
}

impl<'a> Working<'a> {
    pub fn new(store: &'a dyn EdgeStore) -> Working<'a> {
        Working {
            store,
            on_hand: BTreeMap::new(),
            rights: BTreeMap::new(),
            dirty_rights: BTreeSet::new(),
            new_ids: BTreeSet::new(),
            outbox: BTreeMap::new(),
            write: EdgeWrite::default(),
            pickups: Vec::new(),
        }
    }

    async fn on_hand_mut(&mut self, location: &LocationId, sku: &Sku) -> Result<&mut OnHand> {
        let k = (location.clone(), sku.clone());
        if !self.on_hand.contains_key(&k) {
            let stored = self.store.on_hand(location, sku).await?.unwrap_or_default();
            self.on_hand.insert(k.clone(), stored);
        }
        Ok(self.on_hand.entry(k).or_default())
    }

    pub(super) async fn rights_mut(&mut self, key: &Scarce) -> Result<&mut Rights> {
        if !self.rights.contains_key(key) {
            let stored = self.store.rights(key).await?.unwrap_or_default();
            self.rights.insert(key.clone(), stored);
        }
        self.dirty_rights.insert(key.clone());
        Ok(self.rights.entry(key.clone()).or_default())
    }

    /// The merged on hand of `sku` at `location` as this write sees it, without touching it.
    async fn on_hand_view(&self, location: &LocationId, sku: &Sku) -> Result<OnHand> {
        match self.on_hand.get(&(location.clone(), sku.clone())) {
            Some(state) => Ok(state.clone()),
            None => Ok(self.store.on_hand(location, sku).await?.unwrap_or_default()),
        }
    }

    /// The merged rights of `key` as this write sees it, without touching them.
    pub(super) async fn rights_view(&self, key: &Scarce) -> Result<Rights> {
        match self.rights.get(key) {
            Some(state) => Ok(state.clone()),
            None => Ok(self.store.rights(key).await?.unwrap_or_default()),
        }
    }

    /// Every coupon's rights as this write sees them.
    pub(super) async fn coupon_rows(&self) -> Result<Vec<RightsRow>> {
        let mut rows: BTreeMap<Scarce, Rights> = self
            .store
            .coupon_rights()
            .await?
            .into_iter()
            .map(|r| (r.key, r.state))
            .collect();
        for (key, state) in &self.rights {
            if matches!(key, Scarce::Coupon { .. }) {
                rows.insert(key.clone(), state.clone());
            }
        }
        Ok(rows
            .into_iter()
            .map(|(key, state)| RightsRow { key, state })
            .collect())
    }

    /// Whether a record id is neither stored nor already in this write.
    fn is_new(&mut self, id: Ulid, stored: bool) -> bool {
        !stored && self.new_ids.insert(id)
    }

    /// Queues an item for a node; a `Rights` state of a key already queued is merged into the
    /// earlier one (pointwise max: a later row of the hub never hides a whole state relayed
    /// before it in the same write).
    pub(super) fn queue(&mut self, node: &ReplicaId, item: Item) {
        let entry = self.outbox.entry(node.clone()).or_default();
        if let Item::Rights { key, state } = &item {
            if let Some(Item::Rights { state: queued, .. }) = entry
                .iter_mut()
                .find(|i| matches!(i, Item::Rights { key: k, .. } if k == key))
            {
                queued.merge(state);
                return;
            }
        }
        entry.push(item);
    }

    /// Records a conflict the hub saw in `origin`'s sync, stamped now.
    fn conflict(
        &mut self,
        env: &Env<'_>,
        clock: &mut HybridClock,
        origin: &ReplicaId,
        kind: &str,
        detail: String,
    ) {
        tracing::warn!(node = %origin, kind, %detail, "sync conflict");
        self.write.conflicts.push((
            origin.clone(),
            ConflictRecord {
                id: Ulid::new(),
                replica: ReplicaId::hub(),
                kind: kind.into(),
                detail,
                at: clock.now(unix_ms(env.now)),
            },
        ));
    }

    /// The write with every touched row, and the follow-ups.
    pub fn finish(mut self) -> Planned {
        let mut levels = Vec::new();
        for ((location, sku), state) in self.on_hand {
            levels.push(StockLevel {
                sku: sku.clone(),
                location: location.clone(),
                on_hand: state.value(),
                held: 0,
            });
            self.write.on_hand.push(OnHandRow {
                location,
                sku,
                state,
            });
        }
        for key in self.dirty_rights {
            if let Some(state) = self.rights.remove(&key) {
                self.write.rights.push(RightsRow { key, state });
            }
        }
        let notify = self.outbox.keys().cloned().collect();
        for (node, items) in self.outbox {
            for entry in bounded_entries(items) {
                self.write.outbox.push((node.clone(), entry));
            }
        }
        Planned {
            write: self.write,
            levels,
            notify,
            pickups: self.pickups,
        }
    }
}

/// Splits a node's items into outbox entries that each fit well inside one batch (half its
/// item and byte bounds), so a change touching many keys (a retirement) never makes an entry
/// the stream cannot send.
fn bounded_entries(items: Vec<Item>) -> Vec<Vec<Item>> {
    let (max_items, max_bytes) = (MAX_BATCH_ITEMS / 2, MAX_BATCH_BYTES / 2);
    let mut entries: Vec<Vec<Item>> = Vec::new();
    let mut current: Vec<Item> = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let size = item_size(&item);
        if !current.is_empty() && (current.len() >= max_items || bytes + size > max_bytes) {
            entries.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        current.push(item);
    }
    if !current.is_empty() {
        entries.push(current);
    }
    entries
}

/// What merging needs from outside the edge state.
pub struct Env<'a> {
    pub nodes: &'a Nodes,
    pub holds: &'a dyn Holds,
    /// The back office: coupon uses made at the stores are counted there.
    pub offers: &'a dyn Offers,
    pub now: OffsetDateTime,
}

fn owns(node: &Node, key: &Scarce) -> bool {
    match key {
        Scarce::Stock { location, .. } => location == &node.location,
        Scarce::Coupon { .. } => true,
    }
}

/// The interaction event of a store sale (the POS channel; `order_placed` is the kind the DXP
/// knows for a completed purchase).
pub fn sale_event(sale: &SaleRecord, now: OffsetDateTime) -> Event {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(sale.at.ms) * 1_000_000)
        .unwrap_or(now);
    let subject = sale
        .customer
        .map_or(Subject::Anonymous(AnonymousId(sale.id)), Subject::Customer);
    Event::new(at, subject, Channel::Pos, EventKind::OrderPlaced)
        .with("sale", sale.id)
        .with("number", &sale.number)
        .with("location", &sale.location)
        .with("replica", &sale.replica)
        .with("total", sale.total.to_decimal_string())
        .with("currency", sale.total.currency)
        .with("lines", sale.lines.len())
        .with(
            "skus",
            sale.lines
                .iter()
                .map(|l| format!("{}:{}", l.sku.as_str(), l.quantity))
                .collect::<Vec<_>>()
                .join(","),
        )
}

/// Merges one batch of `origin`'s items (already checked to be in sequence).
pub async fn merge_batch(
    w: &mut Working<'_>,
    env: &Env<'_>,
    clock: &mut HybridClock,
    origin: &Node,
    items: Vec<Item>,
) -> Result<()> {
    let mut foreign: Vec<String> = Vec::new();
    let mut coupons_created: Vec<String> = Vec::new();
    // State first, so records see the merged rows (a node may grant the hub rights and report
    // a deficit in one batch).
    let (state, records): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| matches!(i, Item::OnHand { .. } | Item::Rights { .. }));
    for item in state {
        match item {
            Item::OnHand {
                sku,
                location,
                entry,
            } => {
                if location != origin.location {
                    foreign.push(format!("on hand of {sku} at {location}"));
                    continue;
                }
                w.on_hand_mut(&location, &sku)
                    .await?
                    .apply_entry(&origin.replica, entry);
            }
            Item::Rights { key, state } => {
                if !owns(origin, &key) {
                    foreign.push(format!("rights {key:?}"));
                    continue;
                }
                let mut row = state.row(&origin.replica);
                if let Scarce::Coupon { code } = &key {
                    // Only the hub creates coupon redemptions: a node's `R[node][node]` is
                    // dropped; what it received, handed on and consumed is merged.
                    let created = row
                        .r
                        .get_mut(&origin.replica)
                        .and_then(|r| r.remove(&origin.replica))
                        .unwrap_or(0);
                    if created > 0 {
                        coupons_created.push(format!("{created} of coupon {code}"));
                    }
                }
                w.rights_mut(&key).await?.merge(&row);
            }
            _ => {}
        }
    }
    for item in records {
        match item {
            // Only the hub relays other replicas' entries; from a node it changes nothing.
            Item::OnHandOf { .. } => {}
            Item::Sale(sale) => {
                clock.observe(&sale.at);
                if sale.location != origin.location {
                    foreign.push(format!("sale {} at {}", sale.id, sale.location));
                    continue;
                }
                let stored = w.store.has_sale(sale.id).await?;
                if w.is_new(sale.id, stored) {
                    count_coupon_uses(w, env, clock, origin, &sale).await?;
                    w.write.events.push(sale_event(&sale, env.now));
                    w.write.sales.push(sale);
                }
            }
            Item::Deficit(d) => {
                clock.observe(&d.at);
                if d.location != origin.location {
                    foreign.push(format!("deficit {} at {}", d.id, d.location));
                    continue;
                }
                let stored = w.store.has_deficit(d.id).await?;
                if w.is_new(d.id, stored) {
                    settle(w, env, clock, origin, &d).await?;
                    w.write.deficits.push(d);
                }
            }
            Item::Conflict(c) => {
                let stored = w.store.has_conflict(c.id).await?;
                if w.is_new(c.id, stored) {
                    w.write.conflicts.push((origin.replica.clone(), c));
                }
            }
            Item::Command(cmd) => {
                let seen = w.store.command_seen(cmd.id).await?;
                if !w.is_new(cmd.id, seen) {
                    continue;
                }
                w.write.commands_seen.push(cmd.id);
                if let CommandKind::WantRights { sku, location, .. } = cmd.kind {
                    if location != origin.location {
                        foreign.push(format!("want rights of {sku} at {location}"));
                        continue;
                    }
                    give_back(w, env, origin, sku, location).await?;
                }
            }
            // A store's click-and-collect report: kept once by id (with the commands seen) and
            // stored until applied to its order, which happens once this write is durable.
            Item::Pickup(report) => {
                clock.observe(&report.at);
                if report.location != origin.location {
                    foreign.push(format!("pickup {} at {}", report.order, report.location));
                    continue;
                }
                let seen = w.store.command_seen(report.id).await?;
                if w.is_new(report.id, seen) {
                    w.write.commands_seen.push(report.id);
                    // Kept with the merge until its order has it (`crate::collect`).
                    w.write.pickups.push(report.clone());
                    w.pickups.push(report);
                }
            }
            Item::Return(r) => {
                clock.observe(&r.at);
                if r.location != origin.location {
                    foreign.push(format!("return {} at {}", r.id, r.location));
                    continue;
                }
                let (sale, known) = w.store.sale_with_returns(r.sale).await?;
                let stored = known.iter().any(|k| k.id == r.id);
                if w.is_new(r.id, stored) {
                    let sale =
                        sale.or_else(|| w.write.sales.iter().find(|s| s.id == r.sale).cloned());
                    let over = sale.and_then(|sale| {
                        let mut all: Vec<&protocol::replication::ReturnRecord> =
                            known.iter().collect();
                        all.extend(w.write.returns.iter().filter(|x| x.sale == r.sale));
                        all.push(&r);
                        super::returns::over_return(&sale, &all)
                    });
                    if let Some(detail) = over {
                        w.conflict(env, clock, &origin.replica, "over_return", detail);
                    }
                    w.write.returns.push(r);
                }
            }
            // An interaction at the store (a board impression, ...): into the event log.
            Item::Event(e) => w.write.events.push(e),
            // The hub writes settlements and coupon terms; node states were merged above;
            // unknown kinds are ignored.
            Item::Settlement(_)
            | Item::Coupon(_)
            | Item::OnHand { .. }
            | Item::Rights { .. }
            | Item::Unknown => {}
        }
    }
    if !foreign.is_empty() {
        let detail = format!(
            "{} item(s) about locations {} does not own were ignored: {}",
            foreign.len(),
            origin.location,
            foreign
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
        w.conflict(env, clock, &origin.replica, "foreign_location", detail);
    }
    if !coupons_created.is_empty() {
        let detail = format!(
            "{} created coupon redemptions, which only the hub creates; ignored: {}",
            origin.replica,
            coupons_created
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
        w.conflict(env, clock, &origin.replica, "coupon_creation", detail);
    }
    Ok(())
}

/// Counts a new store sale's coupon uses in the back office (once per sale, so a batch sent
/// again counts nothing more); a customer now beyond a code's per-customer limit (two stores
/// redeemed it offline) becomes a conflict record, for a person: the sale stands.
async fn count_coupon_uses(
    w: &mut Working<'_>,
    env: &Env<'_>,
    clock: &mut HybridClock,
    origin: &Node,
    sale: &SaleRecord,
) -> Result<()> {
    for code in &sale.coupons {
        let over = env
            .offers
            .record_store_use(code, sale.customer, sale.id)
            .await
            .map_err(|e| {
                crate::storage::StorageError::Io(format!("coupon use not counted: {e}"))
            })?;
        if let (Some((used, max)), Some(customer)) = (over, sale.customer) {
            w.conflict(
                env,
                clock,
                &origin.replica,
                "coupon_per_customer_limit",
                format!(
                    "customer {customer} has used coupon {code} {used} times, {max} allowed: sale {} ({}) at {} was made offline beyond the limit",
                    sale.number, sale.id, sale.location
                ),
            );
        }
    }
    Ok(())
}

/// Settles a deficit from the rights the hub holds at its location but holds for no checkout.
async fn settle(
    w: &mut Working<'_>,
    env: &Env<'_>,
    clock: &mut HybridClock,
    origin: &Node,
    d: &DeficitRecord,
) -> Result<()> {
    let hub = ReplicaId::hub();
    let key = Scarce::Stock {
        sku: d.sku.clone(),
        location: d.location.clone(),
    };
    let for_checkouts = env.holds.held(&d.location, &d.sku);
    let rights = w.rights_mut(&key).await?;
    let spare = rights.held(&hub).saturating_sub(for_checkouts);
    let settled = rights.consume_up_to(&hub, d.units.min(spare));
    let row = rights.row(&hub);
    let short = d.units - settled;
    let flagged = if short > 0 {
        env.holds.holders(&d.location, &d.sku).await
    } else {
        Vec::new()
    };
    let settlement = Settlement {
        deficit: d.id,
        settled,
        short,
        flagged,
        at: clock.now(unix_ms(env.now)),
    };
    if short > 0 {
        tracing::warn!(
            node = %origin.replica, deficit = %d.id, sku = %d.sku, short,
            flagged = ?settlement.flagged, "deficit not fully settled"
        );
    }
    if settled > 0 {
        w.queue(&origin.replica, Item::Rights { key, state: row });
    }
    w.write.settlements.push(settlement.clone());
    w.queue(&origin.replica, Item::Settlement(settlement));
    Ok(())
}

/// Hands the node every right of `sku` the hub holds at its location and holds for no checkout.
async fn give_back(
    w: &mut Working<'_>,
    env: &Env<'_>,
    origin: &Node,
    sku: Sku,
    location: LocationId,
) -> Result<()> {
    let hub = ReplicaId::hub();
    let for_checkouts = env.holds.held(&location, &sku);
    let key = Scarce::Stock { sku, location };
    let rights = w.rights_mut(&key).await?;
    let spare = rights.held(&hub).saturating_sub(for_checkouts);
    if spare == 0 {
        return Ok(());
    }
    if rights.transfer(&hub, &origin.replica, spare).is_ok() {
        let row = rights.row(&hub);
        w.queue(&origin.replica, Item::Rights { key, state: row });
    }
    Ok(())
}

/// Queues to `heir` what its own state of `location` cannot know once another replica of the
/// location is retired (or when it joins later): the whole merged `Rights` state of every key of
/// the location (every replica's row and the hub's write-offs, not only the hub's row) and, for
/// every SKU there, an `OnHandOf` with each other replica's on-hand entries (the retired
/// replica's, the hub's, any other node's of the location). Merges are idempotent, so relaying
/// twice is harmless. Touches no stored row.
pub async fn relay_location(
    w: &mut Working<'_>,
    env: &Env<'_>,
    location: &LocationId,
    heir: &ReplicaId,
) -> Result<()> {
    let mut keys: BTreeSet<Scarce> = w
        .store
        .location_rights(location)
        .await?
        .into_iter()
        .map(|row| row.key)
        .collect();
    keys.extend(
        w.rights
            .keys()
            .filter(|k| matches!(k, Scarce::Stock { location: l, .. } if l == location))
            .cloned(),
    );
    for key in keys {
        let state = w.rights_view(&key).await?;
        w.queue(heir, Item::Rights { key, state });
    }
    let mut skus: BTreeSet<Sku> = w
        .store
        .location_on_hand(location)
        .await?
        .into_iter()
        .map(|row| row.sku)
        .collect();
    skus.extend(
        w.on_hand
            .keys()
            .filter(|(l, _)| l == location)
            .map(|(_, sku)| sku.clone()),
    );
    // Only the location's nodes write its entries (others' are refused as foreign); the hub's
    // are looked at too, in case it ever wrote one.
    let others: Vec<ReplicaId> = std::iter::once(ReplicaId::hub())
        .chain(env.nodes.of_location(location).map(|n| n.replica.clone()))
        .filter(|r| r != heir)
        .collect();
    for sku in skus {
        let state = w.on_hand_view(location, &sku).await?;
        for replica in &others {
            let entry = state.entry(replica);
            if entry.p > 0 || entry.n > 0 {
                w.queue(
                    heir,
                    Item::OnHandOf {
                        replica: replica.clone(),
                        sku: sku.clone(),
                        location: location.clone(),
                        entry,
                    },
                );
            }
        }
    }
    Ok(())
}

/// Retires `node`: writes off the rights it holds on every key of its location, records the
/// retirement, and relays the location's whole state (with the write-off) to each of its other
/// live nodes ([`relay_location`]).
pub async fn retire(
    w: &mut Working<'_>,
    env: &Env<'_>,
    retired: &BTreeSet<ReplicaId>,
    node: &Node,
) -> Result<RetiredRecord> {
    let heirs: Vec<ReplicaId> = env
        .nodes
        .of_location(&node.location)
        .filter(|n| n.replica != node.replica && !retired.contains(&n.replica))
        .map(|n| n.replica.clone())
        .collect();
    let mut written_off = Vec::new();
    for row in w.store.location_rights(&node.location).await? {
        let rights = w.rights_mut(&row.key).await?;
        rights.retire(&node.replica);
        let off = rights.w.get(&node.replica).copied().unwrap_or(0);
        if off > 0 {
            written_off.push((row.key.clone(), off));
        }
    }
    for heir in &heirs {
        relay_location(w, env, &node.location, heir).await?;
    }
    let record = RetiredRecord {
        replica: node.replica.clone(),
        location: node.location.clone(),
        at_ms: unix_ms(env.now),
        written_off,
    };
    w.write.retired.push(record.clone());
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::sled_store::SledEdgeStore;
    use crate::storage::sled::SledStorage;
    use protocol::replication::counter::Entry;
    use protocol::replication::Hlc;

    struct FixedHolds(u64);

    #[async_trait]
    impl Holds for FixedHolds {
        fn held(&self, _: &LocationId, _: &Sku) -> u64 {
            self.0
        }
        async fn holders(&self, _: &LocationId, _: &Sku) -> Vec<String> {
            vec!["checkout X".into()]
        }
    }

    fn nodes() -> Nodes {
        let settings = crate::config::EdgeSettings {
            nodes: vec![crate::config::EdgeNodeSettings {
                replica: "berlin".into(),
                location: "store-berlin".into(),
                name: "Berlin".into(),
                credential_sha256: hex::encode([7u8; 32]),
            }],
            ..Default::default()
        };
        Nodes::from_settings(&settings).expect("valid")
    }

    fn stamp() -> Hlc {
        Hlc {
            ms: 1,
            c: 0,
            r: ReplicaId("berlin".into()),
        }
    }

    async fn run(store: &SledEdgeStore, nodes: &Nodes, holds: u64, items: Vec<Item>) -> Planned {
        let origin = nodes.iter().next().expect("a node").clone();
        let holds = FixedHolds(holds);
        let env = Env {
            nodes,
            holds: &holds,
            offers: &crate::actors::offers::NoOffers,
            now: OffsetDateTime::now_utc(),
        };
        let mut clock = HybridClock::new(ReplicaId::hub());
        let mut w = Working::new(store);
        merge_batch(&mut w, &env, &mut clock, &origin, items)
            .await
            .expect("merges");
        let planned = w.finish();
        store.commit(planned.write.clone()).await.expect("commits");
        planned
    }

    #[tokio::test]
    async fn deficits_are_settled_from_spare_hub_rights_once() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = SledStorage::open(dir.path(), 4).expect("opens");
        let store = SledEdgeStore::open(&storage).expect("tree");
        let nodes = nodes();
        let (node, hub) = (ReplicaId("berlin".into()), ReplicaId::hub());
        let sku = Sku::parse("TEA").expect("sku");
        let location = LocationId("store-berlin".into());
        let key = Scarce::Stock {
            sku: sku.clone(),
            location: location.clone(),
        };
        // The node created 10 and granted the hub 6.
        let mut at_node = Rights::new();
        at_node.create(&node, 10);
        at_node.transfer(&node, &hub, 6).expect("held");
        let deficit = DeficitRecord {
            id: Ulid::new(),
            replica: node.clone(),
            location: location.clone(),
            sku: sku.clone(),
            units: 5,
            reason: "override".into(),
            sale: None,
            clerk: Some("ada".into()),
            at: stamp(),
        };
        let items = vec![
            Item::Deficit(deficit.clone()),
            Item::Rights {
                key: key.clone(),
                state: at_node.clone(),
            },
            Item::OnHand {
                sku: sku.clone(),
                location: location.clone(),
                entry: Entry { p: 10, n: 5 },
            },
        ];
        // 2 of the hub's 6 are held for checkouts: it settles 4, 1 is short and flagged.
        let planned = run(&store, &nodes, 2, items.clone()).await;
        assert_eq!(planned.levels[0].on_hand, 5);
        let sent = &planned.write.outbox[0].1;
        let settlement = sent
            .iter()
            .find_map(|i| match i {
                Item::Settlement(s) => Some(s.clone()),
                _ => None,
            })
            .expect("a settlement for the node");
        assert_eq!((settlement.settled, settlement.short), (4, 1));
        assert_eq!(settlement.flagged, vec!["checkout X".to_string()]);
        let rights = store.rights(&key).await.expect("reads").expect("row");
        assert_eq!(rights.held(&hub), 2);

        // The same batch again: nothing new is settled.
        let again = run(&store, &nodes, 2, items).await;
        assert!(again.write.settlements.is_empty() && again.write.outbox.is_empty());
        assert_eq!(
            store
                .rights(&key)
                .await
                .expect("reads")
                .expect("row")
                .held(&hub),
            2
        );
    }

    #[test]
    fn large_changes_are_split_into_entries_a_batch_can_carry() {
        let items = vec![Item::Unknown; MAX_BATCH_ITEMS * 2 + 1];
        let entries = bounded_entries(items);
        assert_eq!(entries.len(), 5);
        assert!(entries.iter().all(|e| e.len() <= MAX_BATCH_ITEMS / 2));
        assert_eq!(
            entries.iter().map(Vec::len).sum::<usize>(),
            MAX_BATCH_ITEMS * 2 + 1
        );
        assert!(bounded_entries(Vec::new()).is_empty());
    }

    fn berlin_with_heir() -> Nodes {
        let node = |replica: &str, key: u8| crate::config::EdgeNodeSettings {
            replica: replica.into(),
            location: "store-berlin".into(),
            name: String::new(),
            credential_sha256: hex::encode([key; 32]),
        };
        let settings = crate::config::EdgeSettings {
            nodes: vec![node("berlin", 7), node("berlin-2", 8)],
            ..Default::default()
        };
        Nodes::from_settings(&settings).expect("valid")
    }

    fn outbox_items(planned: &Planned, node: &ReplicaId) -> Vec<Item> {
        planned
            .write
            .outbox
            .iter()
            .filter(|(n, _)| n == node)
            .flat_map(|(_, items)| items.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_retirement_gives_the_heir_the_whole_state_of_the_location() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = SledStorage::open(dir.path(), 4).expect("opens");
        let store = SledEdgeStore::open(&storage).expect("tree");
        let nodes = berlin_with_heir();
        let (old, heir, hub) = (
            ReplicaId("berlin".into()),
            ReplicaId("berlin-2".into()),
            ReplicaId::hub(),
        );
        let (sku, location) = (
            Sku::parse("TEA").expect("sku"),
            LocationId("store-berlin".into()),
        );
        let key = Scarce::Stock {
            sku: sku.clone(),
            location: location.clone(),
        };
        // The old node received 10, granted the hub 4 and sold 3: it holds 3, 7 on the shelf.
        let mut at_old = Rights::new();
        at_old.create(&old, 10);
        at_old.transfer(&old, &hub, 4).expect("held");
        at_old.consume(&old, 3).expect("held");
        run(
            &store,
            &nodes,
            0,
            vec![
                Item::Rights {
                    key: key.clone(),
                    state: at_old.clone(),
                },
                Item::OnHand {
                    sku: sku.clone(),
                    location: location.clone(),
                    entry: Entry { p: 10, n: 3 },
                },
            ],
        )
        .await;

        let holds = FixedHolds(0);
        let env = Env {
            nodes: &nodes,
            holds: &holds,
            offers: &crate::actors::offers::NoOffers,
            now: OffsetDateTime::now_utc(),
        };
        let old_node = nodes.get(&old).expect("configured").clone();
        let mut w = Working::new(&*store);
        let record = retire(&mut w, &env, &BTreeSet::new(), &old_node)
            .await
            .expect("retires");
        assert_eq!(record.written_off, vec![(key.clone(), 3)]);
        let planned = w.finish();
        assert!(planned.write.on_hand.is_empty() && planned.levels.is_empty());
        store.commit(planned.write.clone()).await.expect("commits");
        let merged = store.rights(&key).await.expect("reads").expect("row");

        let sent = outbox_items(&planned, &heir);
        // The whole merged state, not only the hub's row: the old node's row travels too.
        let relayed = sent
            .iter()
            .find_map(|i| match i {
                Item::Rights { key: k, state } if k == &key => Some(state.clone()),
                _ => None,
            })
            .expect("the rights of the location");
        assert_eq!(relayed, merged);
        assert_eq!(relayed.r.get(&old).and_then(|r| r.get(&old)), Some(&10));
        assert_eq!(relayed.w.get(&old), Some(&3));
        // Every other replica's on-hand entries; the hub never wrote one, the heir has its own.
        let relayed_on_hand: Vec<_> = sent
            .iter()
            .filter_map(|i| match i {
                Item::OnHandOf {
                    replica,
                    sku: s,
                    location: l,
                    entry,
                } => Some((replica.clone(), s.clone(), l.clone(), *entry)),
                _ => None,
            })
            .collect();
        assert_eq!(
            relayed_on_hand,
            vec![(
                old.clone(),
                sku.clone(),
                location.clone(),
                Entry { p: 10, n: 3 }
            )]
        );

        // The heir, from nothing, now sees what the hub sees: 4 sellable (the hub's), 7 on hand.
        let mut at_heir = Rights::new();
        let mut on_hand = OnHand::new();
        for item in sent {
            match item {
                Item::Rights { state, .. } => at_heir.merge(&state),
                Item::OnHandOf { replica, entry, .. } => on_hand.apply_entry(&replica, entry),
                _ => {}
            }
        }
        assert_eq!((at_heir.value(), at_heir.held(&hub)), (4, 4));
        assert_eq!(on_hand.value(), 7);
        // The retired replica is no heir of its own.
        assert!(outbox_items(&planned, &old).is_empty());
    }

    #[tokio::test]
    async fn a_later_hub_row_is_merged_into_a_queued_whole_state() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = SledStorage::open(dir.path(), 4).expect("opens");
        let store = SledEdgeStore::open(&storage).expect("tree");
        let (node, hub) = (ReplicaId("berlin".into()), ReplicaId::hub());
        let key = Scarce::Stock {
            sku: Sku::parse("TEA").expect("sku"),
            location: LocationId("store-berlin".into()),
        };
        let mut whole = Rights::new();
        whole.create(&node, 5);
        whole.transfer(&node, &hub, 5).expect("held");
        let mut hub_row = whole.clone();
        hub_row.consume(&hub, 2).expect("held");
        let hub_row = hub_row.row(&hub);
        let mut w = Working::new(&*store);
        w.queue(
            &node,
            Item::Rights {
                key: key.clone(),
                state: whole.clone(),
            },
        );
        w.queue(
            &node,
            Item::Rights {
                key: key.clone(),
                state: hub_row.clone(),
            },
        );
        let mut both = whole;
        both.merge(&hub_row);
        assert_eq!(
            w.outbox.get(&node).cloned(),
            Some(vec![Item::Rights { key, state: both }])
        );
    }

    #[tokio::test]
    async fn a_node_cannot_create_coupon_redemptions() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = SledStorage::open(dir.path(), 4).expect("opens");
        let store = SledEdgeStore::open(&storage).expect("tree");
        let nodes = nodes();
        let (node, hub) = (ReplicaId("berlin".into()), ReplicaId::hub());
        let key = Scarce::Coupon {
            code: "SPRING".into(),
        };
        // The hub made 10 redemptions and granted the node 3; the node also "created" 50 and
        // redeemed 1.
        let mut state = Rights::new();
        state.create(&hub, 10);
        state.transfer(&hub, &node, 3).expect("held");
        state.create(&node, 50);
        state.consume(&node, 1).expect("held");
        let planned = run(
            &store,
            &nodes,
            0,
            vec![Item::Rights {
                key: key.clone(),
                state: state.clone(),
            }],
        )
        .await;
        let stored = store.rights(&key).await.expect("reads").expect("row");
        assert_eq!(stored.r.get(&node).and_then(|r| r.get(&node)), None);
        assert_eq!(stored.u.get(&node), Some(&1), "the redemption is kept");
        assert_eq!(
            stored.created(),
            0,
            "the hub's own row did not come from the node"
        );
        let kinds: Vec<&str> = planned
            .write
            .conflicts
            .iter()
            .map(|(_, c)| c.kind.as_str())
            .collect();
        assert_eq!(kinds, vec!["coupon_creation"]);
        assert!(planned.write.conflicts[0]
            .1
            .detail
            .contains("50 of coupon SPRING"));

        // A row without creation merges quietly.
        let mut honest = Rights::new();
        honest.u.insert(node.clone(), 2);
        let planned = run(
            &store,
            &nodes,
            0,
            vec![Item::Rights {
                key: key.clone(),
                state: honest,
            }],
        )
        .await;
        assert!(planned.write.conflicts.is_empty());
        let stored = store.rights(&key).await.expect("reads").expect("row");
        assert_eq!(stored.u.get(&node), Some(&2));
    }

    fn sale_at(location: &str) -> SaleRecord {
        let price = protocol::Money::new(450, protocol::Currency::EUR);
        SaleRecord {
            id: Ulid::new(),
            number: "berlin-1".into(),
            replica: ReplicaId("berlin".into()),
            location: LocationId(location.into()),
            at: stamp(),
            lines: vec![protocol::replication::SaleLine {
                sku: Sku::parse("TEA").expect("sku"),
                name: "Tea".into(),
                quantity: 1,
                unit_price: price,
                total: price,
                tax_rate_bp: 700,
            }],
            total: price,
            taxes: Vec::new(),
            payments: Vec::new(),
            customer: None,
            clerk: None,
            promotions: Default::default(),
            coupons: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_sale_at_another_location_is_not_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = SledStorage::open(dir.path(), 4).expect("opens");
        let store = SledEdgeStore::open(&storage).expect("tree");
        let nodes = nodes();
        let (here, there) = (sale_at("store-berlin"), sale_at("store-paris"));
        let planned = run(
            &store,
            &nodes,
            0,
            vec![Item::Sale(there.clone()), Item::Sale(here.clone())],
        )
        .await;
        assert_eq!(planned.write.sales, vec![here.clone()]);
        assert_eq!(planned.write.events.len(), 1);
        assert!(store.has_sale(here.id).await.expect("reads"));
        assert!(!store.has_sale(there.id).await.expect("reads"));
        assert_eq!(planned.write.conflicts.len(), 1);
        let conflict = &planned.write.conflicts[0].1;
        assert_eq!(conflict.kind, "foreign_location");
        assert!(
            conflict
                .detail
                .contains(&format!("sale {} at store-paris", there.id)),
            "{}",
            conflict.detail
        );
    }

    #[tokio::test]
    async fn foreign_items_change_nothing_and_are_recorded() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = SledStorage::open(dir.path(), 4).expect("opens");
        let store = SledEdgeStore::open(&storage).expect("tree");
        let nodes = nodes();
        let planned = run(
            &store,
            &nodes,
            0,
            vec![Item::OnHand {
                sku: Sku::parse("TEA").expect("sku"),
                location: LocationId::online(),
                entry: Entry { p: 99, n: 0 },
            }],
        )
        .await;
        assert!(planned.levels.is_empty());
        assert_eq!(planned.write.conflicts.len(), 1);
        assert_eq!(planned.write.conflicts[0].1.kind, "foreign_location");
    }
}
