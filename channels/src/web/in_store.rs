//! The account page's "In our stores" part (`docs/pos.md`, "Customers at the till"): the
//! shopper sets the phone number a clerk finds them by, and sees their loyalty number or gets
//! one. The hub checks, normalises and keeps both unique; this page says what to fix.

use super::format::{encode_component, sentence};
use super::page::{Level, PageError, Visitor};
use crate::backend::{BackendError, InStoreChange, InStoreDetails};
use crate::context::{ChannelState, RequestContext};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use protocol::{CustomerId, EventKind};
use serde::Deserialize;

/// The longest phone field read (a phone number has at most 15 digits; spaces and dashes).
const MAX_PHONE_CHARS: usize = 40;

/// The phone form.
#[derive(Debug, Default, Deserialize)]
pub struct PhoneForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    phone: String,
}

/// The "get a loyalty number" form: only a CSRF token.
#[derive(Debug, Default, Deserialize)]
pub struct LoyaltyForm {
    #[serde(default)]
    csrf: String,
}

/// A loyalty number as people read it: groups of four digits.
pub(super) fn grouped(number: &str) -> String {
    number
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// To the sign-in page, and back to the account page afterwards.
fn to_sign_in(visitor: Visitor) -> HttpResponse {
    let next = encode_component("/account");
    visitor.redirect(&format!("/signin?next={next}"))
}

/// Renders the account page with `details`, the phone as typed and any error about it.
async fn render(
    visitor: Visitor,
    customer: CustomerId,
    status: StatusCode,
    details: &InStoreDetails,
    phone: &str,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let me = visitor.state.backend.customer(customer).await?;
    let linked_apps = super::oauth::linked_apps(&visitor.state, customer).await?;
    let consents = super::consents::boxes(&visitor.state, customer).await?;
    let page = context! {
        consents,
        name => me.name,
        email => me.email,
        phone => phone,
        saved_phone => details.phone,
        loyalty_number => details.loyalty_number.as_deref().map(grouped),
        phone_error => error,
        linked_apps,
    };
    visitor.render(status, "account.html", page).await
}

/// `GET /account`: the account page.
pub async fn show(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    let Some(customer) = visitor.ctx.shopper.customer else {
        return Ok(to_sign_in(visitor));
    };
    let details = visitor.state.backend.in_store(customer).await?;
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    let phone = details.phone.clone().unwrap_or_default();
    render(visitor, customer, StatusCode::OK, &details, &phone, None).await
}

/// `POST /account/phone`: sets the phone number (an empty field removes it).
pub async fn set_phone(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<PhoneForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let Some(customer) = visitor.ctx.shopper.customer else {
        return Ok(to_sign_in(visitor));
    };
    let mut visitor = visitor;
    let typed = form.phone.trim().to_string();
    if typed.chars().count() > MAX_PHONE_CHARS {
        let message = format!("That is too long for a phone number: type at most {MAX_PHONE_CHARS} characters, like +49 30 1234567.");
        return refused(
            visitor,
            customer,
            StatusCode::UNPROCESSABLE_ENTITY,
            &typed,
            message,
        )
        .await;
    }
    let change = InStoreChange {
        phone: Some((!typed.is_empty()).then(|| typed.clone())),
        loyalty_number: None,
    };
    let backend = visitor.state.backend.clone();
    match backend.set_in_store(customer, change).await {
        Ok(saved) => {
            let text = match saved.phone {
                Some(p) => format!("Saved. Our clerks can find you by {p}."),
                None => "Your phone number is removed.".to_string(),
            };
            visitor.flash(Level::Success, text);
            Ok(visitor.redirect("/account"))
        }
        Err(BackendError::Unprocessable { message, .. }) => {
            let message = format!(
                "{} For example +49 30 1234567.",
                sentence(&format!("that phone number does not work: {message}"))
            );
            refused(
                visitor,
                customer,
                StatusCode::UNPROCESSABLE_ENTITY,
                &typed,
                message,
            )
            .await
        }
        Err(BackendError::Conflict { .. }) => {
            let message =
                "That phone number belongs to another account. Check it, or ask us in store."
                    .to_string();
            refused(visitor, customer, StatusCode::CONFLICT, &typed, message).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The account page again, with what was typed and what to fix.
async fn refused(
    visitor: Visitor,
    customer: CustomerId,
    status: StatusCode,
    typed: &str,
    message: String,
) -> Result<HttpResponse, PageError> {
    let details = visitor.state.backend.in_store(customer).await?;
    render(visitor, customer, status, &details, typed, Some(message)).await
}

/// `POST /account/loyalty-number`: issues the loyalty number (once: a second press shows the
/// same number).
pub async fn get_loyalty_number(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<LoyaltyForm>,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let Some(customer) = visitor.ctx.shopper.customer else {
        return Ok(to_sign_in(visitor));
    };
    let mut visitor = visitor;
    let backend = visitor.state.backend.clone();
    let details = backend.issue_loyalty_number(customer).await?;
    if let Some(n) = details.loyalty_number {
        visitor.flash(
            Level::Success,
            format!(
                "Your loyalty number is {}. Show it at the till.",
                grouped(&n)
            ),
        );
    }
    Ok(visitor.redirect("/account"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn loyalty_numbers_read_in_groups_of_four() {
        assert_eq!(super::grouped("712345678901"), "7123 4567 8901");
        assert_eq!(super::grouped("70000001"), "7000 0001");
        assert_eq!(super::grouped("700000012"), "7000 0001 2");
    }
}
