//! Customers: register, sign in (rate-limited per account and per client address), sign out,
//! `me`, and the customer's own event timeline.

use crate::backend::{Registration, SignedIn};
use crate::context::{ChannelState, RequestContext, BASKET_COOKIE, SESSION_COOKIE};
use crate::error::ApiError;
use actix_web::{web, HttpResponse, HttpResponseBuilder};
use serde::{Deserialize, Serialize};

/// Body of `POST /customers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub email: String,
    pub name: String,
    pub password: String,
    /// The consents the shopper gave at registration (`api::consents`); none: nothing granted.
    #[serde(default)]
    pub consents: Vec<super::consents::ChoiceBody>,
}

/// Body of `POST /sessions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    pub email: String,
    pub password: String,
}

#[derive(Serialize)]
struct SessionBody<'a> {
    session_token: &'a str,
    customer: &'a crate::backend::CustomerView,
    basket: &'a crate::backend::BasketView,
}

/// Answers a sign-in: the token in the body (apps) and as an HttpOnly cookie (browsers); the
/// anonymous basket cookie goes, since its basket was merged.
fn signed_in(state: &ChannelState, mut res: HttpResponseBuilder, s: &SignedIn) -> HttpResponse {
    res.cookie(state.cookie(
        SESSION_COOKIE,
        s.session_token.clone(),
        state.settings.session_days,
    ));
    res.cookie(state.removal(BASKET_COOKIE));
    res.insert_header(("cache-control", "no-store"));
    res.json(SessionBody {
        session_token: &s.session_token,
        customer: &s.customer,
        basket: &s.basket,
    })
}

pub async fn register(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    body: web::Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let consents = super::consents::parse_choices(&body.consents)?;
    state
        .limiter
        .check(&body.email, ctx.client)
        .map_err(ApiError::too_many)?;
    let s = state
        .backend
        .register(
            Registration {
                email: body.email,
                name: body.name,
                password: body.password,
                consents,
            },
            &ctx.shopper,
            ctx.channel,
        )
        .await?;
    Ok(signed_in(&state, HttpResponse::Created(), &s))
}

pub async fn sign_in(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    body: web::Json<SignInBody>,
) -> Result<HttpResponse, ApiError> {
    state
        .limiter
        .check(&body.email, ctx.client)
        .map_err(ApiError::too_many)?;
    let s = state
        .backend
        .sign_in(&body.email, &body.password, &ctx.shopper, ctx.channel)
        .await?;
    Ok(signed_in(&state, HttpResponse::Ok(), &s))
}

pub async fn sign_out(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let token = ctx
        .session_token
        .as_deref()
        .ok_or_else(ApiError::unauthorized)?;
    state
        .backend
        .sign_out(token, &ctx.shopper, ctx.channel)
        .await;
    Ok(HttpResponse::NoContent()
        .cookie(state.removal(SESSION_COOKIE))
        .finish())
}

pub async fn me(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    Ok(HttpResponse::Ok().json(state.backend.customer(id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    /// At most this many events, newest first (1 to 500, default 100).
    pub limit: Option<usize>,
}

pub async fn events(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    params: web::Query<EventsParams>,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            "limit must be between 1 and 500",
        ));
    }
    #[derive(Serialize)]
    struct Body {
        items: Vec<protocol::Event>,
    }
    Ok(HttpResponse::Ok().json(Body {
        items: state.backend.timeline(id, limit).await?,
    }))
}

/// Body of `PUT /customers/me/in-store`: a field left out stays as it is; `null` or `""`
/// removes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InStoreBody {
    #[serde(default, deserialize_with = "present")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub loyalty_number: Option<Option<String>>,
}

/// A field that is present (`Some`), with `null` or an empty string as `Some(None)`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    let value: Option<String> = Option::deserialize(d)?;
    Ok(Some(value.filter(|v| !v.trim().is_empty())))
}

/// `GET /customers/me/in-store`: the phone number and loyalty number a clerk finds you by.
pub async fn in_store(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    Ok(HttpResponse::Ok().json(state.backend.in_store(id).await?))
}

/// `PUT /customers/me/in-store {"phone", "loyalty_number"}`.
pub async fn set_in_store(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    body: web::Json<InStoreBody>,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    let body = body.into_inner();
    let change = crate::backend::InStoreChange {
        phone: body.phone,
        loyalty_number: body.loyalty_number,
    };
    Ok(HttpResponse::Ok().json(state.backend.set_in_store(id, change).await?))
}

/// `POST /customers/me/in-store/loyalty-number`: the customer's loyalty number, issued now if
/// they have none (a second call answers the same number).
pub async fn issue_loyalty_number(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    Ok(HttpResponse::Ok().json(state.backend.issue_loyalty_number(id).await?))
}
