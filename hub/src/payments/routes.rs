//! `POST /webhooks/payments`: the provider's events, verified, deduplicated by event id and
//! handed to the checkout's basket actor. Any failure to apply answers 500, so the provider
//! retries; an event type the hub does not use answers 200.

use super::client::Session;
use super::webhook::verify;
use crate::app::HubHandle;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::BackendError;
use protocol::CheckoutId;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

/// What the webhook endpoint needs.
pub struct WebhookSettings {
    pub secret: secrecy::SecretString,
    pub tolerance_secs: i64,
}

#[derive(Deserialize)]
struct EventEnvelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: Value,
}

/// Remembers a handled event id, off the answer's path: remembering only saves work on a
/// duplicate (applying an event twice changes nothing), so the sender is not kept waiting.
pub(crate) fn remember(handle: &HubHandle, key: String) {
    let mark = crate::storage::UnitOfWork::new()
        .with(crate::storage::Change::MarkWebhookEvent(key.clone()));
    let storage = handle.storage.clone();
    actix_web::rt::spawn(async move {
        if let Err(e) = crate::storage::Committer::commit(storage.as_ref(), mark).await {
            tracing::warn!(event = %key, error = %e, "cannot remember the webhook event");
        }
    });
}

/// A refused webhook: its status and a JSON error with a reason.
pub(crate) fn refuse(
    status: actix_web::http::StatusCode,
    code: &str,
    message: String,
) -> HttpResponse {
    tracing::warn!(code, %message, "webhook refused");
    let mut res =
        HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}));
    // The refusal's code, for `omnihub_webhooks_total{outcome}`.
    res.extensions_mut()
        .insert(crate::monitor::http::WebhookRefusal(code.to_string()));
    res
}

/// The checkout an object is about: `client_reference_id` or `metadata.checkout_id`.
fn checkout_of(object: &Value) -> Option<CheckoutId> {
    object
        .get("client_reference_id")
        .and_then(Value::as_str)
        .or_else(|| {
            object
                .pointer("/metadata/checkout_id")
                .and_then(Value::as_str)
        })
        .and_then(|s| s.parse().ok())
}

pub async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    handle: web::Data<HubHandle>,
    settings: web::Data<WebhookSettings>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let header = req
        .headers()
        .get("Stripe-Signature")
        .and_then(|v| v.to_str().ok());
    // Signatures are about real time, whatever clock the hub's domain logic runs on.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = verify(
        settings.secret.expose_secret(),
        header,
        &body,
        now,
        settings.tolerance_secs,
    ) {
        return refuse(StatusCode::BAD_REQUEST, "bad_signature", e.to_string());
    }
    let event: EventEnvelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_event",
                format!("the body is not an event object: {e}"),
            )
        }
    };
    let storage = &handle.storage;
    match crate::storage::OrderStore::webhook_seen(storage.as_ref(), &event.id).await {
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
    let outcome = apply(&handle, &event).await;
    match outcome {
        Ok(()) | Err(BackendError::NotFound(_)) => {
            remember(&handle, event.id.clone());
            HttpResponse::Ok().json(json!({"received": true}))
        }
        Err(e) => {
            tracing::warn!(event = %event.id, kind = %event.kind, error = %e, "webhook not applied; the provider will retry");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not_applied",
                "the event could not be applied now; retry later".into(),
            )
        }
    }
}

async fn apply(handle: &HubHandle, event: &EventEnvelope) -> Result<(), BackendError> {
    let backend = &handle.backend;
    let object = &event.data.object;
    let Some(checkout) = checkout_of(object) else {
        // Not one of the hub's payments (or an event type without one): nothing to do.
        return Ok(());
    };
    let counted = match event.kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => "succeeded",
        "checkout.session.expired" => "expired",
        "payment_intent.payment_failed" => "failed",
        "payment_intent.succeeded" => "confirmed",
        _ => "other",
    };
    crate::monitor::metrics::metrics()
        .payment_events
        .with_label_values(&[counted])
        .inc();
    match event.kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let session: Session = serde_json::from_value(object.clone()).map_err(|e| {
                BackendError::Unprocessable {
                    code: "bad_event",
                    message: e.to_string(),
                }
            })?;
            if session.is_paid() {
                backend.payment_succeeded(checkout, session).await?;
            }
            Ok(())
        }
        "checkout.session.expired" => backend.session_expired(checkout).await,
        "payment_intent.payment_failed" => {
            let code = object
                .pointer("/last_payment_error/decline_code")
                .and_then(Value::as_str);
            let message = match code {
                Some("insufficient_funds") => "Your card has insufficient funds.".to_string(),
                _ => object
                    .pointer("/last_payment_error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("Your card was declined.")
                    .to_string(),
            };
            backend
                .payment_failed(
                    checkout,
                    format!(
                        "{message} Try another card, or cancel the payment to change your basket."
                    ),
                )
                .await
        }
        "payment_intent.succeeded" => {
            // The session's own event makes the order; this one only confirms it, so a lost
            // session event is made up for by asking the provider.
            backend.confirm_checkout(checkout).await
        }
        _ => Ok(()),
    }
}
