//! The carrier's API, behind the faults and the API key, and its public tracking lookup:
//!
//! - `POST /shipments` `{"order_id", "reference", "address", "lines": [{sku, quantity}]}` →
//!   201 `{"id", "carrier", "tracking_number", "tracking_url", "status": "label_created"}`; the
//!   same reference again → 200 with the exact first body and `Idempotent-Replayed: true`.
//!   Malformed JSON → 400 `malformed_json`; not a shipment → 422 `invalid_shipment`; other 422
//!   codes: `bad_reference`, `missing_lines`, `bad_line`.
//! - `GET /shipments/{id}` → the shipment with its tracking events; 404 `not_found`.
//! - `GET /track/{tracking_number}` (HTML) and `GET /api/track/{tracking_number}` (JSON
//!   `{"tracking_number", "carrier", "status", "events": [{status, at, location}]}`): public,
//!   no key, no faults; 404 for an unknown number.

use super::parcels::{Created, NewShipment};
use super::{lock, Shared};
use crate::common::error;
use crate::common::faults::gate;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::error::Category;
use tracing::instrument;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/shipments", web::post().to(create))
        .route("/shipments/{id}", web::get().to(show))
        .route("/track/{tracking_number}", web::get().to(track_page))
        .route("/api/track/{tracking_number}", web::get().to(track_json));
}

#[instrument(skip_all)]
async fn create(shared: web::Data<Shared>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(refused) = gate(&shared.faults, &request, &shared.api_key).await {
        return refused;
    }
    let shipment: NewShipment = match serde_json::from_slice(&body) {
        Ok(shipment) => shipment,
        Err(e) if matches!(e.classify(), Category::Data) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_shipment",
                &format!("The body is not a shipment: {e}"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                &format!("The body is not JSON: {e}"),
            )
        }
    };
    if let Err((code, message)) = shipment.validate() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, code, &message);
    }
    let mut parcels = lock(&shared.parcels);
    match parcels.create(shipment, shared.clock.now_ms(), shared.clock.unix()) {
        Created::New(body, event) => {
            shared.webhooks.publish(event);
            drop(parcels);
            HttpResponse::Created()
                .content_type("application/json")
                .body(body.to_string())
        }
        Created::Replayed(body) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("idempotent-replayed", "true"))
            .body(body.to_string()),
    }
}

async fn show(
    shared: web::Data<Shared>,
    request: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    if let Err(refused) = gate(&shared.faults, &request, &shared.api_key).await {
        return refused;
    }
    let parcel = lock(&shared.parcels).by_id(&id).map(|p| p.json());
    match parcel {
        Some(parcel) => HttpResponse::Ok().json(parcel),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("No shipment {id}"),
        ),
    }
}

async fn track_json(shared: web::Data<Shared>, number: web::Path<String>) -> HttpResponse {
    let parcel = lock(&shared.parcels)
        .by_tracking(&number)
        .map(|p| p.public_json());
    match parcel {
        Some(parcel) => HttpResponse::Ok().json(parcel),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("No parcel with tracking number {number}"),
        ),
    }
}

async fn track_page(shared: web::Data<Shared>, number: web::Path<String>) -> HttpResponse {
    let parcel = lock(&shared.parcels)
        .by_tracking(&number)
        .map(|p| p.public_json());
    let status = if parcel.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let page = minijinja::context! { number => number.as_str(), parcel => parcel };
    super::dashboard::render(status, "track.html", page)
}
