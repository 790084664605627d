//! Account linking: the hub as an OAuth 2.0 authorization server (RFC 6749, authorization-code
//! grant), as voice platforms link a shopper's account to a skill.
//!
//! - The shopper-facing part (the authorize page: sign in, then Allow/Deny; "Linked apps" on
//!   the account page) is the storefront's (`channels::web`), over [`AuthorizationServer`]'s
//!   [`channels::oauth::AccountLinking`].
//! - `POST /oauth/token` (code exchange, refresh with rotation) and `POST /oauth/revoke`
//!   (RFC 7009) are [`routes`].
//! - The voice endpoint resolves the bearer token of each request with
//!   [`channels::assistant::LinkedAccounts`], implemented here by [`VoiceLinks`]: an unknown,
//!   expired or revoked token, or one issued to another client than the skill's, is nobody.
//!
//! Codes and tokens are 32 random bytes (URL-safe base64), stored only as SHA-256 hashes
//! (`crate::storage::oauth`), and never logged. A code is single-use; presenting it again
//! revokes the grant it created, so the tokens issued from it stop working. A refresh token is
//! single-use too (rotation): presenting one that was already rotated revokes its whole grant
//! (RFC 6819 §5.2.2.3, OAuth 2.1 §4.3.1), since one of the two parties holding it is not the
//! client. `/oauth/token` is rate-limited per client and per client address ([`limit`]), and
//! [`purge`] deletes codes and tokens that can no longer be used.

pub mod limit;
pub mod purge;
pub mod routes;

use crate::auth::{random_token, token_hash};
use crate::clock::Clock;
use crate::storage::oauth::{OAuthChange, OAuthStore};
use crate::storage::{Change, Committer, StorageError, UnitOfWork};
use async_trait::async_trait;
use base64::Engine;
use channels::oauth::{AccountLinking, AuthorizeRefusal, AuthorizeRequest, Consent, LinkedApp};
use channels::BackendError;
use protocol::oauth::{OAuthCode, OAuthGrant, OAuthToken, OAuthTokenKind};
use protocol::CustomerId;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use ulid::Ulid;

/// The demo's voice skill client (`omnihub demo`; the voice simulator links with it).
pub const DEMO_VOICE_CLIENT_ID: &str = "omnihub-voice";
pub const DEMO_VOICE_CLIENT_SECRET: &str = "omnihub-demo-voice-secret";
/// Where the demo's voice simulator receives the code (it reads the redirect, nothing listens).
pub const DEMO_VOICE_REDIRECT_URI: &str = "http://127.0.0.1:8207/oauth/callback";

/// The scopes a client may ask for, and how the consent page words them.
pub const SCOPES: &[(&str, &str)] = &[
    ("basket", "see your basket and add to your basket"),
    ("orders", "see your orders and where they are"),
];

/// The longest `state` accepted (voice platforms send a few hundred characters).
const MAX_STATE_CHARS: usize = 2048;

/// `[oauth]`: the apps that may link shoppers' accounts, and how long what they get lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthSettings {
    /// The registered clients (`[[oauth.clients]]`); none: nothing can link.
    pub clients: Vec<OAuthClientSettings>,
    /// How long an access token works, e.g. `1h`.
    #[serde(deserialize_with = "crate::config::human")]
    pub access_token_lifetime: Duration,
    /// How long a refresh token works if unused, e.g. `90days`.
    #[serde(deserialize_with = "crate::config::human")]
    pub refresh_token_lifetime: Duration,
    /// How long an authorization code may wait for its exchange, e.g. `5m`.
    #[serde(deserialize_with = "crate::config::human")]
    pub code_lifetime: Duration,
    /// Requests to `/oauth/token` per minute per client id (as presented, before it is
    /// authenticated: so guessing a secret is slow too); above it, 429 with `Retry-After`.
    pub token_requests_per_client_per_minute: u32,
    /// Requests to `/oauth/token` per minute per client address.
    pub token_requests_per_address_per_minute: u32,
    /// How often expired codes and tokens (and those of revoked grants) are deleted, e.g. `1h`.
    #[serde(deserialize_with = "crate::config::human")]
    pub purge_every: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings {
            clients: Vec::new(),
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(90 * 24 * 3600),
            code_lifetime: Duration::from_secs(300),
            token_requests_per_client_per_minute: 120,
            token_requests_per_address_per_minute: 60,
            purge_every: Duration::from_secs(3600),
        }
    }
}

/// One client app (a confidential client: it authenticates with its secret).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientSettings {
    pub client_id: String,
    /// Shown to the shopper: "Omnihub Voice wants to …".
    pub name: String,
    /// Never logged (`secrecy` redacts it in `Debug`).
    pub client_secret: SecretString,
    /// The exact redirect URIs the client may use (no prefix or pattern matching).
    pub redirect_uris: Vec<String>,
    /// The scopes it may get (see [`SCOPES`]); asking for none gets all of these.
    #[serde(default = "all_scopes")]
    pub scopes: Vec<String>,
}

fn all_scopes() -> Vec<String> {
    SCOPES.iter().map(|(s, _)| s.to_string()).collect()
}

impl OAuthSettings {
    /// The demo's settings: the voice skill with the voice platform's redirect URIs and the
    /// simulator's.
    pub fn demo_toml() -> String {
        format!(
            "\n# The demo's voice skill may link shoppers' accounts (docs/voice.md).\n[[oauth.clients]]\n\
             client_id = \"{DEMO_VOICE_CLIENT_ID}\"\nname = \"Omnihub Voice\"\n\
             client_secret = \"{DEMO_VOICE_CLIENT_SECRET}\"\nredirect_uris = [\n  \
             \"https://pitangui.amazon.com/api/skill/link/M2AAAAAAAAAAAA\",\n  \
             \"https://layla.amazon.com/api/skill/link/M2AAAAAAAAAAAA\",\n  \
             \"https://alexa.amazon.co.jp/api/skill/link/M2AAAAAAAAAAAA\",\n  \
             \"{DEMO_VOICE_REDIRECT_URI}\",\n]\n"
        )
    }

    /// Refuses clients that cannot work: empty or repeated ids, empty secrets, redirect URIs
    /// that are not absolute `https` URLs (plain `http` only on loopback) or carry a fragment,
    /// unknown scopes, lifetimes of zero.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.clients {
            let id = c.client_id.as_str();
            if id.trim().is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
                return Err("a client_id must be 1 to 128 printable characters".into());
            }
            if !seen.insert(id) {
                return Err(format!("client '{id}' is listed twice"));
            }
            if c.name.trim().is_empty() {
                return Err(format!("client '{id}': give it a name shoppers recognise"));
            }
            if c.client_secret.expose_secret().len() < 16 {
                return Err(format!(
                    "client '{id}': client_secret must have at least 16 characters"
                ));
            }
            if c.redirect_uris.is_empty() {
                return Err(format!("client '{id}': list at least one redirect_uri"));
            }
            for uri in &c.redirect_uris {
                check_redirect_uri(uri).map_err(|e| format!("client '{id}': {e}"))?;
            }
            if let Some(s) = c.scopes.iter().find(|s| scope_words(s).is_none()) {
                return Err(format!(
                    "client '{id}': unknown scope '{s}' (known: basket, orders)"
                ));
            }
        }
        let zero = [
            ("access_token_lifetime", self.access_token_lifetime),
            ("refresh_token_lifetime", self.refresh_token_lifetime),
            ("code_lifetime", self.code_lifetime),
            ("purge_every", self.purge_every),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be more than 0"));
        }
        let rates = [
            (
                "token_requests_per_client_per_minute",
                self.token_requests_per_client_per_minute,
            ),
            (
                "token_requests_per_address_per_minute",
                self.token_requests_per_address_per_minute,
            ),
        ];
        if let Some((name, _)) = rates.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{name} must be more than 0"));
        }
        Ok(())
    }
}

fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let parsed =
        url::Url::parse(uri).map_err(|e| format!("redirect_uri '{uri}' is not a URL: {e}"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let scheme_ok = parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback);
    if !scheme_ok {
        return Err(format!(
            "redirect_uri '{uri}' must be https (http only on 127.0.0.1 or localhost)"
        ));
    }
    if parsed.fragment().is_some() {
        return Err(format!("redirect_uri '{uri}' must not have a #fragment"));
    }
    Ok(())
}

fn scope_words(scope: &str) -> Option<&'static str> {
    SCOPES
        .iter()
        .find(|(s, _)| *s == scope)
        .map(|(_, words)| *words)
}

/// RFC 6749 §5.2's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// Storage failed (RFC 6749 §4.1.2.1's `server_error`, used at the token endpoint too).
    ServerError,
}

/// A refused token or revocation request: the code and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
}

impl OAuthError {
    fn new(code: ErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
        }
    }

    fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidGrant, description)
    }
}

impl From<StorageError> for OAuthError {
    fn from(e: StorageError) -> OAuthError {
        tracing::error!(error = %e, "account linking storage failed");
        OAuthError::new(
            ErrorCode::ServerError,
            "the service is temporarily unavailable: retry shortly",
        )
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    /// Leaves the tokens out, so they never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An authorization request that passed the checks.
struct Checked<'a> {
    client: &'a OAuthClientSettings,
    redirect_uri: String,
    scope: Vec<String>,
    state: Option<String>,
    code_challenge: Option<String>,
}

/// The authorization server: clients from `[oauth]`, state in storage, time from the clock.
pub struct AuthorizationServer {
    settings: OAuthSettings,
    store: Arc<dyn OAuthStore>,
    committer: Arc<dyn Committer>,
    clock: Arc<dyn Clock>,
}

impl AuthorizationServer {
    /// Checks the settings (see [`OAuthSettings::check`]).
    pub fn new(
        settings: OAuthSettings,
        store: Arc<dyn OAuthStore>,
        committer: Arc<dyn Committer>,
        clock: Arc<dyn Clock>,
    ) -> Result<AuthorizationServer, String> {
        settings.check()?;
        Ok(AuthorizationServer {
            settings,
            store,
            committer,
            clock,
        })
    }

    fn client(&self, client_id: &str) -> Option<&OAuthClientSettings> {
        self.settings
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
    }

    /// The client whose id and secret these are; secrets compare in constant time (as
    /// SHA-256 digests, so their lengths do not show either).
    pub fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<&OAuthClientSettings, OAuthError> {
        use subtle::ConstantTimeEq;
        let refused = || {
            OAuthError::new(
                ErrorCode::InvalidClient,
                "client authentication failed: check client_id and client_secret",
            )
        };
        let client = self.client(client_id).ok_or_else(refused)?;
        let expected = Sha256::digest(client.client_secret.expose_secret().as_bytes());
        let presented = Sha256::digest(secret.as_bytes());
        if bool::from(expected.ct_eq(&presented)) {
            Ok(client)
        } else {
            Err(refused())
        }
    }

    /// Checks an authorization request in RFC 6749 §4.1.2.1's order: the client and redirect
    /// URI first (refused with a page), then the rest (refused back to the client).
    fn check_request<'a>(
        &'a self,
        request: &AuthorizeRequest,
    ) -> Result<Checked<'a>, AuthorizeRefusal> {
        let page = |m: &str| AuthorizeRefusal::Page(m.to_string());
        let client_id = request
            .client_id
            .as_deref()
            .ok_or_else(|| page("The link has no client_id: start linking again from the app."))?;
        let client = self.client(client_id).ok_or_else(|| {
            page("This app is not registered with the shop: start linking again from the app, or ask its maker.")
        })?;
        let redirect_uri = request.redirect_uri.as_deref().ok_or_else(|| {
            page("The link has no redirect_uri: start linking again from the app.")
        })?;
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
            return Err(page("The link sends you back to an address this app did not register, so we stopped here. Start linking again from the app."));
        }
        let back = |error: &str, description: &str| {
            AuthorizeRefusal::Redirect(error_location(
                redirect_uri,
                error,
                description,
                request.state.as_deref(),
            ))
        };
        if request.response_type.as_deref() != Some("code") {
            return Err(back(
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        if request
            .state
            .as_ref()
            .is_some_and(|s| s.chars().count() > MAX_STATE_CHARS)
        {
            return Err(back(
                "invalid_request",
                "state is too long (at most 2048 characters)",
            ));
        }
        let asked: Vec<String> = request
            .scope
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if let Some(s) = asked.iter().find(|s| !client.scopes.contains(s)) {
            let description = format!(
                "scope '{}' is not available to this client (it may ask for: {})",
                s.chars().take(64).collect::<String>(),
                client.scopes.join(" ")
            );
            return Err(back("invalid_scope", &description));
        }
        let mut scope = if asked.is_empty() {
            client.scopes.clone()
        } else {
            asked
        };
        scope.sort();
        scope.dedup();
        let code_challenge = match (
            request.code_challenge.as_deref(),
            request.code_challenge_method.as_deref(),
        ) {
            (None, None) => None,
            (Some(challenge), Some("S256")) if is_pkce_value(challenge) => {
                Some(challenge.to_string())
            }
            (Some(_), Some("S256")) => {
                return Err(back(
                    "invalid_request",
                    "code_challenge must be 43 to 128 characters of base64url",
                ))
            }
            (None, Some(_)) => {
                return Err(back(
                    "invalid_request",
                    "code_challenge_method was sent without code_challenge",
                ))
            }
            (Some(_), _) => {
                return Err(back(
                    "invalid_request",
                    "code_challenge_method must be S256 (plain is not supported)",
                ))
            }
        };
        Ok(Checked {
            client,
            redirect_uri: redirect_uri.to_string(),
            scope,
            state: request.state.clone(),
            code_challenge,
        })
    }

    /// Tokens for a grant: the token records (to store) and the response (to send).
    fn issue(&self, grant: &OAuthGrant, now: OffsetDateTime) -> Result<Issued, OAuthError> {
        let random = || {
            random_token(32).map_err(|_| {
                OAuthError::new(ErrorCode::ServerError, "no randomness: retry shortly")
            })
        };
        let (access, refresh) = (random()?, random()?);
        let record = |kind, lifetime: Duration| OAuthToken {
            kind,
            grant: grant.id,
            client_id: grant.client_id.clone(),
            customer: grant.customer,
            scope: grant.scope.clone(),
            issued_at: now,
            expires_at: now + lifetime,
        };
        let changes = vec![
            Change::OAuth(OAuthChange::PutToken {
                token_hash: token_hash(&access),
                token: record(OAuthTokenKind::Access, self.settings.access_token_lifetime),
            }),
            Change::OAuth(OAuthChange::PutToken {
                token_hash: token_hash(&refresh),
                token: record(
                    OAuthTokenKind::Refresh,
                    self.settings.refresh_token_lifetime,
                ),
            }),
        ];
        Ok(Issued {
            changes,
            response: TokenResponse {
                access_token: access,
                token_type: "Bearer",
                expires_in: self.settings.access_token_lifetime.as_secs(),
                refresh_token: refresh,
                scope: grant.scope.join(" "),
            },
        })
    }

    /// `grant_type=authorization_code`: a code for tokens, once.
    pub async fn exchange_code(
        &self,
        client: &OAuthClientSettings,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let hash = token_hash(code);
        if let Some(grant) = self.store.oauth_spent(hash).await? {
            self.revoke_grants(&[grant]).await?;
            tracing::warn!(client = %client.client_id, %grant, "authorization code replayed: its grant is revoked");
            return Err(OAuthError::invalid_grant(
                "this code was already used; the tokens issued for it are revoked",
            ));
        }
        let record = self
            .store
            .oauth_code(hash)
            .await?
            .ok_or_else(|| OAuthError::invalid_grant("unknown authorization code"))?;
        if record.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "this code was issued to another client",
            ));
        }
        let Some(redirect_uri) = redirect_uri else {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "redirect_uri is required: send the one the authorization request used",
            ));
        };
        if redirect_uri != record.redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        if now >= record.expires_at {
            return Err(OAuthError::invalid_grant(
                "the authorization code has expired: link again",
            ));
        }
        check_pkce(record.code_challenge.as_deref(), code_verifier)?;
        let grant = OAuthGrant {
            id: record.grant,
            client_id: record.client_id.clone(),
            customer: record.customer,
            scope: record.scope.clone(),
            created_at: now,
            revoked_at: None,
        };
        let issued = self.issue(&grant, now)?;
        let mut unit = UnitOfWork::new()
            .with(Change::OAuth(OAuthChange::Spend {
                hash,
                grant: grant.id,
            }))
            .with(Change::OAuth(OAuthChange::DeleteCode { code_hash: hash }))
            .with(Change::OAuth(OAuthChange::PutGrant(grant.clone())));
        unit.changes.extend(issued.changes);
        match self.committer.commit(unit).await {
            Ok(()) => {
                tracing::info!(client = %client.client_id, grant = %grant.id, "account linked");
                Ok(issued.response)
            }
            // Exchanged at the same moment by another request: a replay as well.
            Err(StorageError::Conflict(_)) => {
                self.revoke_grants(&[grant.id]).await?;
                Err(OAuthError::invalid_grant(
                    "this code was already used; the tokens issued for it are revoked",
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `grant_type=refresh_token`: new tokens for a refresh token, which stops working
    /// (rotation). `scope`, if sent, may only narrow the grant's.
    pub async fn refresh(
        &self,
        client: &OAuthClientSettings,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let hash = token_hash(refresh_token);
        let unknown =
            || OAuthError::invalid_grant("unknown, used, expired or revoked refresh token");
        if let Some(grant) = self.store.oauth_spent(hash).await? {
            return Err(self.refresh_reused(client, grant).await?);
        }
        let token = self.store.oauth_token(hash).await?.ok_or_else(unknown)?;
        if token.kind != OAuthTokenKind::Refresh || now >= token.expires_at {
            return Err(unknown());
        }
        if token.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "this refresh token was issued to another client",
            ));
        }
        let mut grant = self
            .store
            .oauth_grant(token.grant)
            .await?
            .filter(|g| g.is_active() && g.customer == token.customer)
            .ok_or_else(unknown)?;
        if let Some(asked) = scope {
            let mut narrowed: Vec<String> = asked.split_whitespace().map(str::to_string).collect();
            if let Some(s) = narrowed.iter().find(|s| !token.scope.contains(s)) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    format!(
                        "scope '{}' was not granted (granted: {})",
                        s.chars().take(64).collect::<String>(),
                        token.scope.join(" ")
                    ),
                ));
            }
            narrowed.sort();
            narrowed.dedup();
            if !narrowed.is_empty() {
                grant.scope = narrowed;
            }
        }
        let issued = self.issue(&grant, now)?;
        let mut unit = UnitOfWork::new()
            .with(Change::OAuth(OAuthChange::Spend {
                hash,
                grant: grant.id,
            }))
            .with(Change::OAuth(OAuthChange::DeleteToken { token_hash: hash }));
        unit.changes.extend(issued.changes);
        match self.committer.commit(unit).await {
            Ok(()) => Ok(issued.response),
            // Rotated at the same moment by another request: a reuse as well.
            Err(StorageError::Conflict(_)) => Err(self.refresh_reused(client, grant.id).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// A refresh token presented after it was rotated: either the client or an attacker holds
    /// a stolen copy, and the hub cannot tell which, so the whole grant is revoked (every
    /// token issued under it stops working; the shopper links again). Answers the error to send.
    async fn refresh_reused(
        &self,
        client: &OAuthClientSettings,
        grant: Ulid,
    ) -> Result<OAuthError, StorageError> {
        let revoked = self.revoke_grants(&[grant]).await?;
        tracing::warn!(client = %client.client_id, %grant, revoked, "refresh token reused: its grant is revoked");
        Ok(OAuthError::invalid_grant(
            "this refresh token was already used; every token of this link is revoked: link the account again",
        ))
    }

    /// Deletes codes and tokens that can no longer be used (expired, or of a revoked grant),
    /// `batch` at a time until none is left; answers how many went.
    pub async fn purge(&self, batch: usize) -> Result<usize, StorageError> {
        let mut purged = 0;
        loop {
            let dead = self.store.oauth_dead(self.clock.now(), batch).await?;
            if dead.is_empty() {
                return Ok(purged);
            }
            purged += dead.len();
            let last = dead.len() < batch;
            let mut unit = UnitOfWork::new();
            unit.changes.extend(dead.into_iter().map(Change::OAuth));
            self.committer.commit(unit).await?;
            if last {
                return Ok(purged);
            }
        }
    }

    /// How often [`Self::purge`] runs.
    pub fn purge_every(&self) -> Duration {
        self.settings.purge_every
    }

    /// The customer an access token issued to `client_id` works for now, if it was granted
    /// every one of `scopes` (the voice skill accepts only its own client's tokens).
    pub async fn customer_for_client(
        &self,
        token: &str,
        client_id: &str,
        scopes: &[&str],
    ) -> Result<Option<CustomerId>, StorageError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        match self.store.oauth_token(token_hash(token)).await? {
            Some(record) if record.client_id == client_id => {
                self.customer_with_scopes(token, scopes).await
            }
            _ => Ok(None),
        }
    }

    /// RFC 7009: the client revokes one of its tokens, and with it the whole link (its access
    /// and refresh tokens). An unknown token is fine (already gone).
    pub async fn revoke(
        &self,
        client: &OAuthClientSettings,
        token: &str,
    ) -> Result<(), OAuthError> {
        let Some(record) = self.store.oauth_token(token_hash(token)).await? else {
            return Ok(());
        };
        if record.client_id != client.client_id {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this token was issued to another client",
            ));
        }
        self.revoke_grants(&[record.grant]).await?;
        tracing::info!(client = %client.client_id, grant = %record.grant, "link revoked by the client");
        Ok(())
    }

    /// Revokes the grants that are still active, in one unit; answers how many were.
    async fn revoke_grants(&self, ids: &[Ulid]) -> Result<usize, StorageError> {
        let now = self.clock.now();
        let mut unit = UnitOfWork::new();
        for id in ids {
            if let Some(mut grant) = self.store.oauth_grant(*id).await? {
                if grant.is_active() {
                    grant.revoked_at = Some(now);
                    unit.changes
                        .push(Change::OAuth(OAuthChange::PutGrant(grant)));
                }
            }
        }
        let revoked = unit.changes.len();
        if revoked > 0 {
            self.committer.commit(unit).await?;
        }
        Ok(revoked)
    }

    /// Revokes every link the customer has (erasure of their data): no app acts for them again.
    pub async fn revoke_all_of(&self, customer: CustomerId) -> Result<usize, StorageError> {
        let grants: Vec<Ulid> = self
            .store
            .oauth_grants_of(customer)
            .await?
            .into_iter()
            .filter(|g| g.customer == customer)
            .map(|g| g.id)
            .collect();
        self.revoke_grants(&grants).await
    }

    /// The customer an access token works for now, if any.
    pub async fn customer_for(&self, token: &str) -> Result<Option<CustomerId>, StorageError> {
        self.customer_with_scopes(token, &[]).await
    }

    /// The customer an access token works for now, if it was granted every one of `scopes`.
    pub async fn customer_with_scopes(
        &self,
        token: &str,
        scopes: &[&str],
    ) -> Result<Option<CustomerId>, StorageError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let Some(record) = self.store.oauth_token(token_hash(token)).await? else {
            return Ok(None);
        };
        if record.kind != OAuthTokenKind::Access || self.clock.now() >= record.expires_at {
            return Ok(None);
        }
        if !scopes
            .iter()
            .all(|wanted| record.scope.iter().any(|s| s == wanted))
        {
            return Ok(None);
        }
        let grant = self.store.oauth_grant(record.grant).await?;
        Ok(grant
            .filter(|g| g.is_active() && g.customer == record.customer)
            .map(|g| g.customer))
    }
}

/// What [`AuthorizationServer::issue`] makes.
struct Issued {
    changes: Vec<Change>,
    response: TokenResponse,
}

/// Whether a PKCE challenge or verifier has the form RFC 7636 §4.1 gives: 43 to 128
/// characters of `[A-Za-z0-9-._~]`.
fn is_pkce_value(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// RFC 7636 §4.6: with a challenge, the verifier must hash (S256) to it; without one, no
/// verifier may be sent.
fn check_pkce(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(OAuthError::invalid_grant(
            "code_verifier was sent, but the authorization request had no code_challenge",
        )),
        (Some(_), None) => Err(OAuthError::invalid_grant(
            "code_verifier is required: the authorization request had a code_challenge",
        )),
        (Some(challenge), Some(verifier)) => {
            use subtle::ConstantTimeEq;
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            let matches: bool = computed.as_bytes().ct_eq(challenge.as_bytes()).into();
            if is_pkce_value(verifier) && matches {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ))
            }
        }
    }
}

/// The client's redirect URI with these query parameters added.
fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            url.to_string()
        }
        // Registered URIs are checked at start-up, so this is not reached.
        Err(_) => redirect_uri.to_string(),
    }
}

fn error_location(
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> String {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    with_params(redirect_uri, &params)
}

fn unavailable(e: StorageError) -> AuthorizeRefusal {
    AuthorizeRefusal::Unavailable(e.to_string())
}

#[async_trait]
impl AccountLinking for AuthorizationServer {
    fn consent(&self, request: &AuthorizeRequest) -> Result<Consent, AuthorizeRefusal> {
        let checked = self.check_request(request)?;
        Ok(Consent {
            client_name: checked.client.name.clone(),
            permissions: checked
                .scope
                .iter()
                .filter_map(|s| scope_words(s))
                .map(str::to_string)
                .collect(),
        })
    }

    async fn decide(
        &self,
        customer: CustomerId,
        request: &AuthorizeRequest,
        allow: bool,
    ) -> Result<String, AuthorizeRefusal> {
        let checked = self.check_request(request)?;
        if !allow {
            return Ok(error_location(
                &checked.redirect_uri,
                "access_denied",
                "the shopper did not allow linking",
                checked.state.as_deref(),
            ));
        }
        let code = random_token(32).map_err(|e| AuthorizeRefusal::Unavailable(e.to_string()))?;
        let record = OAuthCode {
            grant: Ulid::new(),
            client_id: checked.client.client_id.clone(),
            customer,
            redirect_uri: checked.redirect_uri.clone(),
            scope: checked.scope,
            code_challenge: checked.code_challenge,
            expires_at: self.clock.now() + self.settings.code_lifetime,
        };
        let unit = UnitOfWork::new().with(Change::OAuth(OAuthChange::PutCode {
            code_hash: token_hash(&code),
            code: record,
        }));
        self.committer.commit(unit).await.map_err(unavailable)?;
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = checked.state.as_deref() {
            params.push(("state", state));
        }
        Ok(with_params(&checked.redirect_uri, &params))
    }

    async fn linked_apps(&self, customer: CustomerId) -> Result<Vec<LinkedApp>, BackendError> {
        let grants = self
            .store
            .oauth_grants_of(customer)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        Ok(grants
            .into_iter()
            .filter(OAuthGrant::is_active)
            .map(|g| LinkedApp {
                name: self
                    .client(&g.client_id)
                    .map_or_else(|| g.client_id.clone(), |c| c.name.clone()),
                client_id: g.client_id,
                linked_at: g.created_at,
            })
            .collect())
    }

    async fn unlink(&self, customer: CustomerId, client_id: &str) -> Result<usize, BackendError> {
        let unavailable = |e: StorageError| BackendError::Unavailable(e.to_string());
        let grants: Vec<Ulid> = self
            .store
            .oauth_grants_of(customer)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|g| g.client_id == client_id && g.customer == customer)
            .map(|g| g.id)
            .collect();
        let revoked = self.revoke_grants(&grants).await.map_err(unavailable)?;
        if revoked > 0 {
            tracing::info!(client = %client_id, revoked, "app unlinked by the shopper");
        }
        Ok(revoked)
    }
}

/// The accounts linked to the voice skill: access tokens issued to the skill's own client
/// (`[voice] link_client_id`), granted the basket and the orders. A token another client app
/// got for the same shopper is nobody to the skill.
pub struct VoiceLinks {
    pub server: Arc<AuthorizationServer>,
    pub client_id: String,
}

/// What the assistant needs of a linked account: it reads the basket and the orders, so a
/// token granted less is not linked for it (the shopper is asked to link again).
pub const VOICE_SCOPES: [&str; 2] = ["basket", "orders"];

#[async_trait]
impl channels::assistant::LinkedAccounts for VoiceLinks {
    async fn customer_for_access_token(
        &self,
        token: &str,
    ) -> Result<Option<CustomerId>, BackendError> {
        self.server
            .customer_for_client(token, &self.client_id, &VOICE_SCOPES)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_follows_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(check_pkce(Some(challenge), Some(verifier)), Ok(()));
        let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK";
        assert!(check_pkce(Some(challenge), Some(wrong)).is_err());
        assert!(check_pkce(Some(challenge), None).is_err());
        assert!(check_pkce(None, Some(verifier)).is_err());
        assert_eq!(check_pkce(None, None), Ok(()));
    }

    #[test]
    fn settings_refuse_clients_that_cannot_work() {
        let client = |uri: &str| OAuthClientSettings {
            client_id: "voice".into(),
            name: "Voice".into(),
            client_secret: "a-secret-of-enough-length".to_string().into(),
            redirect_uris: vec![uri.into()],
            scopes: all_scopes(),
        };
        let with = |c: OAuthClientSettings| OAuthSettings {
            clients: vec![c],
            ..OAuthSettings::default()
        };
        assert_eq!(
            with(client("https://pitangui.amazon.com/x")).check(),
            Ok(())
        );
        assert_eq!(with(client("http://127.0.0.1:8207/cb")).check(), Ok(()));
        for bad in [
            "http://example.com/cb",
            "not a url",
            "https://a.example/cb#frag",
        ] {
            assert!(with(client(bad)).check().is_err(), "{bad}");
        }
        let mut short = client("https://a.example/cb");
        short.client_secret = "short".to_string().into();
        assert!(with(short).check().is_err());
        let mut scoped = client("https://a.example/cb");
        scoped.scopes = vec!["payments".into()];
        assert!(with(scoped).check().is_err());
        let twice = OAuthSettings {
            clients: vec![
                client("https://a.example/cb"),
                client("https://a.example/cb"),
            ],
            ..OAuthSettings::default()
        };
        assert!(twice.check().is_err_and(|e| e.contains("twice")));
        let debug = format!("{:?}", client("https://a.example/cb"));
        assert!(!debug.contains("a-secret-of-enough-length"), "{debug}");
    }

    #[test]
    fn the_demo_settings_parse_and_pass_the_checks() {
        use figment::providers::{Format, Toml};
        let oauth: OAuthSettings =
            figment::Figment::from(Toml::string(&OAuthSettings::demo_toml()))
                .extract_inner("oauth")
                .expect("valid settings");
        assert_eq!(oauth.check(), Ok(()));
        assert_eq!(oauth.clients[0].client_id, DEMO_VOICE_CLIENT_ID);
        assert!(oauth.clients[0]
            .redirect_uris
            .iter()
            .any(|u| u == DEMO_VOICE_REDIRECT_URI));
    }

    #[test]
    fn redirects_keep_the_uris_own_query() {
        assert_eq!(
            with_params(
                "https://a.example/cb?x=1",
                &[("code", "abc"), ("state", "s p")]
            ),
            "https://a.example/cb?x=1&code=abc&state=s+p"
        );
    }
}
