//! `/_sim/*`: the OMS simulator's test API (no key; the simulator listens on loopback by
//! default), and `/healthz`.
//!
//! - `GET /_sim/stats` → `{"orders", "deliveries", "duplicates", "effects_applied_twice",
//!   "distinct_message_ids"}`.
//! - `GET|POST|DELETE /_sim/faults`: show, partly update, reset the faults.
//! - `GET /_sim/deliveries` → `{"deliveries": [{id, event_id, event_type, url, attempts,
//!   status, last_status_code, last_error}]}`, oldest first.
//! - `POST /_sim/advance` `{"seconds": n}` moves the clock on, takes every order whose steps are
//!   due through them and waits for the shipping calls that started → `{"now": unix}`.
//! - `POST /_sim/orders/{order_id}/return` → 200 the order, fires `order.returned`; 409
//!   `not_shipped`, 404 `not_found`.

use super::api::refused;
use super::{lock, Shared};
use crate::common::error;
use crate::common::faults::{self, SharedFaults};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub(super) fn routes(config: &mut web::ServiceConfig, faults: SharedFaults) {
    faults::routes(config, faults);
    config
        .route("/_sim/stats", web::get().to(stats))
        .route("/_sim/deliveries", web::get().to(deliveries))
        .route("/_sim/advance", web::post().to(advance))
        .route(
            "/_sim/orders/{order_id}/return",
            web::post().to(return_order),
        )
        .route("/healthz", web::get().to(healthz));
}

async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(lock(&shared.book).stats())
}

async fn deliveries(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "deliveries": shared.webhooks.deliveries() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: u64,
}

async fn advance(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Advance>(&body) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_advance",
            "Send {\"seconds\": n}.",
        );
    };
    shared.clock.advance(request.seconds);
    let shared = web::Data::into_inner(shared);
    for job in Arc::clone(&shared).tick() {
        // A shipping task only ends early if the runtime is shutting down.
        let _ = job.await;
    }
    HttpResponse::Ok().json(json!({ "now": shared.clock.unix() }))
}

async fn return_order(shared: web::Data<Shared>, order_id: web::Path<String>) -> HttpResponse {
    let mut book = lock(&shared.book);
    match book.return_order(&order_id, shared.clock.unix()) {
        Ok((order, event)) => {
            shared.webhooks.publish(event);
            drop(book);
            HttpResponse::Ok().json(order)
        }
        Err(refusal) => refused(refusal, &order_id),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}
