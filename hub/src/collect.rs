//! Click-and-collect on the hub (`docs/click-and-collect.md`): the "collect in store"
//! delivery option of online checkout, the stock the hub may promise for it, and the way the
//! stores' reports reach the orders.
//!
//! - The option is a shipping method `collect:<location>` (no charge), offered by the quote
//!   for each store whose whole basket the hub can promise: the rights the hub holds at that
//!   store (granted by its node) less what checkouts already hold there.
//! - A checkout for pickup holds those units at the store (hub-local, like `online`); the paid
//!   order consumes the hub's rights there and goes on the store's pick list
//!   ([`crate::edge::replica::pickup::PromisePickup`]); a cancellation before the handover
//!   sends the node `CancelPickup`, which makes the units sellable again there.
//! - The node's reports (picked, short, collected) are applied to the order by its basket
//!   actor ([`crate::actors::pickup::ApplyPickup`]), idempotently.

use crate::actors::inventory::HoldFailure;
use crate::actors::Deps;
use crate::edge::replica::pickup::PromisePickup;
use crate::edge::replica::ForwardCommand;
use crate::edge::{EdgeError, EdgeHandle};
use protocol::checkout::{CheckoutConfig, Rate, ShippingMethodConfig, ShippingOption};
use protocol::order::{OrderPickup, OrderRecord};
use protocol::replication::sync::Scarce;
use protocol::replication::{CommandKind, PickupLine, PickupOrder, ReplicaId};
use protocol::{Basket, CheckoutId, LocationId, Money, Sku};
use std::borrow::Cow;
use time::OffsetDateTime;

/// The prefix of a pickup's shipping method: `collect:store-1`.
pub const METHOD_PREFIX: &str = "collect:";

/// The store a shipping method collects at, if it is a pickup.
pub fn location_of(method: &str) -> Option<LocationId> {
    method
        .strip_prefix(METHOD_PREFIX)
        .filter(|l| !l.is_empty())
        .map(|l| LocationId(l.to_string()))
}

/// The name shoppers see for a store.
pub fn store_name(edge: &EdgeHandle, location: &LocationId) -> Option<String> {
    edge.nodes()
        .of_location(location)
        .last()
        .map(|n| n.name.clone())
}

/// The pricing configuration for a shipping method: for a pickup, every zone also has the
/// method, at no charge; otherwise the configuration as it is.
pub fn pricing<'a>(deps: &'a Deps, method: &str) -> Cow<'a, CheckoutConfig> {
    let base = &deps.checkout.pricing;
    let (Some(location), Some(edge)) = (location_of(method), deps.checkout.edge.as_ref()) else {
        return Cow::Borrowed(base);
    };
    let Some(name) = store_name(edge, &location) else {
        return Cow::Borrowed(base);
    };
    let mut config = base.clone();
    for zone in &mut config.zones {
        zone.methods.push(ShippingMethodConfig {
            id: method.to_string(),
            name: format!("Collect in store: {name}"),
            rate: Rate::Flat {
                amount: "0.00".into(),
            },
            free_over: None,
            delivery: format!("Ready for pickup at {name} once the store has picked it"),
            tax_class: "standard".into(),
        });
    }
    Cow::Owned(config)
}

/// Units the hub can still promise of `sku` at a store: the rights it holds there less what
/// checkouts hold there.
pub async fn promisable(deps: &Deps, edge: &EdgeHandle, location: &LocationId, sku: &Sku) -> i64 {
    let key = Scarce::Stock {
        sku: sku.clone(),
        location: location.clone(),
    };
    let held_rights = match edge.store().rights(&key).await {
        Ok(r) => r.map_or(0, |r| r.held(&ReplicaId::hub())),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the hub's rights at a store");
            0
        }
    };
    let held_for_checkouts = deps
        .inventory
        .level(location, sku)
        .map_or(0, |l| l.held.max(0));
    i64::try_from(held_rights).unwrap_or(i64::MAX) - held_for_checkouts
}

/// The pickup options for a basket: each store that can promise every line, at no charge.
pub async fn options(deps: &Deps, basket: &Basket) -> Vec<ShippingOption> {
    let Some(edge) = deps.checkout.edge.as_ref() else {
        return Vec::new();
    };
    if basket.lines.is_empty() {
        return Vec::new();
    }
    let mut stores: Vec<(LocationId, String)> = Vec::new();
    for n in edge.nodes().iter() {
        if !stores.iter().any(|(l, _)| l == &n.location) {
            stores.push((n.location.clone(), n.name.clone()));
        }
    }
    let mut out = Vec::new();
    for (location, name) in stores {
        let mut all = true;
        for line in &basket.lines {
            if promisable(deps, edge, &location, &line.sku).await < i64::from(line.quantity) {
                all = false;
                break;
            }
        }
        if all {
            out.push(ShippingOption {
                id: format!("{METHOD_PREFIX}{}", location.0),
                name: format!("Collect in store: {name}"),
                price: Money::zero(basket.currency),
                delivery: format!("Ready for pickup at {name} once the store has picked it"),
            });
        }
    }
    out
}

/// Holds a pickup checkout's units at the store, all or nothing, from what the hub can promise
/// there: held first, then checked against the rights (a concurrent checkout that pushed the
/// holds beyond them gives its hold back), so the hub never holds more than it holds rights for.
pub async fn hold(
    deps: &Deps,
    checkout: CheckoutId,
    location: &LocationId,
    units: &[(Sku, u32)],
    until: OffsetDateTime,
) -> Result<(), HoldFailure> {
    let Some(edge) = deps.checkout.edge.as_ref() else {
        return Err(HoldFailure::Short(
            units.iter().map(|(s, _)| (s.clone(), 0)).collect(),
        ));
    };
    deps.inventory
        .hold(checkout, location, units, until)
        .await?;
    let mut short = Vec::new();
    for (sku, q) in units {
        let left = promisable(deps, edge, location, sku).await;
        if left < 0 {
            short.push((sku.clone(), (left + i64::from(*q)).max(0)));
        }
    }
    if short.is_empty() {
        Ok(())
    } else {
        deps.inventory.end(checkout, false, Some(units)).await?;
        Err(HoldFailure::Short(short))
    }
}

/// Where a checkout's stock is held: its pickup store, or the online warehouse.
pub fn hold_location(method: &str) -> LocationId {
    location_of(method).unwrap_or_else(LocationId::online)
}

/// The pickup of a new order whose shipping method collects at a store.
pub fn order_pickup(deps: &Deps, method: &str) -> Option<OrderPickup> {
    let location = location_of(method)?;
    let store_name = deps
        .checkout
        .edge
        .as_ref()
        .and_then(|e| store_name(e, &location))
        .unwrap_or_else(|| location.0.clone());
    Some(OrderPickup {
        location,
        store_name,
        state: Default::default(),
        promised: false,
        released: false,
    })
}

/// Puts a paid pickup order on its store's pick list (consuming the hub's rights there).
/// Answers what the hub held too few rights for.
pub async fn promise(deps: &Deps, order: &OrderRecord) -> Result<Vec<(Sku, u64)>, EdgeError> {
    let (Some(p), Some(edge)) = (order.pickup.as_ref(), deps.checkout.edge.as_ref()) else {
        return Ok(Vec::new());
    };
    // Crash tests make the promise fail here: the order stays `promised = false`, and the
    // sweeper (or the next start) promises it again.
    fail::fail_point!("collect.promise", |_| Err(EdgeError::Closed));
    let lines = order
        .breakdown
        .lines
        .iter()
        .map(|l| PickupLine {
            sku: l.sku.clone(),
            name: if l.variant.is_empty() {
                l.name.clone()
            } else {
                format!("{} – {}", l.name, l.variant)
            },
            quantity: l.quantity,
        })
        .collect();
    edge.replica
        .send(PromisePickup(PickupOrder {
            order: order.id,
            number: order.number.clone(),
            location: p.location.clone(),
            customer_name: order.address.name.clone(),
            lines,
        }))
        .await
        .map_err(|_| EdgeError::Closed)?
}

/// Takes a cancelled pickup order off its store's pick list (the node makes its units
/// sellable again).
pub async fn release(deps: &Deps, order: &OrderRecord, reason: &str) -> Result<(), EdgeError> {
    let (Some(p), Some(edge)) = (order.pickup.as_ref(), deps.checkout.edge.as_ref()) else {
        return Ok(());
    };
    edge.replica
        .send(ForwardCommand {
            location: p.location.clone(),
            kind: CommandKind::CancelPickup {
                order: order.id,
                location: p.location.clone(),
                reason: reason.to_string(),
            },
        })
        .await
        .map_err(|_| EdgeError::Closed)??;
    Ok(())
}

/// How often the stored reports are looked at again when no merge woke the applier: a report
/// whose order could not be written (storage busy, an actor restarting) is retried then.
const REPLAY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Reports applied per pass.
const REPLAY_BATCH: usize = 256;

/// Applies the stores' reports to their orders. The merge stores each new report with the
/// merge itself (one durable write); this applies the stored ones and drops each once its
/// order has it: at start-up (reports left by a crash), after each merge that brought new
/// ones, and every [`REPLAY_EVERY`]. Applying a report twice changes nothing.
pub fn apply_reports(edge: &EdgeHandle, backend: std::sync::Arc<crate::backend::HubBackend>) {
    let Some(mut woken) = edge.pickups.listen() else {
        return;
    };
    let store = edge.store.clone();
    actix::spawn(async move {
        // The first tick is immediate: what a crash left is applied at start-up.
        let mut tick = tokio::time::interval(REPLAY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                got = woken.recv() => {
                    if got.is_none() {
                        return;
                    }
                    // One pass covers every merge that woke us meanwhile.
                    while woken.try_recv().is_ok() {}
                }
            }
            apply_stored(store.as_ref(), &backend).await;
        }
    });
}

/// One pass over the stored reports: answers how many were applied (and dropped).
async fn apply_stored(
    store: &dyn crate::edge::store::EdgeStore,
    backend: &crate::backend::HubBackend,
) -> usize {
    let pending = match store.pending_pickups(REPLAY_BATCH).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the stores' pickup reports; retrying later");
            return 0;
        }
    };
    let mut applied = 0;
    for report in pending {
        // Crash tests stop the hub here: the report is stored, its order does not have it.
        fail::fail_point!("collect.report.before_apply", |_| std::process::abort());
        match backend.apply_pickup(report.clone()).await {
            Ok(()) => {}
            Err(channels::BackendError::NotFound(_)) => {
                // Nothing to apply it to, now or later (the order is not one of this hub's).
                tracing::error!(order = %report.order, location = %report.location.0,
                    "pickup report about an unknown order: dropped");
            }
            Err(e) => {
                tracing::warn!(order = %report.order, error = %e,
                    "pickup report not applied yet; retrying later");
                continue;
            }
        }
        match store.pickup_applied(report.id).await {
            Ok(()) => applied += 1,
            Err(e) => {
                tracing::warn!(error = %e, "pickup report applied but not dropped; it is applied again later")
            }
        }
    }
    applied
}

impl crate::backend::HubBackend {
    /// Applies a store's pickup report to its order (through the order's basket actor).
    pub async fn apply_pickup(
        &self,
        report: protocol::replication::PickupReport,
    ) -> Result<(), channels::BackendError> {
        let order = self.admin_order(&report.order.to_string()).await?;
        let call = || crate::cluster::remote::Call::Pickup {
            basket: order.basket,
            report: report.clone(),
        };
        if let Some(reply) = self.elsewhere(&order.basket, call).await? {
            return reply.order().map(|_| ());
        }
        self.ask_basket(order.basket, crate::actors::pickup::ApplyPickup(report))
            .await
            .map(|_| ())
    }
}
