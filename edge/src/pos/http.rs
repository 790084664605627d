//! The POS's HTTP routes (JSON): staff sessions, unlocking, tills and Z-reports, and who a
//! request's bearer token is ([`identify`], used by the API's authentication middleware).

use super::staff::TOKEN_PREFIX;
use super::till::{TillSession, TillState, TillTotals, ZReport};
use super::{Caller, PosError, SignedIn, TillSale};
use crate::api::{blocking, rfc3339, ApiError, ApiState};
use crate::config::StaffRole;
use crate::ops::{AdjustmentRequest, SaleRequest};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use protocol::Money;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

impl From<PosError> for ApiError {
    fn from(e: PosError) -> ApiError {
        let status = match &e {
            PosError::UnknownStaff(_) => (StatusCode::UNAUTHORIZED, "unknown_staff"),
            PosError::PinFormat => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_pin"),
            PosError::WrongPin { .. } => (StatusCode::UNAUTHORIZED, "wrong_pin"),
            PosError::Locked(_) => (StatusCode::LOCKED, "staff_locked"),
            PosError::Unauthenticated { code, .. } => (StatusCode::UNAUTHORIZED, *code),
            PosError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            PosError::UnknownTill { .. } => (StatusCode::NOT_FOUND, "unknown_till"),
            PosError::Op(_) | PosError::Storage(_) | PosError::Hash(_) => {
                return match e {
                    PosError::Op(op) => op.into(),
                    PosError::Storage(s) => s.into(),
                    other => {
                        tracing::error!(error = %other, "POS failure");
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "the node failed: retry, or tell the operator",
                        )
                    }
                }
            }
        };
        ApiError::new(status.0, status.1, e.to_string())
    }
}

/// Who a bearer token is: the node's API token, a valid staff session, or nobody (`None`). An
/// expired or ended staff session is an error saying so.
pub(crate) async fn identify(
    state: &web::Data<ApiState>,
    bearer: &str,
) -> Result<Option<Caller>, ApiError> {
    use subtle::ConstantTimeEq;
    if bool::from(
        bearer
            .as_bytes()
            .ct_eq(state.token.expose_secret().as_bytes()),
    ) {
        return Ok(Some(Caller::Node));
    }
    if !bearer.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let pos = state.pos.clone();
    let token = bearer.to_string();
    let who = blocking(move || Ok(pos.authenticate(&token)?)).await?;
    Ok(Some(Caller::Staff(who)))
}

fn caller(req: &HttpRequest) -> Result<Caller, ApiError> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a staff session token or the node's API token as Authorization: Bearer",
        )
    })
}

/// The signed-in staff member, or 403 for the node's API token.
pub(crate) fn staff(req: &HttpRequest) -> Result<SignedIn, ApiError> {
    match caller(req)? {
        Caller::Staff(who) => Ok(who),
        Caller::Node => Err(PosError::Forbidden(
            "this needs a staff member: sign in with POST /api/v1/staff/sessions {staff_id, pin} and send the session token".into(),
        )
        .into()),
    }
}

/// The till a sale is rung up at (`X-Till`), for a staff session; `None` for the node's API
/// token (an unattributed sale, as before staff sessions).
pub(crate) fn till_sale(state: &ApiState, req: &HttpRequest) -> Result<Option<TillSale>, ApiError> {
    let till = match req.headers().get("x-till") {
        None => None,
        Some(v) => Some(v.to_str().map(str::trim).map_err(|_| {
            ApiError::bad_request("bad_till", "X-Till must be a till id such as 1")
        })?),
    };
    match (caller(req)?, till) {
        (Caller::Node, None) => Ok(None),
        (Caller::Node, Some(_)) => Err(PosError::Forbidden(
            "a sale at a till is rung up by a signed-in staff member: send their session token, not the node's API token".into(),
        )
        .into()),
        (Caller::Staff(_), None) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "till_required",
            "name the till the sale is rung up at in the X-Till header, e.g. X-Till: 1",
        )),
        (Caller::Staff(who), Some(till)) => {
            state.pos.known_till(till)?;
            Ok(Some(TillSale {
                till: till.to_string(),
                staff: who.id,
            }))
        }
    }
}

/// The session's staff id as a request's `clerk`: a body naming someone else is refused (a
/// clerk must not put a sale or a count on a colleague's name).
fn clerk_is(who: &SignedIn, named: Option<&str>) -> Result<(), ApiError> {
    match named {
        Some(clerk) if clerk != who.id => Err(PosError::Forbidden(format!(
            "'clerk' must be you ('{}') with a staff session: leave it out, the node records the signed-in staff member",
            who.id
        ))
        .into()),
        _ => Ok(()),
    }
}

fn needs_manager(who: &SignedIn, what: &str) -> Result<(), ApiError> {
    if who.role == StaffRole::Manager {
        return Ok(());
    }
    Err(PosError::Forbidden(format!(
        "{what} needs a manager: ask a manager to sign in and do it"
    ))
    .into())
}

/// What a staff session may ask of `POST /api/v1/sales`: its own name as the clerk, and
/// selling beyond the node's rights (`override_reason`) only as a manager. The node's API
/// token is not limited here.
pub(crate) fn check_staff_sale(req: &HttpRequest, sale: &SaleRequest) -> Result<(), ApiError> {
    let Caller::Staff(who) = caller(req)? else {
        return Ok(());
    };
    clerk_is(&who, sale.clerk.as_deref())?;
    if sale.override_reason.is_some() {
        needs_manager(
            &who,
            "selling beyond the stock the node holds (override_reason)",
        )?;
    }
    Ok(())
}

/// What a staff session may ask of `POST /api/v1/stock/adjustments`: a receipt of goods
/// (any staff member: taking in a delivery is a clerk's job), a count or damage only as a
/// manager; the clerk recorded is always the session's staff member. The node's API token
/// is not limited here.
pub(crate) fn check_staff_adjustment(
    req: &HttpRequest,
    adjustment: &mut AdjustmentRequest,
) -> Result<(), ApiError> {
    let Caller::Staff(who) = caller(req)? else {
        return Ok(());
    };
    let (clerk, manager_only) = match adjustment {
        AdjustmentRequest::Receipt { clerk, .. } => (clerk, None),
        AdjustmentRequest::Count { clerk, .. } => (clerk, Some("a stock count")),
        AdjustmentRequest::Damage { clerk, .. } => (clerk, Some("writing off damaged goods")),
    };
    clerk_is(&who, clerk.as_deref())?;
    if let Some(what) = manager_only {
        needs_manager(&who, what)?;
    }
    *clerk = Some(who.id);
    Ok(())
}

/// The routes inside `/api/v1` (behind the token middleware).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/staff/sessions/current", web::get().to(current))
        .route("/staff/sessions/current", web::delete().to(sign_out))
        .route("/staff/{id}/unlock", web::post().to(unlock))
        .route("/tills/{till}", web::get().to(till_status))
        .route("/tills/{till}/open", web::post().to(open_till))
        .route("/tills/{till}/close", web::post().to(close_till))
        .route("/tills/{till}/reports/{number}", web::get().to(get_report));
}

/// `POST /api/v1/staff/sessions` (outside the token middleware: the PIN is the credential).
pub(crate) fn sign_in_resource() -> actix_web::Resource {
    web::resource("/api/v1/staff/sessions")
        .route(web::post().to(sign_in))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "sign in with POST /api/v1/staff/sessions {\"staff_id\", \"pin\"}",
            ))
        }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInBody {
    staff_id: String,
    /// A string of 4 to 8 digits (a JSON number would lose leading zeros).
    pin: String,
}

#[derive(Serialize)]
struct StaffView {
    id: String,
    name: String,
    role: crate::config::StaffRole,
}

fn staff_view(who: &SignedIn) -> StaffView {
    StaffView {
        id: who.id.clone(),
        name: who.name.clone(),
        role: who.role,
    }
}

async fn sign_in(
    state: web::Data<ApiState>,
    body: web::Json<SignInBody>,
) -> Result<HttpResponse, ApiError> {
    let pos = state.pos.clone();
    let body = body.into_inner();
    let s = blocking(move || Ok(pos.sign_in(&body.staff_id, &body.pin)?)).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "token": s.token,
            "staff": staff_view(&s.who),
            "idle_until": rfc3339(s.idle_until_ms),
        })))
}

async fn current(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = staff(&req)?;
    Ok(HttpResponse::Ok().json(json!({
        "staff": staff_view(&who),
        "signed_in_at": rfc3339(who.started_ms),
    })))
}

async fn sign_out(state: web::Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = staff(&req)?;
    let pos = state.pos.clone();
    blocking(move || Ok(pos.sign_out(&who)?)).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn unlock(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let by = caller(&req)?;
    let id = path.into_inner();
    let pos = state.pos.clone();
    let target = id.clone();
    let was_locked = blocking(move || Ok(pos.unlock(&by, &target)?)).await?;
    Ok(
        HttpResponse::Ok()
            .json(json!({"staff_id": id, "unlocked": true, "was_locked": was_locked})),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    /// The cash put in the drawer, e.g. `"150.00"`.
    float: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    /// The cash counted in the drawer, e.g. `"412.30"`.
    counted: String,
}

fn money(m: Money) -> String {
    m.to_decimal_string()
}

fn totals_json(t: &TillTotals) -> serde_json::Value {
    let mut tenders: BTreeMap<String, String> = BTreeMap::new();
    tenders.insert("cash".into(), money(t.cash()));
    for (method, amount) in &t.tenders {
        tenders.insert(method.clone(), money(*amount));
    }
    json!({
        "sales": {
            "count": t.sales,
            "gross": money(t.gross),
            "discounts": money(t.discounts),
            "net": money(t.net),
        },
        "tenders": tenders,
        "change_given": money(t.change_given),
        "manual_adjustments": {
            "count": t.manual_adjustments,
            "total": money(t.manual_total()),
        },
        "refunds": {
            "count": t.refunds,
            "total": money(t.refunded),
            "cash": money(t.cash_refunded),
        },
    })
}

fn session_json(till: &str, s: &TillSession) -> serde_json::Value {
    let mut v = json!({
        "till": till,
        "open": true,
        "session": s.id.to_string(),
        "opened_by": s.opened_by,
        "opened_at": rfc3339(s.opened_at_ms),
        "currency": s.float.currency.code(),
        "float": money(s.float),
    });
    if let (Some(o), serde_json::Value::Object(t)) = (v.as_object_mut(), totals_json(&s.totals)) {
        o.extend(t);
    }
    v
}

fn report_json(r: &ZReport) -> serde_json::Value {
    let mut v = json!({
        "till": r.till,
        "number": r.number,
        "session": r.session.to_string(),
        "opened_by": r.opened_by,
        "opened_at": rfc3339(r.opened_at_ms),
        "closed_by": r.closed_by,
        "closed_at": rfc3339(r.closed_at_ms),
        "currency": r.float.currency.code(),
        "float": money(r.float),
        "expected_cash": money(r.expected_cash),
        "counted": money(r.counted),
        "variance": money(r.variance),
    });
    if let (Some(o), serde_json::Value::Object(t)) = (v.as_object_mut(), totals_json(&r.totals)) {
        o.extend(t);
    }
    v
}

async fn open_till(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<OpenBody>,
) -> Result<HttpResponse, ApiError> {
    let who = staff(&req)?;
    let till = path.into_inner();
    let pos = state.pos.clone();
    let t = till.clone();
    let session = blocking(move || Ok(pos.open_till(&who, &t, &body.float)?)).await?;
    Ok(HttpResponse::Created().json(session_json(&till, &session)))
}

async fn close_till(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<CloseBody>,
) -> Result<HttpResponse, ApiError> {
    let who = staff(&req)?;
    let till = path.into_inner();
    let pos = state.pos.clone();
    let report = blocking(move || Ok(pos.close_till(&who, &till, &body.counted)?)).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/api/v1/tills/{}/reports/{}", report.till, report.number),
        ))
        .json(report_json(&report)))
}

async fn till_status(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller(&req)?;
    let till = path.into_inner();
    let pos = state.pos.clone();
    let t = till.clone();
    let s: TillState = blocking(move || Ok(pos.till(&t)?)).await?;
    Ok(HttpResponse::Ok().json(match &s.open {
        Some(open) => session_json(&till, open),
        None => json!({"till": till, "open": false, "reports": s.next_report.saturating_sub(1)}),
    }))
}

async fn get_report(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller(&req)?;
    let (till, number) = path.into_inner();
    let number: u64 = number.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("Z-report '{number}' of till {till}: reports are numbered 1, 2, …"),
        )
    })?;
    let pos = state.pos.clone();
    let report = blocking(move || Ok(pos.z_report(&till, number)?)).await?;
    Ok(HttpResponse::Ok().json(report_json(&report)))
}
