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
        Ok(self.acquire_leases(&[shard], owner, ttl).await?.pop())
    }

    /// Takes, in one statement, the lease of every shard of `shards` that is free, expired,
    /// or already `owner`'s, for `ttl`; answers the new fencing tokens (each greater than
    /// every earlier one of its shard), in shard order. A shard another owner holds an
    /// unexpired lease of is left out (and keeps its lease and token).
    ///
    /// The rows are locked in shard order (the array is sorted and deduplicated first, and
    /// [`PgStorage::renew_leases`] locks in the same order), so two nodes asking for
    /// overlapping shards at once wait for each other instead of deadlocking.
    pub async fn acquire_leases(
        &self,
        shards: &[u64],
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<FencingToken>> {
        let mut keys = shards
            .iter()
            .map(|s| shard_key(*s))
            .collect::<Result<Vec<i64>>>()?;
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "INSERT INTO shard_leases AS l (shard, owner, token, expires_at) \
             SELECT s.shard, $2, 1, now() + $3 * interval '1 millisecond' \
             FROM unnest($1::bigint[]) WITH ORDINALITY AS s(shard, n) ORDER BY s.n \
             ON CONFLICT (shard) DO UPDATE SET owner = EXCLUDED.owner, token = l.token + 1, \
             expires_at = EXCLUDED.expires_at \
             WHERE l.expires_at <= now() OR l.owner = EXCLUDED.owner \
             RETURNING l.shard, l.token",
        )
        .bind(&keys)
        .bind(owner)
        .bind(millis(ttl))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut tokens: Vec<FencingToken> = rows
            .into_iter()
            .filter_map(|(s, t)| u64::try_from(s).ok().map(|s| token_of(s, t)))
            .collect();
        tokens.sort_unstable_by_key(|t| t.shard);
        Ok(tokens)
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
        // Locks the rows in shard order first, as `acquire_leases` does (no deadlock with a
        // node acquiring some of them at the same time).
        let renewed: Vec<i64> = sqlx::query_scalar(
            "WITH mine AS (SELECT l.shard FROM shard_leases l \
             JOIN unnest($1::bigint[], $2::bigint[]) AS t(shard, token) \
             ON l.shard = t.shard AND l.token = t.token ORDER BY l.shard FOR UPDATE OF l) \
             UPDATE shard_leases AS l SET expires_at = now() + $3 * interval '1 millisecond' \
             FROM mine WHERE l.shard = mine.shard RETURNING l.shard",
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
        self.release_leases(&[token]).await
    }

    /// Gives every lease of `tokens` up in one statement (see [`PgStorage::release_lease`]),
    /// locking the rows in shard order.
    pub async fn release_leases(&self, tokens: &[FencingToken]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        let mut shards = Vec::with_capacity(tokens.len());
        let mut numbers = Vec::with_capacity(tokens.len());
        for t in tokens {
            shards.push(shard_key(t.shard)?);
            numbers.push(i64::try_from(t.token).unwrap_or(-1));
        }
        sqlx::query(
            "WITH mine AS (SELECT l.shard FROM shard_leases l \
             JOIN unnest($1::bigint[], $2::bigint[]) AS t(shard, token) \
             ON l.shard = t.shard AND l.token = t.token ORDER BY l.shard FOR UPDATE OF l) \
             UPDATE shard_leases AS l SET expires_at = '-infinity' \
             FROM mine WHERE l.shard = mine.shard",
        )
        .bind(&shards)
        .bind(&numbers)
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
