//! The boards' HTTP side: the page (`GET /boards/{id}`), its WebSocket (`GET /boards/{id}/ws`),
//! presence events (`POST /boards/{id}/presence`) and the ops list (`GET /api/v1/boards`).
//!
//! WebSocket messages are JSON text frames with a `t` tag. Board → node: `hello { token }`
//! (first, within `dark_after`), `heartbeat`, `impression { item, segment? }`,
//! `interaction { item?, action }`, `scan { code }`. Node → board: `welcome { board, name,
//! kiosk, heartbeat_secs }`, `feed { version, segment, personal_item, until_ms, items }`
//! (`personal_item`: the id of the item chosen for the shopper present, first in `items`), `identified
//! { personalised }`, `error { code, message }`.

use super::Boards;
use crate::api::{ApiError, ApiState};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use futures_util::StreamExt;
use protocol::board::is_plain_id;
use protocol::EventKind;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Close code for a wrong or missing board token.
pub const CLOSE_BAD_TOKEN: u16 = 4001;
/// Close code for a board silent beyond `dark_after`.
pub const CLOSE_IDLE: u16 = 4008;
/// The largest message a board may send.
const MAX_MESSAGE: usize = 16 * 1024;

/// Registers the page, WebSocket and presence routes.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/boards/{id}", web::get().to(page))
        .route("/boards/{id}/ws", web::get().to(socket))
        .route("/boards/{id}/presence", web::post().to(presence));
}

fn unknown_board(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_board",
        format!("no board '{id}' is configured on this node ([[boards.list]])"),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `GET /boards/{id}`: the full-screen page. It holds no secret: the board's token comes in
/// the URL's fragment (`#token=…`, never sent to a server) and is kept in the browser.
async fn page(boards: web::Data<Boards>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let board = boards.board(&id).ok_or_else(|| unknown_board(&id))?;
    let name = if board.name.is_empty() {
        &board.id
    } else {
        &board.name
    };
    let html = include_str!("page.html")
        .replace("{{ID}}", &escape(&board.id))
        .replace("{{NAME}}", &escape(name))
        .replace("{{KIOSK}}", if board.kiosk { "true" } else { "false" });
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceBody {
    /// What the shopper showed: their loyalty number (8 to 16 digits, as on the card) or
    /// their customer id (26 characters, as on the app's loyalty QR).
    customer: String,
    /// `beacon` (default) or `scan`.
    #[serde(default)]
    via: Option<String>,
}

fn parse_code(text: &str) -> Result<String, ApiError> {
    protocol::board::shopper_code(text).ok_or_else(|| {
        ApiError::bad_request(
            "bad_loyalty_id",
            format!("'{text}' is not a loyalty number (8 to 16 digits) or a customer id (26 characters)"),
        )
    })
}

/// `POST /boards/{id}/presence`: a beacon (or a scanner) saw a shopper at board `id`.
/// Authorised by that board's token or the node's API token.
async fn presence(
    req: HttpRequest,
    boards: web::Data<Boards>,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: web::Json<PresenceBody>,
) -> Result<HttpResponse, ApiError> {
    use secrecy::ExposeSecret;
    boards.board(&id).ok_or_else(|| unknown_board(&id))?;
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let api = state.token.expose_secret();
    let api_ok = !api.is_empty() && {
        use subtle::ConstantTimeEq;
        bool::from(token.as_bytes().ct_eq(api.as_bytes()))
    };
    if !api_ok && !boards.authenticate(&id, token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "board_token_required",
            "send the board's token (or the node's API token) as Authorization: Bearer <token>",
        ));
    }
    let code = parse_code(&body.customer)?;
    let via = match body.via.as_deref() {
        None | Some("beacon") => "beacon",
        Some("scan") => "scan",
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_via",
                format!("via '{other}': use 'beacon' or 'scan'"),
            ))
        }
    };
    let outcome = boards.identify(&id, &code, via).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the node's storage is unavailable: retry shortly",
        )
    })?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// `GET /api/v1/boards` (behind the node's API token): every board, connected or dark.
pub(crate) async fn list(boards: web::Data<Boards>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "boards": boards.list() }))
}

/// `GET /boards/{id}/ws`: upgrades; the board proves itself in its first message.
async fn socket(
    req: HttpRequest,
    body: web::Payload,
    boards: web::Data<Boards>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    boards.board(&id).ok_or_else(|| unknown_board(&id))?;
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::bad_request(
            "not_a_websocket",
            format!("open this URL as a WebSocket: {e}"),
        )
    })?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    actix_web::rt::spawn(connection(
        boards.into_inner(),
        id.into_inner(),
        session,
        stream,
    ));
    Ok(response)
}

/// What a board sends.
#[derive(Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum FromBoard {
    Hello {
        token: String,
    },
    Heartbeat,
    Impression {
        item: String,
        #[serde(default)]
        segment: Option<String>,
    },
    Interaction {
        #[serde(default)]
        item: Option<String>,
        action: String,
    },
    Scan {
        code: String,
    },
    #[serde(other)]
    Unknown,
}

async fn close(session: actix_ws::Session, code: u16, reason: &str) {
    let _ = session
        .close(Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.to_string()),
        }))
        .await;
}

/// Waits for the board's `hello` with its token.
async fn hello(
    boards: &Boards,
    id: &str,
    stream: &mut actix_ws::AggregatedMessageStream,
    session: &mut actix_ws::Session,
) -> Result<(), &'static str> {
    let deadline = tokio::time::Instant::now() + boards.settings.dark_after;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| "no hello in time")?;
        match next {
            Some(Ok(AggregatedMessage::Text(text))) => {
                return match serde_json::from_str::<FromBoard>(&text) {
                    Ok(FromBoard::Hello { token }) if boards.authenticate(id, &token) => Ok(()),
                    Ok(FromBoard::Hello { .. }) => Err("this is not the board's token"),
                    _ => Err("the first message must be hello with the board's token"),
                };
            }
            Some(Ok(AggregatedMessage::Ping(b))) => {
                let _ = session.pong(&b).await;
            }
            Some(Ok(AggregatedMessage::Pong(_))) => {}
            _ => return Err("the first message must be hello with the board's token"),
        }
    }
}

/// The feed message for a board now; `None` if it is what was sent last.
fn render(boards: &Boards, id: &str, last: &mut String) -> Option<String> {
    let feed = boards.feed.borrow().clone();
    let presence = boards.presence_of(id);
    let segment = presence
        .as_ref()
        .and_then(|p| p.segment.as_deref())
        .filter(|s| feed.segments.contains_key(*s));
    let item = presence.as_ref().and_then(|p| p.item.as_ref());
    let rest = feed.items(segment);
    // The shopper's own item first, then the segment's (or the default) items without it.
    let items = match item {
        Some((item_id, shown)) => {
            let mut list = vec![shown.clone()];
            let others: Vec<serde_json::Value> = serde_json::from_str(rest).unwrap_or_default();
            list.extend(
                others
                    .into_iter()
                    .filter(|v| v["id"].as_str() != Some(item_id.as_str()))
                    .map(|v| v.to_string()),
            );
            format!("[{}]", list.join(","))
        }
        None => rest.to_string(),
    };
    let message = format!(
        r#"{{"t":"feed","version":{},"computed_ms":{},"segment":{},"personal_item":{},"until_ms":{},"items":{}}}"#,
        feed.version,
        feed.computed_ms,
        segment.map_or("null".to_string(), |s| json!(s).to_string()),
        item.map_or("null".to_string(), |(i, _)| json!(i).to_string()),
        (segment.is_some() || item.is_some())
            .then_some(presence.as_ref())
            .flatten()
            .map_or("null".to_string(), |p| p.until_ms.to_string()),
        items,
    );
    // The time of computation alone does not make a new message.
    let key = message.replacen(&format!("\"computed_ms\":{}", feed.computed_ms), "", 1);
    if key == *last {
        return None;
    }
    *last = key;
    Some(message)
}

/// One board's connection, until it closes, goes silent, or the node stops.
async fn connection(
    boards: Arc<Boards>,
    id: String,
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    if let Err(reason) = hello(&boards, &id, &mut stream, &mut session).await {
        tracing::warn!(board = %id, reason, "a board connection was refused");
        close(session, CLOSE_BAD_TOKEN, reason).await;
        return;
    }
    let board = boards.board(&id).cloned();
    boards.seen(&id, 1);
    tracing::info!(board = %id, "board connected");
    let mut feed = boards.feed.subscribe();
    let mut presence = boards.presence_changed.subscribe();
    let mut shutdown = boards.shutdown.clone();
    let welcome = json!({
        "t": "welcome",
        "board": id,
        "name": board.as_ref().map(|b| if b.name.is_empty() { b.id.clone() } else { b.name.clone() }),
        "kiosk": board.as_ref().is_some_and(|b| b.kiosk),
        "heartbeat_secs": boards.settings.heartbeat_every.as_secs_f64(),
    });
    let mut last = String::new();
    let mut ok = session.text(welcome.to_string()).await.is_ok();
    if let Some(m) = render(&boards, &id, &mut last) {
        ok = ok && session.text(m).await.is_ok();
    }
    let mut last_heard = tokio::time::Instant::now();
    while ok {
        let expiry = boards
            .presence_of(&id)
            .map(|p| Duration::from_millis(p.until_ms.saturating_sub(crate::store::now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            next = stream.next() => {
                last_heard = tokio::time::Instant::now();
                boards.seen(&id, 0);
                match next {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        ok = handle(&boards, &id, &text, &mut session).await;
                    }
                    Some(Ok(AggregatedMessage::Ping(b))) => ok = session.pong(&b).await.is_ok(),
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        ok = send_error(&mut session, "text_only", "send JSON text messages").await;
                    }
                    Some(Ok(AggregatedMessage::Close(_))) | None | Some(Err(_)) => break,
                }
            }
            changed = feed.changed() => {
                if changed.is_err() { break }
                if let Some(m) = render(&boards, &id, &mut last) {
                    ok = session.text(m).await.is_ok();
                }
            }
            changed = presence.changed() => {
                if changed.is_err() { break }
                if let Some(m) = render(&boards, &id, &mut last) {
                    ok = session.text(m).await.is_ok();
                }
            }
            _ = tokio::time::sleep(expiry) => {
                if let Some(m) = render(&boards, &id, &mut last) {
                    ok = session.text(m).await.is_ok();
                }
            }
            _ = tokio::time::sleep_until(last_heard + boards.settings.dark_after) => {
                tracing::warn!(board = %id, "a board went silent: closing its connection");
                boards.seen(&id, -1);
                close(session, CLOSE_IDLE, "no heartbeat within dark_after").await;
                return;
            }
            _ = shutdown.changed() => {
                boards.seen(&id, -1);
                close(session, 1001, "the node is stopping").await;
                return;
            }
        }
    }
    boards.seen(&id, -1);
    tracing::info!(board = %id, "board disconnected");
    let _ = session.close(None).await;
}

async fn send_error(session: &mut actix_ws::Session, code: &str, message: &str) -> bool {
    let m = json!({ "t": "error", "code": code, "message": message });
    session.text(m.to_string()).await.is_ok()
}

/// Handles one message from an authenticated board; `false` once the socket is gone.
async fn handle(
    boards: &Arc<Boards>,
    id: &str,
    text: &str,
    session: &mut actix_ws::Session,
) -> bool {
    let message = match serde_json::from_str::<FromBoard>(text) {
        Ok(m) => m,
        Err(e) => {
            return send_error(session, "bad_message", &format!("not a board message: {e}")).await
        }
    };
    let event =
        |kind, payload: BTreeMap<String, String>| (kind, boards.present_customer(id), payload);
    let recorded = match message {
        FromBoard::Heartbeat | FromBoard::Unknown | FromBoard::Hello { .. } => return true,
        FromBoard::Impression { item, segment } => {
            if !is_plain_id(&item) {
                return send_error(session, "bad_item", "item: an item id of the playlist").await;
            }
            let mut p = BTreeMap::from([("item".to_string(), item)]);
            if let Some(s) = segment.filter(|s| is_plain_id(s)) {
                p.insert("segment".into(), s);
            }
            boards
                .record(id, vec![event(EventKind::BoardImpression, p)])
                .await
        }
        FromBoard::Interaction { item, action } => {
            if !is_plain_id(&action) || item.as_deref().is_some_and(|i| !is_plain_id(i)) {
                return send_error(session, "bad_interaction", "action (and item): plain ids")
                    .await;
            }
            let mut p = BTreeMap::from([("action".to_string(), action)]);
            if let Some(i) = item {
                p.insert("item".into(), i);
            }
            boards
                .record(id, vec![event(EventKind::BoardInteraction, p)])
                .await
        }
        FromBoard::Scan { code } => {
            let Some(code) = protocol::board::shopper_code(&code) else {
                return send_error(session, "bad_loyalty_id", "that code is not a loyalty card")
                    .await;
            };
            match boards.identify(id, &code, "scan").await {
                Ok(outcome) => {
                    let m = json!({ "t": "identified", "personalised": outcome.personalised });
                    return session.text(m.to_string()).await.is_ok();
                }
                Err(e) => Err(e),
            }
        }
    };
    match recorded {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(board = %id, error = %e, "a board event could not be recorded");
            send_error(
                session,
                "unavailable",
                "the node could not record that: retry",
            )
            .await
        }
    }
}
