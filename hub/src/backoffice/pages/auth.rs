//! Signing in and out, the TOTP step, and the user's own page (enrolling a TOTP app).
//!
//! The sign-in forms have no session yet, so they carry a double-submit CSRF token: a random
//! value in a SameSite=Strict cookie and the same value in a hidden field.

use super::{
    safe_next, tokens_match, BackOfficeSession, CsrfOnly, Flash, PageFailure, Pages,
    LOGIN_CSRF_COOKIE,
};
use crate::backoffice::session::{SignIn, SESSION_COOKIE};
use crate::backoffice::{totp, Backoffice};
use actix_web::cookie::{time::Duration as CookieDuration, Cookie};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use serde::Deserialize;

/// The sign-in form's CSRF token: the cookie's, or a new one (with the cookie to set).
fn login_csrf(
    pages: &Pages,
    req: &HttpRequest,
) -> Result<(String, Option<Cookie<'static>>), PageFailure> {
    if let Some(c) = req.cookie(LOGIN_CSRF_COOKIE) {
        if c.value().len() >= 32 {
            return Ok((c.value().to_string(), None));
        }
    }
    let token = crate::auth::random_token(24).map_err(|_| PageFailure::unavailable())?;
    let cookie = pages.cookie(LOGIN_CSRF_COOKIE, token.clone(), CookieDuration::hours(2));
    Ok((token, Some(cookie)))
}

fn check_login_csrf(req: &HttpRequest, presented: &str) -> Result<(), PageFailure> {
    let expected = req
        .cookie(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    if !super::same_origin(req) || !tokens_match(&expected, presented) {
        tracing::warn!("back-office sign-in form refused: CSRF");
        return Err(PageFailure::csrf());
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn render_login(
    pages: &Pages,
    req: &HttpRequest,
    status: StatusCode,
    email: &str,
    next: &str,
    error: Option<String>,
) -> Result<HttpResponse, PageFailure> {
    let (csrf, cookie) = login_csrf(pages, req)?;
    pages.render_status(
        req,
        None,
        status,
        "login.html",
        context! { csrf => csrf, email => email, next => next, error => error },
        cookie.into_iter().collect(),
    )
}

/// `GET /backoffice/login`.
pub async fn login_form(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, PageFailure> {
    let next = safe_next(query.next.as_deref().unwrap_or("/backoffice"));
    if let Some(c) = req.cookie(SESSION_COOKIE) {
        if bo.session(c.value()).await?.is_some() {
            return Ok(pages.redirect(next, None));
        }
    }
    render_login(&pages, &req, StatusCode::OK, "", next, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    email: String,
    password: String,
    #[serde(default)]
    next: String,
}

fn too_many(pages: &Pages, req: &HttpRequest, seconds: u64) -> Result<HttpResponse, PageFailure> {
    let minutes = seconds.div_ceil(60);
    let mut res = pages.render_status(
        req,
        None,
        StatusCode::TOO_MANY_REQUESTS,
        "error.html",
        context! { error => context! {
            title => "Too many attempts",
            message => format!("Too many failed sign-ins. Try again in {minutes} minute{}.", if minutes == 1 { "" } else { "s" }),
        } },
        Vec::new(),
    )?;
    if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Ok(res)
}

/// `POST /backoffice/login`.
pub async fn login(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageFailure> {
    check_login_csrf(&req, &form.csrf)?;
    let next = safe_next(&form.next);
    let address = pages.client(&req);
    let outcome = bo.sign_in(&form.email, &form.password, &address).await?;
    match outcome {
        SignIn::Done { token, .. } => Ok(pages.redirect_with(
            next,
            None,
            vec![
                pages.session_cookie(token, bo.session_lifetime()),
                pages.removal(LOGIN_CSRF_COOKIE),
            ],
        )),
        SignIn::SecondFactor { token } => {
            let to = format!(
                "/backoffice/login/code?next={}",
                super::encode_component(next)
            );
            Ok(pages.redirect_with(
                &to,
                None,
                vec![pages.session_cookie(token, bo.session_lifetime())],
            ))
        }
        SignIn::Refused => render_login(
            &pages,
            &req,
            StatusCode::UNAUTHORIZED,
            form.email.trim(),
            next,
            Some("The email or password is not right.".into()),
        ),
        SignIn::Limited(wait) => too_many(&pages, &req, wait.seconds),
    }
}

fn pending_token(req: &HttpRequest, bo: &Backoffice) -> Result<Option<String>, PageFailure> {
    let Some(token) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    Ok(bo.awaits_second_factor(&token)?.then_some(token))
}

fn render_code(
    pages: &Pages,
    req: &HttpRequest,
    status: StatusCode,
    next: &str,
    error: Option<&str>,
) -> Result<HttpResponse, PageFailure> {
    let (csrf, cookie) = login_csrf(pages, req)?;
    pages.render_status(
        req,
        None,
        status,
        "code.html",
        context! { csrf => csrf, next => next, error => error },
        cookie.into_iter().collect(),
    )
}

/// `GET /backoffice/login/code`: the TOTP step.
pub async fn code_form(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, PageFailure> {
    let next = safe_next(query.next.as_deref().unwrap_or("/backoffice"));
    if pending_token(&req, &bo)?.is_none() {
        return Ok(pages.redirect(
            "/backoffice/login",
            Flash::info("Sign in with your email and password first."),
        ));
    }
    render_code(&pages, &req, StatusCode::OK, next, None)
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf: String,
    code: String,
    #[serde(default)]
    next: String,
}

/// `POST /backoffice/login/code`.
pub async fn code(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    form: web::Form<CodeForm>,
) -> Result<HttpResponse, PageFailure> {
    check_login_csrf(&req, &form.csrf)?;
    let next = safe_next(&form.next);
    let Some(token) = pending_token(&req, &bo)? else {
        return Ok(pages.redirect(
            "/backoffice/login",
            Flash::info("That sign-in expired: please start again."),
        ));
    };
    let address = pages.client(&req);
    match bo.second_factor(&token, &form.code, &address).await? {
        SignIn::Done { token, .. } => Ok(pages.redirect_with(
            next,
            None,
            vec![
                pages.session_cookie(token, bo.session_lifetime()),
                pages.removal(LOGIN_CSRF_COOKIE),
            ],
        )),
        SignIn::Limited(wait) => too_many(&pages, &req, wait.seconds),
        SignIn::Refused | SignIn::SecondFactor { .. } => render_code(
            &pages,
            &req,
            StatusCode::UNAUTHORIZED,
            next,
            Some("That code is not right. Type the 6 digits your app shows now."),
        ),
    }
}

/// `POST /backoffice/logout`.
pub async fn logout(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.check_form(&req, &form.csrf)?;
    bo.sign_out(&session.token).await?;
    Ok(pages.redirect_with(
        "/backoffice/login",
        Flash::success("You are signed out."),
        vec![pages.removal(SESSION_COOKIE)],
    ))
}

/// `GET /backoffice/me`: who I am, my roles, my TOTP.
pub async fn me(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    let pending = bo.pending_totp(session.user().id)?;
    let enrolment = pending.map(|(secret, uri)| {
        context! {
            secret => secret,
            uri => uri.clone(),
            qr => totp::qr_svg(&uri).map(minijinja::Value::from_safe_string),
        }
    });
    pages.render(
        &req,
        &session,
        "me.html",
        context! { totp => session.session.totp, enrolment => enrolment },
    )
}

/// `POST /backoffice/me/totp`: shows a new secret to enrol.
pub async fn start_totp(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.check_form(&req, &form.csrf)?;
    bo.start_totp(session.user().id).await?;
    Ok(pages.redirect(
        "/backoffice/me#totp",
        Flash::info("Scan the code with your authenticator app, then type the code it shows."),
    ))
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    csrf: String,
    code: String,
}

/// `POST /backoffice/me/totp/confirm`: turns TOTP on once a code matches.
pub async fn confirm_totp(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    form: web::Form<ConfirmForm>,
) -> Result<HttpResponse, PageFailure> {
    session.check_form(&req, &form.csrf)?;
    let confirmed = bo
        .confirm_totp(&session.actor(), session.user().id, &form.code)
        .await?;
    Ok(if confirmed {
        pages.redirect(
            "/backoffice/me",
            Flash::success("Two-step sign-in is on: sign-in will ask for a code from your app."),
        )
    } else {
        pages.redirect(
            "/backoffice/me#totp",
            Flash::error("That code did not match. Type the 6 digits your app shows now."),
        )
    })
}
