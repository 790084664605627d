//! The live basket: `GET /api/v1/baskets/{id}/live` upgrades to a WebSocket on which every change
//! of the basket arrives as a JSON text frame (the full basket view), starting with the current
//! one. Browsers authenticate with their cookies and must come from an allowed origin; apps send
//! their `Authorization` or `X-Basket-Token` header on the upgrade.

use crate::api::baskets::parse_basket_id;
use crate::context::{ChannelState, RequestContext};
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Message;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const PING_EVERY: Duration = Duration::from_secs(15);

/// Whether a cookie-authenticated upgrade comes from this site or an allowed origin.
fn origin_allowed(req: &HttpRequest, ctx: &RequestContext, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get("origin").and_then(|v| v.to_str().ok()) else {
        // Not a browser: apps authenticate with headers, which a web page cannot forge.
        return true;
    };
    if ctx.bearer || req.headers().contains_key(crate::context::BASKET_HEADER) {
        return true;
    }
    let host = req.connection_info().host().to_string();
    let same_site = url::Url::parse(origin).ok().is_some_and(|u| {
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        u.host_str().map(|h| format!("{h}{port}")).as_deref() == Some(host.as_str())
    });
    same_site || allowed.iter().any(|a| a == origin)
}

pub async fn basket_socket(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if !origin_allowed(&req, &ctx, &state.settings.allowed_origins) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not open a live basket",
        ));
    }
    let id = parse_basket_id(&id)?;
    let (first, mut updates) = state.backend.watch_basket(&ctx.shopper, id).await?;
    let (response, mut session, mut stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::bad_request(
            "not_a_websocket",
            format!("open this URL as a WebSocket: {e}"),
        )
    })?;
    actix_web::rt::spawn(async move {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        let send =
            |view: &crate::backend::BasketView| serde_json::to_string(view).unwrap_or_default();
        if session.text(send(&first)).await.is_err() {
            return;
        }
        let mut last_version = first.version;
        let mut awaiting_pong = false;
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Ok(view) => {
                        if view.version > last_version {
                            last_version = view.version;
                            if session.text(send(&view)).await.is_err() { break; }
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                },
                msg = stream.next() => match msg {
                    Some(Ok(Message::Ping(bytes))) => { if session.pong(&bytes).await.is_err() { break; } }
                    Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                _ = ping.tick() => {
                    if awaiting_pong || session.ping(b"").await.is_err() { break; }
                    awaiting_pong = true;
                }
            }
        }
        let _ = session.close(None).await;
    });
    Ok(response)
}
