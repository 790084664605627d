//! The API objects the simulator keeps — Checkout Sessions, PaymentIntents, Charges, Refunds —
//! and their JSON in Stripe's shape (field names, `object` tags, ids with Stripe's prefixes,
//! amounts in minor units, lower-case currencies, Unix-second timestamps). Also the test cards.

use serde_json::{json, Map, Value};

/// A new id with Stripe's prefix, e.g. `pi_01J…`.
pub(super) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// Whether an object has reached a state it never leaves (it may be evicted first).
pub(super) trait Finished {
    fn finished(&self) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionStatus {
    Open,
    Complete,
    Expired,
}

impl SessionStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Complete => "complete",
            SessionStatus::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct LineItem {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub unit_amount: i64,
    pub quantity: i64,
    pub currency: String,
    pub price_id: String,
    pub product_id: String,
}

impl LineItem {
    pub(super) fn total(&self) -> i64 {
        self.unit_amount.saturating_mul(self.quantity)
    }

    fn json(&self, created: i64) -> Value {
        json!({
            "id": self.id,
            "object": "item",
            "amount_discount": 0,
            "amount_subtotal": self.total(),
            "amount_tax": 0,
            "amount_total": self.total(),
            "currency": self.currency,
            "description": self.name,
            "price": {
                "id": self.price_id,
                "object": "price",
                "active": false,
                "billing_scheme": "per_unit",
                "created": created,
                "currency": self.currency,
                "livemode": false,
                "metadata": {},
                "product": self.product_id,
                "type": "one_time",
                "unit_amount": self.unit_amount,
                "unit_amount_decimal": self.unit_amount.to_string(),
            },
            "quantity": self.quantity,
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct Session {
    pub id: String,
    pub created: i64,
    pub expires_at: i64,
    pub status: SessionStatus,
    pub currency: String,
    pub line_items: Vec<LineItem>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub client_reference_id: Option<String>,
    pub customer_email: Option<String>,
    pub metadata: Map<String, Value>,
    /// `payment_intent_data[metadata]` and `[description]`, copied to the PaymentIntent.
    pub intent_metadata: Map<String, Value>,
    pub intent_description: Option<String>,
    pub payment_intent: Option<String>,
    /// The id of the card payment method waiting for its 3-D Secure step, if any.
    pub pending_authentication: Option<String>,
}

impl Session {
    pub(super) fn amount_total(&self) -> i64 {
        self.line_items.iter().map(LineItem::total).sum()
    }

    pub(super) fn paid(&self) -> bool {
        self.status == SessionStatus::Complete
    }

    /// `success_url` with Stripe's `{CHECKOUT_SESSION_ID}` template filled in.
    pub(super) fn success_url(&self) -> String {
        self.success_url.replace("{CHECKOUT_SESSION_ID}", &self.id)
    }

    pub(super) fn line_items_json(&self) -> Value {
        list(
            self.line_items
                .iter()
                .map(|item| item.json(self.created))
                .collect(),
            &format!("/v1/checkout/sessions/{}/line_items", self.id),
            false,
        )
    }

    pub(super) fn json(&self, base_url: &str) -> Value {
        let open = self.status == SessionStatus::Open;
        let amount = self.amount_total();
        json!({
            "id": self.id,
            "object": "checkout.session",
            "after_expiration": null,
            "allow_promotion_codes": null,
            "amount_subtotal": amount,
            "amount_total": amount,
            "automatic_tax": {"enabled": false, "liability": null, "status": null},
            "billing_address_collection": null,
            "cancel_url": self.cancel_url,
            "client_reference_id": self.client_reference_id,
            "client_secret": null,
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "customer_creation": "if_required",
            "customer_details": self.customer_email.as_ref().map(|email| json!({"email": email})),
            "customer_email": self.customer_email,
            "expires_at": self.expires_at,
            "invoice": null,
            "livemode": false,
            "locale": null,
            "metadata": self.metadata,
            "mode": "payment",
            "payment_intent": self.payment_intent,
            "payment_link": null,
            "payment_method_types": ["card"],
            "payment_status": if self.paid() { "paid" } else { "unpaid" },
            "status": self.status.as_str(),
            "submit_type": null,
            "success_url": self.success_url,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": open.then(|| format!("{base_url}/pay/{}", self.id)),
        })
    }
}

impl Finished for Session {
    fn finished(&self) -> bool {
        self.status != SessionStatus::Open
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    RequiresCapture,
    Succeeded,
    Canceled,
}

impl IntentStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            IntentStatus::RequiresPaymentMethod => "requires_payment_method",
            IntentStatus::RequiresConfirmation => "requires_confirmation",
            IntentStatus::RequiresAction => "requires_action",
            IntentStatus::RequiresCapture => "requires_capture",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct PaymentIntent {
    pub id: String,
    pub client_secret: String,
    pub created: i64,
    pub amount: i64,
    pub currency: String,
    pub status: IntentStatus,
    pub manual_capture: bool,
    pub amount_received: i64,
    pub amount_capturable: i64,
    pub latest_charge: Option<String>,
    pub payment_method: Option<String>,
    pub last_payment_error: Option<Value>,
    pub metadata: Map<String, Value>,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    pub canceled_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    /// What the audit groups charges by: the session's `client_reference_id` and
    /// `metadata[checkout_id]` (or the intent's own `metadata[checkout_id]`).
    pub references: Vec<String>,
}

impl PaymentIntent {
    pub(super) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": self.amount_capturable,
            "amount_details": {"tip": {}},
            "amount_received": self.amount_received,
            "application": null,
            "automatic_payment_methods": null,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": if self.manual_capture { "manual" } else { "automatic" },
            "client_secret": self.client_secret,
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "description": self.description,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": false,
            "metadata": self.metadata,
            "next_action": if self.status == IntentStatus::RequiresAction {
                json!({"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}})
            } else {
                Value::Null
            },
            "payment_method": self.payment_method,
            "payment_method_types": ["card"],
            "receipt_email": self.receipt_email,
            "status": self.status.as_str(),
        })
    }
}

impl Finished for PaymentIntent {
    fn finished(&self) -> bool {
        matches!(
            self.status,
            IntentStatus::Succeeded | IntentStatus::Canceled
        )
    }
}

#[derive(Debug, Clone)]
pub(super) struct Charge {
    pub id: String,
    pub created: i64,
    pub amount: i64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub captured: bool,
    pub currency: String,
    pub succeeded: bool,
    pub payment_intent: String,
    pub payment_method: String,
    pub card: Card,
    pub failure: Option<(String, String)>,
    pub metadata: Map<String, Value>,
    pub references: Vec<String>,
    /// An authorization released by a cancel or a partial capture.
    pub released: bool,
}

impl Charge {
    /// What may still be refunded.
    pub(super) fn refundable(&self) -> i64 {
        self.amount_captured - self.amount_refunded
    }

    pub(super) fn json(&self) -> Value {
        let (failure_code, failure_message) = match &self.failure {
            Some((code, message)) => (Some(code.as_str()), Some(message.as_str())),
            None => (None, None),
        };
        let outcome = match (&self.failure, self.card.behavior) {
            (None, _) => json!({"network_status": "approved_by_network", "reason": null,
                "risk_level": "normal", "seller_message": "Payment complete.", "type": "authorized"}),
            (Some(_), CardBehavior::InsufficientFunds) => {
                json!({"network_status": "declined_by_network",
                "reason": "insufficient_funds", "risk_level": "normal",
                "seller_message": "The bank returned the decline code `insufficient_funds`.", "type": "issuer_declined"})
            }
            (Some(_), _) => {
                json!({"network_status": "declined_by_network", "reason": "generic_decline",
                "risk_level": "normal", "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined"})
            }
        };
        json!({
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount_captured,
            "amount_refunded": self.amount_refunded,
            "balance_transaction": null,
            "captured": self.captured,
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "description": null,
            "disputed": false,
            "failure_code": failure_code,
            "failure_message": failure_message,
            "livemode": false,
            "metadata": self.metadata,
            "outcome": outcome,
            "paid": self.succeeded,
            "payment_intent": self.payment_intent,
            "payment_method": self.payment_method,
            "payment_method_details": {"type": "card", "card": self.card.json()},
            "refunded": self.captured && self.amount_captured > 0 && self.amount_refunded == self.amount_captured,
            "status": if self.succeeded { "succeeded" } else { "failed" },
        })
    }
}

impl Finished for Charge {
    fn finished(&self) -> bool {
        !self.succeeded || self.captured || self.released
    }
}

#[derive(Debug, Clone)]
pub(super) struct Refund {
    pub id: String,
    pub created: i64,
    pub amount: i64,
    pub charge: String,
    pub payment_intent: String,
    pub currency: String,
    pub reason: Option<String>,
    pub metadata: Map<String, Value>,
}

impl Refund {
    pub(super) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": null,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": self.metadata,
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "receipt_number": null,
            "source_transfer_reversal": null,
            "status": "succeeded",
            "transfer_reversal": null,
        })
    }
}

impl Finished for Refund {
    fn finished(&self) -> bool {
        true
    }
}

/// What a test card does when charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CardBehavior {
    Succeeds,
    Declines,
    InsufficientFunds,
    /// Asks for a 3-D Secure step first, then succeeds if the shopper completes it.
    Authenticates,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Card {
    pub brand: &'static str,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
    pub behavior: CardBehavior,
}

impl Card {
    /// The test card for a number that passed the Luhn check: Stripe's test numbers behave as
    /// documented; any other number is declined (`generic_decline`), as a real test mode would.
    pub(super) fn from_number(digits: &str, exp_month: u32, exp_year: u32) -> Card {
        let behavior = match digits {
            "4242424242424242" | "5555555555554444" => CardBehavior::Succeeds,
            "4000000000009995" => CardBehavior::InsufficientFunds,
            "4000002500003155" => CardBehavior::Authenticates,
            _ => CardBehavior::Declines,
        };
        Card {
            brand: brand(digits),
            last4: digits[digits.len().saturating_sub(4)..].to_owned(),
            exp_month,
            exp_year,
            behavior,
        }
    }

    /// Stripe's test PaymentMethods, e.g. `pm_card_visa`.
    pub(super) fn from_test_payment_method(id: &str) -> Option<Card> {
        let number = match id {
            "pm_card_visa" => "4242424242424242",
            "pm_card_mastercard" => "5555555555554444",
            "pm_card_chargeDeclined" => "4000000000000002",
            "pm_card_chargeDeclinedInsufficientFunds" => "4000000000009995",
            _ => return None,
        };
        Some(Card::from_number(number, 12, 2034))
    }

    fn json(&self) -> Value {
        json!({
            "brand": self.brand,
            "country": "US",
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
            "funding": "credit",
            "last4": self.last4,
            "network": self.brand,
        })
    }
}

fn brand(digits: &str) -> &'static str {
    match digits.as_bytes().first() {
        Some(b'4') => "visa",
        Some(b'5') | Some(b'2') => "mastercard",
        Some(b'3') => "amex",
        Some(b'6') => "discover",
        _ => "unknown",
    }
}

/// Whether a card number passes the Luhn check.
pub(super) fn luhn(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 {
                    d - 9
                } else {
                    d
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A Stripe list object.
pub(super) fn list(data: Vec<Value>, url: &str, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_numbers_pass_luhn_and_typos_do_not() {
        for ok in [
            "4242424242424242",
            "4000000000000002",
            "4000000000009995",
            "4000002500003155",
            "5555555555554444",
        ] {
            assert!(luhn(ok), "{ok}");
        }
        for bad in ["4242424242424241", "", "42424242x2424242"] {
            assert!(!luhn(bad), "{bad}");
        }
    }
}
