//! Order pages: one order by its lookup link (`/orders/{number}?key=…`, which is also the
//! confirmation page after paying, and a guest's only way back to the order) and a signed-in
//! customer's order history.

use super::format::{country_name, encode_component, format_date};
use super::page::{PageError, Visitor};
use crate::backend::{BackendError, OrderView};
use crate::context::{ChannelState, RequestContext};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::{context, Value};
use protocol::order::Progress;
use protocol::EventKind;
use serde::Deserialize;

/// `?key=` of an order link.
#[derive(Debug, Default, Deserialize)]
pub struct KeyQuery {
    #[serde(default)]
    key: String,
}

/// An order as the pages show it: the view plus what reads better prepared.
fn order_context(order: &OrderView) -> Value {
    context! {
        date => format_date(order.created_at),
        country => country_name(&order.address.country),
        timeline => order
            .timeline
            .iter()
            .rev()
            .map(|t| context! {
                at => format!("{} {:02}:{:02}", format_date(t.at), t.at.hour(), t.at.minute()),
                what => t.what,
            })
            .collect::<Vec<_>>(),
        parcels => order
            .shipments
            .iter()
            .map(|s| context! {
                carrier => s.carrier,
                tracking_number => s.tracking_number,
                tracking_url => s.tracking_url.starts_with("http").then_some(&s.tracking_url),
                status => if s.exception.is_some() { "Delivery problem" } else { s.progress.label() },
                items => s.lines.iter().map(|(_, q)| u64::from(*q)).sum::<u64>(),
            })
            .collect::<Vec<_>>(),
        confirmed => order.progress == Progress::Paid
            && order.cancelled.is_none()
            && order.needs_attention.is_none()
            && order.refunds.is_empty(),
        ..Value::from_serialize(order)
    }
}

/// `GET /orders/{number}?key=…`: the order, for whoever holds its link. A wrong number or key is
/// the same 404 as a page that does not exist.
pub async fn show(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
    query: web::Query<KeyQuery>,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    let backend = visitor.state.backend.clone();
    let found = if query.key.is_empty() {
        Err(BackendError::NotFound("order"))
    } else {
        backend.order_by_key(&path, &query.key).await
    };
    let order = match found {
        Ok(order) => order,
        Err(BackendError::NotFound(_)) => {
            return visitor
                .render_missing(req.path(), PageError::not_found())
                .await
        }
        Err(e) => return Err(e.into()),
    };
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    let page = context! { order => order_context(&order) };
    visitor.render(StatusCode::OK, "order.html", page).await
}

/// `GET /account/orders`: the signed-in customer's orders, newest first.
pub async fn history(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    let Some(customer) = visitor.ctx.shopper.customer else {
        let next = encode_component(req.path());
        return Ok(visitor.redirect(&format!("/signin?next={next}")));
    };
    let orders = visitor.state.backend.orders(customer).await?;
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    let orders: Vec<Value> = orders.iter().map(order_context).collect();
    visitor
        .render(StatusCode::OK, "orders.html", context! { orders })
        .await
}
