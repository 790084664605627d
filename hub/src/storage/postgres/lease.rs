//! Shard leases with fencing tokens (`shard_leases`).
//!
//! A node acquires a shard's lease for a while and renews it before it runs out. Every
//! acquisition increments the shard's `token` (the row is never deleted, so tokens never go
//! back), and the node puts its token into each [`crate::storage::UnitOfWork`] it commits for an
//! entity of that shard. The commit share-locks the lease row first and is refused with
//! [`StorageError::Fenced`] unless the token is the shard's current one and the lease has not
//! expired. The share lock makes the check hold until commit: a takeover (an `UPDATE` of the
//! row) waits for units in flight, and units after it see the new token. So a node that lost
//! its lease (expired while it was partitioned or paused, then taken over) can never commit
//! again with its old token. Times are the database's clock (`now()`), never a node's.

use super::{db, PgStorage};
use crate::storage::{FencingToken, Result, StorageError};
use sqlx::postgres::PgConnection;
use std::time::Duration;

fn millis(ttl: Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

fn shard_key(shard: u64) -> Result<i64> {
    i64::try_from(shard).map_err(|_| StorageError::Io(format!("shard {shard} is out of range")))
}

fn token_of(shard: u64, token: i64) -> FencingToken {
    FencingToken {
        shard,
        token: u64::try_from(token).unwrap_or(0),
    }
}

impl PgStorage {
    /// Takes `shard`'s lease for `owner` (a node id) for `ttl`, if it is free, expired, or
    /// already `owner`'s; answers the new fencing token (greater than every earlier one of the
    /// shard), or `None` while another owner holds an unexpired lease.
    pub async fn acquire_lease(
        &self,
        shard: u64,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<FencingToken>> {
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO shard_leases AS l (shard, owner, token, expires_at) \
             VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (shard) DO UPDATE SET owner = EXCLUDED.owner, token = l.token + 1, \
             expires_at = EXCLUDED.expires_at \
             WHERE l.expires_at <= now() OR l.owner = EXCLUDED.owner \
             RETURNING token",
        )
        .bind(shard_key(shard)?)
        .bind(owner)
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(token.map(|t| token_of(shard, t)))
    }

    /// Extends the lease of `token` by `ttl` from now; `Fenced` if the shard was acquired
    /// since (by another node, or again by this one).
    pub async fn renew_lease(&self, token: FencingToken, ttl: Duration) -> Result<()> {
        let renewed = sqlx::query(
            "UPDATE shard_leases SET expires_at = now() + $3 * interval '1 millisecond' \
             WHERE shard = $1 AND token = $2",
        )
        .bind(shard_key(token.shard)?)
        .bind(i64::try_from(token.token).unwrap_or(-1))
        .bind(millis(ttl))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if renewed == 0 {
            return Err(StorageError::Fenced);
        }
        Ok(())
    }

    /// Extends every lease of `tokens` by `ttl` from now, in one statement; answers the shards
    /// renewed. A shard left out was acquired since (its token is no longer current).
    pub async fn renew_leases(&self, tokens: &[FencingToken], ttl: Duration) -> Result<Vec<u64>> {
        let mut shards = Vec::with_capacity(tokens.len());
        let mut numbers = Vec::with_capacity(tokens.len());
        for t in tokens {
            shards.push(shard_key(t.shard)?);
            numbers.push(i64::try_from(t.token).unwrap_or(-1));
        }
        let renewed: Vec<i64> = sqlx::query_scalar(
            "UPDATE shard_leases AS l SET expires_at = now() + $3 * interval '1 millisecond' \
             FROM unnest($1::bigint[], $2::bigint[]) AS t(shard, token) \
             WHERE l.shard = t.shard AND l.token = t.token RETURNING l.shard",
        )
        .bind(&shards)
        .bind(&numbers)
        .bind(millis(ttl))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(renewed
            .into_iter()
            .filter_map(|s| u64::try_from(s).ok())
            .collect())
    }

    /// Gives the lease up (graceful hand-over): it expires now, and its token stays, so the
    /// next acquisition gets a greater one. Releasing a lease lost since is not an error.
    pub async fn release_lease(&self, token: FencingToken) -> Result<()> {
        sqlx::query(
            "UPDATE shard_leases SET expires_at = '-infinity' WHERE shard = $1 AND token = $2",
        )
        .bind(shard_key(token.shard)?)
        .bind(i64::try_from(token.token).unwrap_or(-1))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The shard's current owner and token, if its lease is held (not expired).
    pub async fn lease_holder(&self, shard: u64) -> Result<Option<(String, FencingToken)>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT owner, token FROM shard_leases WHERE shard = $1 AND expires_at > now()",
        )
        .bind(shard_key(shard)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(|(owner, t)| (owner, token_of(shard, t))))
    }
}

/// Inside a unit's transaction: `Fenced` unless `token` is its shard's current, unexpired
/// token; the row stays share-locked until the transaction ends.
pub(super) async fn check(conn: &mut PgConnection, token: FencingToken) -> Result<()> {
    let current: Option<bool> = sqlx::query_scalar(
        "SELECT token = $2 AND expires_at > now() FROM shard_leases WHERE shard = $1 FOR SHARE",
    )
    .bind(shard_key(token.shard)?)
    .bind(i64::try_from(token.token).unwrap_or(-1))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    match current {
        Some(true) => Ok(()),
        _ => {
            crate::monitor::metrics::metrics().fenced_units.inc();
            tracing::warn!(
                shard = token.shard,
                token = token.token,
                "refused a unit of work: its fencing token is no longer the shard's current one"
            );
            Err(StorageError::Fenced)
        }
    }
}
