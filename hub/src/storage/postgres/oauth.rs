//! Account linking in PostgreSQL: `oauth_codes`, `oauth_spent` (the grant of a used code or
//! refresh token), `oauth_tokens` and `oauth_grants` (with the active ones indexed by customer).

use super::{db, decode_opt, ulid_from, PgStorage};
use crate::storage::oauth::{OAuthChange, OAuthStore};
use crate::storage::{Result, StorageError};
use async_trait::async_trait;
use protocol::codec;
use protocol::oauth::{OAuthCode, OAuthGrant, OAuthToken};
use protocol::CustomerId;
use sqlx::postgres::PgConnection;
use std::collections::HashMap;
use time::OffsetDateTime;
use ulid::Ulid;

/// Applies one change inside a unit's transaction; a second `Spend` of the same hash fails the
/// unit with `Conflict`.
pub(super) async fn apply(conn: &mut PgConnection, change: &OAuthChange) -> Result<()> {
    let done = match change {
        OAuthChange::PutCode { code_hash, code } => sqlx::query(
            "INSERT INTO oauth_codes (hash, value) VALUES ($1, $2) \
             ON CONFLICT (hash) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(code_hash.to_vec())
        .bind(codec::encode(code)?),
        OAuthChange::DeleteCode { code_hash } => {
            sqlx::query("DELETE FROM oauth_codes WHERE hash = $1").bind(code_hash.to_vec())
        }
        OAuthChange::Spend { hash, grant } => {
            let spent = sqlx::query(
                "INSERT INTO oauth_spent (hash, grant_id) VALUES ($1, $2) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .bind(hash.to_vec())
            .bind(grant.0.to_be_bytes().to_vec())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            if spent.rows_affected() == 0 {
                return Err(StorageError::Conflict(
                    "this code or refresh token was already used".into(),
                ));
            }
            return Ok(());
        }
        OAuthChange::PutGrant(g) => sqlx::query(
            "INSERT INTO oauth_grants (id, customer, active, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET customer = EXCLUDED.customer, \
             active = EXCLUDED.active, value = EXCLUDED.value",
        )
        .bind(g.id.0.to_be_bytes().to_vec())
        .bind(g.customer.to_bytes().to_vec())
        .bind(g.is_active())
        .bind(codec::encode(g)?),
        OAuthChange::PutToken { token_hash, token } => sqlx::query(
            "INSERT INTO oauth_tokens (hash, value) VALUES ($1, $2) \
             ON CONFLICT (hash) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(token_hash.to_vec())
        .bind(codec::encode(token)?),
        OAuthChange::DeleteToken { token_hash } => {
            sqlx::query("DELETE FROM oauth_tokens WHERE hash = $1").bind(token_hash.to_vec())
        }
    };
    done.execute(&mut *conn).await.map_err(db)?;
    Ok(())
}

fn hash_of(raw: &[u8]) -> Option<[u8; 32]> {
    raw.try_into().ok()
}

#[async_trait]
impl OAuthStore for PgStorage {
    async fn oauth_code(&self, code_hash: [u8; 32]) -> Result<Option<OAuthCode>> {
        self.value(
            "SELECT value FROM oauth_codes WHERE hash = $1",
            code_hash.as_slice(),
        )
        .await
    }

    async fn oauth_spent(&self, hash: [u8; 32]) -> Result<Option<Ulid>> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT grant_id FROM oauth_spent WHERE hash = $1")
                .bind(hash.as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(|g| ulid_from(&g)).transpose()
    }

    async fn oauth_token(&self, token_hash: [u8; 32]) -> Result<Option<OAuthToken>> {
        self.value(
            "SELECT value FROM oauth_tokens WHERE hash = $1",
            token_hash.as_slice(),
        )
        .await
    }

    async fn oauth_grant(&self, id: Ulid) -> Result<Option<OAuthGrant>> {
        self.value(
            "SELECT value FROM oauth_grants WHERE id = $1",
            id.0.to_be_bytes().as_slice(),
        )
        .await
    }

    async fn oauth_grants_of(&self, customer: CustomerId) -> Result<Vec<OAuthGrant>> {
        self.values_of(
            "SELECT value FROM oauth_grants WHERE customer = $1 AND active ORDER BY id LIMIT $2",
            customer.to_bytes().as_slice(),
            usize::MAX,
        )
        .await
    }

    /// A scan of the codes, then of the tokens (the purge is periodic and rare).
    async fn oauth_dead(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<OAuthChange>> {
        let mut out = Vec::new();
        let codes: Vec<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT hash, value FROM oauth_codes ORDER BY hash")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        for (hash, value) in codes {
            if out.len() >= limit {
                return Ok(out);
            }
            let code: OAuthCode = codec::decode(&value)?;
            if let (true, Some(code_hash)) = (code.expires_at <= now, hash_of(&hash)) {
                out.push(OAuthChange::DeleteCode { code_hash });
            }
        }
        let tokens: Vec<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT hash, value FROM oauth_tokens ORDER BY hash")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let mut grants: HashMap<Ulid, bool> = HashMap::new();
        for (hash, value) in tokens {
            if out.len() >= limit {
                break;
            }
            let token: OAuthToken = codec::decode(&value)?;
            let active = match grants.get(&token.grant) {
                Some(active) => *active,
                None => {
                    let grant: Option<OAuthGrant> = decode_opt(
                        sqlx::query_scalar("SELECT value FROM oauth_grants WHERE id = $1")
                            .bind(token.grant.0.to_be_bytes().as_slice())
                            .fetch_optional(&self.pool)
                            .await
                            .map_err(db)?,
                    )?;
                    let active = grant.is_some_and(|g| g.is_active());
                    grants.insert(token.grant, active);
                    active
                }
            };
            if let (true, Some(token_hash)) = (token.expires_at <= now || !active, hash_of(&hash)) {
                out.push(OAuthChange::DeleteToken { token_hash });
            }
        }
        Ok(out)
    }
}
