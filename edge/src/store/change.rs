//! One change in the making (the single writer's unit of work): the states it loads and
//! changes, the records it makes, the rights policy, the merge of hub items, and the commit of
//! it all in one transaction with its outbox entry and journal record.

use super::{now_ms, Store, Writer, MAX_ENTRY_ITEMS};
use crate::journal::JournalRecord;
use crate::ops::OpError;
use crate::storage::{
    coupon_key, customer_coupon_key, idempotency_key, number_key, on_hand_key, outbox_key,
    record_key, rights_key, sale_key, AdjustmentKind, AdjustmentRecord, AppliedCommand, Cursors,
    CustomerCouponUses, IdRef, OutboxEntry, SaleEntry, StoreError, StoredConflict, StoredCoupon,
    StoredDeficit, StoredOnHand, StoredRights, StoredSettlement, WriteSet, ADJUSTMENT, COMMAND,
    CONFLICT, CURSORS, DEFICIT, SETTLEMENT, T,
};
use protocol::replication::sync::{Item, Scarce};
use protocol::replication::{
    Command, CommandKind, CouponTerms, DeficitRecord, Hlc, OnHand, ReplicaId, Rights, SaleRecord,
};
use protocol::{CustomerId, LocationId, Sku};
use std::collections::{BTreeMap, BTreeSet};
use ulid::Ulid;

/// What an adjustment does to on hand.
pub(super) enum Target {
    Add(u64),
    Remove(u64),
    /// A count: the shelf holds this many (see [`Change::adjust`]).
    Set(i64),
}

/// One change in the making: the states it loaded and changed, the records it made, and the
/// writes. [`Change::finish`] turns it into one transaction plus its outbox entry.
pub(super) struct Change<'a> {
    store: &'a Store,
    w: &'a mut Writer,
    pub(super) cursors: Cursors,
    on_hand: BTreeMap<(LocationId, Sku), OnHand>,
    rights: BTreeMap<Scarce, Rights>,
    dirty_on_hand: BTreeSet<(LocationId, Sku)>,
    dirty_rights: BTreeSet<Scarce>,
    /// States this node changed itself: their own entries/rows go to the hub.
    own_on_hand: BTreeSet<Sku>,
    own_rights: BTreeSet<Sku>,
    /// Coupon codes whose redemption rights this node used or handed back: its row goes to
    /// the hub.
    own_coupons: BTreeSet<String>,
    /// Records this node made, for the hub.
    records: Vec<Item>,
    pub(super) writes: WriteSet,
    journal_sale: Option<SaleRecord>,
    journal_deficits: Vec<DeficitRecord>,
    journal_return: Option<protocol::replication::ReturnRecord>,
    last_stamp_ms: u64,
}

impl<'a> Change<'a> {
    pub(super) fn new(store: &'a Store, w: &'a mut Writer) -> Change<'a> {
        Change {
            store,
            cursors: w.cursors.clone(),
            w,
            on_hand: BTreeMap::new(),
            rights: BTreeMap::new(),
            dirty_on_hand: BTreeSet::new(),
            dirty_rights: BTreeSet::new(),
            own_on_hand: BTreeSet::new(),
            own_rights: BTreeSet::new(),
            own_coupons: BTreeSet::new(),
            records: Vec::new(),
            writes: WriteSet::default(),
            journal_sale: None,
            journal_deficits: Vec::new(),
            journal_return: None,
            last_stamp_ms: 0,
        }
    }

    /// Sends a record this node made to the hub with this change (a return, a board's event).
    pub(super) fn push_record(&mut self, item: Item) {
        self.records.push(item);
    }

    fn me(&self) -> &ReplicaId {
        &self.store.me.replica
    }

    pub(super) fn stamp(&mut self) -> Hlc {
        let h = self.w.clock.now(now_ms());
        self.last_stamp_ms = self.last_stamp_ms.max(h.ms);
        h
    }

    fn own_key(&self, sku: &Sku) -> Scarce {
        Scarce::Stock {
            sku: sku.clone(),
            location: self.store.me.location.clone(),
        }
    }

    fn on_hand_mut(&mut self, location: &LocationId, sku: &Sku) -> Result<&mut OnHand, StoreError> {
        let k = (location.clone(), sku.clone());
        if !self.on_hand.contains_key(&k) {
            let found: Option<StoredOnHand> =
                self.store.db.get(T::Stock, &on_hand_key(location, sku))?;
            self.on_hand
                .insert(k.clone(), found.map(|s| s.state).unwrap_or_default());
        }
        Ok(self.on_hand.entry(k).or_default())
    }

    fn rights_mut(&mut self, key: &Scarce) -> Result<&mut Rights, StoreError> {
        if !self.rights.contains_key(key) {
            let found: Option<StoredRights> = self.store.db.get(T::Stock, &rights_key(key))?;
            self.rights
                .insert(key.clone(), found.map(|s| s.state).unwrap_or_default());
        }
        Ok(self.rights.entry(key.clone()).or_default())
    }

    /// Rights this node holds for a SKU at its location.
    pub(super) fn held(&mut self, sku: &Sku) -> Result<u64, StoreError> {
        let me = self.me().clone();
        let key = self.own_key(sku);
        Ok(self.rights_mut(&key)?.held(&me))
    }

    /// Stock arrived: add on hand, create as many rights.
    pub(super) fn add_stock(&mut self, sku: &Sku, units: u64) -> Result<(), StoreError> {
        let (me, loc, key) = (
            self.me().clone(),
            self.store.me.location.clone(),
            self.own_key(sku),
        );
        self.on_hand_mut(&loc, sku)?.add(&me, units);
        self.rights_mut(&key)?.create(&me, units);
        self.own_on_hand.insert(sku.clone());
        self.own_rights.insert(sku.clone());
        Ok(())
    }

    /// Stock left: remove on hand, consume own rights up to `units`; returns how many rights
    /// were consumed.
    pub(super) fn take_stock(&mut self, sku: &Sku, units: u64) -> Result<u64, StoreError> {
        let (me, loc, key) = (
            self.me().clone(),
            self.store.me.location.clone(),
            self.own_key(sku),
        );
        self.on_hand_mut(&loc, sku)?.remove(&me, units);
        let consumed = self.rights_mut(&key)?.consume_up_to(&me, units);
        self.own_on_hand.insert(sku.clone());
        self.own_rights.insert(sku.clone());
        Ok(consumed)
    }

    /// Redeems one use of a coupon for a sale: a limited code consumes one of the redemption
    /// rights this node holds (none held: refused, whether the link is up or not); a code
    /// limited per customer counts the customer's use here (the node knows only its own: two
    /// stores' uses beyond the limit are a conflict the hub records at merge).
    pub(super) fn redeem_coupon(
        &mut self,
        terms: &CouponTerms,
        customer: Option<CustomerId>,
    ) -> Result<(), OpError> {
        let refuse = |reason: String| {
            Err(OpError::invalid(
                "invalid_coupon",
                format!("coupon {}: {reason}", terms.code),
            ))
        };
        if let (Some(max), Some(c)) = (terms.per_customer, customer) {
            let key = customer_coupon_key(&terms.code, &c);
            let used = self
                .store
                .db
                .get::<CustomerCouponUses>(T::Records, &key)?
                .unwrap_or_default();
            if used.uses >= max {
                return refuse(format!(
                    "the customer has used it {} time(s) already, as often as it allows",
                    used.uses
                ));
            }
            self.writes.put(
                T::Records,
                key,
                &CustomerCouponUses {
                    uses: used.uses + 1,
                },
            )?;
        }
        if terms.limited {
            let me = self.me().clone();
            let key = Scarce::Coupon {
                code: terms.code.clone(),
            };
            let rights = self.rights_mut(&key)?;
            if rights.consume(&me, 1).is_err() {
                let used = rights.u.get(&me).copied().unwrap_or(0);
                return refuse(format!(
                    "this store holds no more redemptions of it ({used} used here); the hub grants more while the store is connected, and it may still be used online"
                ));
            }
            self.own_coupons.insert(terms.code.clone());
        }
        Ok(())
    }

    /// Makes a deficit record (stored, journaled and sent with this change).
    pub(super) fn deficit(
        &mut self,
        sku: &Sku,
        units: u64,
        reason: String,
        sale: Option<Ulid>,
        clerk: Option<String>,
        at: &Hlc,
    ) -> Result<DeficitRecord, StoreError> {
        let d = DeficitRecord {
            id: Ulid::new(),
            replica: self.me().clone(),
            location: self.store.me.location.clone(),
            sku: sku.clone(),
            units,
            reason,
            sale,
            clerk,
            at: at.clone(),
        };
        self.writes.put(
            T::Records,
            record_key(DEFICIT, d.id),
            &StoredDeficit(d.clone()),
        )?;
        self.journal_deficits.push(d.clone());
        self.records.push(Item::Deficit(d.clone()));
        Ok(d)
    }

    /// A return made (or replayed) in this change: sent to the hub and journaled like a sale.
    pub(super) fn record_return(&mut self, r: &protocol::replication::ReturnRecord) {
        self.records.push(Item::Return(r.clone()));
        self.journal_return = Some(r.clone());
    }

    /// Makes a conflict record of this node's (stored, and sent with this change).
    pub(super) fn conflict(
        &mut self,
        kind: &str,
        detail: String,
    ) -> Result<protocol::replication::ConflictRecord, StoreError> {
        let c = protocol::replication::ConflictRecord {
            id: Ulid::new(),
            replica: self.me().clone(),
            kind: kind.to_string(),
            detail,
            at: self.stamp(),
        };
        self.writes.put(
            T::Records,
            record_key(CONFLICT, c.id),
            &StoredConflict(c.clone()),
        )?;
        self.records.push(Item::Conflict(c.clone()));
        Ok(c)
    }

    pub(super) fn record_sale(
        &mut self,
        entry: &SaleEntry,
        idem: Option<&str>,
    ) -> Result<(), StoreError> {
        let id = entry.sale.id;
        self.writes.put(T::Sales, sale_key(id), entry)?;
        self.writes
            .put(T::Sales, number_key(&entry.sale.number), &IdRef { id })?;
        if let Some(key) = idem {
            self.writes
                .put(T::Sales, idempotency_key(key), &IdRef { id })?;
        }
        self.records.push(Item::Sale(entry.sale.clone()));
        self.journal_sale = Some(entry.sale.clone());
        Ok(())
    }

    /// A stock adjustment made by this node (from the API or a hub command).
    ///
    /// A receipt adds on hand and creates as many rights; damage removes on hand and consumes
    /// as many of the node's own rights (beyond them: a deficit record).
    ///
    /// A **count** (`Target::Set(n)`) says the shelf holds `n` units, and each physical unit
    /// should carry exactly one right. On hand and the rights value (units sellable anywhere,
    /// `Rights::value`) usually agree, but not always: after a rebuild (the retired replica's
    /// rights held at retirement are written off while its on-hand entries stay) or a journal
    /// replay (sales taken from on hand beyond the rights) they diverge. So a count moves each
    /// against its own figure and re-aligns both with the shelf:
    /// - on hand moves by `n − on_hand`;
    /// - rights: with `value` clamped at ≥ 0, if `n > value` the node creates `n − value`; if
    ///   `n < value` it consumes `value − n` of its own rights, and what it holds too few for
    ///   (the rest is held by the hub) becomes a deficit record for the hub to settle.
    pub(super) fn adjust(
        &mut self,
        kind: AdjustmentKind,
        sku: &Sku,
        target: Target,
        reason: String,
        clerk: Option<String>,
        command: Option<Ulid>,
    ) -> Result<AdjustmentRecord, StoreError> {
        let (me, loc, key) = (
            self.me().clone(),
            self.store.me.location.clone(),
            self.own_key(sku),
        );
        let before = self.on_hand_mut(&loc, sku)?.value();
        let at = self.stamp();
        let why = format!("{}: {reason}", kind_text(&kind));
        let (delta, created, consumed, short): (i64, u64, u64, u64) = match target {
            Target::Add(0) | Target::Remove(0) => (0, 0, 0, 0),
            Target::Add(n) => {
                self.add_stock(sku, n)?;
                (i64::try_from(n).unwrap_or(i64::MAX), n, 0, 0)
            }
            Target::Remove(n) => {
                let consumed = self.take_stock(sku, n)?;
                (
                    -i64::try_from(n).unwrap_or(i64::MAX),
                    0,
                    consumed,
                    n - consumed,
                )
            }
            Target::Set(n) => {
                let n = n.max(0);
                let delta = n.saturating_sub(before);
                let on_hand = self.on_hand_mut(&loc, sku)?;
                if delta > 0 {
                    on_hand.add(&me, delta.unsigned_abs());
                } else if delta < 0 {
                    on_hand.remove(&me, delta.unsigned_abs());
                }
                let rights = self.rights_mut(&key)?;
                let value = u64::try_from(rights.value().max(0)).unwrap_or(u64::MAX);
                let n = n.unsigned_abs();
                let (mut created, mut consumed, mut short) = (0, 0, 0);
                if n > value {
                    created = n - value;
                    rights.create(&me, created);
                } else if n < value {
                    let units = value - n;
                    consumed = rights.consume_up_to(&me, units);
                    short = units - consumed;
                }
                if delta != 0 {
                    self.own_on_hand.insert(sku.clone());
                }
                if created > 0 || consumed > 0 {
                    self.own_rights.insert(sku.clone());
                }
                (delta, created, consumed, short)
            }
        };
        let deficit = if short > 0 {
            Some(self.deficit(sku, short, why, None, clerk.clone(), &at)?)
        } else {
            None
        };
        self.policy(sku)?;
        let record = AdjustmentRecord {
            id: Ulid::new(),
            kind,
            sku: sku.clone(),
            delta,
            on_hand_after: before.saturating_add(delta),
            rights_created: created,
            rights_consumed: consumed,
            reason,
            clerk,
            deficit,
            command,
            at_ms: at.ms,
        };
        self.writes
            .put(T::Records, record_key(ADJUSTMENT, record.id), &record)?;
        Ok(record)
    }

    /// The node's policy for one SKU at its location (only while connected): grant the hub
    /// rights up to `floor((value − buffer) × share / 100)`, never giving away the last
    /// `buffer`; when the node holds fewer than `buffer`, ask the hub for the difference.
    pub(super) fn policy(&mut self, sku: &Sku) -> Result<(), StoreError> {
        if !self.store.is_connected() {
            return Ok(());
        }
        let (me, hub) = (self.me().clone(), self.store.hub.clone());
        let buffer = self.store.me.safety_buffer;
        let share = u64::from(self.store.me.online_share_percent.min(100));
        let key = self.own_key(sku);
        let rights = self.rights_mut(&key)?;
        let value = u64::try_from(rights.value().max(0)).unwrap_or(u64::MAX);
        let target = value.saturating_sub(buffer).saturating_mul(share) / 100;
        let hub_held = rights.held(&hub);
        let mine = rights.held(&me);
        let give = target
            .saturating_sub(hub_held)
            .min(mine.saturating_sub(buffer));
        if give > 0 && rights.transfer(&me, &hub, give).is_ok() {
            self.own_rights.insert(sku.clone());
        }
        let mine = self.rights_mut(&key)?.held(&me);
        let want = buffer.saturating_sub(mine).min(hub_held);
        let asked = self.w.wanted.get(sku).copied().unwrap_or(0);
        if want == 0 {
            self.w.wanted.remove(sku);
        } else if want > asked {
            let at = self.stamp();
            self.records.push(Item::Command(Command {
                id: Ulid::new(),
                kind: CommandKind::WantRights {
                    sku: sku.clone(),
                    location: self.store.me.location.clone(),
                    units: want,
                },
                at,
            }));
            self.w.wanted.insert(sku.clone(), want);
        }
        Ok(())
    }

    /// The database (reads of what this change has not touched).
    pub(super) fn db(&self) -> &crate::storage::Db {
        &self.store.db
    }

    /// This node's replica and location.
    pub(super) fn identity(&self) -> (ReplicaId, LocationId) {
        (self.me().clone(), self.store.me.location.clone())
    }

    /// A record this node made, sent to the hub with this change (a pickup report).
    pub(super) fn report(&mut self, item: Item) {
        self.records.push(item);
    }

    /// On hand of a SKU at this node's location, as this change sees it.
    pub(super) fn on_hand_here(&mut self, sku: &Sku) -> Result<i64, StoreError> {
        let loc = self.store.me.location.clone();
        Ok(self.on_hand_mut(&loc, sku)?.value())
    }

    /// Units of a click-and-collect order leave the shelf at the handover: on hand goes down,
    /// no rights are consumed (the hub consumed its own for them when the order was paid).
    pub(super) fn hand_over_units(&mut self, sku: &Sku, units: u64) -> Result<(), StoreError> {
        let (me, loc) = (self.me().clone(), self.store.me.location.clone());
        self.on_hand_mut(&loc, sku)?.remove(&me, units);
        self.own_on_hand.insert(sku.clone());
        Ok(())
    }

    /// Units set aside for a cancelled pickup are sellable again: this node, the creator of its
    /// location's rights, creates rights for them (on hand is unchanged: they never left).
    pub(super) fn recreate_rights(&mut self, sku: &Sku, units: u64) -> Result<(), StoreError> {
        let (me, key) = (self.me().clone(), self.own_key(sku));
        self.rights_mut(&key)?.create(&me, units);
        self.own_rights.insert(sku.clone());
        Ok(())
    }

    /// Merges one item of a batch from `origin`.
    pub(super) fn merge_item(
        &mut self,
        origin: &ReplicaId,
        item: Item,
        touched: &mut BTreeSet<Sku>,
    ) -> Result<(), StoreError> {
        let own_location = self.store.me.location.clone();
        match item {
            // Another replica's entries relayed by the hub (a retired replica's, to the node that
            // took over its location): merged (pointwise max) as that replica's entries, so this
            // node's on hand counts what the old replica received and sold. Only the hub relays,
            // and only for this node's location.
            Item::OnHandOf {
                replica,
                sku,
                location,
                entry,
            } => {
                if !origin.is_hub() {
                    tracing::warn!(%origin, %replica, %sku, "relayed on-hand entries from a replica other than the hub: ignored");
                } else if location != own_location {
                    tracing::debug!(%replica, %sku, %location, "relayed on-hand entries for another location: ignored");
                } else {
                    self.on_hand_mut(&location, &sku)?
                        .apply_entry(&replica, entry);
                    self.dirty_on_hand.insert((location, sku));
                }
            }
            Item::OnHand {
                sku,
                location,
                entry,
            } => {
                self.on_hand_mut(&location, &sku)?
                    .apply_entry(origin, entry);
                self.dirty_on_hand.insert((location, sku));
            }
            // Usually the origin's row; from the hub it may be the whole merged state (to a
            // retired replica's heir: the old replica's row, the hub's, the write-off `W`). Every
            // row is merged, none filtered: the pointwise max is safe for each, and it never
            // lowers anything, so this node's own row can only be what it has or what it had
            // sent before.
            Item::Rights { key, state } => {
                self.rights_mut(&key)?.merge(&state);
                self.dirty_rights.insert(key.clone());
                if let Scarce::Stock { sku, location } = key {
                    if location == own_location {
                        self.w.wanted.remove(&sku);
                        touched.insert(sku);
                    }
                }
            }
            Item::Settlement(s) => {
                self.w.clock.observe(&s.at);
                self.writes.put(
                    T::Records,
                    record_key(SETTLEMENT, s.deficit),
                    &StoredSettlement(s),
                )?;
            }
            Item::Conflict(c) => {
                self.w.clock.observe(&c.at);
                self.writes
                    .put(T::Records, record_key(CONFLICT, c.id), &StoredConflict(c))?;
            }
            Item::Command(c) => self.command(c, touched)?,
            Item::Coupon(terms) => {
                if origin.is_hub() {
                    self.w.clock.observe(&terms.at);
                    self.writes.put(
                        T::Records,
                        coupon_key(&terms.code),
                        &StoredCoupon {
                            terms,
                            ended: false,
                        },
                    )?;
                } else {
                    tracing::warn!(%origin, code = %terms.code, "coupon terms from a replica other than the hub: ignored");
                }
            }
            Item::Sale(s) => {
                tracing::debug!(sale = %s.id, "a sale record from the hub: not this node's, ignored")
            }
            Item::Deficit(d) => {
                tracing::debug!(deficit = %d.id, "a deficit record from the hub: not this node's, ignored")
            }
            Item::Pickup(r) => {
                tracing::debug!(order = %r.order, "a pickup report from the hub: not this node's, ignored")
            }
            Item::Return(r) => {
                tracing::debug!(r#return = %r.id, "a return record from the hub: not this node's, ignored")
            }
            Item::Event(e) => {
                tracing::debug!(event = %e.id, "an event from the hub: the hub keeps the event log, ignored")
            }
            Item::Unknown => tracing::debug!("an item kind this build does not know: ignored"),
        }
        Ok(())
    }

    /// Applies a hub command once (by id).
    fn command(&mut self, c: Command, touched: &mut BTreeSet<Sku>) -> Result<(), StoreError> {
        self.w.clock.observe(&c.at);
        let key = record_key(COMMAND, c.id);
        if self.store.db.contains(T::Records, &key)? {
            return Ok(());
        }
        let own = self.store.me.location.clone();
        let mut seq = None;
        match &c.kind {
            // A forwarded count with `as_seen` is relative: the hub saw `as_seen` on hand when it
            // forwarded `on_hand`, and sales (or other moves) made here since then must not be
            // counted back onto the shelf, so the target is what the node has now plus the
            // difference the count found. Without `as_seen` the count is absolute. Either way,
            // the target is applied as a count (see `adjust`), never below 0.
            CommandKind::Count {
                sku,
                location,
                on_hand,
                as_seen,
            } if *location == own => {
                let target = match as_seen {
                    Some(seen) => {
                        let now = self.on_hand_mut(&own, sku)?.value();
                        now.saturating_add(on_hand.saturating_sub(*seen))
                    }
                    None => *on_hand,
                };
                let reason = match as_seen {
                    Some(seen) => format!(
                        "count from the hub ({on_hand} where the hub saw {seen}: applied as a difference)"
                    ),
                    None => "count from the hub".to_string(),
                };
                self.adjust(
                    AdjustmentKind::HubCount,
                    sku,
                    Target::Set(target.max(0)),
                    reason,
                    None,
                    Some(c.id),
                )?;
                touched.insert(sku.clone());
                seq = Some(self.cursors.next_seq);
            }
            CommandKind::Restock {
                sku,
                location,
                units,
                reason,
            } if *location == own => {
                self.adjust(
                    AdjustmentKind::HubRestock,
                    sku,
                    Target::Add(*units),
                    reason.clone(),
                    None,
                    Some(c.id),
                )?;
                touched.insert(sku.clone());
                seq = Some(self.cursors.next_seq);
            }
            CommandKind::WantRights {
                sku,
                location,
                units,
            } if *location == own => {
                let (me, hub) = (self.me().clone(), self.store.hub.clone());
                let buffer = self.store.me.safety_buffer;
                let key = self.own_key(sku);
                let rights = self.rights_mut(&key)?;
                let give = (*units).min(rights.held(&me).saturating_sub(buffer));
                if give > 0 && rights.transfer(&me, &hub, give).is_ok() {
                    self.own_rights.insert(sku.clone());
                    seq = Some(self.cursors.next_seq);
                }
                tracing::info!(%sku, asked = units, given = give, "the hub asked for rights");
            }
            CommandKind::EndCoupon { code } => {
                let ckey = coupon_key(code);
                if let Some(mut stored) = self.store.db.get::<StoredCoupon>(T::Records, &ckey)? {
                    stored.ended = true;
                    self.writes.put(T::Records, ckey, &stored)?;
                }
                let (me, hub) = (self.me().clone(), self.store.hub.clone());
                let key = Scarce::Coupon { code: code.clone() };
                let rights = self.rights_mut(&key)?;
                let back = rights.held(&me);
                if back > 0 && rights.transfer(&me, &hub, back).is_ok() {
                    self.own_coupons.insert(code.clone());
                    seq = Some(self.cursors.next_seq);
                }
                tracing::info!(%code, handed_back = back, "the hub ended a coupon");
            }
            CommandKind::Pickup(order) if order.location == own => {
                super::pickup::receive(self, c.id, order)?;
            }
            CommandKind::CancelPickup {
                order,
                location,
                reason,
            } if *location == own => {
                let released = super::pickup::cancel(self, *order, reason)?;
                if !released.is_empty() {
                    seq = Some(self.cursors.next_seq);
                }
                touched.extend(released);
            }
            CommandKind::Unknown => {
                tracing::debug!(command = %c.id, "a command kind this build does not know: ignored")
            }
            other => {
                tracing::warn!(command = %c.id, ?other, "a command for another location: ignored")
            }
        }
        self.writes
            .put(T::Records, key, &AppliedCommand { command: c, seq })?;
        Ok(())
    }

    /// Commits the change: states, records, the outbox entries of the items this node made and
    /// the cursors in one transaction; flushes; journals sales and deficits (fsync'd); then
    /// tells the sync task. Returns the own seqs used, if any.
    ///
    /// Once the commit succeeded the writer adopts the new cursors at once, whatever follows,
    /// so no later change can reuse a seq (and overwrite an outbox entry). A failed flush puts
    /// the store in the failed state ([`StoreError::Failed`]): the change is not announced to
    /// the sync task, and nothing more is written until a restart. A failed journal append
    /// after a durable commit still announces the change (it is in the outbox and will reach
    /// the hub) and answers [`StoreError::Unjournaled`] with the sale, so the till knows the
    /// sale exists.
    pub(super) fn finish(mut self) -> Result<Option<(u64, u64)>, StoreError> {
        let me = self.me().clone();
        let loc = self.store.me.location.clone();
        for sku in &self.own_on_hand {
            self.dirty_on_hand.insert((loc.clone(), sku.clone()));
        }
        for sku in self.own_rights.clone() {
            self.dirty_rights.insert(self.own_key(&sku));
        }
        for code in &self.own_coupons {
            self.dirty_rights
                .insert(Scarce::Coupon { code: code.clone() });
        }
        for k in &self.dirty_on_hand {
            if let Some(state) = self.on_hand.get(k) {
                self.writes.put(
                    T::Stock,
                    on_hand_key(&k.0, &k.1),
                    &StoredOnHand {
                        sku: k.1.clone(),
                        location: k.0.clone(),
                        state: state.clone(),
                    },
                )?;
            }
        }
        for k in &self.dirty_rights {
            if let Some(state) = self.rights.get(k) {
                self.writes.put(
                    T::Stock,
                    rights_key(k),
                    &StoredRights {
                        key: k.clone(),
                        state: state.clone(),
                    },
                )?;
            }
        }
        let mut items = Vec::new();
        for sku in &self.own_on_hand {
            if let Some(state) = self.on_hand.get(&(loc.clone(), sku.clone())) {
                items.push(Item::OnHand {
                    sku: sku.clone(),
                    location: loc.clone(),
                    entry: state.entry(&me),
                });
            }
        }
        for sku in &self.own_rights {
            let key = self.own_key(sku);
            if let Some(state) = self.rights.get(&key) {
                items.push(Item::Rights {
                    state: state.row(&me),
                    key,
                });
            }
        }
        for code in &self.own_coupons {
            let key = Scarce::Coupon { code: code.clone() };
            if let Some(state) = self.rights.get(&key) {
                items.push(Item::Rights {
                    state: state.row(&me),
                    key,
                });
            }
        }
        items.append(&mut self.records);
        let mut cursors = std::mem::take(&mut self.cursors);
        let seqs = if items.is_empty() {
            None
        } else {
            let first = cursors.next_seq;
            cursors.pending_items += items.len() as u64;
            for chunk in items.chunks(MAX_ENTRY_ITEMS) {
                self.writes.put(
                    T::Outbox,
                    outbox_key(cursors.next_seq),
                    &OutboxEntry {
                        items: chunk.to_vec(),
                    },
                )?;
                cursors.next_seq += 1;
            }
            Some((first, cursors.next_seq - 1))
        };
        cursors.clock_ms = cursors.clock_ms.max(self.last_stamp_ms);
        cursors.clock_offset_ms = self.w.clock.offset_ms();
        self.writes.put(T::Meta, CURSORS.to_vec(), &cursors)?;
        self.store.db.commit(&self.writes)?;
        self.w.cursors = cursors;
        self.store.flush_or_fail(&match &self.journal_sale {
            Some(sale) => format!("sale {} ({})", sale.number, sale.id),
            None => "a change".to_string(),
        })?;
        if let Some((_, last)) = seqs {
            let mut journaled = Ok(());
            if self.journal_sale.is_some()
                || !self.journal_deficits.is_empty()
                || self.journal_return.is_some()
            {
                let sale = self.journal_sale.take();
                let reference = sale.as_ref().map(|s| (s.id, s.number.clone()));
                journaled = self
                    .store
                    .journal
                    .append(&[JournalRecord {
                        seq: last,
                        replica: me,
                        location: loc,
                        sale,
                        deficits: std::mem::take(&mut self.journal_deficits),
                        returned: self.journal_return.take(),
                        acked_upto: None,
                    }])
                    .map_err(|e| {
                        tracing::error!(error = %e, seq = last, sale = ?reference, "a durable change could not be journaled (the journal is completed from the outbox on the next open)");
                        StoreError::Unjournaled {
                            sale: reference,
                            source: Box::new(e),
                        }
                    });
            }
            // Durable in the database and in the outbox: the sync task may send it either way.
            self.store.durable.send_replace(last);
            journaled?;
        }
        Ok(seqs)
    }
}

fn kind_text(kind: &AdjustmentKind) -> &'static str {
    match kind {
        AdjustmentKind::Receipt => "receipt",
        AdjustmentKind::Count => "count",
        AdjustmentKind::Damage => "damage",
        AdjustmentKind::HubCount => "count from the hub",
        AdjustmentKind::HubRestock => "restock from the hub",
    }
}
