//! What the node's operations take and give back: sale and adjustment requests (also the JSON
//! bodies of the HTTP API), their results, and the reasons an operation is refused.

use crate::storage::{AdjustmentRecord, SaleEntry, StoreError};
use protocol::replication::{DeficitRecord, Settlement};
use protocol::{CustomerId, Money, Sku};
use serde::{Deserialize, Serialize};

/// The most lines one sale may have.
pub const MAX_SALE_LINES: usize = 100;
/// The largest quantity of one line.
pub const MAX_LINE_QUANTITY: i64 = protocol::MAX_LINE_QUANTITY as i64;
/// The most units one adjustment may move, and the largest count.
pub const MAX_ADJUSTMENT_UNITS: i64 = 1_000_000;
/// The longest free text (reasons, references, clerk names, idempotency keys).
pub const MAX_TEXT_CHARS: usize = 200;

/// A sale at the till. Prices come from the replicated catalog; a client never sends one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    pub lines: Vec<SaleLineRequest>,
    #[serde(default)]
    pub payments: Vec<PaymentRequest>,
    #[serde(default)]
    pub customer: Option<CustomerId>,
    #[serde(default)]
    pub clerk: Option<String>,
    /// Sell units beyond the rights the node holds; each short SKU becomes a deficit record
    /// with this reason.
    #[serde(default)]
    pub override_reason: Option<String>,
    /// Coupon codes the customer presents (matched case-insensitively, like the hub's basket
    /// coupons). Each must be a public code the hub sent this node, unexpired, and for a
    /// limited code this node must hold a redemption right; else the sale is refused (422).
    #[serde(default)]
    pub coupons: Vec<String>,
}

/// A manager's approval of a sale's manual price adjustments: who approves, their PIN (checked
/// like a sign-in, wrong PINs counted toward their lock) and why.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// The manager's staff id.
    pub manager: String,
    /// The manager's PIN (4 to 8 digits, as a string). Never logged nor stored.
    pub pin: String,
    /// Why the price is changed: 3 to 200 characters, kept in the audit.
    #[serde(default)]
    pub reason: Option<String>,
}

impl std::fmt::Debug for ApprovalRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalRequest")
            .field("manager", &self.manager)
            .field("pin", &"<redacted>")
            .field("reason", &self.reason)
            .finish()
    }
}

/// A manual adjustment's approval once the manager's PIN was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub manager: String,
    pub reason: String,
}

/// A manual discount on one line: `amount` off the line (a decimal string) or `percent` off it
/// (1 to 100); exactly one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualDiscountRequest {
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub percent: Option<u32>,
}

/// A manual price adjustment of one sale line (exactly one of the two), approved by a manager.
/// An adjusted line takes no promotion.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ManualAdjustmentRequest {
    /// A new unit price (decimal string, from 0 up to the shelf price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_override: Option<String>,
    /// A discount off the whole line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_discount: Option<ManualDiscountRequest>,
}

impl ManualAdjustmentRequest {
    pub fn is_empty(&self) -> bool {
        self.price_override.is_none() && self.manual_discount.is_none()
    }
}

/// The manual adjustments of a sale: per line of the [`SaleRequest`] (by index; `None` for a
/// line at its catalog price), and the manager's approval, once checked (`None`: none given):
/// for the whole sale (the API), or per line (the POS pages, where each line's adjustment was
/// approved on its own), a line's own approval first.
#[derive(Debug, Clone, Default)]
pub struct ManualAdjustments {
    pub lines: Vec<Option<ManualAdjustmentRequest>>,
    pub approved: Option<Approved>,
    pub line_approvals: std::collections::BTreeMap<usize, Approved>,
}

impl ManualAdjustments {
    /// The approval of line `i`'s adjustment.
    pub fn approval_of(&self, i: usize) -> Option<&Approved> {
        self.line_approvals.get(&i).or(self.approved.as_ref())
    }

    /// Whether any line is adjusted.
    pub fn any(&self) -> bool {
        self.lines.iter().flatten().any(|a| !a.is_empty())
    }
}

/// The most coupon codes one sale may carry.
pub const MAX_SALE_COUPONS: usize = 5;

/// One line: a SKU or a barcode (exactly one) and a quantity (1..=999).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleLineRequest {
    #[serde(default)]
    pub sku: Option<String>,
    #[serde(default)]
    pub barcode: Option<String>,
    pub quantity: i64,
}

/// How a sale is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Cash,
    Card,
    Voucher,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cash => "cash",
            PaymentMethod::Card => "card",
            PaymentMethod::Voucher => "voucher",
        }
    }
}

/// One payment. `amount` is a decimal string in the catalog's currency, e.g. `"12.34"` (as many
/// decimals as the currency has at most).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub method: PaymentMethod,
    pub amount: String,
    /// The terminal's or voucher's reference, never a card number.
    #[serde(default)]
    pub reference: Option<String>,
    /// A card read by the store's payment terminal (`omnihub sim terminal`): its token, brand
    /// and last four digits. The node authorises it through the hub, or takes it offline
    /// within the caps (`crate::pos::card`). A card payment without it is recorded as taken
    /// on a stand-alone terminal, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<crate::pos::card::CardRead>,
}

/// A stock adjustment made at the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdjustmentRequest {
    /// Goods arrived: adds on hand and creates as many rights.
    Receipt {
        sku: String,
        units: i64,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        clerk: Option<String>,
    },
    /// A shelf count: sets on hand, and aligns the rights with it (one right per unit on the
    /// shelf): rights are created up to the count, or the node's own consumed down to it, beyond
    /// them a deficit record. Rights move against the rights value, not against on hand (the
    /// two differ after a rebuild or a replayed journal).
    Count {
        sku: String,
        on_hand: i64,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        clerk: Option<String>,
    },
    /// Damaged or lost goods: removes on hand and consumes the node's rights (beyond them a
    /// deficit record). A reason is required.
    Damage {
        sku: String,
        units: i64,
        reason: String,
        #[serde(default)]
        clerk: Option<String>,
    },
}

/// A sale as recorded, with what the till needs to finish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleReceipt {
    pub entry: SaleEntry,
    /// Deficit records the sale caused (units sold beyond the node's rights, by override).
    pub deficits: Vec<DeficitRecord>,
    /// Cash to hand back.
    pub change_due: Money,
    /// True when an `Idempotency-Key` retry returned the first sale.
    pub replayed: bool,
}

/// A sale priced as it would be recorded, but not recorded: what the till shows while the sale
/// is rung up (`POST /api/v1/sales/quote`). Payments are not checked; rights are checked only
/// when the sale is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleQuote {
    pub lines: Vec<protocol::replication::SaleLine>,
    pub total: Money,
    pub taxes: Vec<protocol::TaxLine>,
    pub promotions: protocol::promotion::PromotionSummary,
    /// The coupon codes that would be redeemed, normalised.
    pub coupons: Vec<String>,
}

/// An adjustment as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentReceipt {
    pub record: AdjustmentRecord,
    pub replayed: bool,
}

/// A SKU short of rights in a refused sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortage {
    pub sku: Sku,
    pub requested: u64,
    /// Rights the node holds for it.
    pub held: u64,
}

/// A problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// A JSON path, e.g. `lines[2].quantity`.
    pub field: String,
    pub message: String,
}

/// Stock of one SKU at the node's location, as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockLine {
    pub sku: Sku,
    /// The product's name from the catalog (absent for a SKU the catalog does not have).
    pub name: Option<String>,
    pub on_hand: i64,
    /// Rights the node holds (units it may sell without asking anyone).
    pub node_rights: u64,
    /// Rights the hub holds as the node sees them (units the hub may promise online).
    pub hub_rights: u64,
    /// Units still sellable anywhere (created minus consumed minus written off).
    pub value: i64,
}

/// A deficit record with the hub's settlement, once received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeficitView {
    pub deficit: DeficitRecord,
    pub settlement: Option<Settlement>,
}

/// What replaying an old journal did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Sales recorded again here (keeping their ids and numbers).
    pub replayed: usize,
    /// Sales this node already had (a replay is idempotent).
    pub already_present: usize,
    /// Records the old node's hub had acknowledged (after its last acknowledgement marker).
    pub already_synced: usize,
    /// Units sold beyond this node's rights, now deficit records.
    pub deficit_units: u64,
    /// Returns (of the old node's journal) recorded again here and sent to the hub, which
    /// keeps each once by id and owes their card refunds.
    pub returns_replayed: usize,
    /// Records not replayed, and why.
    pub skipped: Vec<String>,
}

/// Why an operation was refused or failed. A refused operation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        problems: Vec<FieldProblem>,
    },
    #[error("{0} not found")]
    NotFound(String),
    /// The operation does not fit the state things are in (e.g. a sale at a till that is not
    /// open); `message` says what to do first.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the node holds too few rights to sell {}: give override_reason to sell anyway (each short unit becomes a deficit record)", skus(.0))]
    InsufficientRights(Vec<Shortage>),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

fn skus(short: &[Shortage]) -> String {
    short
        .iter()
        .map(|s| format!("{} ({} wanted, {} held)", s.sku, s.requested, s.held))
        .collect::<Vec<_>>()
        .join(", ")
}

impl OpError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> OpError {
        OpError::Invalid {
            code,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    pub(crate) fn fields(
        code: &'static str,
        message: impl Into<String>,
        problems: Vec<FieldProblem>,
    ) -> OpError {
        OpError::Invalid {
            code,
            message: message.into(),
            problems,
        }
    }
}

/// Checks optional free text: trimmed, at most [`MAX_TEXT_CHARS`], no control characters;
/// empty counts as absent.
pub(crate) fn clean_text(
    field: &str,
    text: Option<&str>,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    let t = text?.trim();
    if t.is_empty() {
        return None;
    }
    if t.chars().count() > MAX_TEXT_CHARS || t.chars().any(char::is_control) {
        problems.push(FieldProblem {
            field: field.to_string(),
            message: format!("use at most {MAX_TEXT_CHARS} characters without control characters"),
        });
        return None;
    }
    Some(t.to_string())
}
