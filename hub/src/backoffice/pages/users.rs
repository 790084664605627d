//! Business users (admins): the list, creating a user with roles and a first password,
//! changing roles, disabling, setting a new password, and resetting two-step sign-in for a
//! lost phone. Each change goes through the same calls as `/api/v1/admin/users` and is audited.

use super::{BackOfficeSession, Flash, PageFailure, Pages};
use crate::backoffice::access::{policy, Policy};
use crate::backoffice::users::{NewUser, UserId, UserPatch};
use crate::backoffice::{Backoffice, BackofficeError, Role};
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::page("/backoffice/users")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        super::page("/backoffice/users/{id}")
            .route(web::get().to(show))
            .route(web::post().to(update)),
    )
    .service(super::page("/backoffice/users/{id}/totp-reset").route(web::post().to(reset_totp)));
}

fn roles() -> Vec<&'static str> {
    Role::ALL.iter().map(|r| r.as_str()).collect()
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Admin::ROLES)?;
    let users = bo.users()?;
    pages.render(
        &req,
        &session,
        "users.html",
        context! { users => users, roles => roles() },
    )
}

/// Form fields: every checked role arrives as its own `role` field, so the form is read as
/// pairs rather than into a struct.
fn fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn checked_roles(fields: &[(String, String)]) -> Vec<String> {
    fields
        .iter()
        .filter(|(k, _)| k == "role")
        .map(|(_, v)| v.clone())
        .collect()
}

fn message(e: BackofficeError) -> Result<String, PageFailure> {
    match e {
        BackofficeError::Invalid(fields) => Ok(fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ")),
        BackofficeError::Conflict { message, .. } => Ok(message),
        other => Err(other.into()),
    }
}

async fn create(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    body: web::Bytes,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Admin::ROLES)?;
    let form = fields(&body);
    session.check_form(&req, field(&form, "csrf"))?;
    let password = field(&form, "password");
    let new = NewUser {
        email: field(&form, "email").to_string(),
        name: field(&form, "name").to_string(),
        roles: checked_roles(&form),
        password: (!password.is_empty()).then(|| password.to_string()),
    };
    match bo.create_user(&session.actor(), new).await {
        Ok(user) => Ok(pages.redirect(
            &format!("/backoffice/users/{}", user.id),
            Flash::success(format!("{} can now sign in.", user.email)),
        )),
        Err(e) => Ok(pages.redirect("/backoffice/users#new-user", Flash::error(message(e)?))),
    }
}

fn user_id(raw: &str) -> Result<UserId, PageFailure> {
    raw.parse().map_err(|_| PageFailure::not_found("user"))
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Admin::ROLES)?;
    let id = user_id(&id)?;
    let user = bo.user(id)?;
    let tokens = bo.tokens(id)?;
    pages.render(
        &req,
        &session,
        "user.html",
        context! {
            user => user,
            tokens => tokens,
            roles => roles(),
            me => session.user().id == id,
        },
    )
}

async fn update(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Admin::ROLES)?;
    let form = fields(&body);
    session.check_form(&req, field(&form, "csrf"))?;
    let id = user_id(&id)?;
    let back = format!("/backoffice/users/{id}");
    let password = field(&form, "password");
    let patch = match field(&form, "action") {
        "roles" => UserPatch {
            name: Some(field(&form, "name").to_string()),
            roles: Some(checked_roles(&form)),
            ..UserPatch::default()
        },
        "disable" | "enable" if session.user().id == id => {
            return Ok(pages.redirect(
                &back,
                Flash::error("You cannot disable yourself: ask another admin."),
            ))
        }
        "disable" => UserPatch {
            disabled: Some(true),
            ..UserPatch::default()
        },
        "enable" => UserPatch {
            disabled: Some(false),
            ..UserPatch::default()
        },
        "password" if !password.is_empty() => UserPatch {
            password: Some(password.to_string()),
            ..UserPatch::default()
        },
        _ => return Ok(pages.redirect(&back, Flash::error("Nothing to change."))),
    };
    match bo.update_user(&session.actor(), id, patch).await {
        Ok(user) => {
            Ok(pages.redirect(&back, Flash::success(format!("{} is updated.", user.email))))
        }
        Err(e) => Ok(pages.redirect(&back, Flash::error(message(e)?))),
    }
}

async fn reset_totp(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    id: web::Path<String>,
    form: web::Form<super::CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Admin::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let id = user_id(&id)?;
    bo.reset_totp(&session.actor(), id).await?;
    Ok(pages.redirect(
        &format!("/backoffice/users/{id}"),
        Flash::success("Two-step sign-in is reset: the user signs in with the password and can enrol a new phone."),
    ))
}
