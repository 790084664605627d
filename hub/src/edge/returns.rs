//! Store returns on the hub (`docs/pos.md`, "Returns and exchanges"): the nodes' return
//! records, merged once each (by id) in the edge tree with the sync batch that carried them;
//! the card refunds they ask for, made through the payment provider exactly once; and the
//! receipt lookup a node uses for a sale it did not make (`GET /api/v1/edge/receipts/{receipt}`,
//! authenticated with the node's credential like the sync WebSocket).
//!
//! Keys in the `edge` tree: `return/{id}` ([`StoredReturn`]), `returnsale/{sale}\0{return}`
//! (empty), `salenum/{number}` (the sale id, 16 bytes; sales merged before it are found by a
//! scan), `refunddue/{return}` (empty: card refunds still to make), `refunded/{return}`
//! ([`RefundOutcome`]).
//!
//! Exactly once: a return is stored once by id, and its `refunddue` row lands in the same
//! transaction, so a batch sent again asks for nothing more. The worker makes each card refund
//! with the idempotency key `pos-return-{return id}-{refund index}` and only then removes the
//! row: a crash in between repeats the call with the same key, which the provider answers with
//! the first refund instead of paying twice. An operator's retry of a refused refund uses a new
//! key (`…-retry{n}`): the refused call paid nothing.
//!
//! Never more than was paid: a card refund of a store sale is capped at what that card paid less
//! what the provider refunded to it for the sale's other returns (two stores that each took the
//! last unit back while offline), and a refund of an online order at what the order's payment
//! can still refund (back-office refunds count); what is left over is kept with the return,
//! flagged for a person (`GET /api/v1/admin/edge/refunds`). The merge records such an
//! over-return as a conflict of the node whose return went beyond the sale ([`over_return`]).
//!
//! Online orders: a node taking back a web or mobile order finds it here by its order number
//! ([`order_as_sale`]); the refund goes to the order's payment through the order's basket actor
//! (the one writer of the order, so the order records it like any refund).

use crate::actors::checkout::{CheckoutFailure, RefundStoreReturn, StoreReturnRefund};
use crate::app::HubHandle;
use crate::backend::HubBackend;
use crate::backoffice::access::{policy, Staff};
use crate::payments::client::{backoff, PaymentClient, ProviderError};
use crate::storage::kv::{Batch, Keyspace, Tree};
use crate::storage::StorageError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::error::ApiError;
use protocol::order::OrderRecord;
use protocol::replication::{Hlc, ReplicaId, ReturnRecord, SaleLine, SalePayment, SaleRecord};
use protocol::{codec, LocationId, Money, Stored};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use ulid::Ulid;

/// How often the refund worker looks for refunds to make when nothing woke it.
const POLL: Duration = Duration::from_millis(500);

/// How many returns the operator's refund list shows at most.
const LISTED: usize = 500;

/// A store's return as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredReturn(pub ReturnRecord);

impl Stored for StoredReturn {
    const KIND: &'static str = "edge_return";
    const VERSION: u16 = 1;
}

/// What the provider answered for a return's card refunds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOutcome {
    /// Per card refund of the return: the payment reference and the provider's refund id, or
    /// the provider's refusal (a person must look).
    pub refunds: Vec<RefundResult>,
    pub at_ms: u64,
    /// 0 for the worker's own pass, then one more for each operator's retry.
    #[serde(default)]
    pub attempt: u32,
}

impl RefundOutcome {
    /// Whether a person must look: a refusal, or money the payment could not take back.
    pub fn flagged(&self) -> bool {
        self.refunds
            .iter()
            .any(|r| r.refused.is_some() || r.short_minor > 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResult {
    pub reference: String,
    /// What was refunded (or, when refused, what was asked for).
    pub amount_minor: i64,
    #[serde(default)]
    pub refund: Option<String>,
    #[serde(default)]
    pub refused: Option<String>,
    /// The index of the card refund in the return's refunds.
    #[serde(default)]
    pub index: Option<u32>,
    /// What the return asked for beyond what the payment could still refund (left for a
    /// person: the sale was over-returned, or the back office refunded the order already).
    #[serde(default)]
    pub short_minor: i64,
}

impl RefundResult {
    /// Money that went back to the card.
    fn made(&self) -> i64 {
        if self.refused.is_none() {
            self.amount_minor
        } else {
            0
        }
    }
}

impl Stored for RefundOutcome {
    const KIND: &'static str = "edge_refund_outcome";
    const VERSION: u16 = 1;
}

fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.push(b'/');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(part);
    }
    k
}

pub(super) fn return_key(id: Ulid) -> Vec<u8> {
    key("return", &[&id.0.to_be_bytes()])
}

fn of_sale_prefix(sale: Ulid) -> Vec<u8> {
    let mut k = key("returnsale", &[&sale.0.to_be_bytes()]);
    k.push(0);
    k
}

fn due_key(id: Ulid) -> Vec<u8> {
    key("refunddue", &[&id.0.to_be_bytes()])
}

fn outcome_key(id: Ulid) -> Vec<u8> {
    key("refunded", &[&id.0.to_be_bytes()])
}

pub(super) fn sale_number_key(number: &str) -> Vec<u8> {
    key("salenum", &[number.as_bytes()])
}

/// Whether a return asks the hub for card refunds.
fn has_card_refunds(r: &ReturnRecord) -> bool {
    r.refunds
        .iter()
        .any(|p| p.method == "card" && p.reference.is_some())
}

/// Adds a new return (not stored yet: the caller checked) to an edge-tree batch: the record,
/// its index by sale, and its due card refunds.
pub(super) fn stage(batch: &mut Batch, r: &ReturnRecord) -> Result<(), StorageError> {
    batch.insert(return_key(r.id), codec::encode(&StoredReturn(r.clone()))?);
    let mut link = of_sale_prefix(r.sale);
    link.extend_from_slice(&r.id.0.to_be_bytes());
    batch.insert(link, Vec::new());
    if has_card_refunds(r) {
        batch.insert(due_key(r.id), Vec::new());
    }
    Ok(())
}

fn get<T: Stored>(tree: &Tree, k: &[u8]) -> Result<Option<T>, StorageError> {
    match tree.get(k)? {
        Some(v) => Ok(Some(codec::decode(&v)?)),
        None => Ok(None),
    }
}

fn ulid_tail(k: &[u8]) -> Option<Ulid> {
    <[u8; 16]>::try_from(&k[k.len().saturating_sub(16)..])
        .ok()
        .map(|b| Ulid(u128::from_be_bytes(b)))
}

/// A store sale merged into `tree`, by id.
pub(super) fn sale_in(tree: &Tree, id: Ulid) -> Result<Option<SaleRecord>, StorageError> {
    Ok(get::<super::store::StoredSale>(tree, &key("sale", &[&id.0.to_be_bytes()]))?.map(|s| s.0))
}

/// The returns of a sale (or an online order) merged into `tree`, oldest first.
pub(super) fn returns_in(tree: &Tree, sale: Ulid) -> Result<Vec<ReturnRecord>, StorageError> {
    let mut out = Vec::new();
    for kv in tree.scan_prefix(of_sale_prefix(sale)) {
        let (k, _) = kv?;
        let Some(id) = ulid_tail(&k) else {
            continue;
        };
        if let Some(StoredReturn(r)) = get(tree, &return_key(id))? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Units of each sale line taken back by `returns` beyond what was sold, in words (`None`: no
/// line was over-returned). The card refunds are capped by the refund worker; what a till paid
/// out in cash beyond the sale is for a person.
pub fn over_return(sale: &SaleRecord, returns: &[&ReturnRecord]) -> Option<String> {
    let mut back: BTreeMap<u32, u64> = BTreeMap::new();
    for l in returns.iter().flat_map(|r| r.lines.iter()) {
        *back.entry(l.line).or_default() += u64::from(l.quantity);
    }
    let over: Vec<String> = back
        .iter()
        .filter_map(|(line, n)| {
            let sold = sale.lines.get(*line as usize)?;
            (*n > u64::from(sold.quantity)).then(|| {
                format!(
                    "line {line} ({}): {} sold, {n} returned",
                    sold.sku, sold.quantity
                )
            })
        })
        .collect();
    if over.is_empty() {
        return None;
    }
    let cash: i64 = returns
        .iter()
        .flat_map(|r| r.refunds.iter())
        .filter(|p| p.method == "cash")
        .map(|p| p.amount.minor)
        .sum();
    Some(format!(
        "receipt {} ({}) was returned beyond what was sold: {}; returns {}. Card refunds stop at what the card paid; {} was paid out in cash in all: a person must settle the difference",
        sale.number,
        sale.id,
        over.join("; "),
        returns
            .iter()
            .map(|r| format!("{} at {}", r.number, r.location))
            .collect::<Vec<_>>()
            .join(", "),
        Money::new(cash, sale.total.currency)
    ))
}

/// What a card paid for a store sale, to the provider's `reference`, as far as the provider
/// confirms it: the hub refunds only a PaymentIntent it authorised for this store's node (its
/// `replica` metadata), for one of this sale's card payments — recorded with that reference
/// (authorised online), or taken offline and authorised after (its `store_payment` metadata
/// names the sale's card payment), or recorded on the sale with its reference. A reference the
/// provider does not show as authorised for this store's node (someone else's payment, a web
/// order's) pays 0: its refund is `short`, for a person, so no store return can send money to
/// another shop's or a web order's payment. The provider unreachable → an error
/// (the worker tries again later); a provider that does not know the reference → 0.
async fn card_paid(
    payments: &PaymentClient,
    sale: &SaleRecord,
    reference: &str,
) -> Result<i64, String> {
    let intent = match payments.payment_intent(reference).await {
        Ok(intent) => intent,
        Err(ProviderError::Api { status, .. }) if status != 429 => {
            tracing::warn!(sale = %sale.number, reference, status, "the card payment of a store return is unknown to the provider: not refunded");
            return Ok(0);
        }
        Err(e) => return Err(format!("checking {reference} at the provider: {e}")),
    };
    if intent.metadata.get("replica") != Some(&sale.replica.0) {
        tracing::warn!(sale = %sale.number, reference, "a store return names a payment not authorised for its store: not refunded");
        return Ok(0);
    }
    let store_payment = intent.metadata.get("store_payment");
    Ok(sale
        .payments
        .iter()
        .filter(|p| p.method == "card")
        .filter(|p| match &p.card {
            // Read by the store's terminal: the intent must be the one made for this payment.
            Some(c) => {
                Some(&c.payment) == store_payment
                    && p.reference.as_deref().is_none_or(|r| r == reference)
            }
            // Recorded with its reference (no terminal reading): that reference.
            None => p.reference.as_deref() == Some(reference),
        })
        .map(|p| p.amount.minor)
        .sum())
}

/// An online order as a sale a till can take goods back against: its lines at what was paid
/// for them (discounts in, shipping out), and its card payment at what is left of it after
/// the refunds made without a store (from the back office): `store_refunded` is what the
/// provider refunded for store returns of the order.
pub fn order_as_sale(order: &OrderRecord, store_refunded: i64) -> SaleRecord {
    let b = &order.breakdown;
    let lines: Vec<SaleLine> = b
        .lines
        .iter()
        .map(|l| {
            let net = l.line_total.minor - l.discount.minor;
            let paid = if b.prices_include_tax {
                net
            } else {
                // Tax on top, rounded half up per line.
                net + (i128::from(net) * i128::from(l.tax_rate_bp) + 5_000)
                    .div_euclid(10_000)
                    .try_into()
                    .unwrap_or(0i64)
            };
            SaleLine {
                sku: l.sku.clone(),
                name: l.name.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price,
                total: Money::new(paid, b.currency),
                tax_rate_bp: l.tax_rate_bp,
            }
        })
        .collect();
    let total = Money::new(lines.iter().map(|l| l.total.minor).sum(), b.currency);
    let elsewhere = (order.payment.refunded().minor - store_refunded).max(0);
    let payments = order
        .payment
        .payment_intent
        .iter()
        .map(|intent| SalePayment {
            method: "card".into(),
            amount: Money::new(
                (order.payment.amount.minor - elsewhere).max(0),
                order.payment.amount.currency,
            ),
            reference: Some(intent.clone()),
            card: None,
        })
        .collect();
    SaleRecord {
        id: order.id.0,
        number: order.number.clone(),
        replica: ReplicaId::hub(),
        location: LocationId::online(),
        at: Hlc {
            ms: super::unix_ms(order.created_at),
            c: 0,
            r: ReplicaId::hub(),
        },
        lines,
        total,
        taxes: Vec::new(),
        payments,
        customer: order.customer,
        clerk: None,
        promotions: Default::default(),
        coupons: Vec::new(),
    }
}

/// The returns side of the hub's edge tree: lookups, and the card refund worker.
pub struct Returns {
    keyspace: Keyspace,
    tree: Tree,
}

impl Returns {
    /// Opens the `edge` tree of the hub's keyspace.
    pub fn open(keyspace: &Keyspace) -> Result<Arc<Returns>, StorageError> {
        let tree = keyspace.open_tree("edge")?;
        Ok(Arc::new(Returns {
            keyspace: keyspace.clone(),
            tree,
        }))
    }

    fn get<T: Stored>(&self, k: &[u8]) -> Result<Option<T>, StorageError> {
        get(&self.tree, k)
    }

    /// A store sale by id or receipt number (as typed, or in upper or lower case).
    pub fn sale(&self, receipt: &str) -> Result<Option<SaleRecord>, StorageError> {
        let typed = receipt.trim();
        if let Ok(id) = Ulid::from_string(typed) {
            if let Some(s) = sale_in(&self.tree, id)? {
                return Ok(Some(s));
            }
        }
        let candidates = [
            typed.to_string(),
            typed.to_ascii_uppercase(),
            typed.to_ascii_lowercase(),
        ];
        for c in &candidates {
            if let Some(v) = self.tree.get(sale_number_key(c))? {
                if let Ok(bytes) = <[u8; 16]>::try_from(v.as_slice()) {
                    if let Some(s) = sale_in(&self.tree, Ulid(u128::from_be_bytes(bytes)))? {
                        return Ok(Some(s));
                    }
                }
            }
        }
        // Sales merged before the number index was kept.
        for kv in self.tree.scan_prefix(key("sale", &[])) {
            let (_, v) = kv?;
            let super::store::StoredSale(sale) = codec::decode(&v)?;
            if candidates.contains(&sale.number) {
                return Ok(Some(sale));
            }
        }
        Ok(None)
    }

    /// The returns of a sale the hub has merged, from every store, oldest first.
    pub fn of_sale(&self, sale: Ulid) -> Result<Vec<ReturnRecord>, StorageError> {
        returns_in(&self.tree, sale)
    }

    /// What the provider answered for a return's card refunds, once made.
    pub fn outcome(&self, id: Ulid) -> Result<Option<RefundOutcome>, StorageError> {
        self.get(&outcome_key(id))
    }

    /// What the provider refunded to the card `reference` for the returns of `sale` other
    /// than `except`.
    fn refunded_to(&self, sale: Ulid, reference: &str, except: Ulid) -> Result<i64, StorageError> {
        let mut sum = 0;
        for r in self.of_sale(sale)?.iter().filter(|r| r.id != except) {
            if let Some(o) = self.outcome(r.id)? {
                sum += o
                    .refunds
                    .iter()
                    .filter(|x| x.reference == reference)
                    .map(RefundResult::made)
                    .sum::<i64>();
            }
        }
        Ok(sum)
    }

    /// Runs the card refund worker until the system stops. `orders` refunds the returns of
    /// online orders through the order's own actor.
    pub fn start_worker(self: &Arc<Self>, payments: PaymentClient, orders: Arc<HubBackend>) {
        let me = self.clone();
        actix::spawn(async move { me.work(&payments, &orders, None).await });
    }

    /// In a cluster: the card refund worker runs on one node, the holder of the
    /// `StoreRefunds` singleton; its outcome writes are fenced by the term, and the next
    /// holder goes on from the due refunds and stored outcomes (each refund keeps its
    /// idempotency key, so one a deposed holder sent is not made twice).
    pub fn run_worker(
        self: &Arc<Self>,
        singletons: &crate::cluster::singleton::Singletons,
        payments: PaymentClient,
        orders: Arc<HubBackend>,
    ) -> crate::cluster::singleton::SingletonHandle {
        let me = self.clone();
        singletons.run(
            crate::cluster::singleton::Singleton::StoreRefunds,
            move |term| {
                let (me, payments, orders) = (me.clone(), payments.clone(), orders.clone());
                async move { me.work(&payments, &orders, Some(term)).await }
            },
        )
    }

    /// Rounds until `term` (if any) ends.
    async fn work(
        &self,
        payments: &PaymentClient,
        orders: &HubBackend,
        mut term: Option<crate::cluster::singleton::Term>,
    ) {
        let mut failures = 0u32;
        loop {
            let mut pause = POLL;
            match self.round(payments, orders, term.as_ref()).await {
                Ok(()) => failures = 0,
                Err(e) if term.as_ref().is_some_and(|t| t.is_stopped()) => {
                    tracing::info!(error = %e, "store card refunds moved to another node");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store card refunds: will retry");
                    pause += backoff(failures.min(5));
                    failures = failures.saturating_add(1);
                }
            }
            match term.as_mut() {
                Some(term) => tokio::select! {
                    _ = term.stopped() => return,
                    _ = tokio::time::sleep(pause) => {}
                },
                None => tokio::time::sleep(pause).await,
            }
        }
    }

    fn due(&self) -> Vec<Ulid> {
        self.tree
            .scan_prefix(key("refunddue", &[]))
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, _)| ulid_tail(&k))
            .collect()
    }

    /// Makes every due card refund. A provider that cannot be reached leaves the rest for the
    /// next round.
    async fn round(
        &self,
        payments: &PaymentClient,
        orders: &HubBackend,
        term: Option<&crate::cluster::singleton::Term>,
    ) -> Result<(), String> {
        for id in self.due() {
            if term.is_some_and(|t| t.is_stopped()) {
                return Ok(());
            }
            let Some(StoredReturn(r)) = self.get(&return_key(id)).map_err(|e| e.to_string())?
            else {
                continue;
            };
            let before = self.outcome(id).map_err(|e| e.to_string())?;
            let Some(outcome) = self.refund(payments, orders, &r, before).await? else {
                continue;
            };
            if outcome.flagged() {
                tracing::error!(r#return = %r.number, sale = %r.sale_number, "a store return's card refund needs a person: GET /api/v1/admin/edge/refunds");
            }
            let mut batch = Batch::default();
            batch.remove(due_key(id));
            batch.insert(
                outcome_key(id),
                codec::encode(&outcome).map_err(|e| e.to_string())?,
            );
            match term {
                Some(term) => term.apply(&self.keyspace, &self.tree, &batch),
                None => self.tree.apply_batch(batch),
            }
            .map_err(|e| e.to_string())?;
            self.tree.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The card refunds of one return, each with its own idempotency key; on a retry, only
    /// those that did not go through. `None`: not yet (the sale has not been merged).
    async fn refund(
        &self,
        payments: &PaymentClient,
        orders: &HubBackend,
        r: &ReturnRecord,
        before: Option<RefundOutcome>,
    ) -> Result<Option<RefundOutcome>, String> {
        let online = r.sale_location == LocationId::online();
        let sale = if online {
            None
        } else {
            match sale_in(&self.tree, r.sale).map_err(|e| e.to_string())? {
                Some(s) => Some(s),
                None => {
                    tracing::warn!(r#return = %r.number, sale = %r.sale_number, "the sale of a store return is not merged yet: its card refund waits");
                    return Ok(None);
                }
            }
        };
        let attempt = before.as_ref().map_or(0, |b| b.attempt + 1);
        let mut results = Vec::new();
        let cards = r
            .refunds
            .iter()
            .enumerate()
            .filter(|(_, p)| p.method == "card" && p.reference.is_some());
        for (nth, (i, p)) in cards.enumerate() {
            let Some(reference) = p.reference.as_ref() else {
                continue;
            };
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            // Outcomes stored before `index` was kept list the card refunds in order.
            let done_before = before.as_ref().and_then(|b| {
                b.refunds.iter().enumerate().find(|(at, x)| {
                    x.index.map_or(*at == nth, |n| n == index) && x.refused.is_none()
                })
            });
            if let Some((_, done)) = done_before {
                let mut done = done.clone();
                done.index = Some(index);
                results.push(done);
                continue;
            }
            let idempotency = match attempt {
                0 => format!("pos-return-{}-{i}", r.id),
                n => format!("pos-return-{}-{i}-retry{n}", r.id),
            };
            let reason = format!("store return {} of {}", r.number, r.sale_number);
            let mut result = RefundResult {
                reference: reference.clone(),
                amount_minor: p.amount.minor,
                refund: None,
                refused: None,
                index: Some(index),
                short_minor: 0,
            };
            if let Some(sale) = &sale {
                let paid = card_paid(payments, sale, reference).await?;
                let left = paid
                    - self
                        .refunded_to(r.sale, reference, r.id)
                        .map_err(|e| e.to_string())?;
                let amount = p.amount.minor.min(left).max(0);
                result.short_minor = p.amount.minor - amount;
                result.amount_minor = amount;
                if amount > 0 {
                    match payments
                        .refund(reference, amount, &reason, &idempotency)
                        .await
                    {
                        Ok(refund) => {
                            tracing::info!(r#return = %r.number, refund = %refund.id, amount, "store card refund made");
                            result.refund = Some(refund.id);
                        }
                        Err(e @ ProviderError::Api { .. }) => {
                            tracing::error!(r#return = %r.number, reference = %reference, error = %e, "the provider refused a store card refund: a person must look");
                            result.refused = Some(e.to_string());
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            } else {
                let done = self
                    .refund_order(orders, r, p.amount, &reason, idempotency)
                    .await?;
                match done {
                    Ok(d) => {
                        tracing::info!(r#return = %r.number, order = %r.sale_number, refund = ?d.refund, amount = d.amount.minor, "online order refunded for a store return");
                        result.amount_minor = d.amount.minor;
                        result.short_minor = d.short.minor;
                        result.refund = d.refund;
                    }
                    Err(refused) => {
                        tracing::error!(r#return = %r.number, order = %r.sale_number, error = %refused, "the refund of an online order returned at a store was refused: a person must look");
                        result.refused = Some(refused);
                    }
                }
            }
            if result.short_minor > 0 {
                tracing::error!(r#return = %r.number, sale = %r.sale_number, short = result.short_minor, "a store return asked for more than the payment can still refund: the rest is for a person");
            }
            results.push(result);
        }
        Ok(Some(RefundOutcome {
            refunds: results,
            at_ms: super::unix_ms(time::OffsetDateTime::now_utc()),
            attempt,
        }))
    }

    /// Refunds a return of an online order through the order's actor: `Err(String)` is an
    /// outage (try again), the inner `Err(String)` a refusal (for a person).
    async fn refund_order(
        &self,
        orders: &HubBackend,
        r: &ReturnRecord,
        amount: Money,
        reason: &str,
        idempotency_key: String,
    ) -> Result<Result<StoreReturnRefund, String>, String> {
        let order = match orders.admin_order(&r.sale.to_string()).await {
            Ok(o) => o,
            Err(channels::BackendError::NotFound(_)) => {
                return Ok(Err(format!(
                    "order {} ({}) is not on the hub",
                    r.sale_number, r.sale
                )))
            }
            Err(e) => return Err(e.to_string()),
        };
        let msg = RefundStoreReturn {
            order: order.id,
            amount,
            reason: reason.to_string(),
            idempotency_key,
        };
        match orders.ask_basket(order.basket, msg).await {
            Ok(Ok(done)) => Ok(Ok(done)),
            Ok(Err(e @ CheckoutFailure::Provider(ProviderError::Api { .. })))
            | Ok(Err(e @ CheckoutFailure::Refused(_))) => Ok(Err(e.to_string())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The returns whose card refunds are due or need a person, newest first.
    fn listing(&self, all: bool) -> Result<Vec<Value>, StorageError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(key("return", &[])).rev() {
            if out.len() >= LISTED {
                break;
            }
            let (_, v) = kv?;
            let StoredReturn(r) = codec::decode(&v)?;
            if !has_card_refunds(&r) {
                continue;
            }
            let due = self.tree.contains_key(due_key(r.id))?;
            let outcome = self.outcome(r.id)?;
            let state = match (&outcome, due) {
                (_, true) => "due",
                (Some(o), false) if o.flagged() => "failed",
                _ => "done",
            };
            if state == "done" && !all {
                continue;
            }
            out.push(refund_json(&r, state, outcome.as_ref()));
        }
        Ok(out)
    }

    /// Makes a refused card refund due again (the worker retries it with a new key).
    fn retry(&self, id: Ulid) -> Result<Result<(), ApiError>, StorageError> {
        let Some(StoredReturn(r)) = self.get(&return_key(id))? else {
            return Ok(Err(ApiError::not_found(&format!("store return '{id}'"))));
        };
        if self.tree.contains_key(due_key(id))? {
            return Ok(Ok(()));
        }
        let refused = self
            .outcome(id)?
            .is_some_and(|o| o.refunds.iter().any(|x| x.refused.is_some()));
        if !refused {
            return Ok(Err(ApiError::new(
                StatusCode::CONFLICT,
                "nothing_to_retry",
                format!(
                    "return {} has no refused card refund: what is left over beyond the payment (short) cannot be refunded to it; pay it back another way",
                    r.number
                ),
            )));
        }
        self.tree.insert(due_key(id), Vec::new())?;
        self.tree.flush()?;
        tracing::info!(r#return = %r.number, "an operator retries a refused store card refund");
        Ok(Ok(()))
    }
}

fn refund_json(r: &ReturnRecord, state: &str, outcome: Option<&RefundOutcome>) -> Value {
    let currency = r.total.currency;
    let money = |minor: i64| Money::new(minor, currency).to_decimal_string();
    json!({
        "return": r.id.to_string(),
        "number": r.number,
        "location": r.location,
        "sale": {"id": r.sale.to_string(), "number": r.sale_number, "location": r.sale_location},
        "state": state,
        "asked": r.refunds.iter().filter(|p| p.method == "card").map(|p| json!({
            "reference": p.reference, "amount": p.amount.to_decimal_string(),
        })).collect::<Vec<_>>(),
        "attempt": outcome.map(|o| o.attempt),
        "refunds": outcome.map(|o| o.refunds.iter().map(|x| json!({
            "reference": x.reference,
            "amount": money(x.amount_minor),
            "refund": x.refund,
            "refused": x.refused,
            "short": money(x.short_minor),
        })).collect::<Vec<_>>()),
        "currency": currency.code(),
    })
}

/// `GET /api/v1/admin/edge/refunds[?state=all]`: store returns whose card refunds are due
/// (`due`) or need a person (`failed`: refused by the provider, or more than the payment can
/// still take back), newest first; `state=all` adds the ones done.
pub async fn list_refunds(
    _: Staff<policy::Edge>,
    returns: web::Data<Arc<Returns>>,
    query: web::Query<BTreeMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let all = match query.get("state").map(String::as_str) {
        None | Some("open") => false,
        Some("all") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_state",
                format!(
                    "state '{}' is not known: use open (due and failed, the default) or all",
                    other.chars().take(20).collect::<String>()
                ),
            ))
        }
    };
    let book = returns.get_ref().clone();
    let refunds = web::block(move || book.listing(all))
        .await
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?;
    Ok(HttpResponse::Ok().json(json!({ "refunds": refunds })))
}

/// `POST /api/v1/admin/edge/refunds/{return id}/retry`: tries a refused card refund again.
pub async fn retry_refund(
    staff: Staff<policy::Edge>,
    backoffice: web::Data<crate::backoffice::Backoffice>,
    returns: web::Data<Arc<Returns>>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let text = path.into_inner();
    let Ok(id) = Ulid::from_string(text.trim()) else {
        return Err(ApiError::bad_request(
            "invalid_id",
            "give the return's id (a ULID, as `return` in GET /api/v1/admin/edge/refunds)",
        ));
    };
    let book = returns.get_ref().clone();
    web::block(move || book.retry(id))
        .await
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))??;
    let after = json!({"return": id.to_string(), "state": "due"});
    staff
        .audit(
            &backoffice,
            "store_refund.retry",
            format!("return/{id}"),
            None::<&()>,
            Some(&after),
        )
        .await;
    Ok(HttpResponse::Accepted().json(after))
}

/// What a node's receipt lookup answers: a store sale or an online order (as a sale), with the
/// returns made of it and, for an order, its refund state.
fn lookup(book: &Returns, receipt: &str) -> Result<Option<Value>, StorageError> {
    let Some(sale) = book.sale(receipt)? else {
        return Ok(None);
    };
    let returns = book.of_sale(sale.id)?;
    Ok(Some(json!({ "sale": sale, "returns": returns })))
}

/// An online order by number or id, as a node's return sees it.
async fn order_lookup(
    handle: &HubHandle,
    book: &Arc<Returns>,
    receipt: &str,
) -> Result<Option<Value>, ApiError> {
    let typed = receipt.trim();
    let mut found = None;
    for c in [typed.to_string(), typed.to_ascii_uppercase()] {
        match handle.backend.admin_order(&c).await {
            Ok(o) => {
                found = Some(o);
                break;
            }
            Err(channels::BackendError::NotFound(_)) => {}
            Err(e) => return Err(ApiError::from(e)),
        }
    }
    let Some(order) = found else {
        return Ok(None);
    };
    let b = book.clone();
    let id = order.id;
    let (returns, store_refunded) = web::block(move || -> Result<_, StorageError> {
        let returns = b.of_sale(id.0)?;
        let mut made = 0;
        for r in &returns {
            if let Some(o) = b.outcome(r.id)? {
                made += o.refunds.iter().map(RefundResult::made).sum::<i64>();
            }
        }
        Ok((returns, made))
    })
    .await
    .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?
    .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?;
    let sale = order_as_sale(&order, store_refunded);
    Ok(Some(json!({
        "sale": sale,
        "returns": returns,
        "order": order_summary(&order, store_refunded),
    })))
}

fn order_summary(order: &OrderRecord, store_refunded: i64) -> Value {
    let currency = order.payment.amount.currency;
    let elsewhere = (order.payment.refunded().minor - store_refunded).max(0);
    json!({
        "id": order.id.0.to_string(),
        "number": order.number,
        "status": order.status(),
        "paid": order.payment.amount.to_decimal_string(),
        "refundable": order.payment.refundable().to_decimal_string(),
        "refunded_without_a_store": Money::new(elsewhere, currency).to_decimal_string(),
    })
}

/// `GET /api/v1/edge/receipts/{receipt}`: a store sale — or an online order, by its number —
/// and the returns made of it, for a node (its credential as `Authorization: Bearer`) taking
/// back goods it did not sell.
pub async fn receipt(
    req: HttpRequest,
    path: web::Path<String>,
    handle: web::Data<HubHandle>,
    returns: web::Data<Arc<Returns>>,
) -> Result<HttpResponse, ApiError> {
    let node = super::session::authenticated_node(&req, &handle.edge).await?;
    let receipt = path.into_inner();
    let book = returns.get_ref().clone();
    let r = receipt.clone();
    let mut found = web::block(move || lookup(&book, &r))
        .await
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?;
    if found.is_none() {
        found = order_lookup(&handle, returns.get_ref(), &receipt).await?;
    }
    tracing::info!(node = %node.replica, found = found.is_some(), "receipt lookup");
    match found {
        Some(body) => Ok(HttpResponse::Ok().json(body)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_receipt",
            format!(
                "no store sale or online order has number '{}'",
                receipt
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(40)
                    .collect::<String>()
            ),
        )),
    }
}
