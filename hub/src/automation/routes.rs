//! Automation's routes: the restore link, and the admin API (admin token) over the message log
//! and the scheduler.
//!
//! - `GET /basket/restore?customer=&basket=&expires=&sig=` ([`super::links`]);
//! - `GET /api/v1/admin/automation/messages?customer=&kind=&limit=`: the log, newest first;
//! - `POST /api/v1/admin/automation/run`: runs the timers due now (they also run by themselves).

use super::scheduler::{Env, RunDue, Scheduler};
use super::store::MessageFilter;
use crate::backoffice::access::{policy, Staff};
use actix::Addr;
use actix_web::{web, HttpResponse};
use channels::error::ApiError;
use protocol::automation::{MessageKind, MessageRecord};
use protocol::CustomerId;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// What the routes share.
pub struct AutomationData {
    pub env: Arc<Env>,
    pub scheduler: Addr<Scheduler>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/basket/restore", web::get().to(super::links::restore))
        .route("/api/v1/admin/automation/messages", web::get().to(messages))
        .route("/api/v1/admin/automation/run", web::post().to(run));
}

/// The log's query; every field optional.
#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

const MAX_LIMIT: usize = 1000;

fn filter_of(q: &MessagesQuery) -> Result<MessageFilter, ApiError> {
    let customer = match q.customer.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(c.parse::<CustomerId>().map_err(|_| {
            ApiError::unprocessable("invalid_customer", format!("customer '{c}' is not a customer id (26 characters, e.g. from /api/v1/admin/orders)"))
        })?),
        None => None,
    };
    let kind = match q.kind.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => Some(MessageKind::parse(k).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_kind",
                format!("kind '{k}' is not one of abandoned_basket, back_in_stock, win_back"),
            )
        })?),
        None => None,
    };
    let limit = match q.limit.as_deref().filter(|l| !l.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_limit",
                    format!("limit must be a number from 1 to {MAX_LIMIT}, not '{l}'"),
                )
            })?,
        None => 100,
    };
    Ok(MessageFilter {
        customer,
        kind,
        limit,
    })
}

fn record_json(r: &MessageRecord) -> serde_json::Value {
    json!({
        "id": r.id.to_string(),
        "at": r.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "customer": r.customer,
        "kind": r.kind.as_str(),
        "outcome": r.outcome,
        "reason": r.reason.as_str(),
        "subject": r.subject,
        "timer": r.timer.map(|t| t.to_string()),
        "email_key": r.email_key,
        "deferred_to": r.deferred_to.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
    })
}

async fn messages(
    _: Staff<policy::Automation>,
    data: web::Data<AutomationData>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = filter_of(&query)?;
    let records = data.env.store.messages(filter).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the automation log");
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the message log cannot be read right now: try again",
        )
    })?;
    Ok(HttpResponse::Ok().json(json!({
        "messages": records.iter().map(record_json).collect::<Vec<_>>(),
    })))
}

async fn run(
    _: Staff<policy::Automation>,
    data: web::Data<AutomationData>,
) -> Result<HttpResponse, ApiError> {
    match data.scheduler.send(RunDue).await {
        Ok(Ok(report)) => Ok(HttpResponse::Ok().json(report)),
        Ok(Err(super::AutomationError::Elsewhere)) => Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "elsewhere",
            "the automation timers run on another node (they run due timers by themselves)",
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "automation run failed");
            Err(ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the run failed: try again",
            ))
        }
        Err(_) => Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the scheduler is not running",
        )),
    }
}
