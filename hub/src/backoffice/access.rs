//! Who may call a business API, by role. A request proves who it is with one of:
//!
//! - the hub's admin token as `Authorization: Bearer` (the operator's break-glass, and the
//!   demo's): allowed on every admin route;
//! - a back-office user's API token as `Authorization: Bearer bo_…`;
//! - the back-office session cookie of a signed-in user. A cookie is sent by the browser on its
//!   own, so a cookie-borne request that changes something (any method but GET/HEAD) must also
//!   carry the session's CSRF token as `X-CSRF-Token`.
//!
//! A handler states its policy in its signature: `_: Staff<policy::Orders>`. No credentials is a
//! 401; a user without one of the policy's roles is a 403 naming the roles. [`policy`] is the
//! one table of who may do what (`docs/backoffice.md` shows it).

use super::audit::Actor;
use super::session::SESSION_COOKIE;
use super::users::{AuthError, BackOfficeUser, Role};
use super::Backoffice;
use crate::admin::AdminAccess;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest};
use channels::error::ApiError;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

/// The header a cookie-borne API call carries its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Roles allowed by a policy (the admin token is always allowed).
pub trait Policy: 'static {
    const ROLES: &'static [Role];
}

/// The policies of the admin JSON routes.
pub mod policy {
    use super::{Policy, Role};

    macro_rules! policies {
        ($($(#[$doc:meta])* $name:ident => [$($role:ident),+];)+) => {$(
            $(#[$doc])*
            pub struct $name;
            impl Policy for $name {
                const ROLES: &'static [Role] = &[$(Role::$role),+];
            }
        )+};
    }

    policies! {
        /// Admins only (and the admin token).
        Admin => [Admin];
        /// Orders: list, detail, refund, cancel (customer service and admins).
        Orders => [Support, Admin];
        /// Stock levels: read and count (`/api/v1/admin/stock`).
        Stock => [Merchandiser, Admin];
        /// ERP import runs, their reports and the feeds' cursors.
        Imports => [Merchandiser, Admin];
        /// Analytics reports.
        Analytics => [Analyst, Marketer, Admin];
        /// The raw event export (every event, for the warehouse).
        EventExport => [Analyst, Admin];
        /// A customer's profile and timeline (support sees; nobody exports from here).
        CustomerProfiles => [Support, Marketer, Admin];
        /// Marketing automation: messages and runs.
        Automation => [Marketer, Admin];
        /// Store boards: playlists and audiences.
        Boards => [Merchandiser, Marketer, Admin];
        /// Edge nodes, store sales, coupon escrow, store refunds.
        Edge => [Admin];
        /// Changes to segments, personalization slots and A/B experiments.
        Marketing => [Marketer, Admin];
        /// The ops page and API (`/ops`, `/ops/*`, `/metrics`) by back-office session; the ops
        /// token opens them too (`hub::monitor::auth`).
        Ops => [Admin];
        /// Reading segments, slots, experiments and their reports, and the segment preview
        /// (the back-office pages; analysts read, marketers also change).
        MarketingReports => [Marketer, Analyst, Admin];
    }
}

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

pub(crate) fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the back office cannot be reached right now: try again",
    )
}

fn missing() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "credentials_required",
        "send a back-office API token (or the admin token) as Authorization: Bearer <token>, \
         or sign in at /backoffice/login",
    )
}

fn is_safe(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Whether a request carries the configured admin token.
fn admin_token(req: &HttpRequest) -> bool {
    req.app_data::<web::Data<AdminAccess>>()
        .and_then(|a| a.token.clone())
        .is_some_and(|t| crate::auth::bearer_matches(req, &t))
}

/// Who a request is: `None` without credentials. A bearer that is no known token is a 401
/// (never silently ignored in favour of a cookie). The admin token counts only when
/// `admin_token_ok`.
pub(crate) async fn caller(
    req: &HttpRequest,
    admin_token_ok: bool,
) -> Result<Option<Actor>, ApiError> {
    let backoffice = req
        .app_data::<web::Data<Backoffice>>()
        .ok_or_else(unavailable)?;
    if let Some(token) = bearer(req) {
        if admin_token_ok && admin_token(req) {
            return Ok(Some(Actor::AdminToken));
        }
        return match backoffice.authenticate(token) {
            Ok(user) => Ok(Some(Actor::User(user))),
            Err(AuthError::Storage(e)) => {
                tracing::error!(error = %e, "back-office storage failed");
                Err(unavailable())
            }
            Err(_) if admin_token_ok => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this token is neither the admin token nor a live back-office API token (unknown, \
                 revoked, or its user is disabled)",
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "backoffice_token_required",
                e.to_string(),
            )),
        };
    }
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let session = backoffice.session(cookie.value()).await.map_err(|e| {
        tracing::error!(error = %e, "back-office storage failed");
        unavailable()
    })?;
    let Some(session) = session else {
        return Ok(None);
    };
    if !is_safe(req.method()) {
        let presented = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !crate::backoffice::pages::tokens_match(&session.csrf, presented) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_token_required",
                "a call signed in by cookie that changes something must send the page's CSRF \
                 token as X-CSRF-Token",
            ));
        }
    }
    Ok(Some(Actor::User(session.user)))
}

/// A caller allowed by policy `P`: the admin token, or a user holding one of `P::ROLES`.
pub struct Staff<P: Policy> {
    pub actor: Actor,
    policy: PhantomData<P>,
}

impl<P: Policy> actix_web::FromRequest for Staff<P> {
    type Error = ApiError;
    type Future = LocalFuture<Result<Staff<P>, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let actor = caller(&req, true).await?.ok_or_else(missing)?;
            if let Actor::User(user) = &actor {
                user.require_any(P::ROLES)?;
            }
            Ok(Staff {
                actor,
                policy: PhantomData,
            })
        })
    }
}

impl<P: Policy> Staff<P> {
    /// Records a change this caller made outside the back office's own store (an order
    /// refunded, a stock count, a playlist published) in the audit list. The change is already
    /// done, so a failure to write the entry is logged, not answered.
    pub async fn audit<B: serde::Serialize, A: serde::Serialize>(
        &self,
        backoffice: &Backoffice,
        action: &str,
        subject: String,
        before: Option<&B>,
        after: Option<&A>,
    ) {
        let change = super::audit::Change {
            actor: &self.actor,
            action,
            subject,
            before,
            after,
        };
        if let Err(e) = backoffice.record(change).await {
            tracing::error!(error = %e, action, "audit entry not written");
        }
    }
}

/// A back-office user (API token or session; not the admin token).
pub(crate) async fn user(req: &HttpRequest) -> Result<BackOfficeUser, ApiError> {
    match caller(req, false).await? {
        Some(Actor::User(user)) => Ok(user),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "backoffice_token_required",
            AuthError::Missing.to_string(),
        )),
    }
}

/// The admin token, or a user with role admin.
pub(crate) async fn admin(req: &HttpRequest) -> Result<Actor, ApiError> {
    let actor = caller(req, true).await?.ok_or_else(missing)?;
    if let Actor::User(user) = &actor {
        user.require(Role::Admin)?;
    }
    Ok(actor)
}
