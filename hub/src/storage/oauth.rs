//! Account linking's records (`crate::oauth`): grants, authorization codes and tokens, each code
//! or token under the SHA-256 of its value. Writes are [`OAuthChange`]s in a
//! [`super::UnitOfWork`] (as [`super::Change::OAuth`]), so a code's exchange spends the code and
//! stores the grant and its tokens all or nothing.

use super::Result;
use async_trait::async_trait;
use protocol::oauth::{OAuthCode, OAuthGrant, OAuthToken};
use protocol::CustomerId;
use time::OffsetDateTime;
use ulid::Ulid;

/// One change of account-linking state.
#[derive(Debug, Clone)]
pub enum OAuthChange {
    PutCode {
        code_hash: [u8; 32],
        code: OAuthCode,
    },
    DeleteCode {
        code_hash: [u8; 32],
    },
    /// Marks a code or refresh token as used, remembering the grant it belonged to; the unit
    /// fails with `Conflict` if it was used before, so each is used once.
    Spend {
        hash: [u8; 32],
        grant: Ulid,
    },
    /// Stores a grant; an active one is listed among its customer's linked apps, a revoked one
    /// no longer.
    PutGrant(OAuthGrant),
    PutToken {
        token_hash: [u8; 32],
        token: OAuthToken,
    },
    DeleteToken {
        token_hash: [u8; 32],
    },
}

/// Reads of account-linking state.
#[async_trait]
pub trait OAuthStore: Send + Sync {
    async fn oauth_code(&self, code_hash: [u8; 32]) -> Result<Option<OAuthCode>>;
    /// The grant of a spent code or refresh token, if it was spent.
    async fn oauth_spent(&self, hash: [u8; 32]) -> Result<Option<Ulid>>;
    async fn oauth_token(&self, token_hash: [u8; 32]) -> Result<Option<OAuthToken>>;
    async fn oauth_grant(&self, id: Ulid) -> Result<Option<OAuthGrant>>;
    /// The customer's active grants, oldest first.
    async fn oauth_grants_of(&self, customer: CustomerId) -> Result<Vec<OAuthGrant>>;
    /// At most `limit` deletions of codes and tokens that can no longer be used at `now`
    /// (expired, or their grant is revoked), for the periodic purge.
    async fn oauth_dead(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<OAuthChange>>;
}
