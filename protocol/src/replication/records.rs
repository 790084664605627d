//! The immutable records replicas make and ship: a store's sales, deficit records for sales
//! beyond the rights a node held, the hub's settlements of them, conflicts, and the hub's
//! commands to a node (stock news for the node's location, which only the node may apply).

use super::{Hlc, ReplicaId};
use crate::ids::{CustomerId, LocationId, Sku};
use crate::money::Money;
use crate::pricing::TaxLine;
use crate::promotion::{PromotionId, PromotionSummary};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// One line of a store sale, priced on the node from the replicated catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleLine {
    pub sku: Sku,
    pub name: String,
    pub quantity: u32,
    pub unit_price: Money,
    /// Quantity × unit price less the line's promotion discount, tax included.
    pub total: Money,
    pub tax_rate_bp: u32,
}

/// How a store sale was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalePayment {
    /// `cash`, `card`, `voucher`, …
    pub method: String,
    pub amount: Money,
    /// The terminal's or the provider's reference, never a card number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A card read by the store's payment terminal: how it was authorised, the brand and the
    /// last four digits (never the number). Absent for other methods and for card payments
    /// recorded before the terminal was wired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardTender>,
}

/// A card payment taken at a store's till through the payment terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardTender {
    /// The node's id of this card payment (the provider's idempotency keys derive from it).
    pub payment: String,
    pub brand: String,
    pub last4: String,
    /// How it stood when the sale was recorded (its later outcome is the node's card state).
    pub status: CardStatus,
    /// Unix milliseconds when the card was taken (an offline payment's deadline runs from it).
    pub taken_at_ms: u64,
}

/// How a card payment stood when its sale was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardStatus {
    /// Authorised online through the hub's payment provider (`reference` is the `pi_…`).
    Authorised,
    /// Taken while the hub was unreachable (store-and-forward): authorised after reconnection,
    /// or flagged for follow-up.
    PaidOfflinePendingAuth,
    /// A status this build does not know.
    #[serde(other)]
    Unknown,
}

/// A sale at a store's till: made on the node, immutable, keyed by a ULID made there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleRecord {
    pub id: Ulid,
    /// The store's receipt number; carries the replica, so a rebuilt node never reuses one.
    pub number: String,
    pub replica: ReplicaId,
    pub location: LocationId,
    pub at: Hlc,
    pub lines: Vec<SaleLine>,
    pub total: Money,
    pub taxes: Vec<TaxLine>,
    pub payments: Vec<SalePayment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk: Option<String>,
    /// The promotions that applied (with their amounts), gifts and free shipping; the
    /// promotions that did not apply are not kept. Absent from a sale without promotions.
    #[serde(default, skip_serializing_if = "no_promotions")]
    pub promotions: PromotionSummary,
    /// The coupon codes redeemed with the sale (normalised: upper case). Absent from a sale
    /// without coupons, and from sales made before nodes took coupons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coupons: Vec<String>,
}

fn no_promotions(s: &PromotionSummary) -> bool {
    s.applied.is_empty() && s.not_applied.is_empty() && s.gifts.is_empty() && !s.free_shipping
}

/// Units that left a location beyond the rights the replica held (a clerk's override, or
/// damage beyond them): counted on hand, never silently. The hub settles it or flags it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeficitRecord {
    pub id: Ulid,
    pub replica: ReplicaId,
    pub location: LocationId,
    pub sku: Sku,
    pub units: u64,
    /// Why, e.g. "sold at the till beyond the node's rights" or a clerk's words.
    pub reason: String,
    /// The sale that caused it, if a sale did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<Ulid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk: Option<String>,
    pub at: Hlc,
}

/// The hub's answer to a deficit: how many units it covered from rights it held but had not
/// promised, and what remains short with the online orders that may now go unfilled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub deficit: Ulid,
    pub settled: u64,
    pub short: u64,
    /// Orders (or checkouts) now short of a promised unit, for a person to resolve.
    #[serde(default)]
    pub flagged: Vec<String>,
    pub at: Hlc,
}

/// Something a merge could not reconcile on its own and shows to a person (nothing is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    pub id: Ulid,
    pub replica: ReplicaId,
    /// e.g. `clock_skew`, `coupon_per_customer_limit`, `unknown_sku`.
    pub kind: String,
    pub detail: String,
    pub at: Hlc,
}

/// The terms of a public coupon code the hub lets the stores redeem at the till (hub → node,
/// sent again whenever they change). A code with a total limit (`limited`) is redeemed at a
/// node only from the redemption rights the node holds (`Scarce::Coupon`, the hub creates them
/// and grants each node a share); a code without one needs no rights. Private single-use codes
/// are never sent: they stay with the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponTerms {
    /// Upper case, as typed codes are normalised.
    pub code: String,
    /// The promotion the code unlocks (its `coupon` condition).
    pub promotion: PromotionId,
    /// Unix milliseconds from which the code is expired, if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Redemptions one customer may make (hub and stores together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_customer: Option<u64>,
    /// The total is limited: redeem only from rights held.
    #[serde(default)]
    pub limited: bool,
    pub at: Hlc,
}

/// A hub command to a node, applied by the node once (by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: Ulid,
    pub kind: CommandKind,
    pub at: Hlc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum CommandKind {
    /// A count from the ERP: set on hand at the node's location to `on_hand`. `as_seen` is the
    /// on-hand the hub saw for the location when it forwarded the count: the node applies the
    /// difference `on_hand − as_seen` to what it has now, so sales made while the command was on
    /// its way are not counted back onto the shelf. Without it, the count is absolute.
    Count {
        sku: Sku,
        location: LocationId,
        on_hand: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        as_seen: Option<i64>,
    },
    /// Goods back on the node's shelf (a cancelled or returned order): add and create rights.
    Restock {
        sku: Sku,
        location: LocationId,
        units: u64,
        reason: String,
    },
    /// The hub asks the node for `units` more rights for online promises (the node may decline).
    WantRights {
        sku: Sku,
        location: LocationId,
        units: u64,
    },
    /// The coupon ended on the hub (expired, withdrawn, its promotion ended): the node stops
    /// redeeming it and hands the hub back every redemption right of it that it holds.
    EndCoupon { code: String },
    /// A paid click-and-collect order for the node's location: its lines go on the store's
    /// pick list. The hub consumed its own rights for them when the order was paid.
    Pickup(super::PickupOrder),
    /// The order was cancelled before the handover: off the pick list, and the node creates
    /// rights for its units again (they never left the shelf). Too late once collected.
    CancelPickup {
        order: crate::ids::OrderId,
        location: LocationId,
        reason: String,
    },
    /// A command this build does not know: ignored.
    #[serde(other)]
    Unknown,
}

/// One line of a return: units of one line of the original sale coming back, and what they are
/// refunded at (their share of the sale line's total, discounts included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnLine {
    /// The line of the original sale (its index in the sale's lines).
    pub line: u32,
    pub sku: Sku,
    pub name: String,
    pub quantity: u32,
    /// What these units are refunded at: the line's total (after its discounts) in proportion.
    pub amount: Money,
    /// The units went back on the shelf at the returning store (false: damaged, not resold).
    #[serde(default = "yes")]
    pub restocked: bool,
}

fn yes() -> bool {
    true
}

/// Goods brought back against a store sale's receipt: made on the node that took them back,
/// immutable, keyed by a ULID made there. Its refunds go to the sale's original tenders: cash
/// from that node's till, a card to the sale's card payment (by its provider reference), which
/// the hub refunds through its payment client exactly once per return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnRecord {
    pub id: Ulid,
    /// The return's own number (`…-R000001`), printed on the refund slip.
    pub number: String,
    /// The node that took the goods back, and its location (where the stock went back).
    pub replica: ReplicaId,
    pub location: LocationId,
    pub at: Hlc,
    /// The original sale: its id, receipt number and the location it was made at.
    pub sale: Ulid,
    pub sale_number: String,
    pub sale_location: LocationId,
    pub lines: Vec<ReturnLine>,
    /// The value of the goods returned (the sum of the lines).
    pub total: Money,
    /// What was paid back, by tender. A card refund carries the original card payment's
    /// reference; `exchange` is the part set against the new goods of an exchange.
    pub refunds: Vec<SalePayment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk: Option<String>,
    /// The manager who approved the return, when it needed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The sale of an exchange's new goods, made in the same transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_sale: Option<Ulid>,
}
