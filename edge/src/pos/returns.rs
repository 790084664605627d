//! Returns and exchanges at the till (`docs/pos.md`, "Returns and exchanges"): the JSON API,
//! the lookup of a receipt — on this node if it made the sale, through the hub otherwise — and
//! the till's refund totals. The recording itself is [`Store::take_return`].
//!
//! - `GET /api/v1/returns/receipts/{receipt}`: the sale with, per line, what was sold, returned
//!   and may still come back.
//! - `POST /api/v1/returns` (a staff session at a till, `X-Till`): takes goods back.
//! - `GET /api/v1/returns/{id or number}`: a return recorded here.

use super::till::{closed, till_key, TillState};
use super::{SignedIn, TillSale};
use crate::api::{blocking, ApiError, ApiState};
use crate::config::{EdgeSettings, PosSettings, StaffRole};
use crate::ops::{ApprovalRequest, OpError};
use crate::storage::{Db, TillMark, WriteSet, T};
use crate::store::{ReturnBy, ReturnEntry, ReturnReceipt, ReturnRequest, ReturnableSale, Store};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::money::MoneyError;
use protocol::replication::{ReturnRecord, SalePayment, SaleRecord};
use protocol::Money;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// How long a receipt lookup waits for the hub.
const HUB_TIMEOUT: Duration = Duration::from_secs(5);

/// `[pos] return_approval_over` as an amount of the shop's currency.
pub(crate) fn approval_limit(settings: &PosSettings) -> Result<Money, String> {
    match Money::parse_decimal(settings.return_approval_over.trim(), settings.currency) {
        Ok(m) if m.minor >= 0 => Ok(m),
        _ => Err(format!(
            "return_approval_over '{}' is not an amount in {} of 0 or more, e.g. \"100.00\"",
            settings.return_approval_over, settings.currency
        )),
    }
}

/// Adds a return (and an exchange's new sale, if any) to its till's open session in one write
/// (the caller holds the writer lock and commits `writes` with the return), or refuses it when
/// the till is not open.
pub(crate) fn ring(
    db: &Db,
    writes: &mut WriteSet,
    at: &TillSale,
    record: &ReturnRecord,
    exchange: Option<&SaleRecord>,
) -> Result<TillMark, OpError> {
    let key = till_key(&at.till);
    let mut state: TillState = db.get(T::Pos, &key)?.unwrap_or_default();
    let open = state.open.as_mut().ok_or_else(|| closed(&at.till))?;
    let out_of_range = |e: MoneyError| match e {
        MoneyError::CurrencyMismatch(..) => OpError::invalid(
            "wrong_currency",
            format!(
                "the receipt is in {} but till {} counts {}",
                record.total.currency,
                at.till,
                open_currency(record)
            ),
        ),
        _ => OpError::invalid(
            "amount_out_of_range",
            format!(
                "till {}'s totals would overflow: close the till and open it again",
                at.till
            ),
        ),
    };
    if let Some(sale) = exchange {
        let change = crate::store::change_due_of(sale);
        open.totals = open
            .totals
            .with_sale(sale, change, &[])
            .map_err(out_of_range)?;
    }
    let t = &mut open.totals;
    let paid_back = crate::store::refunded(record);
    let cash: i64 = record
        .refunds
        .iter()
        .filter(|p| p.method == "cash")
        .map(|p| p.amount.minor)
        .sum();
    t.refunds = t.refunds.saturating_add(1);
    t.refunded = t.refunded.checked_add(paid_back).map_err(out_of_range)?;
    t.cash_refunded = t
        .cash_refunded
        .checked_add(Money::new(cash, paid_back.currency))
        .map_err(out_of_range)?;
    let mark = TillMark {
        till: at.till.clone(),
        session: open.id,
    };
    writes.put(T::Pos, key, &state)?;
    Ok(mark)
}

fn open_currency(record: &ReturnRecord) -> String {
    record.total.currency.to_string()
}

/// The node's way to the hub for receipts it did not make: the hub's HTTP address (from the
/// sync URL) and the node's credential.
pub struct HubLink {
    base: String,
    credential: SecretString,
    http: reqwest::Client,
    /// Returns above this need a manager.
    pub(crate) approval_over: Money,
}

/// Why the hub could not answer a lookup.
#[derive(Debug, thiserror::Error)]
pub enum HubLookupError {
    #[error("the store is offline")]
    Offline,
    #[error("the hub did not answer: {0}")]
    Unreachable(String),
}

impl HubLink {
    pub fn new(settings: &EdgeSettings) -> Result<HubLink, crate::ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(HUB_TIMEOUT)
            .connect_timeout(HUB_TIMEOUT)
            .build()
            .map_err(|e| crate::ConfigError::Invalid(format!("hub_url: {e}")))?;
        Ok(HubLink {
            base: settings.hub_http_base(),
            credential: SecretString::from(settings.credential_text().to_string()),
            http,
            approval_over: approval_limit(&settings.pos).map_err(crate::ConfigError::Invalid)?,
        })
    }

    /// A sale and the returns of it the hub knows, by receipt number or id (`None`: the hub
    /// knows no such sale).
    pub async fn lookup(
        &self,
        store: &Store,
        receipt: &str,
    ) -> Result<Option<(SaleRecord, Vec<ReturnRecord>)>, HubLookupError> {
        if !store.is_connected() {
            return Err(HubLookupError::Offline);
        }
        let encoded: String = receipt
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let url = format!("{}/api/v1/edge/receipts/{encoded}", self.base);
        let res = self
            .http
            .get(&url)
            .bearer_auth(self.credential.expose_secret())
            .send()
            .await
            .map_err(|e| HubLookupError::Unreachable(e.to_string()))?;
        match res.status().as_u16() {
            200 => {
                #[derive(Deserialize)]
                struct Found {
                    sale: SaleRecord,
                    #[serde(default)]
                    returns: Vec<ReturnRecord>,
                }
                let found: Found = res
                    .json()
                    .await
                    .map_err(|e| HubLookupError::Unreachable(format!("unreadable answer: {e}")))?;
                Ok(Some((found.sale, found.returns)))
            }
            404 => Ok(None),
            status => Err(HubLookupError::Unreachable(format!(
                "the hub answered {status}"
            ))),
        }
    }
}

fn unknown_receipt(receipt: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_receipt",
        format!(
            "no sale has receipt number '{}': check the number on the receipt (e.g. BERLIN-000123)",
            shown(receipt)
        ),
    )
}

fn shown(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// The sale of a receipt with every return of it known: this node's sale (and, while online,
/// the returns other stores made of it, as far as the hub knows), or another store's sale or
/// an online order's through the hub — which needs the hub: offline, `503 hub_unreachable`.
pub(crate) async fn returnable(
    state: &web::Data<ApiState>,
    hub: &web::Data<HubLink>,
    receipt: &str,
) -> Result<ReturnableSale, ApiError> {
    let receipt = receipt.trim().to_string();
    if receipt.is_empty() || receipt.len() > 80 {
        return Err(unknown_receipt(&receipt));
    }
    let store = state.store.clone();
    let r = receipt.clone();
    let local = blocking(move || {
        let Some(sale) = store.sale_for_return(&r)? else {
            return Ok(None);
        };
        let returns = store.returns_of_sale(sale.id)?;
        Ok(Some(ReturnableSale {
            sale,
            local: true,
            returns,
        }))
    })
    .await?;
    if let Some(mut found) = local {
        // Other stores may have taken some of it back: best effort, the node's own count
        // stands when the hub cannot be asked.
        if let Ok(Some((_, returns))) = hub.lookup(&state.store, &found.sale.id.to_string()).await {
            found.learn(returns);
        }
        return Ok(found);
    }
    match hub.lookup(&state.store, &receipt).await {
        Ok(Some((sale, returns))) => {
            let store = state.store.clone();
            let id = sale.id;
            let mine = blocking(move || Ok(store.returns_of_sale(id)?)).await?;
            let mut found = ReturnableSale {
                sale,
                local: false,
                returns,
            };
            found.learn(mine);
            Ok(found)
        }
        Ok(None) => Err(unknown_receipt(&receipt)),
        Err(e) => {
            tracing::info!(receipt = %shown(&receipt), error = %e, "a receipt of another store could not be looked up");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "hub_unreachable",
                format!(
                    "receipt '{}' was not sold at this store (another store's sale, or an online order): returning it needs the hub, which cannot be reached now ({e}). Take the return when the store is online again",
                    shown(&receipt)
                ),
            ))
        }
    }
}

/// Takes a return at a till for a signed-in staff member: a refund above the store's limit
/// needs a manager (their own session, or `approval` with their PIN, checked like a sign-in).
pub(crate) async fn take(
    state: &web::Data<ApiState>,
    hub: &web::Data<HubLink>,
    who: &SignedIn,
    till: TillSale,
    req: ReturnRequest,
    approval: Option<ApprovalRequest>,
    key: Option<String>,
) -> Result<ReturnReceipt, ApiError> {
    let store = state.store.clone();
    let k = key.clone();
    if let Some(first) = blocking(move || Ok(store.replayed_return(k.as_deref())?)).await? {
        return Ok(first);
    }
    let sale = returnable(state, hub, &req.receipt).await?;
    let planned = crate::store::plan_return(&sale, &req)?;
    let mut approved_by = (who.role == StaffRole::Manager).then(|| who.id.clone());
    let credit = planned_credit(state, &req, planned.total).await?;
    let back = planned.total.minor.saturating_sub(credit);
    let before = crate::store::refunded_unapproved(&sale);
    if back.saturating_add(before) > hub.approval_over.minor && approved_by.is_none() {
        let Some(approval) = approval else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "manager_approval_required",
                format!(
                    "refunding {}{} is above {} and needs a manager: send \"approval\": {{\"manager\": <a manager's staff id>, \"pin\": <their PIN>, \"reason\": <3 to 200 characters>}}",
                    Money::new(back, planned.total.currency),
                    crate::store::unapproved_note(before, planned.total.currency),
                    hub.approval_over
                ),
            ));
        };
        let pos = state.pos.clone();
        let ok =
            blocking(move || pos.approve(&approval).map_err(crate::api::approval_error)).await?;
        approved_by = Some(ok.manager);
    }
    let by = ReturnBy {
        till,
        approved_by,
        approval_over: hub.approval_over,
    };
    let store = state.store.clone();
    blocking(move || Ok(store.take_return(sale, &req, &by, key.as_deref())?)).await
}

/// What an exchange's new goods take of a return's value (0 without an exchange).
async fn planned_credit(
    state: &web::Data<ApiState>,
    req: &ReturnRequest,
    value: Money,
) -> Result<i64, ApiError> {
    let Some(x) = &req.exchange else {
        return Ok(0);
    };
    let probe = crate::ops::SaleRequest {
        lines: x.lines.clone(),
        payments: Vec::new(),
        customer: None,
        clerk: None,
        override_reason: None,
        coupons: Vec::new(),
    };
    let store = state.store.clone();
    let q = blocking(move || Ok(store.quote(&probe)?)).await?;
    Ok(q.total.minor.min(value.minor))
}

// ---- JSON views --------------------------------------------------------------------------

fn money(m: Money) -> String {
    m.to_decimal_string()
}

fn payment_json(p: &SalePayment) -> Value {
    json!({"method": p.method, "amount": money(p.amount), "reference": p.reference})
}

/// A receipt as the returns screen shows it.
pub(crate) fn returnable_json(s: &ReturnableSale) -> Value {
    let lines: Vec<Value> = s
        .sale
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "line": i, "sku": l.sku, "name": l.name, "sold": l.quantity,
                "returned": s.returned(i), "returnable": s.returnable(i),
                "total": money(l.total),
                "unit_refund": s.refund_value(i, 1).map(money),
            })
        })
        .collect();
    json!({
        "source": if s.local { "local" } else { "hub" },
        "kind": if s.online_order() { "online_order" } else { "store_sale" },
        "sale": {
            "id": s.sale.id.to_string(), "number": s.sale.number, "location": s.sale.location,
            "total": money(s.sale.total), "currency": s.sale.total.currency.code(),
            "payments": s.sale.payments.iter().map(payment_json).collect::<Vec<_>>(),
            "clerk": s.sale.clerk,
        },
        "lines": lines,
        "returns": s.returns.iter().map(|r| json!({
            "id": r.id.to_string(), "number": r.number, "location": r.location,
            "total": money(r.total),
        })).collect::<Vec<_>>(),
    })
}

/// A return as recorded.
pub(crate) fn return_json(
    entry: &ReturnEntry,
    exchange: Option<&crate::ops::SaleReceipt>,
) -> Value {
    let r = &entry.record;
    let cash: i64 = r
        .refunds
        .iter()
        .filter(|p| p.method == "cash")
        .map(|p| p.amount.minor)
        .sum();
    json!({
        "id": r.id.to_string(), "number": r.number,
        "sale": {"id": r.sale.to_string(), "number": r.sale_number, "location": r.sale_location},
        "currency": r.total.currency.code(),
        "lines": r.lines.iter().map(|l| json!({
            "line": l.line, "sku": l.sku, "name": l.name, "quantity": l.quantity,
            "amount": money(l.amount), "restocked": l.restocked,
        })).collect::<Vec<_>>(),
        "total": money(r.total),
        "refunds": r.refunds.iter().map(payment_json).collect::<Vec<_>>(),
        "refunded": money(crate::store::refunded(r)),
        "cash_refund": money(Money::new(cash, r.total.currency)),
        "clerk": r.clerk, "approved_by": r.approved_by, "reason": r.reason,
        "till": entry.till.as_ref().map(|t| t.till.clone()),
        "exchange": exchange.map(|e| json!({
            "id": e.entry.sale.id.to_string(), "number": e.entry.sale.number,
            "total": money(e.entry.sale.total),
            "payments": e.entry.sale.payments.iter().map(payment_json).collect::<Vec<_>>(),
            "change_due": money(e.change_due),
        })),
    })
}

// ---- routes ------------------------------------------------------------------------------

/// Registers the routes inside the `/api/v1` scope.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/returns/receipts/{receipt}", web::get().to(lookup))
        .route("/returns", web::post().to(post_return))
        .route("/returns/{id}", web::get().to(get_return));
}

async fn lookup(
    state: web::Data<ApiState>,
    hub: web::Data<HubLink>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let found = returnable(&state, &hub, &path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(returnable_json(&found)))
}

/// The body of `POST /api/v1/returns`: a [`ReturnRequest`] and a manager's approval.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnBody {
    receipt: String,
    lines: Vec<crate::store::ReturnLineRequest>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    exchange: Option<crate::store::ExchangeRequest>,
    #[serde(default)]
    approval: Option<ApprovalRequest>,
}

async fn post_return(
    state: web::Data<ApiState>,
    hub: web::Data<HubLink>,
    req: HttpRequest,
    body: web::Json<ReturnBody>,
) -> Result<HttpResponse, ApiError> {
    let who = super::http::staff(&req)?;
    let Some(till) = super::http::till_sale(&state, &req)? else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a return is taken by a signed-in staff member at a till",
        ));
    };
    let key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::bad_request(
                        "bad_idempotency_key",
                        "Idempotency-Key must be printable ASCII",
                    )
                })?
                .to_string(),
        ),
    };
    let b = body.into_inner();
    let request = ReturnRequest {
        receipt: b.receipt,
        lines: b.lines,
        reason: b.reason,
        exchange: b.exchange,
    };
    let done = take(&state, &hub, &who, till, request, b.approval, key).await?;
    let mut res = HttpResponse::Created();
    if done.replayed {
        res.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(res.json(return_json(&done.entry, done.exchange.as_ref())))
}

async fn get_return(
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = path.into_inner();
    let store = state.store.clone();
    let k = key.clone();
    let found = blocking(move || {
        let Some(entry) = store.find_return(&k)? else {
            return Ok(None);
        };
        let exchange = match entry.record.exchange_sale {
            Some(id) => store.sale(id)?,
            None => None,
        };
        Ok(Some((entry, exchange)))
    })
    .await?;
    match found {
        Some((entry, exchange)) => {
            Ok(HttpResponse::Ok().json(return_json(&entry, exchange.as_ref())))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "return '{}' (an id or a return number) not found",
                shown(&key)
            ),
        )),
    }
}
