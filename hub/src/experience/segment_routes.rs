//! The segments API under `/api/v1/admin/segments` (JSON). Writes (create, update, delete)
//! need the admin token or a back-office user with role marketer or admin; reads (list, show,
//! members, validate) also take roles analyst and support. Every change is audited.
//!
//! - `POST /` `{key, name, rule}` → 201; a bad rule is a 422 `invalid_rule` with the position,
//!   a taken key a 409 `duplicate_key`;
//! - `GET /` every segment with its member count and evaluation status;
//! - `GET /{key}`, `PATCH /{key}` `{name?, rule?}` (a new rule is evaluated over every
//!   profile again), `DELETE /{key}`;
//! - `GET /{key}/members?after=&limit=` members in subject order with a keyset cursor;
//! - `POST /validate` `{rule}` parses without saving.

use super::segments::{
    self, NewSegment, SegmentDefinition, SegmentError, SegmentPatch, SegmentStatus,
};
use crate::app::HubHandle;
use crate::backoffice::audit::Actor;
use crate::backoffice::{BackOfficeUser, Backoffice, Role};
use crate::storage::StorageError;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use channels::error::ApiError;
use protocol::experience::segments::parse;
use protocol::{AnonymousId, CustomerId, Subject};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

/// Who may change segments.
const WRITERS: &[Role] = &[Role::Marketer, Role::Admin];
/// Who may read them.
const READERS: &[Role] = &[Role::Marketer, Role::Admin, Role::Analyst, Role::Support];
/// Members per page: default and most.
const MEMBERS_DEFAULT: usize = 100;
const MEMBERS_MAX: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/admin/segments")
            .app_data(channels::error::json_config())
            .app_data(channels::error::query_config())
            .app_data(channels::error::path_config())
            .route("", web::post().to(create))
            .route("", web::get().to(list))
            .route("/validate", web::post().to(validate))
            .route("/{key}", web::get().to(show))
            .route("/{key}", web::patch().to(update))
            .route("/{key}", web::delete().to(delete))
            .route("/{key}/members", web::get().to(members))
            .default_service(web::to(channels::error::api_not_found)),
    );
}

/// A caller of the segments API: the admin token, or a back-office user (roles checked per
/// route).
pub struct Caller(Actor);

impl Caller {
    fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        match &self.0 {
            Actor::User(user) => user.require_any(roles).map_err(ApiError::from),
            Actor::AdminToken | Actor::Erp | Actor::OpsToken => Ok(()),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let admin_token = req
            .app_data::<web::Data<crate::admin::AdminAccess>>()
            .and_then(|a| a.token.clone());
        if admin_token.is_some_and(|t| crate::auth::bearer_matches(req, &t)) {
            return Box::pin(async { Ok(Caller(Actor::AdminToken)) });
        }
        let user = BackOfficeUser::from_request(req, payload);
        Box::pin(async move { Ok(Caller(Actor::User(user.await?))) })
    }
}

impl From<SegmentError> for ApiError {
    fn from(e: SegmentError) -> ApiError {
        match e {
            SegmentError::Rule(p) => ApiError::unprocessable("invalid_rule", format!("rule: {p}"))
                .with_details(json!({
                    "offset": p.offset,
                    "line": p.line,
                    "column": p.column,
                    "expected": p.expected,
                    "found": p.found,
                })),
            SegmentError::Field { field, message } => {
                ApiError::unprocessable("invalid_field", format!("{field}: {message}"))
                    .with_details(json!({ "field": field }))
            }
            SegmentError::Duplicate(key) => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_key",
                format!("key: a segment {key:?} exists; pick another key or update that one"),
            ),
            SegmentError::NotFound(key) => ApiError::not_found(&format!("segment {key:?}")),
            SegmentError::Storage(e) => unavailable(e),
        }
    }
}

fn unavailable(e: StorageError) -> ApiError {
    tracing::error!(error = %e, "segments storage failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "segments cannot be reached right now: try again",
    )
}

/// The definition with its status (a segment the analyst has not taken yet is `evaluating`).
pub(crate) fn with_status(
    def: &SegmentDefinition,
    statuses: &BTreeMap<String, SegmentStatus>,
) -> serde_json::Value {
    let mut view = def.view();
    let status = match statuses.get(&def.id.to_string()) {
        Some(s) if s.version == def.version || s.state == "evaluating" => json!(s),
        Some(s) => json!({
            "state": "evaluating", "members": s.members, "evaluated": 0, "version": def.version,
        }),
        None => json!({
            "state": "evaluating", "members": 0, "evaluated": 0, "version": def.version,
        }),
    };
    view["status"] = status;
    view
}

/// Hands the analyst the definitions after a change. If it cannot be reached the change
/// stands: the analyst takes the definitions again when it starts.
pub(crate) async fn sync(handle: &HubHandle, bo: &Backoffice) -> BTreeMap<String, SegmentStatus> {
    let synced = match segments::definitions(bo) {
        Ok(defs) => handle.experience.sync_segments(defs).await,
        Err(e) => Err(e),
    };
    if let Err(e) = synced {
        tracing::error!(error = %e, "the analyst did not take the segment change yet");
    }
    handle
        .changes
        .announce(crate::cluster::notify::Topic::Segments);
    handle
        .experience
        .segment_statuses()
        .await
        .unwrap_or_default()
}

async fn create(
    caller: Caller,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    body: web::Json<NewSegment>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WRITERS)?;
    let now = handle.backend.deps.clock.now();
    let def = segments::create(&bo, &caller.0, body.into_inner(), now).await?;
    tracing::info!(segment = %def.key, who = %caller.0.id(), "segment created");
    let statuses = sync(&handle, &bo).await;
    Ok(HttpResponse::Created().json(with_status(&def, &statuses)))
}

async fn list(
    caller: Caller,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let defs = segments::definitions(&bo).map_err(unavailable)?;
    let statuses = handle
        .experience
        .segment_statuses()
        .await
        .map_err(unavailable)?;
    let list: Vec<_> = defs.iter().map(|d| with_status(d, &statuses)).collect();
    Ok(HttpResponse::Ok().json(json!({ "segments": list })))
}

fn find(bo: &Backoffice, key: &str) -> Result<SegmentDefinition, ApiError> {
    segments::definition(bo, key)
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(&format!("segment {key:?}")))
}

async fn show(
    caller: Caller,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let def = find(&bo, &key)?;
    let statuses = handle
        .experience
        .segment_statuses()
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(with_status(&def, &statuses)))
}

async fn update(
    caller: Caller,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    key: web::Path<String>,
    body: web::Json<SegmentPatch>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WRITERS)?;
    let now = handle.backend.deps.clock.now();
    let def = segments::update(&bo, &caller.0, &key, body.into_inner(), now).await?;
    tracing::info!(segment = %def.key, who = %caller.0.id(), "segment updated");
    let statuses = sync(&handle, &bo).await;
    Ok(HttpResponse::Ok().json(with_status(&def, &statuses)))
}

async fn delete(
    caller: Caller,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WRITERS)?;
    let def = segments::delete(&bo, &caller.0, &key).await?;
    tracing::info!(segment = %def.key, who = %caller.0.id(), "segment deleted");
    sync(&handle, &bo).await;
    Ok(HttpResponse::Ok().json(json!({ "deleted": def.key, "id": def.id.to_string() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    rule: String,
}

async fn validate(caller: Caller, body: web::Json<ValidateBody>) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let rule = parse(&body.rule).map_err(SegmentError::Rule)?;
    Ok(HttpResponse::Ok().json(json!({
        "valid": true,
        "canonical": rule.to_string(),
        "ast": rule,
    })))
}

/// A member cursor: `customer:<id>` or `anonymous:<id>`.
pub(crate) fn cursor(subject: &Subject) -> String {
    match subject {
        Subject::Customer(c) => format!("customer:{c}"),
        Subject::Anonymous(a) => format!("anonymous:{a}"),
    }
}

pub(crate) fn parse_cursor(text: &str) -> Option<Subject> {
    let (kind, id) = text.split_once(':')?;
    match kind {
        "customer" => id.parse::<CustomerId>().ok().map(Subject::Customer),
        "anonymous" => id.parse::<AnonymousId>().ok().map(Subject::Anonymous),
        _ => None,
    }
}

async fn members(
    caller: Caller,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    key: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    if let Some(unknown) = query.keys().find(|k| *k != "after" && *k != "limit") {
        return Err(ApiError::unprocessable(
            "invalid_parameter",
            format!("unknown parameter {unknown:?}: use after and limit"),
        )
        .with_details(json!({ "parameter": unknown })));
    }
    let after = match query.get("after").map(String::as_str) {
        None | Some("") => None,
        Some(a) => Some(parse_cursor(a).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_parameter",
                "after: the `next` of a previous page, or leave it out",
            )
            .with_details(json!({ "parameter": "after" }))
        })?),
    };
    let limit = match query.get("limit") {
        None => MEMBERS_DEFAULT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MEMBERS_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::unprocessable("invalid_parameter", format!("limit: 1 to {MEMBERS_MAX}"))
                    .with_details(json!({ "parameter": "limit" }))
            })?,
    };
    let def = find(&bo, &key)?;
    let store = handle.experience.store.clone();
    let page = tokio::task::spawn_blocking(move || store.members(def.id, after.as_ref(), limit))
        .await
        .map_err(|e| unavailable(StorageError::Io(e.to_string())))?
        .map_err(unavailable)?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|(s, _)| cursor(s)))
        .flatten();
    let list: Vec<_> = page
        .iter()
        .map(|(subject, at)| json!({ "subject": subject, "entered_at": segments::rfc3339(*at) }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "segment": key.as_str(), "members": list, "next": next })))
}
