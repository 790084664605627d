//! The back office's pages under `/backoffice`: server-rendered (minijinja, embedded templates,
//! auto-escaped), a little JavaScript for confirmations, one stylesheet.
//!
//! How a page is built, so new ones follow the same pattern:
//!
//! - The handler takes a [`BackOfficeSession`] (a signed-in user; without one a page redirects
//!   to the sign-in page) and checks its roles with [`BackOfficeSession::require`], using the
//!   same [`Policy`] as the JSON route it mirrors, so the page and the API never disagree.
//! - It renders with [`Pages::render`], which adds the layout's data: the user, the navigation
//!   ([`NAV`], filtered by role), the session's CSRF token and the flash message.
//! - A form posts the hidden `csrf` field; the handler calls [`BackOfficeSession::check_form`]
//!   first (403 otherwise), does the change through the same domain call as the API, and answers
//!   with [`Pages::redirect`] and a flash message (Post/Redirect/Get).

mod analytics;
mod audit;
mod auth;
mod catalog;
pub mod charts;
mod customers;
mod dashboard;
mod experiments;
mod imports;
mod orders;
mod playlists;
mod preview;
mod promotions;
mod segments;
mod slots;
mod users;

use super::access::{policy, Policy};
use super::audit::Actor;
use super::session::{Session, SESSION_COOKIE};
use super::users::{BackOfficeUser, Role};
use super::Backoffice;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
pub use channels::web::{Flash, Level};
use minijinja::{context, AutoEscape, Environment, Value};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "base.html",
        include_str!("../../../templates/backoffice/base.html"),
    ),
    (
        "macros.html",
        include_str!("../../../templates/backoffice/macros.html"),
    ),
    (
        "error.html",
        include_str!("../../../templates/backoffice/error.html"),
    ),
    (
        "login.html",
        include_str!("../../../templates/backoffice/login.html"),
    ),
    (
        "code.html",
        include_str!("../../../templates/backoffice/code.html"),
    ),
    (
        "me.html",
        include_str!("../../../templates/backoffice/me.html"),
    ),
    (
        "dashboard.html",
        include_str!("../../../templates/backoffice/dashboard.html"),
    ),
    (
        "promotions.html",
        include_str!("../../../templates/backoffice/promotions.html"),
    ),
    (
        "promotion.html",
        include_str!("../../../templates/backoffice/promotion.html"),
    ),
    (
        "promotion_form.html",
        include_str!("../../../templates/backoffice/promotion_form.html"),
    ),
    (
        "promotion_fields.html",
        include_str!("../../../templates/backoffice/promotion_fields.html"),
    ),
    (
        "audit.html",
        include_str!("../../../templates/backoffice/audit.html"),
    ),
    (
        "orders.html",
        include_str!("../../../templates/backoffice/orders.html"),
    ),
    (
        "order.html",
        include_str!("../../../templates/backoffice/order.html"),
    ),
    (
        "analytics.html",
        include_str!("../../../templates/backoffice/analytics.html"),
    ),
    (
        "users.html",
        include_str!("../../../templates/backoffice/users.html"),
    ),
    (
        "user.html",
        include_str!("../../../templates/backoffice/user.html"),
    ),
    (
        "customers.html",
        include_str!("../../../templates/backoffice/customers.html"),
    ),
    (
        "customer.html",
        include_str!("../../../templates/backoffice/customer.html"),
    ),
    (
        "catalog.html",
        include_str!("../../../templates/backoffice/catalog.html"),
    ),
    (
        "imports.html",
        include_str!("../../../templates/backoffice/imports.html"),
    ),
    (
        "import_run.html",
        include_str!("../../../templates/backoffice/import_run.html"),
    ),
    (
        "segments.html",
        include_str!("../../../templates/backoffice/segments.html"),
    ),
    (
        "segment.html",
        include_str!("../../../templates/backoffice/segment.html"),
    ),
    (
        "segment_members.html",
        include_str!("../../../templates/backoffice/segment_members.html"),
    ),
    (
        "experiments.html",
        include_str!("../../../templates/backoffice/experiments.html"),
    ),
    (
        "experiment.html",
        include_str!("../../../templates/backoffice/experiment.html"),
    ),
    (
        "experiment_form.html",
        include_str!("../../../templates/backoffice/experiment_form.html"),
    ),
    (
        "slots.html",
        include_str!("../../../templates/backoffice/slots.html"),
    ),
    (
        "slot.html",
        include_str!("../../../templates/backoffice/slot.html"),
    ),
    (
        "content_summary.html",
        include_str!("../../../templates/backoffice/content_summary.html"),
    ),
    (
        "playlists.html",
        include_str!("../../../templates/backoffice/playlists.html"),
    ),
    (
        "playlist.html",
        include_str!("../../../templates/backoffice/playlist.html"),
    ),
    (
        "board_items.html",
        include_str!("../../../templates/backoffice/board_items.html"),
    ),
    (
        "preview.html",
        include_str!("../../../templates/backoffice/preview.html"),
    ),
];

const CSS: &str = include_str!("../../../static/backoffice.css");
const JS: &str = include_str!("../../../static/backoffice.js");

/// The pre-session CSRF cookie of the sign-in forms (double submit: cookie and hidden field).
const LOGIN_CSRF_COOKIE: &str = "omnihub_bo_csrf";
/// The one-shot message of the next page.
const FLASH_COOKIE: &str = "omnihub_bo_flash";

/// Scripts, styles and form targets from this site only; no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Roles that may read and author promotions and coupons (approvers and admins read them too).
const PROMOTION_READERS: &[Role] = &[
    Role::Merchandiser,
    Role::Marketer,
    Role::Approver,
    Role::Admin,
];

/// The navigation: (path, label, roles that see it). A page checks the same roles.
pub const NAV: &[(&str, &str, &[Role])] = &[
    ("/backoffice", "Dashboard", &Role::ALL),
    ("/backoffice/orders", "Orders", policy::Orders::ROLES),
    (
        "/backoffice/customers",
        "Customers",
        policy::CustomerProfiles::ROLES,
    ),
    ("/backoffice/catalog", "Catalog", policy::Stock::ROLES),
    ("/backoffice/promotions", "Promotions", PROMOTION_READERS),
    ("/backoffice/imports", "ERP imports", policy::Imports::ROLES),
    (
        "/backoffice/analytics",
        "Analytics",
        policy::Analytics::ROLES,
    ),
    (
        "/backoffice/segments",
        "Segments",
        policy::MarketingReports::ROLES,
    ),
    (
        "/backoffice/slots",
        "Personalization",
        policy::MarketingReports::ROLES,
    ),
    (
        "/backoffice/experiments",
        "Experiments",
        policy::MarketingReports::ROLES,
    ),
    (
        "/backoffice/playlists",
        "Board playlists",
        policy::Boards::ROLES,
    ),
    (
        "/backoffice/preview",
        "Preview as segment",
        policy::MarketingReports::ROLES,
    ),
    ("/backoffice/users", "Users", policy::Admin::ROLES),
    ("/backoffice/audit", "Audit log", policy::Admin::ROLES),
    ("/ops", "Operations", policy::Ops::ROLES),
];

/// Changes whenever the stylesheet or script does, so their URLs can be cached for a year.
fn asset_version() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in CSS.bytes().chain(JS.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Whether two tokens are equal, in constant time.
pub fn tokens_match(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// The pages' templates and cookie settings.
pub struct Pages {
    env: Environment<'static>,
    secure_cookies: bool,
    trusted_proxies: Vec<IpAddr>,
}

impl Pages {
    pub fn new(secure_cookies: bool, trusted_proxies: Vec<IpAddr>) -> Pages {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_filter("money", money_filter);
        env.add_filter("when", when_filter);
        // The catalog's pager links keep the search; minijinja's own `urlencode` needs a
        // feature we do not build.
        env.add_filter("urlencode", |text: String| encode_component(&text));
        env.add_filter("truncate", |text: String, n: usize| -> String {
            if text.chars().count() <= n {
                text
            } else {
                text.chars().take(n).chain(std::iter::once('…')).collect()
            }
        });
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // Caught by the tests; a page using it then answers 500 rather than the process dying.
                tracing::error!(template = name, error = %e, "back-office template does not compile");
            }
        }
        Pages {
            env,
            secure_cookies,
            trusted_proxies,
        }
    }

    /// The client's address (behind trusted proxies, the one they forwarded).
    pub fn client(&self, req: &HttpRequest) -> String {
        channels::context::client_address(req, &self.trusted_proxies).to_string()
    }

    fn cookie(
        &self,
        name: &'static str,
        value: String,
        max_age: CookieDuration,
    ) -> Cookie<'static> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure_cookies)
            .max_age(max_age)
            .finish()
    }

    fn removal(&self, name: &'static str) -> Cookie<'static> {
        let mut c = self.cookie(name, String::new(), CookieDuration::ZERO);
        c.make_removal();
        c
    }

    /// The session cookie for a token, living as long as the session may.
    pub fn session_cookie(&self, token: String, lifetime: std::time::Duration) -> Cookie<'static> {
        let seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        self.cookie(SESSION_COOKIE, token, CookieDuration::seconds(seconds))
    }

    /// Renders a page of a signed-in user.
    pub fn render(
        &self,
        req: &HttpRequest,
        session: &BackOfficeSession,
        template: &str,
        page: Value,
    ) -> Result<HttpResponse, PageFailure> {
        self.render_status(
            req,
            Some(session),
            StatusCode::OK,
            template,
            page,
            Vec::new(),
        )
    }

    /// Renders a page with a status, for a signed-in user or not, setting `cookies`.
    pub fn render_status(
        &self,
        req: &HttpRequest,
        session: Option<&BackOfficeSession>,
        status: StatusCode,
        template: &str,
        page: Value,
        mut cookies: Vec<Cookie<'static>>,
    ) -> Result<HttpResponse, PageFailure> {
        let flash = req
            .cookie(FLASH_COOKIE)
            .and_then(|c| Flash::decode(c.value()))
            .filter(|f| !f.text.is_empty());
        if req.cookie(FLASH_COOKIE).is_some() {
            cookies.push(self.removal(FLASH_COOKIE));
        }
        let path = req.path().to_string();
        let chrome = Chrome {
            asset: asset_version(),
            user: session.map(|s| ChromeUser {
                name: s.session.name.clone(),
                email: s.session.user.email.clone(),
                roles: s.session.user.roles.iter().map(|r| r.as_str()).collect(),
            }),
            nav: session.map_or_else(Vec::new, |s| nav_for(&s.session.user, &path)),
            csrf: session.map(|s| s.session.csrf.clone()).unwrap_or_default(),
            flash,
        };
        let html = self
            .env
            .get_template(template)
            .and_then(|t| t.render(context! { chrome => chrome, ..page }))?;
        let mut res = html_response(status);
        for c in cookies {
            res.cookie(c);
        }
        Ok(res.body(html))
    }

    /// 303 to a back-office path, with a flash message for the next page.
    pub fn redirect(&self, to: &str, flash: Option<Flash>) -> HttpResponse {
        self.redirect_with(to, flash, Vec::new())
    }

    fn redirect_with(
        &self,
        to: &str,
        flash: Option<Flash>,
        cookies: Vec<Cookie<'static>>,
    ) -> HttpResponse {
        let mut res = HttpResponse::SeeOther();
        res.insert_header((header::LOCATION, to))
            .insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(f) = flash {
            res.cookie(self.cookie(FLASH_COOKIE, f.encode(), CookieDuration::minutes(5)));
        }
        for c in cookies {
            res.cookie(c);
        }
        res.finish()
    }
}

fn html_response(status: StatusCode) -> HttpResponseBuilder {
    let mut res = HttpResponse::build(status);
    res.content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP));
    res
}

fn nav_for(user: &BackOfficeUser, path: &str) -> Vec<NavItem> {
    NAV.iter()
        .filter(|(_, _, roles)| roles.iter().any(|r| user.has(*r)))
        .map(|(href, label, _)| NavItem {
            href,
            label,
            current: if *href == "/backoffice" {
                path == "/backoffice" || path == "/backoffice/"
            } else {
                path == *href || path.starts_with(&format!("{href}/"))
            },
        })
        .collect()
}

/// `{{ m|money }}`: a serialized `Money` (`{minor, currency}`) as "EUR 12.34".
fn money_filter(value: Value) -> Result<String, minijinja::Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(String::new());
    }
    let bad = |what: &str| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("money filter: {what}"),
        )
    };
    let minor = i64::try_from(value.get_attr("minor")?).map_err(|_| bad("minor"))?;
    let code = value.get_attr("currency")?;
    let currency = code
        .as_str()
        .and_then(|c| protocol::Currency::parse(c).ok())
        .ok_or_else(|| bad("currency"))?;
    Ok(format_money(protocol::Money::new(minor, currency)))
}

/// "EUR 1,234.50" (sign first).
pub fn format_money(m: protocol::Money) -> String {
    let digits = m.currency.exponent();
    let scale = 10i64.pow(u32::from(digits));
    let sign = if m.minor < 0 { "-" } else { "" };
    let abs = m.minor.unsigned_abs();
    let whole = abs / scale.unsigned_abs();
    let frac = abs % scale.unsigned_abs();
    let mut grouped = String::new();
    for (i, c) in whole.to_string().chars().rev().enumerate() {
        if i > 0 && i % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let whole: String = grouped.chars().rev().collect();
    if digits == 0 {
        format!("{sign}{} {whole}", m.currency.code())
    } else {
        format!(
            "{sign}{} {whole}.{frac:0width$}",
            m.currency.code(),
            width = usize::from(digits)
        )
    }
}

/// `{{ t|when }}`: an RFC 3339 time as "2026-03-01 09:00 UTC".
fn when_filter(value: Value) -> String {
    let Some(text) = value.as_str() else {
        return String::new();
    };
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| {
            t.to_offset(time::UtcOffset::UTC)
                .format(time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute] UTC"
                ))
                .ok()
        })
        .unwrap_or_else(|| text.to_string())
}

#[derive(Serialize)]
struct NavItem {
    href: &'static str,
    label: &'static str,
    current: bool,
}

#[derive(Serialize)]
struct ChromeUser {
    name: String,
    email: String,
    roles: Vec<&'static str>,
}

/// What the layout of every page needs.
#[derive(Serialize)]
struct Chrome {
    asset: String,
    user: Option<ChromeUser>,
    nav: Vec<NavItem>,
    csrf: String,
    flash: Option<Flash>,
}

/// A page that cannot be shown: sign in first, or an error page.
#[derive(Debug)]
pub enum PageFailure {
    /// Not signed in: 303 to the sign-in page, back here afterwards.
    SignIn { next: String },
    /// An error page with a status.
    Page {
        status: StatusCode,
        title: &'static str,
        message: String,
    },
}

impl PageFailure {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        PageFailure::Page {
            status,
            title,
            message: message.into(),
        }
    }

    pub fn forbidden(roles: &[Role]) -> Self {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        PageFailure::new(
            StatusCode::FORBIDDEN,
            "Not for your role",
            format!(
                "This page needs the role {}. Ask an admin if you need it.",
                names.join(" or ")
            ),
        )
    }

    pub fn csrf() -> Self {
        PageFailure::new(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "For your security this form was not accepted. Go back, reload the page and try again.",
        )
    }

    pub fn not_found(what: &str) -> Self {
        PageFailure::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("There is no {what} here. It may have been removed, or the link is mistyped."),
        )
    }

    pub fn unavailable() -> Self {
        PageFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again in a moment",
            "The back office cannot reach its data right now. Please try again shortly.",
        )
    }
}

impl fmt::Display for PageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageFailure::SignIn { .. } => f.write_str("sign in first"),
            PageFailure::Page {
                status,
                title,
                message,
            } => write!(f, "{} {title}: {message}", status.as_u16()),
        }
    }
}

impl From<minijinja::Error> for PageFailure {
    fn from(e: minijinja::Error) -> Self {
        tracing::error!(error = %e, "back-office template failed to render");
        PageFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "This page could not be shown. Please try again.",
        )
    }
}

impl From<crate::storage::StorageError> for PageFailure {
    fn from(e: crate::storage::StorageError) -> Self {
        tracing::error!(error = %e, "back-office storage failed");
        PageFailure::unavailable()
    }
}

impl From<super::BackofficeError> for PageFailure {
    fn from(e: super::BackofficeError) -> Self {
        use super::BackofficeError as E;
        match e {
            E::Storage(e) => e.into(),
            E::NotFound(what) => PageFailure::not_found(&what),
            E::Forbidden { message, .. } => {
                PageFailure::new(StatusCode::FORBIDDEN, "Not allowed", message)
            }
            E::Conflict { message, .. } => {
                PageFailure::new(StatusCode::CONFLICT, "That could not be done", message)
            }
            E::Invalid(fields) => PageFailure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Please check the form",
                fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }
}

impl From<channels::BackendError> for PageFailure {
    fn from(e: channels::BackendError) -> Self {
        match e {
            channels::BackendError::NotFound(what) => PageFailure::not_found(what),
            channels::BackendError::Unavailable(detail) => {
                tracing::error!(%detail, "backend unavailable");
                PageFailure::unavailable()
            }
            other => PageFailure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "That could not be done",
                other.to_string(),
            ),
        }
    }
}

impl ResponseError for PageFailure {
    fn status_code(&self) -> StatusCode {
        match self {
            PageFailure::SignIn { .. } => StatusCode::SEE_OTHER,
            PageFailure::Page { status, .. } => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            PageFailure::SignIn { next } => HttpResponse::SeeOther()
                .insert_header((
                    header::LOCATION,
                    format!("/backoffice/login?next={}", encode_component(next)),
                ))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish(),
            PageFailure::Page {
                status,
                title,
                message,
            } => {
                let page = shared_pages().env.get_template("error.html").and_then(|t| {
                    t.render(context! {
                        chrome => Chrome { asset: asset_version(), user: None, nav: Vec::new(), csrf: String::new(), flash: None },
                        error => context! { title => title, message => message },
                    })
                });
                match page {
                    Ok(html) => html_response(*status).body(html),
                    Err(e) => {
                        tracing::error!(error = %e, "back-office error page failed to render");
                        html_response(*status).body(format!(
                            "<!doctype html><title>{0}</title><h1>{0}</h1>",
                            status
                        ))
                    }
                }
            }
        }
    }
}

/// Templates for error pages, rendered away from the app state.
fn shared_pages() -> &'static Pages {
    static SHARED: std::sync::OnceLock<Pages> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| Pages::new(false, Vec::new()))
}

/// Percent-encodes a query component.
pub fn encode_component(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A local back-office path to return to after signing in, or the dashboard.
fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/backoffice")
        && !next.starts_with("/backoffice/login")
        && !next.contains("//")
        && !next.contains('\\');
    if ok {
        next
    } else {
        "/backoffice"
    }
}

/// A signed-in back-office user on a page (the session cookie). Without one, a page answers
/// with a redirect to the sign-in page. Other modules' pages (ops, segments, experiments) take
/// this extractor and call [`BackOfficeSession::require`] with their roles.
pub struct BackOfficeSession {
    pub session: Session,
    token: String,
}

impl BackOfficeSession {
    pub fn user(&self) -> &BackOfficeUser {
        &self.session.user
    }

    /// Who the audit list names for changes made on this page.
    pub fn actor(&self) -> Actor {
        Actor::User(self.session.user.clone())
    }

    /// Ok when the user holds one of `roles`, else the 403 page naming them.
    pub fn require(&self, roles: &[Role]) -> Result<(), PageFailure> {
        if roles.iter().any(|r| self.session.user.has(*r)) {
            Ok(())
        } else {
            Err(PageFailure::forbidden(roles))
        }
    }

    /// Refuses a form post without this session's CSRF token, or from a foreign origin.
    pub fn check_form(&self, req: &HttpRequest, presented: &str) -> Result<(), PageFailure> {
        if !same_origin(req) || !tokens_match(&self.session.csrf, presented) {
            tracing::warn!(user = %self.session.user.id, "back-office form refused: CSRF");
            return Err(PageFailure::csrf());
        }
        Ok(())
    }
}

/// A request's `Origin`, when sent, must be this host.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let origin = origin.to_str().unwrap_or("null");
    let info = req.connection_info();
    let host = info.host();
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest == host)
}

impl actix_web::FromRequest for BackOfficeSession {
    type Error = PageFailure;
    type Future = Pin<Box<dyn Future<Output = Result<BackOfficeSession, PageFailure>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let next = req
                .uri()
                .path_and_query()
                .map_or("/backoffice", |pq| pq.as_str())
                .to_string();
            let sign_in = || PageFailure::SignIn {
                next: if req.method() == actix_web::http::Method::GET {
                    next.clone()
                } else {
                    "/backoffice".to_string()
                },
            };
            let token = req
                .cookie(SESSION_COOKIE)
                .map(|c| c.value().to_string())
                .ok_or_else(sign_in)?;
            let backoffice = req
                .app_data::<web::Data<Backoffice>>()
                .ok_or_else(PageFailure::unavailable)?;
            let session = backoffice.session(&token).await?.ok_or_else(sign_in)?;
            Ok(BackOfficeSession { session, token })
        })
    }
}

/// The form field every post carries.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfOnly {
    pub csrf: String,
}

/// A page resource: a malformed form or query answers as a page.
fn page(path: &str) -> actix_web::Resource {
    web::resource(path)
        .app_data(
            web::FormConfig::default()
                .limit(256 * 1024)
                .error_handler(|err, _| {
                    PageFailure::new(
                        StatusCode::BAD_REQUEST,
                        "That form could not be read",
                        format!("Please check the fields and try again ({err})."),
                    )
                    .into()
                }),
        )
        .app_data(web::QueryConfig::default().error_handler(|_, _| {
            PageFailure::new(
                StatusCode::BAD_REQUEST,
                "That address could not be read",
                "The address has a malformed query string.",
            )
            .into()
        }))
        .app_data(
            web::PathConfig::default().error_handler(|_, _| PageFailure::not_found("page").into()),
        )
}

async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// Mounts the pages under `/backoffice` (before the storefront's catch-all).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/backoffice/static/bo.css", web::get().to(stylesheet))
        .route("/backoffice/static/bo.js", web::get().to(script))
        .service(page("/backoffice").route(web::get().to(dashboard::show)))
        .service(
            page("/backoffice/login")
                .route(web::get().to(auth::login_form))
                .route(web::post().to(auth::login)),
        )
        .service(
            page("/backoffice/login/code")
                .route(web::get().to(auth::code_form))
                .route(web::post().to(auth::code)),
        )
        .service(page("/backoffice/logout").route(web::post().to(auth::logout)))
        .service(page("/backoffice/me").route(web::get().to(auth::me)))
        .service(page("/backoffice/me/totp").route(web::post().to(auth::start_totp)))
        .service(page("/backoffice/me/totp/confirm").route(web::post().to(auth::confirm_totp)))
        .configure(promotions::configure)
        .configure(audit::configure)
        .configure(orders::configure)
        .configure(analytics::configure)
        .configure(users::configure)
        .configure(customers::configure)
        .configure(catalog::configure)
        .configure(imports::configure)
        .configure(segments::configure)
        .configure(slots::configure)
        .configure(experiments::configure)
        .configure(playlists::configure)
        .configure(preview::configure);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let pages = Pages::new(false, Vec::new());
        for (name, _) in TEMPLATES {
            assert!(pages.env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn next_stays_in_the_back_office() {
        let table = [
            ("/backoffice/orders?q=1", "/backoffice/orders?q=1"),
            ("/backoffice", "/backoffice"),
            ("https://evil.example/backoffice", "/backoffice"),
            ("//evil.example", "/backoffice"),
            ("/backoffice//evil.example", "/backoffice"),
            ("/backoffice/login", "/backoffice"),
            ("/", "/backoffice"),
        ];
        for (next, safe) in table {
            assert_eq!(safe_next(next), safe, "{next}");
        }
    }

    #[test]
    fn money_reads_like_money() {
        use protocol::{Currency, Money};
        assert_eq!(
            format_money(Money::new(123_456, Currency::EUR)),
            "EUR 1,234.56"
        );
        assert_eq!(format_money(Money::new(-5, Currency::EUR)), "-EUR 0.05");
    }

    #[test]
    fn flash_messages_survive_the_cookie() {
        let flash = Flash::success("Approved “SUMMER” <b>").expect("some");
        assert_eq!(Flash::decode(&flash.encode()), Some(flash));
        assert_eq!(Flash::decode("not base64!"), None);
    }
}
