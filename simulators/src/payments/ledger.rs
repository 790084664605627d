//! The simulator's books: every object in memory, the state machines of sessions and
//! PaymentIntents, the events they raise (collected in an outbox the caller publishes), and the
//! audit counters. Pure state — no I/O, no clock of its own (callers pass `now`), no locking.
//!
//! Bounded: each kind of object keeps at most `cap` entries; at the cap the oldest finished
//! object (paid or expired session, succeeded or canceled intent, …) is evicted first.

use super::errors::StripeError;
use super::form::Params;
use super::objects::{
    list, new_id, Card, CardBehavior, Charge, Finished, IntentStatus, LineItem, PaymentIntent,
    Refund, Session, SessionStatus,
};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Stripe's limits on `expires_at`, in seconds from now.
const MIN_EXPIRY: i64 = 30 * 60;
const MAX_EXPIRY: i64 = 24 * 60 * 60;
/// Largest `limit` of a list call, as at Stripe.
const MAX_LIST: usize = 100;

/// Objects of one kind, by id, remembering the order they were created in.
pub(super) struct Store<T> {
    items: HashMap<String, T>,
    order: VecDeque<String>,
    cap: usize,
}

impl<T: Finished> Store<T> {
    fn new(cap: usize) -> Store<T> {
        Store {
            items: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn insert(&mut self, id: String, item: T) {
        while self.items.len() >= self.cap {
            let position = self
                .order
                .iter()
                .position(|id| self.items.get(id).is_none_or(Finished::finished))
                .unwrap_or(0);
            match self.order.remove(position) {
                Some(old) => {
                    self.items.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(id.clone());
        self.items.insert(id, item);
    }

    pub(super) fn get(&self, id: &str) -> Option<&T> {
        self.items.get(id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.items.get_mut(id)
    }

    /// The newest `limit` objects that pass `keep`, and whether there are more.
    pub(super) fn newest(&self, limit: usize, keep: impl Fn(&T) -> bool) -> (Vec<&T>, bool) {
        let mut matching = self
            .order
            .iter()
            .rev()
            .filter_map(|id| self.items.get(id))
            .filter(|item| keep(item));
        let page: Vec<&T> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }
}

/// What paying a Checkout Session led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PayOutcome {
    Paid,
    /// The session had been paid before; nothing was charged.
    AlreadyPaid,
    /// The card asks for a 3-D Secure step ([`Ledger::authenticate_session`]).
    NeedsAuthentication,
}

/// The audit figures of `GET /_sim/audit`.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Audit {
    pub sessions_paid: u64,
    pub charges_succeeded: u64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub double_charges: usize,
    /// The references (`client_reference_id:…`, `checkout_id:…`) charged more than once, with
    /// their charges.
    pub double_charged: Vec<DoubleCharge>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct DoubleCharge {
    pub reference: String,
    pub charges: Vec<String>,
}

pub(super) struct Ledger {
    base_url: String,
    cap: usize,
    pub sessions: Store<Session>,
    pub intents: Store<PaymentIntent>,
    pub charges: Store<Charge>,
    pub refunds: Store<Refund>,
    /// Open sessions by expiry time.
    expiry: BTreeSet<(i64, String)>,
    /// Events raised and not yet published: `(type, object snapshot)`.
    pub outbox: Vec<(&'static str, Value)>,
    audit: Audit,
    /// Succeeded, not released and not fully refunded charges per audit reference.
    charges_by_reference: HashMap<String, Vec<String>>,
}

impl Ledger {
    pub(super) fn new(base_url: String, cap: usize) -> Ledger {
        Ledger {
            base_url,
            cap,
            sessions: Store::new(cap),
            intents: Store::new(cap),
            charges: Store::new(cap),
            refunds: Store::new(cap),
            expiry: BTreeSet::new(),
            outbox: Vec::new(),
            audit: Audit::default(),
            charges_by_reference: HashMap::new(),
        }
    }

    fn emit(&mut self, kind: &'static str, object: Value) {
        self.outbox.push((kind, object));
    }

    // ---- Checkout Sessions ----

    pub(super) fn create_session(&mut self, tree: &Value, now: i64) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        params.only(&[
            "mode",
            "line_items",
            "success_url",
            "cancel_url",
            "client_reference_id",
            "metadata",
            "expires_at",
            "customer_email",
            "payment_method_types",
            "payment_intent_data",
            "currency",
            "locale",
            "submit_type",
            "expand",
        ])?;
        match params.str("mode")? {
            None => return Err(StripeError::missing("mode")),
            Some("payment") => {}
            Some(other) => {
                return Err(StripeError::invalid(
                    format!("Invalid mode: {other}. This simulator supports only `payment`."),
                    "mode",
                ))
            }
        }
        let success_url = params.required_str("success_url")?;
        check_url(success_url, "success_url")?;
        let cancel_url = params.str("cancel_url")?;
        if let Some(url) = cancel_url {
            check_url(url, "cancel_url")?;
        }
        let expires_at = match params.int("expires_at")? {
            None => now + MAX_EXPIRY,
            Some(at) if at < now + MIN_EXPIRY => {
                return Err(StripeError::invalid(
                    "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.".into(),
                    "expires_at",
                ))
            }
            Some(at) if at > now + MAX_EXPIRY => {
                return Err(StripeError::invalid(
                    "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.".into(),
                    "expires_at",
                ))
            }
            Some(at) => at,
        };
        let line_items = line_items(&params)?;
        let currency = line_items
            .first()
            .map(|item| item.currency.clone())
            .unwrap_or_default();
        if let Some(other) = line_items.iter().find(|item| item.currency != currency) {
            return Err(StripeError::invalid(
                format!(
                    "All line items must use the same currency; got `{currency}` and `{}`.",
                    other.currency
                ),
                "line_items",
            ));
        }
        let intent_data = params
            .raw("payment_intent_data")
            .map(|tree| Params::nested(tree, "payment_intent_data".into()));
        let (intent_metadata, intent_description) = match &intent_data {
            Some(data) => {
                data.only(&["metadata", "description", "capture_method"])?;
                if data
                    .str("capture_method")?
                    .is_some_and(|m| m != "automatic")
                {
                    return Err(StripeError::invalid(
                        "This simulator's Checkout Sessions capture automatically only.".into(),
                        "payment_intent_data[capture_method]",
                    ));
                }
                (
                    data.metadata("metadata")?,
                    data.str("description")?.map(str::to_owned),
                )
            }
            None => (Map::new(), None),
        };
        let session = Session {
            id: new_id("cs_test"),
            created: now,
            expires_at,
            status: SessionStatus::Open,
            currency,
            line_items,
            success_url: success_url.to_owned(),
            cancel_url: cancel_url.map(str::to_owned),
            client_reference_id: params.str("client_reference_id")?.map(str::to_owned),
            customer_email: params.str("customer_email")?.map(str::to_owned),
            metadata: params.metadata("metadata")?,
            intent_metadata,
            intent_description,
            payment_intent: None,
            pending_authentication: None,
        };
        let json = session.json(&self.base_url);
        self.expiry.insert((session.expires_at, session.id.clone()));
        self.sessions.insert(session.id.clone(), session);
        Ok(json)
    }

    pub(super) fn session(&self, id: &str) -> Result<&Session, StripeError> {
        self.sessions
            .get(id)
            .ok_or_else(|| StripeError::no_such("checkout.session", id, "session"))
    }

    pub(super) fn session_json(&self, id: &str) -> Result<Value, StripeError> {
        Ok(self.session(id)?.json(&self.base_url))
    }

    pub(super) fn list_sessions(&self, tree: &Value) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        let limit = list_limit(&params)?;
        let intent = params.str("payment_intent")?;
        let (page, more) = self.sessions.newest(limit, |s| {
            intent.is_none_or(|pi| s.payment_intent.as_deref() == Some(pi))
        });
        let data = page.iter().map(|s| s.json(&self.base_url)).collect();
        Ok(list(data, "/v1/checkout/sessions", more))
    }

    pub(super) fn expire_session(&mut self, id: &str) -> Result<Value, StripeError> {
        let session = self.session(id)?;
        if session.status != SessionStatus::Open {
            return Err(StripeError::request(format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
                session.status.as_str()
            ))
            .with_code("checkout_session_not_open"));
        }
        Ok(self.close_expired(id))
    }

    fn close_expired(&mut self, id: &str) -> Value {
        let Some(session) = self.sessions.get_mut(id) else {
            return Value::Null;
        };
        session.status = SessionStatus::Expired;
        self.expiry
            .remove(&(session.expires_at, session.id.clone()));
        let pending_intent = session.payment_intent.clone();
        let json = session.json(&self.base_url);
        // Stripe cancels the session's PaymentIntent when the session expires.
        if let Some(intent) = pending_intent.and_then(|id| self.intents.get_mut(&id)) {
            if !intent.finished() {
                intent.status = IntentStatus::Canceled;
                intent.cancellation_reason = Some("automatic".into());
            }
        }
        self.emit("checkout.session.expired", json.clone());
        json
    }

    /// Expires every open session whose `expires_at` has passed.
    pub(super) fn expire_due(&mut self, now: i64) {
        while let Some((at, id)) = self.expiry.first().cloned() {
            if at > now {
                break;
            }
            self.expiry.remove(&(at, id.clone()));
            if self.sessions.get(&id).is_some_and(|s| !s.finished()) {
                self.close_expired(&id);
            }
        }
    }

    /// Pays an open session with a card, as the hosted page does. A paid session is never
    /// charged again.
    pub(super) fn pay_session(
        &mut self,
        id: &str,
        card: Card,
        now: i64,
    ) -> Result<PayOutcome, StripeError> {
        let session = self.session(id)?;
        match session.status {
            SessionStatus::Complete => return Ok(PayOutcome::AlreadyPaid),
            SessionStatus::Expired => return Err(session_not_open()),
            SessionStatus::Open => {}
        }
        let intent_id = self.session_intent(id, now)?;
        let payment_method = new_id("pm");
        if card.behavior == CardBehavior::Authenticates {
            if let Some(intent) = self.intents.get_mut(&intent_id) {
                intent.status = IntentStatus::RequiresAction;
                intent.payment_method = Some(payment_method.clone());
            }
            if let Some(session) = self.sessions.get_mut(id) {
                session.pending_authentication = Some(payment_method);
            }
            return Ok(PayOutcome::NeedsAuthentication);
        }
        self.pay_session_with(id, &intent_id, card, payment_method, now)
    }

    /// Ends a pending 3-D Secure step: approved, the payment goes through; failed, the session
    /// stays open for another card.
    pub(super) fn authenticate_session(
        &mut self,
        id: &str,
        approve: bool,
        now: i64,
    ) -> Result<PayOutcome, StripeError> {
        let session = self.session(id)?;
        match session.status {
            SessionStatus::Complete => return Ok(PayOutcome::AlreadyPaid),
            SessionStatus::Expired => return Err(session_not_open()),
            SessionStatus::Open => {}
        }
        let Some(payment_method) = session.pending_authentication.clone() else {
            return Err(StripeError::request(
                "This Checkout Session has no payment waiting for authentication.".into(),
            ));
        };
        let intent_id = self.session_intent(id, now)?;
        if let Some(session) = self.sessions.get_mut(id) {
            session.pending_authentication = None;
        }
        let card = Card::from_number("4000002500003155", 12, 2034);
        if approve {
            let card = Card {
                behavior: CardBehavior::Succeeds,
                ..card
            };
            return self.pay_session_with(id, &intent_id, card, payment_method, now);
        }
        let error = StripeError::request(
            "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.".into(),
        )
        .with_code("payment_intent_authentication_failure");
        let intent = self
            .intents
            .get_mut(&intent_id)
            .ok_or_else(|| StripeError::no_such("payment_intent", &intent_id, "payment_intent"))?;
        intent.status = IntentStatus::RequiresPaymentMethod;
        intent.last_payment_error = Some(
            error
                .clone()
                .with_extra(
                    "payment_method",
                    payment_method_json(&payment_method, &card, now),
                )
                .object(),
        );
        let json = intent.json();
        self.emit("payment_intent.payment_failed", json.clone());
        Err(error.with_extra("payment_intent", json))
    }

    fn pay_session_with(
        &mut self,
        id: &str,
        intent_id: &str,
        card: Card,
        payment_method: String,
        now: i64,
    ) -> Result<PayOutcome, StripeError> {
        let mark = self.outbox.len();
        self.charge_intent(intent_id, card, payment_method, now)?;
        let Some(session) = self.sessions.get_mut(id) else {
            return Err(StripeError::no_such("checkout.session", id, "session"));
        };
        session.status = SessionStatus::Complete;
        session.pending_authentication = None;
        self.expiry
            .remove(&(session.expires_at, session.id.clone()));
        let json = session.json(&self.base_url);
        self.audit.sessions_paid += 1;
        // `checkout.session.completed` goes out before `payment_intent.succeeded`.
        self.outbox
            .insert(mark, ("checkout.session.completed", json));
        Ok(PayOutcome::Paid)
    }

    /// The session's PaymentIntent, created on the first payment attempt as Stripe does.
    fn session_intent(&mut self, id: &str, now: i64) -> Result<String, StripeError> {
        let session = self.session(id)?;
        if let Some(intent) = &session.payment_intent {
            if self.intents.get(intent).is_some() {
                return Ok(intent.clone());
            }
        }
        let mut references = Vec::new();
        if let Some(reference) = &session.client_reference_id {
            references.push(format!("client_reference_id:{reference}"));
        }
        if let Some(Value::String(checkout)) = session.metadata.get("checkout_id") {
            references.push(format!("checkout_id:{checkout}"));
        }
        let intent = PaymentIntent {
            references,
            metadata: session.intent_metadata.clone(),
            description: session.intent_description.clone(),
            receipt_email: session.customer_email.clone(),
            ..new_intent(session.amount_total(), &session.currency, false, now)
        };
        let intent_id = intent.id.clone();
        self.intents.insert(intent_id.clone(), intent);
        if let Some(session) = self.sessions.get_mut(id) {
            session.payment_intent = Some(intent_id.clone());
        }
        Ok(intent_id)
    }

    // ---- PaymentIntents ----

    pub(super) fn intent(&self, id: &str) -> Result<&PaymentIntent, StripeError> {
        self.intents
            .get(id)
            .ok_or_else(|| StripeError::no_such("payment_intent", id, "intent"))
    }

    pub(super) fn create_intent(&mut self, tree: &Value, now: i64) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        params.only(&[
            "amount",
            "currency",
            "payment_method",
            "confirm",
            "capture_method",
            "metadata",
            "description",
            "receipt_email",
            "payment_method_types",
            "automatic_payment_methods",
            "return_url",
            "off_session",
            "statement_descriptor",
            "statement_descriptor_suffix",
            "expand",
        ])?;
        let amount = params.required_int("amount")?;
        if amount < 1 {
            return Err(StripeError::invalid(
                "This value must be greater than or equal to 1.".into(),
                "amount",
            ));
        }
        let currency = currency(&params, "currency")?;
        let manual = match params.str("capture_method")? {
            None | Some("automatic") | Some("automatic_async") => false,
            Some("manual") => true,
            Some(other) => {
                return Err(StripeError::invalid(
                    format!("Invalid capture_method: must be one of automatic, automatic_async, or manual (got {other})"),
                    "capture_method",
                ))
            }
        };
        let payment_method = params.str("payment_method")?;
        if let Some(pm) = payment_method {
            test_card(pm)?;
        }
        let metadata = params.metadata("metadata")?;
        let references = match metadata.get("checkout_id") {
            Some(Value::String(checkout)) => vec![format!("checkout_id:{checkout}")],
            _ => Vec::new(),
        };
        let intent = PaymentIntent {
            status: if payment_method.is_some() {
                IntentStatus::RequiresConfirmation
            } else {
                IntentStatus::RequiresPaymentMethod
            },
            payment_method: payment_method.map(str::to_owned),
            metadata,
            references,
            description: params.str("description")?.map(str::to_owned),
            receipt_email: params.str("receipt_email")?.map(str::to_owned),
            ..new_intent(amount, &currency, manual, now)
        };
        let id = intent.id.clone();
        self.intents.insert(id.clone(), intent);
        if params.bool("confirm")? == Some(true) {
            return self.confirm_intent(&id, &Value::Object(Map::new()), now);
        }
        Ok(self.intent(&id)?.json())
    }

    pub(super) fn update_intent(&mut self, id: &str, tree: &Value) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        params.only(&[
            "metadata",
            "description",
            "receipt_email",
            "amount",
            "expand",
        ])?;
        let metadata = params.metadata("metadata")?;
        let description = params.str("description")?.map(str::to_owned);
        let receipt_email = params.str("receipt_email")?.map(str::to_owned);
        let amount = params.int("amount")?;
        let intent = self
            .intents
            .get_mut(id)
            .ok_or_else(|| StripeError::no_such("payment_intent", id, "intent"))?;
        if let Some(amount) = amount {
            if intent.finished() || intent.status == IntentStatus::RequiresCapture {
                return Err(unexpected_state(intent, "update the amount of"));
            }
            if amount < 1 {
                return Err(StripeError::invalid(
                    "This value must be greater than or equal to 1.".into(),
                    "amount",
                ));
            }
            intent.amount = amount;
        }
        intent.metadata.extend(metadata);
        if description.is_some() {
            intent.description = description;
        }
        if receipt_email.is_some() {
            intent.receipt_email = receipt_email;
        }
        Ok(intent.json())
    }

    pub(super) fn list_intents(&self, tree: &Value) -> Result<Value, StripeError> {
        let limit = list_limit(&Params::new(tree))?;
        let (page, more) = self.intents.newest(limit, |_| true);
        let data = page.iter().map(|i| i.json()).collect();
        Ok(list(data, "/v1/payment_intents", more))
    }

    pub(super) fn confirm_intent(
        &mut self,
        id: &str,
        tree: &Value,
        now: i64,
    ) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        params.only(&[
            "payment_method",
            "return_url",
            "off_session",
            "payment_method_types",
            "receipt_email",
            "capture_method",
            "expand",
        ])?;
        let new_method = params.str("payment_method")?;
        let intent = self.intent(id)?;
        if !matches!(
            intent.status,
            IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation
        ) {
            return Err(unexpected_state(intent, "confirm"));
        }
        let Some(method) = new_method.or(intent.payment_method.as_deref()) else {
            return Err(StripeError::request(
                "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm the PaymentIntent with cus_…, specify a payment method attached to this customer along with the customer ID.".into(),
            )
            .with_code("payment_intent_unexpected_state")
            .with_extra("payment_intent", intent.json()));
        };
        let method = method.to_owned();
        let card = test_card(&method)?;
        self.charge_intent(id, card, method, now)?;
        Ok(self.intent(id)?.json())
    }

    pub(super) fn capture_intent(&mut self, id: &str, tree: &Value) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        params.only(&["amount_to_capture", "metadata", "expand"])?;
        let intent = self.intent(id)?;
        if intent.status != IntentStatus::RequiresCapture {
            return Err(unexpected_state(intent, "capture"));
        }
        let capturable = intent.amount_capturable;
        let amount = params.int("amount_to_capture")?.unwrap_or(capturable);
        if amount < 1 || amount > capturable {
            return Err(StripeError::invalid(
                format!("The amount to capture must be between 1 and the capturable amount ({capturable})."),
                "amount_to_capture",
            )
            .with_code("amount_too_large"));
        }
        let metadata = params.metadata("metadata")?;
        let Some(intent) = self.intents.get_mut(id) else {
            return Err(StripeError::no_such("payment_intent", id, "intent"));
        };
        intent.status = IntentStatus::Succeeded;
        intent.amount_received = amount;
        intent.amount_capturable = 0;
        intent.metadata.extend(metadata);
        let charge_id = intent.latest_charge.clone().unwrap_or_default();
        let json = intent.json();
        if let Some(charge) = self.charges.get_mut(&charge_id) {
            charge.captured = true;
            charge.amount_captured = amount;
            charge.released = amount < charge.amount;
        }
        self.audit.amount_captured += amount;
        self.emit("payment_intent.succeeded", json.clone());
        Ok(json)
    }

    pub(super) fn cancel_intent(
        &mut self,
        id: &str,
        tree: &Value,
        now: i64,
    ) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        params.only(&["cancellation_reason", "expand"])?;
        let reason = params.str("cancellation_reason")?.map(str::to_owned);
        let intent = self.intent(id)?;
        if intent.finished() {
            return Err(StripeError::request(format!(
                "You cannot cancel this PaymentIntent because it has a status of {}. Only a PaymentIntent with one of the following statuses may be canceled: requires_payment_method, requires_capture, requires_confirmation, requires_action, processing.",
                intent.status.as_str()
            ))
            .with_code("payment_intent_unexpected_state")
            .with_extra("payment_intent", intent.json()));
        }
        let Some(intent) = self.intents.get_mut(id) else {
            return Err(StripeError::no_such("payment_intent", id, "intent"));
        };
        let authorized = intent.status == IntentStatus::RequiresCapture;
        intent.status = IntentStatus::Canceled;
        intent.canceled_at = Some(now);
        intent.cancellation_reason = reason;
        intent.amount_capturable = 0;
        let charge_id = intent.latest_charge.clone();
        let json = intent.json();
        if authorized {
            if let Some(charge_id) = charge_id {
                if let Some(charge) = self.charges.get_mut(&charge_id) {
                    charge.released = true;
                }
                self.forget_charge(&charge_id);
            }
        }
        self.emit("payment_intent.canceled", json.clone());
        Ok(json)
    }

    /// Charges a card for an intent: a succeeded charge (captured unless the intent captures
    /// manually) or a failed one with the decline as a 402 error.
    fn charge_intent(
        &mut self,
        intent_id: &str,
        card: Card,
        payment_method: String,
        now: i64,
    ) -> Result<(), StripeError> {
        let intent = self.intent(intent_id)?;
        let declined = match card.behavior {
            CardBehavior::Succeeds => None,
            CardBehavior::Declines => Some(StripeError::declined(
                "generic_decline",
                "Your card was declined.",
            )),
            CardBehavior::InsufficientFunds => Some(StripeError::declined(
                "insufficient_funds",
                "Your card has insufficient funds.",
            )),
            CardBehavior::Authenticates => Some(
                StripeError::declined(
                    "authentication_required",
                    "Your card was declined. This transaction requires authentication.",
                )
                .with_code("authentication_required"),
            ),
        };
        let captured = declined.is_none() && !intent.manual_capture;
        let charge = Charge {
            id: new_id("ch"),
            created: now,
            amount: intent.amount,
            amount_captured: if captured { intent.amount } else { 0 },
            amount_refunded: 0,
            captured,
            currency: intent.currency.clone(),
            succeeded: declined.is_none(),
            payment_intent: intent.id.clone(),
            payment_method: payment_method.clone(),
            card: card.clone(),
            failure: declined
                .as_ref()
                .map(|e| (e.code.clone().unwrap_or_default(), e.message.clone())),
            metadata: intent.metadata.clone(),
            references: intent.references.clone(),
            released: false,
        };
        let charge_id = charge.id.clone();
        let Some(intent) = self.intents.get_mut(intent_id) else {
            return Err(StripeError::no_such("payment_intent", intent_id, "intent"));
        };
        intent.latest_charge = Some(charge_id.clone());
        intent.payment_method = Some(payment_method.clone());
        if let Some(error) = declined {
            let error = error.with_extra("charge", json!(charge_id)).with_extra(
                "payment_method",
                payment_method_json(&payment_method, &card, now),
            );
            intent.status = IntentStatus::RequiresPaymentMethod;
            intent.last_payment_error = Some(error.object());
            let json = intent.json();
            self.charges.insert(charge_id, charge);
            self.emit("payment_intent.payment_failed", json.clone());
            return Err(error.with_extra("payment_intent", json));
        }
        intent.last_payment_error = None;
        if intent.manual_capture {
            intent.status = IntentStatus::RequiresCapture;
            intent.amount_capturable = intent.amount;
        } else {
            intent.status = IntentStatus::Succeeded;
            intent.amount_received = intent.amount;
        }
        let json = intent.json();
        let amount = intent.amount;
        let manual = intent.manual_capture;
        for reference in &charge.references {
            let charges = self
                .charges_by_reference
                .entry(reference.clone())
                .or_default();
            charges.push(charge_id.clone());
        }
        if self.charges_by_reference.len() > self.cap {
            self.charges_by_reference
                .retain(|_, charges| charges.len() > 1);
        }
        self.charges.insert(charge_id, charge);
        self.audit.charges_succeeded += 1;
        if manual {
            self.emit("payment_intent.amount_capturable_updated", json);
        } else {
            self.audit.amount_captured += amount;
            self.emit("payment_intent.succeeded", json);
        }
        Ok(())
    }

    /// Takes a charge out of the double-charge audit (released or fully refunded).
    fn forget_charge(&mut self, charge_id: &str) {
        for charges in self.charges_by_reference.values_mut() {
            charges.retain(|c| c != charge_id);
        }
        self.charges_by_reference.retain(|_, c| !c.is_empty());
    }

    // ---- Charges and Refunds ----

    pub(super) fn charge(&self, id: &str) -> Result<&Charge, StripeError> {
        self.charges
            .get(id)
            .ok_or_else(|| StripeError::no_such("charge", id, "charge"))
    }

    pub(super) fn list_charges(&self, tree: &Value) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        let limit = list_limit(&params)?;
        let intent = params.str("payment_intent")?;
        let (page, more) = self
            .charges
            .newest(limit, |c| intent.is_none_or(|pi| c.payment_intent == pi));
        let data = page.iter().map(|c| c.json()).collect();
        Ok(list(data, "/v1/charges", more))
    }

    pub(super) fn refund(&self, id: &str) -> Result<&Refund, StripeError> {
        self.refunds
            .get(id)
            .ok_or_else(|| StripeError::no_such("refund", id, "refund"))
    }

    pub(super) fn list_refunds(&self, tree: &Value) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        let limit = list_limit(&params)?;
        let intent = params.str("payment_intent")?;
        let charge = params.str("charge")?;
        let (page, more) = self.refunds.newest(limit, |r| {
            intent.is_none_or(|pi| r.payment_intent == pi) && charge.is_none_or(|c| r.charge == c)
        });
        let data = page.iter().map(|r| r.json()).collect();
        Ok(list(data, "/v1/refunds", more))
    }

    pub(super) fn create_refund(&mut self, tree: &Value, now: i64) -> Result<Value, StripeError> {
        let params = Params::new(tree);
        params.only(&[
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata",
            "expand",
        ])?;
        let charge_id = match (params.str("charge")?, params.str("payment_intent")?) {
            (Some(charge), _) => self.charge(charge)?.id.clone(),
            (None, Some(intent_id)) => {
                let intent = self
                    .intents
                    .get(intent_id)
                    .ok_or_else(|| StripeError::no_such("payment_intent", intent_id, "payment_intent"))?;
                match (&intent.latest_charge, intent.status) {
                    (Some(charge), IntentStatus::Succeeded) => charge.clone(),
                    _ => {
                        return Err(StripeError::request(format!(
                            "This PaymentIntent ({intent_id}) does not have a successful charge to refund."
                        ))
                        .with_param("payment_intent"))
                    }
                }
            }
            (None, None) => {
                return Err(StripeError::request(
                    "One of the following params should be provided for this request: payment_intent or charge.".into(),
                )
                .with_code("parameter_missing"))
            }
        };
        let reason = match params.str("reason")? {
            None => None,
            Some(r @ ("duplicate" | "fraudulent" | "requested_by_customer")) => Some(r.to_owned()),
            Some(other) => {
                return Err(StripeError::invalid(
                    format!("Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer (got {other})"),
                    "reason",
                ))
            }
        };
        let metadata = params.metadata("metadata")?;
        let amount = params.int("amount")?;
        let charge = self.charge(&charge_id)?;
        if !charge.succeeded || !charge.captured {
            return Err(StripeError::request(format!(
                "Charge {charge_id} has not been captured and cannot be refunded; cancel its PaymentIntent instead."
            ))
            .with_code("charge_not_refundable"));
        }
        let refundable = charge.refundable();
        if refundable <= 0 {
            return Err(StripeError::request(format!(
                "Charge {charge_id} has already been refunded."
            ))
            .with_code("charge_already_refunded"));
        }
        let amount = amount.unwrap_or(refundable);
        if amount < 1 {
            return Err(StripeError::invalid(
                "This value must be greater than or equal to 1.".into(),
                "amount",
            ));
        }
        if amount > refundable {
            return Err(StripeError::invalid(
                format!(
                    "Refund amount ({}) is greater than unrefunded amount on charge ({}).",
                    money(amount, &charge.currency),
                    money(refundable, &charge.currency)
                ),
                "amount",
            )
            .with_code("amount_too_large"));
        }
        let refund = Refund {
            id: new_id("re"),
            created: now,
            amount,
            charge: charge_id.clone(),
            payment_intent: charge.payment_intent.clone(),
            currency: charge.currency.clone(),
            reason,
            metadata,
        };
        let json = refund.json();
        self.refunds.insert(refund.id.clone(), refund);
        let Some(charge) = self.charges.get_mut(&charge_id) else {
            return Err(StripeError::no_such("charge", &charge_id, "charge"));
        };
        charge.amount_refunded += amount;
        let fully = charge.refundable() == 0;
        let charge_json = charge.json();
        self.audit.amount_refunded += amount;
        if fully {
            self.forget_charge(&charge_id);
        }
        self.emit("charge.refunded", charge_json);
        Ok(json)
    }

    // ---- Audit ----

    pub(super) fn audit(&self) -> Audit {
        let mut double_charged: Vec<DoubleCharge> = self
            .charges_by_reference
            .iter()
            .filter(|(_, charges)| charges.len() > 1)
            .map(|(reference, charges)| DoubleCharge {
                reference: reference.clone(),
                charges: charges.clone(),
            })
            .collect();
        double_charged.sort_by(|a, b| a.reference.cmp(&b.reference));
        Audit {
            double_charges: double_charged.len(),
            double_charged,
            ..self.audit.clone()
        }
    }
}

fn new_intent(amount: i64, currency: &str, manual: bool, now: i64) -> PaymentIntent {
    let id = new_id("pi");
    PaymentIntent {
        client_secret: format!("{id}_secret_{}", ulid::Ulid::new()),
        id,
        created: now,
        amount,
        currency: currency.to_owned(),
        status: IntentStatus::RequiresPaymentMethod,
        manual_capture: manual,
        amount_received: 0,
        amount_capturable: 0,
        latest_charge: None,
        payment_method: None,
        last_payment_error: None,
        metadata: Map::new(),
        description: None,
        receipt_email: None,
        canceled_at: None,
        cancellation_reason: None,
        references: Vec::new(),
    }
}

fn payment_method_json(id: &str, card: &Card, now: i64) -> Value {
    json!({
        "id": id,
        "object": "payment_method",
        "type": "card",
        "created": now,
        "livemode": false,
        "card": {"brand": card.brand, "last4": card.last4, "exp_month": card.exp_month,
            "exp_year": card.exp_year, "funding": "credit", "country": "US"},
    })
}

/// The card behind one of Stripe's test PaymentMethod ids.
fn test_card(payment_method: &str) -> Result<Card, StripeError> {
    Card::from_test_payment_method(payment_method)
        .ok_or_else(|| StripeError::no_such("PaymentMethod", payment_method, "payment_method"))
}

fn session_not_open() -> StripeError {
    StripeError::request("This Checkout Session is no longer active.".into())
        .with_code("checkout_session_expired")
}

fn unexpected_state(intent: &PaymentIntent, action: &str) -> StripeError {
    StripeError::request(format!(
        "You cannot {action} this PaymentIntent because it has a status of {}.",
        intent.status.as_str()
    ))
    .with_code("payment_intent_unexpected_state")
    .with_extra("payment_intent", intent.json())
}

fn check_url(url: &str, param: &str) -> Result<(), StripeError> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => Err(
            StripeError::invalid(format!("Not a valid URL: {url}"), param).with_code("url_invalid"),
        ),
    }
}

fn currency(params: &Params<'_>, key: &str) -> Result<String, StripeError> {
    let currency = params.required_str(key)?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(StripeError::invalid(
            format!("Invalid currency: {currency}. Stripe currently supports these currencies: usd, eur, gbp, …"),
            &params.name(key),
        ));
    }
    Ok(currency.to_ascii_lowercase())
}

fn list_limit(params: &Params<'_>) -> Result<usize, StripeError> {
    match params.int("limit")? {
        None => Ok(10),
        Some(limit) if (1..=MAX_LIST as i64).contains(&limit) => Ok(limit as usize),
        Some(_) => Err(StripeError::invalid(
            "This value must be between 1 and 100.".into(),
            "limit",
        )),
    }
}

/// `line_items[n][price_data][…]` and `[quantity]`, all required as Stripe requires them.
fn line_items(params: &Params<'_>) -> Result<Vec<LineItem>, StripeError> {
    let items = match params.raw("line_items") {
        None => return Err(StripeError::missing("line_items")),
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(_) => {
            return Err(StripeError::invalid(
                "Invalid array: line_items must be a list of line items.".into(),
                "line_items",
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, tree)| {
            let item = Params::nested(tree, format!("line_items[{i}]"));
            item.only(&["price_data", "quantity", "price"])?;
            if item.raw("price").is_some() {
                return Err(StripeError::invalid(
                    "This simulator knows no Prices; give line_items[][price_data] instead.".into(),
                    &item.name("price"),
                ));
            }
            let quantity = item.required_int("quantity")?;
            if quantity < 1 {
                return Err(StripeError::invalid(
                    "This value must be greater than or equal to 1.".into(),
                    &item.name("quantity"),
                ));
            }
            let price_tree = item
                .raw("price_data")
                .ok_or_else(|| StripeError::missing(&item.name("price_data")))?;
            let price = Params::nested(price_tree, item.name("price_data"));
            price.only(&[
                "currency",
                "unit_amount",
                "product_data",
                "unit_amount_decimal",
                "tax_behavior",
            ])?;
            let currency = currency(&price, "currency")?;
            let unit_amount = price.required_int("unit_amount")?;
            if unit_amount < 0 {
                return Err(StripeError::invalid(
                    "This value must be greater than or equal to 0.".into(),
                    &price.name("unit_amount"),
                ));
            }
            let product_tree = price
                .raw("product_data")
                .ok_or_else(|| StripeError::missing(&price.name("product_data")))?;
            let product = Params::nested(product_tree, price.name("product_data"));
            product.only(&["name", "description", "images", "metadata"])?;
            Ok(LineItem {
                id: new_id("li"),
                name: product.required_str("name")?.to_owned(),
                description: product.str("description")?.map(str::to_owned),
                unit_amount,
                quantity,
                currency,
                price_id: new_id("price"),
                product_id: new_id("prod"),
            })
        })
        .collect()
}

/// Digits after the decimal point of a currency (Stripe's zero-decimal currencies have none).
pub(super) fn exponent(currency: &str) -> u32 {
    const ZERO_DECIMAL: &[&str] = &[
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
        "xaf", "xof", "xpf",
    ];
    if ZERO_DECIMAL.contains(&currency) {
        0
    } else {
        2
    }
}

/// An amount for people: `€12.34`, `$5.00`, `¥500`, `12.34 CHF`.
pub(super) fn money(minor: i64, currency: &str) -> String {
    let exponent = exponent(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    let number = if exponent == 0 {
        minor.to_string()
    } else {
        let unit = 10u64.pow(exponent);
        format!(
            "{}.{:0width$}",
            minor / unit,
            minor % unit,
            width = exponent as usize
        )
    };
    match currency {
        "usd" => format!("{sign}${number}"),
        "eur" => format!("{sign}€{number}"),
        "gbp" => format!("{sign}£{number}"),
        "jpy" => format!("{sign}¥{number}"),
        other => format!("{sign}{number} {}", other.to_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_in_major_units() {
        assert_eq!(money(1234, "eur"), "€12.34");
        assert_eq!(money(5, "usd"), "$0.05");
        assert_eq!(money(500, "jpy"), "¥500");
        assert_eq!(money(1000, "chf"), "10.00 CHF");
    }

    #[test]
    fn the_store_evicts_finished_objects_first() {
        let mut store: Store<Refund> = Store::new(2);
        for i in 0..3 {
            let refund = Refund {
                id: format!("re_{i}"),
                created: 0,
                amount: 1,
                charge: String::new(),
                payment_intent: String::new(),
                currency: "eur".into(),
                reason: None,
                metadata: Map::new(),
            };
            store.insert(refund.id.clone(), refund);
        }
        assert!(store.get("re_0").is_none());
        assert!(store.get("re_2").is_some());
    }
}
