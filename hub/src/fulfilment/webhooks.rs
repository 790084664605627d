//! `POST /webhooks/oms` and `POST /webhooks/logistics`: status reports from the OMS and the
//! carrier, signed like the payment provider's (`Omnihub-Signature: t=…,v1=…`, HMAC-SHA256 of
//! `"{t}.{body}"`), deduplicated by event id, applied to the order by its basket's actor. A bad
//! signature, an unknown order or an impossible transition is refused with a reason (and
//! logged); the order is unchanged. A late or repeated report is accepted and changes nothing.

use crate::actors::checkout::ApplyFulfilment;
use crate::app::HubHandle;
use crate::payments::routes::{refuse, remember};
use crate::payments::webhook::verify;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::order::{FulfilmentUpdate, ShipmentRecord, TrackingStatus};
use protocol::{OrderId, Sku};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

/// The signing secrets of the two senders.
pub struct FulfilmentSecrets {
    pub oms: secrecy::SecretString,
    pub logistics: secrecy::SecretString,
    pub tolerance_secs: i64,
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct OmsShipment {
    id: String,
    carrier: String,
    tracking_number: String,
    #[serde(default)]
    tracking_url: String,
    #[serde(default)]
    lines: Vec<OmsLine>,
}

#[derive(Deserialize)]
struct OmsLine {
    sku: String,
    quantity: u32,
}

pub async fn oms(
    req: HttpRequest,
    body: web::Bytes,
    handle: web::Data<HubHandle>,
    secrets: web::Data<FulfilmentSecrets>,
) -> HttpResponse {
    receive(
        &req,
        &body,
        &handle,
        secrets.oms.expose_secret(),
        "oms",
        secrets.tolerance_secs,
    )
    .await
}

pub async fn logistics(
    req: HttpRequest,
    body: web::Bytes,
    handle: web::Data<HubHandle>,
    secrets: web::Data<FulfilmentSecrets>,
) -> HttpResponse {
    receive(
        &req,
        &body,
        &handle,
        secrets.logistics.expose_secret(),
        "logistics",
        secrets.tolerance_secs,
    )
    .await
}

async fn receive(
    req: &HttpRequest,
    body: &[u8],
    handle: &HubHandle,
    secret: &str,
    source: &'static str,
    tolerance: i64,
) -> HttpResponse {
    let header = req
        .headers()
        .get("Omnihub-Signature")
        .and_then(|v| v.to_str().ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = verify(secret, header, body, now, tolerance) {
        return refuse(StatusCode::BAD_REQUEST, "bad_signature", e.to_string());
    }
    let event: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_event",
                format!("the body is not an event: {e}"),
            )
        }
    };
    let seen_key = format!("{source}:{}", event.id);
    match crate::storage::OrderStore::webhook_seen(handle.storage.as_ref(), &seen_key).await {
        Ok(true) => return HttpResponse::Ok().json(json!({"received": true, "duplicate": true})),
        Ok(false) => {}
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        }
    }
    let (order, update) = match parse(source, &event) {
        Ok(Some(parsed)) => parsed,
        // An event type the hub does not use: acknowledged.
        Ok(None) => return HttpResponse::Ok().json(json!({"received": true, "ignored": true})),
        Err(reason) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, "bad_event", reason),
    };
    let found = match handle.backend.admin_order(&order.to_string()).await {
        Ok(o) => o,
        Err(channels::BackendError::NotFound(_)) => {
            return refuse(
                StatusCode::NOT_FOUND,
                "unknown_order",
                format!("no order {order}"),
            )
        }
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        }
    };
    let msg = ApplyFulfilment {
        order: found.id,
        update,
        source,
    };
    match handle.backend.apply_fulfilment(found.basket, msg).await {
        Ok(_) => {
            remember(handle, seen_key);
            HttpResponse::Ok().json(json!({"received": true}))
        }
        Err(channels::BackendError::Conflict { code, message, .. }) => {
            refuse(StatusCode::CONFLICT, code, message)
        }
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_applied",
            format!("the event could not be applied now ({e}); retry later"),
        ),
    }
}

/// The order an event is about and what it says; `None` for event types the hub ignores.
fn parse(source: &str, event: &Envelope) -> Result<Option<(OrderId, FulfilmentUpdate)>, String> {
    let order = event.data["order_id"]
        .as_str()
        .ok_or("data.order_id is missing")?
        .parse::<OrderId>()
        .map_err(|_| "data.order_id is not an order id".to_string())?;
    let update = match (source, event.kind.as_str()) {
        ("oms", "order.allocated") => FulfilmentUpdate::Allocated {
            oms_id: event.data["oms_id"].as_str().map(str::to_string),
        },
        ("oms", "order.picked") => FulfilmentUpdate::Picked,
        ("oms", "order.shipped") => {
            let s: OmsShipment = serde_json::from_value(event.data["shipment"].clone())
                .map_err(|e| format!("data.shipment: {e}"))?;
            let mut lines = Vec::new();
            for l in s.lines {
                let sku = Sku::parse(&l.sku).map_err(|e| e.to_string())?;
                lines.push((sku, l.quantity));
            }
            FulfilmentUpdate::Shipped(ShipmentRecord {
                id: s.id,
                carrier: s.carrier,
                tracking_number: s.tracking_number,
                tracking_url: s.tracking_url,
                lines,
                progress: protocol::order::Progress::Shipped,
                exception: None,
            })
        }
        ("oms", "order.cancelled") => FulfilmentUpdate::Cancelled {
            reason: event.data["reason"]
                .as_str()
                .unwrap_or("cancelled by the warehouse")
                .to_string(),
        },
        ("oms", "order.returned") => FulfilmentUpdate::Returned,
        ("logistics", "tracking.updated") => {
            let status: TrackingStatus = serde_json::from_value(event.data["status"].clone())
                .map_err(|e| format!("data.status: {e}"))?;
            FulfilmentUpdate::Tracking {
                tracking_number: event.data["tracking_number"]
                    .as_str()
                    .ok_or("data.tracking_number is missing")?
                    .to_string(),
                status,
                location: event.data["location"].as_str().unwrap_or("").to_string(),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some((order, update)))
}
