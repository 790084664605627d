//! The chat channel: `POST /api/v1/chat` turns a message into an [`super::Intent`] (the
//! [`super::nlu`] rules), asks the [`super::Assistant`] and answers JSON. The shopper is who the
//! storefront or app session says (cookies, or `Authorization: Bearer` / `X-Basket-Token` like
//! the rest of `/api/v1`); the conversation's state stays on the server, bound to that shopper,
//! and the client holds only its random id.

use super::nlu::{self, NluContext};
use super::{Card, DialogState, Turn};
use crate::backend::BasketView;
use crate::context::{
    random_token, ChannelState, RequestContext, BASKET_COOKIE, BASKET_HEADER, CSRF_COOKIE,
    SESSION_COOKIE,
};
use crate::error::ApiError;
use crate::web::format::{is_token, origin_allowed, tokens_match};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use governor::{clock::DefaultClock, DefaultKeyedRateLimiter, Quota, RateLimiter};
use protocol::{Channel, Money, Sku};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The header a browser sends the page's CSRF token in (the storefront's chat widget does).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The longest message accepted, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Conversations kept in memory at most; the idlest go first.
const MAX_CONVERSATIONS: usize = 10_000;
/// A conversation idle this long is forgotten.
const CONVERSATION_IDLE: Duration = Duration::from_secs(30 * 60);

/// Body of `POST /api/v1/chat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// What the shopper typed; absent or empty opens the conversation (a welcome).
    #[serde(default)]
    pub message: Option<String>,
    /// The `conversation` of the previous answer, to go on with it.
    #[serde(default)]
    pub conversation: Option<String>,
}

/// One basket line in a chat answer.
#[derive(Debug, Serialize)]
pub struct LineSummary {
    pub sku: Sku,
    pub name: String,
    pub variant: String,
    pub quantity: u32,
    pub line_total: Money,
}

/// The basket after a chat turn changed it.
#[derive(Debug, Serialize)]
pub struct BasketSummary {
    pub id: String,
    pub version: u64,
    pub item_count: u64,
    pub total: Money,
    pub lines: Vec<LineSummary>,
}

impl BasketSummary {
    fn of(view: &BasketView) -> BasketSummary {
        BasketSummary {
            id: view.id.to_string(),
            version: view.version,
            item_count: view.priced.item_count,
            total: view.priced.total,
            lines: view
                .priced
                .lines
                .iter()
                .map(|l| LineSummary {
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    variant: l.variant.clone(),
                    quantity: l.quantity,
                    line_total: l.line_total,
                })
                .collect(),
        }
    }
}

/// The answer of `POST /api/v1/chat`.
#[derive(Debug, Serialize)]
pub struct ChatResponse {
    pub reply: String,
    /// Send it back with the next message.
    pub conversation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basket: Option<BasketSummary>,
    pub suggestions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
    /// A link to follow (the checkout page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The token of an anonymous basket this turn created (also set as the basket cookie):
    /// apps send it as `X-Basket-Token` from now on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basket_token: Option<String>,
}

struct Conversation {
    owner: String,
    state: DialogState,
    touched: Instant,
}

/// The chat channel's server-side state: conversations and the per-shopper rate limit.
pub struct ChatState {
    conversations: Mutex<HashMap<String, Conversation>>,
    limiter: DefaultKeyedRateLimiter<String>,
    /// Per client address as well (four times the shopper's quota), so a client that makes up
    /// a new anonymous id for every message is still limited.
    per_address: DefaultKeyedRateLimiter<std::net::IpAddr>,
}

/// Keyed rate-limiter entries kept before idle ones are dropped.
const LIMITER_KEYS: usize = 10_000;

impl ChatState {
    pub fn new(turns_per_minute: u32) -> ChatState {
        let per_minute = NonZeroU32::new(turns_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let per_address =
            NonZeroU32::new(turns_per_minute.max(1).saturating_mul(4)).unwrap_or(NonZeroU32::MIN);
        ChatState {
            conversations: Mutex::new(HashMap::new()),
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            per_address: RateLimiter::keyed(Quota::per_minute(per_address)),
        }
    }

    /// Counts one message of `owner` from `address`; `Err(seconds)` when over a limit.
    fn check(&self, owner: &str, address: std::net::IpAddr) -> Result<(), u64> {
        if self.limiter.len() > LIMITER_KEYS {
            self.limiter.retain_recent();
        }
        if self.per_address.len() > LIMITER_KEYS {
            self.per_address.retain_recent();
        }
        let wait = |n: governor::NotUntil<governor::clock::QuantaInstant>| {
            n.wait_time_from(governor::clock::Clock::now(&DefaultClock::default()))
                .as_secs()
                + 1
        };
        self.per_address.check_key(&address).map_err(wait)?;
        self.limiter.check_key(&owner.to_string()).map_err(wait)
    }

    /// The state of conversation `id` if `owner` holds it; a fresh conversation otherwise.
    fn load(&self, id: Option<&str>, owner: &str) -> Result<(String, DialogState), ApiError> {
        let mut map = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = id.filter(|id| is_token(id)) {
            if let Some(c) = map.get_mut(id) {
                if c.owner == owner && c.touched.elapsed() < CONVERSATION_IDLE {
                    c.touched = Instant::now();
                    return Ok((id.to_string(), c.state.clone()));
                }
            }
        }
        drop(map);
        Ok((random_token()?, DialogState::default()))
    }

    fn save(&self, id: String, owner: String, state: DialogState) {
        let mut map = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CONVERSATIONS && !map.contains_key(&id) {
            map.retain(|_, c| c.touched.elapsed() < CONVERSATION_IDLE);
            if map.len() >= MAX_CONVERSATIONS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, c)| c.touched)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(
            id,
            Conversation {
                owner,
                state,
                touched: Instant::now(),
            },
        );
    }
}

/// Who a conversation and the rate limit belong to: the customer, else the browser or app
/// install, else the basket, else the client address.
fn owner_key(ctx: &RequestContext) -> String {
    match (
        &ctx.shopper.customer,
        &ctx.shopper.anonymous,
        &ctx.shopper.basket_token,
    ) {
        (Some(c), _, _) => format!("customer:{c}"),
        (None, Some(a), _) => format!("anonymous:{a}"),
        (None, None, Some(t)) => format!("basket:{t}"),
        (None, None, None) => format!("address:{}", ctx.client),
    }
}

/// A browser's message must come from our own pages: an allowed `Origin`, and, when it rides
/// on the session or basket cookie, the page's CSRF token in `X-CSRF-Token`. Apps authenticate
/// with headers a web page cannot set cross-site, and need neither.
fn check_browser(
    req: &HttpRequest,
    ctx: &RequestContext,
    state: &ChannelState,
) -> Result<(), ApiError> {
    if ctx.bearer || req.headers().contains_key(BASKET_HEADER) {
        return Ok(());
    }
    let forbidden = |code, message: &str| ApiError::new(StatusCode::FORBIDDEN, code, message);
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let info = req.connection_info();
        if !origin_allowed(origin, info.host(), &state.settings.allowed_origins) {
            return Err(forbidden(
                "origin_not_allowed",
                "this origin may not use the chat: send messages from the shop's own pages",
            ));
        }
    }
    let with_cookies = req.cookie(SESSION_COOKIE).is_some() || req.cookie(BASKET_COOKIE).is_some();
    if !with_cookies {
        return Ok(());
    }
    let expected = req
        .cookie(CSRF_COOKIE)
        .map(|c| c.value().to_string())
        .filter(|t| is_token(t));
    let presented = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match expected {
        Some(expected) if tokens_match(&expected, presented) => Ok(()),
        _ => Err(forbidden(
            "csrf_failed",
            "send the page's CSRF token in the X-CSRF-Token header (the storefront's chat box does), or authenticate with Authorization: Bearer",
        )),
    }
}

/// `POST /api/v1/chat` `{"message": "add two bags of coffee", "conversation": "…"}`.
pub async fn post(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    body: web::Json<ChatRequest>,
) -> Result<HttpResponse, ApiError> {
    check_browser(&req, &ctx, &state)?;
    let body = body.into_inner();
    let message = body.message.unwrap_or_default();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::unprocessable(
            "message_too_long",
            format!("message must be at most {MAX_MESSAGE_CHARS} characters: send a shorter one"),
        ));
    }
    if body.conversation.as_deref().is_some_and(|c| c.len() > 64) {
        return Err(ApiError::unprocessable(
            "invalid_conversation",
            "conversation must be the id the previous answer gave (or left out to start anew)",
        ));
    }
    let owner = owner_key(&ctx);
    if let Err(retry_after) = state.chat.check(&owner, ctx.client) {
        return Err(ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many chat messages: try again in {retry_after} s"),
            )
        });
    }
    let (id, dialog) = state.chat.load(body.conversation.as_deref(), &owner)?;
    let assistant = &state.assistant;
    let intent = nlu::parse(
        &message,
        &NluContext {
            pending: dialog.pending.is_some(),
            store_words: assistant.store_words(),
        },
    );
    let outcome = assistant
        .converse(Turn {
            channel: Channel::Chat,
            shopper: ctx.shopper.clone(),
            intent,
            state: dialog,
        })
        .await;
    state
        .chat
        .save(id.clone(), owner, outcome.reply.state.clone());
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(token) = &outcome.basket_token {
        res.cookie(state.cookie(BASKET_COOKIE, token.clone(), 30));
    }
    Ok(res.json(ChatResponse {
        reply: outcome.reply.text,
        conversation: id,
        basket: outcome.basket.as_ref().map(BasketSummary::of),
        suggestions: outcome.suggestions,
        card: outcome.reply.card,
        link: outcome.link,
        basket_token: outcome.basket_token,
    }))
}
