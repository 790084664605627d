//! Who is asking and from where: the request context every handler starts from, the channel's
//! settings, the sign-in rate limiter and the session/basket cookies.

use crate::backend::{Backend, Shopper};
use crate::error::ApiError;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use governor::{clock::DefaultClock, DefaultKeyedRateLimiter, Quota, RateLimiter};
use protocol::{AnonymousId, Channel};
use serde::Deserialize;
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;

pub const SESSION_COOKIE: &str = "omnihub_session";
pub const BASKET_COOKIE: &str = "omnihub_basket";
pub const ANON_COOKIE: &str = "omnihub_anon";
pub const CSRF_COOKIE: &str = "omnihub_csrf";
pub const BASKET_HEADER: &str = "x-basket-token";
pub const CHANNEL_HEADER: &str = "x-channel";
/// An app's anonymous install id (a ULID), for its events before sign-in.
pub const ANON_HEADER: &str = "x-anonymous-id";

/// Settings of the channel layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelSettings {
    /// Mark cookies `Secure` (on whenever the site is served over HTTPS).
    pub secure_cookies: bool,
    /// Proxies whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// Sign-in attempts allowed per account per minute.
    pub sign_in_per_account_per_minute: u32,
    /// Sign-in attempts allowed per client address per minute.
    pub sign_in_per_address_per_minute: u32,
    /// Origins allowed to open a live-basket WebSocket with cookies, e.g. `http://127.0.0.1:8080`.
    /// The hub's own origin (from the `Host` header) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Session lifetime in days (cookie max-age).
    pub session_days: i64,
    /// The conversational assistant (chat and voice): `[channels.assistant]`.
    pub assistant: crate::assistant::AssistantSettings,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            secure_cookies: false,
            trusted_proxies: Vec::new(),
            sign_in_per_account_per_minute: 10,
            sign_in_per_address_per_minute: 30,
            allowed_origins: Vec::new(),
            session_days: 30,
            assistant: crate::assistant::AssistantSettings::default(),
        }
    }
}

/// Sign-in attempts per account and per client address.
pub struct SignInLimiter {
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
}

impl SignInLimiter {
    pub fn new(per_account_per_minute: u32, per_address_per_minute: u32) -> SignInLimiter {
        let quota =
            |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN));
        SignInLimiter {
            per_account: RateLimiter::keyed(quota(per_account_per_minute)),
            per_address: RateLimiter::keyed(quota(per_address_per_minute)),
        }
    }

    /// Counts one attempt; `Err(seconds)` when over either limit.
    pub fn check(&self, account: &str, address: IpAddr) -> Result<(), u64> {
        let clock = DefaultClock::default();
        let wait = |r: Result<(), governor::NotUntil<_>>| {
            r.err().map(|n| {
                n.wait_time_from(governor::clock::Clock::now(&clock))
                    .as_secs()
                    + 1
            })
        };
        if let Some(s) = wait(self.per_address.check_key(&address)) {
            return Err(s);
        }
        if let Some(s) = wait(
            self.per_account
                .check_key(&protocol::customer::normalize_email(account)),
        ) {
            return Err(s);
        }
        Ok(())
    }
}

/// Shared state of the channel layer.
pub struct ChannelState {
    pub backend: Arc<dyn Backend>,
    pub settings: ChannelSettings,
    pub limiter: SignInLimiter,
    pub templates: crate::web::Templates,
    /// The assistant every conversational channel (chat, voice) asks.
    pub assistant: Arc<crate::assistant::Assistant>,
    /// The chat channel's conversations and rate limit.
    pub chat: crate::assistant::chat::ChatState,
    /// The authorization server for account linking (`crate::oauth`), if the backend has one.
    pub linking: Option<Arc<dyn crate::oauth::AccountLinking>>,
}

impl ChannelState {
    pub fn new(backend: Arc<dyn Backend>, settings: ChannelSettings) -> ChannelState {
        let limiter = SignInLimiter::new(
            settings.sign_in_per_account_per_minute,
            settings.sign_in_per_address_per_minute,
        );
        let assistant = Arc::new(crate::assistant::Assistant::new(
            backend.clone(),
            settings.assistant.clone(),
        ));
        let chat = crate::assistant::chat::ChatState::new(settings.assistant.chat_turns_per_minute);
        ChannelState {
            backend,
            settings,
            limiter,
            templates: crate::web::Templates::new(),
            assistant,
            chat,
            linking: None,
        }
    }

    /// Serves account linking's pages with this authorization server.
    pub fn with_account_linking(
        mut self,
        linking: Arc<dyn crate::oauth::AccountLinking>,
    ) -> ChannelState {
        self.linking = Some(linking);
        self
    }

    /// A cookie with the house flags: HttpOnly, SameSite=Lax, path `/`, Secure when configured.
    pub fn cookie(&self, name: &'static str, value: String, max_age_days: i64) -> Cookie<'static> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.settings.secure_cookies)
            .max_age(CookieDuration::days(max_age_days))
            .finish()
    }

    /// A cookie that removes `name`.
    pub fn removal(&self, name: &'static str) -> Cookie<'static> {
        let mut c = self.cookie(name, String::new(), 0);
        c.make_removal();
        c
    }
}

/// The client's address: the peer, or the first address left of the trusted proxies in
/// `X-Forwarded-For` when the peer is a trusted proxy.
pub fn client_address(req: &HttpRequest, trusted: &[IpAddr]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

/// The request's context: the shopper, how they authenticated, which channel.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub shopper: Shopper,
    /// The session token presented (cookie or bearer), if any and live.
    pub session_token: Option<String>,
    /// Authenticated by `Authorization: Bearer` (an app), not a cookie.
    pub bearer: bool,
    pub channel: Channel,
    pub client: IpAddr,
}

impl RequestContext {
    /// Who an event is about (see [`Shopper::subject`]).
    pub fn subject(&self) -> protocol::Subject {
        self.shopper.subject()
    }

    /// The signed-in customer, or 401.
    pub fn customer(&self) -> Result<protocol::CustomerId, ApiError> {
        self.shopper.customer.ok_or_else(ApiError::unauthorized)
    }

    async fn from_request_parts(req: HttpRequest) -> Result<RequestContext, ApiError> {
        let state = req
            .app_data::<web::Data<ChannelState>>()
            .ok_or_else(|| {
                ApiError::new(
                    actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            })?
            .clone();
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string());
        let is_bearer = bearer.is_some();
        let presented =
            bearer.or_else(|| req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()));
        let mut customer = None;
        let mut session_token = None;
        if let Some(token) = presented.filter(|t| !t.is_empty() && t.len() <= 256) {
            customer = state.backend.session(&token).await;
            if customer.is_some() {
                session_token = Some(token);
            } else if is_bearer {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the bearer token is unknown or expired: sign in again",
                ));
            }
        }
        let basket_token = req
            .headers()
            .get(BASKET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.cookie(BASKET_COOKIE).map(|c| c.value().to_string()))
            .filter(|t| !t.is_empty() && t.len() <= 128);
        let anonymous = req
            .headers()
            .get(ANON_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.cookie(ANON_COOKIE).map(|c| c.value().to_string()))
            .and_then(|v| v.parse::<AnonymousId>().ok());
        let default = if is_bearer || req.headers().contains_key(BASKET_HEADER) {
            Channel::Mobile
        } else {
            Channel::Web
        };
        let channel = shopper_channel(req.headers().get(CHANNEL_HEADER), default)?;
        Ok(RequestContext {
            shopper: crate::backend::Shopper {
                customer,
                basket_token,
                anonymous,
            },
            session_token,
            bearer: is_bearer,
            channel,
            client: client_address(&req, &state.settings.trusted_proxies),
        })
    }
}

/// The channel a shopper's request is priced and recorded for: `X-Channel` when it names
/// `web` or `mobile` (any case), else `default`. Any other value is refused: the shopper API is
/// the web's and the apps', and a header anyone can set must not unlock what is limited to
/// tills and boards — their sales and prices come from the store's edge node, which the hub
/// authenticates.
pub fn shopper_channel(
    header: Option<&header::HeaderValue>,
    default: Channel,
) -> Result<Channel, ApiError> {
    let Some(value) = header else {
        return Ok(default);
    };
    let name = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match name.as_str() {
        "web" => Ok(Channel::Web),
        "mobile" => Ok(Channel::Mobile),
        _ => Err(ApiError::bad_request(
            "invalid_channel",
            format!(
                "X-Channel must be web or mobile (or left out), not '{}': the shopper API serves the web shop and the apps; till (pos) and board prices come from the store's edge node",
                name.chars().take(32).collect::<String>()
            ),
        )),
    }
}

impl FromRequest for RequestContext {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        Box::pin(RequestContext::from_request_parts(req.clone()))
    }
}

/// 128 random bits, hex (for CSRF tokens). Fails only when the OS has no entropy source, and
/// then the request must not go on.
pub fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "the operating system's random source failed");
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is temporarily unavailable: retry shortly",
        )
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let client: IpAddr = "203.0.113.7".parse().expect("ip");
        let from_proxy = TestRequest::default()
            .peer_addr("10.0.0.2:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "198.51.100.1, 203.0.113.7"))
            .to_http_request();
        assert_eq!(
            client_address(&from_proxy, &[proxy]),
            client,
            "the rightmost address left of the trusted proxy"
        );
        assert_eq!(
            client_address(&from_proxy, &[]),
            proxy,
            "an untrusted peer's header is ignored"
        );
        let spoofed = TestRequest::default()
            .peer_addr("192.0.2.9:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "1.2.3.4"))
            .to_http_request();
        assert_eq!(
            client_address(&spoofed, &[proxy]),
            "192.0.2.9".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn the_shopper_channel_is_web_or_mobile_only() {
        let value = |v: &str| header::HeaderValue::from_str(v).expect("header value");
        for (given, expected) in [
            ("web", Channel::Web),
            ("Mobile", Channel::Mobile),
            (" WEB ", Channel::Web),
        ] {
            assert_eq!(
                shopper_channel(Some(&value(given)), Channel::Mobile).ok(),
                Some(expected),
                "{given}"
            );
        }
        assert_eq!(
            shopper_channel(None, Channel::Mobile).ok(),
            Some(Channel::Mobile)
        );
        for refused in ["pos", "POS", "board", "voice", "chat", "hologram", ""] {
            let e = shopper_channel(Some(&value(refused)), Channel::Web)
                .expect_err("only web and mobile");
            assert_eq!(
                (e.status, e.code),
                (actix_web::http::StatusCode::BAD_REQUEST, "invalid_channel"),
                "{refused}"
            );
        }
    }

    #[test]
    fn limiter_counts_per_account_and_per_address() {
        let limiter = SignInLimiter::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(limiter.check("x@example.com", a).is_ok());
        assert!(limiter.check("X@Example.com ", b).is_ok());
        assert!(
            limiter.check("x@example.com", b).is_err(),
            "third try on one account"
        );
        assert!(limiter.check("y@example.com", a).is_ok());
        assert!(
            limiter.check("z@example.com", a).is_ok(),
            "third try from one address"
        );
        assert!(
            limiter.check("w@example.com", a).is_err(),
            "fourth try from one address"
        );
    }
}
