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
//!
//! In a cluster the workers run on one node only, the holder of the `OutboxDelivery` singleton
//! ([`OutboxWorkers::run_term`]): the outbox table is their durable cursor, so a new holder
//! delivers what is still pending, and every round's acks carry the term's fencing token, so a
//! deposed holder's acks and reschedules are refused. Elsewhere [`OutboxWorkers::wake`] does
//! nothing and the holder finds new messages at its next poll.

use crate::clock::Clock;
use crate::cluster::singleton::Term;
use crate::storage::{Change, FencingToken, Storage, StorageError, UnitOfWork};
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
    /// The singleton term's token every round's unit of work carries (`None`: unfenced).
    fence: Option<FencingToken>,
    /// Asked to stop: stops once the round in flight is recorded.
    stopping: bool,
    /// Told when the worker has stopped.
    stopped: Option<tokio::sync::oneshot::Sender<()>>,
}

/// New messages may be waiting: deliver now rather than at the next poll.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Wake;

/// Stop after the round in flight (if any) is recorded.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
struct StopWorker;

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
            fence: None,
            stopping: false,
            stopped: None,
        }
    }

    /// Every round's unit of work carries `fence`, and the worker stops when it is refused.
    fn fenced(mut self, fence: Option<FencingToken>) -> OutboxWorker {
        self.fence = fence;
        self
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
        if self.stopping {
            return;
        }
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
            let (mut unit, more) = unit;
            unit.fence = act.fence;
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
                let mut fenced = false;
                if !unit.changes.is_empty() {
                    match storage.commit(unit).await {
                        Ok(_) => {}
                        Err(StorageError::Fenced) => {
                            // Another node delivers now; it sends these again, and the
                            // receiver drops the copies by their ids.
                            tracing::info!("outbox: delivery moved to another node; stopping");
                            fenced = true;
                        }
                        Err(e) => {
                            // Delivered but not acknowledged: it is sent again, and the
                            // receiver drops the copy by its id.
                            tracing::error!(error = %e, "outbox: cannot record delivery outcomes");
                        }
                    }
                }
                (more, fenced)
            }
            .into_actor(act)
            .map(|(more, fenced), act, ctx| {
                act.busy = false;
                if fenced || act.stopping {
                    act.stopping = true;
                    ctx.stop();
                } else if more || act.again {
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

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(done) = self.stopped.take() {
            let _ = done.send(());
        }
    }
}

impl Handler<StopWorker> for OutboxWorker {
    type Result = ();

    fn handle(&mut self, _: StopWorker, ctx: &mut Context<Self>) {
        self.stopping = true;
        if !self.busy {
            ctx.stop();
        }
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
#[derive(Clone)]
pub struct OutboxWorkers {
    /// The running workers (none on a cluster node that does not hold the outbox singleton).
    workers: Arc<arc_swap::ArcSwap<Workers>>,
    parts: Arc<Parts>,
}

type Workers = std::collections::BTreeMap<&'static str, Addr<OutboxWorker>>;

/// What a worker is made of.
struct Parts {
    deliverers: Vec<Arc<dyn Deliverer>>,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    policy: DeliveryPolicy,
}

impl OutboxWorkers {
    /// Workers for these deliverers, not started ([`OutboxWorkers::run_term`] runs them).
    pub fn new(
        deliverers: Vec<Arc<dyn Deliverer>>,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        policy: DeliveryPolicy,
    ) -> OutboxWorkers {
        OutboxWorkers {
            workers: Arc::new(arc_swap::ArcSwap::from_pointee(Workers::new())),
            parts: Arc::new(Parts {
                deliverers,
                storage,
                clock,
                policy,
            }),
        }
    }

    /// Starts one worker per deliverer in the current arbiter, unfenced (one process).
    pub fn start(
        deliverers: Vec<Arc<dyn Deliverer>>,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        policy: DeliveryPolicy,
    ) -> OutboxWorkers {
        let workers = OutboxWorkers::new(deliverers, storage, clock, policy);
        let started = workers.spawn(None, None).0;
        workers.workers.store(Arc::new(started));
        workers
    }

    /// Makes the workers (in `arbiter`, or the current one), each fenced by `fence`; answers
    /// them and what tells when each has stopped.
    fn spawn(
        &self,
        fence: Option<FencingToken>,
        arbiter: Option<&ArbiterHandle>,
    ) -> (Workers, Vec<tokio::sync::oneshot::Receiver<()>>) {
        let p = &self.parts;
        let mut ends = Vec::new();
        let workers = p
            .deliverers
            .iter()
            .map(|d| {
                let (done, end) = tokio::sync::oneshot::channel();
                ends.push(end);
                let mut worker =
                    OutboxWorker::new(d.clone(), p.storage.clone(), p.clock.clone(), p.policy)
                        .fenced(fence);
                worker.stopped = Some(done);
                let addr = match arbiter {
                    Some(a) => OutboxWorker::start_in_arbiter(a, move |_| worker),
                    None => worker.start(),
                };
                (d.destination(), addr)
            })
            .collect();
        (workers, ends)
    }

    /// Runs the workers for one singleton term (in `arbiter`), every round fenced by the term:
    /// they start from what is pending in the outbox and, when the term ends, finish the round
    /// in flight (its outcomes recorded) and stop before this returns.
    pub async fn run_term(&self, mut term: Term, arbiter: ArbiterHandle) {
        let (workers, ends) = self.spawn(term.token(), Some(&arbiter));
        self.workers.store(Arc::new(workers.clone()));
        let all_stopped = futures_util::future::join_all(ends);
        tokio::pin!(all_stopped);
        // Every worker may stop by itself (fenced): the term is over here too.
        let fenced = tokio::select! {
            _ = term.stopped() => false,
            _ = &mut all_stopped => true,
        };
        self.workers.store(Arc::new(Workers::new()));
        if !fenced {
            for w in workers.values() {
                w.do_send(StopWorker);
            }
            all_stopped.await;
        }
    }

    /// Stops the workers here after their rounds in flight, without waiting (a node that
    /// ends as if it crashed).
    pub fn halt(&self) {
        for w in self.workers.swap(Arc::new(Workers::new())).values() {
            w.do_send(StopWorker);
        }
    }

    /// Tells every worker that new messages may be waiting.
    pub fn wake(&self) {
        for w in self.workers.load().values() {
            w.do_send(Wake);
        }
    }

    /// Whether every worker here is still running (readiness; a node that does not deliver
    /// has none to be down).
    pub fn running(&self) -> bool {
        self.workers.load().values().all(Addr::connected)
    }

    /// Whether this node delivers now.
    pub fn delivering(&self) -> bool {
        !self.workers.load().is_empty()
    }

    pub fn destinations(&self) -> Vec<&'static str> {
        self.parts
            .deliverers
            .iter()
            .map(|d| d.destination())
            .collect()
    }

    /// A destination's breaker and counters (`None` where it is not delivered now).
    pub async fn status(&self, destination: &str) -> Option<(Breaker, DeliveryStats)> {
        let worker = self.workers.load().get(destination)?.clone();
        worker.send(Status).await.ok()
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
