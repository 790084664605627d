//! The storefront: server-rendered pages for the web channel (home, categories, search,
//! products, basket, checkout, orders, sign-in and registration), a friendly HTML 404, and the
//! embedded stylesheet and script.
//!
//! Pages work without JavaScript; the script only adds the live basket (a WebSocket to
//! `/api/v1/baskets/{id}/live`) and re-quotes the checkout when the country or shipping method
//! changes. Every form carries a CSRF token (double submit: cookie and hidden field) and answers
//! with Post/Redirect/Get. Pages never price anything: they show what the
//! [`crate::backend::Backend`] returns. Templates are embedded, so the binary is
//! self-contained, and auto-escaped.

mod account;
mod basket;
mod catalog;
mod checkout;
mod consents;
pub(crate) mod format;
mod in_store;
mod oauth;
mod orders;
mod page;
#[cfg(test)]
mod tests;

pub use catalog::hero_image_and_link;
pub use page::{Flash, Level, PageError};

use crate::context::{ChannelState, RequestContext};
use actix_web::http::{header, StatusCode};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse, Resource};
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State};
use protocol::{Currency, Money};
use std::sync::OnceLock;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("home.html", include_str!("../../templates/home.html")),
    ("listing.html", include_str!("../../templates/listing.html")),
    ("product.html", include_str!("../../templates/product.html")),
    ("basket.html", include_str!("../../templates/basket.html")),
    (
        "checkout.html",
        include_str!("../../templates/checkout.html"),
    ),
    (
        "checkout_pending.html",
        include_str!("../../templates/checkout_pending.html"),
    ),
    (
        "checkout_cancel.html",
        include_str!("../../templates/checkout_cancel.html"),
    ),
    ("order.html", include_str!("../../templates/order.html")),
    ("orders.html", include_str!("../../templates/orders.html")),
    ("account.html", include_str!("../../templates/account.html")),
    ("signin.html", include_str!("../../templates/signin.html")),
    (
        "register.html",
        include_str!("../../templates/register.html"),
    ),
    ("error.html", include_str!("../../templates/error.html")),
    (
        "oauth_authorize.html",
        include_str!("../../templates/oauth_authorize.html"),
    ),
];

const SITE_CSS: &str = include_str!("../../static/site.css");
const SITE_JS: &str = include_str!("../../static/site.js");

/// Changes whenever the stylesheet or script does, so their URLs can be cached for a year.
fn asset_version() -> String {
    const VERSION: u64 =
        format::fnv1a(SITE_CSS.as_bytes()) ^ format::fnv1a(SITE_JS.as_bytes()).rotate_left(1);
    format!("{VERSION:016x}")
}

/// The storefront's templates, compiled once, HTML-escaped throughout.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        // Every template is HTML: escape all output, whatever the template's name.
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_formatter(html_formatter);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_filter("money", money_filter);
        env.add_filter("rate", |bp: u32| format::format_rate(bp));
        env.add_filter("urlencode", |text: &str| format::encode_component(text));
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // Caught by the tests; a page using it then answers 500 rather than the process dying.
                tracing::error!(template = name, error = %e, "storefront template does not compile");
            }
        }
        Templates { env }
    }

    /// The templates for error pages rendered away from the app state.
    fn shared() -> &'static Templates {
        static SHARED: OnceLock<Templates> = OnceLock::new();
        SHARED.get_or_init(Templates::new)
    }

    /// Renders a template.
    pub fn render(&self, name: &str, ctx: Value) -> Result<String, Error> {
        self.env.get_template(name)?.render(ctx)
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

/// Escapes text for HTML like minijinja does, except `/`: escaping it adds no safety inside
/// text and quoted attributes, and it would turn every link into `&#x2f;p&#x2f;...`.
fn html_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.as_str() {
        Some(text) if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() => out
            .write_str(&format::escape_html(text))
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "could not write the page")),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// `{{ price|money }}`: a serialized [`Money`] (`{minor, currency}`) as a price tag. `none`
/// renders as nothing.
fn money_filter(value: Value, _kwargs: Kwargs) -> Result<String, Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(String::new());
    }
    let bad = |what: &str| Error::new(ErrorKind::InvalidOperation, format!("money filter: {what}"));
    let minor =
        i64::try_from(value.get_attr("minor")?).map_err(|_| bad("minor is not an integer"))?;
    let code = value.get_attr("currency")?;
    let currency = code
        .as_str()
        .and_then(|c| Currency::parse(c).ok())
        .ok_or_else(|| bad("unknown currency"))?;
    Ok(format::format_money(Money::new(minor, currency)))
}

/// A page resource: extractor errors (a malformed form or query) answer as HTML pages.
fn page(path: &str) -> Resource {
    web::resource(path)
        .app_data(
            web::FormConfig::default()
                .limit(crate::error::MAX_BODY_BYTES)
                .error_handler(|err, _| {
                    PageError::bad_request(format!("We could not read that form ({err}).")).into()
                }),
        )
        .app_data(web::QueryConfig::default().error_handler(|_, _| {
            PageError::bad_request("The address has a malformed query string.").into()
        }))
        .app_data(web::PathConfig::default().error_handler(|_, _| PageError::not_found().into()))
}

/// Registers the page routes, the stylesheet and script, and the HTML 404 as the default
/// service (unknown `/api/...` routes are answered by the API's own default).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(page("/").route(web::get().to(catalog::home)))
        .service(page("/c/{category}").route(web::get().to(catalog::category)))
        .service(page("/search").route(web::get().to(catalog::search)))
        .service(page("/p/{slug}").route(web::get().to(catalog::product)))
        .service(page("/p/{slug}/notify").route(web::post().to(catalog::notify)))
        .service(page("/basket").route(web::get().to(basket::show)))
        .service(page("/basket/add").route(web::post().to(basket::add)))
        .service(page("/basket/update").route(web::post().to(basket::update)))
        .service(page("/basket/remove").route(web::post().to(basket::remove)))
        .service(page("/basket/clear").route(web::post().to(basket::clear)))
        .service(page("/basket/coupon").route(web::post().to(basket::apply_coupon)))
        .service(page("/basket/coupon/remove").route(web::post().to(basket::remove_coupon)))
        .service(
            page("/checkout")
                .route(web::get().to(checkout::show))
                .route(web::post().to(checkout::start)),
        )
        .service(page("/checkout/{id}/return").route(web::get().to(checkout::returned)))
        .service(
            page("/checkout/{id}/cancel")
                .route(web::get().to(checkout::confirm_cancel))
                .route(web::post().to(checkout::cancel)),
        )
        .service(page("/orders/{number}").route(web::get().to(orders::show)))
        .service(page("/account/orders").route(web::get().to(orders::history)))
        .service(page("/account").route(web::get().to(in_store::show)))
        .service(page("/account/phone").route(web::post().to(in_store::set_phone)))
        .service(page("/account/consents").route(web::post().to(consents::save)))
        .service(
            page("/account/loyalty-number").route(web::post().to(in_store::get_loyalty_number)),
        )
        .service(
            page("/signin")
                .route(web::get().to(account::sign_in_form))
                .route(web::post().to(account::sign_in)),
        )
        .service(
            page("/register")
                .route(web::get().to(account::register_form))
                .route(web::post().to(account::register)),
        )
        .service(page("/signout").route(web::post().to(account::sign_out)))
        .service(
            page("/oauth/authorize")
                .route(web::get().to(oauth::authorize))
                .route(web::post().to(oauth::decide)),
        )
        .service(page("/account/linked-apps/unlink").route(web::post().to(oauth::unlink)))
        .service(web::resource("/static/site.css").route(web::get().to(stylesheet)))
        .service(web::resource("/static/site.js").route(web::get().to(script)))
        .default_service(web::to(not_found));
}

/// The friendly HTML 404 for unknown routes (an unknown `/api/...` route still gets JSON).
/// `configure` registers it as the default service; an app that sets its own default service
/// should route non-API requests here.
pub async fn not_found(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, PageError> {
    let path = req.path();
    if path == "/api" || path.starts_with("/api/") {
        return Ok(crate::error::api_not_found(req).await);
    }
    page::Visitor::new(&req, state, ctx)?
        .render_missing(req.path(), PageError::not_found())
        .await
}

async fn stylesheet(req: HttpRequest) -> HttpResponse {
    asset(&req, "text/css; charset=utf-8", SITE_CSS)
}

async fn script(req: HttpRequest) -> HttpResponse {
    asset(&req, "text/javascript; charset=utf-8", SITE_JS)
}

/// An embedded asset: cached for a year when asked for by its versioned URL, an hour otherwise.
fn asset(req: &HttpRequest, content_type: &str, body: &'static str) -> HttpResponse {
    let versioned = req.query_string() == format!("v={}", asset_version());
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=3600"
    };
    HttpResponse::build(StatusCode::OK)
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}
