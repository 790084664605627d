//! Operations API for the outbox (`/ops/outbox`): what waits per destination, the circuit
//! breakers, and the dead letters an operator can retry or discard. Needs the ops token when
//! one is configured.

use crate::app::{HubHandle, OpsAuthorized};
use crate::storage::{Change, UnitOfWork};
use actix_web::{web, HttpResponse};
use channels::error::ApiError;
use serde::Deserialize;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ops/outbox", web::get().to(overview))
        .route(
            "/ops/outbox/{destination}/dead",
            web::get().to(dead_letters),
        )
        .route(
            "/ops/outbox/{destination}/dead/{id}/retry",
            web::post().to(retry),
        )
        .route(
            "/ops/outbox/{destination}/dead/{id}",
            web::delete().to(discard),
        );
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(channels::BackendError::Unavailable(e.to_string()))
}

/// `GET /ops/outbox`: per destination, pending and dead counts, the oldest pending message's
/// age, the breaker and the worker's counters.
async fn overview(
    _: OpsAuthorized,
    handle: web::Data<HubHandle>,
) -> Result<HttpResponse, ApiError> {
    let backlog = handle.storage_backlog().await.map_err(unavailable)?;
    let now = time::OffsetDateTime::now_utc();
    let mut out = serde_json::Map::new();
    let mut names: Vec<String> = handle
        .outbox
        .destinations()
        .into_iter()
        .map(str::to_string)
        .collect();
    for name in backlog.keys() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    for name in names {
        let b = backlog.get(&name).cloned().unwrap_or_default();
        let status = handle.outbox.status(&name).await;
        out.insert(
            name.clone(),
            json!({
                "pending": b.pending,
                "dead": b.dead,
                "oldest_age_seconds": b.oldest.map(|o| (now - o).whole_seconds().max(0)),
                "breaker": status.as_ref().map(|s| s.0),
                "delivered": status.as_ref().map(|s| s.1.delivered),
                "failed_attempts": status.as_ref().map(|s| s.1.failed_attempts),
                "dead_lettered": status.as_ref().map(|s| s.1.dead_lettered),
                "worker": status.is_some(),
            }),
        );
    }
    Ok(HttpResponse::Ok().json(json!({ "destinations": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<usize>,
}

async fn dead_letters(
    _: OpsAuthorized,
    handle: web::Data<HubHandle>,
    destination: web::Path<String>,
    query: web::Query<Limit>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let dead = crate::storage::Outbox::dead_letters(handle.storage.as_ref(), &destination, limit)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "dead_letters": dead })))
}

fn parse_id(text: &str) -> Result<ulid::Ulid, ApiError> {
    ulid::Ulid::from_string(text).map_err(|_| ApiError::not_found("dead letter"))
}

/// `POST /ops/outbox/{destination}/dead/{id}/retry`: back to pending with its attempts reset.
async fn retry(
    authorized: OpsAuthorized,
    handle: web::Data<HubHandle>,
    backoffice: Option<web::Data<crate::backoffice::Backoffice>>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (destination, id) = path.into_inner();
    let id = parse_id(&id)?;
    let dead = crate::storage::Outbox::dead_letter(handle.storage.as_ref(), &destination, id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("dead letter"))?;
    let mut message = dead.clone();
    message.attempts = 0;
    message.next_attempt_at = None;
    let unit = UnitOfWork::new().with(Change::RetryDeadLetter(message.clone()));
    crate::storage::Committer::commit(handle.storage.as_ref(), unit)
        .await
        .map_err(unavailable)?;
    handle.outbox.wake();
    audit(
        &authorized,
        backoffice.as_ref().map(|b| b.get_ref()),
        "outbox.dead_letter.retry",
        &dead,
        Some(&message),
    )
    .await;
    Ok(HttpResponse::Ok().json(message))
}

/// `DELETE /ops/outbox/{destination}/dead/{id}`: dropped for good.
async fn discard(
    authorized: OpsAuthorized,
    handle: web::Data<HubHandle>,
    backoffice: Option<web::Data<crate::backoffice::Backoffice>>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (destination, id) = path.into_inner();
    let id = parse_id(&id)?;
    let dead = crate::storage::Outbox::dead_letter(handle.storage.as_ref(), &destination, id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("dead letter"))?;
    let unit = UnitOfWork::new().with(Change::DiscardDeadLetter { destination, id });
    crate::storage::Committer::commit(handle.storage.as_ref(), unit)
        .await
        .map_err(unavailable)?;
    audit(
        &authorized,
        backoffice.as_ref().map(|b| b.get_ref()),
        "outbox.dead_letter.discard",
        &dead,
        None,
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Records an operator's change of a dead letter in the back office's audit list: who (the
/// signed-in admin, or `ops-token`), the message before and after. Only what identifies the
/// message is recorded, never its payload (it may hold a customer's data). The change is
/// already done, so a failure to write the entry is logged, not answered.
async fn audit(
    authorized: &OpsAuthorized,
    backoffice: Option<&crate::backoffice::Backoffice>,
    action: &str,
    before: &protocol::OutboxMessage,
    after: Option<&protocol::OutboxMessage>,
) {
    use crate::backoffice::audit::{Actor, Change};
    use crate::monitor::auth::OpsCaller;
    let Some(backoffice) = backoffice else {
        return;
    };
    let actor = match &authorized.0 {
        OpsCaller::BackOffice { user, .. } => Actor::User((**user).clone()),
        OpsCaller::Token | OpsCaller::Session { .. } => Actor::OpsToken,
        // No ops token configured: nobody to name (a development hub).
        OpsCaller::Open => return,
    };
    let summary = |m: &protocol::OutboxMessage| {
        json!({
            "destination": m.destination,
            "id": m.id.to_string(),
            "attempts": m.attempts,
            "last_error": m.last_error,
        })
    };
    let (before_summary, after_summary) = (summary(before), after.map(summary));
    let change = Change {
        actor: &actor,
        action,
        subject: format!("dead_letter/{}/{}", before.destination, before.id),
        before: Some(&before_summary),
        after: after_summary.as_ref(),
    };
    if let Err(e) = backoffice.record(change).await {
        tracing::error!(error = %e, action, "audit entry not written");
    }
}
