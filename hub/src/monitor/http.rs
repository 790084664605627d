//! The middleware every hub request goes through first: its request id, its count and latency
//! in the metrics (per route pattern and status class), and — when `/metrics` has a listener of
//! its own — which paths that listener serves.

use super::metrics::metrics;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse};
use std::net::SocketAddr;
use std::time::Instant;

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's id: the caller's `X-Request-Id` when it is sane, else a new ULID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Where `/metrics` is served when it has a listener of its own (the bound address).
#[derive(Debug, Clone, Copy)]
pub struct MetricsListener(pub Option<SocketAddr>);

impl MetricsListener {
    /// Whether `req` came in on the metrics listener.
    pub fn serves(&self, req: &actix_web::HttpRequest) -> bool {
        self.0 == Some(req.app_config().local_addr())
    }
}

/// The paths the metrics listener answers; everything else there is a 404.
const METRICS_LISTENER_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// An id a caller may set: 1 to 64 characters of letters, digits, `-`, `_`, `.` (anything else
/// could forge log lines or carry data into them).
pub fn sane_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| sane_request_id(id))
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_string)
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A webhook's refusal code, left on its response for the metrics (`omnihub_webhooks_total`).
#[derive(Debug, Clone)]
pub struct WebhookRefusal(pub String);

/// The middleware (`actix_web::middleware::from_fn(observe)`), outermost in the hub's app.
pub async fn observe<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let on_metrics_listener = req
        .app_data::<actix_web::web::Data<MetricsListener>>()
        .is_some_and(|l| l.serves(req.request()));
    if on_metrics_listener && !METRICS_LISTENER_PATHS.contains(&req.path()) {
        let res = HttpResponse::NotFound().json(serde_json::json!({"error": {
            "code": "not_found",
            "message": "this listener serves /metrics, /healthz and /readyz only",
        }}));
        return Ok(req.into_response(res).map_into_right_body());
    }
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = method_label(req.method());
    let started = Instant::now();
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status();
    let class = status_class(status);
    let m = metrics();
    m.http_requests
        .with_label_values(&[method, &route, class])
        .inc();
    m.http_duration
        .with_label_values(&[method, &route, class])
        .observe(started.elapsed().as_secs_f64());
    if let Some(source) = route.strip_prefix("/webhooks/") {
        let outcome = if status.is_success() {
            "accepted".to_string()
        } else {
            res.response()
                .extensions()
                .get::<WebhookRefusal>()
                .map_or_else(|| class.to_string(), |r| r.0.clone())
        };
        m.webhooks.with_label_values(&[source, &outcome]).inc();
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_are_checked() {
        let cases = [
            ("abc-123_X.y", true),
            ("01HZY3J5V6Q8K9M2N4P6R8T0VW", true),
            ("", false),
            ("has space", false),
            ("line\nbreak", false),
            ("quote\"", false),
            ("ümlaut", false),
        ];
        for (id, sane) in cases {
            assert_eq!(sane_request_id(id), sane, "{id:?}");
        }
        assert!(sane_request_id(&"a".repeat(64)));
        assert!(!sane_request_id(&"a".repeat(65)));
    }

    #[test]
    fn statuses_are_grouped_by_class() {
        let cases = [
            (101, "1xx"),
            (200, "2xx"),
            (304, "3xx"),
            (422, "4xx"),
            (503, "5xx"),
        ];
        for (code, class) in cases {
            let status = StatusCode::from_u16(code).expect("a status");
            assert_eq!(status_class(status), class);
        }
    }
}
