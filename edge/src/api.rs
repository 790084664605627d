//! The node's HTTP API (JSON), for the in-store POS and the operator. Everything but `/healthz`,
//! `/readyz` and the staff sign-in (`POST /api/v1/staff/sessions`, `crate::pos`) requires
//! `Authorization: Bearer` with the node's `api_token` (machine clients) or a staff session
//! token (the POS; some acts need one, see `docs/pos.md`); the till's pages at `/pos`
//! (`crate::pos::pages`) use a session cookie instead, there only. Errors are
//! `{"error": {"code", "message", "details"?}}`: a 4xx says what to fix, a 5xx leaks nothing.
//! Money is a decimal string in the catalog's currency (`"12.34"`), with `currency` beside it.

use crate::ops::{
    AdjustmentReceipt, AdjustmentRequest, DeficitView, ManualAdjustmentRequest, ManualAdjustments,
    OpError, SaleReceipt, SaleRequest, StockLine,
};
use crate::storage::{AdjustmentKind, StoreError};
use crate::store::{now_ms, Store};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use protocol::promotion::{Gift, PromotionSummary};
use protocol::replication::{DeficitRecord, Hlc, Settlement};
use protocol::{Money, Product, Sku};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt;
use std::sync::Arc;
use ulid::Ulid;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
pub(crate) struct ApiState {
    pub store: Arc<Store>,
    pub pos: Arc<crate::pos::Pos>,
    pub token: SecretString,
    pub hub_url: String,
    pub max_clock_skew_ms: u64,
}

/// Registers the routes.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::bad_request("bad_query", format!("invalid query string: {err}")).into()
        }))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .service(crate::pos::http::sign_in_resource())
        .configure(crate::pos::pages::configure)
        .service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(require_token))
                .configure(crate::pos::http::routes)
                .configure(crate::pos::pickups::routes)
                .configure(crate::pos::returns::routes)
                .configure(crate::pos::customers::routes)
                .route("/sales", web::post().to(post_sale))
                .route("/sales/quote", web::post().to(quote_sale))
                .route(
                    "/pos/audit",
                    web::get().to(crate::pos::overrides::audit_route),
                )
                .route("/sales", web::get().to(list_sales))
                .route(
                    "/card/payments",
                    web::get().to(crate::pos::card::list_route),
                )
                .route("/sales/{id}", web::get().to(get_sale))
                .route("/stock/adjustments", web::post().to(post_adjustment))
                .route("/stock", web::get().to(list_stock))
                .route("/stock/{sku}", web::get().to(get_stock))
                .route("/products", web::get().to(list_products))
                .route("/promotions", web::get().to(list_promotions))
                .route("/coupons", web::get().to(list_coupons))
                .route("/catalog/changes", web::get().to(catalog_changes))
                .route("/deficits", web::get().to(list_deficits))
                .route("/conflicts", web::get().to(list_conflicts))
                .route("/sync", web::get().to(sync_status))
                .route("/boards", web::get().to(crate::boards::http::list))
                .default_service(web::to(no_route)),
        )
        .default_service(web::to(no_route));
}

// ---- errors -------------------------------------------------------------------------------

/// An API error: a status, a stable code and a message that says what to fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(what: impl fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the node's storage is unavailable: retry shortly",
        )
    }

    /// The stable code (e.g. `needs_hub`), for a page that acts on one refusal.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// The message with the fields it names, for a page that shows the error to a person.
    pub(crate) fn explain(&self) -> String {
        let fields: Vec<&str> = self
            .details
            .as_ref()
            .and_then(|d| d["fields"].as_array())
            .map(|f| f.iter().filter_map(|p| p["message"].as_str()).collect())
            .unwrap_or_default();
        if fields.is_empty() {
            self.message.clone()
        } else {
            format!(
                "{} ({})",
                self.message.trim_end_matches(": see details"),
                fields.join("; ")
            )
        }
    }

    fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            error["details"] = d.clone();
        }
        HttpResponse::build(self.status).json(json!({ "error": error }))
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        match e {
            OpError::Invalid {
                code,
                message,
                problems,
            } => {
                let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
                if problems.is_empty() {
                    err
                } else {
                    err.with_details(json!({ "fields": problems }))
                }
            }
            OpError::NotFound(what) => ApiError::not_found(what),
            OpError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            OpError::InsufficientRights(ref short) => {
                let details = json!({ "short": short });
                ApiError::new(StatusCode::CONFLICT, "insufficient_rights", e.to_string())
                    .with_details(details)
            }
            OpError::Storage(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "storage failed");
        match e {
            // The operator must act (a restart, after checking the disk); retrying is useless.
            StoreError::Failed(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_failed",
                "the node's database failed to make a change durable and refuses every write until the node is restarted: tell the operator. A sale answered this way may or may not be recorded: after the restart, retry it with the same Idempotency-Key",
            ),
            // The change exists (durable, queued to the hub): say so, with the sale.
            StoreError::Unjournaled { sale, .. } => {
                let message = match &sale {
                    Some((_, number)) => format!(
                        "sale {number} is recorded and will reach the hub, but the node could not write its journal: do not ring it up again; tell the operator"
                    ),
                    None => "the change is recorded and will reach the hub, but the node could not write its journal: do not repeat it; tell the operator".to_string(),
                };
                let err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "journal_failed", message);
                match sale {
                    Some((id, number)) => {
                        err.with_details(json!({ "recorded": true, "sale_id": id.to_string(), "number": number }))
                    }
                    None => err.with_details(json!({ "recorded": true })),
                }
            }
            _ => ApiError::unavailable(),
        }
    }
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {} KiB", MAX_BODY_BYTES / 1024),
                ),
                E::ContentType => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with Content-Type: application/json",
                ),
                E::Deserialize(inner) if inner.is_data() => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    format!("invalid body: {inner}"),
                ),
                E::Deserialize(inner) => {
                    ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}"))
                }
                other => {
                    ApiError::bad_request("bad_body", format!("could not read the body: {other}"))
                }
            };
            api.into()
        })
}

async fn no_route(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// Requires `Authorization: Bearer` with the node's `api_token` (compared in constant time) or a
/// valid staff session token, and tells the handlers which (a [`crate::pos::Caller`]).
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let caller = match (req.app_data::<web::Data<ApiState>>(), bearer) {
        (Some(state), Some(given)) => crate::pos::http::identify(state, &given).await?,
        _ => None,
    };
    let Some(caller) = caller else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send the node's API token (or a staff session token) as Authorization: Bearer <token>",
        )
        .into());
    };
    req.extensions_mut().insert(caller);
    next.call(req).await
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(|e| {
        tracing::error!(error = %e, "a blocking task failed");
        ApiError::unavailable()
    })?
}

// ---- views --------------------------------------------------------------------------------

pub(crate) fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn at(h: &Hlc) -> String {
    rfc3339(h.ms)
}

fn money(m: Money) -> String {
    m.to_decimal_string()
}

#[derive(Serialize)]
struct SaleLineView {
    sku: Sku,
    name: String,
    quantity: u32,
    unit_price: String,
    /// The line's promotion discount.
    discount: String,
    /// Quantity × unit price less the discount.
    total: String,
    tax_rate_bp: u32,
}

/// A promotion that applied to a sale, and what it took off.
#[derive(Serialize)]
struct AppliedView {
    id: String,
    name: String,
    amount: String,
    times: u32,
}

/// What promotions did to a sale.
#[derive(Serialize)]
struct SalePromotionsView {
    applied: Vec<AppliedView>,
    gifts: Vec<Gift>,
    free_shipping: bool,
}

fn promotions_view(p: &PromotionSummary) -> SalePromotionsView {
    SalePromotionsView {
        applied: p
            .applied
            .iter()
            .map(|a| AppliedView {
                id: a.id.to_string(),
                name: a.name.clone(),
                amount: money(a.amount),
                times: a.times,
            })
            .collect(),
        gifts: p.gifts.clone(),
        free_shipping: p.free_shipping,
    }
}

#[derive(Serialize)]
struct TaxView {
    rate_bp: u32,
    gross: String,
    tax: String,
}

#[derive(Serialize)]
struct PaymentView {
    method: String,
    amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

#[derive(Serialize)]
struct SettlementView {
    settled: u64,
    short: u64,
    flagged: Vec<String>,
    at: String,
}

#[derive(Serialize)]
struct DeficitJson {
    id: Ulid,
    replica: String,
    location: String,
    sku: Sku,
    units: u64,
    reason: String,
    sale: Option<Ulid>,
    clerk: Option<String>,
    at: String,
    /// The hub's settlement, once received.
    settlement: Option<SettlementView>,
}

fn deficit_json(d: &DeficitRecord, settlement: Option<&Settlement>) -> DeficitJson {
    DeficitJson {
        id: d.id,
        replica: d.replica.to_string(),
        location: d.location.to_string(),
        sku: d.sku.clone(),
        units: d.units,
        reason: d.reason.clone(),
        sale: d.sale,
        clerk: d.clerk.clone(),
        at: at(&d.at),
        settlement: settlement.map(|s| SettlementView {
            settled: s.settled,
            short: s.short,
            flagged: s.flagged.clone(),
            at: at(&s.at),
        }),
    }
}

#[derive(Serialize)]
struct SaleView {
    id: Ulid,
    number: String,
    replica: String,
    location: String,
    at: String,
    currency: String,
    lines: Vec<SaleLineView>,
    /// The lines at shelf prices, before promotions.
    subtotal: String,
    /// What promotions took off (`subtotal − total`).
    discount: String,
    total: String,
    taxes: Vec<TaxView>,
    promotions: SalePromotionsView,
    /// The coupon codes redeemed with the sale.
    coupons: Vec<String>,
    payments: Vec<PaymentView>,
    paid: String,
    change_due: String,
    customer: Option<String>,
    clerk: Option<String>,
    deficits: Vec<DeficitJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed_from: Option<String>,
}

fn shelf_total(l: &protocol::replication::SaleLine) -> i64 {
    i64::from(l.quantity).saturating_mul(l.unit_price.minor)
}

fn lines_view(
    lines: &[protocol::replication::SaleLine],
    currency: protocol::Currency,
) -> Vec<SaleLineView> {
    lines
        .iter()
        .map(|l| SaleLineView {
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: money(l.unit_price),
            discount: money(Money::new(
                shelf_total(l).saturating_sub(l.total.minor),
                currency,
            )),
            total: money(l.total),
            tax_rate_bp: l.tax_rate_bp,
        })
        .collect()
}

fn taxes_view(taxes: &[protocol::TaxLine]) -> Vec<TaxView> {
    taxes
        .iter()
        .map(|t| TaxView {
            rate_bp: t.rate_bp,
            gross: money(t.gross),
            tax: money(t.tax),
        })
        .collect()
}

fn sale_view(r: &SaleReceipt) -> SaleView {
    let s = &r.entry.sale;
    let paid: i64 = s.payments.iter().map(|p| p.amount.minor).sum();
    let currency = s.total.currency;
    let subtotal = s
        .lines
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(shelf_total(l)));
    SaleView {
        id: s.id,
        number: s.number.clone(),
        replica: s.replica.to_string(),
        location: s.location.to_string(),
        at: at(&s.at),
        currency: s.total.currency.code().to_string(),
        lines: lines_view(&s.lines, currency),
        subtotal: money(Money::new(subtotal, currency)),
        discount: money(Money::new(subtotal.saturating_sub(s.total.minor), currency)),
        total: money(s.total),
        promotions: promotions_view(&s.promotions),
        coupons: s.coupons.clone(),
        taxes: taxes_view(&s.taxes),
        payments: s
            .payments
            .iter()
            .map(|p| PaymentView {
                method: p.method.clone(),
                amount: money(p.amount),
                reference: p.reference.clone(),
            })
            .collect(),
        paid: money(Money::new(paid, s.total.currency)),
        change_due: money(r.change_due),
        customer: s.customer.map(|c| c.to_string()),
        clerk: s.clerk.clone(),
        deficits: r.deficits.iter().map(|d| deficit_json(d, None)).collect(),
        replayed_from: r.entry.replayed_from.as_ref().map(|r| r.to_string()),
    }
}

/// A sale's view with each card payment's current state (`crate::pos::card`).
fn sale_json(store: &Store, r: &SaleReceipt) -> serde_json::Value {
    let mut view = serde_json::to_value(sale_view(r)).unwrap_or_default();
    crate::pos::card::annotate(store, &r.entry.sale, &mut view);
    view
}

#[derive(Serialize)]
struct AdjustmentView {
    id: Ulid,
    kind: AdjustmentKind,
    sku: Sku,
    delta: i64,
    on_hand_after: i64,
    rights_created: u64,
    rights_consumed: u64,
    reason: String,
    clerk: Option<String>,
    deficit: Option<DeficitJson>,
    at: String,
}

fn adjustment_view(r: &AdjustmentReceipt) -> AdjustmentView {
    let a = &r.record;
    AdjustmentView {
        id: a.id,
        kind: a.kind.clone(),
        sku: a.sku.clone(),
        delta: a.delta,
        on_hand_after: a.on_hand_after,
        rights_created: a.rights_created,
        rights_consumed: a.rights_consumed,
        reason: a.reason.clone(),
        clerk: a.clerk.clone(),
        deficit: a.deficit.as_ref().map(|d| deficit_json(d, None)),
        at: rfc3339(a.at_ms),
    }
}

// ---- handlers -----------------------------------------------------------------------------

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let store = state.store.clone();
    let storage = web::block(move || store.healthy()).await.unwrap_or(false);
    let sync_task = state.store.sync_state().running;
    let failed = state.store.failure();
    let mut body = json!({"storage": storage && failed.is_none(), "sync_task": sync_task});
    if let Some(why) = &failed {
        body["failed"] = json!(why);
    }
    if storage && sync_task && failed.is_none() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    match req.headers().get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            ApiError::bad_request(
                "bad_idempotency_key",
                "Idempotency-Key must be printable ASCII",
            )
        }),
    }
}

/// The body of `POST /api/v1/sales` and `POST /api/v1/sales/quote`: a [`SaleRequest`] whose
/// lines may carry a manual price adjustment, with the manager's approval of them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaleBody {
    lines: Vec<SaleLineBody>,
    #[serde(default)]
    payments: Vec<crate::ops::PaymentRequest>,
    #[serde(default)]
    customer: Option<protocol::CustomerId>,
    #[serde(default)]
    clerk: Option<String>,
    #[serde(default)]
    override_reason: Option<String>,
    #[serde(default)]
    coupons: Vec<String>,
    /// A manager's approval of the lines' manual adjustments (one for the whole sale).
    #[serde(default)]
    approval: Option<crate::ops::ApprovalRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaleLineBody {
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    barcode: Option<String>,
    quantity: i64,
    #[serde(default)]
    price_override: Option<String>,
    #[serde(default)]
    manual_discount: Option<crate::ops::ManualDiscountRequest>,
}

impl SaleBody {
    fn split(
        self,
    ) -> (
        SaleRequest,
        ManualAdjustments,
        Option<crate::ops::ApprovalRequest>,
    ) {
        let mut lines = Vec::with_capacity(self.lines.len());
        let mut manual = ManualAdjustments::default();
        for l in self.lines {
            let a = ManualAdjustmentRequest {
                price_override: l.price_override,
                manual_discount: l.manual_discount,
            };
            manual.lines.push((!a.is_empty()).then_some(a));
            lines.push(crate::ops::SaleLineRequest {
                sku: l.sku,
                barcode: l.barcode,
                quantity: l.quantity,
            });
        }
        let req = SaleRequest {
            lines,
            payments: self.payments,
            customer: self.customer,
            clerk: self.clerk,
            override_reason: self.override_reason,
            coupons: self.coupons,
        };
        (req, manual, self.approval)
    }
}

/// Checks the manager's approval of a sale's manual adjustments (none needed without one):
/// 403 `manager_approval_required` without it, 403 for a clerk or a wrong PIN (counted toward
/// the manager's lock), 423 once the manager is locked, 422 without a reason.
pub(crate) async fn approve(
    state: &web::Data<ApiState>,
    manual: &mut ManualAdjustments,
    approval: Option<crate::ops::ApprovalRequest>,
) -> Result<(), ApiError> {
    if !manual.any() {
        return Ok(());
    }
    let Some(approval) = approval else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "manager_approval_required",
            "a price override or manual discount needs a manager's approval: send \"approval\": {\"manager\": <a manager's staff id>, \"pin\": <their PIN>, \"reason\": <3 to 200 characters>} with the sale",
        ));
    };
    let pos = state.pos.clone();
    let approved = blocking(move || pos.approve(&approval).map_err(approval_error)).await?;
    manual.approved = Some(approved);
    Ok(())
}

/// A refused approval as an answer: a wrong PIN is `403` here (the caller's own session is
/// fine; the manager's PIN is not), counted toward the manager's lock.
pub(crate) fn approval_error(e: crate::pos::PosError) -> ApiError {
    match e {
        crate::pos::PosError::WrongPin { .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_pin",
            format!("the manager's {e}"),
        ),
        other => other.into(),
    }
}

async fn post_sale(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<SaleBody>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let till = crate::pos::http::till_sale(&state, &req)?;
    let (mut body, mut manual, approval) = body.into_inner().split();
    crate::pos::http::check_staff_sale(&req, &body)?;
    approve(&state, &mut manual, approval).await?;
    let authorised =
        crate::pos::card::authorise(&req, &state, &mut body, key.as_deref(), &manual).await?;
    let store = state.store.clone();
    let sold =
        blocking(move || Ok(store.sell_with(&body, key.as_deref(), till.as_ref(), &manual)?)).await;
    let receipt = match sold {
        Ok(r) => r,
        Err(e) => {
            crate::pos::card::release_for(&req, &authorised).await;
            return Err(e);
        }
    };
    let mut res = HttpResponse::Created();
    if receipt.replayed {
        res.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(res.json(sale_json(&state.store, &receipt)))
}

/// `POST /api/v1/sales/quote`: a sale request priced by the same code as `POST /api/v1/sales`
/// (catalog, promotions, coupons), recorded nowhere. Payments in the body are ignored.
async fn quote_sale(
    state: web::Data<ApiState>,
    body: web::Json<SaleBody>,
) -> Result<HttpResponse, ApiError> {
    let (body, mut manual, approval) = body.into_inner().split();
    approve(&state, &mut manual, approval).await?;
    let store = state.store.clone();
    let q = blocking(move || Ok(store.quote_with(&body, &manual)?)).await?;
    let currency = q.total.currency;
    let subtotal = q
        .lines
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(shelf_total(l)));
    Ok(HttpResponse::Ok().json(json!({
        "currency": currency.code(),
        "lines": lines_view(&q.lines, currency),
        "subtotal": money(Money::new(subtotal, currency)),
        "discount": money(Money::new(subtotal.saturating_sub(q.total.minor), currency)),
        "total": money(q.total),
        "taxes": taxes_view(&q.taxes),
        "promotions": promotions_view(&q.promotions),
        "coupons": q.coupons,
    })))
}

/// `?limit=&cursor=` of a listing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

impl Page {
    fn parse(&self) -> Result<(usize, Option<Ulid>), ApiError> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "bad_limit",
                format!("limit {limit} is out of range: 1 to 100"),
            ));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) => Some(Ulid::from_string(c).map_err(|_| {
                ApiError::bad_request(
                    "bad_cursor",
                    "invalid cursor: pass the next_cursor of the previous page unchanged",
                )
            })?),
        };
        Ok((limit, cursor))
    }
}

async fn list_sales(
    state: web::Data<ApiState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = page.parse()?;
    let store = state.store.clone();
    let sales = blocking(move || Ok(store.sales(limit, before)?)).await?;
    let next = (sales.len() == limit)
        .then(|| sales.last().map(|s| s.entry.sale.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "sales": sales.iter().map(|s| sale_json(&state.store, s)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

async fn get_sale(
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = path.into_inner();
    let store = state.store.clone();
    let k = key.clone();
    match blocking(move || Ok(store.find_sale(&k)?)).await? {
        Some(sale) => Ok(HttpResponse::Ok().json(sale_json(&state.store, &sale))),
        None => Err(ApiError::not_found(format!(
            "sale '{key}' (an id or a receipt number)"
        ))),
    }
}

async fn post_adjustment(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<AdjustmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let mut body = body.into_inner();
    crate::pos::http::check_staff_adjustment(&req, &mut body)?;
    let store = state.store.clone();
    let receipt = blocking(move || Ok(store.adjust(&body, key.as_deref())?)).await?;
    let mut res = HttpResponse::Created();
    if receipt.replayed {
        res.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(res.json(adjustment_view(&receipt)))
}

async fn list_stock(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let lines: Vec<StockLine> = blocking(move || Ok(store.stock()?)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "location": state.store.identity().location,
        "items": lines,
    })))
}

async fn get_stock(
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let text = path.into_inner();
    let sku = Sku::parse(&text).map_err(|_| ApiError::not_found(format!("SKU '{text}'")))?;
    let store = state.store.clone();
    let s = sku.clone();
    match blocking(move || Ok(store.stock_of(&s)?)).await? {
        Some(line) => Ok(HttpResponse::Ok().json(line)),
        None => Err(ApiError::not_found(format!(
            "SKU '{sku}' (neither in the catalog nor in the node's stock)"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductQuery {
    q: Option<String>,
    barcode: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct VariantView {
    sku: Sku,
    title: String,
    price: String,
    currency: String,
    compare_at: Option<String>,
    barcode: Option<String>,
    on_hand: i64,
    node_rights: u64,
}

#[derive(Serialize)]
struct ProductView {
    id: String,
    slug: String,
    name: String,
    brand: String,
    category: String,
    tax_rate_bp: u32,
    image: String,
    variants: Vec<VariantView>,
}

async fn list_products(
    state: web::Data<ApiState>,
    query: web::Query<ProductQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit {limit} is out of range: 1 to 100"),
        ));
    }
    let store = state.store.clone();
    let q = query.into_inner();
    let products = blocking(move || {
        let found: Vec<Product> = store.products(q.q.as_deref(), q.barcode.as_deref(), limit);
        let mut out = Vec::with_capacity(found.len());
        for p in found {
            let mut variants = Vec::with_capacity(p.variants.len());
            for v in &p.variants {
                let stock = store.stock_of(&v.sku)?;
                variants.push(VariantView {
                    sku: v.sku.clone(),
                    title: v.title.clone(),
                    price: money(v.price),
                    currency: v.price.currency.code().to_string(),
                    compare_at: v.compare_at.map(money),
                    barcode: v.barcode.clone(),
                    on_hand: stock.as_ref().map_or(0, |s| s.on_hand),
                    node_rights: stock.as_ref().map_or(0, |s| s.node_rights),
                });
            }
            out.push(ProductView {
                id: p.id.to_string(),
                slug: p.slug,
                name: p.name,
                brand: p.brand,
                category: p.category.0,
                tax_rate_bp: p.tax_rate_bp,
                image: p.image,
                variants,
            });
        }
        Ok(out)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "catalog_version": state.store.catalog().version(),
        "products": products,
    })))
}

/// `GET /api/v1/promotions`: the promotions the node prices with (those live on the hub when
/// its catalog version was issued), in the order they apply.
async fn list_promotions(state: web::Data<ApiState>) -> HttpResponse {
    let catalog = state.store.catalog();
    HttpResponse::Ok().json(json!({
        "catalog_version": catalog.version(),
        "promotions": catalog.promotions.promotions(),
    }))
}

/// `GET /api/v1/coupons`: the coupon codes this node may redeem at the till, as the hub sent
/// them, with the redemption rights it holds of each limited one (`rights_held`; null for a code
/// without a total limit) and whether the hub ended it.
async fn list_coupons(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let coupons = blocking(move || Ok(store.coupons()?)).await?;
    let listed: Vec<serde_json::Value> = coupons
        .into_iter()
        .map(|(terms, ended, held)| {
            json!({
                "code": terms.code,
                "promotion": terms.promotion,
                "expires_at_ms": terms.expires_at_ms,
                "per_customer": terms.per_customer,
                "limited": terms.limited,
                "ended": ended,
                "rights_held": held,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "coupons": listed })))
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: u64,
}

/// `GET /api/v1/catalog/changes?since=<version>`: what changed in the node's catalog since a
/// version (for boards that keep a copy): products and categories new or changed (whole) or
/// gone (ids), and the promotions when they changed. `409 catalog_reload` when the node cannot
/// tell (the version is older than what it keeps, or one it never had): reload the whole
/// catalog from `GET /api/v1/products` and `GET /api/v1/promotions`, then ask again from its
/// `catalog_version`.
async fn catalog_changes(
    state: web::Data<ApiState>,
    query: web::Query<ChangesQuery>,
) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let since = query.since;
    match blocking(move || Ok(store.catalog_changes_since(since)?)).await? {
        Some(changes) => Ok(HttpResponse::Ok().json(json!({
            "catalog_version": changes.version,
            "since": changes.since,
            "products": changes.products,
            "removed": changes.removed,
            "categories": changes.categories,
            "removed_categories": changes.removed_categories,
            "promotions": changes.promotions,
        }))),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "catalog_reload",
            format!(
                "the node cannot tell what changed since catalog version {since} (it is at {}): reload the whole catalog, then ask again from its catalog_version",
                state.store.catalog().version()
            ),
        )),
    }
}

async fn list_deficits(
    state: web::Data<ApiState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = page.parse()?;
    let store = state.store.clone();
    let found: Vec<DeficitView> = blocking(move || Ok(store.deficits(limit, before)?)).await?;
    let next = (found.len() == limit)
        .then(|| found.last().map(|d| d.deficit.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "deficits": found
            .iter()
            .map(|d| deficit_json(&d.deficit, d.settlement.as_ref()))
            .collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

async fn list_conflicts(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let found = blocking(move || Ok(store.conflicts(100)?)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "conflicts": found
            .iter()
            .map(|c| json!({"id": c.id, "replica": c.replica, "kind": c.kind, "detail": c.detail, "at": at(&c.at)}))
            .collect::<Vec<_>>(),
    })))
}

async fn sync_status(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let cursors = blocking(move || Ok(store.cursors()?)).await?;
    let s = state.store.sync_state();
    let me = state.store.identity();
    let now = now_ms();
    Ok(HttpResponse::Ok().json(json!({
        "replica": me.replica,
        "location": me.location,
        "store_name": me.store_name,
        "hub_url": state.hub_url,
        "running": s.running,
        "connected": s.connected,
        "since": s.since_ms.map(rfc3339),
        "last_ack_at": s.last_ack_ms.map(rfc3339),
        "pending": {
            "entries": cursors.pending_entries(),
            "items": cursors.pending_items,
            "journal_records": state.store.journal_records(),
        },
        "have": cursors.have,
        "acked": cursors.acked,
        "last_seq": cursors.last_seq(),
        "catalog_version": state.store.catalog().version(),
        "clock_skew_ms": s.skew_ms,
        "clock_skew_exceeds_limit": s.skew_ms.is_some_and(|k| k.unsigned_abs() > state.max_clock_skew_ms),
        "last_close": s.last_close,
        "next_reconnect_in_ms": s.next_attempt_ms.map(|t| t.saturating_sub(now)),
        "backoff_ms": s.backoff_ms,
        "problem": s.problem,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Identity;
    use actix_web::{test, App};
    use protocol::replication::ReplicaId;
    use protocol::LocationId;

    async fn body_of(res: HttpResponse) -> serde_json::Value {
        let bytes = actix_web::body::to_bytes(res.into_body())
            .await
            .expect("reads the body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[actix_web::test]
    async fn a_failed_store_answers_503_with_a_clear_error() {
        let err = ApiError::from(StoreError::Failed("the database did not flush".into()));
        let res = err.error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_of(res).await;
        assert_eq!(body["error"]["code"], "storage_failed");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("restarted")));
    }

    #[actix_web::test]
    async fn an_unjournaled_sale_answers_503_with_the_sale_in_the_details() {
        let id = Ulid::new();
        let err = ApiError::from(OpError::Storage(StoreError::Unjournaled {
            sale: Some((id, "berlin-000042".into())),
            source: Box::new(StoreError::Journal(std::io::Error::other("disk full"))),
        }));
        let res = err.error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_of(res).await;
        assert_eq!(body["error"]["code"], "journal_failed");
        assert_eq!(body["error"]["details"]["sale_id"], id.to_string());
        assert_eq!(body["error"]["details"]["number"], "berlin-000042");
        assert_eq!(body["error"]["details"]["recorded"], true);
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("berlin-000042") && m.contains("do not ring it up again")));
    }

    #[actix_web::test]
    async fn readyz_answers_503_once_the_store_failed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            Store::open(
                dir.path(),
                4,
                Identity {
                    replica: ReplicaId("berlin".into()),
                    location: LocationId("store-berlin".into()),
                    store_name: "Berlin".into(),
                    safety_buffer: 2,
                    online_share_percent: 50,
                },
            )
            .expect("opens"),
        );
        store.update_sync(|s| s.running = true);
        let state = web::Data::new(ApiState {
            store: store.clone(),
            pos: Arc::new(crate::pos::Pos::new(
                store.clone(),
                &crate::config::PosSettings::default(),
                crate::pos::PosClock::system(),
            )),
            token: SecretString::from("token-0123456789".to_string()),
            hub_url: "ws://hub".into(),
            max_clock_skew_ms: 300_000,
        });
        let app = test::init_service(App::new().app_data(state.clone()).configure(configure)).await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);

        store.inject_flush_failure();
        assert!(matches!(
            store.flush_or_fail("a test change"),
            Err(StoreError::Failed(_))
        ));
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["storage"], false);
        assert!(body["failed"]
            .as_str()
            .is_some_and(|m| m.contains("a test change")));
    }
}
