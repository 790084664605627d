//! Account linking's pages (`crate::oauth`): `/oauth/authorize`, where the shopper signs in
//! (the storefront's sign-in, with its rate limits) and then allows or denies an app, and the
//! account page's "Linked apps" section with its Unlink buttons.
//!
//! An unknown client or a redirect URI not registered for it gets an error page, never a
//! redirect. Every form carries the CSRF token; the consent form's answer is a 302 to the
//! client's redirect URI.

use super::format::{format_date, safe_next};
use super::page::{Level, PageError, Visitor};
use crate::backend::BackendError;
use crate::context::{ChannelState, RequestContext, BASKET_COOKIE, SESSION_COOKIE};
use crate::oauth::{AccountLinking, AuthorizeRefusal, AuthorizeRequest};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use protocol::{CustomerId, EventKind};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The authorize page's forms: the sign-in fields or the decision, the CSRF token, and the
/// authorization request carried in hidden fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthorizeForm {
    csrf: String,
    email: String,
    password: String,
    /// `allow` or `deny` (the consent form); absent: the sign-in form.
    decision: Option<String>,
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

impl AuthorizeForm {
    fn request(&self) -> AuthorizeRequest {
        AuthorizeRequest {
            response_type: self.response_type.clone(),
            client_id: self.client_id.clone(),
            redirect_uri: self.redirect_uri.clone(),
            scope: self.scope.clone(),
            state: self.state.clone(),
            code_challenge: self.code_challenge.clone(),
            code_challenge_method: self.code_challenge_method.clone(),
        }
    }
}

/// A hidden field of the authorize page's forms.
#[derive(Debug, Serialize)]
struct Hidden<'a> {
    name: &'static str,
    value: &'a str,
}

/// The Unlink button's form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UnlinkForm {
    csrf: String,
    client_id: String,
}

/// An app in the account page's "Linked apps" section.
#[derive(Debug, Serialize)]
pub struct LinkedAppView {
    client_id: String,
    name: String,
    linked: String,
}

fn linking(visitor: &Visitor) -> Result<Arc<dyn AccountLinking>, PageError> {
    visitor
        .state
        .linking
        .clone()
        .ok_or_else(PageError::not_found)
}

/// The authorize page's own address with the request (where signing in comes back to).
fn authorize_url(request: &AuthorizeRequest) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(request.query_pairs())
        .finish();
    format!("/oauth/authorize?{query}")
}

/// A redirect to the client (RFC 6749 §4.1.2 uses 302 Found).
fn to_client(location: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// What a refusal looks like: an error page, or the browser sent back to the client.
async fn refused(visitor: Visitor, refusal: AuthorizeRefusal) -> Result<HttpResponse, PageError> {
    match refusal {
        AuthorizeRefusal::Redirect(location) => Ok(to_client(&location)),
        AuthorizeRefusal::Page(message) => {
            let error = PageError::new(
                StatusCode::BAD_REQUEST,
                "This app cannot be linked",
                message,
            );
            visitor.render_error(error).await
        }
        AuthorizeRefusal::Unavailable(detail) => {
            tracing::error!(%detail, "account linking unavailable");
            Err(PageError::unavailable())
        }
    }
}

/// Renders the authorize page: the sign-in form, or (signed in) the consent form.
async fn render(
    mut visitor: Visitor,
    status: StatusCode,
    request: &AuthorizeRequest,
    email: &str,
    errors: Vec<String>,
) -> Result<HttpResponse, PageError> {
    let consent = match linking(&visitor)?.consent(request) {
        Ok(consent) => consent,
        Err(refusal) => return refused(visitor, refusal).await,
    };
    let signed_in_as = match visitor.ctx.shopper.customer {
        Some(id) => Some(visitor.state.backend.customer(id).await?.email),
        None => None,
    };
    if signed_in_as.is_some() {
        // The consent form is answered with a redirect to the client's site, which the
        // browser checks against the page's `form-action`.
        visitor.allow_payment_redirect();
    }
    let pairs = request.query_pairs();
    let hidden: Vec<Hidden> = pairs
        .iter()
        .map(|&(name, value)| Hidden { name, value })
        .collect();
    let back = authorize_url(request);
    let page = context! {
        client_name => consent.client_name,
        permissions => consent.permissions,
        signed_in_as,
        hidden,
        email,
        errors,
        register_next => safe_next(&back),
    };
    visitor.render(status, "oauth_authorize.html", page).await
}

/// `GET /oauth/authorize`: the sign-in form, or the consent form once signed in.
pub async fn authorize(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    query: web::Query<AuthorizeRequest>,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    render(visitor, StatusCode::OK, &query, "", Vec::new()).await
}

/// `POST /oauth/authorize`: signs in (then back to the consent form), or records the
/// shopper's decision and sends the browser back to the client.
pub async fn decide(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<AuthorizeForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let request = form.request();
    let linking = linking(&visitor)?;
    if let Err(refusal) = linking.consent(&request) {
        return refused(visitor, refusal).await;
    }
    let Some(decision) = form.decision.as_deref() else {
        return sign_in(visitor, &form, &request).await;
    };
    let Some(customer) = visitor.ctx.shopper.customer else {
        // Signed out in another tab: sign in again.
        return render(
            visitor,
            StatusCode::UNAUTHORIZED,
            &request,
            "",
            vec!["Please sign in again.".into()],
        )
        .await;
    };
    let allow = match decision {
        "allow" => true,
        "deny" => false,
        _ => {
            return Err(PageError::bad_request(
                "Choose Allow or Deny on the linking page.",
            ))
        }
    };
    match linking.decide(customer, &request, allow).await {
        Ok(location) => {
            let answer = if allow { "allowed" } else { "denied" };
            let client = request.client_id.as_deref().unwrap_or("");
            visitor.record(
                EventKind::PageView,
                &[("path", req.path()), ("link", answer), ("client", client)],
            );
            Ok(to_client(&location))
        }
        Err(refusal) => refused(visitor, refusal).await,
    }
}

/// The sign-in form of the authorize page: the storefront's rate limits and sign-in, then back
/// to the consent form (Post/Redirect/Get).
async fn sign_in(
    mut visitor: Visitor,
    form: &AuthorizeForm,
    request: &AuthorizeRequest,
) -> Result<HttpResponse, PageError> {
    let email = form.email.trim().to_string();
    if let Err(seconds) = visitor.state.limiter.check(&email, visitor.ctx.client) {
        let seconds = seconds.max(1);
        let errors = vec![format!(
            "Too many sign-in attempts. Please try again in {seconds} s."
        )];
        let mut res = render(
            visitor,
            StatusCode::TOO_MANY_REQUESTS,
            request,
            &email,
            errors,
        )
        .await?;
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return Ok(res);
    }
    let backend = visitor.state.backend.clone();
    let outcome = backend
        .sign_in(
            &email,
            &form.password,
            &visitor.ctx.shopper,
            visitor.ctx.channel,
        )
        .await;
    match outcome {
        Ok(signed_in) => {
            let days = visitor.state.settings.session_days;
            let session = visitor
                .state
                .cookie(SESSION_COOKIE, signed_in.session_token, days);
            visitor.set_cookie(session);
            visitor.set_cookie(visitor.state.removal(BASKET_COOKIE));
            visitor.rotate_csrf()?;
            Ok(visitor.redirect(&authorize_url(request)))
        }
        Err(BackendError::BadCredentials) => {
            let errors = vec![
                "That email and password do not match an account. Please check them and try again."
                    .to_string(),
            ];
            render(visitor, StatusCode::UNAUTHORIZED, request, &email, errors).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The account page's "Linked apps": `None` when this backend links no apps (the section is
/// left out).
pub(super) async fn linked_apps(
    state: &ChannelState,
    customer: CustomerId,
) -> Result<Option<Vec<LinkedAppView>>, PageError> {
    let Some(linking) = &state.linking else {
        return Ok(None);
    };
    let mut apps = linking.linked_apps(customer).await?;
    apps.sort_by_key(|a| a.linked_at);
    let mut views: Vec<LinkedAppView> = Vec::new();
    for app in apps {
        // One row per app, however many times it was linked.
        if views.iter().any(|v| v.client_id == app.client_id) {
            continue;
        }
        views.push(LinkedAppView {
            linked: format_date(app.linked_at),
            client_id: app.client_id,
            name: app.name,
        });
    }
    Ok(Some(views))
}

/// `POST /account/linked-apps/unlink`: revokes every token the app holds for this customer.
pub async fn unlink(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<UnlinkForm>,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let Some(customer) = visitor.ctx.shopper.customer else {
        return Ok(visitor.redirect("/signin?next=%2Faccount"));
    };
    let linking = linking(&visitor)?;
    let name = linking
        .linked_apps(customer)
        .await?
        .into_iter()
        .find(|a| a.client_id == form.client_id)
        .map(|a| a.name);
    let revoked = linking.unlink(customer, &form.client_id).await?;
    match (revoked, name) {
        (1.., Some(name)) => visitor.flash(
            Level::Success,
            format!("{name} is unlinked: it can no longer use your account."),
        ),
        _ => visitor.flash(Level::Info, "That app was not linked to your account."),
    }
    Ok(visitor.redirect("/account"))
}
