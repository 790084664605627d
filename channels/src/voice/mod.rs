//! The voice-assistant skill endpoint: `POST /voice/alexa` speaks the Alexa Skills Kit JSON
//! (`LaunchRequest`, `IntentRequest`, `SessionEndedRequest`), verifies every request as the
//! platform prescribes ([`verify`]), turns it into an assistant [`Turn`] on the voice channel
//! and renders the [`crate::assistant::Reply`] as speech, reprompt, card and session attributes
//! ([`intents`]).
//!
//! Identity comes only from account linking: the request's access token is resolved by
//! [`LinkedAccounts`]; without a (known) token the user is unlinked — no customer, and an
//! anonymous id derived from the platform's user id with a keyed hash. Requests are rate
//! limited per linked account (per platform user when unlinked).
//!
//! Entry points: [`configure`] (the route) and [`VoiceState`] (app data the hub registers).

pub mod ask;
pub mod intents;
pub mod settings;
pub mod verify;

#[cfg(test)]
mod tests;

pub use settings::{VoiceDevelopment, VoiceSettings};
pub use verify::{CertFetcher, Clock, Rejection, RequestVerifier, SystemClock};

use crate::assistant::{Conversation, Intent, LinkedAccounts, Turn};
use crate::backend::Shopper;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use ask::{RequestEnvelope, ResponseEnvelope};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use protocol::{AnonymousId, Channel};
use rustls_pki_types::TrustAnchor;
use secrecy::ExposeSecret;
use sha2::Sha256;
use std::num::NonZeroU32;
use std::sync::Arc;

/// The endpoint's path.
pub const PATH: &str = "/voice/alexa";
/// Above the rate limit (still a valid answer for the platform, HTTP 200).
pub const TOO_MANY: &str = "Sorry, there have been too many requests. Please try again shortly.";
/// When the linked account cannot be looked up.
pub const UNAVAILABLE: &str =
    "Sorry, the shop cannot be reached right now. Please try again in a moment.";
/// Keyed rate-limiter entries kept before idle ones are dropped.
const LIMITER_KEYS: usize = 10_000;

/// Registers `POST /voice/alexa`. Needs a `web::Data<VoiceState>` in the app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .app_data(web::PayloadConfig::new(crate::error::MAX_BODY_BYTES))
            .route(web::post().to(alexa)),
    );
}

/// Why the voice endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VoiceSetupError {
    #[error("voice.development.trust_roots_pem {path}: {reason}")]
    TrustRoots { path: String, reason: String },
    #[error("cannot build the certificate fetcher's HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot make the anonymous-id key: {0}")]
    Random(String),
}

/// What the endpoint works with: the assistant, the linked accounts, the verifier and the
/// rate limiter.
pub struct VoiceState {
    conversation: Arc<dyn Conversation>,
    accounts: Arc<dyn LinkedAccounts>,
    verifier: RequestVerifier,
    limiter: DefaultKeyedRateLimiter<String>,
    /// The keyed hash of platform user ids (HMAC-SHA256, keyed once).
    anonymous_mac: Hmac<Sha256>,
}

/// Builds a [`VoiceState`]; the clock, the certificate fetcher and the trust roots default to
/// the system clock, the settings' development overrides or the platform's (https, Mozilla
/// roots).
pub struct VoiceStateBuilder {
    settings: VoiceSettings,
    conversation: Arc<dyn Conversation>,
    accounts: Arc<dyn LinkedAccounts>,
    clock: Option<Arc<dyn Clock>>,
    fetcher: Option<Arc<dyn CertFetcher>>,
    roots: Option<Vec<TrustAnchor<'static>>>,
}

impl VoiceStateBuilder {
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn fetcher(mut self, fetcher: Arc<dyn CertFetcher>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    pub fn trust_roots(mut self, roots: Vec<TrustAnchor<'static>>) -> Self {
        self.roots = Some(roots);
        self
    }

    pub fn build(self) -> Result<VoiceState, VoiceSetupError> {
        let s = &self.settings;
        let dev = &s.development;
        if s.skill_ids.is_empty() {
            tracing::warn!("voice.skill_ids is empty: the voice endpoint refuses every request");
        }
        if !s.verify_signatures {
            tracing::warn!(
                "voice.verify_signatures is off: anyone can post requests to the voice endpoint"
            );
        }
        let roots = match (self.roots, &dev.trust_roots_pem) {
            (Some(roots), _) => roots,
            (None, Some(path)) => {
                tracing::warn!(path = %path.display(), "DEVELOPMENT: voice requests are verified against the trust roots of voice.development.trust_roots_pem, not the platform's");
                let fail = |reason: String| VoiceSetupError::TrustRoots {
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
                verify::trust_roots_from_pem(&pem).map_err(fail)?
            }
            (None, None) => verify::default_trust_roots(),
        };
        let fetcher: Arc<dyn CertFetcher> = match (self.fetcher, &dev.cert_chain_source) {
            (Some(fetcher), _) => fetcher,
            (None, Some(source)) => {
                tracing::warn!(%source, "DEVELOPMENT: voice signing certificates are fetched from voice.development.cert_chain_source, not the platform's URL");
                Arc::new(verify::MappedFetcher::new(source)?)
            }
            (None, None) => Arc::new(verify::HttpsFetcher::new()?),
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let anonymous_key = match &s.anonymous_id_key {
            Some(key) => key.expose_secret().as_bytes().to_vec(),
            None => {
                let mut key = vec![0u8; 32];
                getrandom::getrandom(&mut key)
                    .map_err(|e| VoiceSetupError::Random(e.to_string()))?;
                key
            }
        };
        let anonymous_mac = <Hmac<Sha256> as Mac>::new_from_slice(&anonymous_key)
            .map_err(|e| VoiceSetupError::Random(e.to_string()))?;
        let per_minute = NonZeroU32::new(s.requests_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(VoiceState {
            verifier: RequestVerifier::new(
                s.skill_ids.clone(),
                s.verify_signatures,
                clock,
                fetcher,
                roots,
            ),
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            conversation: self.conversation,
            accounts: self.accounts,
            anonymous_mac,
        })
    }
}

impl VoiceState {
    /// The state for the settings, with the system clock and the settings' certificates.
    pub fn new(
        settings: &VoiceSettings,
        conversation: Arc<dyn Conversation>,
        accounts: Arc<dyn LinkedAccounts>,
    ) -> Result<VoiceState, VoiceSetupError> {
        VoiceState::builder(settings, conversation, accounts).build()
    }

    pub fn builder(
        settings: &VoiceSettings,
        conversation: Arc<dyn Conversation>,
        accounts: Arc<dyn LinkedAccounts>,
    ) -> VoiceStateBuilder {
        VoiceStateBuilder {
            settings: settings.clone(),
            conversation,
            accounts,
            clock: None,
            fetcher: None,
            roots: None,
        }
    }

    /// The answer to a verified request.
    async fn respond(&self, envelope: &RequestEnvelope) -> ResponseEnvelope {
        let request = &envelope.request;
        let intent = match (request.kind.as_str(), &request.intent) {
            ("LaunchRequest", _) => Intent::Welcome,
            ("IntentRequest", Some(body)) => intents::intent_for(body),
            ("IntentRequest", None) => Intent::Unknown { utterance: None },
            // The session is over (or a request type the skill has no use for): the platform
            // takes no speech here.
            _ => return ResponseEnvelope::empty(),
        };
        let user_id = envelope
            .user()
            .map(|u| u.user_id.as_str())
            .unwrap_or_default();
        let shopper = match self.shopper(envelope.access_token(), user_id).await {
            Ok(shopper) => shopper,
            Err(detail) => {
                tracing::error!(%detail, "voice: the linked account could not be looked up");
                return ResponseEnvelope::speak(UNAVAILABLE, true);
            }
        };
        let limit_key = match shopper.customer {
            Some(customer) => format!("customer:{customer}"),
            None => format!("user:{user_id}"),
        };
        if self.limiter.len() > LIMITER_KEYS {
            self.limiter.retain_recent();
        }
        if self.limiter.check_key(&limit_key).is_err() {
            tracing::warn!(linked = shopper.customer.is_some(), "voice: rate limited");
            return ResponseEnvelope::speak(TOO_MANY, true);
        }
        let turn = Turn {
            channel: Channel::Voice,
            shopper,
            intent,
            state: intents::dialog_state(envelope.attributes()),
        };
        intents::render(self.conversation.respond(turn).await)
    }

    /// Who is speaking: the customer of a known access token, else an unlinked user with an
    /// anonymous id of their own. Never a customer id taken from the request itself.
    async fn shopper(&self, token: Option<&str>, user_id: &str) -> Result<Shopper, String> {
        let customer = match token {
            Some(token) => self
                .accounts
                .customer_for_access_token(token)
                .await
                .map_err(|e| e.to_string())?,
            None => None,
        };
        Ok(match customer {
            Some(customer) => Shopper {
                customer: Some(customer),
                ..Shopper::default()
            },
            None => Shopper {
                anonymous: Some(self.anonymous_id(user_id)),
                ..Shopper::default()
            },
        })
    }

    /// The anonymous id of a platform user: a ULID made of the keyed hash of their user id,
    /// the same on every request, and not computable without the key.
    pub fn anonymous_id(&self, user_id: &str) -> AnonymousId {
        let mut mac = self.anonymous_mac.clone();
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        AnonymousId(ulid::Ulid::from_bytes(bytes))
    }
}

/// `POST /voice/alexa`: verify, answer. A refused request is a 400 with a JSON reason.
async fn alexa(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<VoiceState>,
) -> Result<HttpResponse, ApiError> {
    let envelope: RequestEnvelope = serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(error = %e, "voice request refused: not an Alexa Skills Kit request");
        ApiError::bad_request(
            "malformed_request",
            format!("not an Alexa Skills Kit request envelope: {e}"),
        )
    })?;
    if let Err(rejection) = state.verifier.verify(req.headers(), &body, &envelope).await {
        tracing::warn!(code = rejection.code(), reason = %rejection, "voice request refused");
        return Err(ApiError::bad_request(
            rejection.code(),
            rejection.to_string(),
        ));
    }
    Ok(HttpResponse::Ok().json(state.respond(&envelope).await))
}
