//! `omnihub bench outbox`: the fulfilment issue's benchmark of the transactional outbox. It runs
//! the hub's own delivery machinery in-process — a fresh [`SledStorage`], units of work carrying
//! `order.placed` rows, an [`OutboxWorkers`] with the OMS deliverer alone, inside an actix
//! System — against a running OMS simulator (`omnihub sim oms`) over real HTTP on loopback.
//!
//! It measures a steady phase (messages queued at a fixed rate: does delivery keep up, and how
//! long from queuing to the OMS's answer), then an outage (a backlog queued while the OMS
//! answers 503, the breaker open) and the time the backlog takes to drain once the OMS is back,
//! and ends with the simulator's own audit: one order per message, no effect applied twice.
//!
//! It lives in the hub, not with the load generators in `simulators`, because it drives the
//! hub's library directly and the simulators must not link the hub. Entry points:
//! [`OutboxBench`] (the arguments, checked by [`OutboxBench::check`]) and [`outbox`].

use crate::clock::{Clock, SystemClock};
use crate::config::{HubSettings, OmsSettings};
use crate::fulfilment::oms::{OmsDeliverer, DESTINATION};
use crate::outbox::{
    Breaker, Deliverer, DeliveryError, DeliveryPolicy, DeliveryStats, OutboxWorkers,
};
use crate::storage::sled::SledStorage;
use crate::storage::{Committer, Outbox, Storage, StorageError, UnitOfWork};
use async_trait::async_trait;
use futures_util::StreamExt;
use protocol::{Address, Channel, Currency, Money, OrderId, OutboxMessage};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The targets: steady delivery rate, and the backlog that must drain within the time.
const TARGET_RATE: f64 = 2_000.0;
const TARGET_BACKLOG: u64 = 100_000;
const TARGET_DRAIN: Duration = Duration::from_secs(60);
/// The steady phase commits one unit of work per tick, as a busy hub commits continuously.
const TICK: Duration = Duration::from_millis(10);
/// While the backlog is queued: messages per unit of work, and commits in flight at once (the
/// writer folds them into group commits, as it does for many actors committing at once).
const BACKLOG_UNIT: u64 = 250;
const BACKLOG_COMMITS: usize = 8;
/// How often the worker's counters are read (an actor message, no storage scan).
const POLL: Duration = Duration::from_millis(20);
/// How often a progress line is printed.
const PROGRESS: Duration = Duration::from_secs(5);
/// Steady phase: delivery "keeps up" when the backlog never holds more than this share of a
/// second's messages and the last one is delivered this soon after queuing stops.
const KEEP_UP_PENDING_SECONDS: f64 = 1.0;
const KEEP_UP_TAIL: Duration = Duration::from_secs(1);
/// The longest wait for a backlog to drain before the run gives up (ten times the target).
const DRAIN_DEADLINE: Duration = Duration::from_secs(600);
/// The longest wait for the breaker to open once the OMS is down.
const BREAKER_DEADLINE: Duration = Duration::from_secs(10);

/// Why the benchmark could not run, or failed its audit.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid arguments: {0}")]
    BadArguments(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the OMS simulator at {url}: {reason}")]
    Simulator { url: String, reason: String },
    #[error("cannot use the data directory {path}: {source}")]
    Data {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the outbox worker stopped")]
    WorkerStopped,
    #[error("the audit failed: {0}")]
    Audit(String),
}

/// The arguments of `omnihub bench outbox`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxBench {
    /// The OMS simulator's base URL; loopback only.
    pub oms: String,
    pub api_key: String,
    /// Messages queued per second in the steady phase.
    pub rate: u32,
    /// How long the steady phase queues.
    pub duration: Duration,
    /// Messages queued during the outage.
    pub backlog: u64,
    /// Deliveries in flight; `None`: the hub's default policy.
    pub concurrency: Option<usize>,
    /// The breaker's cool-down; `None`: the hub's default policy.
    pub breaker_cooldown: Option<Duration>,
    /// Where sled stores the outbox; `None`: a temporary directory, deleted afterwards.
    pub data: Option<PathBuf>,
}

impl Default for OutboxBench {
    fn default() -> OutboxBench {
        OutboxBench {
            oms: "http://127.0.0.1:8203".into(),
            api_key: "oms_test_key".into(),
            rate: 2_000,
            duration: Duration::from_secs(30),
            backlog: TARGET_BACKLOG,
            concurrency: None,
            breaker_cooldown: None,
            data: None,
        }
    }
}

impl OutboxBench {
    /// Refuses arguments the benchmark cannot run with, saying what to fix.
    pub fn check(&self) -> Result<(), BenchError> {
        let bad = |what: &str| Err(BenchError::BadArguments(what.to_owned()));
        if !is_loopback_http(&self.oms) {
            return bad(
                "--oms must be an http:// URL on loopback (127.0.0.1, [::1] or localhost): \
                 the benchmark floods the OMS and switches its faults on and off",
            );
        }
        if self.api_key.is_empty() {
            return bad("--api-key must not be empty");
        }
        if !(1..=1_000_000).contains(&self.rate) {
            return bad("--rate must be between 1 and 1000000 messages per second");
        }
        if self.duration < Duration::from_secs(1) {
            return bad("--duration must be at least 1s");
        }
        if self.backlog == 0 {
            return bad("--backlog must be at least 1");
        }
        if self.concurrency.is_some_and(|c| !(1..=4096).contains(&c)) {
            return bad("--concurrency must be between 1 and 4096");
        }
        if self.breaker_cooldown.is_some_and(|c| c.is_zero()) {
            return bad("--breaker-cooldown must be longer than zero");
        }
        Ok(())
    }

    /// The hub's default delivery policy with this run's overrides.
    pub fn policy(&self) -> DeliveryPolicy {
        let mut policy = DeliveryPolicy::default();
        if let Some(c) = self.concurrency {
            policy.concurrency = c;
        }
        if let Some(c) = self.breaker_cooldown {
            policy.breaker_cooldown = c;
        }
        policy
    }
}

/// Parses `30s`, `2m`, `1h 30m` (for the command line).
pub fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// Whether `text` is an `http://` URL whose host is a loopback address or `localhost`.
pub fn is_loopback_http(text: &str) -> bool {
    let Ok(url) = url::Url::parse(text) else {
        return false;
    };
    if url.scheme() != "http" {
        return false;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Products the generated orders draw from: SKU, name, variant, unit price in cents.
const PRODUCTS: [(&str, &str, &str, i64); 8] = [
    ("SHIRT-LIN-M", "Linen shirt", "M", 4_990),
    ("SHIRT-LIN-L", "Linen shirt", "L", 4_990),
    ("MUG-STONE", "Stoneware mug", "", 1_450),
    ("TOTE-CANVAS", "Canvas tote", "Natural", 1_990),
    ("SOCKS-WOOL-3", "Wool socks, 3 pairs", "39-42", 2_400),
    ("LAMP-DESK-BR", "Desk lamp", "Brass", 8_900),
    ("TEA-SENCHA", "Sencha tea 100 g", "", 990),
    ("BOOK-COOK", "Seasonal cookbook", "", 3_200),
];
const SHIPPING_CENTS: i64 = 495;

/// The `order.placed` message of the `sequence`-th generated order, shaped as
/// [`crate::fulfilment::order_placed`] shapes it (payload, kind, key): a new order id, 1 to 4
/// lines with quantities 1 to 3, a French address, euro prices and the total with shipping.
pub fn order_placed(sequence: u64, now: OffsetDateTime) -> OutboxMessage {
    let id = OrderId::new();
    let line_count = 1 + sequence % 4;
    let mut total = SHIPPING_CENTS;
    let lines: Vec<serde_json::Value> = (0..line_count)
        .map(|i| {
            let (sku, name, variant, cents) = PRODUCTS[((sequence * 7 + i * 3) % 8) as usize];
            let quantity = 1 + (sequence + i) % 3;
            total += cents * quantity as i64;
            json!({
                "sku": sku,
                "name": if variant.is_empty() { name.to_owned() } else { format!("{name} – {variant}") },
                "quantity": quantity,
                "unit_price": Money::new(cents, Currency::EUR),
            })
        })
        .collect();
    let address = Address {
        name: "Camille Martin".into(),
        line1: format!("{} rue de la Roquette", 1 + sequence % 180),
        line2: String::new(),
        city: "Paris".into(),
        region: String::new(),
        postcode: "75011".into(),
        country: "FR".into(),
        phone: "+33 1 43 55 00 00".into(),
    };
    let payload = json!({
        "order_id": id,
        "number": format!("W-{:07}", sequence + 1),
        "channel": Channel::Web,
        "email": format!("shopper{sequence}@example.com"),
        "lines": lines,
        "address": address,
        "shipping_method": "standard",
        "total": Money::new(total, Currency::EUR),
    });
    OutboxMessage::new(
        DESTINATION,
        "order.placed",
        format!("oms:order.placed:{id}"),
        payload.to_string(),
        now,
    )
}

/// One unit of work queuing `count` orders' messages, numbered from `first`.
fn unit_of(first: u64, count: u64, now: OffsetDateTime) -> UnitOfWork {
    (first..first + count).fold(UnitOfWork::new(), |unit, n| {
        unit.with_message(order_placed(n, now))
    })
}

/// The OMS deliverer, timing each successful delivery from queuing to the OMS's answer while
/// `recording` is on (the steady phase).
struct Timed {
    oms: OmsDeliverer,
    recording: AtomicBool,
    latencies_us: Mutex<Vec<u64>>,
}

#[async_trait]
impl Deliverer for Timed {
    fn destination(&self) -> &'static str {
        self.oms.destination()
    }

    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let outcome = self.oms.deliver(message).await;
        if outcome.is_ok() && self.recording.load(Ordering::Relaxed) {
            let took = OffsetDateTime::now_utc() - message.created_at;
            let micros = u64::try_from(took.whole_microseconds()).unwrap_or(0);
            if let Ok(mut latencies) = self.latencies_us.lock() {
                latencies.push(micros);
            }
        }
        outcome
    }
}

/// `GET /_sim/stats` of the OMS simulator.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
struct SimStats {
    orders: u64,
    deliveries: u64,
    duplicates: u64,
    effects_applied_twice: u64,
    distinct_message_ids: u64,
}

impl SimStats {
    fn since(self, before: SimStats) -> SimStats {
        SimStats {
            orders: self.orders.saturating_sub(before.orders),
            deliveries: self.deliveries.saturating_sub(before.deliveries),
            duplicates: self.duplicates.saturating_sub(before.duplicates),
            effects_applied_twice: self
                .effects_applied_twice
                .saturating_sub(before.effects_applied_twice),
            distinct_message_ids: self
                .distinct_message_ids
                .saturating_sub(before.distinct_message_ids),
        }
    }
}

/// The simulator's test API.
struct Sim {
    http: reqwest::Client,
    base: String,
}

impl Sim {
    fn fail(&self, reason: impl std::fmt::Display) -> BenchError {
        BenchError::Simulator {
            url: self.base.clone(),
            reason: reason.to_string(),
        }
    }

    async fn stats(&self) -> Result<SimStats, BenchError> {
        let res = self
            .http
            .get(format!("{}/_sim/stats", self.base))
            .send()
            .await
            .map_err(|e| {
                self.fail(format!(
                    "GET /_sim/stats: {e} (is `omnihub sim oms` running?)"
                ))
            })?;
        if !res.status().is_success() {
            return Err(self.fail(format!("GET /_sim/stats answered {}", res.status())));
        }
        res.json()
            .await
            .map_err(|e| self.fail(format!("GET /_sim/stats: {e}")))
    }

    /// Starts an outage (`POST /_sim/faults {"outage": true}`) or resets every fault
    /// (`DELETE /_sim/faults`).
    async fn outage(&self, on: bool) -> Result<(), BenchError> {
        let url = format!("{}/_sim/faults", self.base);
        let request = if on {
            self.http.post(url).json(&json!({ "outage": true }))
        } else {
            self.http.delete(url)
        };
        let res = request
            .send()
            .await
            .map_err(|e| self.fail(format!("/_sim/faults: {e} (is `omnihub sim oms` running?)")))?;
        if !res.status().is_success() {
            return Err(self.fail(format!("/_sim/faults answered {}", res.status())));
        }
        Ok(())
    }
}

/// The hub side of the run: storage, the worker, and how many messages were queued.
struct Rig {
    storage: Arc<SledStorage>,
    workers: OutboxWorkers,
    timed: Arc<Timed>,
    clock: SystemClock,
    queued: u64,
}

impl Rig {
    async fn counters(&self) -> Result<(Breaker, DeliveryStats), BenchError> {
        self.workers
            .status(DESTINATION)
            .await
            .ok_or(BenchError::WorkerStopped)
    }

    async fn delivered(&self) -> Result<u64, BenchError> {
        Ok(self.counters().await?.1.delivered)
    }

    /// Commits one unit of `count` new messages and wakes the worker; answers how long the
    /// commit took.
    async fn queue(&mut self, count: u64) -> Result<Duration, BenchError> {
        let unit = unit_of(self.queued, count, self.clock.now());
        let started = Instant::now();
        self.storage.commit(unit).await?;
        let took = started.elapsed();
        self.queued += count;
        self.workers.wake();
        Ok(took)
    }

    /// Pending and dead messages of the OMS, from storage (a full scan: used sparingly).
    async fn backlog(&self) -> Result<(u64, u64), BenchError> {
        let backlog = self.storage.backlog().await?;
        Ok(backlog
            .get(DESTINATION)
            .map_or((0, 0), |b| (b.pending, b.dead)))
    }

    /// Polls until storage holds no pending OMS message, or the deadline passes; answers
    /// whether it drained.
    async fn wait_empty(&self, deadline: Instant) -> Result<bool, BenchError> {
        loop {
            if self.backlog().await?.0 == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What the steady phase measured.
struct Steady {
    queued: u64,
    /// How long the schedule was (`--duration`); the window is how long it really took.
    schedule: Duration,
    units: u64,
    window: Duration,
    delivered_in_window: u64,
    max_pending: u64,
    /// From the end of queuing until the last message was delivered (`None`: never).
    tail: Option<Duration>,
    commit_ms: Percentiles,
    latency_ms: Percentiles,
}

impl Steady {
    /// Messages per second the schedule queued (the last tick may end a little after it).
    fn offered_rate(&self) -> f64 {
        self.queued as f64 / self.schedule.as_secs_f64()
    }

    fn kept_up(&self, rate: u32) -> bool {
        self.max_pending as f64 <= f64::from(rate) * KEEP_UP_PENDING_SECONDS
            && self.tail.is_some_and(|t| t <= KEEP_UP_TAIL)
    }
}

/// What the outage phase measured.
struct Backlog {
    queued: u64,
    delivered_during: u64,
    failed_attempts: u64,
    oms_orders_during: u64,
    /// The breaker at recovery: seconds it stays open (`None`: closed).
    breaker_open_for: Option<i64>,
    first_delivery: Option<Duration>,
    /// From recovery to an empty outbox (`None`: not within the deadline).
    drained: Option<Duration>,
}

/// p50, p99 and max of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Percentiles {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of_micros(mut sample: Vec<u64>) -> Percentiles {
        if sample.is_empty() {
            return Percentiles::default();
        }
        sample.sort_unstable();
        let at = |q: f64| {
            let i = ((sample.len() as f64 * q).ceil() as usize).clamp(1, sample.len()) - 1;
            sample[i] as f64 / 1000.0
        };
        Percentiles {
            count: sample.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Runs the benchmark (blocking, in its own actix System) and prints its figures. Fails when
/// the arguments are wrong, the simulator or storage cannot be used, or the audit fails.
pub fn outbox(bench: OutboxBench) -> Result<(), BenchError> {
    bench.check()?;
    let data = DataDir::new(bench.data.clone())?;
    actix::System::new().block_on(run(bench, data.path().to_path_buf()))
}

/// The data directory: the one given (must be empty), or a temporary one deleted on drop.
struct DataDir {
    path: PathBuf,
    temporary: bool,
}

impl DataDir {
    fn new(given: Option<PathBuf>) -> Result<DataDir, BenchError> {
        let Some(path) = given else {
            let path =
                std::env::temp_dir().join(format!("omnihub-bench-outbox-{}", ulid::Ulid::new()));
            return Ok(DataDir {
                path,
                temporary: true,
            });
        };
        let empty = match std::fs::read_dir(&path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(source) => return Err(BenchError::Data { path, source }),
        };
        if !empty {
            return Err(BenchError::BadArguments(format!(
                "--data {} is not empty: give a new or empty directory, so the outbox starts empty",
                path.display()
            )));
        }
        Ok(DataDir {
            path,
            temporary: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.temporary {
            // Best effort: a leftover temporary directory is harmless.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

async fn run(bench: OutboxBench, data: PathBuf) -> Result<(), BenchError> {
    let started = Instant::now();
    let policy = bench.policy();
    let base = bench.oms.trim_end_matches('/').to_owned();
    let sim = Sim {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(BenchError::Client)?,
        base: base.clone(),
    };
    // A clean slate: no fault left over from an earlier run.
    sim.outage(false).await?;
    let before = sim.stats().await?;
    let cache_mb = HubSettings::default().cache_mb;
    let storage = SledStorage::open(&data, cache_mb)?;
    let settings = OmsSettings {
        base_url: base.clone(),
        api_key: secrecy::SecretString::from(bench.api_key.clone()),
        ..OmsSettings::default()
    };
    let timed = Arc::new(Timed {
        oms: OmsDeliverer::new(&settings).map_err(BenchError::Client)?,
        recording: AtomicBool::new(false),
        latencies_us: Mutex::new(Vec::new()),
    });
    let dyn_storage: Arc<dyn Storage> = storage.clone();
    let workers = OutboxWorkers::start(
        vec![timed.clone() as Arc<dyn Deliverer>],
        dyn_storage,
        Arc::new(SystemClock),
        policy,
    );
    let mut rig = Rig {
        storage,
        workers,
        timed,
        clock: SystemClock,
        queued: 0,
    };
    print_header(&bench, &policy, &data, cache_mb);

    println!(
        "\nphase 1/2: steady, {} msg/s for {}",
        bench.rate,
        humantime::format_duration(bench.duration)
    );
    let steady = steady(&mut rig, &bench).await?;
    print_steady(&steady);

    println!(
        "\nphase 2/2: an outage with a backlog of {} messages, then recovery",
        bench.backlog
    );
    let outage = backlog(&mut rig, &sim, &bench, &policy, before).await?;
    print_backlog(&outage);

    let after = sim.stats().await?.since(before);
    let (pending, dead) = rig.backlog().await?;
    let audit = audit(&rig, after, before, pending, dead);
    print_audit(&rig, after, before, pending, dead);
    print_targets(&bench, &steady, &outage, after, before);
    println!("bench: {:.1} s wall", started.elapsed().as_secs_f64());
    audit
}

fn print_header(bench: &OutboxBench, policy: &DeliveryPolicy, data: &Path, cache_mb: u64) {
    let default = DeliveryPolicy::default();
    let which = |flag: &str, set: bool, default: String| {
        if set {
            format!("set by {flag}; the hub's default is {default}")
        } else {
            "the hub's default".to_owned()
        }
    };
    println!("omnihub bench outbox");
    println!(
        "  oms          {} (the OMS simulator over real HTTP: POST /orders, X-Message-Id)",
        bench.oms
    );
    println!(
        "  storage      sled in {}{}, fresh; page cache {cache_mb} MiB",
        data.display(),
        if bench.data.is_some() {
            ""
        } else {
            " (temporary)"
        }
    );
    println!(
        "  worker       the OMS deliverer alone: {} in flight ({}), {} per round, polls every {}",
        policy.concurrency,
        which(
            "--concurrency",
            bench.concurrency.is_some(),
            default.concurrency.to_string()
        ),
        policy.batch,
        humantime::format_duration(policy.poll_every)
    );
    println!(
        "  retries      backoff {} doubling to {} (+ up to 50% jitter); breaker opens after {} failures in a row",
        humantime::format_duration(policy.base_backoff),
        humantime::format_duration(policy.max_backoff),
        policy.breaker_threshold
    );
    println!(
        "  breaker      cool-down {} ({})",
        humantime::format_duration(policy.breaker_cooldown),
        which(
            "--breaker-cooldown",
            bench.breaker_cooldown.is_some(),
            humantime::format_duration(default.breaker_cooldown).to_string()
        )
    );
    println!(
        "  steady       {} msg/s for {}: one unit of work per {} ms tick, the worker woken after each commit",
        bench.rate,
        humantime::format_duration(bench.duration),
        TICK.as_millis()
    );
    println!(
        "  backlog      {} messages queued during an outage: units of {BACKLOG_UNIT}, {BACKLOG_COMMITS} commits at once",
        bench.backlog
    );
}

/// Phase 1: queues at the rate for the duration, sampling the worker's counters, then waits
/// for the last message.
async fn steady(rig: &mut Rig, bench: &OutboxBench) -> Result<Steady, BenchError> {
    let d0 = rig.delivered().await?;
    let q0 = rig.queued;
    rig.timed.recording.store(true, Ordering::Relaxed);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commits = Vec::new();
    let mut max_pending = 0u64;
    let mut last_poll = Instant::now();
    let mut last_progress = Instant::now();
    let start = Instant::now();
    while start.elapsed() < bench.duration {
        tick.tick().await;
        // The count owed by now, so a late tick catches up instead of lowering the rate.
        let owed =
            (start.elapsed().min(bench.duration).as_secs_f64() * f64::from(bench.rate)) as u64;
        let due = owed.saturating_sub(rig.queued - q0);
        if due > 0 {
            commits.push(micros(rig.queue(due).await?));
        }
        if last_poll.elapsed() >= POLL {
            last_poll = Instant::now();
            let pending = (rig.queued - q0).saturating_sub(rig.delivered().await? - d0);
            max_pending = max_pending.max(pending);
            if last_progress.elapsed() >= PROGRESS {
                last_progress = Instant::now();
                println!(
                    "  +{:5.1} s  queued {:>8}  delivered {:>8}  pending {:>6}",
                    start.elapsed().as_secs_f64(),
                    rig.queued - q0,
                    rig.delivered().await? - d0,
                    pending
                );
            }
        }
    }
    // The loop ends on the first tick past the schedule: queue what it still owed, so the
    // schedule is exactly rate × duration.
    let total = (bench.duration.as_secs_f64() * f64::from(bench.rate)) as u64;
    let due = total.saturating_sub(rig.queued - q0);
    if due > 0 {
        commits.push(micros(rig.queue(due).await?));
    }
    let window = start.elapsed();
    let queued = rig.queued - q0;
    let delivered_in_window = rig.delivered().await? - d0;
    let stop = Instant::now();
    let tail = loop {
        let delivered = rig.delivered().await? - d0;
        max_pending = max_pending.max(queued.saturating_sub(delivered));
        if delivered >= queued && rig.wait_empty(stop + DRAIN_DEADLINE).await? {
            break Some(stop.elapsed());
        }
        if stop.elapsed() >= DRAIN_DEADLINE {
            break None;
        }
        tokio::time::sleep(POLL).await;
    };
    rig.timed.recording.store(false, Ordering::Relaxed);
    let latencies = rig
        .timed
        .latencies_us
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    Ok(Steady {
        queued,
        schedule: bench.duration,
        units: commits.len() as u64,
        window,
        delivered_in_window,
        max_pending,
        tail,
        commit_ms: Percentiles::of_micros(commits),
        latency_ms: Percentiles::of_micros(latencies),
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn print_steady(s: &Steady) {
    println!(
        "  queued       {} messages on a {:.0} s schedule = {:.1} msg/s (last commit at {:.2} s), {} units of work (commit p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms)",
        s.queued,
        s.schedule.as_secs_f64(),
        s.offered_rate(),
        s.window.as_secs_f64(),
        s.units,
        s.commit_ms.p50,
        s.commit_ms.p99,
        s.commit_ms.max
    );
    println!(
        "  delivered    {} within the window = {:.1} msg/s; {}",
        s.delivered_in_window,
        s.delivered_in_window as f64 / s.window.as_secs_f64(),
        match s.tail {
            Some(t) => format!(
                "the last of all {} {:.3} s after queuing stopped",
                s.queued,
                t.as_secs_f64()
            ),
            None => format!(
                "NOT all delivered {} s after queuing stopped",
                DRAIN_DEADLINE.as_secs()
            ),
        }
    );
    println!(
        "  backlog      at most {} pending (queued, not yet acknowledged; read every {} ms)",
        s.max_pending,
        POLL.as_millis()
    );
    println!(
        "  latency      queued → OMS answered 2xx: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} deliveries)",
        s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.max, s.latency_ms.count
    );
}

/// Phase 2: the OMS goes down, the backlog is queued, the OMS comes back, the backlog drains.
async fn backlog(
    rig: &mut Rig,
    sim: &Sim,
    bench: &OutboxBench,
    policy: &DeliveryPolicy,
    before: SimStats,
) -> Result<Backlog, BenchError> {
    sim.outage(true).await?;
    println!(
        "  outage       POST /_sim/faults {{\"outage\": true}}: the OMS answers 503 to everything"
    );
    let orders_before = sim.stats().await?.since(before).orders;
    let (_, s0) = rig.counters().await?;
    let queue_time = queue_backlog(rig, bench.backlog).await?;
    let breaker_deadline = Instant::now() + BREAKER_DEADLINE;
    let (breaker, s1) = loop {
        let (breaker, stats) = rig.counters().await?;
        if matches!(breaker, Breaker::Open { .. }) || Instant::now() >= breaker_deadline {
            break (breaker, stats);
        }
        tokio::time::sleep(POLL).await;
    };
    let oms_orders_during = sim.stats().await?.since(before).orders - orders_before;
    println!(
        "  queued       {} messages in {:.2} s = {:.0} msg/s",
        bench.backlog,
        queue_time.as_secs_f64(),
        bench.backlog as f64 / queue_time.as_secs_f64()
    );
    sim.outage(false).await?;
    let recovered = Instant::now();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let breaker_open_for = match breaker {
        Breaker::Open { until } => Some((until - now).max(0)),
        Breaker::Closed { .. } => None,
    };
    println!(
        "  during       {} delivered, {} failed attempts, the breaker {}; the OMS took {} orders",
        s1.delivered - s0.delivered,
        s1.failed_attempts - s0.failed_attempts,
        match breaker_open_for {
            Some(s) => format!(
                "open (a probe in {s} s, cool-down {})",
                humantime::format_duration(policy.breaker_cooldown)
            ),
            None => "closed".into(),
        },
        oms_orders_during
    );
    println!("  recovery     DELETE /_sim/faults at +0.0 s");
    let (first_delivery, drained) = drain(rig, s1.delivered, bench.backlog, recovered).await?;
    let s2 = rig.counters().await?.1;
    Ok(Backlog {
        queued: bench.backlog,
        delivered_during: s1.delivered - s0.delivered,
        failed_attempts: s2.failed_attempts - s0.failed_attempts,
        oms_orders_during,
        breaker_open_for,
        first_delivery,
        drained,
    })
}

/// Queues `count` messages as fast as storage takes them; answers how long it took.
async fn queue_backlog(rig: &mut Rig, count: u64) -> Result<Duration, BenchError> {
    let first = rig.queued;
    let started = Instant::now();
    let storage = rig.storage.clone();
    let workers = rig.workers.clone();
    let now = rig.clock.now();
    let units = (0..count.div_ceil(BACKLOG_UNIT)).map(|i| {
        let from = i * BACKLOG_UNIT;
        unit_of(first + from, BACKLOG_UNIT.min(count - from), now)
    });
    let mut commits = futures_util::stream::iter(units)
        .map(|unit| storage.commit(unit))
        .buffer_unordered(BACKLOG_COMMITS);
    while let Some(committed) = commits.next().await {
        committed?;
        workers.wake();
    }
    rig.queued += count;
    Ok(started.elapsed())
}

/// Waits for `count` deliveries after `delivered_before`, then for storage to hold none;
/// answers the first delivery's and the empty outbox's times since `recovered`.
async fn drain(
    rig: &Rig,
    delivered_before: u64,
    count: u64,
    recovered: Instant,
) -> Result<(Option<Duration>, Option<Duration>), BenchError> {
    let mut first = None;
    let mut last_progress = Instant::now();
    loop {
        let delivered = rig.delivered().await? - delivered_before;
        if first.is_none() && delivered > 0 {
            first = Some(recovered.elapsed());
            println!(
                "  first        delivery seen at +{:.1} s",
                recovered.elapsed().as_secs_f64()
            );
        }
        if delivered >= count && rig.wait_empty(recovered + DRAIN_DEADLINE).await? {
            return Ok((first, Some(recovered.elapsed())));
        }
        if recovered.elapsed() >= DRAIN_DEADLINE {
            return Ok((first, None));
        }
        if last_progress.elapsed() >= PROGRESS {
            last_progress = Instant::now();
            let (breaker, _) = rig.counters().await?;
            println!(
                "  +{:5.1} s     delivered {:>7}  pending {:>7}  breaker {}",
                recovered.elapsed().as_secs_f64(),
                delivered,
                count.saturating_sub(delivered),
                if matches!(breaker, Breaker::Open { .. }) {
                    "open"
                } else {
                    "closed"
                }
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_backlog(b: &Backlog) {
    match b.drained {
        Some(d) => {
            let from_first = b.first_delivery.map_or(d, |f| d.saturating_sub(f));
            println!(
                "  drained      outbox empty at +{:.1} s: {:.0} msg/s from recovery, {:.0} msg/s from the first delivery",
                d.as_secs_f64(),
                b.queued as f64 / d.as_secs_f64(),
                b.queued as f64 / from_first.as_secs_f64().max(f64::EPSILON)
            );
        }
        None => println!(
            "  drained      NOT within {} s of recovery",
            DRAIN_DEADLINE.as_secs()
        ),
    }
    println!(
        "  attempts     {} failed in all during the phase (each moved the message's next attempt back)",
        b.failed_attempts
    );
}

/// Checks the simulator's audit; answers an error naming what failed.
fn audit(
    rig: &Rig,
    after: SimStats,
    before: SimStats,
    pending: u64,
    dead: u64,
) -> Result<(), BenchError> {
    let mut failures = Vec::new();
    if after.orders < rig.queued {
        failures.push(format!(
            "the OMS created {} orders for {} messages",
            after.orders, rig.queued
        ));
    } else if after.orders > rig.queued {
        // The counts are the simulator's, for every client: a hub started with the default
        // OMS URL exports its orders there too.
        failures.push(format!(
            "the OMS created {} orders for {} messages: did another client use this simulator? \
             Run it on a port of its own (--listen, --oms)",
            after.orders, rig.queued
        ));
    }
    if after.effects_applied_twice > 0 || before.effects_applied_twice > 0 {
        failures.push(format!(
            "effects applied twice: {} in this run, {} before it",
            after.effects_applied_twice, before.effects_applied_twice
        ));
    }
    if pending > 0 || dead > 0 {
        failures.push(format!(
            "{pending} messages still pending and {dead} dead letters"
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(BenchError::Audit(failures.join("; ")))
    }
}

fn print_audit(rig: &Rig, after: SimStats, before: SimStats, pending: u64, dead: u64) {
    println!("\naudit (GET /_sim/stats, counted from the start of this run)");
    println!("  queued         {:>8}  messages in all", rig.queued);
    println!(
        "  orders         {:>8}  orders the OMS created (must equal the messages)",
        after.orders
    );
    println!(
        "  deliveries     {:>8}  POST /orders calls that reached the OMS's book",
        after.deliveries
    );
    println!(
        "  duplicates     {:>8}  redeliveries the OMS recognised by order id and replayed",
        after.duplicates
    );
    println!(
        "  applied twice  {:>8}  effects applied twice (must be 0; {} before this run)",
        after.effects_applied_twice, before.effects_applied_twice
    );
    println!(
        "  message ids    {:>8}  distinct X-Message-Id values seen",
        after.distinct_message_ids
    );
    println!("  outbox         {pending:>8}  pending, {dead} dead letters at the end");
}

fn print_targets(bench: &OutboxBench, s: &Steady, b: &Backlog, after: SimStats, before: SimStats) {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let rate_ok = s.offered_rate() >= TARGET_RATE && s.kept_up(bench.rate);
    let drain_ok = b.queued >= TARGET_BACKLOG && b.drained.is_some_and(|d| d < TARGET_DRAIN);
    let twice = after.effects_applied_twice + before.effects_applied_twice;
    let rows = [
        (
            format!("steady delivery ≥ {TARGET_RATE:.0} msg/s"),
            format!(
                "{:.0} msg/s offered, {} (max {} pending, last {})",
                s.offered_rate(),
                if s.kept_up(bench.rate) {
                    "kept up"
                } else {
                    "fell behind"
                },
                s.max_pending,
                s.tail
                    .map_or("never".into(), |t| format!("+{:.2} s", t.as_secs_f64()))
            ),
            rate_ok,
        ),
        (
            format!(
                "backlog of {TARGET_BACKLOG} drained < {} s",
                TARGET_DRAIN.as_secs()
            ),
            match b.drained {
                Some(d) => format!("{} in {:.1} s", b.queued, d.as_secs_f64()),
                None => format!("{} not drained", b.queued),
            },
            drain_ok,
        ),
        (
            "nothing delivered during the outage".to_owned(),
            format!(
                "{} delivered, {} OMS orders",
                b.delivered_during, b.oms_orders_during
            ),
            b.delivered_during == 0 && b.oms_orders_during == 0,
        ),
        (
            "effects applied twice = 0".to_owned(),
            format!("{twice} ({} duplicates deduplicated)", after.duplicates),
            twice == 0,
        ),
    ];
    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0) + 2;
    let value_width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0) + 2;
    println!("\ntargets");
    for (name, value, ok) in rows {
        println!("  {name:<width$}{value:<value_width$}{}", verdict(ok));
    }
    if b.breaker_open_for.is_some() {
        println!(
            "  (the drain time includes the breaker's remaining cool-down and the first poll: see `first delivery` above)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_urls_are_accepted() {
        let cases = [
            ("http://127.0.0.1:8203", true),
            ("http://127.0.0.1:8203/", true),
            ("http://127.1.2.3:9000", true),
            ("http://localhost:8203", true),
            ("http://LOCALHOST:8203", true),
            ("http://[::1]:8203", true),
            ("https://127.0.0.1:8203", false),
            ("http://10.0.0.5:8203", false),
            ("http://192.168.1.20:8203", false),
            ("http://[::2]:8203", false),
            ("http://oms.example.com", false),
            ("http://localhost.example.com", false),
            ("127.0.0.1:8203", false),
            ("", false),
        ];
        for (url, ok) in cases {
            assert_eq!(is_loopback_http(url), ok, "{url}");
        }
    }

    #[test]
    fn the_defaults_pass_and_each_bad_argument_is_refused() {
        assert!(OutboxBench::default().check().is_ok());
        type Spoil = fn(&mut OutboxBench);
        let bad: [(&str, Spoil); 9] = [
            ("--oms", |b| b.oms = "http://10.1.1.1:8203".into()),
            ("--api-key", |b| b.api_key.clear()),
            ("--rate", |b| b.rate = 0),
            ("--rate", |b| b.rate = 2_000_000),
            ("--duration", |b| b.duration = Duration::from_millis(500)),
            ("--backlog", |b| b.backlog = 0),
            ("--concurrency", |b| b.concurrency = Some(0)),
            ("--concurrency", |b| b.concurrency = Some(5_000)),
            ("--breaker-cooldown", |b| {
                b.breaker_cooldown = Some(Duration::ZERO)
            }),
        ];
        for (flag, spoil) in bad {
            let mut bench = OutboxBench::default();
            spoil(&mut bench);
            match bench.check() {
                Err(BenchError::BadArguments(why)) => assert!(why.contains(flag), "{flag}: {why}"),
                other => panic!("{flag}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_policy_is_the_hubs_default_unless_a_flag_overrides_it() {
        let default = DeliveryPolicy::default();
        let plain = OutboxBench::default().policy();
        assert_eq!(plain.concurrency, default.concurrency);
        assert_eq!(plain.breaker_cooldown, default.breaker_cooldown);
        let tuned = OutboxBench {
            concurrency: Some(64),
            breaker_cooldown: Some(Duration::from_secs(2)),
            ..OutboxBench::default()
        }
        .policy();
        assert_eq!(tuned.concurrency, 64);
        assert_eq!(tuned.breaker_cooldown, Duration::from_secs(2));
        assert_eq!(tuned.batch, default.batch);
    }

    #[test]
    fn a_given_data_directory_must_be_new_or_empty() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let fresh = dir.path().join("fresh");
        assert!(DataDir::new(Some(fresh)).is_ok());
        assert!(DataDir::new(Some(dir.path().to_path_buf())).is_ok());
        std::fs::write(dir.path().join("db"), b"x").expect("a file");
        assert!(matches!(
            DataDir::new(Some(dir.path().to_path_buf())),
            Err(BenchError::BadArguments(_))
        ));
    }

    #[test]
    fn generated_orders_look_like_the_hubs_and_pass_the_oms_checks() {
        let now = OffsetDateTime::now_utc();
        let mut ids = std::collections::HashSet::new();
        for sequence in 0..16 {
            let m = order_placed(sequence, now);
            assert_eq!(
                (m.destination.as_str(), m.kind.as_str()),
                (DESTINATION, "order.placed")
            );
            assert!(m.due(now));
            let body: serde_json::Value = serde_json::from_str(&m.payload).expect("JSON");
            let id = body["order_id"].as_str().expect("an order id").to_owned();
            assert_eq!(m.key, format!("oms:order.placed:{id}"));
            // The OMS accepts 1 to 64 letters, digits, '-' or '_'.
            assert!(
                id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{id}"
            );
            assert!(ids.insert(id), "order ids are unique");
            assert_eq!(body["number"], format!("W-{:07}", sequence + 1));
            assert_eq!(body["channel"], "web");
            let lines = body["lines"].as_array().expect("lines");
            assert_eq!(lines.len() as u64, 1 + sequence % 4);
            let mut total = SHIPPING_CENTS;
            for line in lines {
                assert!(!line["sku"].as_str().unwrap_or_default().is_empty());
                let quantity = line["quantity"].as_i64().expect("a quantity");
                assert!((1..=3).contains(&quantity));
                assert_eq!(line["unit_price"]["currency"], "EUR");
                total += quantity * line["unit_price"]["minor"].as_i64().expect("cents");
            }
            assert_eq!(body["total"], json!({"minor": total, "currency": "EUR"}));
            for field in ["line1", "city", "postcode", "country"] {
                assert!(
                    !body["address"][field]
                        .as_str()
                        .unwrap_or_default()
                        .is_empty(),
                    "{field}"
                );
            }
        }
    }

    #[test]
    fn a_unit_of_work_carries_one_message_per_order() {
        let unit = unit_of(10, 5, OffsetDateTime::now_utc());
        assert_eq!(unit.outbox.len(), 5);
        assert!(unit.changes.is_empty());
        let numbers: Vec<String> = unit
            .outbox
            .iter()
            .map(|m| {
                let body: serde_json::Value = serde_json::from_str(&m.payload).expect("JSON");
                body["number"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(
            numbers,
            [
                "W-0000011",
                "W-0000012",
                "W-0000013",
                "W-0000014",
                "W-0000015"
            ]
        );
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let p = Percentiles::of_micros((1..=1000).rev().map(|ms| ms * 1000).collect());
        assert_eq!(
            p,
            Percentiles {
                count: 1000,
                p50: 500.0,
                p99: 990.0,
                max: 1000.0
            }
        );
        assert_eq!(Percentiles::of_micros(Vec::new()), Percentiles::default());
    }
}
