//! The importer's HTTP side.
//!
//! - `POST /api/v1/import/{feed}` — a feed body as JSON (`Content-Type: application/json`) or
//!   CSV (`text/csv`), at most [`parse::MAX_BODY_BYTES`]; authenticated either by the ERP's
//!   signature (`X-Omnihub-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">` keyed with
//!   `import.push_secret`, within `import.signature_tolerance` of now) or by the admin token or
//!   a back-office merchandiser's or admin's token as `Authorization: Bearer`
//!   ([`authorize_import`]); the promotions and coupons feeds, which arrive approved, only by
//!   the signature or the admin token ([`Sender::may_import`]). Everything that needs no body is
//!   checked before the body is read; the signature's HMAC after. Answers `200` with the
//!   [`ImportReport`] (row errors included); `401` for missing or bad credentials, `403` for a
//!   token that may not import this feed, `404` for an unknown or not
//!   enabled feed, `415` for another content type, `413` for a body too large, `400` for a body
//!   that cannot be read as rows, `503` when the import itself failed (the report, stored as
//!   failed, is named in the details).
//! - `GET /api/v1/admin/import/runs?limit=` (newest first, without their row errors),
//!   `GET /api/v1/admin/import/runs/{id}` (the full report), `GET /api/v1/admin/import/cursors`
//!   (each feed's pull cursor and how the pull is doing): the admin token.

use super::{parse, ImportError, ImportReport, Importer};
use crate::admin::AdminAccess;
use crate::backoffice::access::{policy, Staff};
use crate::config::PullSettings;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use channels::error::ApiError;
use futures_util::StreamExt;
use protocol::feed::{FeedKind, SIGNATURE_HEADER};
use serde::Deserialize;
use serde_json::json;

/// What the routes need: the importer and how pushes are authenticated.
pub struct ImportRoutes {
    pub importer: Importer,
    pub push_secret: Option<secrecy::SecretString>,
    pub tolerance_secs: i64,
    /// The scheduled pull, if configured (shown with the cursors).
    pub pull: Option<PullSettings>,
}

/// Mounts the routes; register before the admin API's and the channels' scopes.
pub fn configure(state: web::Data<ImportRoutes>) -> impl Fn(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.service(
            web::resource("/api/v1/import/{feed}")
                .app_data(state.clone())
                .route(web::post().to(push))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::scope("/api/v1/admin/import")
                .app_data(state.clone())
                .app_data(channels::error::query_config())
                .route("/runs", web::get().to(runs))
                .route("/runs/{id}", web::get().to(run))
                .route("/cursors", web::get().to(cursors))
                .default_service(web::to(channels::error::api_not_found)),
        );
    }
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "POST a feed body here",
    ))
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Who sent an import, as far as can be told before its body is read.
pub enum Sender {
    /// The ERP, by a signature whose header is well-formed and whose time is within the
    /// tolerance; [`Sender::verify`] checks its HMAC once the body is read.
    Erp {
        header: String,
        secret: secrecy::SecretString,
        tolerance: i64,
        /// When the request was checked: the HMAC is verified against the same instant, so a
        /// slow upload is not refused as stale.
        now: i64,
    },
    /// The hub's admin token.
    Admin,
    /// A back-office user with the merchandiser or admin role (`omnihub import`), by email.
    User(String),
}

impl Sender {
    /// Who it is, for the report: `erp`, `admin` or the user's email.
    pub fn by(&self) -> &str {
        match self {
            Sender::Erp { .. } => "erp",
            Sender::Admin => "admin",
            Sender::User(email) => email,
        }
    }

    /// Whether this sender may import `feed`. The promotions and coupons feeds arrive approved
    /// as the ERP's own (`backoffice::feeds`), so they are the ERP's and the admin token's
    /// alone: a back-office user would otherwise skip the four-eyes approval of promotions.
    pub fn may_import(&self, feed: FeedKind) -> Result<(), ApiError> {
        let erp_only = matches!(feed, FeedKind::Promotions | FeedKind::Coupons);
        match self {
            Sender::User(_) if erp_only => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "feed_needs_erp_or_admin",
                format!(
                    "the {feed} feed arrives approved, as the ERP's own, so only the ERP's \
                     signed push ({SIGNATURE_HEADER}) or the hub's admin token may import it; \
                     a back-office user drafts promotions and coupons in the back office \
                     (/api/v1/backoffice/promotions), where another user approves them"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Checks the ERP's HMAC over the body (nothing for a token, checked already).
    pub fn verify(&self, body: &[u8]) -> Result<(), ApiError> {
        let Sender::Erp {
            header,
            secret,
            tolerance,
            now,
        } = self
        else {
            return Ok(());
        };
        use secrecy::ExposeSecret;
        crate::payments::webhook::verify(
            secret.expose_secret(),
            Some(header),
            body,
            *now,
            *tolerance,
        )
        .map_err(|e| bad_signature(e, *tolerance))
    }
}

fn bad_signature(e: crate::payments::webhook::SignatureError, tolerance: i64) -> ApiError {
    use crate::payments::webhook::SignatureError as E;
    let reason = match e {
        E::Missing | E::Malformed => {
            format!("{SIGNATURE_HEADER} must be t=<unix time>,v1=<hex signature>")
        }
        E::Stale(s) => {
            format!("the signature's time is {s} s from now, more than the {tolerance} s allowed")
        }
        E::Mismatch => "the signature does not match the body".into(),
    };
    unauthorized("bad_signature", reason)
}

/// Who may import, checked without the body: the admin token or a back-office user's token as
/// `Authorization: Bearer` (checked first when present), else the ERP's signature — the push
/// secret configured, the header well-formed, its time within the tolerance. The HMAC over the
/// body is left to [`Sender::verify`], so nothing reads a body (up to
/// [`parse::MAX_BODY_BYTES`]) for a sender that is refused anyway.
pub fn authorize_import(req: &HttpRequest) -> Result<Sender, ApiError> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return bearer(req);
    }
    let Some(signature) = req.headers().get(SIGNATURE_HEADER) else {
        return Err(unauthorized(
            "import_auth_required",
            format!(
                "sign the body ({SIGNATURE_HEADER}: t=<unix time>,v1=<hex HMAC-SHA256 of \
                 \"{{t}}.{{body}}\">) or send Authorization: Bearer <admin token>"
            ),
        ));
    };
    let routes = req.app_data::<web::Data<ImportRoutes>>();
    let Some((secret, tolerance)) =
        routes.and_then(|r| r.push_secret.clone().map(|s| (s, r.tolerance_secs)))
    else {
        return Err(unauthorized(
            "signed_push_off",
            "signed pushes are switched off on this hub: set import.push_secret",
        ));
    };
    use crate::payments::webhook::SignatureError as E;
    use secrecy::ExposeSecret;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = signature.to_str().ok();
    // Verified against an empty body, the header can only fail for what does not depend on the
    // body (absent, malformed, stale); a mismatch just means it is to be checked with the body.
    match crate::payments::webhook::verify(secret.expose_secret(), header, b"", now, tolerance) {
        Ok(()) | Err(E::Mismatch) => Ok(Sender::Erp {
            header: header.unwrap_or_default().to_string(),
            secret,
            tolerance,
            now,
        }),
        Err(e) => Err(bad_signature(e, tolerance)),
    }
}

/// The admin token, or a back-office user's token with the merchandiser or admin role.
fn bearer(req: &HttpRequest) -> Result<Sender, ApiError> {
    let token = req
        .app_data::<web::Data<AdminAccess>>()
        .and_then(|a| a.token.clone());
    if token.is_some_and(|t| crate::auth::bearer_matches(req, &t)) {
        return Ok(Sender::Admin);
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let user = req
        .app_data::<web::Data<crate::backoffice::Backoffice>>()
        .and_then(|bo| bo.authenticate(presented).ok());
    match user {
        Some(u)
            if u.has(crate::backoffice::users::Role::Merchandiser)
                || u.has(crate::backoffice::users::Role::Admin) =>
        {
            Ok(Sender::User(u.email))
        }
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "needs role merchandiser or admin to import",
        )),
        None => Err(unauthorized(
            "bad_token",
            "the bearer token is not one that may import: send the admin token or a \
             back-office token of a merchandiser or admin",
        )),
    }
}

enum Format {
    Json,
    Csv,
}

fn format_of(req: &HttpRequest) -> Result<Format, ApiError> {
    match req.content_type().trim().to_ascii_lowercase().as_str() {
        "application/json" | "text/json" => Ok(Format::Json),
        "text/csv" | "application/csv" => Ok(Format::Csv),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type '{other}' is not a feed format: send application/json or text/csv"
            ),
        )),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the body is larger than {} MiB: split the feed into smaller files",
            parse::MAX_BODY_BYTES / (1024 * 1024)
        ),
    )
}

async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > parse::MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("unreadable_body", format!("could not read the body: {e}"))
        })?;
        if body.len() + chunk.len() > parse::MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn feed_of(routes: &ImportRoutes, name: &str) -> Result<FeedKind, ApiError> {
    let feed = FeedKind::parse(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_feed",
            format!(
                "there is no '{}' feed: use one of {}",
                name.chars().take(40).collect::<String>(),
                FeedKind::ALL.map(FeedKind::as_str).join(", ")
            ),
        )
    })?;
    if !routes.importer.enabled(feed) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "feed_not_enabled",
            format!("the {feed} feed is not enabled on this hub"),
        ));
    }
    Ok(feed)
}

/// `POST /api/v1/import/{feed}`.
async fn push(
    req: HttpRequest,
    routes: web::Data<ImportRoutes>,
    feed: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let sender = authorize_import(&req)?;
    let feed = feed_of(&routes, &feed)?;
    sender.may_import(feed)?;
    let format = format_of(&req)?;
    let body = read_body(&req, payload).await?;
    sender.verify(&body)?;
    let parsed = web::block(move || match format {
        Format::Json => parse::json(feed, &body),
        Format::Csv => parse::csv(feed, &body),
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?
    .map_err(|e| ApiError::bad_request("unreadable_body", e.to_string()))?;
    let source = match sender {
        Sender::Erp { .. } => "push",
        Sender::Admin | Sender::User(_) => "upload",
    };
    let importer = &routes.importer;
    let mut run = importer.begin(feed, source, sender.by());
    let applied = importer.apply(&mut run, parsed).await;
    let report = importer
        .finish(run, applied.as_ref().err())
        .await
        .map_err(failed)?;
    match applied {
        Ok(()) => Ok(HttpResponse::Ok().json(report)),
        Err(e) => Err(failed(e).with_details(json!({"run": report.id, "report": report}))),
    }
}

fn failed(e: ImportError) -> ApiError {
    match e {
        ImportError::NotEnabled(feed) => ApiError::new(
            StatusCode::NOT_FOUND,
            "feed_not_enabled",
            format!("the {feed} feed is not enabled on this hub"),
        ),
        other => {
            tracing::error!(error = %other, "an import failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "import_failed",
                "the import stopped before its end: rows before the failure are applied; send \
                 the feed again (applied rows are unchanged the second time)",
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<usize>,
}

fn summary(r: &ImportReport) -> serde_json::Value {
    json!({
        "id": r.id,
        "feed": r.feed,
        "source": r.source,
        "by": r.by,
        "rows": r.rows,
        "applied": r.applied,
        "unchanged": r.unchanged,
        "stale": r.stale,
        "rejected": r.rejected,
        "warnings": r.warnings.len(),
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "failed": r.failed,
        "cursor": r.cursor,
    })
}

/// `GET /api/v1/admin/import/runs?limit=`: newest first, 1–200 (default 50).
async fn runs(
    _: Staff<policy::Imports>,
    routes: web::Data<ImportRoutes>,
    query: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let runs = routes.importer.runs(limit).await.map_err(failed)?;
    Ok(HttpResponse::Ok().json(json!({"runs": runs.iter().map(summary).collect::<Vec<_>>()})))
}

/// `GET /api/v1/admin/import/runs/{id}`: the full report.
async fn run(
    _: Staff<policy::Imports>,
    routes: web::Data<ImportRoutes>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found("import run");
    let id: ulid::Ulid = id.parse().map_err(|_| not_found())?;
    let report = routes.importer.report(id).await.map_err(failed)?;
    report
        .map(|r| HttpResponse::Ok().json(r))
        .ok_or_else(not_found)
}

/// `GET /api/v1/admin/import/cursors`: each feed's cursor and pull status.
async fn cursors(
    _: Staff<policy::Imports>,
    routes: web::Data<ImportRoutes>,
) -> Result<HttpResponse, ApiError> {
    let stored = routes
        .importer
        .store()
        .cursors()
        .map_err(|e| failed(e.into()))?;
    let status = routes.importer.pull_status();
    let feeds: Vec<serde_json::Value> = FeedKind::ALL
        .into_iter()
        .filter(|f| routes.importer.enabled(*f))
        .map(|f| {
            let c = stored.iter().find(|c| c.feed == f);
            json!({
                "feed": f,
                "cursor": c.map(|c| c.cursor.as_str()),
                "updated_at": c.map(|c| c.updated_at.as_str()),
                "pulled": routes.pull.as_ref().is_some_and(|p| p.feeds.contains(&f)),
                "status": status.get(&f),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "pull": routes.pull.as_ref().map(|p| json!({
            "base_url": p.base_url,
            "every": humantime::format_duration(p.every).to_string(),
            "page_size": p.page_size,
        })),
        "feeds": feeds,
    })))
}
