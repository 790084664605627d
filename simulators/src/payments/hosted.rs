//! The hosted payment page a Checkout Session's `url` points to: `GET /pay/{id}` shows the
//! order and a card form, `POST /pay/{id}` pays, `POST /pay/{id}/authenticate` ends the 3-D
//! Secure step. Card data stays here; the hub only learns the outcome through the session and
//! the webhooks. [`submit_card`] is the one way a card reaches a session — the test API's
//! `/_sim/checkout/sessions/{id}/pay` uses it too.

use super::errors::StripeError;
use super::ledger::{money, PayOutcome};
use super::objects::{luhn, Card, Session, SessionStatus};
use super::webhooks::RequestInfo;
use super::Shared;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use minijinja::{context, Environment};
use serde::{Deserialize, Serialize};

/// What the shopper sees when 3-D Secure fails (Stripe's wording).
const AUTHENTICATION_FAILED: &str = "We are unable to authenticate your payment method. Please choose a different payment method and try again.";

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/pay/{id}", web::get().to(show))
        .route("/pay/{id}", web::post().to(pay))
        .route("/pay/{id}/authenticate", web::post().to(authenticate));
}

pub(super) fn pages() -> Environment<'static> {
    let mut pages = Environment::new();
    // Compiled into the binary; a syntax error fails the tests.
    if let Err(e) = pages.add_template("checkout.html", include_str!("templates/checkout.html")) {
        tracing::error!(error = %e, "broken payment page template");
    }
    if let Err(e) = pages.add_template("dashboard.html", include_str!("templates/dashboard.html")) {
        tracing::error!(error = %e, "broken dashboard template");
    }
    pages
}

/// A card as typed on the page (or given to the test API).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct CardInput {
    #[serde(default)]
    pub card_number: String,
    /// `MM / YY`, `MM/YY` or `MM/YYYY`.
    #[serde(default)]
    pub card_expiry: String,
    #[serde(default)]
    pub card_cvc: String,
    #[serde(default)]
    pub cardholder_name: String,
}

/// Checks a card as Stripe's card form does and pays the session with it.
pub(super) fn submit_card(
    shared: &Shared,
    session_id: &str,
    input: &CardInput,
) -> Result<PayOutcome, StripeError> {
    shared.with_ledger(&RequestInfo::default(), |ledger, now| {
        // A paid session answers "already paid" whatever is typed, and is never charged again.
        if ledger.session(session_id)?.paid() {
            return Ok(PayOutcome::AlreadyPaid);
        }
        let card = validate(input, now)?;
        ledger.pay_session(session_id, card, now)
    })
}

fn validate(input: &CardInput, now: i64) -> Result<Card, StripeError> {
    let digits: String = input
        .card_number
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if digits.len() < 13 && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StripeError::card(
            "incomplete_number",
            "Your card number is incomplete.",
            "number",
        ));
    }
    if digits.len() > 19 || !luhn(&digits) {
        return Err(StripeError::card(
            "invalid_number",
            "Your card number is invalid.",
            "number",
        ));
    }
    let Some((month, year)) = parse_expiry(&input.card_expiry) else {
        return Err(StripeError::card(
            "incomplete_expiry",
            "Your card's expiration date is incomplete.",
            "exp_month",
        ));
    };
    if !(1..=12).contains(&month) {
        return Err(StripeError::card(
            "invalid_expiry_month",
            "Your card's expiration date is invalid.",
            "exp_month",
        ));
    }
    let (this_year, this_month) = year_month(now);
    if (year, month) < (this_year, this_month) {
        return Err(StripeError::card(
            "invalid_expiry_year",
            "Your card's expiration date is in the past.",
            "exp_year",
        ));
    }
    let cvc = input.card_cvc.trim();
    if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StripeError::card(
            "incomplete_cvc",
            "Your card's security code is incomplete.",
            "cvc",
        ));
    }
    Ok(Card::from_number(&digits, month, year))
}

/// `MM / YY` → (month, four-digit year).
fn parse_expiry(text: &str) -> Option<(u32, u32)> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let (month, year) = compact.split_once('/')?;
    let month: u32 = month.parse().ok()?;
    let year: u32 = match year.len() {
        2 => 2000 + year.parse::<u32>().ok()?,
        4 => year.parse().ok()?,
        _ => return None,
    };
    Some((month, year))
}

/// The UTC year and month of a Unix time (Howard Hinnant's `civil_from_days`).
fn year_month(unix: i64) -> (u32, u32) {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        u32::try_from(year).unwrap_or(0),
        u32::try_from(month).unwrap_or(1),
    )
}

/// One order line as the page shows it.
#[derive(Serialize)]
struct Line {
    name: String,
    description: Option<String>,
    quantity: i64,
    amount: String,
}

/// Which page to show.
enum View<'a> {
    Pay {
        error: Option<&'a str>,
        input: &'a CardInput,
    },
    Authenticate,
    Paid,
    Expired,
}

fn render(shared: &Shared, session: &Session, view: View<'_>, status: StatusCode) -> HttpResponse {
    let lines: Vec<Line> = session
        .line_items
        .iter()
        .map(|item| Line {
            name: item.name.clone(),
            description: item.description.clone(),
            quantity: item.quantity,
            amount: money(item.total(), &item.currency),
        })
        .collect();
    let (name, error, input) = match &view {
        View::Pay { error, input } => ("pay", *error, Some(*input)),
        View::Authenticate => ("authenticate", None, None),
        View::Paid => ("paid", None, None),
        View::Expired => ("expired", None, None),
    };
    let page = context! {
        view => name,
        merchant => shared.merchant_name,
        session_id => session.id,
        total => money(session.amount_total(), &session.currency),
        lines => lines,
        email => session.customer_email,
        cancel_url => session.cancel_url,
        success_url => session.success_url(),
        error => error,
        card_number => input.map(|i| i.card_number.as_str()),
        card_expiry => input.map(|i| i.card_expiry.as_str()),
        cardholder_name => input.map(|i| i.cardholder_name.as_str()),
    };
    html(shared, status, page)
}

fn html(shared: &Shared, status: StatusCode, page: minijinja::Value) -> HttpResponse {
    match shared
        .pages
        .get_template("checkout.html")
        .and_then(|t| t.render(page))
    {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the payment page");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The payment page could not be shown.")
        }
    }
}

fn missing(shared: &Shared) -> HttpResponse {
    html(
        shared,
        StatusCode::NOT_FOUND,
        context! { view => "missing", merchant => shared.merchant_name },
    )
}

fn see_other(url: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("location", url))
        .finish()
}

/// The session as it is now (expired on access if its time has passed).
fn current(shared: &Shared, id: &str) -> Option<Session> {
    shared.with_ledger(&RequestInfo::default(), |ledger, _| {
        ledger.session(id).ok().cloned()
    })
}

async fn show(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let Some(session) = current(&shared, &id) else {
        return missing(&shared);
    };
    let view = match session.status {
        SessionStatus::Complete => View::Paid,
        SessionStatus::Expired => View::Expired,
        SessionStatus::Open if session.pending_authentication.is_some() => View::Authenticate,
        SessionStatus::Open => View::Pay {
            error: None,
            input: &CardInput::default(),
        },
    };
    let status = match view {
        View::Expired => StatusCode::GONE,
        _ => StatusCode::OK,
    };
    render(&shared, &session, view, status)
}

async fn pay(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    input: web::Form<CardInput>,
) -> HttpResponse {
    let outcome = submit_card(&shared, &id, &input);
    answer(&shared, &id, outcome, &input)
}

#[derive(Deserialize)]
struct AuthenticateForm {
    action: String,
}

async fn authenticate(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    form: web::Form<AuthenticateForm>,
) -> HttpResponse {
    let approve = form.action == "complete";
    let outcome = shared.with_ledger(&RequestInfo::default(), |ledger, now| {
        ledger.authenticate_session(&id, approve, now)
    });
    answer(&shared, &id, outcome, &CardInput::default())
}

/// The page after a payment attempt: the success URL, the 3-D Secure step, or the form again
/// with what went wrong.
fn answer(
    shared: &Shared,
    id: &str,
    outcome: Result<PayOutcome, StripeError>,
    input: &CardInput,
) -> HttpResponse {
    let Some(session) = current(shared, id) else {
        return missing(shared);
    };
    match outcome {
        Ok(PayOutcome::Paid) => see_other(&session.success_url()),
        Ok(PayOutcome::AlreadyPaid) => render(shared, &session, View::Paid, StatusCode::OK),
        Ok(PayOutcome::NeedsAuthentication) => {
            render(shared, &session, View::Authenticate, StatusCode::OK)
        }
        Err(_) if session.status == SessionStatus::Expired => {
            render(shared, &session, View::Expired, StatusCode::GONE)
        }
        Err(error) => {
            let message = if error.code.as_deref() == Some("payment_intent_authentication_failure")
            {
                AUTHENTICATION_FAILED
            } else {
                error.message.as_str()
            };
            let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
            let view = View::Pay {
                error: Some(message),
                input,
            };
            render(shared, &session, view, status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_compiles() {
        assert!(pages().get_template("checkout.html").is_ok());
    }

    #[test]
    fn expiry_dates_read_like_card_forms() {
        assert_eq!(parse_expiry("12 / 34"), Some((12, 2034)));
        assert_eq!(parse_expiry("1/2030"), Some((1, 2030)));
        assert_eq!(parse_expiry("1234"), None);
        // 2024-02-29T12:00:00Z
        assert_eq!(year_month(1_709_208_000), (2024, 2));
    }

    #[test]
    fn card_form_errors_say_what_to_fix() {
        let card = |number: &str, expiry: &str, cvc: &str| CardInput {
            card_number: number.into(),
            card_expiry: expiry.into(),
            card_cvc: cvc.into(),
            cardholder_name: String::new(),
        };
        let now = 1_709_208_000;
        let cases = [
            (card("4242 4242 4242 4242", "12/34", "123"), None),
            (
                card("4242 4242 4242 4241", "12/34", "123"),
                Some("Your card number is invalid."),
            ),
            (
                card("4242", "12/34", "123"),
                Some("Your card number is incomplete."),
            ),
            (
                card("4242424242424242", "01/24", "123"),
                Some("Your card's expiration date is in the past."),
            ),
            (
                card("4242424242424242", "", "123"),
                Some("Your card's expiration date is incomplete."),
            ),
            (
                card("4242424242424242", "12/34", "12"),
                Some("Your card's security code is incomplete."),
            ),
        ];
        for (input, expected) in cases {
            let got = validate(&input, now).err().map(|e| e.message.clone());
            assert_eq!(got.as_deref(), expected, "{input:?}");
        }
    }
}
