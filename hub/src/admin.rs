//! The admin API (`/api/v1/admin/*`): orders, refunds and cancellations, stock counts. Each route
//! names the roles it serves (`crate::backoffice::access::policy`); the configured admin token
//! opens all of them. Changes are written to the back office's audit list.

use crate::app::HubHandle;
use crate::backoffice::access::{policy, Staff};
use actix_web::{web, HttpRequest, HttpResponse};
use channels::error::ApiError;
use channels::Backend;
use protocol::order::OrderRecord;
use protocol::{Money, OrderId};
use serde::Deserialize;
use serde_json::json;

/// The admin token (unset: only back-office users reach the admin API).
pub struct AdminAccess {
    pub token: Option<secrecy::SecretString>,
}

/// The admin token, or a back-office user with role admin. Routes meant for a wider audience
/// name their policy instead (`Staff<policy::Orders>`, see `crate::backoffice::access`).
pub type AdminAuthorized = Staff<policy::Admin>;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let scope = crate::edge::admin::routes(web::scope("/api/v1/admin"));
    cfg.service(
        scope
            .route("/orders", web::get().to(list))
            .route("/orders/{id}", web::get().to(show))
            .route("/orders/{id}/refunds", web::post().to(refund))
            .route("/orders/{id}/cancel", web::post().to(cancel))
            .route("/stock/{sku}", web::get().to(stock))
            .route("/stock/{sku}", web::put().to(set_stock))
            .default_service(web::to(channels::error::api_not_found)),
    );
}

pub(crate) fn admin_view(o: &OrderRecord) -> serde_json::Value {
    json!({
        "id": o.id,
        "number": o.number,
        "status": o.status(),
        "progress": o.progress,
        "created_at": o.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "customer": o.customer,
        "email": o.email,
        "channel": o.channel,
        "address": o.address,
        "breakdown": o.breakdown,
        "payment": {
            "provider": o.payment.provider,
            "session_id": o.payment.session_id,
            "payment_intent": o.payment.payment_intent,
            "amount": o.payment.amount,
            "refunded": o.payment.refunded(),
            "refundable": o.payment.refundable(),
            "refunds": o.payment.refunds,
        },
        "cancelled": o.cancelled,
        "needs_attention": o.needs_attention,
        "refund_due": o.refund_due,
        "checkout": o.checkout,
        "oms_id": o.oms_id,
        "shipments": o.shipments,
        "timeline": o.timeline,
        "returned": o.returned,
        "pickup": o.pickup,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    before: Option<String>,
    limit: Option<usize>,
}

async fn list(
    _: Staff<policy::Orders>,
    handle: web::Data<HubHandle>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let before = match &query.before {
        Some(b) => Some(b.parse::<OrderId>().map_err(|_| {
            ApiError::bad_request(
                "bad_cursor",
                "before must be an order id from a previous page",
            )
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let orders = handle.backend.admin_orders(before, limit).await?;
    let next = (orders.len() == limit)
        .then(|| orders.last().map(|o| o.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "orders": orders.iter().map(admin_view).collect::<Vec<_>>(),
        "next": next,
    })))
}

async fn show(
    _: Staff<policy::Orders>,
    handle: web::Data<HubHandle>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = handle.backend.admin_order(&id).await?;
    Ok(HttpResponse::Ok().json(admin_view(&order)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    /// Decimal in the order's currency, e.g. `"5.00"`; absent: everything still refundable.
    amount: Option<String>,
    reason: Option<String>,
}

fn idempotency_key(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(|k| k.chars().take(200).collect())
}

async fn refund(
    staff: Staff<policy::Orders>,
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    id: web::Path<String>,
    body: web::Json<RefundBody>,
) -> Result<HttpResponse, ApiError> {
    let order = handle.backend.admin_order(&id).await?;
    let currency = order.payment.amount.currency;
    let amount = match &body.amount {
        Some(text) => {
            let m = Money::parse_decimal(text, currency).map_err(|e| {
                ApiError::unprocessable(
                    "invalid_amount",
                    format!("amount must be a decimal in {currency}, like \"5.00\": {e}"),
                )
            })?;
            if m.minor <= 0 {
                return Err(ApiError::unprocessable(
                    "invalid_amount",
                    "amount must be more than zero",
                ));
            }
            Some(m)
        }
        None => None,
    };
    let reason = body
        .reason
        .clone()
        .unwrap_or_else(|| "refund".into())
        .chars()
        .take(200)
        .collect();
    let after = handle
        .backend
        .admin_refund(&order, amount, reason, false, idempotency_key(&req))
        .await?;
    audit_order(&handle, &staff, "order.refund", &order, &after).await;
    Ok(HttpResponse::Ok().json(admin_view(&after)))
}

/// Records a refund or cancellation in the audit list.
async fn audit_order(
    handle: &HubHandle,
    staff: &Staff<policy::Orders>,
    action: &str,
    before: &OrderRecord,
    after: &OrderRecord,
) {
    let subject = format!("order/{}", after.number);
    let (before, after) = (audit_view(before), audit_view(after));
    staff
        .audit(
            &handle.backoffice,
            action,
            subject,
            Some(&before),
            Some(&after),
        )
        .await;
}

/// What the audit list keeps of an order: its state and money, not the shopper's address.
pub(crate) fn audit_view(o: &OrderRecord) -> serde_json::Value {
    json!({
        "id": o.id,
        "number": o.number,
        "status": o.status(),
        "cancelled": o.cancelled,
        "refunded": o.payment.refunded(),
        "refundable": o.payment.refundable(),
        "refund_due": o.refund_due,
        "needs_attention": o.needs_attention,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

async fn cancel(
    staff: Staff<policy::Orders>,
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    id: web::Path<String>,
    body: Option<web::Json<CancelBody>>,
) -> Result<HttpResponse, ApiError> {
    let order = handle.backend.admin_order(&id).await?;
    let reason = body
        .and_then(|b| b.reason.clone())
        .unwrap_or_else(|| "cancelled by the shop".into())
        .chars()
        .take(200)
        .collect();
    let after = handle
        .backend
        .admin_refund(&order, None, reason, true, idempotency_key(&req))
        .await?;
    audit_order(&handle, &staff, "order.cancel", &order, &after).await;
    Ok(HttpResponse::Ok().json(admin_view(&after)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationQuery {
    location: Option<String>,
}

/// The SKU and location of a stock request: `online` (the default) or a store location owned by
/// a configured edge node.
fn parse_stock_target(
    handle: &HubHandle,
    sku: &str,
    location: Option<&str>,
) -> Result<(protocol::Sku, protocol::LocationId), ApiError> {
    let sku = protocol::Sku::parse(sku)
        .map_err(|e| ApiError::unprocessable("invalid_sku", e.to_string()))?;
    let location = match location {
        None | Some("online") => protocol::LocationId::online(),
        Some(store)
            if handle
                .edge
                .nodes()
                .is_store(&protocol::LocationId(store.into())) =>
        {
            protocol::LocationId(store.into())
        }
        Some(other) => {
            return Err(ApiError::unprocessable(
                "unknown_location",
                format!("location '{other}' is not known to the hub; stores come with edge nodes"),
            ))
        }
    };
    Ok((sku, location))
}

fn level_json(level: &protocol::StockLevel) -> serde_json::Value {
    json!({
        "sku": level.sku,
        "location": level.location.0,
        "on_hand": level.on_hand,
        "held": level.held,
        "available": level.available_to_promise(),
    })
}

/// `GET /api/v1/admin/stock/{sku}`: on hand, held for checkouts, and available to promise.
async fn stock(
    _: Staff<policy::Stock>,
    handle: web::Data<HubHandle>,
    sku: web::Path<String>,
    query: web::Query<LocationQuery>,
) -> Result<HttpResponse, ApiError> {
    let (sku, location) = parse_stock_target(&handle, &sku, query.location.as_deref())?;
    if handle.backend.catalog().product_by_sku(&sku).is_none() {
        return Err(ApiError::not_found("product with this SKU"));
    }
    let level = handle
        .inventory
        .level(&location, &sku)
        .unwrap_or(protocol::StockLevel {
            sku,
            location,
            on_hand: 0,
            held: 0,
        });
    Ok(HttpResponse::Ok().json(level_json(&level)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStock {
    /// Units physically there (a count). What is held for checkouts stays held.
    on_hand: i64,
    location: Option<String>,
}

/// `PUT /api/v1/admin/stock/{sku}`: records a stock count (the ERP import does this in bulk).
/// A count for a store location is not applied here: it is queued as a command to the store's
/// edge node, which alone creates that location's sell rights (`202` with the command id).
async fn set_stock(
    staff: Staff<policy::Stock>,
    handle: web::Data<HubHandle>,
    sku: web::Path<String>,
    body: web::Json<SetStock>,
) -> Result<HttpResponse, ApiError> {
    let (sku, location) = parse_stock_target(&handle, &sku, body.location.as_deref())?;
    if handle.backend.catalog().product_by_sku(&sku).is_none() {
        return Err(ApiError::not_found("product with this SKU"));
    }
    if !(0..=1_000_000_000).contains(&body.on_hand) {
        return Err(ApiError::unprocessable(
            "invalid_quantity",
            "on_hand is a count of units: 0 to 1,000,000,000",
        ));
    }
    let before = handle
        .inventory
        .level(&location, &sku)
        .map(|l| level_json(&l));
    if location != protocol::LocationId::online() {
        let forwarded =
            crate::edge::forward_count(&handle.edge, sku.clone(), location, body.on_hand)
                .await
                .map_err(crate::edge::admin::api_error)?;
        let queued = json!({
            "status": "queued",
            "command": forwarded.command,
            "node": forwarded.node,
            "location": forwarded.location.0,
            "on_hand": body.on_hand,
        });
        audit_stock(&handle, &staff, &sku, before.as_ref(), &queued).await;
        return Ok(HttpResponse::Accepted().json(queued));
    }
    handle
        .inventory
        .set(vec![protocol::StockLevel {
            sku: sku.clone(),
            location: location.clone(),
            on_hand: body.on_hand,
            held: 0,
        }])
        .await
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?;
    let level = handle
        .inventory
        .level(&location, &sku)
        .ok_or_else(|| ApiError::not_found("stock level"))?;
    let after = level_json(&level);
    audit_stock(&handle, &staff, &sku, before.as_ref(), &after).await;
    Ok(HttpResponse::Ok().json(after))
}

async fn audit_stock(
    handle: &HubHandle,
    staff: &Staff<policy::Stock>,
    sku: &protocol::Sku,
    before: Option<&serde_json::Value>,
    after: &serde_json::Value,
) {
    staff
        .audit(
            &handle.backoffice,
            "stock.count",
            format!("stock/{sku}"),
            before,
            Some(after),
        )
        .await;
}
