//! The ops page (`/ops`): server-rendered with minijinja, kept live by the feed
//! ([`super::feed`]), whose events carry the page's sections rendered once per tick. A browser
//! signs in at `/ops/login` with the ops token (see [`super::auth`]).

use super::auth::{now_unix, OpsAccess, OpsAuthorized, OpsCaller, SESSION_COOKIE};
use super::feed::{LiveFeed, Snapshot};
use crate::app::HubHandle;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::error::ApiError;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use minijinja::{context, AutoEscape, Environment};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::OnceLock;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "layout.html",
        include_str!("../../templates/ops/layout.html"),
    ),
    ("login.html", include_str!("../../templates/ops/login.html")),
    ("ops.html", include_str!("../../templates/ops/ops.html")),
    (
        "actors.html",
        include_str!("../../templates/ops/actors.html"),
    ),
    ("nodes.html", include_str!("../../templates/ops/nodes.html")),
    (
        "boards.html",
        include_str!("../../templates/ops/boards.html"),
    ),
    (
        "integrations.html",
        include_str!("../../templates/ops/integrations.html"),
    ),
    (
        "errors.html",
        include_str!("../../templates/ops/errors.html"),
    ),
];
const SCRIPT: &str = include_str!("../../templates/ops/ops.js");
const STYLE: &str = include_str!("../../templates/ops/ops.css");

/// The page's own script and style only; nothing from elsewhere, and never in a frame.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Sign-in attempts per client address per minute.
const SIGN_INS_PER_MINUTE: u32 = 10;

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "an ops template does not parse");
            }
        }
        env
    })
}

fn render(name: &str, ctx: minijinja::Value) -> String {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(template = name, error = %e, "an ops template failed");
            "<p class=\"muted\">This section could not be shown (see the hub's log).</p>".into()
        }
    }
}

/// The page's sections, rendered from one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Sections {
    pub actors: String,
    pub nodes: String,
    pub boards: String,
    pub integrations: String,
    pub errors: String,
}

pub fn sections(snapshot: &Snapshot) -> Sections {
    let section = |name| render(name, context! { s => snapshot });
    Sections {
        actors: section("actors.html"),
        nodes: section("nodes.html"),
        boards: section("boards.html"),
        integrations: section("integrations.html"),
        errors: section("errors.html"),
    }
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// `GET /ops`: the page, or the sign-in form for a browser without a session.
async fn page(auth: Result<OpsAuthorized, ApiError>, handle: web::Data<HubHandle>) -> HttpResponse {
    let caller = match auth {
        Ok(OpsAuthorized(caller)) => caller,
        Err(e) if e.status == actix_web::http::StatusCode::FORBIDDEN => {
            // Signed in to the back office, without a role that may see operations.
            return login_form(
                Some(
                    "Your back-office role may not use the operations page: sign in with the ops \
                     token, or to the back office as an admin.",
                ),
                actix_web::http::StatusCode::FORBIDDEN,
            );
        }
        Err(_) => return see_other("/ops/login"),
    };
    let snapshot = Snapshot::take(&handle).await;
    let csrf = caller.csrf().unwrap_or_default().to_string();
    let session = matches!(caller, OpsCaller::Session { .. });
    let backoffice_user = match &caller {
        OpsCaller::BackOffice { user, .. } => Some(user.email.clone()),
        _ => None,
    };
    html(render(
        "ops.html",
        context! {
            snapshot => &snapshot,
            sections => sections(&snapshot),
            csrf => csrf,
            session => session,
            backoffice_user => backoffice_user,
        },
    ))
}

/// `GET /ops/snapshot`: what the page shows, as JSON.
async fn snapshot(_: OpsAuthorized, handle: web::Data<HubHandle>) -> HttpResponse {
    HttpResponse::Ok().json(Snapshot::take(&handle).await)
}

/// `GET /ops/live`: the live feed as Server-Sent Events (`event: snapshot`, data: JSON with
/// `snapshot` and the page's rendered `html` sections).
async fn live(_: OpsAuthorized, feed: web::Data<LiveFeed>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // A proxy in front (nginx) must not buffer the stream.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(feed.viewer())
}

/// Sign-in attempts per client address.
pub struct SignInLimit(DefaultKeyedRateLimiter<IpAddr>);

impl Default for SignInLimit {
    fn default() -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(SIGN_INS_PER_MINUTE).unwrap_or(NonZeroU32::MIN));
        SignInLimit(RateLimiter::keyed(quota))
    }
}

fn login_form(error: Option<&str>, status: actix_web::http::StatusCode) -> HttpResponse {
    let mut res = html(render("login.html", context! { error => error }));
    *res.status_mut() = status;
    res
}

/// `GET /ops/login`.
async fn login_page(access: web::Data<OpsAccess>) -> HttpResponse {
    if !access.guarded() {
        // Nothing to sign in to: the page is open.
        return see_other("/ops");
    }
    login_form(None, actix_web::http::StatusCode::OK)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /ops/login` (form `token`): sets the session cookie and goes to the page.
async fn login(
    req: HttpRequest,
    access: web::Data<OpsAccess>,
    limit: web::Data<SignInLimit>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if !super::auth::same_origin(&req) {
        return login_form(
            Some("This form must be sent from the hub's own sign-in page."),
            StatusCode::FORBIDDEN,
        );
    }
    if !access.guarded() {
        return see_other("/ops");
    }
    let address = req
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    if limit.0.check_key(&address).is_err() {
        return login_form(
            Some("Too many sign-in attempts from this address: wait a minute and try again."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    if !access.token_matches(form.token.trim()) {
        tracing::warn!(client = %address, "ops sign-in with a wrong token");
        return login_form(
            Some("That is not the hub's ops token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let value = match access.new_session(now_unix()) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "no randomness for an ops session");
            return login_form(
                Some("The hub could not start a session; try again."),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    let cookie = Cookie::build(SESSION_COOKIE, value)
        .path("/ops")
        .http_only(true)
        .secure(access.secure_cookies)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(
            access.session_for.as_secs() as i64,
        ))
        .finish();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ops"))
        .cookie(cookie)
        .finish()
}

/// `POST /ops/logout`: forgets the session cookie.
async fn logout(req: HttpRequest) -> HttpResponse {
    if !super::auth::same_origin(&req) {
        return HttpResponse::Forbidden().finish();
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/ops").finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ops/login"))
        .cookie(gone)
        .finish()
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(SCRIPT)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(STYLE)
}

/// The page's routes (the `/ops/outbox` API its buttons call is in `crate::ops`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ops", web::get().to(page))
        .route("/ops/live", web::get().to(live))
        .route("/ops/snapshot", web::get().to(snapshot))
        .service(
            web::resource("/ops/login")
                .app_data(web::FormConfig::default().limit(4096))
                .route(web::get().to(login_page))
                .route(web::post().to(login)),
        )
        .route("/ops/logout", web::post().to(logout))
        .route("/ops/assets/ops.js", web::get().to(script))
        .route("/ops/assets/ops.css", web::get().to(style));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            assert!(templates().get_template(name).is_ok(), "{name}");
        }
    }
}
