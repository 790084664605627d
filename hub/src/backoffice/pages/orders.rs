//! Orders: the newest first or one found by number or email, an order's detail, and refund or
//! cancel with a confirmation (roles of `policy::Orders`: support and admin).

use super::{BackOfficeSession, Flash, PageFailure, Pages};
use crate::admin::admin_view;
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use crate::backoffice::audit::Change;
use crate::backoffice::Backoffice;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use protocol::order::OrderRecord;
use protocol::{Money, OrderId};
use serde::Deserialize;

/// How many recent orders an email search looks through.
const EMAIL_SEARCH_DEPTH: usize = 500;
const PAGE: usize = 25;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/orders").route(web::get().to(list)))
        .service(super::page("/backoffice/orders/{id}").route(web::get().to(show)))
        .service(super::page("/backoffice/orders/{id}/refund").route(web::post().to(refund)))
        .service(super::page("/backoffice/orders/{id}/cancel").route(web::post().to(cancel)));
}

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    before: Option<String>,
}

fn row(o: &OrderRecord) -> serde_json::Value {
    serde_json::json!({
        "id": o.id,
        "number": o.number,
        "status": o.status(),
        "created_at": o.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "email": o.email,
        "channel": o.channel,
        "total": o.breakdown.total,
        "refunded": o.payment.refunded(),
        "needs_attention": o.needs_attention.is_some(),
    })
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Orders::ROLES)?;
    let q = query.q.as_deref().map(str::trim).unwrap_or("");
    let (orders, next) = if q.is_empty() {
        let before = query
            .before
            .as_deref()
            .and_then(|b| b.parse::<OrderId>().ok());
        let orders = handle.backend.admin_orders(before, PAGE).await?;
        let next = (orders.len() == PAGE)
            .then(|| orders.last().map(|o| o.id.to_string()))
            .flatten();
        (orders, next)
    } else if q.contains('@') {
        let needle = q.to_lowercase();
        let recent = handle
            .backend
            .admin_orders(None, EMAIL_SEARCH_DEPTH)
            .await?;
        let found = recent
            .into_iter()
            .filter(|o| o.email.to_lowercase().contains(&needle))
            .take(PAGE)
            .collect();
        (found, None)
    } else {
        match handle.backend.admin_order(q).await {
            Ok(o) => (vec![o], None),
            Err(channels::BackendError::NotFound(_)) => (Vec::new(), None),
            Err(e) => return Err(e.into()),
        }
    };
    pages.render(
        &req,
        &session,
        "orders.html",
        context! {
            q => q,
            orders => orders.iter().map(row).collect::<Vec<_>>(),
            next => next,
            email_depth => EMAIL_SEARCH_DEPTH,
        },
    )
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    id: web::Path<String>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Orders::ROLES)?;
    let order = handle.backend.admin_order(&id).await?;
    pages.render(
        &req,
        &session,
        "order.html",
        context! { order => admin_view(&order) },
    )
}

#[derive(Deserialize)]
pub struct RefundForm {
    csrf: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

async fn refund(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
    form: web::Form<RefundForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Orders::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let order = handle.backend.admin_order(&id).await?;
    let back = format!("/backoffice/orders/{}", order.number);
    let amount = match form.amount.trim() {
        "" => None,
        text => match Money::parse_decimal(text, order.payment.amount.currency) {
            Ok(m) if m.minor > 0 => Some(m),
            _ => {
                return Ok(pages.redirect(
                    &back,
                    Flash::error(format!(
                        "The amount must be more than zero, in {}, like 5.00.",
                        order.payment.amount.currency
                    )),
                ))
            }
        },
    };
    let reason = reason_or(&form.reason, "refund");
    change(
        &pages, &handle, &bo, &session, &order, amount, reason, false,
    )
    .await
}

async fn cancel(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
    form: web::Form<RefundForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Orders::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let order = handle.backend.admin_order(&id).await?;
    let reason = reason_or(&form.reason, "cancelled by the shop");
    change(&pages, &handle, &bo, &session, &order, None, reason, true).await
}

fn reason_or(typed: &str, default: &str) -> String {
    let typed = typed.trim();
    let reason = if typed.is_empty() { default } else { typed };
    reason.chars().take(200).collect()
}

/// Refunds or cancels through the order's actor (as the API does), audits, and goes back to
/// the order with what happened.
#[allow(clippy::too_many_arguments)]
async fn change(
    pages: &Pages,
    handle: &HubHandle,
    bo: &Backoffice,
    session: &BackOfficeSession,
    order: &OrderRecord,
    amount: Option<Money>,
    reason: String,
    cancel: bool,
) -> Result<HttpResponse, PageFailure> {
    let back = format!("/backoffice/orders/{}", order.number);
    let outcome = handle
        .backend
        .admin_refund(order, amount, reason, cancel, None)
        .await;
    let after = match outcome {
        Ok(after) => after,
        Err(channels::BackendError::Unavailable(detail)) => {
            tracing::error!(%detail, "refund failed");
            return Err(PageFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The payment provider did not answer",
                "Nothing was refunded yet. Try again in a moment.",
            ));
        }
        Err(e) => return Ok(pages.redirect(&back, Flash::error(e.to_string()))),
    };
    let action = if cancel {
        "order.cancel"
    } else {
        "order.refund"
    };
    let actor = session.actor();
    let change = Change {
        actor: &actor,
        action,
        subject: format!("order/{}", after.number),
        before: Some(&crate::admin::audit_view(order)),
        after: Some(&crate::admin::audit_view(&after)),
    };
    if let Err(e) = bo.record(change).await {
        tracing::error!(error = %e, order = %after.id, "audit entry not written");
    }
    let done = if cancel {
        format!("Order {} is cancelled.", after.number)
    } else {
        format!(
            "Refunded {} of order {}.",
            super::format_money(Money::new(
                after.payment.refunded().minor - order.payment.refunded().minor,
                after.payment.amount.currency
            )),
            after.number
        )
    };
    Ok(pages.redirect(&back, Flash::success(done)))
}
