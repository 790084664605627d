//! Click-and-collect at the store (`docs/click-and-collect.md`): the pick list the hub sends
//! (`CommandKind::Pickup`, applied once by id, and once per order), picking, short picks, the
//! handover, and the hub's cancellation. Each step is one change of the single writer: the
//! pickup record, the stock it moves and the report to the hub (`Item::Pickup`) are committed
//! together, so picking and handing over work offline and reach the hub later.
//!
//! The rights model: the hub consumed its own rights at this store for the order's units when
//! the order was paid, so they are not among the rights the node sells from; they stay on hand
//! until the handover, which takes them off the shelf without consuming rights again. While a
//! pickup is open its units are set aside: a walk-in sale that would dip into them is refused,
//! with or without a manager's override ([`refuse_held`]). A cancellation before the handover
//! puts them back: the node creates rights for them again.

use super::change::Change;
use super::Store;
use crate::ops::OpError;
use crate::storage::{StoreError, T};
use protocol::codec::Stored;
use protocol::replication::sync::Item;
use protocol::replication::{PickupOrder, PickupReport, PickupState};
use protocol::{OrderId, Sku};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use ulid::Ulid;

/// Open pickups (on the pick list) are keyed `p` + order id in the records tree; closed ones
/// (collected or cancelled) move to `P` + order id, so a sale scans only the open ones.
const OPEN: u8 = b'p';
const CLOSED: u8 = b'P';

fn key(prefix: u8, order: OrderId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(&order.to_bytes());
    k
}

/// A click-and-collect order at this store, as the node keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pickup {
    #[serde(flatten)]
    pub order: PickupOrder,
    pub state: PickupState,
    /// Units the clerk could not find (SKU → units missing).
    #[serde(default)]
    pub short: BTreeMap<Sku, u32>,
    /// Set when the hub cancelled it before the handover (its units are sellable again).
    #[serde(default)]
    pub cancelled: Option<String>,
    /// The hub's command that put it on the pick list.
    pub command: Ulid,
    pub received_ms: u64,
    #[serde(default)]
    pub picked_by: Option<String>,
    #[serde(default)]
    pub picked_ms: Option<u64>,
    #[serde(default)]
    pub handed_over_by: Option<String>,
    #[serde(default)]
    pub handed_over_ms: Option<u64>,
}

impl Stored for Pickup {
    const KIND: &'static str = "edge.pickup";
    const VERSION: u16 = 1;
}

impl Pickup {
    /// Whether it is on the pick list (neither collected nor cancelled).
    pub fn is_open(&self) -> bool {
        self.cancelled.is_none() && self.state < PickupState::Collected
    }

    /// Units of each SKU set aside for it: ordered less short.
    pub fn units(&self) -> BTreeMap<Sku, u64> {
        let mut units: BTreeMap<Sku, u64> = BTreeMap::new();
        for l in &self.order.lines {
            *units.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
        }
        for (sku, short) in &self.short {
            if let Some(u) = units.get_mut(sku) {
                *u = u.saturating_sub(u64::from(*short));
            }
        }
        units
    }
}

/// A pickup as this change sees it: written earlier in the change, or stored.
fn find(ch: &Change<'_>, order: OrderId) -> Result<Option<Pickup>, StoreError> {
    for prefix in [OPEN, CLOSED] {
        let k = key(prefix, order);
        match ch.writes.pending(T::Records, &k) {
            Some(Some(bytes)) => return Ok(Some(protocol::decode(bytes)?)),
            Some(None) => continue,
            None => {
                if let Some(p) = ch.db().get::<Pickup>(T::Records, &k)? {
                    return Ok(Some(p));
                }
            }
        }
    }
    Ok(None)
}

/// Stores a pickup under the key its state gives (moving it when it closes).
fn put(ch: &mut Change<'_>, p: &Pickup) -> Result<(), StoreError> {
    let (now, other) = if p.is_open() {
        (OPEN, CLOSED)
    } else {
        (CLOSED, OPEN)
    };
    ch.writes.remove(T::Records, key(other, p.order.order));
    ch.writes.put(T::Records, key(now, p.order.order), p)
}

fn report(ch: &mut Change<'_>, p: &Pickup, clerk: Option<String>) {
    let at = ch.stamp();
    let (replica, location) = ch.identity();
    ch.report(Item::Pickup(PickupReport {
        id: Ulid::new(),
        order: p.order.order,
        replica,
        location,
        state: p.state,
        short: p.short.iter().map(|(s, n)| (s.clone(), *n)).collect(),
        clerk,
        at,
    }));
}

/// The hub's pick list entry for an order (its command applied once by id; a second command
/// for the same order changes nothing).
pub(super) fn receive(
    ch: &mut Change<'_>,
    command: Ulid,
    order: &PickupOrder,
) -> Result<(), StoreError> {
    if find(ch, order.order)?.is_some() {
        tracing::info!(order = %order.number, "a pickup already on this node: ignored");
        return Ok(());
    }
    tracing::info!(order = %order.number, lines = order.lines.len(), "click-and-collect order on the pick list");
    let p = Pickup {
        order: order.clone(),
        state: PickupState::Waiting,
        short: BTreeMap::new(),
        cancelled: None,
        command,
        received_ms: super::now_ms(),
        picked_by: None,
        picked_ms: None,
        handed_over_by: None,
        handed_over_ms: None,
    };
    put(ch, &p)
}

/// The hub cancelled the order: off the pick list, and the node creates rights again for the
/// units it had set aside (they never left the shelf). Answers the SKUs whose rights changed.
/// Too late once collected: recorded in the log, the hub flags the order when the handover
/// report reaches it.
pub(super) fn cancel(
    ch: &mut Change<'_>,
    order: OrderId,
    reason: &str,
) -> Result<Vec<Sku>, StoreError> {
    let Some(mut p) = find(ch, order)? else {
        tracing::warn!(%order, "cancellation of a pickup this node never had: ignored");
        return Ok(Vec::new());
    };
    if !p.is_open() {
        tracing::warn!(order = %p.order.number, state = p.state.as_str(), "cancellation of a pickup already closed: nothing to release");
        return Ok(Vec::new());
    }
    let units = p.units();
    for (sku, n) in &units {
        if *n > 0 {
            ch.recreate_rights(sku, *n)?;
        }
    }
    p.cancelled = Some(reason.to_string());
    put(ch, &p)?;
    tracing::info!(order = %p.order.number, "pickup cancelled by the hub: units released");
    Ok(units.into_keys().collect())
}

/// Units of `sku` set aside for open pickups, as this change sees them.
fn held_for_pickups(ch: &Change<'_>) -> Result<BTreeMap<Sku, u64>, StoreError> {
    let mut held: BTreeMap<Sku, u64> = BTreeMap::new();
    for p in open(ch.db())? {
        for (sku, n) in p.units() {
            *held.entry(sku).or_default() += n;
        }
    }
    Ok(held)
}

/// Refuses a walk-in sale that would take units set aside for click-and-collect: for every
/// SKU with units on the pick list, the sale may take at most what is on hand beyond them,
/// whatever rights or override it has (409 `held_for_pickup`).
pub(super) fn refuse_held(ch: &mut Change<'_>, units: &[(Sku, u64)]) -> Result<(), OpError> {
    let held = held_for_pickups(ch)?;
    let mut refused = Vec::new();
    for (sku, qty) in units {
        let Some(aside) = held.get(sku).copied().filter(|n| *n > 0) else {
            continue;
        };
        let on_hand = ch.on_hand_here(sku)?;
        let free = on_hand.saturating_sub(i64::try_from(aside).unwrap_or(i64::MAX));
        if i64::try_from(*qty).unwrap_or(i64::MAX) > free {
            refused.push(format!(
                "{sku} ({qty} wanted, {} free: {aside} set aside for click-and-collect)",
                free.max(0)
            ));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(OpError::Conflict {
            code: "held_for_pickup",
            message: format!(
                "units on the click-and-collect pick list cannot be sold to a walk-in customer, not even with a manager override: {}",
                refused.join(", ")
            ),
        })
    }
}

fn open(db: &crate::storage::Db) -> Result<Vec<Pickup>, StoreError> {
    let mut out = Vec::new();
    for kv in db.tree(T::Records).scan_prefix([OPEN]) {
        let (_, v) = kv?;
        out.push(protocol::decode::<Pickup>(&v)?);
    }
    Ok(out)
}

/// A pickup by order id or order number (`W-000042`), open or closed.
fn lookup(store: &Store, order: &str) -> Result<Option<Pickup>, StoreError> {
    let order = order.trim();
    if let Ok(id) = order.parse::<OrderId>() {
        for prefix in [OPEN, CLOSED] {
            if let Some(p) = store.db().get::<Pickup>(T::Records, &key(prefix, id))? {
                return Ok(Some(p));
            }
        }
        return Ok(None);
    }
    for prefix in [OPEN, CLOSED] {
        for kv in store.db().tree(T::Records).scan_prefix([prefix]) {
            let (_, v) = kv?;
            let p: Pickup = protocol::decode(&v)?;
            if p.order.number.eq_ignore_ascii_case(order) {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

fn not_here(order: &str) -> OpError {
    OpError::NotFound(format!(
        "click-and-collect order '{order}' at this store (check the number on the shopper's confirmation)"
    ))
}

impl Store {
    /// The pick list (open pickups, oldest first), then the last `closed` collected or
    /// cancelled ones, newest first.
    pub fn pickups(&self, closed: usize) -> Result<Vec<Pickup>, StoreError> {
        let mut list = open(self.db())?;
        list.sort_by_key(|p| p.received_ms);
        let mut done = Vec::new();
        for kv in self.db().tree(T::Records).scan_prefix([CLOSED]) {
            let (_, v) = kv?;
            done.push(protocol::decode::<Pickup>(&v)?);
        }
        done.sort_by_key(|p| std::cmp::Reverse(p.handed_over_ms.unwrap_or(p.received_ms)));
        list.extend(done.into_iter().take(closed));
        Ok(list)
    }

    /// One pickup by order id or number.
    pub fn pickup(&self, order: &str) -> Result<Pickup, OpError> {
        lookup(self, order)?.ok_or_else(|| not_here(order))
    }

    /// Marks a pickup picked (ready for pickup), with the units the clerk could not find
    /// (`short`: SKU → units missing, each at most what was ordered). Picking again with the
    /// same answer changes nothing; the report goes to the hub, which flags a short order.
    pub fn pick(
        &self,
        order: &str,
        short: &BTreeMap<Sku, u32>,
        clerk: Option<String>,
    ) -> Result<Pickup, OpError> {
        let mut w = self.writer()?;
        let mut p = lookup(self, order)?.ok_or_else(|| not_here(order))?;
        closed_refusal(&p)?;
        let ordered = p.units();
        for (sku, n) in short {
            let had = ordered.get(sku).copied().unwrap_or(0);
            if had == 0 {
                return Err(OpError::invalid(
                    "invalid_short",
                    format!("{sku} is not on order {}", p.order.number),
                ));
            }
            if u64::from(*n) > had {
                return Err(OpError::invalid(
                    "invalid_short",
                    format!(
                        "{sku}: {n} short but only {had} ordered on {}",
                        p.order.number
                    ),
                ));
            }
        }
        let short: BTreeMap<Sku, u32> = short
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (s.clone(), *n))
            .collect();
        if p.state >= PickupState::Ready {
            if p.short == short {
                return Ok(p);
            }
            return Err(OpError::Conflict {
                code: "already_picked",
                message: format!(
                    "order {} was picked already: hand it over, or ask the hub's back office to change it",
                    p.order.number
                ),
            });
        }
        let mut ch = Change::new(self, &mut w);
        p.state = PickupState::Ready;
        p.short = short;
        p.picked_by = clerk.clone();
        p.picked_ms = Some(super::now_ms());
        put(&mut ch, &p)?;
        report(&mut ch, &p, clerk);
        ch.finish()?;
        tracing::info!(order = %p.order.number, short = p.short.len(), "pickup picked");
        Ok(p)
    }

    /// Hands a picked order over to the shopper: its units leave the shelf (on hand goes down;
    /// their rights were consumed by the hub when it was paid) and the hub hears it was
    /// collected. Handing over again changes nothing.
    pub fn hand_over(&self, order: &str, clerk: Option<String>) -> Result<Pickup, OpError> {
        let mut w = self.writer()?;
        let mut p = lookup(self, order)?.ok_or_else(|| not_here(order))?;
        if p.state == PickupState::Collected {
            return Ok(p);
        }
        closed_refusal(&p)?;
        if p.state < PickupState::Ready {
            return Err(OpError::Conflict {
                code: "not_picked",
                message: format!(
                    "order {} is not picked yet: pick it (POST /api/v1/pickups/{}/pick) before the handover",
                    p.order.number, p.order.number
                ),
            });
        }
        let mut ch = Change::new(self, &mut w);
        for (sku, n) in p.units() {
            if n > 0 {
                ch.hand_over_units(&sku, n)?;
            }
        }
        p.state = PickupState::Collected;
        p.handed_over_by = clerk.clone();
        p.handed_over_ms = Some(super::now_ms());
        put(&mut ch, &p)?;
        report(&mut ch, &p, clerk);
        ch.finish()?;
        tracing::info!(order = %p.order.number, "pickup handed over");
        Ok(p)
    }
}

fn closed_refusal(p: &Pickup) -> Result<(), OpError> {
    if let Some(reason) = &p.cancelled {
        return Err(OpError::Conflict {
            code: "pickup_cancelled",
            message: format!(
                "order {} was cancelled ({reason}): put its items back on the shelf",
                p.order.number
            ),
        });
    }
    if p.state == PickupState::Collected {
        return Err(OpError::Conflict {
            code: "already_collected",
            message: format!("order {} was collected already", p.order.number),
        });
    }
    Ok(())
}
