//! The one mapping from errors to HTTP responses for the JSON API: every error body is
//! `{"error": {"code": "...", "message": "..."}}`; a 5xx never leaks internals.

use crate::backend::BackendError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

/// An API error: a status, a stable machine-readable code and a message that says what to fix.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 responses.
    pub retry_after: Option<u64>,
    /// Machine-readable details, e.g. `{"fields": [{"field", "message"}]}`.
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first: send the session cookie or an Authorization: Bearer token",
        )
    }

    pub fn too_many(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many sign-in attempts: try again in {} s",
                    retry_after.max(1)
                ),
            )
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.json(Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: self.details.as_ref(),
            },
        })
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        match e {
            BackendError::NotFound(what) => ApiError::not_found(what),
            BackendError::Unprocessable { code, message } => ApiError::unprocessable(code, message),
            BackendError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string())
            }
            BackendError::EmailTaken => {
                ApiError::new(StatusCode::CONFLICT, "email_taken", e.to_string())
            }
            BackendError::Unauthenticated => ApiError::unauthorized(),
            BackendError::Invalid {
                code,
                message,
                fields,
            } => ApiError::unprocessable(code, message)
                .with_details(serde_json::json!({ "fields": fields })),
            BackendError::Conflict {
                code,
                message,
                details,
            } => {
                let e = ApiError::new(StatusCode::CONFLICT, code, message);
                match details {
                    Some(d) => e.with_details(d),
                    None => e,
                }
            }
            BackendError::RateLimited {
                retry_after,
                message,
            } => ApiError {
                retry_after: Some(retry_after.max(1)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            },
            BackendError::PaymentUnavailable(message) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment_provider_unavailable",
                message,
            ),
            BackendError::Unavailable(detail) => {
                tracing::error!(%detail, "backend unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service is temporarily unavailable: retry shortly",
                )
            }
        }
    }
}

/// The largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// JSON extractor settings: 64 KiB, errors as JSON (400 malformed, 413 too large, 415 wrong type).
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {} KiB", MAX_BODY_BYTES / 1024),
                ),
                E::ContentType => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with Content-Type: application/json",
                ),
                E::Deserialize(inner) if inner.is_data() => {
                    ApiError::unprocessable("invalid_field", format!("invalid body: {inner}"))
                }
                E::Deserialize(inner) => {
                    ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}"))
                }
                other => {
                    ApiError::bad_request("bad_body", format!("could not read the body: {other}"))
                }
            };
            api.into()
        })
}

/// Form extractor settings (storefront pages): 64 KiB.
pub fn form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| {
            ApiError::bad_request("bad_form", format!("could not read the form: {err}")).into()
        })
}

/// Query-string extractor settings: errors as JSON 400.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request("bad_query", format!("invalid query string: {err}")).into()
    })
}

/// Path extractor settings: a path segment that does not parse is a 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|_err, req| ApiError::not_found(&format!("resource {}", req.path())).into())
}

/// Raw body settings: 64 KiB, errors as JSON.
pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_BODY_BYTES)
}

/// The default service under `/api`: an unknown route is a JSON 404.
pub async fn api_not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no API route {} {}: see /api/v1/openapi.json",
            req.method(),
            req.path()
        ),
    )
    .error_response()
}
