//! The personalization admin API (back-office tokens, or the admin token):
//!
//! - `GET /api/v1/admin/slots`, `GET /api/v1/admin/slots/{slot}`: roles marketer, admin or
//!   analyst.
//! - `PUT /api/v1/admin/slots/{slot}`, `DELETE /api/v1/admin/slots/{slot}`: roles marketer or
//!   admin; audited.
//! - `POST /api/v1/admin/slots/{slot}/preview` `{"segments": [...], "channel": "web",
//!   "product": "<sku>"?}`: which variant a shopper of those segments gets, and why (readers).
//! - `GET /api/v1/admin/recommendations/{sku}`: both lists with their counts (readers).

use super::{Personalization, SlotError};
use crate::admin::AdminAccess;
use crate::app::HubHandle;
use crate::backoffice::audit::Actor;
use crate::backoffice::{BackOfficeUser, Role};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use channels::error::ApiError;
use channels::Backend;
use protocol::personalization::{Relation, SlotChannel, SlotName};
use protocol::Sku;
use serde::Deserialize;
use serde_json::json;

/// Who changes slots.
const WRITERS: &[Role] = &[Role::Marketer, Role::Admin];
/// Who reads them.
const READERS: &[Role] = &[Role::Marketer, Role::Admin, Role::Analyst];

/// Mounts the routes (before the `/api/v1/admin` scope).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/admin/slots")
            .app_data(channels::error::json_config())
            .app_data(channels::error::path_config())
            .route("", web::get().to(list))
            .route("/{slot}", web::get().to(show))
            .route("/{slot}", web::put().to(put))
            .route("/{slot}", web::delete().to(delete))
            .route("/{slot}/preview", web::post().to(preview))
            .default_service(web::to(channels::error::api_not_found)),
    )
    .route(
        "/api/v1/admin/recommendations/{sku}",
        web::get().to(recommendations),
    );
}

/// The caller with one of `roles`: the admin token, or a back-office user holding one.
async fn caller(req: &HttpRequest, roles: &[Role]) -> Result<Actor, ApiError> {
    let admin_token = req
        .app_data::<web::Data<AdminAccess>>()
        .and_then(|a| a.token.clone());
    if admin_token.is_some_and(|t| crate::auth::bearer_matches(req, &t)) {
        return Ok(Actor::AdminToken);
    }
    let user = BackOfficeUser::extract(req).await?;
    user.require_any(roles)?;
    Ok(Actor::User(user))
}

fn slot_name(text: &str) -> Result<SlotName, ApiError> {
    SlotName::parse(text).ok_or_else(|| {
        ApiError::not_found(&format!("slot '{text}' (slots: {})", SlotName::names()))
    })
}

impl From<SlotError> for ApiError {
    fn from(e: SlotError) -> ApiError {
        match e {
            SlotError::Invalid(fields) => {
                let message = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError::unprocessable("invalid_slot", format!("fix the slot: {message}"))
                    .with_details(json!({ "fields": fields }))
            }
            SlotError::NotConfigured(slot) => ApiError::new(
                StatusCode::NOT_FOUND,
                "slot_not_configured",
                format!("slot {slot} is not configured: PUT /api/v1/admin/slots/{slot} first"),
            ),
            SlotError::Backoffice(e) => e.into(),
            SlotError::Storage(e) => crate::backoffice::BackofficeError::Storage(e).into(),
        }
    }
}

async fn list(req: HttpRequest, handle: web::Data<HubHandle>) -> Result<HttpResponse, ApiError> {
    caller(&req, READERS).await?;
    Ok(HttpResponse::Ok().json(json!({
        "slots": handle.personalization.slots(),
        "names": SlotName::ALL,
    })))
}

async fn show(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller(&req, READERS).await?;
    let slot = slot_name(&path)?;
    let record = handle
        .personalization
        .slot(slot)
        .ok_or(SlotError::NotConfigured(slot.as_str()))?;
    Ok(HttpResponse::Ok().json(record))
}

async fn put(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, WRITERS).await?;
    let slot = slot_name(&path)?;
    let record = handle.personalization.put(&actor, slot, &body).await?;
    let status = if record.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(record))
}

async fn delete(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, WRITERS).await?;
    let slot = slot_name(&path)?;
    handle.personalization.delete(&actor, slot).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    #[serde(default)]
    segments: Vec<String>,
    channel: String,
    #[serde(default)]
    product: Option<String>,
    /// Experiment variants to see as, by experiment key.
    #[serde(default)]
    experiments: std::collections::BTreeMap<String, String>,
}

async fn preview(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
    body: web::Json<PreviewBody>,
) -> Result<HttpResponse, ApiError> {
    caller(&req, READERS).await?;
    let slot = slot_name(&path)?;
    let body = body.into_inner();
    let channel = SlotChannel::parse(&body.channel).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_channel",
            format!("channel: one of {}", SlotChannel::names()),
        )
    })?;
    let product = body.product.as_deref().map(sku).transpose()?;
    let p: &Personalization = &handle.personalization;
    let view = p
        .preview(
            slot,
            &body.segments,
            &body.experiments,
            channel,
            product.as_ref(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

fn sku(text: &str) -> Result<Sku, ApiError> {
    Sku::parse(text).map_err(|e| ApiError::unprocessable("invalid_sku", e.to_string()))
}

async fn recommendations(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller(&req, READERS).await?;
    let sku = Sku::parse(&path).map_err(|_| ApiError::not_found(&format!("SKU {path}")))?;
    if handle.backend.catalog().product_by_sku(&sku).is_none() {
        return Err(ApiError::not_found(&format!("SKU {sku}")));
    }
    let mut body = serde_json::Map::new();
    body.insert("sku".into(), json!(sku));
    for relation in Relation::ALL {
        let list = handle
            .personalization
            .neighbours(relation, &sku)
            .map_err(SlotError::Storage)?;
        body.insert(relation.as_str().into(), json!(list));
    }
    Ok(HttpResponse::Ok().json(body))
}
