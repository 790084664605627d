//! The click-and-collect API of the node (`docs/click-and-collect.md`), for a signed-in staff
//! member (a staff session token as `Authorization: Bearer`; the node's machine token may read
//! the pick list but not pick or hand over):
//!
//! - `GET /api/v1/pickups[?closed=20]`: the pick list, oldest first, then the last collected or
//!   cancelled ones.
//! - `GET /api/v1/pickups/{order}`: one order, by id or number.
//! - `POST /api/v1/pickups/{order}/pick` `{"short": [{"sku", "quantity"}]}`: picked (ready for
//!   pickup); `short` lists what the clerk could not find (the hub flags the order).
//! - `POST /api/v1/pickups/{order}/handover`: handed to the shopper (collected).
//!
//! Every step works offline; the hub hears of it when the link is back.

use super::{Caller, PosError, SignedIn};
use crate::api::{blocking, rfc3339, ApiError, ApiState};
use crate::store::Pickup;
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use protocol::Sku;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Registers the routes (inside `/api/v1`).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/pickups", web::get().to(list))
        .route("/pickups/{order}", web::get().to(get))
        .route("/pickups/{order}/pick", web::post().to(pick))
        .route("/pickups/{order}/handover", web::post().to(hand_over));
}

fn caller(req: &HttpRequest) -> Result<Caller, ApiError> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a staff session token as Authorization: Bearer",
        )
    })
}

/// Picking and handing over are a person's acts: a staff session, not the node's token.
fn staff(req: &HttpRequest) -> Result<SignedIn, ApiError> {
    match caller(req)? {
        Caller::Staff(who) => Ok(who),
        Caller::Node => Err(PosError::Forbidden(
            "picking and handing over need a staff member: sign in with POST /api/v1/staff/sessions {staff_id, pin} and send the session token".into(),
        )
        .into()),
    }
}

/// A pickup as the API shows it.
pub(crate) fn view(p: &Pickup) -> serde_json::Value {
    let status = if p.cancelled.is_some() {
        "cancelled"
    } else {
        p.state.as_str()
    };
    json!({
        "order": p.order.order.to_string(),
        "number": p.order.number,
        "customer_name": p.order.customer_name,
        "status": status,
        "lines": p.order.lines.iter().map(|l| json!({
            "sku": l.sku,
            "name": l.name,
            "quantity": l.quantity,
            "short": p.short.get(&l.sku).copied().unwrap_or(0),
        })).collect::<Vec<_>>(),
        "cancelled": p.cancelled,
        "received_at": rfc3339(p.received_ms),
        "picked_by": p.picked_by,
        "picked_at": p.picked_ms.map(rfc3339),
        "handed_over_by": p.handed_over_by,
        "handed_over_at": p.handed_over_ms.map(rfc3339),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    closed: Option<usize>,
}

async fn list(
    state: web::Data<ApiState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller(&req)?;
    let closed = query.closed.unwrap_or(20);
    if closed > 200 {
        return Err(ApiError::bad_request(
            "bad_query",
            "closed is at most 200 (the collected or cancelled orders listed after the pick list)",
        ));
    }
    let store = state.store.clone();
    let list = blocking(move || Ok(store.pickups(closed)?)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "pickups": list.iter().map(view).collect::<Vec<_>>(),
        "open": list.iter().filter(|p| p.is_open()).count(),
    })))
}

async fn get(
    state: web::Data<ApiState>,
    req: HttpRequest,
    order: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller(&req)?;
    let store = state.store.clone();
    let p = blocking(move || Ok(store.pickup(&order)?)).await?;
    Ok(HttpResponse::Ok().json(view(&p)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShortLine {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PickBody {
    #[serde(default)]
    short: Vec<ShortLine>,
}

/// The short lines of a pick, checked (a SKU at most once).
pub(crate) fn short_map(lines: &[ShortLine]) -> Result<BTreeMap<Sku, u32>, ApiError> {
    let mut short = BTreeMap::new();
    for l in lines {
        let sku = Sku::parse(l.sku.trim()).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_short",
                e.to_string(),
            )
        })?;
        if short.insert(sku.clone(), l.quantity).is_some() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_short",
                format!("{sku} is listed twice in short: give each SKU once"),
            ));
        }
    }
    Ok(short)
}

async fn pick(
    state: web::Data<ApiState>,
    req: HttpRequest,
    order: web::Path<String>,
    body: Option<web::Json<PickBody>>,
) -> Result<HttpResponse, ApiError> {
    let who = staff(&req)?;
    let body = body.map(web::Json::into_inner).unwrap_or_default();
    let short = short_map(&body.short)?;
    let store = state.store.clone();
    let p = blocking(move || Ok(store.pick(&order, &short, Some(who.id))?)).await?;
    Ok(HttpResponse::Ok().json(view(&p)))
}

async fn hand_over(
    state: web::Data<ApiState>,
    req: HttpRequest,
    order: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let who = staff(&req)?;
    let store = state.store.clone();
    let p = blocking(move || Ok(store.hand_over(&order, Some(who.id))?)).await?;
    Ok(HttpResponse::Ok().json(view(&p)))
}
