//! Account linking (OAuth 2.0, the hub as authorization server) as the hub stores it: the grant
//! a customer gave a client app, the short-lived authorization code that starts it, and the
//! access and refresh tokens issued under it. Codes and tokens are stored under the SHA-256 of
//! their value, never the value itself.

use crate::codec::Stored;
use crate::ids::CustomerId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ulid::Ulid;

/// A customer's consent that a client app acts for them (one per completed linking). Every
/// token issued under it dies with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthGrant {
    pub id: Ulid,
    pub client_id: String,
    pub customer: CustomerId,
    /// The scopes consented to.
    pub scope: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set when the customer unlinked the app, the client revoked a token, or a code was
    /// replayed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl OAuthGrant {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

impl Stored for OAuthGrant {
    const KIND: &'static str = "oauth_grant";
    const VERSION: u16 = 1;
}

/// An authorization code: single-use, short-lived, bound to its client and redirect URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthCode {
    /// The grant the code's exchange creates (so a replay can revoke what it issued).
    pub grant: Ulid,
    pub client_id: String,
    pub customer: CustomerId,
    pub redirect_uri: String,
    pub scope: Vec<String>,
    /// PKCE (RFC 7636): the S256 challenge the client sent, if any.
    #[serde(default)]
    pub code_challenge: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Stored for OAuthCode {
    const KIND: &'static str = "oauth_code";
    const VERSION: u16 = 1;
}

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthTokenKind {
    Access,
    Refresh,
}

/// An access or refresh token (stored under its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthToken {
    pub kind: OAuthTokenKind,
    pub grant: Ulid,
    pub client_id: String,
    pub customer: CustomerId,
    pub scope: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Stored for OAuthToken {
    const KIND: &'static str = "oauth_token";
    const VERSION: u16 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn records_round_trip() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let grant = OAuthGrant {
            id: Ulid::new(),
            client_id: "omnihub-voice".into(),
            customer: CustomerId::new(),
            scope: vec!["basket".into(), "orders".into()],
            created_at: at,
            revoked_at: None,
        };
        assert_eq!(
            decode::<OAuthGrant>(&encode(&grant).expect("encodes")).expect("decodes"),
            grant
        );
        let token = OAuthToken {
            kind: OAuthTokenKind::Refresh,
            grant: grant.id,
            client_id: grant.client_id.clone(),
            customer: grant.customer,
            scope: grant.scope.clone(),
            issued_at: at,
            expires_at: at + time::Duration::days(90),
        };
        assert_eq!(
            decode::<OAuthToken>(&encode(&token).expect("encodes")).expect("decodes"),
            token
        );
    }
}
