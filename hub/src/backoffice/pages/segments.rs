//! Segments (marketers edit, analysts and admins read): the list with member counts and
//! evaluation state, create and edit with the rule textarea, delete, and a segment's members.
//! A rule that does not parse is shown in the form with its line and column and nothing is
//! saved. The changes are the API's (`crate::experience::segments`, each committed with its
//! audit entry, before and after), handed to the analyst afterwards like the API does.

use super::{BackOfficeSession, CsrfOnly, Flash, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use crate::backoffice::Backoffice;
use crate::experience::segment_routes::{cursor, parse_cursor, sync, with_status};
use crate::experience::segments::{self, NewSegment, SegmentError, SegmentPatch};
use crate::storage::StorageError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use protocol::Subject;
use serde::{Deserialize, Serialize};

/// Members per page.
const MEMBERS_PAGE: usize = 100;

/// The rule a new segment starts from.
const EXAMPLE_RULE: &str = r#"viewed(category = "coffee") >= 2 within 30d"#;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::page("/backoffice/segments")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(super::page("/backoffice/segments/new").route(web::get().to(new_form)))
    .service(
        super::page("/backoffice/segments/{key}")
            .route(web::get().to(show))
            .route(web::post().to(edit)),
    )
    .service(super::page("/backoffice/segments/{key}/delete").route(web::post().to(delete)))
    .service(super::page("/backoffice/segments/{key}/members").route(web::get().to(members)));
}

fn can_edit(session: &BackOfficeSession) -> bool {
    policy::Marketing::ROLES
        .iter()
        .any(|r| session.user().has(*r))
}

fn storage(e: StorageError) -> PageFailure {
    e.into()
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::MarketingReports::ROLES)?;
    let defs = segments::definitions(&bo).map_err(storage)?;
    let statuses = handle
        .experience
        .segment_statuses()
        .await
        .map_err(storage)?;
    let rows: Vec<serde_json::Value> = defs.iter().map(|d| with_status(d, &statuses)).collect();
    pages.render(
        &req,
        &session,
        "segments.html",
        context! { segments => rows, can_edit => can_edit(&session) },
    )
}

/// The form as typed (shown again with the error when it is refused).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct SegmentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    rule: String,
}

/// A refused form's messages: the rule's position, or the field's problem.
#[derive(Debug, Default, Serialize)]
struct FormErrors {
    messages: Vec<String>,
    /// Where the rule stopped parsing.
    rule: Option<RuleError>,
}

#[derive(Debug, Serialize)]
struct RuleError {
    line: usize,
    column: usize,
    expected: String,
    found: String,
    /// The rule's line with the problem and a caret under the column.
    excerpt: String,
    caret: String,
}

fn form_errors(rule_text: &str, e: SegmentError) -> Result<FormErrors, PageFailure> {
    Ok(match e {
        SegmentError::Rule(p) => {
            let excerpt = rule_text
                .lines()
                .nth(p.line.saturating_sub(1))
                .unwrap_or("")
                .to_string();
            let caret = format!("{}^", " ".repeat(p.column.saturating_sub(1)));
            FormErrors {
                messages: vec![format!(
                    "Rule, line {}, column {}: expected {}, found {}.",
                    p.line, p.column, p.expected, p.found
                )],
                rule: Some(RuleError {
                    line: p.line,
                    column: p.column,
                    expected: p.expected,
                    found: p.found,
                    excerpt,
                    caret,
                }),
            }
        }
        SegmentError::Field { field, message } => FormErrors {
            messages: vec![format!("{field}: {message}")],
            rule: None,
        },
        SegmentError::Duplicate(key) => FormErrors {
            messages: vec![format!(
                "key: a segment {key:?} exists; pick another key or edit that one"
            )],
            rule: None,
        },
        SegmentError::NotFound(key) => {
            return Err(PageFailure::not_found(&format!("segment {key}")))
        }
        SegmentError::Storage(e) => return Err(e.into()),
    })
}

#[allow(clippy::too_many_arguments)]
fn render_form(
    pages: &Pages,
    req: &HttpRequest,
    session: &BackOfficeSession,
    status: StatusCode,
    form: &SegmentForm,
    editing: Option<serde_json::Value>,
    errors: &FormErrors,
) -> Result<HttpResponse, PageFailure> {
    pages.render_status(
        req,
        Some(session),
        status,
        "segment.html",
        context! {
            form => form,
            segment => editing,
            errors => errors,
            can_edit => can_edit(session),
        },
        Vec::new(),
    )
}

async fn new_form(
    req: HttpRequest,
    pages: web::Data<Pages>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    let form = SegmentForm {
        rule: EXAMPLE_RULE.to_string(),
        ..SegmentForm::default()
    };
    render_form(
        &pages,
        &req,
        &session,
        StatusCode::OK,
        &form,
        None,
        &FormErrors::default(),
    )
}

async fn create(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    form: web::Form<SegmentForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let new = NewSegment {
        key: form.key.trim().to_string(),
        name: form.name.clone(),
        rule: form.rule.clone(),
    };
    let now = handle.backend.deps.clock.now();
    match segments::create(&bo, &session.actor(), new, now).await {
        Ok(def) => {
            sync(&handle, &bo).await;
            Ok(pages.redirect(
                &format!("/backoffice/segments/{}", def.key),
                Flash::success(format!(
                    "Segment {} saved. Existing profiles are being evaluated.",
                    def.key
                )),
            ))
        }
        Err(e) => {
            let errors = form_errors(&form.rule, e)?;
            render_form(
                &pages,
                &req,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                &form,
                None,
                &errors,
            )
        }
    }
}

async fn current(
    handle: &HubHandle,
    bo: &Backoffice,
    key: &str,
) -> Result<serde_json::Value, PageFailure> {
    let def = segments::definition(bo, key)
        .map_err(storage)?
        .ok_or_else(|| PageFailure::not_found("segment"))?;
    let statuses = handle
        .experience
        .segment_statuses()
        .await
        .map_err(storage)?;
    Ok(with_status(&def, &statuses))
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    key: web::Path<String>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::MarketingReports::ROLES)?;
    let view = current(&handle, &bo, &key).await?;
    let form = SegmentForm {
        key: key.to_string(),
        name: view["name"].as_str().unwrap_or_default().to_string(),
        rule: view["rule"].as_str().unwrap_or_default().to_string(),
        ..SegmentForm::default()
    };
    render_form(
        &pages,
        &req,
        &session,
        StatusCode::OK,
        &form,
        Some(view),
        &FormErrors::default(),
    )
}

async fn edit(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    key: web::Path<String>,
    form: web::Form<SegmentForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let patch = SegmentPatch {
        name: Some(form.name.clone()),
        rule: Some(form.rule.clone()),
    };
    let now = handle.backend.deps.clock.now();
    match segments::update(&bo, &session.actor(), &key, patch, now).await {
        Ok(def) => {
            sync(&handle, &bo).await;
            Ok(pages.redirect(
                &format!("/backoffice/segments/{}", def.key),
                Flash::success(format!(
                    "Segment {} saved (version {}).",
                    def.key, def.version
                )),
            ))
        }
        Err(e) => {
            let errors = form_errors(&form.rule, e)?;
            let view = current(&handle, &bo, &key).await?;
            let mut form = form.into_inner();
            form.key = key.to_string();
            render_form(
                &pages,
                &req,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                &form,
                Some(view),
                &errors,
            )
        }
    }
}

async fn delete(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    key: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    match segments::delete(&bo, &session.actor(), &key).await {
        Ok(def) => {
            sync(&handle, &bo).await;
            Ok(pages.redirect(
                "/backoffice/segments",
                Flash::success(format!(
                    "Segment {} deleted; its members are let go in the background.",
                    def.key
                )),
            ))
        }
        Err(SegmentError::NotFound(_)) => Err(PageFailure::not_found("segment")),
        Err(SegmentError::Storage(e)) => Err(e.into()),
        Err(other) => Err(PageFailure::new(
            StatusCode::CONFLICT,
            "That could not be done",
            other.to_string(),
        )),
    }
}

#[derive(Deserialize)]
pub struct MembersQuery {
    after: Option<String>,
}

async fn members(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    key: web::Path<String>,
    query: web::Query<MembersQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::MarketingReports::ROLES)?;
    let view = current(&handle, &bo, &key).await?;
    let def = segments::definition(&bo, &key)
        .map_err(storage)?
        .ok_or_else(|| PageFailure::not_found("segment"))?;
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(a) => Some(parse_cursor(a).ok_or_else(|| {
            PageFailure::new(
                StatusCode::BAD_REQUEST,
                "That address could not be read",
                "The page of members asked for does not exist: start from the first page.",
            )
        })?),
    };
    let store = handle.experience.store.clone();
    let page =
        tokio::task::spawn_blocking(move || store.members(def.id, after.as_ref(), MEMBERS_PAGE))
            .await
            .map_err(|e| storage(StorageError::Io(e.to_string())))?
            .map_err(storage)?;
    let next = (page.len() == MEMBERS_PAGE)
        .then(|| page.last().map(|(s, _)| cursor(s)))
        .flatten();
    let can_open_customers = policy::CustomerProfiles::ROLES
        .iter()
        .any(|r| session.user().has(*r));
    let rows: Vec<minijinja::Value> = page
        .iter()
        .map(|(subject, at)| {
            let (kind, id) = match subject {
                Subject::Customer(c) => ("customer", c.to_string()),
                Subject::Anonymous(a) => ("anonymous", a.to_string()),
            };
            context! { kind, id, entered_at => segments::rfc3339(*at) }
        })
        .collect();
    pages.render(
        &req,
        &session,
        "segment_members.html",
        context! {
            segment => view,
            members => rows,
            next => next.map(|n| super::encode_component(&n)),
            first => query.after.as_deref().is_some_and(|a| !a.is_empty()),
            can_open_customers,
        },
    )
}
