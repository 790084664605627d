//! The rate limit of `POST /oauth/token`: per client id (as presented, so guessing a client's
//! secret is as slow as using it) and per client address (the request's peer, or the address a
//! trusted proxy forwarded). Above either, the endpoint answers 429 with `Retry-After`.

use super::OAuthSettings;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

/// Keys kept per limiter before idle ones are dropped.
const MAX_KEYS: usize = 10_000;

/// The token endpoint's limiters.
pub struct TokenLimiter {
    per_client: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    /// The proxies whose `X-Forwarded-For` is believed (`[channels] trusted_proxies`).
    trusted_proxies: Vec<IpAddr>,
}

impl TokenLimiter {
    pub fn new(settings: &OAuthSettings, trusted_proxies: Vec<IpAddr>) -> TokenLimiter {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        TokenLimiter {
            per_client: RateLimiter::keyed(quota(settings.token_requests_per_client_per_minute)),
            per_address: RateLimiter::keyed(quota(settings.token_requests_per_address_per_minute)),
            trusted_proxies,
        }
    }

    /// The client address of a request.
    pub fn address(&self, req: &actix_web::HttpRequest) -> IpAddr {
        channels::context::client_address(req, &self.trusted_proxies)
    }

    /// Counts one request from `address` (and for `client`, when it names one); `Err(seconds)`
    /// to wait when over a limit.
    pub fn check(&self, client: Option<&str>, address: IpAddr) -> Result<(), u64> {
        if self.per_client.len() > MAX_KEYS {
            self.per_client.retain_recent();
        }
        if self.per_address.len() > MAX_KEYS {
            self.per_address.retain_recent();
        }
        let wait = |n: NotUntil<governor::clock::QuantaInstant>| {
            n.wait_time_from(DefaultClock::default().now()).as_secs() + 1
        };
        self.per_address.check_key(&address).map_err(wait)?;
        match client {
            // Ids are short in practice; a long made-up one is cut so keys stay small.
            Some(id) => self
                .per_client
                .check_key(&id.chars().take(128).collect::<String>())
                .map_err(wait),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_and_each_address_has_its_own_budget() {
        let settings = OAuthSettings {
            token_requests_per_client_per_minute: 2,
            token_requests_per_address_per_minute: 3,
            ..OAuthSettings::default()
        };
        let limiter = TokenLimiter::new(&settings, Vec::new());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(limiter.check(Some("voice"), a), Ok(()));
        assert_eq!(limiter.check(Some("voice"), b), Ok(()));
        // The client's budget is spent, from any address.
        assert!(limiter.check(Some("voice"), b).is_err_and(|s| s >= 1));
        // Another client from a has budget until a's address budget (3) is spent.
        assert_eq!(limiter.check(Some("other"), a), Ok(()));
        assert_eq!(limiter.check(None, a), Ok(()));
        assert!(limiter.check(Some("third"), a).is_err_and(|s| s >= 1));
    }
}
