//! Account linking as the storefront sees it: the hub is an OAuth 2.0 authorization server
//! (RFC 6749, authorization-code grant) for apps such as the voice skill, and the storefront
//! serves its shopper-facing part — the authorize page (sign in, then consent) and the "Linked
//! apps" section of the account page (`web::oauth`). The protocol itself (clients, codes,
//! tokens) is the hub's, behind [`AccountLinking`]; the token endpoint is the hub's too.

use crate::backend::BackendError;
use async_trait::async_trait;
use protocol::CustomerId;
use serde::Deserialize;
use time::OffsetDateTime;

/// The query of `GET /oauth/authorize` (and the hidden fields of its forms), as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthorizeRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

impl AuthorizeRequest {
    /// The request as query parameters (to come back to the page after signing in).
    pub fn query_pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// What the consent page shows: who asks, and for what, in words.
#[derive(Debug, Clone)]
pub struct Consent {
    pub client_name: String,
    pub permissions: Vec<String>,
}

/// Why an authorization request is not shown a consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeRefusal {
    /// The client or its redirect URI is not known: an error page, never a redirect (it
    /// could send the shopper anywhere).
    Page(String),
    /// A request from a known client that cannot go on: the browser goes back to the client
    /// with this location (its redirect URI with `error=…`).
    Redirect(String),
    /// The hub could not do it right now: retry.
    Unavailable(String),
}

/// An app linked to the customer's account.
#[derive(Debug, Clone)]
pub struct LinkedApp {
    pub client_id: String,
    pub name: String,
    /// When it was first linked.
    pub linked_at: OffsetDateTime,
}

/// The authorization server, as the storefront's pages use it.
#[async_trait]
pub trait AccountLinking: Send + Sync + 'static {
    /// Checks a request and says what to ask the shopper.
    fn consent(&self, request: &AuthorizeRequest) -> Result<Consent, AuthorizeRefusal>;
    /// The shopper's answer: where to send the browser (the client's redirect URI with a code
    /// and the state when allowed, `error=access_denied` when not). The request is checked
    /// again.
    async fn decide(
        &self,
        customer: CustomerId,
        request: &AuthorizeRequest,
        allow: bool,
    ) -> Result<String, AuthorizeRefusal>;
    /// The apps linked to the customer's account.
    async fn linked_apps(&self, customer: CustomerId) -> Result<Vec<LinkedApp>, BackendError>;
    /// Unlinks an app: every token it holds for this customer stops working. Answers how many
    /// links were revoked (0 if it was not linked).
    async fn unlink(&self, customer: CustomerId, client_id: &str) -> Result<usize, BackendError>;
}
