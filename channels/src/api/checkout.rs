//! Checkout and order routes. The client sends an address, an email and a shipping method, never
//! an amount: the hub prices the basket, holds the stock and opens the payment; any total a client
//! sends is ignored. Checkouts and orders are reachable by their owner only (404 otherwise).

use super::baskets::parse_basket_id;
use crate::backend::CheckoutInput;
use crate::context::{ChannelState, RequestContext};
use crate::error::ApiError;
use actix_web::{web, HttpResponse};
use protocol::checkout::Address;
use protocol::{CheckoutId, OrderId};
use serde::Deserialize;

/// Body of `POST /baskets/{id}/checkout`. Unknown fields (a client's idea of the total, say) are
/// ignored: prices come from the hub alone.
#[derive(Debug, Deserialize)]
pub struct StartCheckout {
    pub email: Option<String>,
    pub address: Address,
    pub shipping_method: String,
}

/// Query of `GET /baskets/{id}/quote`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteQuery {
    pub country: String,
    pub shipping_method: Option<String>,
}

/// Query of `GET /orders/lookup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    pub number: String,
    pub key: String,
}

fn parse_checkout_id(text: &str) -> Result<CheckoutId, ApiError> {
    text.parse().map_err(|_| ApiError::not_found("checkout"))
}

fn parse_order_id(text: &str) -> Result<OrderId, ApiError> {
    text.parse().map_err(|_| ApiError::not_found("order"))
}

/// `GET /baskets/{id}/quote?country=DE[&shipping_method=standard]`: shipping options and the full
/// price, changing nothing.
pub async fn quote(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
    query: web::Query<QuoteQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_basket_id(&path)?;
    let view = state
        .backend
        .quote(
            &ctx.shopper,
            id,
            &query.country,
            query.shipping_method.as_deref(),
            ctx.channel,
        )
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /baskets/{id}/checkout`: freezes the basket, holds the stock and opens the payment;
/// answers the payment page's URL. While a payment is pending, the same checkout again.
pub async fn start(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
    body: web::Json<StartCheckout>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_basket_id(&path)?;
    let body = body.into_inner();
    let view = state
        .backend
        .start_checkout(
            &ctx.shopper,
            id,
            CheckoutInput {
                email: body.email,
                address: body.address,
                shipping_method: body.shipping_method,
            },
            ctx.channel,
        )
        .await?;
    Ok(HttpResponse::Created().json(view))
}

/// `GET /checkouts/{id}`.
pub async fn read(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_checkout_id(&path)?;
    Ok(HttpResponse::Ok().json(state.backend.checkout(&ctx.shopper, id).await?))
}

/// `POST /checkouts/{id}/cancel`: expires the payment, gives the stock back, unlocks the basket.
pub async fn cancel(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_checkout_id(&path)?;
    let view = state
        .backend
        .cancel_checkout(&ctx.shopper, id, ctx.channel)
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /checkouts/{id}/confirm`: after the payment page, asks the hub to check with the
/// provider now (the webhook does the same on its own).
pub async fn confirm(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_checkout_id(&path)?;
    let view = state.backend.return_from_payment(&ctx.shopper, id).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /orders`: the signed-in customer's orders, newest first.
pub async fn list(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let customer = ctx.shopper.customer.ok_or_else(ApiError::unauthorized)?;
    let orders = state.backend.orders(customer).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "orders": orders })))
}

/// `GET /orders/{id}`: one of the shopper's orders.
pub async fn detail(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&path)?;
    Ok(HttpResponse::Ok().json(state.backend.order(&ctx.shopper, id).await?))
}

/// `GET /orders/lookup?number=W-000001&key=…`: a guest's order by its link.
pub async fn lookup(
    state: web::Data<ChannelState>,
    query: web::Query<LookupQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        state
            .backend
            .order_by_key(&query.number, &query.key)
            .await?,
    ))
}
