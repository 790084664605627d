//! Content slots for shoppers and apps (`docs/personalization.md`): the variant of a slot for
//! the caller — who they are comes from the request's session, bearer token or anonymous id,
//! never from a parameter — with its content and the reason.

use crate::backend::SlotQuery;
use crate::context::{ChannelState, RequestContext};
use crate::error::ApiError;
use actix_web::{web, HttpResponse};
use protocol::personalization::{SlotChannel, SlotName};
use protocol::Sku;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotParams {
    /// `web`, `mobile`, `pos`, `board`, `voice`, `chat` or `email` (default: the request's
    /// channel).
    pub channel: Option<String>,
    /// The product page's SKU, for `product_recommendations`.
    pub product: Option<String>,
}

/// `GET /slots/{slot}`: `{slot, variant, position, content, reason, reason_code, experiment,
/// products}`.
pub async fn get(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    slot: web::Path<String>,
    params: web::Query<SlotParams>,
) -> Result<HttpResponse, ApiError> {
    let name = SlotName::parse(&slot).ok_or_else(|| {
        ApiError::not_found(&format!(
            "slot '{}' (slots: {})",
            slot.as_str(),
            SlotName::names()
        ))
    })?;
    let channel = match params.channel.as_deref() {
        None | Some("") => SlotChannel::of(ctx.channel).unwrap_or(SlotChannel::Web),
        Some(c) => SlotChannel::parse(c).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_channel",
                format!("channel: one of {}", SlotChannel::names()),
            )
        })?,
    };
    let catalog = state.backend.catalog();
    let product = match params.product.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let sku = Sku::parse(text)
                .ok()
                .filter(|s| catalog.product_by_sku(s).is_some())
                .ok_or_else(|| ApiError::not_found(&format!("product {text}")))?;
            Some(sku)
        }
    };
    let view = state
        .backend
        .slot(
            &ctx.shopper,
            SlotQuery {
                slot: name,
                channel,
                product,
            },
        )
        .await?;
    let products: Vec<serde_json::Value> = view
        .products
        .iter()
        .filter_map(|sku| {
            let p = catalog.product_by_sku(sku)?;
            let v = p.variant(sku)?;
            Some(json!({
                "sku": sku, "slug": p.slug, "name": p.name, "image": p.image, "price": v.price,
            }))
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "slot": view.slot,
        "variant": view.variant,
        "position": view.position,
        "content": view.content,
        "reason": view.reason,
        "reason_code": view.reason_code,
        "experiment": view.experiment,
        "products": products,
    })))
}
