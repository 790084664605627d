//! What every page shares: the visitor (cookies to set, CSRF token, anonymous id, flash
//! message), the header and footer data, rendering, redirects, and the HTML error type.

use super::format::{is_token, origin_allowed, tokens_match};
use super::Templates;
use crate::backend::{BackendError, BasketView};
use crate::context::{
    random_token, ChannelState, RequestContext, ANON_COOKIE, CSRF_COOKIE, SESSION_COOKIE,
};
use actix_web::cookie::Cookie;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use base64::Engine;
use minijinja::{context, Value};
use protocol::{AnonymousId, Event, EventKind, Subject};
use serde::Serialize;
use std::fmt;
use time::OffsetDateTime;

/// The one-shot message shown on the page after a redirect ("Added to your basket").
pub const FLASH_COOKIE: &str = "omnihub_flash";
/// The anonymous id lives a year; the CSRF token as long as a session.
const ANON_DAYS: i64 = 365;
const CSRF_DAYS: i64 = 30;
/// Anonymous baskets live 30 days in the browser.
pub const BASKET_DAYS: i64 = 30;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How a flash message looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Success,
    Error,
    Info,
}

/// A message carried to the next page in a cookie (Post/Redirect/Get).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flash {
    pub level: Level,
    pub text: String,
}

impl Flash {
    /// A success message for the next page (the back office's forms pass an `Option`).
    pub fn success(text: impl Into<String>) -> Option<Flash> {
        Some(Flash {
            level: Level::Success,
            text: text.into(),
        })
    }

    pub fn error(text: impl Into<String>) -> Option<Flash> {
        Some(Flash {
            level: Level::Error,
            text: text.into(),
        })
    }

    pub fn info(text: impl Into<String>) -> Option<Flash> {
        Some(Flash {
            level: Level::Info,
            text: text.into(),
        })
    }

    /// The cookie value: the level's letter and at most 300 characters, base64.
    pub fn encode(&self) -> String {
        let level = match self.level {
            Level::Success => 's',
            Level::Error => 'e',
            Level::Info => 'i',
        };
        let text: String = self.text.chars().take(300).collect();
        BASE64.encode(format!("{level}{text}"))
    }

    pub fn decode(value: &str) -> Option<Flash> {
        let raw = String::from_utf8(BASE64.decode(value).ok()?).ok()?;
        let mut chars = raw.chars();
        let level = match chars.next()? {
            's' => Level::Success,
            'e' => Level::Error,
            'i' => Level::Info,
            _ => return None,
        };
        Some(Flash {
            level,
            text: chars.collect(),
        })
    }
}

/// A page that could not be shown, as a friendly HTML page.
#[derive(Debug, Clone)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> PageError {
        PageError {
            status,
            title,
            message: message.into(),
        }
    }

    pub fn not_found() -> PageError {
        PageError::new(StatusCode::NOT_FOUND, "Page not found", "We could not find the page you were looking for. It may have moved, or the link may be mistyped.")
    }

    pub fn forbidden() -> PageError {
        PageError::new(StatusCode::FORBIDDEN, "This form has expired", "For your security we could not accept this form. Go back, reload the page and try again.")
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Something is wrong with that request",
            message,
        )
    }

    pub fn unavailable() -> PageError {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "We will be right back",
            "The shop is temporarily unavailable. Please try again in a moment.",
        )
    }
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.title,
            self.message
        )
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    /// Rendered without the visitor's header data (no request here): the shop name, search box
    /// and links still show.
    fn error_response(&self) -> HttpResponse {
        let body = Templates::shared().render("error.html", context! { chrome => Chrome::bare(), error => context! { title => self.title, message => &self.message } });
        match body {
            Ok(html) => html_response(self.status).body(html),
            Err(e) => {
                tracing::error!(error = %e, "error page failed to render");
                html_response(self.status).body(format!(
                    "<!doctype html><title>{0}</title><h1>{0}</h1>",
                    self.status
                ))
            }
        }
    }
}

impl From<BackendError> for PageError {
    fn from(e: BackendError) -> PageError {
        match e {
            BackendError::NotFound(_) => PageError::not_found(),
            BackendError::Unavailable(detail) => {
                tracing::error!(%detail, "backend unavailable");
                PageError::unavailable()
            }
            other => PageError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "We could not do that",
                super::format::sentence(&other.to_string()),
            ),
        }
    }
}

impl From<minijinja::Error> for PageError {
    fn from(e: minijinja::Error) -> PageError {
        tracing::error!(error = %e, "template failed to render");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Sorry, this page could not be shown. Please try again.",
        )
    }
}

/// The storefront's content security policy: scripts, styles and form targets from this site
/// only.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The policy of a page whose form answers with a redirect to the payment provider's hosted
/// page: browsers apply `form-action` to that redirect too, and the provider's origin is only
/// known once the payment is opened, so any web origin is allowed as a form target here. The
/// page's own forms still post to this site; nothing else is relaxed.
const CSP_PAYMENT_FORM: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'";

/// A response with the storefront's HTML headers: personalised (never stored by caches) and
/// locked down (no framing, scripts and styles only from this site).
pub fn html_response(status: StatusCode) -> HttpResponseBuilder {
    let mut res = HttpResponse::build(status);
    res.content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP));
    res
}

/// A category link of the header navigation.
#[derive(Debug, Serialize)]
struct NavItem {
    id: String,
    name: String,
}

/// What the header, footer and scripts of every page need.
#[derive(Debug, Serialize)]
pub struct Chrome {
    asset: String,
    categories: Vec<NavItem>,
    /// The signed-in customer's name.
    customer: Option<String>,
    basket_id: Option<String>,
    basket_version: u64,
    /// A payment for the basket is in progress (the live basket reloads when this changes).
    locked: bool,
    count: u64,
    csrf: String,
    flash: Option<Flash>,
    /// The current page, to come back to after signing in.
    next: String,
    signin_url: String,
}

impl Chrome {
    fn bare() -> Chrome {
        Chrome {
            asset: super::asset_version(),
            categories: Vec::new(),
            customer: None,
            basket_id: None,
            basket_version: 0,
            locked: false,
            count: 0,
            csrf: String::new(),
            flash: None,
            next: String::new(),
            signin_url: "/signin".to_string(),
        }
    }
}

/// The sign-in link of a page: back to this page afterwards, unless it is the home page or an
/// account page.
fn signin_url(current: &str) -> String {
    let plain =
        current == "/" || current.starts_with("/signin") || current.starts_with("/register");
    if plain {
        "/signin".to_string()
    } else {
        format!("/signin?next={}", super::format::encode_component(current))
    }
}

/// The visitor of one request: who they are, and the cookies the response must set.
pub struct Visitor {
    pub state: web::Data<ChannelState>,
    pub ctx: RequestContext,
    anonymous: AnonymousId,
    csrf: String,
    /// The CSRF cookie the browser sent (not one minted for this response).
    csrf_cookie: Option<String>,
    cookies: Vec<Cookie<'static>>,
    flash: Option<Flash>,
    flash_cookie: bool,
    next: String,
    basket: Option<Option<BasketView>>,
    /// The page's form may be answered with a redirect to the payment provider.
    payment_form: bool,
}

impl Visitor {
    /// Reads the visitor's cookies and mints the missing CSRF token and anonymous id.
    pub fn new(
        req: &HttpRequest,
        state: web::Data<ChannelState>,
        mut ctx: RequestContext,
    ) -> Result<Visitor, PageError> {
        let mut cookies = Vec::new();
        let csrf_cookie = req
            .cookie(CSRF_COOKIE)
            .map(|c| c.value().to_string())
            .filter(|t| is_token(t));
        let csrf = match &csrf_cookie {
            Some(token) => token.clone(),
            None => {
                let token = random_token().map_err(|_| PageError::unavailable())?;
                cookies.push(state.cookie(CSRF_COOKIE, token.clone(), CSRF_DAYS));
                token
            }
        };
        let anonymous = match ctx.shopper.anonymous {
            Some(id) => id,
            None => {
                let id = AnonymousId::new();
                cookies.push(state.cookie(ANON_COOKIE, id.to_string(), ANON_DAYS));
                ctx.shopper.anonymous = Some(id);
                id
            }
        };
        if ctx.session_token.is_none() && req.cookie(SESSION_COOKIE).is_some() {
            // An expired or revoked session: forget it.
            cookies.push(state.removal(SESSION_COOKIE));
        }
        let flash_cookie = req.cookie(FLASH_COOKIE);
        let flash = flash_cookie.as_ref().and_then(|c| Flash::decode(c.value()));
        let next = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        Ok(Visitor {
            state,
            ctx,
            anonymous,
            csrf,
            csrf_cookie,
            cookies,
            flash,
            flash_cookie: flash_cookie.is_some(),
            next,
            basket: None,
            payment_form: false,
        })
    }

    /// Refuses a form post that did not come from our own pages: a foreign `Origin`, or a
    /// `csrf` field that differs from the CSRF cookie (double submit).
    pub fn check_form(&self, req: &HttpRequest, presented: &str) -> Result<(), PageError> {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("null");
            let info = req.connection_info();
            if !origin_allowed(origin, info.host(), &self.state.settings.allowed_origins) {
                tracing::warn!(%origin, host = info.host(), "form post from a foreign origin refused");
                return Err(PageError::forbidden());
            }
        }
        match &self.csrf_cookie {
            Some(expected) if tokens_match(expected, presented) => Ok(()),
            _ => Err(PageError::forbidden()),
        }
    }

    /// Who events are about: the customer, else the anonymous browser.
    pub fn subject(&self) -> Subject {
        match self.ctx.shopper.customer {
            Some(id) => Subject::Customer(id),
            None => Subject::Anonymous(self.anonymous),
        }
    }

    /// Records an interaction for the DXP.
    pub fn record(&self, kind: EventKind, details: &[(&str, &str)]) {
        let event = details.iter().fold(
            Event::new(
                OffsetDateTime::now_utc(),
                self.subject(),
                self.ctx.channel,
                kind,
            ),
            |e, (k, v)| e.with(k, v),
        );
        self.state.backend.record(event);
    }

    /// The shopper's current basket (fetched once per request).
    pub async fn basket(&mut self) -> Result<Option<BasketView>, BackendError> {
        if let Some(cached) = &self.basket {
            return Ok(cached.clone());
        }
        let basket = self.state.backend.current_basket(&self.ctx.shopper).await?;
        self.basket = Some(basket.clone());
        Ok(basket)
    }

    /// Remembers the basket a change returned, for the header of this response.
    pub fn set_basket(&mut self, basket: BasketView) {
        self.basket = Some(Some(basket));
    }

    /// Adds a cookie to the response, replacing one of the same name set earlier.
    pub fn set_cookie(&mut self, cookie: Cookie<'static>) {
        self.cookies.retain(|c| c.name() != cookie.name());
        self.cookies.push(cookie);
    }

    /// A fresh CSRF token (after signing in or out, so a token seen before does not carry over).
    pub fn rotate_csrf(&mut self) -> Result<(), PageError> {
        let token = random_token().map_err(|_| PageError::unavailable())?;
        self.set_cookie(self.state.cookie(CSRF_COOKIE, token.clone(), CSRF_DAYS));
        self.csrf = token;
        Ok(())
    }

    /// Lets the rendered page's form be answered with a redirect to the payment provider.
    pub fn allow_payment_redirect(&mut self) {
        self.payment_form = true;
    }

    /// Shows `text` on the next page.
    pub fn flash(&mut self, level: Level, text: impl Into<String>) {
        let value = Flash {
            level,
            text: text.into(),
        }
        .encode();
        self.set_cookie(self.state.cookie(FLASH_COOKIE, value, 1));
    }

    /// 303 See Other to a local path (or the payment provider's page), with the cookies.
    pub fn redirect(self, to: &str) -> HttpResponse {
        let mut res = HttpResponse::SeeOther();
        res.insert_header((header::LOCATION, to))
            .insert_header((header::CACHE_CONTROL, "no-store"));
        for cookie in self.cookies {
            res.cookie(cookie);
        }
        res.finish()
    }

    async fn chrome(&mut self) -> Chrome {
        let catalog = self.state.backend.catalog();
        let categories = catalog
            .categories()
            .iter()
            .map(|c| NavItem {
                id: c.id.0.clone(),
                name: c.name.clone(),
            })
            .collect();
        let customer = match self.ctx.shopper.customer {
            Some(id) => match self.state.backend.customer(id).await {
                Ok(view) => Some(view.name),
                Err(e) => {
                    tracing::warn!(error = %e, "customer name unavailable for the page header");
                    Some("there".to_string())
                }
            },
            None => None,
        };
        let basket = self.basket().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "basket unavailable for the page header");
            None
        });
        let mut flash = self.flash.take();
        if self.flash_cookie {
            self.cookies.push(self.state.removal(FLASH_COOKIE));
        }
        if flash.as_ref().is_some_and(|f| f.text.is_empty()) {
            flash = None;
        }
        Chrome {
            asset: super::asset_version(),
            categories,
            customer,
            basket_id: basket.as_ref().map(|b| b.id.to_string()),
            basket_version: basket.as_ref().map_or(0, |b| b.version),
            locked: basket.as_ref().is_some_and(|b| b.checkout.is_some()),
            count: basket.as_ref().map_or(0, |b| b.priced.item_count),
            csrf: self.csrf.clone(),
            flash,
            next: self.next.clone(),
            signin_url: signin_url(&self.next),
        }
    }

    /// Renders `template` with the header data, and sets the visitor's cookies.
    pub async fn render(
        mut self,
        status: StatusCode,
        template: &str,
        page: Value,
    ) -> Result<HttpResponse, PageError> {
        let chrome = self.chrome().await;
        let html = self
            .state
            .templates
            .render(template, context! { chrome => chrome, ..page })?;
        let mut res = html_response(status);
        if self.payment_form {
            res.insert_header((header::CONTENT_SECURITY_POLICY, CSP_PAYMENT_FORM));
        }
        for cookie in self.cookies {
            res.cookie(cookie);
        }
        Ok(res.body(html))
    }

    /// A page that does not exist: recorded as a 404 page view, answered with the error page.
    pub async fn render_missing(
        self,
        path: &str,
        error: PageError,
    ) -> Result<HttpResponse, PageError> {
        self.record(EventKind::PageView, &[("path", path), ("status", "404")]);
        self.render_error(error).await
    }

    /// The friendly page for an error, with the full header.
    pub async fn render_error(self, error: PageError) -> Result<HttpResponse, PageError> {
        let page =
            context! { error => context! { title => error.title, message => &error.message } };
        self.render(error.status, "error.html", page).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_messages_survive_the_cookie() {
        for level in [Level::Success, Level::Error, Level::Info] {
            let flash = Flash {
                level,
                text: "Only 3 of COF-1 available; “quoted” <b>".into(),
            };
            assert_eq!(Flash::decode(&flash.encode()), Some(flash));
        }
        assert_eq!(Flash::decode("not base64!"), None);
        assert_eq!(Flash::decode(&BASE64.encode("xhello")), None);
    }
}
