//! Card tender at the till (`docs/pos.md`, "Card payments"): the store's payment terminal
//! (`omnihub sim terminal`) reads and tokenises the card itself and hands the till only a
//! token, the brand and the last four digits; no card number ever reaches the node.
//!
//! - **Online** (the sync link is up): the node asks the hub to authorise the card
//!   (`POST /api/v1/edge/card/authorize`, the node's credential as for sync); the hub creates
//!   and confirms a PaymentIntent with `capture_method=manual` at the payment provider. The sale
//!   is recorded with the intent's id (`pi_…`) as the payment's reference, status `Authorised`,
//!   and the forwarder below captures it right after (retried until done). A decline refuses
//!   the sale: nothing is recorded.
//! - **Offline** (the hub unreachable): store-and-forward within a per-payment cap, a cap on
//!   the node's total outstanding offline card payments and an upload deadline
//!   ([`CardSettings`]). The payment is recorded as `PaidOfflinePendingAuth` in the sale (so
//!   in the sale journal too) and as a pending card state here. Over a cap the sale is refused
//!   and nothing changes.
//! - **The forwarder** ([`run`]) sends pending authorisations once the node is connected:
//!   authorised → captured; declined, or past the deadline → flagged for follow-up (a conflict
//!   record, sent to the hub like the node's other records). Each card payment has an id made
//!   on the node (derived from the sale's idempotency key when there is one), and every hub
//!   and provider call is idempotent by it, so a resync never authorises twice.
//!
//! | key (`pos` tree)   | value                                              |
//! |--------------------|----------------------------------------------------|
//! | `ks` + payment id  | [`CardState`]                                      |
//! | `ko` + payment id  | `OpenCard`: still to authorise or capture (index)  |

use crate::api::{ApiError, ApiState};
use crate::ops::{FieldProblem, OpError, PaymentMethod, PaymentRequest, SaleRequest};
use crate::storage::{Db, StoreError, WriteSet, T};
use crate::store::Store;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use protocol::codec::Stored;
use protocol::replication::{CardStatus, CardTender, SaleRecord};
use protocol::{Currency, Money};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use ulid::Ulid;

/// Prefix of the card states in the `pos` tree.
const CARD: u8 = b'k';
/// The most card payments `GET /api/v1/card/payments` lists (the newest).
const MAX_LISTED: usize = 500;

// ---- settings -----------------------------------------------------------------------------

/// `[pos.card]`: the payment terminal and the offline caps.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CardSettings {
    /// The payment terminal's base URL (`omnihub sim terminal`).
    pub terminal_url: String,
    /// The most one sale takes in card payments offline, its card payments together (a decimal in
    /// the shop's currency).
    #[serde(deserialize_with = "amount_text")]
    pub offline_transaction_cap: String,
    /// The most the node holds in offline card payments not yet authorised.
    #[serde(deserialize_with = "amount_text")]
    pub offline_node_cap: String,
    /// An offline card payment not authorised within this long is flagged for follow-up.
    #[serde(deserialize_with = "crate::config::human")]
    pub offline_deadline: Duration,
    /// How often the forwarder looks for pending authorisations and captures.
    #[serde(deserialize_with = "crate::config::human")]
    pub retry_every: Duration,
    /// How long the till waits for the hub's answer before taking the card offline.
    #[serde(deserialize_with = "crate::config::human")]
    pub hub_timeout: Duration,
}

impl Default for CardSettings {
    fn default() -> Self {
        CardSettings {
            terminal_url: "http://127.0.0.1:8206".into(),
            offline_transaction_cap: "200.00".into(),
            offline_node_cap: "5000.00".into(),
            offline_deadline: Duration::from_secs(24 * 3600),
            retry_every: Duration::from_secs(5),
            hub_timeout: Duration::from_secs(10),
        }
    }
}

/// An amount as text: `"200.00"` in a file, or `200.00` as an environment variable reads.
fn amount_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Amount {
        Text(String),
        Whole(i64),
        Decimal(f64),
    }
    Ok(match Amount::deserialize(d)? {
        Amount::Text(t) => t,
        Amount::Whole(n) => n.to_string(),
        Amount::Decimal(x) => x.to_string(),
    })
}

/// The offline caps in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub per_payment: Money,
    pub node_total: Money,
}

impl CardSettings {
    /// Refuses settings that cannot work (the key without `pos.`).
    pub(crate) fn check(&self, currency: Currency) -> Result<(), String> {
        self.limits(currency)?;
        if !(self.terminal_url.starts_with("http://") || self.terminal_url.starts_with("https://"))
        {
            return Err(format!(
                "card.terminal_url '{}' must start with http:// or https://",
                self.terminal_url
            ));
        }
        if self.offline_deadline.is_zero()
            || self.retry_every.is_zero()
            || self.hub_timeout.is_zero()
        {
            return Err(
                "card.offline_deadline, card.retry_every and card.hub_timeout must be above zero"
                    .into(),
            );
        }
        Ok(())
    }

    pub(crate) fn limits(&self, currency: Currency) -> Result<Limits, String> {
        let cap = |key: &str, text: &str| match Money::parse_decimal(text, currency) {
            Ok(m) if m.minor >= 0 => Ok(m),
            _ => Err(format!(
                "card.{key} '{text}' is not an amount in {currency}, e.g. \"200.00\""
            )),
        };
        Ok(Limits {
            per_payment: cap("offline_transaction_cap", &self.offline_transaction_cap)?,
            node_total: cap("offline_node_cap", &self.offline_node_cap)?,
        })
    }
}

// ---- what a sale carries --------------------------------------------------------------------

/// A card as the terminal read it: a token, the brand and the last four digits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardRead {
    /// The terminal's token for the card (a provider PaymentMethod id, `pm_…`).
    pub token: String,
    pub brand: String,
    pub last4: String,
    /// Set by the node once it authorised the card or took it offline; never from a client.
    #[serde(skip)]
    pub(crate) outcome: Option<Outcome>,
}

/// What the node decided for one card payment before recording the sale.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub payment: String,
    pub taken_at_ms: u64,
    pub auth: Auth,
}

#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// Authorised online: the PaymentIntent's id.
    Authorised { reference: String },
    /// Taken offline within these caps (the node total is checked in the sale's write).
    Offline { limits: Limits },
}

/// The card part of a recorded payment, from a request payment: `(card, reference)`. A card
/// read the node did not authorise (or take offline) is refused, so a client can never record
/// an authorisation itself.
pub(crate) fn tender_of(
    p: &PaymentRequest,
    field: &str,
) -> Result<(Option<CardTender>, Option<String>), FieldProblem> {
    let Some(read) = &p.card else {
        return Ok((None, None));
    };
    let problem = |message: &str| FieldProblem {
        field: format!("{field}.card"),
        message: message.to_string(),
    };
    if p.method != PaymentMethod::Card {
        return Err(problem("only a card payment carries a card"));
    }
    let Some(outcome) = &read.outcome else {
        return Err(problem(
            "a card read by the terminal is authorised by the node: send the sale to POST /api/v1/sales",
        ));
    };
    let (status, reference) = match &outcome.auth {
        Auth::Authorised { reference } => (CardStatus::Authorised, Some(reference.clone())),
        Auth::Offline { .. } => (CardStatus::PaidOfflinePendingAuth, None),
    };
    Ok((
        Some(CardTender {
            payment: outcome.payment.clone(),
            brand: read.brand.clone(),
            last4: read.last4.clone(),
            status,
            taken_at_ms: outcome.taken_at_ms,
        }),
        reference,
    ))
}

// ---- the node's card states -----------------------------------------------------------------

/// Where a card payment stands on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardPhase {
    /// Taken offline, waiting for the hub (`PaidOfflinePendingAuth`).
    PendingAuth,
    Authorised,
    /// The provider declined it after the fact: flagged for follow-up.
    Declined,
    /// Not authorised within the upload deadline: flagged for follow-up.
    DeadlinePassed,
    #[serde(other)]
    Unknown,
}

impl CardPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            CardPhase::PendingAuth => "pending_authorisation",
            CardPhase::Authorised => "authorised",
            CardPhase::Declined => "declined",
            CardPhase::DeadlinePassed => "deadline_passed",
            CardPhase::Unknown => "unknown",
        }
    }
}

/// One card payment as the node tracks it (node-local; the hub has the sale and, for a
/// follow-up, the conflict record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardState {
    pub payment: String,
    pub sale: Ulid,
    pub number: String,
    pub amount: Money,
    /// The terminal's token (a provider PaymentMethod id, never a card number).
    pub token: String,
    pub brand: String,
    pub last4: String,
    pub taken_at_ms: u64,
    pub phase: CardPhase,
    /// The provider's PaymentIntent id, once authorised.
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub captured: bool,
    /// Taken offline (store-and-forward).
    #[serde(default)]
    pub offline: bool,
    /// Why it was declined, or what failed last.
    #[serde(default)]
    pub note: Option<String>,
    /// The follow-up (conflict) record, when flagged.
    #[serde(default)]
    pub flagged: Option<Ulid>,
    #[serde(default)]
    pub updated_ms: u64,
}

impl Stored for CardState {
    const KIND: &'static str = "edge.pos.card";
    const VERSION: u16 = 1;
}

/// A card payment the forwarder still has work for (an index beside the states, so a round
/// and the node cap read only these, however many card payments the node has made).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenCard {
    payment: String,
}

impl Stored for OpenCard {
    const KIND: &'static str = "edge.pos.card_open";
    const VERSION: u16 = 1;
}

impl CardState {
    /// Whether the forwarder still has to authorise or capture it.
    fn is_open(&self) -> bool {
        self.phase == CardPhase::PendingAuth
            || (self.phase == CardPhase::Authorised && !self.captured)
    }
}

fn card_key(payment: &str) -> Vec<u8> {
    [&[CARD, b's'], payment.as_bytes()].concat()
}

fn open_key(payment: &str) -> Vec<u8> {
    [&[CARD, b'o'], payment.as_bytes()].concat()
}

/// Writes a card state and keeps the open index in step with it.
fn put_state(writes: &mut WriteSet, state: &CardState) -> Result<(), StoreError> {
    writes.put(T::Pos, card_key(&state.payment), state)?;
    if state.is_open() {
        writes.put(
            T::Pos,
            open_key(&state.payment),
            &OpenCard {
                payment: state.payment.clone(),
            },
        )?;
    } else {
        writes.remove(T::Pos, open_key(&state.payment));
    }
    Ok(())
}

/// Every card state, by payment id.
pub fn states(db_store: &Store) -> Result<Vec<CardState>, StoreError> {
    let mut out = Vec::new();
    for kv in db_store.db().tree(T::Pos).scan_prefix([CARD, b's']) {
        let (_, v) = kv?;
        out.push(protocol::decode::<CardState>(&v)?);
    }
    Ok(out)
}

/// The card states the forwarder still has work for.
fn open_states(db: &Db) -> Result<Vec<CardState>, StoreError> {
    let mut out = Vec::new();
    for kv in db.tree(T::Pos).scan_prefix([CARD, b'o']) {
        let (_, v) = kv?;
        let open: OpenCard = protocol::decode(&v)?;
        if let Some(state) = db.get::<CardState>(T::Pos, &card_key(&open.payment))? {
            out.push(state);
        }
    }
    Ok(out)
}

/// Offline card payments not yet authorised (what the node cap counts).
fn outstanding(db: &Db, currency: Currency) -> Result<Money, StoreError> {
    let mut sum = Money::new(0, currency);
    for s in open_states(db)? {
        if s.phase == CardPhase::PendingAuth && s.amount.currency == currency {
            sum.minor = sum.minor.saturating_add(s.amount.minor);
        }
    }
    Ok(sum)
}

/// In the sale's own write (under the writer lock): refuses offline card payments beyond the
/// node's total cap, and keeps a card state per card payment.
pub(crate) fn record(
    db: &Db,
    writes: &mut WriteSet,
    req: &SaleRequest,
    sale: &SaleRecord,
) -> Result<(), OpError> {
    let mut offline_here = 0i64;
    for (p, asked) in sale.payments.iter().zip(&req.payments) {
        let (Some(card), Some(read)) = (&p.card, &asked.card) else {
            continue;
        };
        let limits = match read.outcome.as_ref().map(|o| &o.auth) {
            Some(Auth::Offline { limits }) => Some(*limits),
            _ => None,
        };
        if let Some(limits) = limits {
            // The cap is per transaction: a sale's offline card payments together.
            offline_here = offline_here.saturating_add(p.amount.minor);
            if offline_here > limits.per_payment.minor {
                return Err(over_transaction_cap(
                    Money::new(offline_here, p.amount.currency),
                    limits.per_payment,
                ));
            }
            let held = outstanding(db, p.amount.currency)?;
            let after = held.minor.saturating_add(offline_here);
            if after > limits.node_total.minor {
                return Err(OpError::invalid(
                    "offline_card_cap",
                    format!(
                        "the hub is unreachable and this node already holds {held} in card payments waiting for authorisation: {} more would pass the store's offline limit of {}. Take cash, or wait until the node is back online",
                        Money::new(offline_here, p.amount.currency),
                        limits.node_total
                    ),
                ));
            }
        }
        let state = CardState {
            payment: card.payment.clone(),
            sale: sale.id,
            number: sale.number.clone(),
            amount: p.amount,
            token: read.token.clone(),
            brand: card.brand.clone(),
            last4: card.last4.clone(),
            taken_at_ms: card.taken_at_ms,
            phase: if limits.is_some() {
                CardPhase::PendingAuth
            } else {
                CardPhase::Authorised
            },
            reference: p.reference.clone().filter(|_| limits.is_none()),
            captured: false,
            offline: limits.is_some(),
            note: None,
            flagged: None,
            updated_ms: card.taken_at_ms,
        };
        put_state(writes, &state)?;
    }
    Ok(())
}

fn over_transaction_cap(amount: Money, cap: Money) -> OpError {
    OpError::invalid(
        "offline_card_cap",
        format!(
            "the hub is unreachable: card payments up to {cap} a sale can be taken offline, this sale's come to {amount}. Take the rest in cash, or wait until the node is back online"
        ),
    )
}

// ---- talking to the terminal and the hub ----------------------------------------------------

/// The node's card machinery: the terminal and the hub's card endpoints, and the caps.
pub struct Cards {
    http: reqwest::Client,
    settings: CardSettings,
    currency: Currency,
    hub_base: String,
    credential: SecretString,
    clock: super::PosClock,
}

/// What the hub answered about one authorisation.
#[derive(Debug, Clone, Deserialize)]
struct HubAnswer {
    status: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

enum Decision {
    Authorised(String),
    Declined(String),
    /// The hub (or the provider behind it) could not answer: take it offline / try later.
    Unreachable(String),
}

impl Cards {
    pub fn new(settings: &crate::EdgeSettings, clock: super::PosClock) -> Cards {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(settings.pos.card.hub_timeout)
            .build()
            .unwrap_or_default();
        Cards {
            http,
            settings: settings.pos.card.clone(),
            currency: settings.pos.currency,
            hub_base: settings.hub_http_base(),
            credential: SecretString::from(settings.credential_text().to_string()),
            clock,
        }
    }

    fn limits(&self) -> Result<Limits, ApiError> {
        self.settings
            .limits(self.currency)
            .map_err(|m| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "card_settings", m))
    }

    /// Asks the terminal to read a card for `amount` (the card presented on the terminal).
    pub async fn read(&self, amount: Money) -> Result<CardRead, ApiError> {
        #[derive(Deserialize)]
        struct Reading {
            token: String,
            brand: String,
            last4: String,
        }
        let url = format!(
            "{}/v1/readings",
            self.settings.terminal_url.trim_end_matches('/')
        );
        let res = self
            .http
            .post(&url)
            .json(&json!({"amount": amount.minor, "currency": amount.currency.code()}))
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the payment terminal did not answer");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "terminal_unavailable",
                    "the payment terminal does not answer: check that it is on and connected, or take another tender",
                )
            })?;
        let status = res.status();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("the terminal could not read the card")
                .to_string();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "terminal_refused",
                format!("Payment terminal: {message}"),
            ));
        }
        let r: Reading = serde_json::from_value(body).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "terminal_unreadable",
                "the payment terminal's answer could not be read",
            )
        })?;
        Ok(CardRead {
            token: r.token,
            brand: r.brand,
            last4: r.last4,
            outcome: None,
        })
    }

    async fn hub_call(&self, path: &str, body: serde_json::Value) -> Decision {
        let url = format!("{}/api/v1/edge/card/{path}", self.hub_base);
        let res = self
            .http
            .post(&url)
            .bearer_auth(self.credential.expose_secret())
            .json(&body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => match r.json::<HubAnswer>().await {
                Ok(a)
                    if a.status == "authorised"
                        || a.status == "captured"
                        || a.status == "canceled" =>
                {
                    Decision::Authorised(a.reference.unwrap_or_default())
                }
                Ok(a) if a.status == "declined" => Decision::Declined(format!(
                    "{} ({})",
                    a.message.unwrap_or_else(|| "declined".into()),
                    a.code.unwrap_or_else(|| "declined".into())
                )),
                Ok(a) => Decision::Unreachable(format!("the hub answered status '{}'", a.status)),
                Err(e) => Decision::Unreachable(format!("unreadable answer: {e}")),
            },
            Ok(r) => Decision::Unreachable(format!("the hub answered {}", r.status())),
            Err(e) => Decision::Unreachable(e.to_string()),
        }
    }

    async fn authorise(
        &self,
        payment: &str,
        amount: Money,
        token: &str,
        offline: bool,
    ) -> Decision {
        self.hub_call(
            "authorize",
            json!({"payment": payment, "amount": amount.minor, "currency": amount.currency.code(),
                   "token": token, "offline": offline}),
        )
        .await
    }

    async fn capture(&self, payment: &str, reference: &str) -> Decision {
        self.hub_call(
            "capture",
            json!({"payment": payment, "reference": reference}),
        )
        .await
    }

    async fn cancel(&self, payment: &str, reference: &str) -> Decision {
        self.hub_call(
            "cancel",
            json!({"payment": payment, "reference": reference}),
        )
        .await
    }
}

/// The card payment id of payment `index` of a sale: derived from the sale's idempotency key
/// when there is one (a retried sale asks the provider with the same keys), else new.
fn payment_id(store: &Store, key: Option<&str>, index: usize) -> String {
    use sha2::{Digest, Sha256};
    match key {
        Some(k) => {
            let mut h = Sha256::new();
            h.update(store.identity().replica.as_str().as_bytes());
            h.update([0]);
            h.update(k.as_bytes());
            h.update([0]);
            h.update(index.to_le_bytes());
            let digest = h.finalize();
            let hex: String = digest.iter().take(13).map(|b| format!("{b:02x}")).collect();
            format!("cp_{hex}")
        }
        None => format!("cp_{}", Ulid::new().to_string().to_lowercase()),
    }
}

fn check_read(read: &CardRead, field: &str) -> Result<(), ApiError> {
    let token_ok = read.token.starts_with("pm_")
        && read.token.len() <= 100
        && read
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let last4_ok = read.last4.len() == 4 && read.last4.bytes().all(|b| b.is_ascii_digit());
    let brand_ok = !read.brand.is_empty()
        && read.brand.len() <= 20
        && read
            .brand
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ');
    if token_ok && last4_ok && brand_ok {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_card",
        format!(
            "{field}.card must be the terminal's reading: token (pm_…), brand (letters) and last4 (4 digits); never send a card number"
        ),
    ))
}

/// The sale's total and what its payments add up to, checked as the sale will be, so a card is
/// never authorised for a sale that cannot be recorded.
fn check_cover(total: Money, req: &SaleRequest) -> Result<(), ApiError> {
    let mut paid = 0i64;
    let mut non_cash = 0i64;
    for p in &req.payments {
        // A bad amount is refused with its field by the sale itself.
        let Ok(m) = Money::parse_decimal(&p.amount, total.currency) else {
            return Ok(());
        };
        paid = paid.saturating_add(m.minor);
        if p.method != PaymentMethod::Cash {
            non_cash = non_cash.saturating_add(m.minor);
        }
    }
    if paid < total.minor {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "payment_short",
            format!(
                "the payments ({}) do not cover the total ({total})",
                Money::new(paid, total.currency)
            ),
        ));
    }
    if non_cash > total.minor {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "overpaid",
            format!(
                "card and voucher payments ({}) exceed the total ({total}): only cash may exceed it (change is given in cash)",
                Money::new(non_cash, total.currency)
            ),
        ));
    }
    Ok(())
}

/// Authorises the card payments of a sale about to be recorded (online through the hub, or
/// offline within the per-payment cap; the node cap is checked in the sale's write). A decline
/// refuses the sale (`402 card_declined`) and cancels the other cards already authorised.
/// Returns the authorised references, to cancel if the sale is then refused.
pub(crate) async fn authorise(
    req: &HttpRequest,
    state: &web::Data<ApiState>,
    body: &mut SaleRequest,
    key: Option<&str>,
    manual: &crate::ops::ManualAdjustments,
) -> Result<Vec<(String, String)>, ApiError> {
    if body.payments.iter().all(|p| p.card.is_none()) {
        return Ok(Vec::new());
    }
    let Some(cards) = req.app_data::<web::Data<Cards>>().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "card_unavailable",
            "this node takes no terminal card payments",
        ));
    };
    authorise_with(&cards, state, body, key, manual).await
}

pub(crate) async fn authorise_with(
    cards: &Cards,
    state: &web::Data<ApiState>,
    body: &mut SaleRequest,
    key: Option<&str>,
    manual: &crate::ops::ManualAdjustments,
) -> Result<Vec<(String, String)>, ApiError> {
    for (i, p) in body.payments.iter().enumerate() {
        if let Some(read) = &p.card {
            if p.method != PaymentMethod::Card {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_payment",
                    format!("payments[{i}]: only a card payment carries a card"),
                ));
            }
            check_read(read, &format!("payments[{i}]"))?;
        }
    }
    let store = state.store.clone();
    // A retried sale already recorded is answered with its first receipt: no new authorisation.
    if let Some(k) = key {
        if store.has_sale_key(k)? {
            return Ok(Vec::new());
        }
    }
    let (quote_store, quote_req, quote_manual) = (store.clone(), body.clone(), manual.clone());
    let quote =
        crate::api::blocking(move || Ok(quote_store.quote_with(&quote_req, &quote_manual)?))
            .await?;
    check_cover(quote.total, body)?;
    let limits = cards.limits()?;
    let mut authorised: Vec<(String, String)> = Vec::new();
    let taken_at_ms = cards.clock.now_ms();
    let mut offline_in_sale = 0i64;
    for i in 0..body.payments.len() {
        if body.payments[i].card.is_none() {
            continue;
        }
        let amount = Money::parse_decimal(&body.payments[i].amount, quote.total.currency)
            .unwrap_or(Money::new(0, quote.total.currency));
        let payment = payment_id(&store, key, i);
        let token = body.payments[i]
            .card
            .as_ref()
            .map(|c| c.token.clone())
            .unwrap_or_default();
        let decision = if store.is_connected() {
            cards.authorise(&payment, amount, &token, false).await
        } else {
            Decision::Unreachable("the node is offline".into())
        };
        let auth = match decision {
            Decision::Authorised(reference) => {
                tracing::info!(%payment, %reference, "card authorised online");
                authorised.push((payment.clone(), reference.clone()));
                Auth::Authorised { reference }
            }
            Decision::Declined(why) => {
                tracing::info!(%payment, reason = %why, "card declined");
                release(cards, &authorised).await;
                return Err(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "card_declined",
                    format!(
                        "Card declined: {why}. Nothing was recorded: ask for another card or another tender"
                    ),
                ));
            }
            Decision::Unreachable(why) => {
                offline_in_sale = offline_in_sale.saturating_add(amount.minor);
                if offline_in_sale > limits.per_payment.minor {
                    release(cards, &authorised).await;
                    let offline = Money::new(offline_in_sale, amount.currency);
                    return Err(over_transaction_cap(offline, limits.per_payment).into());
                }
                tracing::info!(%payment, reason = %why, "card taken offline (store-and-forward)");
                Auth::Offline { limits }
            }
        };
        if let Some(read) = body.payments[i].card.as_mut() {
            read.outcome = Some(Outcome {
                payment,
                taken_at_ms,
                auth,
            });
        }
    }
    Ok(authorised)
}

/// Cancels authorisations of a sale that was not recorded (best effort: an authorisation not
/// captured lapses at the provider anyway).
pub(crate) async fn release(cards: &Cards, authorised: &[(String, String)]) {
    for (payment, reference) in authorised {
        if let Decision::Unreachable(why) = cards.cancel(payment, reference).await {
            tracing::warn!(%payment, %reference, reason = %why, "could not cancel an authorisation of a sale not recorded; it lapses at the provider");
        }
    }
}

/// [`release`] from a request's app data.
pub(crate) async fn release_for(req: &HttpRequest, authorised: &[(String, String)]) {
    if authorised.is_empty() {
        return;
    }
    if let Some(cards) = req.app_data::<web::Data<Cards>>() {
        release(cards, authorised).await;
    }
}

// ---- the forwarder --------------------------------------------------------------------------

/// Sends pending authorisations and captures while the node is connected, and flags offline
/// payments past their deadline (connected or not), until `stop` turns true.
pub async fn run(
    store: Arc<Store>,
    cards: Arc<Cards>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        // A dropped sender stops the forwarder too (the node is gone).
        let stopped = tokio::select! {
            changed = stop.changed() => changed.is_err(),
            _ = tokio::time::sleep(cards.settings.retry_every) => false,
        };
        if stopped || *stop.borrow() {
            break;
        }
        // A round cut short by the stop is safe: every hub call is idempotent by payment.
        tokio::select! {
            done = forward(&store, &cards) => {
                if let Err(e) = done {
                    tracing::warn!(error = %e, "the card forwarder failed a round; it tries again");
                }
            }
            _ = stop.changed() => break,
        }
    }
}

/// One round of the forwarder.
pub async fn forward(store: &Arc<Store>, cards: &Cards) -> Result<(), StoreError> {
    let s = store.clone();
    let all = tokio::task::spawn_blocking(move || open_states(s.db()))
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))??;
    let now = cards.clock.now_ms();
    let deadline_ms =
        u64::try_from(cards.settings.offline_deadline.as_millis()).unwrap_or(u64::MAX);
    for c in all {
        match c.phase {
            CardPhase::PendingAuth if now.saturating_sub(c.taken_at_ms) > deadline_ms => {
                let detail = format!(
                    "card payment {} of sale {} ({} {} •••• {}) taken offline was not authorised within {}: follow it up with the customer",
                    c.payment, c.number, c.amount, c.brand, c.last4,
                    humantime::format_duration(cards.settings.offline_deadline)
                );
                flag(
                    store,
                    &c.payment,
                    CardPhase::DeadlinePassed,
                    None,
                    "card_offline_deadline",
                    detail,
                    now,
                )
                .await?;
            }
            CardPhase::PendingAuth if store.is_connected() => {
                match cards.authorise(&c.payment, c.amount, &c.token, true).await {
                    Decision::Authorised(reference) => {
                        tracing::info!(payment = %c.payment, sale = %c.number, %reference, "offline card payment authorised");
                        update(store, &c.payment, now, move |s| {
                            s.phase = CardPhase::Authorised;
                            s.reference = Some(reference);
                            s.note = None;
                        })
                        .await?;
                        capture(store, cards, &c.payment, now).await?;
                    }
                    Decision::Declined(why) => {
                        let detail = format!(
                            "card payment {} of sale {} ({} {} •••• {}) taken offline was declined after reconnection: {why}. Follow it up with the customer",
                            c.payment, c.number, c.amount, c.brand, c.last4
                        );
                        flag(
                            store,
                            &c.payment,
                            CardPhase::Declined,
                            Some(why),
                            "card_offline_declined",
                            detail,
                            now,
                        )
                        .await?;
                    }
                    Decision::Unreachable(why) => {
                        tracing::debug!(payment = %c.payment, reason = %why, "hub unreachable; the card stays pending");
                    }
                }
            }
            CardPhase::Authorised if !c.captured && store.is_connected() => {
                capture(store, cards, &c.payment, now).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

async fn capture(
    store: &Arc<Store>,
    cards: &Cards,
    payment: &str,
    now: u64,
) -> Result<(), StoreError> {
    let s = store.clone();
    let key = card_key(payment);
    let Some(state) = tokio::task::spawn_blocking(move || s.db().get::<CardState>(T::Pos, &key))
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))??
    else {
        return Ok(());
    };
    let Some(reference) = state.reference.clone() else {
        return Ok(());
    };
    match cards.capture(payment, &reference).await {
        Decision::Authorised(_) => {
            tracing::info!(%payment, %reference, "card payment captured");
            update(store, payment, now, |s| s.captured = true).await
        }
        Decision::Declined(why) | Decision::Unreachable(why) => {
            tracing::warn!(%payment, %reference, reason = %why, "capture failed; retried later");
            update(store, payment, now, move |s| {
                s.note = Some(format!("capture: {why}"))
            })
            .await
        }
    }
}

async fn update(
    store: &Arc<Store>,
    payment: &str,
    now: u64,
    f: impl FnOnce(&mut CardState) + Send + 'static,
) -> Result<(), StoreError> {
    let s = store.clone();
    let key = card_key(payment);
    tokio::task::spawn_blocking(move || {
        s.local_change(|db| -> Result<(WriteSet, ()), StoreError> {
            let mut writes = WriteSet::default();
            if let Some(mut state) = db.get::<CardState>(T::Pos, &key)? {
                f(&mut state);
                state.updated_ms = now;
                put_state(&mut writes, &state)?;
            }
            Ok((writes, ()))
        })
    })
    .await
    .map_err(|e| StoreError::Corrupt(e.to_string()))?
}

/// Flags a card payment for follow-up: its phase and a conflict record (sent to the hub) in
/// one change; a payment no longer pending is left alone.
async fn flag(
    store: &Arc<Store>,
    payment: &str,
    phase: CardPhase,
    note: Option<String>,
    kind: &'static str,
    detail: String,
    now: u64,
) -> Result<(), StoreError> {
    let s = store.clone();
    let key = card_key(payment);
    tracing::warn!(%payment, kind, "{detail}");
    tokio::task::spawn_blocking(move || {
        let Some(state) = s.db().get::<CardState>(T::Pos, &key)? else {
            return Ok(());
        };
        if state.phase != CardPhase::PendingAuth {
            return Ok(());
        }
        s.record_conflict_with(kind, detail, move |db, writes, conflict| {
            // Read again under the writer lock: the till or another round may have moved it.
            if let Some(mut state) = db.get::<CardState>(T::Pos, &key)? {
                if state.phase == CardPhase::PendingAuth {
                    state.phase = phase;
                    state.note = note;
                    state.flagged = Some(conflict.id);
                    state.updated_ms = now;
                    put_state(writes, &state)?;
                }
            }
            Ok(())
        })
        .map(|_| ())
    })
    .await
    .map_err(|e| StoreError::Corrupt(e.to_string()))?
}

// ---- views ----------------------------------------------------------------------------------

/// A card state as JSON (`GET /api/v1/card/payments`, and beside a sale's card payments).
pub fn state_json(s: &CardState) -> serde_json::Value {
    json!({
        "payment": s.payment,
        "sale": s.sale,
        "number": s.number,
        "amount": s.amount.to_decimal_string(),
        "currency": s.amount.currency.code(),
        "brand": s.brand,
        "last4": s.last4,
        "status": s.phase.as_str(),
        "offline": s.offline,
        "reference": s.reference,
        "captured": s.captured,
        "note": s.note,
        "follow_up": s.flagged,
        "taken_at": crate::api::rfc3339(s.taken_at_ms),
    })
}

/// The current card state of a payment id.
pub fn state_of(store: &Store, payment: &str) -> Result<Option<CardState>, StoreError> {
    store.db().get::<CardState>(T::Pos, &card_key(payment))
}

/// A card payment as the receipt shows it: brand, last four digits, where it stands now and
/// the provider's reference (`None` for other payments).
pub(crate) fn receipt_card(
    store: &Store,
    p: &protocol::replication::SalePayment,
) -> Option<serde_json::Value> {
    let card = p.card.as_ref()?;
    let current = state_of(store, &card.payment).ok().flatten();
    let status = current.as_ref().map_or(
        match card.status {
            CardStatus::PaidOfflinePendingAuth => CardPhase::PendingAuth,
            _ => CardPhase::Authorised,
        },
        |c| c.phase,
    );
    let shown = match status {
        CardPhase::PendingAuth => "offline, authorisation pending",
        CardPhase::Authorised => "authorised",
        CardPhase::Declined => "declined after the fact: follow-up",
        CardPhase::DeadlinePassed => "not authorised in time: follow-up",
        CardPhase::Unknown => "unknown",
    };
    Some(json!({
        "brand": card.brand,
        "last4": card.last4,
        "status": status.as_str(),
        "shown": shown,
        "reference": current.and_then(|c| c.reference).or(p.reference.clone()),
    }))
}

/// Adds each card payment's current state to a sale's JSON view (`payments[i].card`).
pub(crate) fn annotate(store: &Store, sale: &SaleRecord, view: &mut serde_json::Value) {
    for (i, p) in sale.payments.iter().enumerate() {
        let Some(card) = &p.card else { continue };
        let current = state_of(store, &card.payment).ok().flatten();
        let status = current.as_ref().map_or(
            match card.status {
                CardStatus::Authorised => "authorised",
                CardStatus::PaidOfflinePendingAuth => "pending_authorisation",
                CardStatus::Unknown => "unknown",
            },
            |c| c.phase.as_str(),
        );
        view["payments"][i]["card"] = json!({
            "payment": card.payment,
            "brand": card.brand,
            "last4": card.last4,
            "recorded_as": match card.status {
                CardStatus::Authorised => "Authorised",
                CardStatus::PaidOfflinePendingAuth => "PaidOfflinePendingAuth",
                CardStatus::Unknown => "Unknown",
            },
            "status": status,
            "reference": current.as_ref().and_then(|c| c.reference.clone()).or(p.reference.clone()),
            "captured": current.as_ref().is_some_and(|c| c.captured),
            "note": current.as_ref().and_then(|c| c.note.clone()),
            "follow_up": current.as_ref().and_then(|c| c.flagged),
        });
    }
}

/// `GET /api/v1/card/payments`: the node's card payments, newest first (pending, authorised,
/// flagged), with the total outstanding offline and the caps.
pub(crate) async fn list_route(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<actix_web::HttpResponse, ApiError> {
    let store = state.store.clone();
    let mut all = crate::api::blocking(move || Ok(states(&store)?)).await?;
    all.sort_by_key(|s| std::cmp::Reverse(s.taken_at_ms));
    let truncated = all.len() > MAX_LISTED;
    all.truncate(MAX_LISTED);
    let currency = state.pos.currency;
    let outstanding: i64 = all
        .iter()
        .filter(|s| s.phase == CardPhase::PendingAuth)
        .map(|s| s.amount.minor)
        .sum();
    let caps = req
        .app_data::<web::Data<Cards>>()
        .and_then(|c| c.settings.limits(currency).ok());
    Ok(actix_web::HttpResponse::Ok().json(json!({
        "currency": currency.code(),
        "outstanding_offline": Money::new(outstanding, currency).to_decimal_string(),
        "offline_transaction_cap": caps.map(|c| c.per_payment.to_decimal_string()),
        "offline_node_cap": caps.map(|c| c.node_total.to_decimal_string()),
        "payments": all.iter().map(state_json).collect::<Vec<_>>(),
        "truncated": truncated,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_must_be_amounts() {
        let mut s = CardSettings::default();
        assert!(s.check(Currency::EUR).is_ok());
        s.offline_node_cap = "lots".into();
        assert!(s
            .check(Currency::EUR)
            .is_err_and(|m| m.contains("offline_node_cap")));
    }

    #[test]
    fn a_card_read_the_node_did_not_authorise_is_refused() {
        let p = PaymentRequest {
            method: PaymentMethod::Card,
            amount: "5.00".into(),
            reference: None,
            card: Some(CardRead {
                token: "pm_card_visa".into(),
                brand: "visa".into(),
                last4: "4242".into(),
                outcome: None,
            }),
        };
        assert!(tender_of(&p, "payments[0]").is_err());
        let parsed: PaymentRequest = serde_json::from_value(json!({
            "method": "card", "amount": "5.00",
            "card": {"token": "pm_card_visa", "brand": "visa", "last4": "4242"}
        }))
        .expect("parses");
        assert!(
            parsed.card.as_ref().is_some_and(|c| c.outcome.is_none()),
            "a client cannot send an outcome"
        );
    }
}
