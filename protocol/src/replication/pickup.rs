//! Click-and-collect between the hub and a store's node: the pick list the hub sends a node
//! (`CommandKind::Pickup`, applied once by id), its cancellation, and the node's reports back
//! (`Item::Pickup`): picked (ready for pickup), short-picked, collected.
//!
//! The units of a pickup are consumed from the **hub's** sell rights at the store when the
//! order is paid, so the node never counts them among the rights it sells from; they stay on
//! hand (the PN-counter) until the handover. A walk-in sale at the till may not take them, not
//! even with a manager's override. A cancellation before the handover gives them back: the
//! node, the only creator of its location's rights, creates rights for them again.

use super::{Hlc, ReplicaId};
use crate::ids::{LocationId, OrderId, Sku};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// One line of a pickup order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickupLine {
    pub sku: Sku,
    pub name: String,
    pub quantity: u32,
}

/// What the hub sends a store for one click-and-collect order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickupOrder {
    pub order: OrderId,
    /// The order number the shopper shows at the counter.
    pub number: String,
    pub location: LocationId,
    /// The name on the order (for the clerk), never the address or the payment.
    pub customer_name: String,
    pub lines: Vec<PickupLine>,
}

/// Where a pickup stands at the store. Ordered: a report only moves it forward
/// (`Waiting < Ready < Collected`); a short pick is `Ready` with lines short.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum PickupState {
    /// On the pick list, not picked yet.
    #[default]
    Waiting,
    /// Picked and set aside: ready for pickup.
    Ready,
    /// Handed over to the shopper.
    Collected,
}

impl PickupState {
    pub fn as_str(self) -> &'static str {
        match self {
            PickupState::Waiting => "waiting",
            PickupState::Ready => "ready_for_pickup",
            PickupState::Collected => "collected",
        }
    }
}

/// A node's report about a pickup (node → hub, an immutable record kept once by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickupReport {
    pub id: Ulid,
    pub order: OrderId,
    pub replica: ReplicaId,
    pub location: LocationId,
    pub state: PickupState,
    /// Lines the clerk could not find on the shelf (SKU, units missing); empty when whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short: Vec<(Sku, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk: Option<String>,
    pub at: Hlc,
}

impl crate::order::OrderRecord {
    /// Applies a store's report about this order's pickup. The state only moves forward: a
    /// repeated or late report changes nothing. A short pick flags the order for a person. A
    /// report about an order cancelled meanwhile is recorded (the goods may have left: a person
    /// must look). Answers the state reached when it moved (for the shopper's email).
    pub fn apply_pickup(
        &mut self,
        report: &PickupReport,
        at: time::OffsetDateTime,
    ) -> Option<PickupState> {
        let pickup = self.pickup.as_mut()?;
        if pickup.location != report.location {
            return None;
        }
        let mut moved = None;
        if report.state > pickup.state {
            pickup.state = report.state;
            moved = Some(report.state);
            let store = pickup.store_name.clone();
            let what = match report.state {
                PickupState::Waiting => String::new(),
                PickupState::Ready => format!("Ready for pickup at {store}"),
                PickupState::Collected => format!("Collected at {store}"),
            };
            if !what.is_empty() {
                self.timeline.push(crate::order::TimelineEntry { at, what });
            }
        }
        if !report.short.is_empty() && self.needs_attention.is_none() {
            let lines: Vec<String> = report
                .short
                .iter()
                .map(|(sku, n)| format!("{sku} × {n}"))
                .collect();
            self.needs_attention = Some(format!(
                "The store could not find every item for pickup (short: {}): contact the shopper.",
                lines.join(", ")
            ));
            self.timeline.push(crate::order::TimelineEntry {
                at,
                what: "The store is missing an item; we will contact you".into(),
            });
        }
        if report.state == PickupState::Collected
            && self.cancelled.is_some()
            && self.needs_attention.is_none()
        {
            self.needs_attention = Some(
                "Collected at the store after it was cancelled here (the store was offline): check the refund and the goods."
                    .into(),
            );
        }
        moved
    }
}
