//! The OMS API the hub calls, behind the faults and the API key:
//!
//! - `POST /orders` (header `X-Message-Id` recorded) → 201 `{"oms_id", "order_id", "number",
//!   "status": "received", "created"}`; the same order id again → 200 with the exact first body
//!   and `Idempotent-Replayed: true`. Malformed JSON → 400 `malformed_json`; a body that is not
//!   an order → 422 `invalid_order`; other 422 codes: `bad_order_id`, `missing_number`,
//!   `missing_lines`, `too_many_lines`, `bad_sku`, `bad_quantity`.
//! - `GET /orders/{order_id}` → the order with its status, shipments and history; 404
//!   `not_found`.
//! - `POST /orders/{order_id}/cancel` → 200 the order (fires `order.cancelled` once); 409
//!   `already_shipped` once a shipment has left; 404 `not_found`.

use super::book::{NewOrder, Received, Refusal};
use super::{lock, Shared};
use crate::common::error;
use crate::common::faults::gate;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::error::Category;
use tracing::instrument;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/orders", web::post().to(create))
        .route("/orders/{order_id}", web::get().to(show))
        .route("/orders/{order_id}/cancel", web::post().to(cancel));
}

#[instrument(skip_all)]
async fn create(shared: web::Data<Shared>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(refused) = gate(&shared.faults, &request, &shared.api_key).await {
        return refused;
    }
    let order: NewOrder = match serde_json::from_slice(&body) {
        Ok(order) => order,
        Err(e) if matches!(e.classify(), Category::Data) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_order",
                &format!("The body is not an order: {e}"),
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
    if let Err((code, message)) = order.validate() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, code, &message);
    }
    let message_id = request
        .headers()
        .get("x-message-id")
        .and_then(|v| v.to_str().ok());
    let received = lock(&shared.book).receive(
        order,
        message_id,
        shared.clock.now_ms(),
        shared.clock.unix(),
    );
    match received {
        Received::Created(body) => HttpResponse::Created()
            .content_type("application/json")
            .body(body.to_string()),
        Received::Replayed(body) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("idempotent-replayed", "true"))
            .body(body.to_string()),
    }
}

async fn show(
    shared: web::Data<Shared>,
    request: HttpRequest,
    order_id: web::Path<String>,
) -> HttpResponse {
    if let Err(refused) = gate(&shared.faults, &request, &shared.api_key).await {
        return refused;
    }
    let order = lock(&shared.book).get(&order_id).map(|o| o.json());
    match order {
        Some(order) => HttpResponse::Ok().json(order),
        None => not_found(&order_id),
    }
}

#[instrument(skip_all, fields(order_id = %order_id))]
async fn cancel(
    shared: web::Data<Shared>,
    request: HttpRequest,
    order_id: web::Path<String>,
) -> HttpResponse {
    if let Err(refused) = gate(&shared.faults, &request, &shared.api_key).await {
        return refused;
    }
    let mut book = lock(&shared.book);
    match book.cancel(&order_id, shared.clock.unix()) {
        Ok((order, event)) => {
            if let Some(event) = event {
                shared.webhooks.publish(event);
            }
            drop(book);
            HttpResponse::Ok().json(order)
        }
        Err(refusal) => refused(refusal, &order_id),
    }
}

pub(super) fn not_found(order_id: &str) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("No order {order_id}"),
    )
}

pub(super) fn refused(refusal: Refusal, order_id: &str) -> HttpResponse {
    match refusal {
        Refusal::Unknown => not_found(order_id),
        Refusal::Conflict(code, message) => error(StatusCode::CONFLICT, code, &message),
    }
}
