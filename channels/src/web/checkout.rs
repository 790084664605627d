//! The checkout pages: the address and shipping form with the hub's price breakdown, the
//! hand-over to the payment provider's hosted page, the return from it, and cancelling a payment
//! in progress. The form never carries a price: the hub prices the basket for the chosen country
//! and shipping method, and the page shows what it says.

use super::format::{country_name, safe_next, sentence};
use super::page::{Level, PageError, Visitor};
use crate::backend::{BackendError, BasketView, CheckoutInput, CheckoutView, QuoteView};
use crate::context::{ChannelState, RequestContext};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::{context, Value};
use protocol::checkout::Address;
use protocol::order::CheckoutState;
use protocol::{CheckoutId, EventKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Shipping methods that collect in a store (`collect:<location>`) need no postal address.
const PICKUP_PREFIX: &str = "collect:";
/// The country the form starts with when the shop ships there.
const DEFAULT_COUNTRY: &str = "DE";
/// The "Confirming your payment…" page reloads itself every this many seconds…
const CONFIRM_REFRESH_SECONDS: u32 = 2;
/// …this many times (about a minute), then offers links instead.
const CONFIRM_MAX_ATTEMPTS: u32 = 30;

/// The fields of the checkout form, as entered (shown again when something needs fixing).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct CheckoutForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    line1: String,
    #[serde(default)]
    line2: String,
    #[serde(default)]
    postcode: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    shipping_method: String,
    /// `update` (the no-script "Update shipping options" button) re-renders instead of paying.
    #[serde(default, skip_serializing)]
    action: String,
}

impl CheckoutForm {
    fn address(&self) -> Address {
        Address {
            name: self.name.clone(),
            line1: self.line1.clone(),
            line2: self.line2.clone(),
            city: self.city.clone(),
            region: self.region.clone(),
            postcode: self.postcode.clone(),
            country: self.country.clone(),
            phone: self.phone.clone(),
        }
    }
}

/// `?country=&shipping_method=` of `GET /checkout`.
#[derive(Debug, Default, Deserialize)]
pub struct CheckoutQuery {
    #[serde(default)]
    country: String,
    #[serde(default)]
    shipping_method: String,
}

/// What the form shows besides the entered values.
#[derive(Debug, Default)]
struct Problems {
    /// Field name → what to fix.
    fields: BTreeMap<String, String>,
    /// A message for the whole form.
    message: Option<String>,
}

/// A country of the select.
#[derive(Debug, Serialize)]
struct CountryOption {
    code: String,
    name: String,
}

/// The shopper's basket if it can be checked out, else where to send them and why.
async fn basket_to_check_out(visitor: &mut Visitor) -> Result<BasketView, (Level, String)> {
    let basket = match visitor.basket().await {
        Ok(basket) => basket,
        Err(BackendError::Unavailable(detail)) => {
            tracing::error!(%detail, "checkout: basket unavailable");
            return Err((
                Level::Error,
                "We could not open the checkout just now. Please try again in a moment.".into(),
            ));
        }
        Err(e) => return Err((Level::Error, sentence(&e.to_string()))),
    };
    match basket {
        Some(b) if b.checkout.is_some() => Err((
            Level::Info,
            "A payment for this basket is in progress. Continue to payment, or cancel it to change the basket.".into(),
        )),
        Some(b) if !b.priced.lines.is_empty() => Ok(b),
        _ => Err((
            Level::Info,
            "Your basket is empty. Add something to it before checking out.".into(),
        )),
    }
}

/// The country to quote for: the asked one if the shop ships there, else Germany (or the first
/// country it ships to).
fn pick_country(asked: &str, countries: &[String]) -> String {
    let asked = asked.trim().to_ascii_uppercase();
    if countries.contains(&asked) {
        return asked;
    }
    if countries.iter().any(|c| c == DEFAULT_COUNTRY) {
        return DEFAULT_COUNTRY.to_string();
    }
    countries.first().cloned().unwrap_or(asked)
}

/// Why there is no price for the form.
enum NoQuote {
    /// The basket itself cannot be checked out (items no longer sold, emptied elsewhere): back
    /// to the basket with this message.
    Basket(String),
    /// Not to this destination, or not right now: shown on the form.
    Form(String),
}

impl From<BackendError> for NoQuote {
    fn from(e: BackendError) -> NoQuote {
        match e {
            BackendError::Unavailable(detail) => {
                tracing::error!(%detail, "checkout quote failed");
                NoQuote::Form(
                    "We could not work out the delivery options just now. Please try again in a moment."
                        .to_string(),
                )
            }
            BackendError::Invalid { message, .. } => NoQuote::Form(sentence(&message)),
            BackendError::NotFound(_) => NoQuote::Basket(
                "Your basket is empty. Add something to it before checking out.".into(),
            ),
            other => NoQuote::Basket(sentence(&other.to_string())),
        }
    }
}

/// The shipping options for the country and, for the chosen method (else the cheapest), the
/// full breakdown; or why there is none.
async fn quote(
    visitor: &Visitor,
    basket: &BasketView,
    country: &str,
    method: &str,
) -> Result<QuoteView, NoQuote> {
    let backend = &visitor.state.backend;
    let shopper = &visitor.ctx.shopper;
    let channel = visitor.ctx.channel;
    let options = backend
        .quote(shopper, basket.id, country, None, channel)
        .await?;
    let chosen = options
        .shipping_options
        .iter()
        .find(|o| o.id == method)
        .or(options.shipping_options.first())
        .map(|o| o.id.clone());
    match chosen {
        Some(method) => Ok(backend
            .quote(shopper, basket.id, country, Some(&method), channel)
            .await?),
        None => Err(NoQuote::Form(format!(
            "Sorry, we cannot deliver this basket to {}. Please choose another country.",
            country_name(country)
        ))),
    }
}

/// Renders the checkout form with these values and problems, quoting for its country.
async fn render_form(
    mut visitor: Visitor,
    status: StatusCode,
    basket: BasketView,
    mut form: CheckoutForm,
    mut problems: Problems,
) -> Result<HttpResponse, PageError> {
    let backend = visitor.state.backend.clone();
    let codes = backend.ship_to_countries();
    form.country = pick_country(&form.country, &codes);
    let countries: Vec<CountryOption> = codes
        .iter()
        .map(|c| CountryOption {
            code: c.clone(),
            name: country_name(c).to_string(),
        })
        .collect();
    let quote = match quote(&visitor, &basket, &form.country, &form.shipping_method).await {
        Ok(quote) => {
            if let Some(b) = &quote.breakdown {
                form.shipping_method = b.shipping.id.clone();
            }
            Some(quote)
        }
        Err(NoQuote::Form(message)) => {
            problems.fields.entry("country".into()).or_insert(message);
            None
        }
        Err(NoQuote::Basket(message)) => {
            visitor.flash(Level::Error, message);
            return Ok(visitor.redirect("/basket"));
        }
    };
    let signed_in = visitor.ctx.shopper.customer.is_some();
    visitor.allow_payment_redirect();
    // Click-and-collect asks who collects, not where to deliver.
    let pickup = form.shipping_method.starts_with(PICKUP_PREFIX);
    let page = context! {
        pickup,
        country_label => country_name(&form.country).to_string(),
        form,
        countries,
        quote,
        basket,
        signed_in,
        errors => problems.fields,
        message => problems.message,
    };
    visitor.render(status, "checkout.html", page).await
}

/// `GET /checkout?country=&shipping_method=`: the form, prefilled for a signed-in customer.
pub async fn show(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    query: web::Query<CheckoutQuery>,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    let basket = match basket_to_check_out(&mut visitor).await {
        Ok(basket) => basket,
        Err((level, message)) => {
            visitor.flash(level, message);
            return Ok(visitor.redirect("/basket"));
        }
    };
    let mut form = CheckoutForm {
        country: query.country.clone(),
        shipping_method: query.shipping_method.clone(),
        ..CheckoutForm::default()
    };
    if let Some(id) = visitor.ctx.shopper.customer {
        if let Ok(customer) = visitor.state.backend.customer(id).await {
            form.email = customer.email;
            form.name = customer.name;
        }
    }
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    render_form(visitor, StatusCode::OK, basket, form, Problems::default()).await
}

/// The form's own field names; a problem with any other field is shown at the top.
const FORM_FIELDS: [&str; 11] = [
    "email",
    "name",
    "line1",
    "line2",
    "postcode",
    "city",
    "region",
    "country",
    "phone",
    "shipping_method",
    "address",
];

/// `POST /checkout`: starts the payment and hands the shopper to the provider's page.
pub async fn start(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<CheckoutForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let mut visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let basket = match basket_to_check_out(&mut visitor).await {
        Ok(basket) => basket,
        Err((level, message)) => {
            visitor.flash(level, message);
            return Ok(visitor.redirect("/basket"));
        }
    };
    if form.action == "update" {
        return render_form(visitor, StatusCode::OK, basket, form, Problems::default()).await;
    }
    let email = form.email.trim();
    let input = CheckoutInput {
        email: (!email.is_empty()).then(|| email.to_string()),
        address: form.address(),
        shipping_method: form.shipping_method.trim().to_string(),
    };
    let backend = visitor.state.backend.clone();
    let started = backend
        .start_checkout(&visitor.ctx.shopper, basket.id, input, visitor.ctx.channel)
        .await;
    match started {
        Ok(view) => Ok(hand_over(visitor, view)),
        Err(BackendError::Invalid {
            message, fields, ..
        }) => {
            let mut problems = Problems::default();
            for f in fields {
                if FORM_FIELDS.contains(&f.field.as_str()) {
                    problems.fields.entry(f.field).or_insert(f.message);
                } else {
                    problems.message = Some(sentence(&f.message));
                }
            }
            let summary = "Please check the highlighted fields.".to_string();
            problems.message = problems.message.or(Some(if problems.fields.is_empty() {
                sentence(&message)
            } else {
                summary
            }));
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            render_form(visitor, status, basket, form, problems).await
        }
        Err(BackendError::RateLimited {
            retry_after,
            message,
        }) => {
            let problems = Problems {
                message: Some(sentence(&message)),
                ..Problems::default()
            };
            let status = StatusCode::TOO_MANY_REQUESTS;
            let mut res = render_form(visitor, status, basket, form, problems).await?;
            res.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(retry_after.max(1)),
            );
            Ok(res)
        }
        Err(BackendError::PaymentUnavailable(message)) => {
            let problems = Problems {
                message: Some(sentence(&message)),
                ..Problems::default()
            };
            let status = StatusCode::SERVICE_UNAVAILABLE;
            render_form(visitor, status, basket, form, problems).await
        }
        Err(
            BackendError::Conflict { message, .. } | BackendError::Unprocessable { message, .. },
        ) => {
            visitor.flash(Level::Error, sentence(&message));
            Ok(visitor.redirect("/basket"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Where a started checkout leads: the provider's page while the payment is pending, the order
/// once paid, else back to the basket with what happened.
fn hand_over(mut visitor: Visitor, view: CheckoutView) -> HttpResponse {
    if let Some(order) = &view.order {
        return visitor.redirect(&order.url);
    }
    match (&view.state, &view.payment_url) {
        (CheckoutState::PaymentPending, Some(url)) if is_web_url(url) => visitor.redirect(url),
        _ => {
            let message = view.message.unwrap_or_else(|| {
                "We could not open the payment page. Nothing was charged; please try again."
                    .to_string()
            });
            visitor.flash(Level::Error, message);
            visitor.redirect("/basket")
        }
    }
}

fn parse_checkout_id(text: &str) -> Result<CheckoutId, PageError> {
    text.parse().map_err(|_| PageError::not_found())
}

/// `?attempt=` of the return page; the provider's `session_id` is deliberately not read: the hub
/// asks the provider itself.
#[derive(Debug, Default, Deserialize)]
pub struct ReturnQuery {
    #[serde(default)]
    attempt: u32,
}

/// `GET /checkout/{id}/return`: the provider sent the shopper back. The hub checks the payment;
/// the order page once it is confirmed, a self-refreshing page while it is not yet.
pub async fn returned(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
    query: web::Query<ReturnQuery>,
) -> Result<HttpResponse, PageError> {
    let id = parse_checkout_id(&path)?;
    let mut visitor = Visitor::new(&req, state, ctx)?;
    let backend = visitor.state.backend.clone();
    let view = match backend.return_from_payment(&visitor.ctx.shopper, id).await {
        Ok(view) => view,
        Err(BackendError::NotFound(_)) => {
            return visitor
                .render_missing(req.path(), PageError::not_found())
                .await
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(order) = &view.order {
        visitor.flash(Level::Success, "Thank you! Your payment went through.");
        return Ok(visitor.redirect(&order.url));
    }
    if view.state != CheckoutState::PaymentPending {
        let message = view.message.clone().unwrap_or_else(|| {
            "The payment did not go through; nothing was charged. Your basket is as you left it."
                .to_string()
        });
        visitor.flash(Level::Info, message);
        return Ok(visitor.redirect("/basket"));
    }
    let attempt = query.attempt.saturating_add(1);
    let refresh = (attempt <= CONFIRM_MAX_ATTEMPTS)
        .then(|| format!("{CONFIRM_REFRESH_SECONDS};url=/checkout/{id}/return?attempt={attempt}",));
    let page = context! { checkout => pending_view(&view), refresh };
    visitor
        .render(StatusCode::OK, "checkout_pending.html", page)
        .await
}

/// What the pending and cancel pages show of a checkout.
fn pending_view(view: &CheckoutView) -> Value {
    context! {
        id => view.id.to_string(),
        total => view.breakdown.total,
        payment_url => view.payment_url.as_deref().filter(|u| is_web_url(u)),
        message => view.message.as_deref(),
    }
}

/// Only web links are offered as "Continue to payment".
fn is_web_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://") || safe_next(url).is_some()
}

/// `GET /checkout/{id}/cancel`: the provider's "back" link. Cancelling changes things, so this
/// only asks; the button posts.
pub async fn confirm_cancel(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let id = parse_checkout_id(&path)?;
    let mut visitor = Visitor::new(&req, state, ctx)?;
    let backend = visitor.state.backend.clone();
    let view = match backend.checkout(&visitor.ctx.shopper, id).await {
        Ok(view) => view,
        Err(BackendError::NotFound(_)) => {
            return visitor
                .render_missing(req.path(), PageError::not_found())
                .await
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(order) = &view.order {
        return Ok(visitor.redirect(&order.url));
    }
    if view.state != CheckoutState::PaymentPending {
        if let Some(message) = view.message {
            visitor.flash(Level::Info, message);
        }
        return Ok(visitor.redirect("/basket"));
    }
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    let page = context! { checkout => pending_view(&view) };
    visitor
        .render(StatusCode::OK, "checkout_cancel.html", page)
        .await
}

/// A form that carries only its CSRF token.
#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /checkout/{id}/cancel`: cancels the payment, unlocks the basket and says what happened;
/// to the order instead if the payment had gone through after all.
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let id = parse_checkout_id(&path)?;
    let backend = visitor.state.backend.clone();
    match backend
        .cancel_checkout(&visitor.ctx.shopper, id, visitor.ctx.channel)
        .await
    {
        Ok(view) => {
            if let Some(order) = &view.order {
                visitor.flash(
                    Level::Success,
                    "Your payment had already gone through, so your order is placed.",
                );
                return Ok(visitor.redirect(&order.url));
            }
            let message = view.message.unwrap_or_else(|| {
                "The payment was cancelled; nothing was charged. Your basket is as you left it."
                    .to_string()
            });
            visitor.flash(Level::Info, message);
        }
        Err(BackendError::NotFound(_)) => {
            return visitor
                .render_missing(req.path(), PageError::not_found())
                .await
        }
        Err(
            BackendError::Conflict { message, .. } | BackendError::Unprocessable { message, .. },
        ) => visitor.flash(Level::Error, sentence(&message)),
        Err(BackendError::PaymentUnavailable(message)) => {
            visitor.flash(Level::Error, sentence(&message))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(visitor.redirect("/basket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_country_is_one_the_shop_ships_to() {
        let countries: Vec<String> = ["AT", "DE", "US"].iter().map(|c| c.to_string()).collect();
        assert_eq!(pick_country("us", &countries), "US");
        assert_eq!(pick_country("", &countries), "DE");
        assert_eq!(pick_country("XX", &countries), "DE");
        assert_eq!(pick_country("", &["FR".to_string()]), "FR");
    }

    #[test]
    fn only_web_links_lead_to_payment() {
        assert!(is_web_url("https://pay.example/s/1"));
        assert!(is_web_url("/checkout/1/return"));
        assert!(!is_web_url("javascript:alert(1)"));
        assert!(!is_web_url("//evil.example"));
    }
}
