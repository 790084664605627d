//! `/_sim/*`: the logistics simulator's test API (no key; the simulator listens on loopback by
//! default), and `/healthz`.
//!
//! - `GET /_sim/stats` → `{"shipments", "deliveries" (label requests accepted, repeats
//!   included), "duplicates", "effects_applied_twice", "delivered", "exceptions"}`.
//! - `GET|POST|DELETE /_sim/faults`: show, partly update, reset the faults (the same shape as
//!   the OMS simulator's; they act on `/shipments`).
//! - `GET /_sim/deliveries` → `{"deliveries": [{id, event_id, event_type, url, attempts,
//!   status, last_status_code, last_error}]}`, oldest first.
//! - `POST /_sim/advance` `{"seconds": n}` moves the clock on and takes every parcel through
//!   the events now due → `{"now": unix}`.

use super::{lock, Shared};
use crate::common::error;
use crate::common::faults::{self, SharedFaults};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

pub(super) fn routes(config: &mut web::ServiceConfig, faults: SharedFaults) {
    faults::routes(config, faults);
    config
        .route("/_sim/stats", web::get().to(stats))
        .route("/_sim/deliveries", web::get().to(deliveries))
        .route("/_sim/advance", web::post().to(advance))
        .route("/healthz", web::get().to(healthz));
}

async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(lock(&shared.parcels).stats())
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
    shared.tick();
    HttpResponse::Ok().json(json!({ "now": shared.clock.unix() }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}
