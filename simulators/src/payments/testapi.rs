//! `/_sim/*`: the test-only API. It does not exist at Stripe and needs no key (the simulator
//! listens on loopback by default). JSON in, JSON out; errors use Stripe's error shape.
//!
//! - `POST /_sim/checkout/sessions/{id}/pay` `{"card": "4242424242424242", "exp_month": 12,
//!   "exp_year": 2034, "cvc": "123", "three_d_secure": "approve"|"fail"}` (all but `card`
//!   optional; a 3-D Secure card is approved unless told `fail`) pays exactly as the hosted page
//!   does → 200 the session, or the decline (402) / error.
//! - `GET /_sim/deliveries` → `{"deliveries": [{id, event_id, event_type, endpoint, url,
//!   attempts, status, last_status_code, last_error}]}`, oldest first.
//! - `GET /_sim/audit` → `{"sessions_paid", "charges_succeeded", "amount_captured",
//!   "amount_refunded", "double_charges", "double_charged": [{reference, charges}]}`.
//! - `GET|POST|DELETE /_sim/faults`: show, partly update, reset the faults.
//! - `POST /_sim/clock` `{"advance_seconds": n}` moves the simulator's clock forward (session
//!   expiry) → `{"now": unix}`.

use super::errors::StripeError;
use super::faults::{Faults, FaultsUpdate};
use super::hosted::{submit_card, CardInput};
use super::ledger::PayOutcome;
use super::webhooks::RequestInfo;
use super::{lock, Shared};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::JsonConfig::default()
                .limit(64 * 1024)
                .error_handler(|e, _| {
                    let error = StripeError::request(format!("Invalid JSON body: {e}"));
                    actix_web::error::InternalError::from_response(e, error_response(&error)).into()
                }),
        )
        .route("/_sim/checkout/sessions/{id}/pay", web::post().to(pay))
        .route("/_sim/deliveries", web::get().to(deliveries))
        .route("/_sim/audit", web::get().to(audit))
        .route("/_sim/faults", web::get().to(show_faults))
        .route("/_sim/faults", web::post().to(update_faults))
        .route("/_sim/faults", web::delete().to(reset_faults))
        .route("/_sim/clock", web::post().to(advance_clock));
}

fn error_response(error: &StripeError) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST))
        .json(error.body())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    card: String,
    exp_month: Option<u32>,
    exp_year: Option<u32>,
    cvc: Option<String>,
    three_d_secure: Option<String>,
}

async fn pay(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    request: web::Json<PayRequest>,
) -> HttpResponse {
    let approve = match request.three_d_secure.as_deref() {
        None | Some("approve") => true,
        Some("fail") => false,
        Some(_) => {
            return error_response(&StripeError::invalid(
                "three_d_secure must be \"approve\" or \"fail\".".into(),
                "three_d_secure",
            ))
        }
    };
    let input = CardInput {
        card_number: request.card.clone(),
        card_expiry: format!(
            "{}/{}",
            request.exp_month.unwrap_or(12),
            request.exp_year.unwrap_or(2034)
        ),
        card_cvc: request.cvc.clone().unwrap_or_else(|| "123".into()),
        cardholder_name: String::new(),
    };
    let outcome = submit_card(&shared, &id, &input).and_then(|outcome| match outcome {
        PayOutcome::NeedsAuthentication => shared
            .with_ledger(&RequestInfo::default(), |ledger, now| {
                ledger.authenticate_session(&id, approve, now)
            }),
        other => Ok(other),
    });
    match outcome {
        Ok(_) => {
            let session = shared.with_ledger(&RequestInfo::default(), |ledger, _| {
                ledger.session_json(&id)
            });
            match session {
                Ok(session) => HttpResponse::Ok().json(session),
                Err(error) => error_response(&error),
            }
        }
        Err(error) => error_response(&error),
    }
}

async fn deliveries(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "deliveries": shared.webhooks.deliveries() }))
}

async fn audit(shared: web::Data<Shared>) -> HttpResponse {
    let audit = shared.with_ledger(&RequestInfo::default(), |ledger, _| ledger.audit());
    HttpResponse::Ok().json(audit)
}

async fn show_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(lock(&shared.faults).clone())
}

async fn update_faults(shared: web::Data<Shared>, update: web::Json<FaultsUpdate>) -> HttpResponse {
    let mut faults = lock(&shared.faults);
    faults.apply(update.into_inner());
    tracing::info!(faults = ?*faults, "faults changed");
    HttpResponse::Ok().json(faults.clone())
}

async fn reset_faults(shared: web::Data<Shared>) -> HttpResponse {
    let mut faults = lock(&shared.faults);
    *faults = Faults::default();
    HttpResponse::Ok().json(faults.clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    advance_seconds: u32,
}

async fn advance_clock(
    shared: web::Data<Shared>,
    request: web::Json<ClockRequest>,
) -> HttpResponse {
    shared
        .clock_offset
        .fetch_add(i64::from(request.advance_seconds), Ordering::Relaxed);
    // Expire what is now due at once, rather than on the next tick.
    let now = shared.with_ledger(&RequestInfo::default(), |_, now| now);
    HttpResponse::Ok().json(json!({ "now": now }))
}
