//! Basket routes. A basket is reachable by its owner only: the signed-in customer, or whoever
//! holds the anonymous basket's token (`X-Basket-Token` header or the basket cookie, never the
//! URL). Anyone else gets 404, not 403, so ids reveal nothing.

use crate::backend::BasketCommand;
use crate::context::{ChannelState, RequestContext, BASKET_COOKIE};
use crate::error::ApiError;
use actix_web::{web, HttpResponse};
use protocol::{BasketId, Currency, Sku};
use serde::{Deserialize, Serialize};

/// Body of `POST /baskets/{id}/lines`. There is no price field: the hub prices every line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLine {
    pub sku: String,
    pub quantity: i64,
}

/// Body of `PATCH /baskets/{id}/lines/{sku}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    pub quantity: i64,
}

pub fn parse_basket_id(text: &str) -> Result<BasketId, ApiError> {
    text.parse().map_err(|_| ApiError::not_found("basket"))
}

pub fn parse_sku(text: &str) -> Result<Sku, ApiError> {
    Sku::parse(text).map_err(|e| ApiError::unprocessable("invalid_sku", e.to_string()))
}

/// `GET /basket`: the shopper's current basket, or 404 if they have none yet.
pub async fn current(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    match state.backend.current_basket(&ctx.shopper).await? {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(ApiError::not_found("basket")),
    }
}

/// Optional body of `POST /baskets`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBasket {
    /// ISO 4217 code; it must be a currency the shop sells in.
    pub currency: Option<String>,
}

/// A new anonymous basket with the token that alone reaches it.
#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    basket: &'a crate::backend::BasketView,
    token: &'a str,
}

/// Reads the optional body: empty is fine; malformed JSON is a 400, a wrong field a 422.
fn create_body(body: &[u8]) -> Result<CreateBasket, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreateBasket::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable("invalid_field", format!("invalid body: {e}"))
        } else {
            ApiError::bad_request("malformed_json", format!("malformed JSON: {e}"))
        }
    })
}

/// Checks a requested currency against the currencies the catalog is priced in.
fn check_currency(requested: &str, catalog: &protocol::CatalogSnapshot) -> Result<(), ApiError> {
    let currency = Currency::parse(requested)
        .map_err(|e| ApiError::unprocessable("unknown_currency", e.to_string()))?;
    let sold = catalog
        .products()
        .iter()
        .flat_map(|p| &p.variants)
        .any(|v| v.price.currency == currency);
    if sold {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "currency_not_sold",
            format!("the shop does not sell in {currency}: leave currency out to use the shop's currency"),
        ))
    }
}

/// `POST /baskets` (optional body `{"currency": "EUR"}`): a signed-in customer gets their one
/// basket (201, whether it was just made or not: there is only ever one); an anonymous shopper
/// who already holds a basket token gets that basket (200), anyone else a new basket and its
/// token (201, in the body and as a cookie).
pub async fn create(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(|_| {
        ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is larger than {} KiB",
                crate::error::MAX_BODY_BYTES / 1024
            ),
        )
    })?;
    if let Some(currency) = create_body(&body)?.currency {
        check_currency(&currency, &state.backend.catalog())?;
    }
    if ctx.shopper.customer.is_none() {
        if let Some(existing) = state.backend.current_basket(&ctx.shopper).await? {
            return Ok(HttpResponse::Ok().json(existing));
        }
    }
    let created = state.backend.create_basket(&ctx.shopper).await?;
    let mut res = HttpResponse::Created();
    match created.token {
        Some(token) => {
            res.cookie(state.cookie(BASKET_COOKIE, token.clone(), 30));
            Ok(res.json(Created {
                basket: &created.basket,
                token: &token,
            }))
        }
        None => Ok(res.json(created.basket)),
    }
}

pub async fn read(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_basket_id(&id)?;
    Ok(HttpResponse::Ok().json(state.backend.basket(&ctx.shopper, id).await?))
}

async fn change(
    state: &ChannelState,
    ctx: &RequestContext,
    id: &str,
    command: BasketCommand,
) -> Result<HttpResponse, ApiError> {
    let id = parse_basket_id(id)?;
    let view = state
        .backend
        .change_basket(&ctx.shopper, id, command, ctx.channel)
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

pub async fn add_line(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    id: web::Path<String>,
    body: web::Json<AddLine>,
) -> Result<HttpResponse, ApiError> {
    let sku = parse_sku(&body.sku)?;
    change(
        &state,
        &ctx,
        &id,
        BasketCommand::Add {
            sku,
            quantity: body.quantity,
        },
    )
    .await
}

pub async fn set_quantity(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<(String, String)>,
    body: web::Json<SetQuantity>,
) -> Result<HttpResponse, ApiError> {
    let sku = parse_sku(&path.1)?;
    change(
        &state,
        &ctx,
        &path.0,
        BasketCommand::SetQuantity {
            sku,
            quantity: body.quantity,
        },
    )
    .await
}

pub async fn remove_line(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let sku = parse_sku(&path.1)?;
    change(&state, &ctx, &path.0, BasketCommand::Remove { sku }).await
}

pub async fn clear(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change(&state, &ctx, &id, BasketCommand::Clear).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyCoupon {
    pub code: String,
}

/// `POST /api/v1/baskets/{id}/coupons` `{"code": "..."}`: the basket comes back priced with the
/// coupon's promotion, or a 422 that says why the code does not apply (429 after repeated
/// invalid codes).
pub async fn apply_coupon(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    id: web::Path<String>,
    body: web::Json<ApplyCoupon>,
) -> Result<HttpResponse, ApiError> {
    let command = BasketCommand::ApplyCoupon {
        code: body.into_inner().code,
        client: ctx.client.to_string(),
    };
    change(&state, &ctx, &id, command).await
}

/// `DELETE /api/v1/baskets/{id}/coupons/{code}`.
pub async fn remove_coupon(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let code = path.1.clone();
    change(&state, &ctx, &path.0, BasketCommand::RemoveCoupon { code }).await
}
