//! The hub's Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
//!
//! Two kinds of series:
//! - **Counted as things happen** (process-wide, in [`metrics()`]): HTTP requests and their
//!   latency per route pattern, the sled writer's group commits and flushes, messages queued at
//!   the shared actors, payment provider calls, payment webhook events and every webhook's
//!   outcome.
//! - **Read at scrape time** ([`scrape`]): what the running hub can tell cheaply — the
//!   directory's counts, the outbox's per-destination counters (kept by the storage writer, so
//!   no scan), the edge replica's live view of each node, the analyst's lag, the process's
//!   memory and CPU. Nothing here walks a tree whose size grows with the data.

use crate::app::HubHandle;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::OnceLock;

/// The process-wide series counted as things happen.
pub struct Metrics {
    registry: Registry,
    /// `omnihub_http_requests_total{method, route, status}`: `route` is the matched pattern
    /// (`/api/v1/baskets/{id}`), never the raw path; `status` the class (`2xx`, …).
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// The sled writer: seconds per flush (fsync) and units per group commit.
    pub storage_flush: Histogram,
    pub storage_group: Histogram,
    /// Messages sent to a shared actor and not yet answered (`directory`, `inventory`), and
    /// events the recorder holds before appending them (`recorder`).
    pub mailbox: IntGaugeVec,
    /// `omnihub_payment_provider_calls_total{operation, outcome}`.
    pub payment_calls: IntCounterVec,
    /// `omnihub_payment_events_total{event}`: the provider's webhook events by what they said.
    pub payment_events: IntCounterVec,
    /// `omnihub_webhooks_total{source, outcome}`: `accepted`, or the refusal's code.
    pub webhooks: IntCounterVec,
    /// `omnihub_fenced_units_total`: units of work the cluster storage refused because their
    /// fencing token was no longer their shard's current one (this node lost the lease, e.g.
    /// while partitioned from the database, and another node took the shard).
    pub fenced_units: IntCounter,
}

// The definitions below are constants: `new` and `register` fail only on an invalid name or a
// name registered twice, which the tests would show at once.
fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("a metric registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("a valid metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("a metric registered once");
    h
}

/// Latency buckets in seconds, from half a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let http_requests = counter_vec(
            &registry,
            "omnihub_http_requests_total",
            "HTTP requests answered, by method, route pattern and status class.",
            &["method", "route", "status"],
        );
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "omnihub_http_request_duration_seconds",
                "Time to answer an HTTP request, by method, route pattern and status class.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )
        .expect("a valid metric definition");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("a metric registered once");
        let storage_flush = histogram(
            &registry,
            "omnihub_storage_flush_seconds",
            "Time the sled writer spends flushing (fsync) one group commit.",
            LATENCY_BUCKETS.to_vec(),
        );
        let storage_group = histogram(
            &registry,
            "omnihub_storage_group_commit_units",
            "Units of work (and event appends) folded into one group commit.",
            vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ],
        );
        let mailbox = IntGaugeVec::new(
            Opts::new(
                "omnihub_mailbox_depth",
                "Messages queued at a shared actor and not yet handled (the recorder: events \
                 buffered before their append).",
            ),
            &["actor"],
        )
        .expect("a valid metric definition");
        registry
            .register(Box::new(mailbox.clone()))
            .expect("a metric registered once");
        let payment_calls = counter_vec(
            &registry,
            "omnihub_payment_provider_calls_total",
            "Calls to the payment provider by operation and outcome (ok, refused, unavailable).",
            &["operation", "outcome"],
        );
        let payment_events = counter_vec(
            &registry,
            "omnihub_payment_events_total",
            "Payment provider webhook events applied, by what they report.",
            &["event"],
        );
        let webhooks = counter_vec(
            &registry,
            "omnihub_webhooks_total",
            "Webhooks received by source and outcome: accepted, or the refusal's code.",
            &["source", "outcome"],
        );
        let fenced_units = IntCounter::new(
            "omnihub_fenced_units_total",
            "Units of work the cluster storage refused for a stale fencing token (this node \
             had lost the shard's lease to another node).",
        )
        .expect("a valid metric definition");
        registry
            .register(Box::new(fenced_units.clone()))
            .expect("a metric registered once");
        Metrics {
            registry,
            http_requests,
            http_duration,
            storage_flush,
            storage_group,
            mailbox,
            payment_calls,
            payment_events,
            webhooks,
            fenced_units,
        }
    }
}

/// The process-wide series.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A message on its way to a shared actor: counted in `omnihub_mailbox_depth{actor}` from its
/// creation until it is dropped (answered, or given up by a caller that stopped waiting).
pub struct Queued(IntGauge);

impl Queued {
    pub fn at(actor: &str) -> Queued {
        let gauge = metrics().mailbox.with_label_values(&[actor]);
        gauge.inc();
        Queued(gauge)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Sets the recorder's buffered events (`omnihub_mailbox_depth{actor="recorder"}`).
pub fn recorder_buffered(events: usize) {
    metrics()
        .mailbox
        .with_label_values(&["recorder"])
        .set(i64::try_from(events).unwrap_or(i64::MAX));
}

/// The series read at scrape time, registered in a registry of their own per scrape.
struct Scraped {
    registry: Registry,
}

impl Scraped {
    fn gauge(&self, name: &str, help: &str, value: i64) {
        if let Ok(g) = IntGauge::new(name, help) {
            g.set(value);
            let _ = self.registry.register(Box::new(g));
        }
    }

    fn counter(&self, name: &str, help: &str, value: u64) {
        if let Ok(c) = IntCounter::new(name, help) {
            c.inc_by(value);
            let _ = self.registry.register(Box::new(c));
        }
    }

    fn gauges(&self, name: &str, help: &str, label: &str, values: &[(String, i64)]) {
        if let Ok(g) = IntGaugeVec::new(Opts::new(name, help), &[label]) {
            for (l, v) in values {
                g.with_label_values(&[l.as_str()]).set(*v);
            }
            let _ = self.registry.register(Box::new(g));
        }
    }

    fn counters(&self, name: &str, help: &str, label: &str, values: &[(String, u64)]) {
        if let Ok(c) = IntCounterVec::new(Opts::new(name, help), &[label]) {
            for (l, v) in values {
                c.with_label_values(&[l.as_str()]).inc_by(*v);
            }
            let _ = self.registry.register(Box::new(c));
        }
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The whole exposition: the counted series and those read from `handle` now.
pub async fn scrape(handle: &HubHandle) -> String {
    let scraped = Scraped {
        registry: Registry::new(),
    };
    actors(handle, &scraped).await;
    outbox(handle, &scraped).await;
    edge(handle, &scraped).await;
    process(&scraped);
    let mut families = metrics().registry.gather();
    families.extend(scraped.registry.gather());
    let mut out = String::new();
    if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::warn!(error = %e, "metrics could not be encoded");
    }
    out
}

async fn actors(handle: &HubHandle, s: &Scraped) {
    if let Some(stats) = handle.stats().await {
        s.gauges(
            "omnihub_active_actors",
            "Entity actors active now, by kind.",
            "kind",
            &[
                ("basket".into(), signed(stats.active_baskets as u64)),
                ("customer".into(), signed(stats.active_customers as u64)),
            ],
        );
        s.counter(
            "omnihub_actor_activations_total",
            "Entity actors activated since the hub started.",
            stats.activations,
        );
        s.counter(
            "omnihub_actor_passivations_total",
            "Entity actors passivated since the hub started.",
            stats.passivations,
        );
    }
    let appended = *crate::storage::EventLog::appended(handle.storage.as_ref()).borrow();
    let processed = *handle.experience.processed().borrow();
    s.gauge(
        "omnihub_analyst_lag_events",
        "Events appended to the log and not yet folded in by the analyst.",
        signed(appended.saturating_sub(processed)),
    );
}

async fn outbox(handle: &HubHandle, s: &Scraped) {
    let now = time::OffsetDateTime::now_utc();
    if let Ok(backlog) = handle.storage_backlog().await {
        let pending: Vec<(String, i64)> = backlog
            .iter()
            .map(|(d, b)| (d.clone(), signed(b.pending)))
            .collect();
        let dead: Vec<(String, i64)> = backlog
            .iter()
            .map(|(d, b)| (d.clone(), signed(b.dead)))
            .collect();
        let oldest: Vec<(String, i64)> = backlog
            .iter()
            .map(|(d, b)| {
                let age = b.oldest.map_or(0, |o| (now - o).whole_seconds().max(0));
                (d.clone(), age)
            })
            .collect();
        s.gauges(
            "omnihub_outbox_pending",
            "Outbox messages waiting per destination.",
            "destination",
            &pending,
        );
        s.gauges(
            "omnihub_outbox_dead_letters",
            "Dead letters per destination (an operator retries or discards them).",
            "destination",
            &dead,
        );
        s.gauges(
            "omnihub_outbox_oldest_age_seconds",
            "Age of the oldest waiting message per destination.",
            "destination",
            &oldest,
        );
    }
    let mut open = Vec::new();
    let mut delivered = Vec::new();
    let mut failed = Vec::new();
    let mut dead_lettered = Vec::new();
    for d in handle.outbox.destinations() {
        if let Some((breaker, stats)) = handle.outbox.status(d).await {
            let is_open = matches!(breaker, crate::outbox::Breaker::Open { .. });
            open.push((d.to_string(), i64::from(is_open)));
            delivered.push((d.to_string(), stats.delivered));
            failed.push((d.to_string(), stats.failed_attempts));
            dead_lettered.push((d.to_string(), stats.dead_lettered));
        }
    }
    s.gauges(
        "omnihub_outbox_breaker_open",
        "1 while a destination's circuit breaker is open.",
        "destination",
        &open,
    );
    s.counters(
        "omnihub_outbox_delivered_total",
        "Messages delivered per destination since the hub started.",
        "destination",
        &delivered,
    );
    s.counters(
        "omnihub_outbox_failed_attempts_total",
        "Failed delivery attempts per destination since the hub started.",
        "destination",
        &failed,
    );
    s.counters(
        "omnihub_outbox_dead_lettered_total",
        "Messages that became dead letters per destination since the hub started.",
        "destination",
        &dead_lettered,
    );
}

async fn edge(handle: &HubHandle, s: &Scraped) {
    let Ok(nodes) = handle.edge.live().await else {
        return;
    };
    let now_ms = crate::edge::unix_ms(time::OffsetDateTime::now_utc());
    let active: Vec<_> = nodes.iter().filter(|n| n.retired.is_none()).collect();
    s.gauge(
        "omnihub_edge_nodes_connected",
        "Edge nodes connected now.",
        signed(active.iter().filter(|n| n.connected).count() as u64),
    );
    let node = |n: &&crate::edge::replica::NodeLive| n.replica.to_string();
    s.gauges(
        "omnihub_edge_node_connected",
        "1 while the node is connected.",
        "node",
        &active
            .iter()
            .map(|n| (node(n), i64::from(n.connected)))
            .collect::<Vec<_>>(),
    );
    s.gauges(
        "omnihub_edge_outbox_unacked",
        "Hub changes a node has not acknowledged.",
        "node",
        &active
            .iter()
            .map(|n| (node(n), signed(n.unacked_to_node())))
            .collect::<Vec<_>>(),
    );
    s.gauges(
        "omnihub_edge_node_pending",
        "Changes the node reported as not yet acknowledged by the hub (its last heartbeat).",
        "node",
        &active
            .iter()
            .map(|n| (node(n), signed(n.meta.node_pending)))
            .collect::<Vec<_>>(),
    );
    s.gauges(
        "omnihub_edge_last_sync_age_seconds",
        "Seconds since a node's last batch was applied.",
        "node",
        &active
            .iter()
            .filter_map(|n| {
                let ms = n.meta.last_sync_ms?;
                Some((node(n), signed(now_ms.saturating_sub(ms) / 1000)))
            })
            .collect::<Vec<_>>(),
    );
    s.gauges(
        "omnihub_boards_online",
        "Boards connected and heard from at a node, as it last reported.",
        "node",
        &active
            .iter()
            .filter(|n| n.boards_heard_ms.is_some())
            .map(|n| {
                let online = n.boards.iter().filter(|b| !b.dark && b.connections > 0);
                (node(n), signed(online.count() as u64))
            })
            .collect::<Vec<_>>(),
    );
    s.gauges(
        "omnihub_boards_configured",
        "Boards configured at a node, as it last reported.",
        "node",
        &active
            .iter()
            .filter(|n| n.boards_heard_ms.is_some())
            .map(|n| (node(n), signed(n.boards.len() as u64)))
            .collect::<Vec<_>>(),
    );
}

fn process(s: &Scraped) {
    if let Some(rss) = crate::app::resident_bytes() {
        s.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            signed(rss),
        );
    }
    if let Some(ticks) = cpu_ticks() {
        s.counter(
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds (whole seconds).",
            ticks / CLOCK_TICKS,
        );
    }
}

/// Linux reports CPU times in `/proc` in USER_HZ, which is 100 on every architecture Rust
/// targets.
pub const CLOCK_TICKS: u64 = 100;

/// User plus system CPU time of this process in clock ticks (Linux), for ops and benchmarks.
pub fn cpu_ticks() -> Option<u64> {
    stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime + stime from a `/proc/.../stat` line (fields 14 and 15; the command name in
/// parentheses may contain spaces, so fields are counted after its closing parenthesis).
pub fn stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_reads_utime_and_stime_after_the_command_name() {
        let line = "4242 (omni hub) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 9 0 1 2 3";
        assert_eq!(stat_ticks(line), Some(175));
        assert_eq!(stat_ticks("garbage"), None);
        assert!(cpu_ticks().is_some());
    }

    #[test]
    fn queued_messages_are_counted_until_dropped() {
        let gauge = metrics().mailbox.with_label_values(&["test-actor"]);
        let before = gauge.get();
        let a = Queued::at("test-actor");
        let b = Queued::at("test-actor");
        assert_eq!(gauge.get(), before + 2);
        drop(a);
        drop(b);
        assert_eq!(gauge.get(), before);
    }
}
