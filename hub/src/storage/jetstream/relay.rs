//! The event relay: a transactional outbox from the PostgreSQL event log to the JetStream
//! event stream.
//!
//! **Once across the cluster.** Every node may run a relay; only the holder of the lease on
//! [`EVENT_RELAY_SHARD`] publishes (`PgStorage::acquire_lease`), renewing it while it works and
//! giving it up when it stops. The others retry the lease now and then and take over when it
//! runs out (a dead node) or is released (a graceful stop).
//!
//! **In order, exactly once in the stream.** A relay reads the end of the stream when it takes
//! the lease (the log sequence of the last message, in its [`super::SEQ_HEADER`]) and publishes
//! the log from the next sequence on, each message with the event id as `Nats-Msg-Id` and
//! `Nats-Expected-Last-Sequence` set to the stream sequence of the message before it. JetStream
//! refuses a publish whose expectation does not hold, so the stream stays a gap-free copy of
//! the log in log order even if two relays overlap (one whose lease ran out while it was
//! paused): the one that is behind gets [`JetStreamError::Overtaken`] and reads the end again.
//! A republished event (same id) is dropped by JetStream's duplicate window.
//!
//! **The cursor.** After the stream acknowledged a batch, the relay moves its cursor in
//! PostgreSQL (`relay_cursors`), fenced by its lease token; a relay that lost the lease can
//! neither move it nor keep going. The cursor is where a relay resumes when the stream holds no
//! message to read its end from (a new or expired-empty stream); after a crash between the
//! acknowledgement and the cursor's move, the stream's end is ahead and the relay moves the
//! cursor up to it instead of republishing.

use super::{event_stream, log_seq, JetStreamError, Names, Result};
use crate::storage::postgres::PgStorage;
use crate::storage::{EventLog, FencingToken, Sequenced, StorageError};
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use protocol::codec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The lease shard reserved for the event relay. Entity shards are numbered from 0 up; shards
/// from 2^40 are reserved for tasks that run once across the cluster.
pub const EVENT_RELAY_SHARD: u64 = 1 << 40;

/// The relay's row in `relay_cursors`.
pub const CURSOR_NAME: &str = "events";

/// How a relay works.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// This node's id (the lease owner).
    pub owner: String,
    /// How long the lease lasts unless renewed (renewed every third of it); a dead relay's
    /// successor takes over within about this long.
    pub lease_ttl: Duration,
    /// Events read from the log and published per round.
    pub batch: usize,
}

impl RelayOptions {
    pub fn new(owner: &str) -> RelayOptions {
        RelayOptions {
            owner: owner.to_owned(),
            lease_ttl: Duration::from_secs(10),
            batch: 256,
        }
    }
}

/// Where the stream ends, as the lease holder knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Term {
    token: FencingToken,
    /// The log sequence of the stream's last event (the cursor, if the stream holds none).
    published: u64,
    /// The stream sequence of that message (0 for a stream never written to).
    stream_last: u64,
}

/// Publishes the committed event log to JetStream (see the module docs).
pub struct EventRelay {
    pg: Arc<PgStorage>,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    names: Names,
    options: RelayOptions,
    /// Events this relay published that the stream did not hold yet.
    published: Arc<AtomicU64>,
}

/// A running relay: stop it with [`RelayHandle::stop`].
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    published: Arc<AtomicU64>,
}

impl RelayHandle {
    pub(super) fn new(
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<()>>,
        published: Arc<AtomicU64>,
    ) -> RelayHandle {
        RelayHandle {
            stop,
            task,
            published,
        }
    }

    /// Messages this relay published (new to the stream; outbox rows moved, for the outbox
    /// relay).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Stops the relay (it finishes the round it is in and gives its lease up) and answers how
    /// it ended.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| JetStreamError::api("the relay task", e))?
    }
}

impl EventRelay {
    /// A relay for `names`' event stream (created if missing).
    pub async fn new(
        pg: Arc<PgStorage>,
        js: jetstream::Context,
        names: Names,
        options: RelayOptions,
    ) -> Result<EventRelay> {
        let stream = event_stream(&js, &names).await?;
        Ok(EventRelay {
            pg,
            js,
            stream,
            names,
            options,
            published: Arc::default(),
        })
    }

    /// Runs the relay in a task until stopped.
    pub fn spawn(self) -> RelayHandle {
        let (stop, stopped) = watch::channel(false);
        let published = self.published.clone();
        let task = tokio::spawn(async move { self.run(stopped).await });
        RelayHandle::new(stop, task, published)
    }

    /// Takes the lease whenever it is free and publishes while it holds it, until `stop` turns
    /// true (or its sender is dropped). Fails only when the storage is closed.
    #[tracing::instrument(skip_all, fields(owner = %self.options.owner))]
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let ttl = self.options.lease_ttl;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let lease = self
                .pg
                .acquire_lease(EVENT_RELAY_SHARD, &self.options.owner, ttl)
                .await;
            let retry_in = match lease {
                Ok(Some(token)) => {
                    tracing::info!(token = token.token, "relaying events to JetStream");
                    let led = self.lead(token, &mut stop).await;
                    if let Err(e) = self.pg.release_lease(token).await {
                        tracing::warn!(error = %e, "giving the relay lease up");
                    }
                    match led {
                        Ok(()) => return Ok(()),
                        Err(JetStreamError::Storage(StorageError::Closed)) => {
                            return Err(StorageError::Closed.into())
                        }
                        Err(
                            e @ (JetStreamError::Overtaken
                            | JetStreamError::Storage(StorageError::Fenced)),
                        ) => {
                            tracing::info!(reason = %e, "the relay stepped down");
                            ttl / 10
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "relaying events failed; retrying");
                            ttl / 4
                        }
                    }
                }
                // Another node relays: ask again before its lease could have run out.
                Ok(None) => ttl / 3,
                Err(StorageError::Closed) => return Err(StorageError::Closed.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "asking for the relay lease failed; retrying");
                    ttl / 4
                }
            };
            if stopped_within(&mut stop, retry_in).await {
                return Ok(());
            }
        }
    }

    /// Publishes while holding `token`'s lease: reads the stream's end, then relays every
    /// append, renewing the lease as it goes. `Ok` when stopped.
    async fn lead(&self, token: FencingToken, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let ttl = self.options.lease_ttl;
        let mut term = self.sync(token).await?;
        let mut appended = self.pg.appended();
        let mut renew_at = Instant::now() + ttl / 3;
        loop {
            // Marked seen before the read: an append after it wakes the wait below.
            appended.borrow_and_update();
            let batch = self
                .pg
                .read_sequenced(term.published, self.options.batch)
                .await?;
            if !batch.is_empty() {
                self.publish(&mut term, &batch).await?;
                self.advance(&term).await?;
            }
            if Instant::now() >= renew_at {
                self.pg.renew_lease(token, ttl).await?;
                renew_at = Instant::now() + ttl / 3;
            }
            if *stop.borrow() {
                return Ok(());
            }
            if batch.len() == self.options.batch {
                continue;
            }
            tokio::select! {
                // A dropped handle stops the relay too.
                gone = stop.changed() => if gone.is_err() { return Ok(()) },
                changed = appended.changed() => {
                    changed.map_err(|_| StorageError::Closed)?;
                }
                _ = tokio::time::sleep_until(renew_at) => {}
            }
        }
    }

    /// Reads where the stream ends, and moves the cursor up to it if a crash left it behind.
    pub(crate) async fn sync(&self, token: FencingToken) -> Result<Term> {
        let cursor = self.pg.relay_cursor(CURSOR_NAME).await?;
        let state = self
            .stream
            .get_info()
            .await
            .map_err(|e| JetStreamError::api("reading the event stream's state", e))?
            .state;
        let stream_last = state.last_sequence;
        let published = if state.messages > 0 {
            let last = self
                .stream
                .get_raw_message(stream_last)
                .await
                .map_err(|e| JetStreamError::api("reading the event stream's last message", e))?;
            log_seq(stream_last, Some(&last.headers))?
        } else {
            cursor
        };
        let term = Term {
            token,
            published,
            stream_last,
        };
        if published > cursor {
            self.advance(&term).await?;
        }
        tracing::debug!(cursor, published, stream_last, "the event stream's end");
        Ok(term)
    }

    /// Publishes `batch` (the log right after `term.published`), pipelined, and waits for every
    /// acknowledgement; `term` follows each one.
    pub(crate) async fn publish(&self, term: &mut Term, batch: &[Sequenced]) -> Result<()> {
        let mut acks = Vec::with_capacity(batch.len());
        for (s, expected_last) in batch.iter().zip(term.stream_last..) {
            let mut message = PublishMessage::build()
                .payload(codec::encode(&s.event)?.into())
                .message_id(s.event.id.to_string())
                .header(super::SEQ_HEADER, s.seq.to_string().as_str());
            // Stream sequence 0 means "no expectation" to JetStream: a new stream's first
            // message is only deduplicated by its id.
            if expected_last > 0 {
                message = message.expected_last_sequence(expected_last);
            }
            let ack = self
                .js
                .send_publish(self.names.event_subject(s.event.kind), message)
                .await
                .map_err(|e| JetStreamError::api("publishing an event", e))?;
            acks.push((s.seq, ack));
        }
        for (seq, ack) in acks {
            let ack = ack.await.map_err(|e| match e.kind() {
                PublishErrorKind::WrongLastSequence => JetStreamError::Overtaken,
                _ => JetStreamError::api("publishing an event", e),
            })?;
            if !ack.duplicate {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
            term.published = seq;
            term.stream_last = ack.sequence;
        }
        Ok(())
    }

    /// Moves the cursor to what the stream acknowledged, fenced by the lease.
    pub(crate) async fn advance(&self, term: &Term) -> Result<()> {
        self.pg
            .advance_relay_cursor(CURSOR_NAME, term.published, term.token)
            .await?;
        Ok(())
    }
}

/// Waits `d` unless `stop` turns true (or its sender goes) first; answers whether it did.
pub(super) async fn stopped_within(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        r = stop.wait_for(|s| *s) => { let _ = r; true }
        _ = tokio::time::sleep(d) => false,
    }
}
