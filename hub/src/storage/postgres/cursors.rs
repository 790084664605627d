//! Cursors of the relays that publish from PostgreSQL to NATS JetStream (`relay_cursors`, see
//! `storage::jetstream::relay`): the last log sequence a relay's stream acknowledged. Only the
//! holder of the relay's lease moves a cursor: the move checks the fencing token like a unit of
//! work does, so a relay that lost its lease can never move it again; and a cursor never goes
//! back.

use super::{db, lease, PgStorage};
use crate::storage::{FencingToken, Result, StorageError};

fn seq_key(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| StorageError::Io(format!("sequence {seq} is out of range")))
}

impl PgStorage {
    /// The relay's cursor (0 if it never published).
    pub async fn relay_cursor(&self, name: &str) -> Result<u64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM relay_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }

    /// Moves the relay's cursor forward to `seq` (a smaller `seq` leaves it), if `fence` is
    /// still its lease's current token; `Fenced` otherwise, and nothing moves.
    pub async fn advance_relay_cursor(
        &self,
        name: &str,
        seq: u64,
        fence: FencingToken,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        lease::check(&mut tx, fence).await?;
        sqlx::query(
            "INSERT INTO relay_cursors AS c (name, seq) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET seq = GREATEST(c.seq, EXCLUDED.seq)",
        )
        .bind(name)
        .bind(seq_key(seq)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}
