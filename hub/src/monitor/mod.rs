//! Live operations monitoring (`docs/operations.md`): Prometheus metrics at `/metrics`
//! ([`metrics`]), optionally on a listener of their own; the request-id and HTTP metrics
//! middleware ([`http`]); readiness that covers storage and every worker ([`readiness`]); the
//! ops page `/ops` with its live feed ([`page`], [`feed`]) and the recent warnings and errors
//! it lists ([`errors`]); and who may see all that ([`auth`]).

pub mod auth;
pub mod errors;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod page;

use crate::app::HubHandle;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use std::sync::{Arc, OnceLock};

/// Background tasks of the hub that are not actors, for readiness.
#[derive(Clone, Default)]
pub struct Tasks {
    sweeper: Arc<OnceLock<tokio::task::JoinHandle<()>>>,
}

impl Tasks {
    /// The checkout sweeper's task (set once, when it starts).
    pub fn set_sweeper(&self, task: tokio::task::JoinHandle<()>) {
        let _ = self.sweeper.set(task);
    }

    fn sweeper_running(&self) -> bool {
        self.sweeper.get().is_some_and(|t| !t.is_finished())
    }
}

/// What `/readyz` checks: storage open and every worker running.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// The storage writer thread runs and the directory answers.
    pub storage: bool,
    pub directory: bool,
    pub recorder: bool,
    pub outbox_workers: bool,
    pub analyst: bool,
    pub automation: bool,
    pub sweeper: bool,
    pub edge_replica: bool,
}

impl Readiness {
    pub fn of(handle: &HubHandle) -> Readiness {
        Readiness {
            storage: handle.storage.healthy(),
            directory: handle.directory.connected(),
            recorder: handle.recorder.connected(),
            outbox_workers: handle.outbox.running(),
            analyst: handle.experience.analyst.connected(),
            automation: handle.automation.connected(),
            sweeper: handle.tasks.sweeper_running(),
            edge_replica: handle.edge.replica.connected(),
        }
    }

    pub fn ready(&self) -> bool {
        let Readiness {
            storage,
            directory,
            recorder,
            outbox_workers,
            analyst,
            automation,
            sweeper,
            edge_replica,
        } = *self;
        storage
            && directory
            && recorder
            && outbox_workers
            && analyst
            && automation
            && sweeper
            && edge_replica
    }
}

/// `GET /readyz`: 200 when storage is open and every worker runs, else 503; the body says
/// which.
pub async fn readyz(handle: web::Data<HubHandle>) -> HttpResponse {
    let checks = Readiness::of(&handle);
    let body = |status| serde_json::json!({"status": status, "checks": checks});
    if checks.ready() {
        HttpResponse::Ok().json(body("ready"))
    } else {
        HttpResponse::ServiceUnavailable().json(body("not ready"))
    }
}

/// `GET /metrics`: on the metrics listener when one is configured (404 elsewhere), behind the
/// ops token when one is set.
pub async fn metrics_endpoint(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    listener: web::Data<http::MetricsListener>,
) -> Result<HttpResponse, channels::error::ApiError> {
    if listener.0.is_some() && !listener.serves(&req) {
        return Err(channels::error::ApiError::not_found("route"));
    }
    auth::OpsAuthorized::decide(&req).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics::scrape(&handle).await))
}
