//! ERP import runs, newest first, and one run's row-level report (merchandisers, admins).

use super::{BackOfficeSession, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;

const RUNS: usize = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/imports").route(web::get().to(list)))
        .service(super::page("/backoffice/imports/{id}").route(web::get().to(show)));
}

fn failed(e: crate::import::ImportError) -> PageFailure {
    tracing::error!(error = %e, "import runs unavailable");
    PageFailure::unavailable()
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Imports::ROLES)?;
    let runs = handle.import.runs(RUNS).await.map_err(failed)?;
    pages.render(&req, &session, "imports.html", context! { runs => runs })
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    id: web::Path<String>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Imports::ROLES)?;
    let not_found = || PageFailure::not_found("import run");
    let id: ulid::Ulid = id.parse().map_err(|_| not_found())?;
    let run = handle
        .import
        .report(id)
        .await
        .map_err(failed)?
        .ok_or_else(not_found)?;
    pages.render(&req, &session, "import_run.html", context! { run => run })
}
