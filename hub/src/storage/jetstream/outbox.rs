//! Integration messages on JetStream: the outbox rows PostgreSQL commits with their units of
//! work are moved to the work-queue stream `<prefix>OUTBOX` (subjects
//! `<prefix>outbox.<destination>`), and every node's [`DeliveryConsumer`] pulls from one durable
//! consumer per destination, so JetStream hands each message to exactly one node at a time.
//!
//! - [`OutboxRelay`] (once across the cluster, under the lease on [`OUTBOX_RELAY_SHARD`])
//!   publishes a destination's pending rows in queue order (`Nats-Msg-Id`: the message id and
//!   a digest of the row) and removes them from PostgreSQL in one unit of work fenced by its
//!   lease once JetStream acknowledged them. A crash in between publishes them again, and the duplicate window drops
//!   them. Keys (`outbox_keys`) are still claimed in the original unit of work, so a message is
//!   queued once per key before it ever reaches the stream.
//! - [`DeliveryConsumer`] delivers with the destination's [`Deliverer`]: delivered → ack;
//!   [`DeliveryError::Retry`] → nak with the policy's exponential backoff; rejected, or the last
//!   of `max_attempts` failed → the dead-letter record in PostgreSQL (`Change::DeadLetter`, the
//!   same one `/ops/outbox` shows), then term. One message at a time per consumer, so one node
//!   keeps a destination's queue order; several nodes deliver in parallel, as the PostgreSQL
//!   worker's `concurrency` already does.

use super::relay::{stopped_within, RelayHandle, RelayOptions};
use super::{JetStreamError, Names, Result};
use crate::outbox::{Deliverer, DeliveryError, DeliveryPolicy};
use crate::storage::postgres::PgStorage;
use crate::storage::{Change, Committer, FencingToken, Outbox, Storage, StorageError, UnitOfWork};
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream, AckKind};
use futures_util::StreamExt;
use protocol::{codec, OutboxMessage};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The lease shard reserved for the outbox relay (next to the event relay's).
pub const OUTBOX_RELAY_SHARD: u64 = super::relay::EVENT_RELAY_SHARD + 1;

impl Names {
    /// The integration messages' work queue: `<prefix>OUTBOX`.
    pub fn outbox_stream(&self) -> String {
        format!("{}OUTBOX", self.prefix)
    }

    /// A destination's subject: `<prefix>outbox.<destination>`; `None` if the destination is
    /// not a subject token (ASCII letters, digits, `_` and `-`).
    pub fn outbox_subject(&self, destination: &str) -> Option<String> {
        let token = !destination.is_empty()
            && destination
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        token.then(|| format!("{}outbox.{destination}", self.prefix))
    }
}

/// The work-queue stream, created if missing: a message leaves it when a consumer acks it.
pub async fn outbox_stream(js: &jetstream::Context, names: &Names) -> Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: names.outbox_stream(),
        subjects: vec![format!("{}outbox.>", names.prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| JetStreamError::api("creating the outbox stream", e))
}

fn bad_destination(destination: &str) -> JetStreamError {
    JetStreamError::Api {
        what: "naming an outbox subject",
        message: format!("destination {destination:?} is not a subject token"),
    }
}

/// Moves pending outbox rows from PostgreSQL to the stream (see the module docs).
pub struct OutboxRelay {
    pg: Arc<PgStorage>,
    js: jetstream::Context,
    names: Names,
    options: RelayOptions,
    /// How often it looks for new rows (PostgreSQL announces no outbox writes).
    poll_every: Duration,
    moved: Arc<AtomicU64>,
}

impl OutboxRelay {
    pub async fn new(
        pg: Arc<PgStorage>,
        js: jetstream::Context,
        names: Names,
        options: RelayOptions,
        poll_every: Duration,
    ) -> Result<OutboxRelay> {
        outbox_stream(&js, &names).await?;
        Ok(OutboxRelay {
            pg,
            js,
            names,
            options,
            poll_every,
            moved: Arc::default(),
        })
    }

    /// Runs the relay in a task until stopped.
    pub fn spawn(self) -> RelayHandle {
        let (stop, stopped) = watch::channel(false);
        let moved = self.moved.clone();
        let task = tokio::spawn(async move { self.run(stopped).await });
        RelayHandle::new(stop, task, moved)
    }

    /// Moves rows while holding the lease, until `stop` turns true.
    #[tracing::instrument(skip_all, fields(owner = %self.options.owner))]
    async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let ttl = self.options.lease_ttl;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let wait = match self
                .pg
                .acquire_lease(OUTBOX_RELAY_SHARD, &self.options.owner, ttl)
                .await
            {
                Ok(Some(token)) => {
                    let led = self.lead(token, &mut stop).await;
                    if let Err(e) = self.pg.release_lease(token).await {
                        tracing::warn!(error = %e, "giving the outbox relay lease up");
                    }
                    match led {
                        Ok(()) => return Ok(()),
                        Err(JetStreamError::Storage(StorageError::Closed)) => {
                            return Err(StorageError::Closed.into())
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "moving outbox messages failed; retrying");
                            ttl / 4
                        }
                    }
                }
                Ok(None) => ttl / 3,
                Err(StorageError::Closed) => return Err(StorageError::Closed.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "asking for the outbox relay lease failed");
                    ttl / 4
                }
            };
            if stopped_within(&mut stop, wait).await {
                return Ok(());
            }
        }
    }

    async fn lead(&self, token: FencingToken, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let ttl = self.options.lease_ttl;
        let mut renew_at = tokio::time::Instant::now() + ttl / 3;
        loop {
            let moved = self.round(token).await?;
            if tokio::time::Instant::now() >= renew_at {
                self.pg.renew_lease(token, ttl).await?;
                renew_at = tokio::time::Instant::now() + ttl / 3;
            }
            if moved == 0 && stopped_within(stop, self.poll_every.min(ttl / 3)).await {
                return Ok(());
            }
            if *stop.borrow() {
                return Ok(());
            }
        }
    }

    /// Moves up to a batch of every destination's pending rows; answers how many.
    pub(crate) async fn round(&self, token: FencingToken) -> Result<usize> {
        let mut moved = 0;
        for destination in self.pg.backlog().await?.into_keys() {
            let pending = self.pg.pending(&destination, self.options.batch).await?;
            if pending.is_empty() {
                continue;
            }
            let subject = self
                .names
                .outbox_subject(&destination)
                .ok_or_else(|| bad_destination(&destination))?;
            let mut acks = Vec::with_capacity(pending.len());
            for m in &pending {
                let bytes = codec::encode(m)?;
                let message = PublishMessage::build()
                    .message_id(message_id(m.id, &bytes))
                    .payload(bytes.into());
                acks.push(
                    self.js
                        .send_publish(subject.clone(), message)
                        .await
                        .map_err(|e| JetStreamError::api("publishing an outbox message", e))?,
                );
            }
            for ack in acks {
                ack.await
                    .map_err(|e| JetStreamError::api("publishing an outbox message", e))?;
            }
            let mut unit = UnitOfWork::new();
            for m in &pending {
                unit = unit.with(Change::AckOutbox {
                    destination: destination.clone(),
                    id: m.id,
                });
            }
            unit.fence = Some(token);
            self.pg.commit(unit).await?;
            moved += pending.len();
            self.moved
                .fetch_add(pending.len() as u64, Ordering::Relaxed);
        }
        Ok(moved)
    }
}

/// Messages a consumer pulls at once.
const PULL_BATCH: usize = 4;

/// One node's deliveries of one destination from the work queue (see the module docs).
pub struct DeliveryConsumer {
    consumer: consumer::Consumer<consumer::pull::Config>,
    deliverer: Arc<dyn Deliverer>,
    storage: Arc<dyn Storage>,
    policy: DeliveryPolicy,
}

impl DeliveryConsumer {
    /// Binds to the destination's durable consumer `<prefix>outbox_<destination>` (created if
    /// missing; every node binds to the same one).
    pub async fn new(
        js: &jetstream::Context,
        names: &Names,
        deliverer: Arc<dyn Deliverer>,
        storage: Arc<dyn Storage>,
        policy: DeliveryPolicy,
    ) -> Result<DeliveryConsumer> {
        let destination = deliverer.destination();
        let subject = names
            .outbox_subject(destination)
            .ok_or_else(|| bad_destination(destination))?;
        let durable = format!("{}outbox_{destination}", names.prefix);
        let consumer = outbox_stream(js, names)
            .await?
            .get_or_create_consumer(
                &durable,
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: subject,
                    ack_policy: consumer::AckPolicy::Explicit,
                    // Longer than a delivery takes: a node that died mid-delivery hands the
                    // message to another after this.
                    ack_wait: Duration::from_secs(30),
                    // A safety net above the attempts counted here (a node dying mid-delivery
                    // counts as a delivery too).
                    max_deliver: i64::from(policy.max_attempts) + 1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| JetStreamError::api("creating the delivery consumer", e))?;
        Ok(DeliveryConsumer {
            consumer,
            deliverer,
            storage,
            policy,
        })
    }

    /// Runs the consumer in a task until `stop` turns true.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(async move {
            // A few at a time: messages pulled but not yet handled are held from the other
            // nodes (until `ack_wait`), and this node handles one at a time.
            let mut messages = self
                .consumer
                .stream()
                .max_messages_per_batch(PULL_BATCH)
                .messages()
                .await
                .map_err(|e| JetStreamError::api("pulling outbox messages", e))?;
            loop {
                let next = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => match self.handle(message).await {
                        Ok(()) => {}
                        Err(JetStreamError::Storage(StorageError::Closed)) => {
                            return Err(StorageError::Closed.into())
                        }
                        // Left unsettled: JetStream hands it out again after `ack_wait`.
                        Err(e) => tracing::warn!(error = %e, "settling an outbox message failed"),
                    },
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pulling outbox messages; retrying")
                    }
                    None => return Err(JetStreamError::Closed),
                }
            }
        })
    }

    /// Delivers one message and settles it (ack, nak with backoff, or dead letter and term).
    async fn handle(&self, message: jetstream::Message) -> Result<()> {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let attempts = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
        let outbox: OutboxMessage = match codec::decode(&message.payload) {
            Ok(m) => m,
            Err(e) => {
                // Nothing can deliver it: keep it out of the queue (it is in no table either).
                tracing::error!(error = %e, "an outbox message does not decode; dropped");
                return settle(&message, AckKind::Term).await;
            }
        };
        let failure = match self.deliverer.deliver(&outbox).await {
            Ok(()) => return settle(&message, AckKind::Ack).await,
            Err(DeliveryError::Retry(e)) if attempts < self.policy.max_attempts => {
                let delay = backoff(&self.policy, attempts);
                tracing::info!(id = %outbox.id, attempts, error = %e, "delivery failed; retrying");
                return settle(&message, AckKind::Nak(Some(delay))).await;
            }
            Err(e) => e.to_string(),
        };
        tracing::warn!(id = %outbox.id, attempts, error = %failure, "a message became a dead letter");
        let dead = OutboxMessage {
            attempts,
            last_error: Some(failure),
            ..outbox
        };
        self.storage
            .commit(UnitOfWork::new().with(Change::DeadLetter(dead)))
            .await?;
        settle(&message, AckKind::Term).await
    }
}

/// The message's `Nats-Msg-Id`: its id and a digest of the row, so the same row published again
/// (after a crash) is a duplicate, and a dead letter an operator retried (its row changed: the
/// attempts and the last error) is not.
fn message_id(id: ulid::Ulid, row: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(row);
    format!("{id}-{}", hex::encode(&digest[..8]))
}

async fn settle(message: &jetstream::Message, kind: AckKind) -> Result<()> {
    message
        .ack_with(kind)
        .await
        .map_err(|e| JetStreamError::api("settling an outbox message", e))
}

/// The delay before attempt `attempts + 1`: the base doubled per attempt, up to the maximum.
fn backoff(policy: &DeliveryPolicy, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
    policy
        .base_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff)
}
