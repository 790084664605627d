//! HTTP routes of the A/B tests:
//!
//! - admin, under `/api/v1/admin/experiments`: create, list, show, patch, start, stop, report.
//!   Writes need a back-office user with role marketer or admin, reads also role analyst; the
//!   hub's admin token may do both.
//! - shopper: `GET /api/v1/experiments/{key}/assignment[?expose=true]` and
//!   `POST /api/v1/experiments/{key}/exposures`, for the signed-in customer or the anonymous id
//!   of the request (cookie or `X-Anonymous-Id`), never anyone else.
//!
//! Registered before the admin and channel scopes (their catch-all 404s would hide these).

use super::{Assignment, Excluded, ExperimentPatch, NewExperiment};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Staff};
use crate::backoffice::audit::Actor;
use crate::backoffice::BackofficeError;
use crate::storage::StorageError;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use channels::error::ApiError;
use channels::RequestContext;
use protocol::experiment::stats::{self, Arm};
use protocol::experiment::{Experiment, ExperimentStatus};
use protocol::Subject;
use serde::Deserialize;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/admin/experiments")
            .app_data(channels::error::json_config())
            .app_data(channels::error::query_config())
            .app_data(channels::error::path_config())
            .route("", web::post().to(create))
            .route("", web::get().to(list))
            .route("/{key}", web::get().to(show))
            .route("/{key}", web::patch().to(patch))
            .route("/{key}/start", web::post().to(start))
            .route("/{key}/stop", web::post().to(stop))
            .route("/{key}/report", web::get().to(report))
            .default_service(web::to(channels::error::api_not_found)),
    )
    .service(
        web::scope("/api/v1/experiments")
            .app_data(channels::error::query_config())
            .app_data(channels::error::path_config())
            .route("/{key}/assignment", web::get().to(assignment))
            .route("/{key}/exposures", web::post().to(exposure))
            .default_service(web::to(channels::error::api_not_found)),
    );
}

/// A caller who may change experiments: role marketer or admin, or the admin token.
pub struct Writer(Actor);

impl FromRequest for Writer {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Writer, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let staff = Staff::<policy::Marketing>::from_request(req, payload);
        Box::pin(async move { staff.await.map(|s| Writer(s.actor)) })
    }
}

/// A caller who may read experiments and reports: role analyst, marketer or admin, or the
/// admin token.
pub struct Reader;

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reader, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let staff = Staff::<policy::Analytics>::from_request(req, payload);
        Box::pin(async move { staff.await.map(|_| Reader) })
    }
}

fn unavailable(e: StorageError) -> ApiError {
    BackofficeError::Storage(e).into()
}

fn known(handle: &HubHandle, key: &str) -> Result<std::sync::Arc<Experiment>, ApiError> {
    handle
        .experiments
        .get(key)
        .ok_or_else(|| ApiError::not_found(&format!("experiment {key}")))
}

async fn create(
    Writer(actor): Writer,
    handle: web::Data<HubHandle>,
    body: web::Json<NewExperiment>,
) -> Result<HttpResponse, ApiError> {
    let created = handle.experiments.create(&actor, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(created))
}

async fn list(_: Reader, handle: web::Data<HubHandle>) -> Result<HttpResponse, ApiError> {
    let all: Vec<Experiment> = handle
        .experiments
        .all()
        .values()
        .map(|e| e.as_ref().clone())
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "experiments": all })))
}

async fn show(
    _: Reader,
    handle: web::Data<HubHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(known(&handle, &key)?.as_ref()))
}

async fn patch(
    Writer(actor): Writer,
    handle: web::Data<HubHandle>,
    key: web::Path<String>,
    body: web::Json<ExperimentPatch>,
) -> Result<HttpResponse, ApiError> {
    let changed = handle
        .experiments
        .patch(&actor, &key, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(changed))
}

async fn start(
    Writer(actor): Writer,
    handle: web::Data<HubHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(handle.experiments.start(&actor, &key).await?))
}

async fn stop(
    Writer(actor): Writer,
    handle: web::Data<HubHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(handle.experiments.stop(&actor, &key).await?))
}

/// Per variant: exposures, conversions, rate, the comparison with the control (Newcombe 95 %
/// interval, pooled z-test), and the sample-ratio check (see `docs/experiments.md`).
async fn report(
    _: Reader,
    handle: web::Data<HubHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let experiment = known(&handle, &key)?;
    let report = statistics(&handle.experiments, &experiment).map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({
        "experiment": experiment.key,
        "name": experiment.name,
        "status": experiment.status,
        "surface": experiment.surface,
        "goal": experiment.goal,
        "started_at": experiment.started_at.map(rfc3339),
        "stopped_at": experiment.stopped_at.map(rfc3339),
        "method": {
            "unit": "distinct subjects (a customer and the anonymous ids joined to them count once)",
            "conversion": "the goal event after the subject's first exposure, once per subject",
            "interval": "95 % Newcombe hybrid score interval (method 10) of the difference in conversion rate vs the control",
            "test": "two-sided pooled two-proportion z-test vs the control; significant when p < 0.05",
            "sample_ratio": "chi-square goodness of fit of exposures vs the configured weights; a mismatch when p < 0.001",
        },
        "variants": report.variants,
        "sample_ratio": report.sample_ratio,
        "warnings": report.warnings,
    })))
}

/// The statistics of an experiment from its counts: the report route's and the back-office
/// report page's.
pub fn statistics(
    experiments: &super::Experiments,
    experiment: &Experiment,
) -> Result<stats::Report, StorageError> {
    let counts = experiments.counts(&experiment.key)?;
    let arms: Vec<Arm> = experiment
        .variants
        .iter()
        .map(|v| {
            let c = counts.variants.get(&v.key).copied().unwrap_or_default();
            Arm {
                key: v.key.clone(),
                weight_bp: v.weight_bp,
                exposures: c.exposures,
                conversions: c.conversions,
            }
        })
        .collect();
    Ok(stats::report(&arms))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentQuery {
    #[serde(default)]
    expose: bool,
}

/// The asker as a subject: the signed-in customer (with the request's anonymous id, whose
/// assignment they inherit), or the anonymous id the client sent; without either there is no
/// stable subject to assign.
fn subject_of(ctx: &RequestContext) -> Result<Subject, ApiError> {
    match (ctx.shopper.customer, ctx.shopper.anonymous) {
        (Some(c), _) => Ok(Subject::Customer(c)),
        (None, Some(a)) => Ok(Subject::Anonymous(a)),
        (None, None) => Err(ApiError::unprocessable(
            "anonymous_id_required",
            "sign in, or send the anonymous id of this browser or app install (cookie omnihub_anon or header X-Anonymous-Id, a ULID): without one the variant could not stay the same",
        )),
    }
}

async fn answer(
    handle: web::Data<HubHandle>,
    ctx: RequestContext,
    key: String,
    expose: bool,
) -> Result<HttpResponse, ApiError> {
    let experiment = known(&handle, &key)?;
    // A draft is nobody's business outside the back office.
    if experiment.status == ExperimentStatus::Draft {
        return Err(ApiError::not_found(&format!("experiment {key}")));
    }
    let subject = subject_of(&ctx)?;
    let anonymous = ctx.shopper.anonymous;
    let experiments = handle.experiments.clone();
    let channel = ctx.channel;
    let decided = web::block(move || {
        if expose {
            experiments.expose(&key, subject, anonymous, channel)
        } else {
            experiments.assign_with(&key, subject, anonymous)
        }
    })
    .await
    .map_err(|e| unavailable(StorageError::Io(e.to_string())))?
    .map_err(unavailable)?
    .ok_or_else(|| ApiError::not_found(&format!("experiment {}", experiment.key)))?;
    Ok(HttpResponse::Ok().json(view(&experiment, decided, expose)))
}

fn view(
    experiment: &Experiment,
    decided: Result<Assignment, Excluded>,
    exposed: bool,
) -> serde_json::Value {
    match decided {
        Ok(a) => json!({
            "experiment": experiment.key,
            "surface": experiment.surface,
            "variant": a.variant,
            "reason": a.reason,
            "exposed": exposed,
        }),
        Err(excluded) => json!({
            "experiment": experiment.key,
            "surface": experiment.surface,
            "variant": null,
            "reason": { "type": excluded },
            "exposed": false,
        }),
    }
}

async fn assignment(
    handle: web::Data<HubHandle>,
    ctx: RequestContext,
    key: web::Path<String>,
    query: web::Query<AssignmentQuery>,
) -> Result<HttpResponse, ApiError> {
    answer(handle, ctx, key.into_inner(), query.expose).await
}

async fn exposure(
    handle: web::Data<HubHandle>,
    ctx: RequestContext,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    answer(handle, ctx, key.into_inner(), true).await
}
