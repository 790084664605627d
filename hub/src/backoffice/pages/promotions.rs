//! Promotions and their coupons: the list by status, a draft's form (merchandisers and
//! marketers), approval by an approver who neither wrote nor edited it, ending, and coupon
//! batches with their CSV export (the API's export route, which a signed-in session may GET).

use super::{BackOfficeSession, Flash, PageFailure, Pages, PROMOTION_READERS};
use crate::backoffice::coupons::NewBatch;
use crate::backoffice::promotions::{NewPromotion, PromotionPatch, Status};
use crate::backoffice::{Backoffice, BackofficeError, Role};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use serde::Deserialize;
use time::OffsetDateTime;

/// Who drafts and edits promotions and makes coupons.
const AUTHORS: &[Role] = &[Role::Merchandiser, Role::Marketer];
/// Who may end a promotion early.
const ENDERS: &[Role] = &[Role::Approver, Role::Merchandiser, Role::Marketer];
/// Who may download a batch's codes.
const EXPORTERS: &[Role] = &[Role::Marketer, Role::Admin];

/// The spec a new draft starts from: 10 % off coffee.
const EXAMPLE_SPEC: &str = r#"{
  "benefit": {
    "type": "percent_off",
    "target": {"type": "categories", "categories": ["coffee"]},
    "percent_bp": 1000
  },
  "combination": {"type": "stackable", "group": "coffee"},
  "priority": 10
}"#;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::page("/backoffice/promotions")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(super::page("/backoffice/promotions/new").route(web::get().to(new_form)))
    .service(
        super::page("/backoffice/promotions/{id}")
            .route(web::get().to(show))
            .route(web::post().to(edit)),
    )
    .service(super::page("/backoffice/promotions/{id}/approve").route(web::post().to(approve)))
    .service(super::page("/backoffice/promotions/{id}/end").route(web::post().to(end)))
    .service(super::page("/backoffice/promotions/{id}/batches").route(web::post().to(batch)));
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(PROMOTION_READERS)?;
    let status = query.status.as_deref().and_then(Status::parse);
    let promotions = bo.promotions(status)?;
    pages.render(
        &req,
        &session,
        "promotions.html",
        context! {
            promotions => promotions,
            status => query.status.as_deref().unwrap_or(""),
            can_author => AUTHORS.iter().any(|r| session.user().has(*r)),
        },
    )
}

/// The form's fields as typed (re-shown with the errors when they do not validate).
#[derive(Debug, Default, Deserialize, serde::Serialize)]
pub struct PromotionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    spec: String,
    /// `YYYY-MM-DDTHH:MM`, UTC (a `datetime-local` input).
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    ends_at: String,
}

async fn new_form(
    req: HttpRequest,
    pages: web::Data<Pages>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(AUTHORS)?;
    let form = PromotionForm {
        spec: EXAMPLE_SPEC.to_string(),
        ..PromotionForm::default()
    };
    render_form(&pages, &req, &session, StatusCode::OK, &form, None, &[])
}

fn render_form(
    pages: &Pages,
    req: &HttpRequest,
    session: &BackOfficeSession,
    status: StatusCode,
    form: &PromotionForm,
    editing: Option<&str>,
    errors: &[String],
) -> Result<HttpResponse, PageFailure> {
    pages.render_status(
        req,
        Some(session),
        status,
        "promotion_form.html",
        context! { form => form, editing => editing, errors => errors },
        Vec::new(),
    )
}

/// A `datetime-local` value (UTC) as a time; `Ok(None)` when empty.
fn parse_local(field: &str, text: &str) -> Result<Option<OffsetDateTime>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    time::PrimitiveDateTime::parse(text, &format)
        .map(|t| Some(t.assume_utc()))
        .map_err(|_| format!("{field}: a date and time such as 2026-06-01T09:00 (UTC)"))
}

fn local(at: Option<OffsetDateTime>) -> String {
    at.and_then(|t| {
        t.format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]"
        ))
        .ok()
    })
    .unwrap_or_default()
}

/// The form's spec and window, or the messages of what to fix.
#[allow(clippy::type_complexity)]
fn parsed(
    form: &PromotionForm,
) -> Result<
    (
        serde_json::Value,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
    ),
    Vec<String>,
> {
    let mut errors = Vec::new();
    let spec = serde_json::from_str::<serde_json::Value>(&form.spec)
        .map_err(|e| errors.push(format!("spec: not valid JSON ({e})")))
        .ok();
    let starts = parse_local("starts", &form.starts_at)
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let ends = parse_local("ends", &form.ends_at)
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    match spec {
        Some(spec) if errors.is_empty() => Ok((spec, starts, ends)),
        _ => Err(errors),
    }
}

fn invalid(e: BackofficeError) -> Result<Vec<String>, PageFailure> {
    match e {
        BackofficeError::Invalid(fields) => Ok(fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect()),
        BackofficeError::Conflict { message, .. } => Ok(vec![message]),
        other => Err(other.into()),
    }
}

async fn create(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    form: web::Form<PromotionForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(AUTHORS)?;
    session.check_form(&req, &form.csrf)?;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let (spec, starts_at, ends_at) = match parsed(&form) {
        Ok(p) => p,
        Err(errors) => {
            return render_form(&pages, &req, &session, unprocessable, &form, None, &errors)
        }
    };
    let new = NewPromotion {
        id: form.id.clone(),
        name: form.name.clone(),
        description: form.description.clone(),
        spec,
        starts_at,
        ends_at,
    };
    match bo.create_promotion(&session.actor(), new).await {
        Ok(view) => Ok(pages.redirect(
            &format!("/backoffice/promotions/{}", view.id),
            Flash::success(format!(
                "Draft {} saved. An approver who did not write it can approve it.",
                view.id
            )),
        )),
        Err(e) => {
            let errors = invalid(e)?;
            render_form(&pages, &req, &session, unprocessable, &form, None, &errors)
        }
    }
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
) -> Result<HttpResponse, PageFailure> {
    session.require(PROMOTION_READERS)?;
    let view = bo.promotion(&id)?;
    let coupons = bo.coupons(&id)?;
    let batches = bo.batches(&id)?;
    let me = session.user().id.to_string();
    let own = view_editors_include(&bo, &id, &me);
    let user = session.user();
    let draft = view.status == Status::Draft;
    let form = PromotionForm {
        id: view.id.to_string(),
        name: view.name.clone(),
        description: view.description.clone(),
        spec: serde_json::to_string_pretty(&view.spec).unwrap_or_default(),
        starts_at: local(view.starts_at),
        ends_at: local(view.ends_at),
        ..PromotionForm::default()
    };
    let live = matches!(view.status, Status::Scheduled | Status::Active);
    let ended = view.status == Status::Ended;
    pages.render(
        &req,
        &session,
        "promotion.html",
        context! {
            promotion => view,
            form => form,
            // Batch codes are private (single use): they leave only through the CSV export.
            coupons => coupons.iter().filter(|c| c.batch.is_none()).map(|c| context! {
                code => c.code.clone(),
                max_uses => c.limits.max_uses,
                max_uses_per_customer => c.limits.max_uses_per_customer,
                uses => c.uses,
            }).collect::<Vec<_>>(),
            batches => batches,
            may => context! {
                edit => draft && AUTHORS.iter().any(|r| user.has(*r)),
                approve => draft && user.has(Role::Approver),
                own => own,
                end => live && ENDERS.iter().any(|r| user.has(*r)),
                batch => !ended && AUTHORS.iter().any(|r| user.has(*r)),
                export => EXPORTERS.iter().any(|r| user.has(*r)),
            },
        },
    )
}

/// Whether the user wrote or edited the promotion (then they may not approve it).
fn view_editors_include(bo: &Backoffice, id: &str, user: &str) -> bool {
    bo.promotion_editors(id)
        .is_ok_and(|editors| editors.iter().any(|e| e == user))
}

async fn edit(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
    form: web::Form<PromotionForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(AUTHORS)?;
    session.check_form(&req, &form.csrf)?;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let (spec, starts_at, ends_at) = match parsed(&form) {
        Ok(p) => p,
        Err(errors) => {
            return render_form(
                &pages,
                &req,
                &session,
                unprocessable,
                &form,
                Some(&id),
                &errors,
            )
        }
    };
    let patch = PromotionPatch {
        name: Some(form.name.clone()),
        description: Some(form.description.clone()),
        spec: Some(spec),
        starts_at: Some(starts_at),
        ends_at: Some(ends_at),
    };
    match bo.edit_promotion(&session.actor(), &id, patch).await {
        Ok(view) => Ok(pages.redirect(
            &format!("/backoffice/promotions/{}", view.id),
            Flash::success("Draft saved."),
        )),
        Err(BackofficeError::Conflict { message, .. }) => Ok(pages.redirect(
            &format!("/backoffice/promotions/{id}"),
            Flash::error(message),
        )),
        Err(e) => {
            let errors = invalid(e)?;
            render_form(
                &pages,
                &req,
                &session,
                unprocessable,
                &form,
                Some(&id),
                &errors,
            )
        }
    }
}

/// A refused lifecycle step goes back to the promotion with the reason.
fn refused(pages: &Pages, id: &str, e: BackofficeError) -> Result<HttpResponse, PageFailure> {
    match e {
        BackofficeError::Forbidden { message, .. } | BackofficeError::Conflict { message, .. } => {
            Ok(pages.redirect(
                &format!("/backoffice/promotions/{id}"),
                Flash::error(message),
            ))
        }
        other => Err(other.into()),
    }
}

async fn approve(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
    form: web::Form<super::CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.require(&[Role::Approver])?;
    session.check_form(&req, &form.csrf)?;
    match bo.approve_promotion(&session.actor(), &id).await {
        Ok(view) => Ok(pages.redirect(
            &format!("/backoffice/promotions/{}", view.id),
            Flash::success(match view.status {
                Status::Scheduled => format!("Approved {}: it starts at its start time.", view.id),
                _ => format!("Approved {}: shoppers get it now.", view.id),
            }),
        )),
        Err(e) => refused(&pages, &id, e),
    }
}

async fn end(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
    form: web::Form<super::CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.require(ENDERS)?;
    session.check_form(&req, &form.csrf)?;
    match bo.end_promotion(&session.actor(), &id).await {
        Ok(view) => Ok(pages.redirect(
            &format!("/backoffice/promotions/{}", view.id),
            Flash::success(format!("{} has ended.", view.id)),
        )),
        Err(e) => refused(&pages, &id, e),
    }
}

#[derive(Deserialize)]
pub struct BatchForm {
    csrf: String,
    count: u32,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    expires_at: String,
}

async fn batch(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
    form: web::Form<BatchForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(AUTHORS)?;
    session.check_form(&req, &form.csrf)?;
    let back = format!("/backoffice/promotions/{id}#coupons");
    let expires_at = match parse_local("expires", &form.expires_at) {
        Ok(t) => t,
        Err(message) => return Ok(pages.redirect(&back, Flash::error(message))),
    };
    let new = NewBatch {
        count: form.count,
        prefix: form.prefix.clone(),
        expires_at,
    };
    match bo.create_batch(&session.actor(), &id, new).await {
        Ok(batch) => Ok(pages.redirect(
            &back,
            Flash::success(format!("{} single-use codes made.", batch.count)),
        )),
        Err(BackofficeError::Invalid(fields)) => Ok(pages.redirect(
            &back,
            Flash::error(
                fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        )),
        Err(e) => refused(&pages, &id, e),
    }
}
