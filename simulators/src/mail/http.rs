//! The inbox over HTTP (actix-web): two HTML pages for people and a JSON API for tests.
//!
//! `GET /` inbox page · `GET /messages/{id}` one message · `GET /api/messages?to=&limit=` list ·
//! `GET /api/messages/{id}` one message with its raw text · `DELETE /api/messages` empties the
//! inbox · `GET /healthz`. JSON errors are `{"error": {"code", "message"}}`.

use super::headers;
use super::store::{Store, StoredMessage};
use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use minijinja::{context, Environment};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::SystemTime;
use ulid::Ulid;

/// Messages listed by `GET /api/messages` when no `limit` is given.
const DEFAULT_LIST_LIMIT: usize = 100;

/// What the handlers share.
struct Inbox {
    store: Arc<Store>,
    pages: Environment<'static>,
    smtp_addr: SocketAddr,
}

/// Builds the inbox server on an already bound listener; the caller runs (spawns) it.
pub(super) fn server(
    listener: TcpListener,
    store: Arc<Store>,
    smtp_addr: SocketAddr,
) -> std::io::Result<Server> {
    let inbox = web::Data::new(Inbox {
        store,
        pages: pages(),
        smtp_addr,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(inbox.clone())
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::BadQuery(e.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::BadQuery(e.to_string()).into()),
            )
            .route("/", web::get().to(inbox_page))
            .route("/messages/{id}", web::get().to(message_page))
            .route("/api/messages", web::get().to(list))
            .route("/api/messages", web::delete().to(clear))
            .route("/api/messages/{id}", web::get().to(show))
            .route("/healthz", web::get().to(healthz))
            .default_service(web::to(no_route))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(server)
}

fn pages() -> Environment<'static> {
    let mut pages = Environment::new();
    // The templates are compiled into the binary; a syntax error in them fails the tests.
    for (name, source) in [
        ("inbox.html", include_str!("templates/inbox.html")),
        ("message.html", include_str!("templates/message.html")),
    ] {
        if let Err(e) = pages.add_template(name, source) {
            tracing::error!(template = name, error = %e, "broken inbox template");
        }
    }
    pages
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("no message with id '{0}'")]
    NotFound(String),
    #[error("no such page")]
    NoRoute,
    #[error("{0}")]
    BadQuery(String),
    #[error("the page could not be rendered")]
    Render(#[source] minijinja::Error),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            ApiError::NotFound(_) => "message_not_found",
            ApiError::NoRoute => "not_found",
            ApiError::BadQuery(_) => "bad_request",
            ApiError::Render(e) => {
                tracing::error!(error = %e, "cannot render an inbox page");
                "internal"
            }
        };
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({"error": {"code": code, "message": self.to_string()}}))
    }
}

/// One message in JSON, with its raw text.
#[derive(Serialize)]
struct Detail<'a> {
    #[serde(flatten)]
    message: &'a StoredMessage,
    raw: &'a str,
}

#[derive(Deserialize)]
struct ListQuery {
    to: Option<String>,
    limit: Option<usize>,
}

async fn list(inbox: web::Data<Inbox>, query: web::Query<ListQuery>) -> HttpResponse {
    let limit = query
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .min(inbox.store.max_messages());
    let messages = inbox.store.newest(query.to.as_deref(), limit);
    // `StoredMessage` serializes without its raw text, which only the single-message view adds.
    let messages: Vec<&StoredMessage> = messages.iter().map(|m| &**m).collect();
    HttpResponse::Ok().json(serde_json::json!({ "messages": messages }))
}

async fn show(inbox: web::Data<Inbox>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let message = find(&inbox, &id)?;
    Ok(HttpResponse::Ok().json(Detail {
        message: &message,
        raw: &message.raw,
    }))
}

async fn clear(inbox: web::Data<Inbox>) -> HttpResponse {
    let deleted = inbox.store.clear();
    tracing::info!(deleted, "inbox cleared");
    HttpResponse::Ok().json(serde_json::json!({ "deleted": deleted }))
}

async fn no_route() -> HttpResponse {
    ApiError::NoRoute.error_response()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

fn find(inbox: &Inbox, id: &str) -> Result<Arc<StoredMessage>, ApiError> {
    Ulid::from_string(id)
        .ok()
        .and_then(|ulid| inbox.store.get(ulid))
        .ok_or_else(|| ApiError::NotFound(id.chars().take(64).collect()))
}

/// A row of the inbox page.
#[derive(Serialize)]
struct Row {
    id: String,
    received_at: String,
    from: String,
    to: String,
    subject: Option<String>,
    size: String,
    duplicate_of: Option<String>,
}

async fn inbox_page(inbox: web::Data<Inbox>) -> Result<HttpResponse, ApiError> {
    let rows: Vec<Row> = inbox
        .store
        .newest(None, inbox.store.max_messages())
        .iter()
        .map(|m| Row {
            id: m.id.to_string(),
            received_at: display_time(m.received_at),
            from: m
                .headers
                .from
                .clone()
                .unwrap_or_else(|| m.envelope.from.clone()),
            to: m
                .headers
                .to
                .clone()
                .unwrap_or_else(|| m.envelope.to.join(", ")),
            subject: m.headers.subject.clone(),
            size: human_size(m.size),
            duplicate_of: m.duplicate_of.map(|id| id.to_string()),
        })
        .collect();
    let page = context! {
        messages => rows,
        max_messages => inbox.store.max_messages(),
        smtp_addr => inbox.smtp_addr.to_string(),
    };
    render(&inbox, "inbox.html", page)
}

async fn message_page(
    inbox: web::Data<Inbox>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = match find(&inbox, &id) {
        Ok(message) => message,
        Err(e) => {
            let text = format!("{e}. Back to the inbox: /");
            return Ok(HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body(text));
        }
    };
    let page = context! {
        id => message.id.to_string(),
        received_at => display_time(message.received_at),
        envelope_from => if message.envelope.from.is_empty() { "<>" } else { &message.envelope.from },
        envelope_to => message.envelope.to.join(", "),
        size => human_size(message.size),
        duplicate_of => message.duplicate_of.map(|id| id.to_string()),
        subject => message.headers.subject.as_deref(),
        headers => message
            .header_fields()
            .into_iter()
            .map(|(name, value)| (name, headers::decode_words(&value)))
            .collect::<Vec<_>>(),
        body => message.body(),
    };
    render(&inbox, "message.html", page)
}

fn render(inbox: &Inbox, name: &str, page: minijinja::Value) -> Result<HttpResponse, ApiError> {
    let html = inbox
        .pages
        .get_template(name)
        .and_then(|template| template.render(page))
        .map_err(ApiError::Render)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// A timestamp to the second in UTC, e.g. `2026-01-31 09:30:00Z` (the sink knows no time zones).
fn display_time(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace('T', " ")
}

fn human_size(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_mail_client() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10 * 1024 * 1024), "10.0 MiB");
    }

    #[test]
    fn the_templates_compile() {
        let pages = pages();
        assert!(pages.get_template("inbox.html").is_ok());
        assert!(pages.get_template("message.html").is_ok());
    }
}
