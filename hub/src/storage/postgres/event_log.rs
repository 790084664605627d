//! The event log in PostgreSQL (`events`, `event_head`).
//!
//! **Sequences without gaps.** An appending transaction takes the row lock of `event_head`
//! (`SELECT … FOR UPDATE`), numbers its new events from `last + 1`, inserts them and moves
//! `last`, and holds the lock until it commits. So appends commit one after the other in
//! sequence order (a transaction becomes visible before its locks are released), a rolled back
//! append gives its numbers back, and any reader sees a prefix of the log: there is never a gap
//! below the highest sequence a reader can see. The lock is taken last in a unit of work, so it
//! is held only for the inserts and the commit.
//!
//! **Idempotent by id.** Under the lock, events whose id is already in the log (or earlier in the
//! same batch) are left out, so an event appended twice keeps its first sequence.
//!
//! **`appended()`.** Each node's watch moves when this process commits an append, and when
//! PostgreSQL delivers the `omnihub_events` notification that every append sends at commit
//! (payload: `<schema> <last sequence>`), so a consumer on any node wakes up for appends made on
//! any node. Notifications can be lost while the listening connection is down: after it
//! reconnects the listener reads `event_head` again, so a consumer wakes up late but never
//! misses events (it reads by sequence).

use super::{db, limit, PgStorage};
use crate::storage::{EventLog, Result, Sequenced, StorageError};
use async_trait::async_trait;
use protocol::{codec, CustomerId, Event, Subject};
use sqlx::postgres::{PgConnection, PgListener, PgPool};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// The notification channel appends are announced on.
const CHANNEL: &str = "omnihub_events";

/// The last sequence appended (0 for an empty log).
pub(super) async fn head(pool: &PgPool) -> Result<u64> {
    let last: i64 = sqlx::query_scalar("SELECT last FROM event_head")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    Ok(u64::try_from(last).unwrap_or(0))
}

/// Moves the watch forward (never back: announcements may arrive out of order).
pub(super) fn publish(appended: &watch::Sender<u64>, last: u64) {
    appended.send_if_modified(|v| {
        let newer = last > *v;
        if newer {
            *v = last;
        }
        newer
    });
}

/// Numbers and inserts `events` inside the caller's transaction; answers the new last sequence
/// if any event was new. Events about an erased customer are stored pseudonymised.
pub(super) async fn append_in(conn: &mut PgConnection, events: &[Event]) -> Result<Option<u64>> {
    if events.is_empty() {
        return Ok(None);
    }
    let last: i64 = sqlx::query_scalar("SELECT last FROM event_head FOR UPDATE")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    let ids: Vec<Vec<u8>> = events.iter().map(|e| e.id.to_bytes().to_vec()).collect();
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id FROM events WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut seen: HashSet<Vec<u8>> = stored.into_iter().collect();
    let mut fresh: Vec<Event> = Vec::with_capacity(events.len());
    for e in events {
        if seen.insert(e.id.to_bytes().to_vec()) {
            fresh.push(e.clone());
        }
    }
    if fresh.is_empty() {
        return Ok(None);
    }
    pseudonymise_erased(conn, &mut fresh).await?;
    let mut seqs = Vec::with_capacity(fresh.len());
    let mut ids = Vec::with_capacity(fresh.len());
    let mut customers: Vec<Option<Vec<u8>>> = Vec::with_capacity(fresh.len());
    let mut values = Vec::with_capacity(fresh.len());
    for (i, e) in fresh.iter().enumerate() {
        seqs.push(last + 1 + i as i64);
        ids.push(e.id.to_bytes().to_vec());
        customers.push(match e.subject {
            Subject::Customer(c) => Some(c.to_bytes().to_vec()),
            _ => None,
        });
        values.push(codec::encode(e)?);
    }
    let new_last = last + fresh.len() as i64;
    sqlx::query(
        "INSERT INTO events (seq, id, customer, value) \
         SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[])",
    )
    .bind(&seqs)
    .bind(&ids)
    .bind(&customers)
    .bind(&values)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    sqlx::query("UPDATE event_head SET last = $1")
        .bind(new_last)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    // Delivered to every listening node when (and only if) the transaction commits.
    sqlx::query("SELECT pg_notify($1, current_schema() || ' ' || $2::text)")
        .bind(CHANNEL)
        .bind(new_last)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(u64::try_from(new_last).ok())
}

/// Events of an erased customer (a late event, or one recorded while the erasure ran) are
/// stored pseudonymised, under the customer's pseudonym (`Change::MarkErased`).
async fn pseudonymise_erased(conn: &mut PgConnection, events: &mut [Event]) -> Result<()> {
    let customers: Vec<Vec<u8>> = events
        .iter()
        .filter_map(|e| match e.subject {
            Subject::Customer(c) => Some(c.to_bytes().to_vec()),
            _ => None,
        })
        .collect();
    if customers.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT customer, pseudonym FROM erased WHERE customer = ANY($1)")
            .bind(&customers)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    if rows.is_empty() {
        return Ok(());
    }
    let erased: HashMap<Vec<u8>, protocol::AnonymousId> = rows
        .into_iter()
        .filter_map(|(c, p)| Some((c, protocol::AnonymousId(super::ulid_from(&p).ok()?))))
        .collect();
    for e in events.iter_mut() {
        if let Subject::Customer(c) = e.subject {
            if let Some(pseudonym) = erased.get(c.to_bytes().as_slice()) {
                *e = protocol::privacy::pseudonymised(e.clone(), *pseudonym);
            }
        }
    }
    Ok(())
}

/// Listens for appends announced by any node (this one included) and moves `appended`; stops
/// when `stop` is sent or dropped. Answers the listening task.
pub(super) async fn listen(
    pool: PgPool,
    schema: String,
    appended: Arc<watch::Sender<u64>>,
    mut stop: oneshot::Receiver<()>,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut listener = PgListener::connect_with(&pool).await.map_err(db)?;
    listener.listen(CHANNEL).await.map_err(db)?;
    // Appends committed between the head read at open and LISTEN would otherwise wait for the
    // next notification.
    publish(&appended, head(&pool).await?);
    Ok(tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = &mut stop => break,
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(n)) => {
                    let mut parts = n.payload().rsplitn(2, ' ');
                    let last = parts.next().and_then(|l| l.parse::<u64>().ok());
                    if let (Some(last), Some(s)) = (last, parts.next()) {
                        if s == schema {
                            publish(&appended, last);
                        }
                    }
                }
                // The connection dropped (and is reopened by the next call): notifications
                // may have been missed, so read the head.
                Ok(None) => match head(&pool).await {
                    Ok(last) => publish(&appended, last),
                    Err(e) => tracing::warn!(error = %e, "reading the event log's head"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "listening for event appends; retrying");
                    // Backoff before reconnecting, cut short by shutdown.
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }))
}

fn decode_events(rows: Vec<Vec<u8>>) -> Result<Vec<Event>> {
    rows.iter()
        .map(|v| codec::decode::<Event>(v).map_err(StorageError::from))
        .collect()
}

#[async_trait]
impl EventLog for PgStorage {
    async fn append(&self, events: Arc<[Event]>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let last = append_in(&mut tx, &events).await?;
        tx.commit().await.map_err(db)?;
        if let Some(last) = last {
            publish(&self.appended, last);
        }
        Ok(())
    }

    async fn timeline(&self, customer: CustomerId, n: usize) -> Result<Vec<Event>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT value FROM events WHERE customer = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(customer.to_bytes().as_slice())
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        decode_events(rows)
    }

    async fn read_sequenced(&self, after: u64, n: usize) -> Result<Vec<Sequenced>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, value FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(limit(n))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter()
            .map(|(seq, v)| {
                Ok(Sequenced {
                    seq: u64::try_from(seq).unwrap_or(0),
                    event: codec::decode(&v)?,
                })
            })
            .collect()
    }

    fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    async fn rewrite(&self, events: Vec<Sequenced>, forget: Option<CustomerId>) -> Result<()> {
        let mut seqs = Vec::with_capacity(events.len());
        let mut ids = Vec::with_capacity(events.len());
        let mut values = Vec::with_capacity(events.len());
        for e in &events {
            seqs.push(i64::try_from(e.seq).unwrap_or(i64::MAX));
            ids.push(e.event.id.to_bytes().to_vec());
            values.push(codec::encode(&e.event)?);
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "UPDATE events AS e SET value = u.value \
             FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[]) AS u(seq, id, value) \
             WHERE e.seq = u.seq AND e.id = u.id",
        )
        .bind(&seqs)
        .bind(&ids)
        .bind(&values)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(customer) = forget {
            sqlx::query("UPDATE events SET customer = NULL WHERE customer = $1")
                .bind(customer.to_bytes().as_slice())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
}
