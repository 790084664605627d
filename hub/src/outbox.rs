//! Delivery from the transactional outbox: one worker actor per destination sends the messages
//! that units of work queued with their state changes, **at least once**, and the receiver
//! deduplicates by message id (or by the payload's own key), so the effect is exactly once.
//!
//! Per destination: a bounded number of deliveries in flight; a failure is retried after an
//! exponential backoff with jitter; after `max_attempts` the message becomes a dead letter an
//! operator can see, retry or discard (`/ops/outbox`); a destination that keeps failing opens a
//! circuit breaker, so a dead partner costs one probe per cool-down instead of a storm. Acks are
//! written in one unit of work per round (one fsync for many messages).
//!
//! A destination is a [`Deliverer`]: the OMS over HTTP, email over SMTP, and whatever comes next
//! (payment reconciliation, DXP export) use the same mechanism.

use crate::clock::Clock;
use crate::storage::{Change, Storage, StorageError, UnitOfWork};
use actix::prelude::*;
use async_trait::async_trait;
use futures_util::StreamExt;
use protocol::OutboxMessage;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Why one delivery failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Worth another try later (timeouts, 5xx, connection refused).
    #[error("{0}")]
    Retry(String),
    /// Refused for good (a 4xx about the message itself): straight to the dead letters.
    #[error("{0}")]
    Reject(String),
}

/// A destination the outbox delivers to.
#[async_trait]
pub trait Deliverer: Send + Sync + 'static {
    /// The outbox destination name (`oms`, `email`, …).
    fn destination(&self) -> &'static str;
    /// Delivers one message. Called again for the same message after a failure or a crash:
    /// the receiver must deduplicate by `message.id` or by a key in the payload.
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError>;
}

/// How a destination's worker retries.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    /// Attempts before a message becomes a dead letter.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff`, with up to 50 % jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one probe is let through.
    pub breaker_cooldown: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Messages taken per round.
    pub batch: usize,
    /// How often the worker looks for due messages when nothing woke it.
    pub poll_every: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 10,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(15),
            concurrency: 32,
            batch: 512,
            poll_every: Duration::from_secs(1),
        }
    }
}

/// The circuit breaker's state, as ops see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Breaker {
    Closed {
        consecutive_failures: u32,
    },
    /// No deliveries until `until` (unix seconds), then one probe.
    Open {
        until: i64,
    },
}

/// Counters of one worker.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeliveryStats {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
}

/// A destination's worker.
pub struct OutboxWorker {
    deliverer: Arc<dyn Deliverer>,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    policy: DeliveryPolicy,
    breaker: Breaker,
    stats: DeliveryStats,
    /// A round is running.
    busy: bool,
    /// Woken while busy: run another round right after.
    again: bool,
}

/// New messages may be waiting: deliver now rather than at the next poll.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Wake;

/// The worker's breaker and counters.
#[derive(Message)]
#[rtype(result = "(Breaker, DeliveryStats)")]
pub struct Status;

struct RoundDone {
    outcomes: Vec<(OutboxMessage, Result<(), DeliveryError>)>,
    full: bool,
}

impl OutboxWorker {
    pub fn new(
        deliverer: Arc<dyn Deliverer>,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        policy: DeliveryPolicy,
    ) -> OutboxWorker {
        OutboxWorker {
            deliverer,
            storage,
            clock,
            policy,
            breaker: Breaker::Closed {
                consecutive_failures: 0,
            },
            stats: DeliveryStats::default(),
            busy: false,
            again: false,
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// How many messages this round may try: none while the breaker is open, one probe after.
    fn allowance(&self) -> usize {
        match self.breaker {
            Breaker::Closed { .. } => self.policy.batch,
            Breaker::Open { until } if self.now().unix_timestamp() >= until => 1,
            Breaker::Open { .. } => 0,
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        let allowance = self.allowance();
        if allowance == 0 {
            return;
        }
        self.busy = true;
        self.again = false;
        let storage = self.storage.clone();
        let deliverer = self.deliverer.clone();
        let destination = deliverer.destination();
        let now = self.now();
        let concurrency = self.policy.concurrency.max(1);
        // Look further than one batch: messages waiting out a backoff must not hide due ones.
        let scan = (allowance * 8).max(64);
        let fut = async move {
            let pending = storage.pending(destination, scan).await?;
            let due: Vec<OutboxMessage> = pending
                .into_iter()
                .filter(|m| m.due(now))
                .take(allowance)
                .collect();
            let full = due.len() == allowance && allowance > 1;
            let outcomes = futures_util::stream::iter(due)
                .map(|m| {
                    let deliverer = deliverer.clone();
                    async move {
                        let r = deliverer.deliver(&m).await;
                        (m, r)
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await;
            Ok::<_, StorageError>(RoundDone { outcomes, full })
        };
        ctx.spawn(fut.into_actor(self).then(|res, act, _ctx| {
            let storage = act.storage.clone();
            let unit = match res {
                Ok(done) => act.settle(done),
                Err(e) => {
                    tracing::error!(destination = act.deliverer.destination(), error = %e, "outbox: cannot read pending messages");
                    (UnitOfWork::new(), false)
                }
            };
            let (unit, more) = unit;
            #[cfg(feature = "failpoints")]
            let failpoint = format!("outbox.{}.before_ack", act.deliverer.destination());
            async move {
                // Crash tests stop the hub here: delivered, not yet acknowledged.
                #[cfg(feature = "failpoints")]
                {
                    let acks = unit
                        .changes
                        .iter()
                        .any(|c| matches!(c, Change::AckOutbox { .. }));
                    fail::fail_point!(&failpoint, acks, |_| std::process::abort());
                }
                if !unit.changes.is_empty() {
                    if let Err(e) = storage.commit(unit).await {
                        // Delivered but not acknowledged: it is sent again, and the receiver
                        // drops the copy by its id.
                        tracing::error!(error = %e, "outbox: cannot record delivery outcomes");
                    }
                }
                more
            }
            .into_actor(act)
            .map(|more, act, ctx| {
                act.busy = false;
                if more || act.again {
                    act.round(ctx);
                }
            })
        }));
    }

    /// Turns a round's outcomes into one unit of work (acks, reschedules, dead letters) and
    /// moves the breaker. Answers whether another round should follow at once.
    fn settle(&mut self, done: RoundDone) -> (UnitOfWork, bool) {
        let now = self.now();
        let destination = self.deliverer.destination();
        let mut unit = UnitOfWork::new();
        let mut failures = 0u32;
        let mut successes = 0u32;
        for (mut m, outcome) in done.outcomes {
            match outcome {
                Ok(()) => {
                    successes += 1;
                    self.stats.delivered += 1;
                    unit.changes.push(Change::AckOutbox {
                        destination: m.destination.clone(),
                        id: m.id,
                    });
                }
                Err(e) => {
                    failures += 1;
                    self.stats.failed_attempts += 1;
                    m.attempts += 1;
                    m.last_error = Some(e.to_string());
                    let give_up = matches!(e, DeliveryError::Reject(_))
                        || m.attempts >= self.policy.max_attempts;
                    if give_up {
                        self.stats.dead_lettered += 1;
                        tracing::warn!(destination, id = %m.id, kind = %m.kind, attempts = m.attempts, error = %e, "outbox: dead letter");
                        unit.changes.push(Change::DeadLetter(m));
                    } else {
                        m.next_attempt_at = Some(now + backoff(&self.policy, m.attempts));
                        unit.changes.push(Change::PutOutbox(m));
                    }
                }
            }
        }
        let was_open = matches!(self.breaker, Breaker::Open { .. });
        self.breaker = match (self.breaker, successes, failures) {
            (_, 0, 0) => self.breaker,
            (
                Breaker::Closed {
                    consecutive_failures,
                },
                0,
                f,
            ) => {
                let total = consecutive_failures + f;
                if total >= self.policy.breaker_threshold {
                    tracing::warn!(destination, "outbox: circuit breaker open");
                    self.open_breaker(now)
                } else {
                    Breaker::Closed {
                        consecutive_failures: total,
                    }
                }
            }
            // The probe failed: stay open for another cool-down.
            (Breaker::Open { .. }, 0, _) => self.open_breaker(now),
            // Anything got through: the destination works.
            (_, _, _) => Breaker::Closed {
                consecutive_failures: 0,
            },
        };
        // A probe that got through closes the breaker: the backlog goes at once, not at the
        // next poll.
        let recovered = was_open && matches!(self.breaker, Breaker::Closed { .. });
        let more = (done.full && failures == 0) || recovered;
        (unit, more)
    }

    fn open_breaker(&self, now: OffsetDateTime) -> Breaker {
        Breaker::Open {
            until: (now + self.policy.breaker_cooldown).unix_timestamp(),
        }
    }
}

/// Exponential backoff with up to 50 % jitter: base, 2·base, 4·base, … capped at `max_backoff`.
pub fn backoff(policy: &DeliveryPolicy, attempts: u32) -> Duration {
    let exp = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    let base = policy
        .base_backoff
        .saturating_mul(exp)
        .min(policy.max_backoff);
    let mut b = [0u8; 2];
    let jitter = match getrandom::getrandom(&mut b) {
        Ok(()) => f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) * 0.5,
        Err(_) => 0.0,
    };
    base.mul_f64(1.0 + jitter)
}

impl Actor for OutboxWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.policy.poll_every, |act, ctx| act.round(ctx));
        self.round(ctx);
    }
}

impl Handler<Wake> for OutboxWorker {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.round(ctx);
    }
}

impl Handler<Status> for OutboxWorker {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((self.breaker, self.stats.clone()))
    }
}

/// Every destination's worker, by name.
#[derive(Clone, Default)]
pub struct OutboxWorkers {
    workers: Arc<std::collections::BTreeMap<&'static str, Addr<OutboxWorker>>>,
}

impl OutboxWorkers {
    /// Starts one worker per deliverer.
    pub fn start(
        deliverers: Vec<Arc<dyn Deliverer>>,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        policy: DeliveryPolicy,
    ) -> OutboxWorkers {
        let workers = deliverers
            .into_iter()
            .map(|d| {
                let name = d.destination();
                let worker = OutboxWorker::new(d, storage.clone(), clock.clone(), policy).start();
                (name, worker)
            })
            .collect();
        OutboxWorkers {
            workers: Arc::new(workers),
        }
    }

    /// Tells every worker that new messages may be waiting.
    pub fn wake(&self) {
        for w in self.workers.values() {
            w.do_send(Wake);
        }
    }

    /// Whether every worker is still running (readiness).
    pub fn running(&self) -> bool {
        self.workers.values().all(Addr::connected)
    }

    pub fn destinations(&self) -> Vec<&'static str> {
        self.workers.keys().copied().collect()
    }

    /// A destination's breaker and counters.
    pub async fn status(&self, destination: &str) -> Option<(Breaker, DeliveryStats)> {
        self.workers.get(destination)?.send(Status).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = DeliveryPolicy::default();
        for attempts in 1..=12 {
            let d = backoff(&p, attempts);
            let base = p
                .base_backoff
                .saturating_mul(2u32.pow(attempts - 1))
                .min(p.max_backoff);
            assert!(d >= base, "{attempts}: {d:?} < {base:?}");
            assert!(d <= base.mul_f64(1.5), "{attempts}: {d:?} > 1.5 x {base:?}");
        }
    }
}
