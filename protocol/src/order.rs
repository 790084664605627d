//! Checkouts, stock holds and orders.
//!
//! A **checkout** freezes a priced version of a basket while the shopper pays: the basket is
//! locked, the stock is held for a limited time, and the payment provider is asked for exactly
//! that amount. An **order** is born paid: there is exactly one per successful payment, keyed by
//! the checkout it came from. Order progress only moves forward (a monotonic lattice, see
//! `REPLICATION.md`); refunds and cancellations are grow-only records.

use crate::basket::BasketOwner;
use crate::channel::Channel;
use crate::checkout::{Address, Breakdown};
use crate::codec::Stored;
use crate::event::Subject;
use crate::ids::{BasketId, CheckoutId, CustomerId, LocationId, OrderId, Sku};
use crate::money::Money;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where a checkout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutState {
    /// Waiting for the shopper to pay on the provider's page; the basket is locked.
    PaymentPending,
    /// Paid: the order exists.
    Paid,
    /// The shopper cancelled the payment (or the provider could not start it); the basket is
    /// unlocked with its lines.
    Cancelled,
    /// The hold ran out before payment; the provider's session was expired first.
    Expired,
}

impl CheckoutState {
    /// Pending checkouts are the only ones the sweeper looks at.
    pub fn is_open(self) -> bool {
        matches!(self, CheckoutState::PaymentPending)
    }
}

/// A checkout: the frozen, priced basket and its payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRecord {
    pub id: CheckoutId,
    pub basket: BasketId,
    /// The basket version that was frozen.
    pub basket_version: u64,
    pub owner: BasketOwner,
    pub channel: Channel,
    /// Who checked out, for the events of the payment and the order.
    pub subject: Subject,
    /// Where the confirmation goes (the customer's email, or the guest's).
    pub email: String,
    pub address: Address,
    pub breakdown: Breakdown,
    pub state: CheckoutState,
    /// Payment attempts at the provider for this checkout (the idempotency key includes it).
    pub attempt: u32,
    /// The provider's Checkout Session, once created.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The hosted payment page.
    #[serde(default)]
    pub payment_url: Option<String>,
    /// When the provider's session expires by itself (unix seconds, wall clock): after it, the
    /// session can no longer be paid even if the hub could not expire it.
    #[serde(default)]
    pub session_expires_at: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the stock hold runs out; the hub then expires the provider's session.
    #[serde(with = "time::serde::rfc3339")]
    pub hold_until: OffsetDateTime,
    /// The hold was given back (expired or cancelled) while the session may still be open at
    /// the provider (it could not be reached); a later payment must find stock again.
    #[serde(default)]
    pub hold_released: bool,
    /// The last thing the shopper should know (e.g. the last decline), in plain words.
    #[serde(default)]
    pub message: Option<String>,
    /// The order, once paid.
    #[serde(default)]
    pub order: Option<OrderId>,
    /// The promotions in the frozen price (their discounts are on the breakdown's lines).
    #[serde(default)]
    pub promotions: Vec<crate::promotion::PromotionId>,
    /// The coupon codes whose promotions are in the price: redeemed with the order.
    #[serde(default)]
    pub coupons: Vec<String>,
}

impl CheckoutRecord {
    /// Units per SKU to hold, from the frozen lines: one entry per SKU (in the order of its
    /// first line) with the units of all its lines — a free gift of a SKU that is also bought is
    /// a line of its own, and a hold per (checkout, SKU) must take both.
    pub fn units(&self) -> Vec<(Sku, u32)> {
        let mut units: Vec<(Sku, u32)> = Vec::with_capacity(self.breakdown.lines.len());
        for line in &self.breakdown.lines {
            match units.iter_mut().find(|(sku, _)| *sku == line.sku) {
                Some((_, quantity)) => *quantity = quantity.saturating_add(line.quantity),
                None => units.push((line.sku.clone(), line.quantity)),
            }
        }
        units
    }

    /// The customer who owns it, if any.
    pub fn customer(&self) -> Option<CustomerId> {
        match self.owner {
            BasketOwner::Customer(c) => Some(c),
            BasketOwner::Anonymous => None,
        }
    }
}

impl Stored for CheckoutRecord {
    const KIND: &'static str = "checkout";
    const VERSION: u16 = 1;
}

/// Units of one SKU at one location held for one checkout until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub checkout: CheckoutId,
    pub sku: Sku,
    pub location: LocationId,
    pub quantity: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

impl Stored for HoldRecord {
    const KIND: &'static str = "hold";
    const VERSION: u16 = 1;
}

/// How far an order has come. Ordered: progress only moves forward (`max` merges).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    #[default]
    Paid,
    Allocated,
    Packed,
    Shipped,
    InTransit,
    OutForDelivery,
    Delivered,
}

impl Progress {
    /// The later of two (the lattice join).
    pub fn join(self, other: Progress) -> Progress {
        self.max(other)
    }

    pub fn label(self) -> &'static str {
        match self {
            Progress::Paid => "Paid",
            Progress::Allocated => "Being prepared",
            Progress::Packed => "Packed",
            Progress::Shipped => "Shipped",
            Progress::InTransit => "In transit",
            Progress::OutForDelivery => "Out for delivery",
            Progress::Delivered => "Delivered",
        }
    }
}

/// One refund at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    /// The provider's refund id.
    pub id: String,
    pub amount: Money,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The payment behind an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub provider: String,
    pub session_id: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
    pub amount: Money,
    #[serde(default)]
    pub refunds: Vec<RefundRecord>,
}

impl PaymentRecord {
    /// The sum of the refunds so far.
    pub fn refunded(&self) -> Money {
        Money::new(
            self.refunds.iter().map(|r| r.amount.minor).sum(),
            self.amount.currency,
        )
    }

    /// What may still be refunded.
    pub fn refundable(&self) -> Money {
        Money::new(
            (self.amount.minor - self.refunded().minor).max(0),
            self.amount.currency,
        )
    }
}

/// An order: born paid, one per checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: OrderId,
    /// Human-readable: `W-000042` online.
    pub number: String,
    pub checkout: CheckoutId,
    pub basket: BasketId,
    #[serde(default)]
    pub customer: Option<CustomerId>,
    /// Who ordered, for the events about the order.
    pub subject: Subject,
    pub email: String,
    pub channel: Channel,
    pub address: Address,
    pub breakdown: Breakdown,
    pub payment: PaymentRecord,
    pub progress: Progress,
    #[serde(default)]
    pub cancelled: Option<String>,
    /// Why a person must look at it (e.g. paid after its hold expired and the stock was gone);
    /// `None` when all is well.
    #[serde(default)]
    pub needs_attention: Option<String>,
    /// The unguessable key of the order-lookup link (`/orders/{number}?key=…`) for guests.
    pub lookup_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// A refund the hub still owes (automatic refunds retried until the provider takes them).
    #[serde(default)]
    pub refund_due: Option<Money>,
    /// The order's units were taken out of stock (false for an order refunded because its stock
    /// was gone or its amount was wrong, and after a restock).
    #[serde(default)]
    pub stock_committed: bool,
    /// A cancelled order's units still have to go back on hand (retried until done).
    #[serde(default)]
    pub restock_due: bool,
    /// The OMS's id for it, once the OMS has it.
    #[serde(default)]
    pub oms_id: Option<String>,
    /// Shipments with their own progress (an order can ship in parts).
    #[serde(default)]
    pub shipments: Vec<ShipmentRecord>,
    /// What happened to the order, oldest first, for the customer's tracking page.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// Set when the OMS reports goods sent back.
    #[serde(default)]
    pub returned: bool,
    /// Click-and-collect: the store the shopper collects from and where the pickup stands
    /// (absent for a delivered order, and from orders made before click-and-collect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup: Option<OrderPickup>,
}

/// The pickup of a click-and-collect order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPickup {
    /// The store's location (it has an edge node).
    pub location: LocationId,
    pub store_name: String,
    /// Where it stands at the store, as the store last reported (only moves forward).
    #[serde(default)]
    pub state: crate::replication::PickupState,
    /// The hub consumed its rights at the store and queued the pick list for the node.
    #[serde(default)]
    pub promised: bool,
    /// The cancellation went to the node (its units are released there).
    #[serde(default)]
    pub released: bool,
}

/// One parcel of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentRecord {
    /// The OMS's shipment id.
    pub id: String,
    pub carrier: String,
    pub tracking_number: String,
    pub tracking_url: String,
    pub lines: Vec<(Sku, u32)>,
    pub progress: Progress,
    /// The last carrier exception, if the parcel has a problem now.
    #[serde(default)]
    pub exception: Option<String>,
}

/// One step of an order's story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// In words, e.g. "Shipped with DHL (JD0123…)".
    pub what: String,
}

impl OrderRecord {
    /// The progress the customer sees: the least advanced shipment, and the order's own
    /// progress while some lines are in no shipment yet.
    pub fn progress_shown(&self) -> Progress {
        let mut shipped: std::collections::BTreeMap<&Sku, u32> = Default::default();
        for s in &self.shipments {
            for (sku, q) in &s.lines {
                *shipped.entry(sku).or_default() += q;
            }
        }
        let all_shipped = !self.shipments.is_empty()
            && self
                .breakdown
                .lines
                .iter()
                .all(|l| shipped.get(&l.sku).copied().unwrap_or(0) >= l.quantity);
        let least = self.shipments.iter().map(|s| s.progress).min();
        match (least, all_shipped) {
            (Some(p), true) => p,
            (Some(p), false) => p.min(self.progress),
            (None, _) => self.progress,
        }
    }

    /// Whether the hub still owes work on it (a refund, a restock, a pickup promise).
    pub fn owes(&self) -> bool {
        self.refund_due.is_some() || self.restock_due || self.pickup_promise_due()
    }

    /// A paid click-and-collect order with its stock, not on its store's pick list yet (the
    /// promise failed, or the hub stopped before it): retried until the store has it.
    pub fn pickup_promise_due(&self) -> bool {
        self.cancelled.is_none()
            && self.stock_committed
            && self.pickup.as_ref().is_some_and(|p| !p.promised)
    }

    /// What the shopper sees as the status.
    pub fn status(&self) -> &'static str {
        if self.cancelled.is_some() {
            "Cancelled"
        } else if self.returned {
            "Returned"
        } else if self.payment.refundable().minor == 0 && !self.payment.refunds.is_empty() {
            "Refunded"
        } else if self.shipments.iter().any(|s| s.exception.is_some()) {
            "Delivery problem"
        } else if let Some(p) = &self.pickup {
            match p.state {
                crate::replication::PickupState::Waiting => "Being prepared for pickup",
                crate::replication::PickupState::Ready => "Ready for pickup",
                crate::replication::PickupState::Collected => "Collected",
            }
        } else {
            self.progress_shown().label()
        }
    }
}

impl Stored for OrderRecord {
    const KIND: &'static str = "order";
    const VERSION: u16 = 1;
}

/// The order number for the `n`th online order.
pub fn online_order_number(n: u64) -> String {
    format!("W-{n:06}")
}

/// The sequence part of an order number with this prefix (`W-000042` → 42).
pub fn order_sequence(number: &str, prefix: &str) -> Option<u64> {
    number.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_moves_forward() {
        let all = [
            Progress::Paid,
            Progress::Allocated,
            Progress::Packed,
            Progress::Shipped,
            Progress::InTransit,
            Progress::OutForDelivery,
            Progress::Delivered,
        ];
        for a in all {
            for b in all {
                let j = a.join(b);
                assert_eq!(j, b.join(a), "commutative");
                assert!(j >= a && j >= b, "an upper bound");
                assert_eq!(j.join(j), j, "idempotent");
            }
        }
    }

    fn an_order() -> OrderRecord {
        use crate::checkout::test_support::{basket, lookup, product};
        use crate::checkout::{price_checkout, CheckoutConfig};
        let products = vec![product("A", 1000, "standard", 500)];
        let config = CheckoutConfig::default();
        let b = basket(&products, &[2]);
        let breakdown = price_checkout(
            &b,
            lookup(&products),
            Money::zero(crate::money::Currency::EUR),
            "DE",
            "standard",
            &config,
        )
        .expect("priced");
        let at = OffsetDateTime::UNIX_EPOCH;
        OrderRecord {
            id: OrderId::new(),
            number: online_order_number(1),
            checkout: crate::ids::CheckoutId::new(),
            basket: b.id,
            customer: None,
            subject: Subject::Anonymous(crate::ids::AnonymousId::new()),
            email: "a@example.com".into(),
            channel: Channel::Web,
            address: Address {
                name: "A".into(),
                line1: "B 1".into(),
                line2: String::new(),
                city: "Berlin".into(),
                region: String::new(),
                postcode: "10117".into(),
                country: "DE".into(),
                phone: String::new(),
            },
            payment: PaymentRecord {
                provider: "stripe".into(),
                session_id: "cs_1".into(),
                payment_intent: Some("pi_1".into()),
                amount: breakdown.total,
                refunds: Vec::new(),
            },
            breakdown,
            progress: Progress::Paid,
            cancelled: None,
            needs_attention: None,
            lookup_key: "k".into(),
            created_at: at,
            refund_due: None,
            stock_committed: true,
            restock_due: false,
            oms_id: None,
            shipments: Vec::new(),
            timeline: Vec::new(),
            returned: false,
            pickup: None,
        }
    }

    #[test]
    fn units_add_up_the_lines_of_one_sku() {
        let order = an_order();
        let mut gift = order.breakdown.lines[0].clone();
        gift.quantity = 1;
        gift.discount = gift.line_total;
        let mut breakdown = order.breakdown.clone();
        breakdown.lines.push(gift);
        let record = CheckoutRecord {
            id: order.checkout,
            basket: order.basket,
            basket_version: 1,
            owner: crate::basket::BasketOwner::Anonymous,
            channel: Channel::Web,
            subject: order.subject,
            email: order.email.clone(),
            address: order.address.clone(),
            breakdown,
            state: CheckoutState::PaymentPending,
            attempt: 1,
            session_id: None,
            payment_url: None,
            session_expires_at: None,
            created_at: order.created_at,
            hold_until: order.created_at,
            hold_released: false,
            message: None,
            order: None,
            promotions: Vec::new(),
            coupons: Vec::new(),
        };
        assert_eq!(
            record.units(),
            vec![(Sku::parse("A").expect("sku"), 3)],
            "two bought and one free gift of the same SKU: one hold of three"
        );
    }

    fn parcel(id: &str, tracking: &str, quantity: u32) -> FulfilmentUpdate {
        FulfilmentUpdate::Shipped(ShipmentRecord {
            id: id.into(),
            carrier: "DHL".into(),
            tracking_number: tracking.into(),
            tracking_url: String::new(),
            lines: vec![(Sku::parse("A").expect("sku"), quantity)],
            progress: Progress::Shipped,
            exception: None,
        })
    }

    fn track(tracking: &str, status: TrackingStatus) -> FulfilmentUpdate {
        FulfilmentUpdate::Tracking {
            tracking_number: tracking.into(),
            status,
            location: String::new(),
        }
    }

    const STATUSES: [TrackingStatus; 6] = [
        TrackingStatus::LabelCreated,
        TrackingStatus::PickedUp,
        TrackingStatus::InTransit,
        TrackingStatus::OutForDelivery,
        TrackingStatus::Delivered,
        TrackingStatus::Exception,
    ];

    proptest::proptest! {
        /// Tracking reports in any order, any number of times: each parcel ends at the furthest
        /// status reported, and "delivered" is announced once.
        #[test]
        fn tracking_converges_in_any_order(
            reports in proptest::collection::vec((0usize..2, 0usize..6), 0..30)
        ) {
            let at = OffsetDateTime::UNIX_EPOCH;
            let mut order = an_order();
            order.apply(parcel("s1", "T1", 1), at).expect("shipped");
            order.apply(parcel("s2", "T2", 1), at).expect("shipped");
            let mut furthest = [Progress::Shipped, Progress::Shipped];
            let mut delivered_notices = 0;
            for (parcel_index, status) in reports {
                let status = STATUSES[status].clone();
                if let Some(p) = status.progress() {
                    furthest[parcel_index] = furthest[parcel_index].join(p);
                }
                let tracking = if parcel_index == 0 { "T1" } else { "T2" };
                let notices = order.apply(track(tracking, status), at).expect("applied");
                delivered_notices += notices.iter().filter(|n| matches!(n, Notice::Delivered(_))).count();
            }
            proptest::prop_assert_eq!(order.shipments[0].progress, furthest[0]);
            proptest::prop_assert_eq!(order.shipments[1].progress, furthest[1]);
            let expected = furthest.iter().filter(|p| **p == Progress::Delivered).count();
            proptest::prop_assert_eq!(delivered_notices, expected);
            proptest::prop_assert_eq!(order.progress_shown(), furthest[0].min(furthest[1]));
        }
    }

    #[test]
    fn partial_shipments_show_the_least_advanced_part() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let mut order = an_order();
        order
            .apply(
                FulfilmentUpdate::Allocated {
                    oms_id: Some("oms_1".into()),
                },
                at,
            )
            .expect("allocated");
        assert_eq!(order.progress_shown(), Progress::Allocated);
        order.apply(parcel("s1", "T1", 1), at).expect("shipped");
        order
            .apply(track("T1", TrackingStatus::Delivered), at)
            .expect("delivered");
        assert_eq!(
            order.progress_shown(),
            Progress::Packed,
            "one unit not shipped yet"
        );
        order.apply(parcel("s2", "T2", 1), at).expect("shipped");
        assert_eq!(order.progress_shown(), Progress::Shipped);
        order
            .apply(track("T2", TrackingStatus::Delivered), at)
            .expect("delivered");
        assert_eq!(order.progress_shown(), Progress::Delivered);
        assert_eq!(order.status(), "Delivered");
        // A late "in transit" never moves it back.
        order
            .apply(track("T2", TrackingStatus::InTransit), at)
            .expect("late");
        assert_eq!(order.status(), "Delivered");
    }

    #[test]
    fn impossible_transitions_are_refused_and_change_nothing() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let mut order = an_order();
        order.apply(parcel("s1", "T1", 2), at).expect("shipped");
        let before = order.clone();
        assert!(matches!(
            order.apply(FulfilmentUpdate::Cancelled { reason: "x".into() }, at),
            Err(FulfilmentError::Impossible(_))
        ));
        assert!(matches!(
            order.apply(track("NOPE", TrackingStatus::Delivered), at),
            Err(FulfilmentError::UnknownShipment(_))
        ));
        assert_eq!(order, before);
        let mut cancelled = an_order();
        cancelled
            .apply(
                FulfilmentUpdate::Cancelled {
                    reason: "customer".into(),
                },
                at,
            )
            .expect("cancelled");
        assert!(matches!(
            cancelled.apply(parcel("s1", "T1", 2), at),
            Err(FulfilmentError::Impossible(_))
        ));
    }

    #[test]
    fn order_numbers_round_trip() {
        assert_eq!(online_order_number(42), "W-000042");
        assert_eq!(order_sequence("W-000042", "W"), Some(42));
        assert_eq!(order_sequence("W-1234567", "W"), Some(1_234_567));
        assert_eq!(order_sequence("S1-000042", "W"), None);
        assert_eq!(order_sequence("W-abc", "W"), None);
    }
}

/// What a carrier reports about a parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackingStatus {
    LabelCreated,
    PickedUp,
    InTransit,
    OutForDelivery,
    Delivered,
    Exception,
}

impl TrackingStatus {
    /// The progress it means for the parcel (`None`: no progress, e.g. an exception).
    pub fn progress(&self) -> Option<Progress> {
        match self {
            TrackingStatus::LabelCreated => Some(Progress::Packed),
            TrackingStatus::PickedUp => Some(Progress::Shipped),
            TrackingStatus::InTransit => Some(Progress::InTransit),
            TrackingStatus::OutForDelivery => Some(Progress::OutForDelivery),
            TrackingStatus::Delivered => Some(Progress::Delivered),
            TrackingStatus::Exception => None,
        }
    }
}

/// A report from the OMS or the carrier about an order (sent between hub nodes as it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FulfilmentUpdate {
    Allocated {
        oms_id: Option<String>,
    },
    Picked,
    Shipped(ShipmentRecord),
    Tracking {
        tracking_number: String,
        status: TrackingStatus,
        location: String,
    },
    Cancelled {
        reason: String,
    },
    Returned,
}

/// What an applied update means for the customer (emails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Shipped(String),
    Delivered(String),
}

/// Why an update was refused; the order is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FulfilmentError {
    #[error("no shipment with tracking number {0} on this order")]
    UnknownShipment(String),
    #[error("impossible transition: {0}")]
    Impossible(String),
}

impl OrderRecord {
    /// Applies a report. Progress only moves forward: a late or repeated report changes nothing
    /// (and is not an error). Answers what the customer should be told.
    pub fn apply(
        &mut self,
        update: FulfilmentUpdate,
        at: OffsetDateTime,
    ) -> Result<Vec<Notice>, FulfilmentError> {
        let mut notices = Vec::new();
        match update {
            FulfilmentUpdate::Allocated { oms_id } => {
                if self.cancelled.is_some() {
                    return Err(FulfilmentError::Impossible(
                        "allocated after the order was cancelled".into(),
                    ));
                }
                if self.oms_id.is_none() {
                    self.oms_id = oms_id;
                }
                self.advance(Progress::Allocated, at, "Being prepared at the warehouse");
            }
            FulfilmentUpdate::Picked => {
                if self.cancelled.is_some() {
                    return Err(FulfilmentError::Impossible(
                        "picked after the order was cancelled".into(),
                    ));
                }
                self.advance(Progress::Packed, at, "Packed");
            }
            FulfilmentUpdate::Shipped(shipment) => {
                if self.cancelled.is_some() {
                    return Err(FulfilmentError::Impossible(
                        "shipped after the order was cancelled".into(),
                    ));
                }
                if !self.shipments.iter().any(|s| s.id == shipment.id) {
                    self.timeline.push(TimelineEntry {
                        at,
                        what: format!(
                            "Shipped with {} (tracking {})",
                            shipment.carrier, shipment.tracking_number
                        ),
                    });
                    notices.push(Notice::Shipped(shipment.id.clone()));
                    let mut shipment = shipment;
                    shipment.progress = shipment.progress.join(Progress::Shipped);
                    self.shipments.push(shipment);
                    self.progress = self.progress.join(Progress::Packed);
                }
            }
            FulfilmentUpdate::Tracking {
                tracking_number,
                status,
                location,
            } => {
                let shipment = self
                    .shipments
                    .iter_mut()
                    .find(|s| s.tracking_number == tracking_number)
                    .ok_or(FulfilmentError::UnknownShipment(tracking_number))?;
                match status.progress() {
                    Some(p) if p > shipment.progress => {
                        shipment.progress = p;
                        shipment.exception = None;
                        let place = if location.is_empty() {
                            String::new()
                        } else {
                            format!(" ({location})")
                        };
                        let what = format!("{}{place}", p.label());
                        let id = shipment.id.clone();
                        if p == Progress::Delivered {
                            notices.push(Notice::Delivered(id));
                        }
                        self.timeline.push(TimelineEntry { at, what });
                    }
                    Some(_) => {}
                    None => {
                        if shipment.progress < Progress::Delivered {
                            let what = format!("Delivery problem reported by {}", shipment.carrier);
                            shipment.exception = Some(location);
                            self.timeline.push(TimelineEntry { at, what });
                        }
                    }
                }
            }
            FulfilmentUpdate::Cancelled { reason } => {
                if !self.shipments.is_empty() {
                    return Err(FulfilmentError::Impossible(
                        "cancelled after a shipment left".into(),
                    ));
                }
                if self.cancelled.is_none() {
                    self.cancelled = Some(reason.clone());
                    self.timeline.push(TimelineEntry {
                        at,
                        what: format!("Cancelled: {reason}"),
                    });
                }
            }
            FulfilmentUpdate::Returned => {
                if self.shipments.is_empty() {
                    return Err(FulfilmentError::Impossible(
                        "returned before anything shipped".into(),
                    ));
                }
                if !self.returned {
                    self.returned = true;
                    self.timeline.push(TimelineEntry {
                        at,
                        what: "Returned".into(),
                    });
                }
            }
        }
        Ok(notices)
    }

    fn advance(&mut self, to: Progress, at: OffsetDateTime, what: &str) {
        if to > self.progress {
            self.progress = to;
            self.timeline.push(TimelineEntry {
                at,
                what: what.to_string(),
            });
        }
    }
}
