//! The authorization server's endpoints for clients: `POST /oauth/token` (RFC 6749 §3.2, §4.1.3,
//! §6) and `POST /oauth/revoke` (RFC 7009). Requests are form-encoded; the client authenticates
//! with HTTP Basic or `client_id` + `client_secret` in the body (one of the two, RFC 6749
//! §2.3.1).
//!
//! Error bodies follow RFC 6749 §5.2 (`{"error": "invalid_grant", "error_description": …}`)
//! rather than the hub's `{"error": {"code", "message"}}`: clients such as voice platforms parse
//! exactly that shape.

use super::{AuthorizationServer, ErrorCode, OAuthClientSettings, OAuthError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use std::collections::BTreeMap;

/// The largest request body read (a refresh token and a secret fit many times over).
const MAX_BODY: usize = 16 * 1024;

/// Registers `/oauth/token` and `/oauth/revoke`; the app must hold a
/// `web::Data<AuthorizationServer>` and a `web::Data<limit::TokenLimiter>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/oauth/token")
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route(web::post().to(token)),
    )
    .service(
        web::resource("/oauth/revoke")
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route(web::post().to(revoke)),
    );
}

fn error_response(e: &OAuthError) -> HttpResponse {
    let status = match e.code {
        ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        ErrorCode::ServerError => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if e.code == ErrorCode::InvalidClient {
        res.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"omnihub\""));
    }
    res.json(serde_json::json!({ "error": e.code, "error_description": e.description }))
}

fn invalid_request(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRequest, description)
}

/// The form parameters; a parameter sent twice is refused (RFC 6749 §3.2).
fn form(req: &HttpRequest, body: &[u8]) -> Result<BTreeMap<String, String>, OAuthError> {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(invalid_request(
            "send the parameters as application/x-www-form-urlencoded",
        ));
    }
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(invalid_request(format!(
                "parameter '{}' is sent more than once",
                k.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(params)
}

/// Decodes `application/x-www-form-urlencoded` text (Basic credentials are encoded so, RFC 6749
/// §2.3.1); malformed escapes are kept as they are.
fn form_decode(text: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client's id and secret, from HTTP Basic or the body (not both).
fn credentials(
    req: &HttpRequest,
    params: &BTreeMap<String, String>,
) -> Result<(String, String), OAuthError> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    match basic {
        Some(encoded) => {
            if body_secret.is_some() {
                return Err(invalid_request(
                    "authenticate with HTTP Basic or client_secret in the body, not both",
                ));
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    OAuthError::new(
                        ErrorCode::InvalidClient,
                        "the Basic credentials are not base64 of client_id:client_secret",
                    )
                })?;
            let (id, secret) = decoded.split_once(':').ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::InvalidClient,
                    "the Basic credentials must be client_id:client_secret",
                )
            })?;
            let (id, secret) = (form_decode(id), form_decode(secret));
            if body_id.is_some_and(|b| *b != id) {
                return Err(invalid_request(
                    "client_id in the body differs from the one in the Basic credentials",
                ));
            }
            Ok((id, secret))
        }
        None => match (body_id, body_secret) {
            (Some(id), Some(secret)) => Ok((id.clone(), secret.clone())),
            _ => Err(OAuthError::new(
                ErrorCode::InvalidClient,
                "authenticate the client: HTTP Basic, or client_id and client_secret in the body",
            )),
        },
    }
}

/// Parses the request and authenticates its client.
fn client_request<'a>(
    server: &'a AuthorizationServer,
    req: &HttpRequest,
    body: &[u8],
) -> Result<(&'a OAuthClientSettings, BTreeMap<String, String>), OAuthError> {
    let params = form(req, body)?;
    let (id, secret) = credentials(req, &params)?;
    let client = server.authenticate_client(&id, &secret)?;
    Ok((client, params))
}

fn required<'a>(params: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid_request(format!("{name} is required")))
}

async fn issue_tokens(
    server: &AuthorizationServer,
    req: &HttpRequest,
    body: &[u8],
) -> Result<super::TokenResponse, OAuthError> {
    let (client, params) = client_request(server, req, body)?;
    match required(&params, "grant_type")? {
        "authorization_code" => {
            let code = required(&params, "code")?;
            server
                .exchange_code(
                    client,
                    code,
                    params.get("redirect_uri").map(String::as_str),
                    params.get("code_verifier").map(String::as_str),
                )
                .await
        }
        "refresh_token" => {
            let refresh_token = required(&params, "refresh_token")?;
            server
                .refresh(
                    client,
                    refresh_token,
                    params.get("scope").map(String::as_str),
                )
                .await
        }
        other => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!(
                "grant_type '{}' is not supported: use authorization_code or refresh_token",
                other.chars().take(64).collect::<String>()
            ),
        )),
    }
}

/// The client id a request names (Basic or body), authenticated or not, for the rate limit.
fn claimed_client(req: &HttpRequest, body: &[u8]) -> Option<String> {
    let params = form(req, body).ok()?;
    credentials(req, &params).ok().map(|(id, _)| id)
}

/// 429 with `Retry-After`, in the endpoint's RFC 6749 error shape.
fn too_many(seconds: u64) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, seconds.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "error": "too_many_requests",
            "error_description": format!("too many token requests: retry in {seconds} s"),
        }))
}

/// `POST /oauth/token` (rate-limited per client id and per client address).
async fn token(
    req: HttpRequest,
    server: web::Data<AuthorizationServer>,
    limiter: web::Data<super::limit::TokenLimiter>,
    body: web::Bytes,
) -> HttpResponse {
    let address = limiter.address(&req);
    if let Err(seconds) = limiter.check(claimed_client(&req, &body).as_deref(), address) {
        tracing::warn!(%address, "token endpoint rate limit reached");
        return too_many(seconds);
    }
    match issue_tokens(&server, &req, &body).await {
        Ok(tokens) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(tokens),
        Err(e) => error_response(&e),
    }
}

/// `POST /oauth/revoke`: 200 whether or not the token was known (RFC 7009 §2.2).
async fn revoke(
    req: HttpRequest,
    server: web::Data<AuthorizationServer>,
    body: web::Bytes,
) -> HttpResponse {
    let outcome = async {
        let (client, params) = client_request(&server, &req, &body)?;
        server.revoke(client, required(&params, "token")?).await
    }
    .await;
    match outcome {
        Ok(()) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(e) => error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("omnihub-voice"), "omnihub-voice");
        assert_eq!(form_decode("a%3Ab+c%25"), "a:b c%");
        assert_eq!(form_decode("bad%zz%"), "bad%zz%");
    }
}
