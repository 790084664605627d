//! Who may use the operations endpoints (`/ops/*`, `/metrics`) and the ops page.
//!
//! One extractor, [`OpsAuthorized`], decides for every ops route. A request is let in when:
//! 1. no ops token is configured (the demo on loopback), or
//! 2. it carries the ops token as `Authorization: Bearer` (scripts, Prometheus), or
//! 3. it carries the ops page's session cookie (a browser that signed in at `/ops/login` with
//!    the token). The cookie holds a signed expiry, never the token; it is HttpOnly,
//!    SameSite=Strict and scoped to `/ops`. A change (POST, DELETE, …) made with it must also
//!    send the page's CSRF token in `X-Ops-Csrf`.
//!
//! 4. it carries the back-office session cookie of a signed-in user with a role of
//!    [`policy::Ops`] (admin): the same sign-in as the back-office pages. A change made with it
//!    must send that session's CSRF token (the ops page puts it in `X-Ops-Csrf`; the back
//!    office's `X-CSRF-Token` is accepted too). A signed-in user without such a role is a 403.
//!
//! Whatever the way in, a change from a browser whose `Origin` is another site is refused.

use crate::backoffice::access::{policy, Policy, CSRF_HEADER as BACKOFFICE_CSRF_HEADER};
use crate::backoffice::session::SESSION_COOKIE as BACKOFFICE_COOKIE;
use crate::backoffice::Backoffice;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use channels::error::ApiError;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The ops page's session cookie.
pub const SESSION_COOKIE: &str = "omnihub_ops";
/// The header a cookie-authorized change carries the page's CSRF token in.
pub const CSRF_HEADER: &str = "x-ops-csrf";

/// Who may use the operations endpoints, as configured.
pub struct OpsAccess {
    token: Option<SecretString>,
    /// Signs session cookies; derived from the token, so a new token ends every session.
    session_key: [u8; 32],
    pub session_for: Duration,
    pub secure_cookies: bool,
}

impl OpsAccess {
    pub fn new(token: Option<SecretString>, session_for: Duration, secure_cookies: bool) -> Self {
        let mut key = Sha256::new();
        key.update(b"omnihub ops session\0");
        if let Some(t) = &token {
            key.update(t.expose_secret().as_bytes());
        }
        OpsAccess {
            token,
            session_key: key.finalize().into(),
            session_for,
            secure_cookies,
        }
    }

    /// Whether a token is configured (else every ops route is open).
    pub fn guarded(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `presented` is the ops token (constant time).
    pub fn token_matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.token.as_ref().is_some_and(|t| {
            presented
                .as_bytes()
                .ct_eq(t.expose_secret().as_bytes())
                .into()
        })
    }

    fn mac(&self, data: &str) -> String {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        match Hmac::<Sha256>::new_from_slice(&self.session_key) {
            Ok(mut mac) => {
                mac.update(data.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    /// A new session cookie value, valid until `now + session_for`: `expiry.nonce.mac`.
    pub fn new_session(&self, now_unix: i64) -> Result<String, getrandom::Error> {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce)?;
        let expires = now_unix.saturating_add(self.session_for.as_secs() as i64);
        let body = format!("{expires}.{}", hex::encode(nonce));
        Ok(format!("{body}.{}", self.mac(&body)))
    }

    /// The session's CSRF token if `cookie` is a session this hub signed and it has not
    /// expired.
    pub fn session_csrf(&self, cookie: &str, now_unix: i64) -> Option<String> {
        let (body, mac) = cookie.rsplit_once('.')?;
        let (expires, nonce) = body.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        let expected = self.mac(body);
        let valid = channels_tokens_match(&expected, mac) && expires > now_unix;
        valid.then(|| self.mac(&format!("csrf.{nonce}")))
    }
}

/// Constant-time comparison of two strings of ours (never equal when empty).
fn channels_tokens_match(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty()
        && expected.len() == presented.len()
        && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// How a request was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpsCaller {
    /// No ops token is configured.
    Open,
    /// The ops token as a bearer token.
    Token,
    /// The ops page's session cookie; `csrf` is the token its page sends with changes.
    Session { csrf: String },
    /// A back-office session of a user with an ops role; `csrf` is that session's token.
    BackOffice {
        user: Box<crate::backoffice::users::BackOfficeUser>,
        csrf: String,
    },
}

impl OpsCaller {
    /// The CSRF token the page sends with changes (none for a bearer or an open hub).
    pub fn csrf(&self) -> Option<&str> {
        match self {
            OpsCaller::Session { csrf } | OpsCaller::BackOffice { csrf, .. } => Some(csrf),
            OpsCaller::Open | OpsCaller::Token => None,
        }
    }
}

/// Proof that a request may use an operations endpoint (see the module's doc).
pub struct OpsAuthorized(pub OpsCaller);

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "ops_token_required",
        "send the hub's ops token as Authorization: Bearer <token>, or sign in at /ops/login",
    )
}

fn forbidden(code: &'static str, message: &'static str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

/// Whether the request changes something (and so must not come from another site).
fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether an `Origin` header, when the browser sent one, names the host the request came to.
pub fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let Ok(ours) = url::Url::parse(&format!("{}://{host}", url.scheme())) else {
        return false;
    };
    url.host_str().is_some()
        && url.host_str() == ours.host_str()
        && url.port_or_known_default() == ours.port_or_known_default()
}

pub(crate) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The CSRF token a change sent in `X-Ops-Csrf` (or, for a back-office session, in
/// `X-CSRF-Token`).
fn sent_csrf(req: &HttpRequest, also_backoffice_header: bool) -> &str {
    let get = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    get(CSRF_HEADER)
        .or_else(|| {
            if also_backoffice_header {
                get(BACKOFFICE_CSRF_HEADER)
            } else {
                None
            }
        })
        .unwrap_or_default()
}

fn csrf_refused() -> ApiError {
    forbidden(
        "csrf_token_required",
        "send the ops page's CSRF token in X-Ops-Csrf (reload the page)",
    )
}

impl OpsAuthorized {
    /// The one place that decides who may use the ops routes.
    pub async fn decide(req: &HttpRequest) -> Result<OpsAuthorized, ApiError> {
        let Some(access) = req.app_data::<web::Data<OpsAccess>>() else {
            // Not configured at all is a wiring mistake: refuse rather than open.
            return Err(unauthorized());
        };
        if is_change(req.method()) && !same_origin(req) {
            return Err(forbidden(
                "cross_site_request",
                "changes to operations data must come from the hub's own pages",
            ));
        }
        if !access.guarded() {
            return Ok(OpsAuthorized(OpsCaller::Open));
        }
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(presented) = bearer {
            return if access.token_matches(presented) {
                Ok(OpsAuthorized(OpsCaller::Token))
            } else {
                Err(unauthorized())
            };
        }
        if let Some(cookie) = req.cookie(SESSION_COOKIE) {
            if let Some(csrf) = access.session_csrf(cookie.value(), now_unix()) {
                if is_change(req.method()) && !channels_tokens_match(&csrf, sent_csrf(req, false)) {
                    return Err(csrf_refused());
                }
                return Ok(OpsAuthorized(OpsCaller::Session { csrf }));
            }
        }
        if let Some(cookie) = req.cookie(BACKOFFICE_COOKIE) {
            if let Some(caller) = backoffice_caller(req, cookie.value()).await? {
                return Ok(OpsAuthorized(caller));
            }
        }
        Err(unauthorized())
    }
}

/// The back-office arm of [`OpsAuthorized::decide`]: `None` when the cookie is no live session
/// (expired, signed out, user disabled), a 403 for a user without an ops role or a change
/// without the session's CSRF token.
async fn backoffice_caller(req: &HttpRequest, token: &str) -> Result<Option<OpsCaller>, ApiError> {
    let Some(backoffice) = req.app_data::<web::Data<Backoffice>>() else {
        // A hub without a back office (the metrics listener): only the ops token opens.
        return Ok(None);
    };
    let session = backoffice.session(token).await.map_err(|e| {
        tracing::error!(error = %e, "back-office storage failed");
        crate::backoffice::access::unavailable()
    })?;
    let Some(session) = session else {
        return Ok(None);
    };
    if let Err(e) = session.user.require_any(policy::Ops::ROLES) {
        tracing::info!(user = %session.user.id, "ops page refused to a back-office role");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "role_required",
            e.to_string(),
        ));
    }
    if is_change(req.method()) && !channels_tokens_match(&session.csrf, sent_csrf(req, true)) {
        return Err(csrf_refused());
    }
    Ok(Some(OpsCaller::BackOffice {
        user: Box::new(session.user),
        csrf: session.csrf,
    }))
}

impl FromRequest for OpsAuthorized {
    type Error = ApiError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<OpsAuthorized, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { OpsAuthorized::decide(&req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: Option<&str>) -> OpsAccess {
        OpsAccess::new(
            token.map(|t| SecretString::from(t.to_string())),
            Duration::from_secs(3600),
            false,
        )
    }

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_for_its_token() {
        let a = access(Some("ops-token-one"));
        let cookie = a.new_session(1_000).expect("randomness");
        assert!(!cookie.contains("ops-token-one"));
        let csrf = a.session_csrf(&cookie, 1_000).expect("valid");
        assert_eq!(a.session_csrf(&cookie, 4_599), Some(csrf));
        assert_eq!(a.session_csrf(&cookie, 4_600), None, "expired");
        let other = access(Some("ops-token-two"));
        assert_eq!(other.session_csrf(&cookie, 1_000), None, "another token");
        let (body, _) = cookie.rsplit_once('.').expect("mac");
        let later = body.replacen("4600", "9999", 1);
        let forged = format!("{later}.{}", "0".repeat(64));
        assert_eq!(a.session_csrf(&forged, 1_000), None, "forged expiry");
        for junk in ["", "a.b", "x.y.z", "1.2.3.4"] {
            assert_eq!(a.session_csrf(junk, 0), None, "{junk}");
        }
    }

    #[test]
    fn sessions_differ_and_have_their_own_csrf_tokens() {
        let a = access(Some("t"));
        let one = a.new_session(0).expect("randomness");
        let two = a.new_session(0).expect("randomness");
        assert_ne!(one, two);
        assert_ne!(a.session_csrf(&one, 0), a.session_csrf(&two, 0));
    }

    #[test]
    fn the_token_is_compared_exactly() {
        let a = access(Some("secret"));
        assert!(a.token_matches("secret"));
        assert!(!a.token_matches("Secret"));
        assert!(!a.token_matches("secret "));
        assert!(!a.token_matches(""));
        assert!(!access(None).token_matches(""));
    }
}
