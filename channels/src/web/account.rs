//! Signing in, registering and signing out. The hub merges an anonymous basket into the
//! customer's on sign-in, so the basket cookie goes and the session cookie comes.

use super::format::{safe_next, sentence};
use super::page::{Level, PageError, Visitor};
use crate::backend::{BackendError, Registration, SignedIn};
use crate::context::{ChannelState, RequestContext, BASKET_COOKIE, SESSION_COOKIE};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::{context, Value};
use protocol::EventKind;
use serde::Deserialize;

/// The shortest password accepted at registration.
const MIN_PASSWORD_CHARS: usize = 10;
const MAX_PASSWORD_CHARS: usize = 1024;
const MAX_NAME_CHARS: usize = 100;
const MAX_EMAIL_CHARS: usize = 254;

/// Where to go after signing in: a local `next`, else the basket.
fn destination(next: &str) -> String {
    safe_next(next).unwrap_or("/basket").to_string()
}

/// `?next=` of the sign-in and register pages.
#[derive(Debug, Default, Deserialize)]
pub struct NextParam {
    #[serde(default)]
    next: String,
}

/// The sign-in form.
#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// The registration form.
#[derive(Debug, Default, Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    next: String,
    /// The unticked-by-default consent boxes: present ("on") when ticked.
    #[serde(default)]
    marketing_email: Option<String>,
    #[serde(default)]
    board_personalization: Option<String>,
}

/// A signed-in visitor is sent on instead of shown the form again.
fn already_signed_in(visitor: &Visitor) -> bool {
    visitor.ctx.shopper.customer.is_some()
}

/// `GET /signin?next=`.
pub async fn sign_in_form(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    params: web::Query<NextParam>,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    if already_signed_in(&visitor) {
        return Ok(visitor.redirect(&destination(&params.next)));
    }
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    let page = context! { next => safe_next(&params.next).unwrap_or(""), email => "", errors => Vec::<String>::new() };
    visitor.render(StatusCode::OK, "signin.html", page).await
}

/// `POST /signin`: rate-limited per account and per address.
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<SignInForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let email = form.email.trim().to_string();
    let again = |errors: Vec<String>| context! { next => safe_next(&form.next).unwrap_or(""), email => &email, errors };
    if let Err(seconds) = visitor.state.limiter.check(&email, visitor.ctx.client) {
        let seconds = seconds.max(1);
        let page = again(vec![format!(
            "Too many sign-in attempts. Please try again in {seconds} s."
        )]);
        let mut res = visitor
            .render(StatusCode::TOO_MANY_REQUESTS, "signin.html", page)
            .await?;
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return Ok(res);
    }
    let backend = visitor.state.backend.clone();
    match backend
        .sign_in(
            &email,
            &form.password,
            &visitor.ctx.shopper,
            visitor.ctx.channel,
        )
        .await
    {
        Ok(signed_in) => signed_in_redirect(visitor, signed_in, &form.next, "Welcome back"),
        Err(e) => {
            let (status, message) = failure(&e);
            visitor
                .render(status, "signin.html", again(vec![message]))
                .await
        }
    }
}

/// How a failed sign-in or registration reads, and its status.
fn failure(e: &BackendError) -> (StatusCode, String) {
    match e {
        BackendError::BadCredentials => (
            StatusCode::UNAUTHORIZED,
            "That email and password do not match an account. Please check them and try again."
                .to_string(),
        ),
        BackendError::EmailTaken => (
            StatusCode::CONFLICT,
            "An account with this email already exists. Sign in instead, or use another email."
                .to_string(),
        ),
        BackendError::Unprocessable { message, .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, sentence(message))
        }
        BackendError::Unavailable(detail) => {
            tracing::error!(%detail, "account request failed: backend unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "We could not do that just now. Please try again in a moment.".to_string(),
            )
        }
        other => (
            StatusCode::UNPROCESSABLE_ENTITY,
            sentence(&other.to_string()),
        ),
    }
}

/// Sets the session cookie, drops the (merged) anonymous basket's cookie, rotates the CSRF
/// token and sends the customer on.
fn signed_in_redirect(
    mut visitor: Visitor,
    signed_in: SignedIn,
    next: &str,
    greeting: &str,
) -> Result<HttpResponse, PageError> {
    let days = visitor.state.settings.session_days;
    visitor.set_cookie(
        visitor
            .state
            .cookie(SESSION_COOKIE, signed_in.session_token, days),
    );
    visitor.set_cookie(visitor.state.removal(BASKET_COOKIE));
    visitor.rotate_csrf()?;
    visitor.flash(
        Level::Success,
        format!("{greeting}, {}!", signed_in.customer.name),
    );
    Ok(visitor.redirect(&destination(next)))
}

/// `GET /register?next=`.
pub async fn register_form(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    params: web::Query<NextParam>,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    if already_signed_in(&visitor) {
        return Ok(visitor.redirect(&destination(&params.next)));
    }
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    let page = context! { next => safe_next(&params.next).unwrap_or(""), name => "", email => "", errors => Vec::<String>::new() };
    visitor.render(StatusCode::OK, "register.html", page).await
}

/// What is wrong with a registration form, before asking the hub.
fn registration_errors(form: &RegisterForm) -> Vec<String> {
    let mut errors = Vec::new();
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        errors.push(format!(
            "Please enter your name (up to {MAX_NAME_CHARS} characters)."
        ));
    }
    let email = form.email.trim();
    let plausible = email.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty() && !domain.is_empty() && !domain.starts_with('.') && !domain.ends_with('.')
    });
    if !plausible || email.len() > MAX_EMAIL_CHARS || email.chars().any(char::is_whitespace) {
        errors.push("Please enter a valid email address, like name@example.com.".to_string());
    }
    let chars = form.password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        errors.push(format!(
            "Please choose a password of at least {MIN_PASSWORD_CHARS} characters."
        ));
    } else if chars > MAX_PASSWORD_CHARS {
        errors.push(format!(
            "Please choose a password of at most {MAX_PASSWORD_CHARS} characters."
        ));
    } else if form.password != form.confirm {
        errors.push("The two passwords do not match.".to_string());
    }
    errors
}

/// `POST /register`.
pub async fn register(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<RegisterForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let again = |errors: Vec<String>| -> Value {
        context! { next => safe_next(&form.next).unwrap_or(""), name => form.name.trim(), email => form.email.trim(), marketing_email => form.marketing_email.is_some(), board_personalization => form.board_personalization.is_some(), errors }
    };
    let errors = registration_errors(&form);
    if !errors.is_empty() {
        return visitor
            .render(
                StatusCode::UNPROCESSABLE_ENTITY,
                "register.html",
                again(errors),
            )
            .await;
    }
    let registration = Registration {
        email: form.email.trim().to_string(),
        name: form.name.trim().to_string(),
        password: form.password.clone(),
        consents: super::consents::form_choices(
            form.marketing_email.is_some(),
            form.board_personalization.is_some(),
        ),
    };
    let backend = visitor.state.backend.clone();
    match backend
        .register(registration, &visitor.ctx.shopper, visitor.ctx.channel)
        .await
    {
        Ok(signed_in) => {
            signed_in_redirect(visitor, signed_in, &form.next, "Welcome to Omnihub Market")
        }
        Err(e) => {
            let (status, message) = failure(&e);
            visitor
                .render(status, "register.html", again(vec![message]))
                .await
        }
    }
}

/// The sign-out form: only a CSRF token.
#[derive(Debug, Default, Deserialize)]
pub struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /signout`: ends the session and forgets the session and basket cookies.
pub async fn sign_out(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<SignOutForm>,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    if let Some(token) = visitor.ctx.session_token.clone() {
        visitor
            .state
            .backend
            .sign_out(&token, &visitor.ctx.shopper, visitor.ctx.channel)
            .await;
    }
    visitor.set_cookie(visitor.state.removal(SESSION_COOKIE));
    visitor.set_cookie(visitor.state.removal(BASKET_COOKIE));
    visitor.rotate_csrf()?;
    visitor.flash(Level::Info, "You have signed out. See you soon!");
    Ok(visitor.redirect("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(name: &str, email: &str, password: &str, confirm: &str) -> RegisterForm {
        RegisterForm {
            name: name.into(),
            email: email.into(),
            password: password.into(),
            confirm: confirm.into(),
            ..RegisterForm::default()
        }
    }

    #[test]
    fn registration_is_checked_before_the_hub_sees_it() {
        assert!(registration_errors(&form(
            "Ada",
            "ada@example.com",
            "correct horse",
            "correct horse"
        ))
        .is_empty());
        let cases = [
            form("", "ada@example.com", "correct horse", "correct horse"),
            form("Ada", "ada.example.com", "correct horse", "correct horse"),
            form("Ada", "ada@", "correct horse", "correct horse"),
            form("Ada", "ada @example.com", "correct horse", "correct horse"),
            form("Ada", "ada@example.com", "short", "short"),
            form("Ada", "ada@example.com", "correct horse", "correct house"),
        ];
        for case in cases {
            assert_eq!(registration_errors(&case).len(), 1, "{case:?}");
        }
    }

    #[test]
    fn sign_in_goes_back_only_to_local_pages() {
        assert_eq!(destination("/p/coffee"), "/p/coffee");
        assert_eq!(destination("//evil.example/"), "/basket");
        assert_eq!(destination(""), "/basket");
    }
}
