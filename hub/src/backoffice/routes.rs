//! The back-office API. Users and tokens under `/api/v1/admin/users` (the admin token or a user
//! with role admin); promotions, coupons, the live set and the audit list under
//! `/api/v1/backoffice` (back-office user tokens). Mount with [`configure`] before the other
//! `/api/v1` scopes.

use super::access::unavailable;
use super::audit::Actor;
use super::coupons::{NewBatch, NewCoupon};
use super::promotions::{NewPromotion, PromotionPatch, Status};
use super::users::{BackOfficeUser, NewUser, Role, UserId, UserPatch};
use super::{Backoffice, BackofficeError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::error::ApiError;
use serde::Deserialize;
use serde_json::json;
use ulid::Ulid;

impl From<BackofficeError> for ApiError {
    fn from(e: BackofficeError) -> ApiError {
        match e {
            BackofficeError::Invalid(fields) => {
                let message = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError::unprocessable("invalid_fields", message)
                    .with_details(json!({ "fields": fields }))
            }
            BackofficeError::NotFound(what) => ApiError::not_found(&what),
            BackofficeError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            BackofficeError::Forbidden { code, message } => {
                ApiError::new(StatusCode::FORBIDDEN, code, message)
            }
            BackofficeError::Storage(e) => {
                tracing::error!(error = %e, "back-office storage failed");
                unavailable()
            }
        }
    }
}

/// A storage failure as a 503 (nothing internal in the body).
fn stored<T>(result: Result<T, crate::storage::StorageError>) -> Result<T, ApiError> {
    result.map_err(|e| BackofficeError::Storage(e).into())
}

impl actix_web::FromRequest for BackOfficeUser {
    type Error = ApiError;
    type Future = LocalFuture<Result<BackOfficeUser, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { super::access::user(&req).await })
    }
}

/// Who may manage users and read the audit list: a request with the admin token, or a
/// back-office user with role admin (API token or session).
pub struct AdminCaller(pub Actor);

impl actix_web::FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = LocalFuture<Result<AdminCaller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { super::access::admin(&req).await.map(AdminCaller) })
    }
}

type LocalFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

impl From<BackOfficeUser> for Actor {
    fn from(user: BackOfficeUser) -> Actor {
        Actor::User(user)
    }
}

/// Mounts the back-office routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let json = channels::error::json_config();
    let query = channels::error::query_config();
    let path = channels::error::path_config();
    cfg.service(
        web::scope("/api/v1/admin/users")
            .app_data(json.clone())
            .app_data(query.clone())
            .app_data(path.clone())
            .route("", web::post().to(create_user))
            .route("", web::get().to(list_users))
            .route("/{id}", web::get().to(show_user))
            .route("/{id}", web::patch().to(update_user))
            .route("/{id}/tokens", web::post().to(issue_token))
            .route("/{id}/tokens", web::get().to(list_tokens))
            .route("/{id}/tokens/{token}", web::delete().to(revoke_token))
            .default_service(web::to(channels::error::api_not_found)),
    )
    .service(
        web::scope("/api/v1/backoffice")
            .app_data(json)
            .app_data(query)
            .app_data(path)
            .route("/me", web::get().to(me))
            .route("/audit", web::get().to(audit))
            .route("/live", web::get().to(live))
            .route("/promotions", web::post().to(create_promotion))
            .route("/promotions", web::get().to(list_promotions))
            .route("/promotions/{id}", web::get().to(show_promotion))
            .route("/promotions/{id}", web::patch().to(edit_promotion))
            .route("/promotions/{id}/approve", web::post().to(approve))
            .route("/promotions/{id}/end", web::post().to(end))
            .route("/promotions/{id}/coupons", web::post().to(create_coupon))
            .route("/promotions/{id}/coupons", web::get().to(list_coupons))
            .route(
                "/promotions/{id}/coupon-batches",
                web::post().to(create_batch),
            )
            .route(
                "/promotions/{id}/coupon-batches",
                web::get().to(list_batches),
            )
            .route(
                "/promotions/{id}/coupon-batches/{batch}.csv",
                web::get().to(export_batch),
            )
            .default_service(web::to(channels::error::api_not_found)),
    );
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(&format!("user {raw}")))
}

async fn create_user(
    AdminCaller(actor): AdminCaller,
    bo: web::Data<Backoffice>,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let user = bo.create_user(&actor, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(user))
}

async fn list_users(_: AdminCaller, bo: web::Data<Backoffice>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "users": stored(bo.users())? })))
}

async fn show_user(
    _: AdminCaller,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(bo.user(user_id(&id)?)?))
}

async fn update_user(
    AdminCaller(actor): AdminCaller,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
    body: web::Json<UserPatch>,
) -> Result<HttpResponse, ApiError> {
    let user = bo
        .update_user(&actor, user_id(&id)?, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(user))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: Option<String>,
}

async fn issue_token(
    AdminCaller(actor): AdminCaller,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The body is optional: none, or `{"name": "..."}`.
    let body: NewToken = if body.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "bad_body",
                format!("send {{\"name\": \"...\"}} or nothing: {e}"),
            )
        })?
    };
    let issued = bo.issue_token(&actor, user_id(&id)?, body.name).await?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(issued))
}

async fn list_tokens(
    _: AdminCaller,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "tokens": bo.tokens(user_id(&id)?)? })))
}

async fn revoke_token(
    AdminCaller(actor): AdminCaller,
    bo: web::Data<Backoffice>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (user, token) = path.into_inner();
    let token =
        Ulid::from_string(&token).map_err(|_| ApiError::not_found(&format!("token {token}")))?;
    let view = bo.revoke_token(&actor, user_id(&user)?, token).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn me(user: BackOfficeUser) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "id": user.id, "email": user.email, "roles": user.roles }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn audit(
    _: AdminCaller,
    bo: web::Data<Backoffice>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let entries = stored(bo.audit(query.after, limit))?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({ "entries": entries, "next": next })))
}

async fn live(_: BackOfficeUser, bo: web::Data<Backoffice>) -> HttpResponse {
    bo.refresh_if_due();
    let live = bo.published().load_full();
    HttpResponse::Ok().json(json!({
        "version": live.version,
        "promotions": *live.promotions,
    }))
}

const AUTHORS: &[Role] = &[Role::Merchandiser, Role::Marketer];

async fn create_promotion(
    user: BackOfficeUser,
    bo: web::Data<Backoffice>,
    body: web::Json<NewPromotion>,
) -> Result<HttpResponse, ApiError> {
    user.require_any(AUTHORS)?;
    let view = bo.create_promotion(&user.into(), body.into_inner()).await?;
    Ok(HttpResponse::Created().json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
}

async fn list_promotions(
    _: BackOfficeUser,
    bo: web::Data<Backoffice>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "bad_status",
                "status is one of draft, scheduled, active, ended",
            )
        })?),
    };
    Ok(HttpResponse::Ok().json(json!({ "promotions": stored(bo.promotions(status))? })))
}

async fn show_promotion(
    _: BackOfficeUser,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(bo.promotion(&id)?))
}

async fn edit_promotion(
    user: BackOfficeUser,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
    body: web::Json<PromotionPatch>,
) -> Result<HttpResponse, ApiError> {
    user.require_any(AUTHORS)?;
    let view = bo
        .edit_promotion(&user.into(), &id, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn approve(
    user: BackOfficeUser,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Approver)?;
    Ok(HttpResponse::Ok().json(bo.approve_promotion(&user.into(), &id).await?))
}

async fn end(
    user: BackOfficeUser,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require_any(&[Role::Approver, Role::Merchandiser, Role::Marketer])?;
    Ok(HttpResponse::Ok().json(bo.end_promotion(&user.into(), &id).await?))
}

async fn create_coupon(
    user: BackOfficeUser,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
    body: web::Json<NewCoupon>,
) -> Result<HttpResponse, ApiError> {
    user.require_any(AUTHORS)?;
    let coupon = bo
        .create_coupon(&user.into(), &id, body.into_inner())
        .await?;
    Ok(HttpResponse::Created().json(coupon))
}

async fn list_coupons(
    _: BackOfficeUser,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    bo.promotion(&id)?;
    Ok(HttpResponse::Ok().json(json!({ "coupons": stored(bo.coupons(&id))? })))
}

async fn create_batch(
    user: BackOfficeUser,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
    body: web::Json<NewBatch>,
) -> Result<HttpResponse, ApiError> {
    user.require_any(AUTHORS)?;
    let batch = bo
        .create_batch(&user.into(), &id, body.into_inner())
        .await?;
    let csv = format!(
        "/api/v1/backoffice/promotions/{}/coupon-batches/{}.csv",
        batch.promotion, batch.id
    );
    let mut body = serde_json::to_value(&batch).map_err(|_| unavailable())?;
    body["csv"] = json!(csv);
    Ok(HttpResponse::Created().json(body))
}

async fn list_batches(
    _: BackOfficeUser,
    bo: web::Data<Backoffice>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    bo.promotion(&id)?;
    Ok(HttpResponse::Ok().json(json!({ "batches": stored(bo.batches(&id))? })))
}

async fn export_batch(
    user: BackOfficeUser,
    bo: web::Data<Backoffice>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    user.require_any(&[Role::Marketer, Role::Admin])?;
    let (promotion, batch) = path.into_inner();
    let id = Ulid::from_string(&batch)
        .map_err(|_| ApiError::not_found(&format!("coupon batch {batch}")))?;
    let csv = bo.export_batch(&user.into(), &promotion, id).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"coupons-{id}.csv\""),
        ))
        .insert_header(("cache-control", "no-store"))
        .body(csv))
}
