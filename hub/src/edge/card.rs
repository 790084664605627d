//! Card payments taken at the stores' tills (`docs/pos.md`, "Card payments"): a node asks the
//! hub to authorise a card its terminal read (online at the till, or later for a payment taken
//! offline), then to capture it once the sale is recorded (or to cancel it when the sale was
//! not). The hub does it with its payment provider client: a PaymentIntent with
//! `capture_method=manual`, confirmed with the terminal's token.
//!
//! The node authenticates with its sync credential (`Authorization: Bearer`). Every provider
//! call carries an idempotency key made of the node's replica and the node's id of the card
//! payment, so a retry or a resync never authorises (or captures) twice. A capture or cancel
//! is refused for an intent another node authorised.
//!
//! - `POST /api/v1/edge/card/authorize {payment, amount, currency, token, offline}` →
//!   `200 {"status": "authorised", "reference": "pi_…"}` or
//!   `200 {"status": "declined", "code", "message"}`; `503 provider_unavailable`.
//! - `POST /api/v1/edge/card/capture {payment, reference}` → `200 {"status": "captured"}`.
//! - `POST /api/v1/edge/card/cancel {payment, reference}` → `200 {"status": "canceled"}`.

use super::Node;
use crate::payments::client::{NewCardPayment, PaymentClient, ProviderError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::error::ApiError;
use serde::Deserialize;
use serde_json::json;

/// What the card routes need: the provider client.
pub struct CardAuthority {
    pub payments: PaymentClient,
}

/// Registers the routes (the caller adds `web::Data<CardAuthority>`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/edge/card")
            .route("/authorize", web::post().to(authorize))
            .route("/capture", web::post().to(capture))
            .route("/cancel", web::post().to(cancel)),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeBody {
    payment: String,
    amount: i64,
    currency: String,
    token: String,
    #[serde(default)]
    offline: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    payment: String,
    reference: String,
}

/// The node whose credential the request carries (not retired), else 401.
async fn node_of(req: &HttpRequest) -> Result<Node, ApiError> {
    let handle = req
        .app_data::<web::Data<crate::app::HubHandle>>()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "retry shortly",
            )
        })?;
    super::session::authenticated_node(req, &handle.edge).await
}

fn authority(req: &HttpRequest) -> Result<web::Data<CardAuthority>, ApiError> {
    req.app_data::<web::Data<CardAuthority>>()
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "card payments are not set up on this hub",
            )
        })
}

fn plain(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unavailable(e: &ProviderError) -> ApiError {
    tracing::warn!(error = %e, "the payment provider did not answer a store's card call");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "provider_unavailable",
        "the payment provider does not answer: the node keeps the card payment and asks again",
    )
}

/// `POST /api/v1/edge/card/authorize`.
#[tracing::instrument(name = "edge_card_authorize", skip_all)]
async fn authorize(
    req: HttpRequest,
    body: web::Json<AuthorizeBody>,
) -> Result<HttpResponse, ApiError> {
    let node = node_of(&req).await?;
    let cards = authority(&req)?;
    let b = body.into_inner();
    if !plain(&b.payment, 64) || !b.token.starts_with("pm_") || !plain(&b.token, 100) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_card_payment",
            "payment (the node's id, letters, digits, '_' or '-') and token (the terminal's pm_…) are required",
        ));
    }
    if b.amount < 1 || b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_alphabetic())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            "amount must be positive minor units and currency an ISO 4217 code",
        ));
    }
    let new = NewCardPayment {
        amount: b.amount,
        currency: b.currency.clone(),
        payment_method: b.token.clone(),
        metadata: vec![
            ("store_payment".into(), b.payment.clone()),
            ("replica".into(), node.replica.to_string()),
            ("location".into(), node.location.to_string()),
        ],
        idempotency_key: format!("edge-card:{}:{}:authorize", node.replica, b.payment),
    };
    // The same parameters on every attempt (the till's, then the forwarder's after an outage):
    // the provider replays the first answer for the idempotency key; a replay can be stale (an
    // authorisation cancelled since, when the sale failed), so the intent is read again.
    let answer = match cards.payments.authorize_card(&new).await {
        Ok(intent) => cards.payments.payment_intent(&intent.id).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(intent) if intent.status != "requires_capture" && intent.status != "succeeded" => {
            // E.g. a card that wants 3-D Secure, which a card present at a till cannot do.
            tracing::info!(node = %node.replica, payment = %b.payment, status = %intent.status, "store card payment not authorised");
            Ok(HttpResponse::Ok().json(json!({
                "status": "declined",
                "code": intent.status,
                "message": "the card was not authorised",
            })))
        }
        Ok(intent) => {
            tracing::info!(node = %node.replica, payment = %b.payment, intent = %intent.id, status = %intent.status, offline = b.offline, "store card payment authorised");
            Ok(HttpResponse::Ok().json(json!({"status": "authorised", "reference": intent.id})))
        }
        Err(ProviderError::Api {
            status,
            code,
            message,
            ..
        }) if status != 429 && code.as_deref() != Some("idempotency_error") => {
            tracing::info!(node = %node.replica, payment = %b.payment, ?code, offline = b.offline, "store card payment declined");
            Ok(HttpResponse::Ok().json(json!({
                "status": "declined",
                "code": code.unwrap_or_else(|| "card_declined".into()),
                "message": message,
            })))
        }
        Err(e) => Err(unavailable(&e)),
    }
}

/// Reads the intent and checks the node owns it.
async fn owned(
    cards: &CardAuthority,
    node: &Node,
    b: &SettleBody,
) -> Result<crate::payments::client::PaymentIntent, ApiError> {
    if !plain(&b.reference, 100) || !b.reference.starts_with("pi_") || !plain(&b.payment, 64) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_card_payment",
            "payment (the node's id) and reference (pi_…) are required",
        ));
    }
    let intent = match cards.payments.payment_intent(&b.reference).await {
        Ok(i) => i,
        Err(e) if e.is_missing() => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("payment {} not found", b.reference),
            ))
        }
        Err(e) => return Err(unavailable(&e)),
    };
    let mine = intent.metadata.get("replica").map(String::as_str) == Some(node.replica.as_str())
        && intent.metadata.get("store_payment") == Some(&b.payment);
    if !mine {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this payment was not authorised for this node's card payment",
        ));
    }
    Ok(intent)
}

/// `POST /api/v1/edge/card/capture`: captures in full (an intent already captured answers the
/// same).
#[tracing::instrument(name = "edge_card_capture", skip_all)]
async fn capture(req: HttpRequest, body: web::Json<SettleBody>) -> Result<HttpResponse, ApiError> {
    let node = node_of(&req).await?;
    let cards = authority(&req)?;
    let b = body.into_inner();
    let intent = owned(&cards, &node, &b).await?;
    if intent.status == "succeeded" {
        return Ok(HttpResponse::Ok().json(json!({"status": "captured", "reference": intent.id})));
    }
    let key = format!("edge-card:{}:{}:capture", node.replica, b.payment);
    match cards.payments.capture_intent(&intent.id, &key).await {
        Ok(i) => {
            tracing::info!(node = %node.replica, payment = %b.payment, intent = %i.id, "store card payment captured");
            Ok(HttpResponse::Ok().json(json!({"status": "captured", "reference": i.id})))
        }
        Err(ProviderError::Api { message, .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_capturable",
            format!("the payment cannot be captured: {message}"),
        )),
        Err(e) => Err(unavailable(&e)),
    }
}

/// `POST /api/v1/edge/card/cancel`: releases an authorisation whose sale was not recorded.
#[tracing::instrument(name = "edge_card_cancel", skip_all)]
async fn cancel(req: HttpRequest, body: web::Json<SettleBody>) -> Result<HttpResponse, ApiError> {
    let node = node_of(&req).await?;
    let cards = authority(&req)?;
    let b = body.into_inner();
    let intent = owned(&cards, &node, &b).await?;
    if intent.status == "canceled" {
        return Ok(HttpResponse::Ok().json(json!({"status": "canceled", "reference": intent.id})));
    }
    let key = format!("edge-card:{}:{}:cancel", node.replica, b.payment);
    match cards.payments.cancel_intent(&intent.id, &key).await {
        Ok(i) => Ok(HttpResponse::Ok().json(json!({"status": "canceled", "reference": i.id}))),
        Err(ProviderError::Api { message, .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancelable",
            format!("the payment cannot be canceled: {message}"),
        )),
        Err(e) => Err(unavailable(&e)),
    }
}
