//! Personalization slots (marketers edit, analysts and admins read): every slot with its
//! variants (segments, channels, time window, content), a slot's editor (its JSON, checked by
//! the same parser as `PUT /api/v1/admin/slots/{slot}`: every problem is shown with its JSON
//! path and nothing is saved), removal, and a preview of which variant a customer or a shopper
//! of some segments gets on a channel, and why (the live resolution code,
//! [`crate::personalization::Personalization::preview`]). Changes are audited with before and
//! after by the personalization module.

use super::{BackOfficeSession, CsrfOnly, Flash, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use crate::personalization::SlotError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use protocol::personalization::{SlotChannel, SlotName, SlotSpec};
use protocol::{CustomerId, Sku, Subject};
use serde::{Deserialize, Serialize};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/slots").route(web::get().to(list)))
        .service(
            super::page("/backoffice/slots/{slot}")
                .route(web::get().to(show))
                .route(web::post().to(save)),
        )
        .service(super::page("/backoffice/slots/{slot}/delete").route(web::post().to(delete)));
}

fn can_edit(session: &BackOfficeSession) -> bool {
    policy::Marketing::ROLES
        .iter()
        .any(|r| session.user().has(*r))
}

fn slot_name(text: &str) -> Result<SlotName, PageFailure> {
    SlotName::parse(text).ok_or_else(|| PageFailure::not_found("slot"))
}

/// A slot's spec as the editor shows it: the API's input shape (content without its `kind`,
/// which is the slot's; no empty optional fields).
pub(super) fn editable(spec: &SlotSpec) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                for v in map.values_mut() {
                    strip(v);
                }
            }
            serde_json::Value::Array(list) => list.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(spec).unwrap_or_default();
    if let Some(d) = value.get_mut("default").and_then(|d| d.as_object_mut()) {
        d.remove("kind");
    }
    if let Some(list) = value.get_mut("variants").and_then(|v| v.as_array_mut()) {
        for v in list {
            if let Some(c) = v.get_mut("content").and_then(|c| c.as_object_mut()) {
                c.remove("kind");
            }
        }
    }
    strip(&mut value);
    value
}

/// A starting point for a slot nobody configured yet.
fn example(slot: SlotName) -> serde_json::Value {
    use serde_json::json;
    match slot {
        SlotName::HomeHero => json!({
            "variants": [{"id": "coffee", "targeting": {"segments": ["coffee-lovers"], "channels": ["web", "mobile"]},
                          "content": {"title": "Freshly roasted for you", "text": "New beans every week.", "link": "/c/coffee"}}],
            "default": {"title": "Welcome", "text": "", "link": "/"}
        }),
        SlotName::ProductRecommendations => json!({
            "variants": [],
            "default": {"strategy": "bought_together", "count": 4}
        }),
        SlotName::BoardItem => json!({
            "variants": [],
            "default": {"id": "welcome", "title": "Welcome to the store"}
        }),
        SlotName::EmailBlock => json!({
            "variants": [],
            "default": {"title": "News from the shop", "text": ""}
        }),
    }
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::MarketingReports::ROLES)?;
    let rows: Vec<minijinja::Value> = SlotName::ALL
        .iter()
        .map(|name| {
            let record = handle.personalization.slot(*name);
            context! { name => name.as_str(), record }
        })
        .collect();
    pages.render(
        &req,
        &session,
        "slots.html",
        context! { slots => rows, can_edit => can_edit(&session) },
    )
}

/// The preview's question (a GET form on the slot's page).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct PreviewQuery {
    /// Segment keys, separated by commas or spaces.
    #[serde(default)]
    segments: Option<String>,
    /// A customer id: their own segments are used.
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    product: Option<String>,
}

/// A preview's answer or its problem, for the page.
#[derive(Default, Serialize)]
struct PreviewOutcome {
    asked: bool,
    error: Option<String>,
    view: Option<channels::backend::SlotView>,
    segments: Vec<String>,
}

pub(super) fn segment_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn run_preview(
    handle: &HubHandle,
    slot: SlotName,
    q: &PreviewQuery,
) -> Result<PreviewOutcome, PageFailure> {
    let asked = q.segments.is_some() || q.customer.is_some() || q.channel.is_some();
    if !asked {
        return Ok(PreviewOutcome::default());
    }
    let fail = |error: String| {
        Ok(PreviewOutcome {
            asked: true,
            error: Some(error),
            ..PreviewOutcome::default()
        })
    };
    let channel_text = q.channel.as_deref().unwrap_or("web");
    let Some(channel) = SlotChannel::parse(channel_text) else {
        return fail(format!("channel: one of {}", SlotChannel::names()));
    };
    let product = match q
        .product
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(p) => match Sku::parse(p) {
            Ok(sku) => Some(sku),
            Err(e) => return fail(format!("product: {e}")),
        },
    };
    let customer = q
        .customer
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let segments = match customer {
        Some(text) => match text.parse::<CustomerId>() {
            Ok(c) => {
                handle
                    .personalization
                    .segments_of(Subject::Customer(c))
                    .await?
            }
            Err(_) => {
                return fail(format!(
                    "customer: '{text}' is not a customer id (a ULID, 26 characters)"
                ))
            }
        },
        None => segment_list(q.segments.as_deref().unwrap_or("")),
    };
    match handle
        .personalization
        .preview(
            slot,
            &segments,
            &std::collections::BTreeMap::new(),
            channel,
            product.as_ref(),
        )
        .await
    {
        Ok(view) => Ok(PreviewOutcome {
            asked: true,
            error: None,
            view: Some(view),
            segments,
        }),
        Err(SlotError::NotConfigured(_)) => fail(format!(
            "slot {} is not configured and has no built-in default: the page shows its own content",
            slot.as_str()
        )),
        Err(SlotError::Storage(e)) => Err(e.into()),
        Err(SlotError::Backoffice(e)) => Err(e.into()),
        Err(SlotError::Invalid(_)) => fail("the slot is not valid".into()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn render(
    pages: &Pages,
    req: &HttpRequest,
    handle: &HubHandle,
    session: &BackOfficeSession,
    status: StatusCode,
    slot: SlotName,
    spec_text: String,
    errors: &[String],
    query: &PreviewQuery,
) -> Result<HttpResponse, PageFailure> {
    let record = handle.personalization.slot(slot);
    let preview = run_preview(handle, slot, query).await?;
    pages.render_status(
        req,
        Some(session),
        status,
        "slot.html",
        context! {
            slot => slot.as_str(),
            record,
            spec => spec_text,
            errors,
            can_edit => can_edit(session),
            channels => SlotChannel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            query,
            preview,
        },
        Vec::new(),
    )
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    path: web::Path<String>,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::MarketingReports::ROLES)?;
    let slot = slot_name(&path)?;
    let spec = match handle.personalization.slot(slot) {
        Some(r) => editable(&r.spec),
        None => example(slot),
    };
    let text = serde_json::to_string_pretty(&spec).unwrap_or_default();
    render(
        &pages,
        &req,
        &handle,
        &session,
        StatusCode::OK,
        slot,
        text,
        &[],
        &query,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct SlotForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    spec: String,
}

async fn save(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    path: web::Path<String>,
    form: web::Form<SlotForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let slot = slot_name(&path)?;
    let outcome: Result<HttpResponse, Vec<String>> =
        match serde_json::from_str::<serde_json::Value>(&form.spec) {
            Err(e) => Err(vec![format!(
                "(the whole text): not valid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            )]),
            Ok(body) => match handle
                .personalization
                .put(&session.actor(), slot, &body)
                .await
            {
                Ok(record) => Ok(pages.redirect(
                    &format!("/backoffice/slots/{}", slot.as_str()),
                    Flash::success(format!(
                        "Slot {} saved (version {}); shoppers get it from now on.",
                        slot.as_str(),
                        record.version
                    )),
                )),
                Err(SlotError::Invalid(fields)) => Err(fields
                    .iter()
                    .map(|f| {
                        let path = if f.field.is_empty() {
                            "(the whole text)"
                        } else {
                            f.field.as_str()
                        };
                        format!("{path}: {}", f.message)
                    })
                    .collect()),
                Err(SlotError::Backoffice(e)) => return Err(e.into()),
                Err(SlotError::Storage(e)) => return Err(e.into()),
                Err(SlotError::NotConfigured(_)) => return Err(PageFailure::not_found("slot")),
            },
        };
    match outcome {
        Ok(res) => Ok(res),
        Err(errors) => {
            render(
                &pages,
                &req,
                &handle,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                slot,
                form.spec.clone(),
                &errors,
                &PreviewQuery::default(),
            )
            .await
        }
    }
}

async fn delete(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    path: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let slot = slot_name(&path)?;
    match handle.personalization.delete(&session.actor(), slot).await {
        Ok(()) => Ok(pages.redirect(
            "/backoffice/slots",
            Flash::success(format!(
                "Slot {} removed: its built-in behaviour is back.",
                slot.as_str()
            )),
        )),
        Err(SlotError::Backoffice(crate::backoffice::BackofficeError::NotFound(_))) => Ok(pages
            .redirect(
                "/backoffice/slots",
                Flash::error(format!("Slot {} is not configured.", slot.as_str())),
            )),
        Err(SlotError::Backoffice(e)) => Err(e.into()),
        Err(SlotError::Storage(e)) => Err(e.into()),
        Err(other) => Err(PageFailure::new(
            StatusCode::CONFLICT,
            "That could not be done",
            other.to_string(),
        )),
    }
}
