//! Stripe's `/v1` API: one handler that does what Stripe does around every call — faults (the
//! simulator's), the secret key, form decoding, the `Idempotency-Key`, `expand[]` — and a
//! dispatch table to the ledger and the webhook endpoints.
//!
//! Routes: `POST/GET /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`,
//! `GET …/{id}/line_items`, `POST …/{id}/expire`; `POST/GET /v1/payment_intents`,
//! `GET/POST /v1/payment_intents/{id}`, `POST …/{id}/confirm|capture|cancel`;
//! `GET /v1/charges`, `GET /v1/charges/{id}`; `POST/GET /v1/refunds`, `GET /v1/refunds/{id}`;
//! `POST/GET /v1/webhook_endpoints`, `GET/DELETE /v1/webhook_endpoints/{id}`;
//! `GET /v1/events`, `GET /v1/events/{id}`.

use super::errors::StripeError;
use super::form::{self, Params};
use super::idempotency::Claim;
use super::ledger::Ledger;
use super::objects::new_id;
use super::webhooks::RequestInfo;
use super::{lock, Shared, API_VERSION};
use crate::common::faults::HOLD;
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;

/// Webhook endpoints an account may have, as at Stripe.
const MAX_ENDPOINTS: usize = 16;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config.route("/v1/{tail:.*}", web::route().to(v1));
}

/// A JSON answer with Stripe's headers.
fn respond(status: u16, body: &Value, request_id: &str, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response
        .insert_header(("request-id", request_id))
        .insert_header(("stripe-version", API_VERSION))
        .content_type("application/json");
    if replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    response.body(serde_json::to_string_pretty(body).unwrap_or_default())
}

/// Any path outside the routes: Stripe's "Unrecognized request URL".
pub(super) async fn no_route(request: HttpRequest) -> HttpResponse {
    let error = unrecognized(&request);
    respond(error.status, &error.body(), &new_id("req"), false)
}

fn unrecognized(request: &HttpRequest) -> StripeError {
    StripeError::request(format!(
        "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
        request.method(),
        request.path()
    ))
    .with_status(404)
}

async fn v1(shared: web::Data<Shared>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let request_id = new_id("req");
    let fault = lock(&shared.faults).next_call();
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    if fault.fail {
        let error = StripeError::api(
            "An unknown error occurred (injected by omnihub sim payments).".into(),
        );
        return respond(500, &error.body(), &request_id, false);
    }
    if fault.hold {
        tokio::time::sleep(HOLD).await;
    }
    match call(&shared, &request, &body, &request_id) {
        Ok((status, body, replayed)) => respond(status, &body, &request_id, replayed),
        Err(error) => respond(error.status, &error.body(), &request_id, false),
    }
}

/// Authenticates, decodes, applies the idempotency key and dispatches one call.
fn call(
    shared: &Shared,
    request: &HttpRequest,
    body: &[u8],
    request_id: &str,
) -> Result<(u16, Value, bool), StripeError> {
    authenticate(request.headers(), &shared.secret_key)?;
    let method = request.method().as_str().to_owned();
    let params = if method == "POST" {
        form::decode(body)?
    } else {
        form::decode(request.query_string().as_bytes())?
    };
    let path = request.path().to_owned();
    let key = match request.headers().get("idempotency-key") {
        Some(value) if method == "POST" => Some(
            value
                .to_str()
                .map_err(|_| StripeError::request("Invalid Idempotency-Key header.".into()))?
                .to_owned(),
        ),
        _ => None,
    };
    let info = RequestInfo {
        id: Some(request_id.to_owned()),
        idempotency_key: key.clone(),
    };
    let Some(key) = key else {
        let result = dispatch(shared, request, &method, &path, &params, &info);
        return result.map(|body| (200, body, false));
    };
    let claim = lock(&shared.keys).claim(&key, &method, &path, &params, shared.now())?;
    if let Claim::Replay { status, body } = claim {
        return Ok((status, body, true));
    }
    let (status, body) = match dispatch(shared, request, &method, &path, &params, &info) {
        Ok(body) => (200, body),
        Err(error) => (error.status, error.body()),
    };
    lock(&shared.keys).finish(&key, &method, &path, status, &body);
    Ok((status, body, false))
}

/// `Authorization: Bearer sk_test_…` or `Basic base64("sk_test_…:")`.
fn authenticate(headers: &HeaderMap, secret_key: &str) -> Result<(), StripeError> {
    let header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    let key = if let Some(token) = header.strip_prefix("Bearer ") {
        token.trim().to_owned()
    } else if let Some(basic) = header.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(|user| user.split(':').next().unwrap_or_default().to_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    if key.is_empty() {
        return Err(StripeError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.".into(),
        ));
    }
    if key != secret_key {
        let tail: String = key
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let prefix: String = key.chars().take(8).collect();
        return Err(StripeError::unauthorized(format!(
            "Invalid API Key provided: {prefix}****{tail}"
        ))
        .with_code("api_key_invalid"));
    }
    Ok(())
}

fn dispatch(
    shared: &Shared,
    request: &HttpRequest,
    method: &str,
    path: &str,
    params: &Value,
    info: &RequestInfo,
) -> Result<Value, StripeError> {
    let segments: Vec<&str> = path
        .trim_start_matches("/v1/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let expand = Params::new(params).strings("expand")?;
    shared.with_ledger(info, |ledger, now| {
        let mut result = route(shared, ledger, method, &segments, params, now)
            .ok_or_else(|| unrecognized(request))??;
        for path in &expand {
            expand_path(ledger, &mut result, path)?;
        }
        Ok(result)
    })
}

/// The dispatch table; `None` when no route matches.
fn route(
    shared: &Shared,
    ledger: &mut Ledger,
    method: &str,
    segments: &[&str],
    params: &Value,
    now: i64,
) -> Option<Result<Value, StripeError>> {
    let webhooks = &shared.webhooks;
    Some(match (method, segments) {
        ("POST", ["checkout", "sessions"]) => ledger.create_session(params, now),
        ("GET", ["checkout", "sessions"]) => ledger.list_sessions(params),
        ("GET", ["checkout", "sessions", id]) => ledger.session_json(id),
        ("GET", ["checkout", "sessions", id, "line_items"]) => {
            ledger.session(id).map(|s| s.line_items_json())
        }
        ("POST", ["checkout", "sessions", id, "expire"]) => ledger.expire_session(id),
        ("POST", ["payment_intents"]) => ledger.create_intent(params, now),
        ("GET", ["payment_intents"]) => ledger.list_intents(params),
        ("GET", ["payment_intents", id]) => ledger.intent(id).map(|i| i.json()),
        ("POST", ["payment_intents", id]) => ledger.update_intent(id, params),
        ("POST", ["payment_intents", id, "confirm"]) => ledger.confirm_intent(id, params, now),
        ("POST", ["payment_intents", id, "capture"]) => ledger.capture_intent(id, params),
        ("POST", ["payment_intents", id, "cancel"]) => ledger.cancel_intent(id, params, now),
        ("GET", ["charges"]) => ledger.list_charges(params),
        ("GET", ["charges", id]) => ledger.charge(id).map(|c| c.json()),
        ("POST", ["refunds"]) => ledger.create_refund(params, now),
        ("GET", ["refunds"]) => ledger.list_refunds(params),
        ("GET", ["refunds", id]) => ledger.refund(id).map(|r| r.json()),
        ("POST", ["webhook_endpoints"]) => create_endpoint(shared, params, now),
        ("GET", ["webhook_endpoints"]) => Ok(webhooks.endpoints()),
        ("GET", ["webhook_endpoints", id]) => webhooks
            .endpoint(id)
            .ok_or_else(|| StripeError::no_such("webhook endpoint", id, "id")),
        ("DELETE", ["webhook_endpoints", id]) => {
            if webhooks.delete_endpoint(id) {
                Ok(json!({"id": id, "object": "webhook_endpoint", "deleted": true}))
            } else {
                Err(StripeError::no_such("webhook endpoint", id, "id"))
            }
        }
        ("GET", ["events"]) => list_events(shared, params),
        ("GET", ["events", id]) => webhooks
            .event(id)
            .map(|e| (*e).clone())
            .ok_or_else(|| StripeError::no_such("event", id, "id")),
        _ => return None,
    })
}

fn create_endpoint(shared: &Shared, tree: &Value, now: i64) -> Result<Value, StripeError> {
    let params = Params::new(tree);
    params.only(&[
        "url",
        "enabled_events",
        "description",
        "metadata",
        "api_version",
        "connect",
        "expand",
    ])?;
    let url = params.required_str("url")?;
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(
                StripeError::invalid(format!("Invalid URL: {url}"), "url").with_code("url_invalid")
            )
        }
    }
    if shared.webhooks.endpoint_count() >= MAX_ENDPOINTS {
        return Err(StripeError::request(format!(
            "You have reached the maximum of {MAX_ENDPOINTS} test webhook endpoints."
        )));
    }
    let events = params.strings("enabled_events")?;
    if events.is_empty() {
        return Err(StripeError::missing("enabled_events"));
    }
    Ok(shared.webhooks.add_endpoint(
        url.to_owned(),
        shared.webhook_secret.clone(),
        events,
        params.str("description")?.map(str::to_owned),
        params.metadata("metadata")?,
        now,
    ))
}

fn list_events(shared: &Shared, tree: &Value) -> Result<Value, StripeError> {
    let params = Params::new(tree);
    let limit = match params.int("limit")? {
        None => 10,
        Some(limit @ 1..=100) => limit as usize,
        Some(_) => {
            return Err(StripeError::invalid(
                "This value must be between 1 and 100.".into(),
                "limit",
            ))
        }
    };
    Ok(shared.webhooks.events(limit, params.str("type")?))
}

/// `expand[]=payment_intent`, `expand[]=line_items`, `expand[]=data.latest_charge`, …: replaces
/// an id with its object (or adds a session's line items), following dots.
fn expand_path(ledger: &Ledger, value: &mut Value, path: &str) -> Result<(), StripeError> {
    let cannot = || {
        StripeError::invalid(
            format!("This property cannot be expanded ({path})."),
            "expand",
        )
    };
    let mut parts = path.splitn(2, '.');
    let field = parts.next().unwrap_or_default();
    let rest = parts.next();
    if field == "data" && value["object"] == "list" {
        if let (Some(items), Some(rest)) = (value["data"].as_array_mut(), rest) {
            for item in items {
                expand_path(ledger, item, rest)?;
            }
            return Ok(());
        }
    }
    if field == "line_items" && value["object"] == "checkout.session" {
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        value["line_items"] = ledger.session(&id)?.line_items_json();
    }
    let target = value.get_mut(field).ok_or_else(cannot)?;
    if let Some(id) = target.as_str() {
        let expanded = match id.split('_').next() {
            Some("pi") => ledger.intent(id).map(|i| i.json()).ok(),
            Some("ch") => ledger.charge(id).map(|c| c.json()).ok(),
            Some("re") => ledger.refund(id).map(|r| r.json()).ok(),
            Some("cs") => ledger.session_json(id).ok(),
            _ => None,
        };
        if let Some(object) = expanded {
            *target = object;
        }
    }
    match rest {
        Some(rest) if target.is_object() => expand_path(ledger, target, rest),
        Some(_) if target.is_null() => Ok(()),
        Some(_) => Err(cannot()),
        None => Ok(()),
    }
}
