//! The ops page's live feed (`GET /ops/live`, Server-Sent Events).
//!
//! One task takes a [`Snapshot`] of the hub per tick (`[ops] live_every`), renders the page's
//! sections from it once, and publishes the event on a `watch` channel that every viewer's
//! stream reads: the cost of a tick does not grow with the viewers, and a slow viewer only ever
//! skips to the newest snapshot. With no viewer, no snapshot is taken.

use super::page;
use crate::app::HubHandle;
use crate::edge::replica::NodeLive;
use actix_web::web::Bytes;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How many dead letters per destination a snapshot lists.
const DEAD_LETTERS_SHOWN: usize = 20;
/// How many conflicts and deficits per node a snapshot counts (the node view lists them).
const RECORDS_COUNTED: usize = 100;
/// How many recent errors a snapshot lists.
const ERRORS_SHOWN: usize = 50;

/// What the ops page shows, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// RFC 3339.
    pub at: String,
    pub actors: Actors,
    pub nodes: Vec<Node>,
    pub integrations: Vec<Integration>,
    pub errors: Vec<super::errors::ErrorEvent>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Actors {
    pub basket: usize,
    pub customer: usize,
    pub activations: u64,
    pub passivations: u64,
    /// Events appended and not yet folded in by the analyst.
    pub analyst_lag: u64,
    pub rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub replica: String,
    pub name: String,
    pub location: String,
    pub connected: bool,
    pub retired: bool,
    /// RFC 3339: connected since, or offline since.
    pub since: Option<String>,
    pub last_sync_age_seconds: Option<u64>,
    /// Hub changes the node has not acknowledged, and node changes not yet at the hub (as
    /// the node last reported).
    pub unsynced_to_node: u64,
    pub unsynced_from_node: u64,
    pub skew_ms: Option<i64>,
    pub skew_exceeds_limit: bool,
    /// Conflicts recorded for the node, and override sales (deficits) not fully settled; at
    /// most [`RECORDS_COUNTED`] each.
    pub conflicts: usize,
    pub open_overrides: usize,
    /// The node's boards as it last reported them (nothing while it never did).
    pub boards: Vec<Board>,
    /// When the hub last heard the node's boards report (RFC 3339).
    pub boards_heard: Option<String>,
}

/// One in-store board, as its node reported it.
#[derive(Debug, Clone, Serialize)]
pub struct Board {
    pub id: String,
    pub name: String,
    pub online: bool,
    pub connections: u32,
    /// The board's last heartbeat (RFC 3339, on the hub's clock) and its age in seconds.
    pub last_heartbeat: Option<String>,
    pub last_heartbeat_age_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Integration {
    pub destination: String,
    pub pending: u64,
    pub dead: u64,
    pub oldest_age_seconds: Option<i64>,
    /// `closed`, `open` or `unknown` (no worker).
    pub breaker: &'static str,
    pub consecutive_failures: u32,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub kind: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: String,
}

/// RFC 3339 to the second (what a person reads on the page).
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn ms_rfc3339(ms: Option<u64>) -> Option<String> {
    ms.map(|ms| rfc3339(crate::edge::from_unix_ms(ms)))
}

impl Snapshot {
    /// Takes one snapshot: a few messages to actors and bounded reads, nothing that grows with
    /// the number of actors or stored records.
    pub async fn take(handle: &HubHandle) -> Snapshot {
        let now = time::OffsetDateTime::now_utc();
        Snapshot {
            at: rfc3339(now),
            actors: actors(handle).await,
            nodes: nodes(handle, now).await,
            integrations: integrations(handle, now).await,
            errors: super::errors::recent().newest(ERRORS_SHOWN),
        }
    }
}

async fn actors(handle: &HubHandle) -> Actors {
    let stats = handle.stats().await;
    let appended = *crate::storage::EventLog::appended(handle.storage.as_ref()).borrow();
    let processed = *handle.experience.processed().borrow();
    Actors {
        basket: stats.map_or(0, |s| s.active_baskets),
        customer: stats.map_or(0, |s| s.active_customers),
        activations: stats.map_or(0, |s| s.activations),
        passivations: stats.map_or(0, |s| s.passivations),
        analyst_lag: appended.saturating_sub(processed),
        rss_bytes: crate::app::resident_bytes(),
    }
}

async fn node(handle: &HubHandle, live: &NodeLive, now_ms: u64) -> Node {
    let store = handle.edge.store();
    let conflicts = store
        .conflicts(&live.replica, RECORDS_COUNTED)
        .await
        .map_or(0, |c| c.len());
    let open_overrides = store
        .deficits(&live.location, RECORDS_COUNTED)
        .await
        .map_or(0, |d| {
            d.iter()
                .filter(|d| d.settlement.as_ref().is_none_or(|s| s.short > 0))
                .count()
        });
    let meta = &live.meta;
    Node {
        replica: live.replica.to_string(),
        name: live.name.clone(),
        location: live.location.0.clone(),
        connected: live.connected,
        retired: live.retired.is_some(),
        since: if live.connected {
            ms_rfc3339(meta.connected_ms)
        } else {
            ms_rfc3339(meta.disconnected_ms)
        },
        last_sync_age_seconds: meta.last_sync_ms.map(|ms| now_ms.saturating_sub(ms) / 1000),
        unsynced_to_node: live.unacked_to_node(),
        unsynced_from_node: meta.node_pending,
        skew_ms: meta.skew_ms,
        skew_exceeds_limit: live.skew_exceeds_limit,
        conflicts,
        open_overrides,
        boards: boards(live, now_ms),
        boards_heard: ms_rfc3339(live.boards_heard_ms),
    }
}

/// The node's boards, their heartbeats moved onto the hub's clock by the node's skew.
fn boards(live: &NodeLive, now_ms: u64) -> Vec<Board> {
    let skew = live.meta.skew_ms.unwrap_or(0);
    live.boards
        .iter()
        .map(|b| {
            let seen = b
                .last_seen_ms
                .map(|ms| ms.saturating_add_signed(skew).min(now_ms));
            Board {
                id: b.id.clone(),
                name: b.name.clone(),
                online: !b.dark && b.connections > 0,
                connections: b.connections,
                last_heartbeat: ms_rfc3339(seen),
                last_heartbeat_age_seconds: seen.map(|ms| now_ms.saturating_sub(ms) / 1000),
            }
        })
        .collect()
}

async fn nodes(handle: &HubHandle, now: time::OffsetDateTime) -> Vec<Node> {
    let now_ms = crate::edge::unix_ms(now);
    let mut out = Vec::new();
    for live in handle.edge.live().await.unwrap_or_default() {
        out.push(node(handle, &live, now_ms).await);
    }
    out
}

async fn integrations(handle: &HubHandle, now: time::OffsetDateTime) -> Vec<Integration> {
    let backlog = handle.storage_backlog().await.unwrap_or_default();
    let mut names: Vec<String> = handle
        .outbox
        .destinations()
        .into_iter()
        .map(str::to_string)
        .collect();
    for name in backlog.keys() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut out = Vec::new();
    for name in names {
        let b = backlog.get(&name).cloned().unwrap_or_default();
        let status = handle.outbox.status(&name).await;
        let (breaker, consecutive_failures) = match status.as_ref().map(|s| s.0) {
            Some(crate::outbox::Breaker::Closed {
                consecutive_failures,
            }) => ("closed", consecutive_failures),
            Some(crate::outbox::Breaker::Open { .. }) => ("open", 0),
            None => ("unknown", 0),
        };
        let dead_letters = if b.dead > 0 {
            crate::storage::Outbox::dead_letters(handle.storage.as_ref(), &name, DEAD_LETTERS_SHOWN)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        out.push(Integration {
            destination: name.clone(),
            pending: b.pending,
            dead: b.dead,
            oldest_age_seconds: b.oldest.map(|o| (now - o).whole_seconds().max(0)),
            breaker,
            consecutive_failures,
            delivered: status.as_ref().map_or(0, |s| s.1.delivered),
            failed_attempts: status.as_ref().map_or(0, |s| s.1.failed_attempts),
            dead_lettered: status.as_ref().map_or(0, |s| s.1.dead_lettered),
            dead_letters: dead_letters
                .into_iter()
                .map(|m| DeadLetter {
                    id: m.id.to_string(),
                    kind: m.kind.clone(),
                    attempts: m.attempts,
                    last_error: m.last_error.clone(),
                    created_at: rfc3339(m.created_at),
                })
                .collect(),
        });
    }
    out
}

/// One tick's event: the snapshot and the page's sections rendered from it.
#[derive(Serialize)]
struct LiveEvent<'a> {
    snapshot: &'a Snapshot,
    html: page::Sections,
}

/// The feed every viewer of `/ops/live` reads.
pub struct LiveFeed {
    latest: watch::Sender<Option<Bytes>>,
    every: Duration,
    /// Snapshots taken since the start (one per tick with viewers).
    taken: AtomicU64,
    stopped: AtomicBool,
}

impl LiveFeed {
    /// Starts the feed's task (inside the actix System).
    pub fn start(handle: HubHandle, every: Duration) -> Arc<LiveFeed> {
        let feed = Arc::new(LiveFeed {
            latest: watch::channel(None).0,
            every: every.max(Duration::from_millis(100)),
            taken: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let ticking = feed.clone();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(ticking.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !ticking.stopped.load(Ordering::SeqCst) {
                tick.tick().await;
                ticking.tick(&handle).await;
            }
        });
        feed
    }

    async fn tick(&self, handle: &HubHandle) {
        if self.latest.receiver_count() == 0 {
            // Nobody watches: nothing to take, and no stale snapshot for the next viewer.
            self.latest.send_replace(None);
            return;
        }
        let snapshot = Snapshot::take(handle).await;
        let event = LiveEvent {
            html: page::sections(&snapshot),
            snapshot: &snapshot,
        };
        match serde_json::to_string(&event) {
            Ok(json) => {
                self.taken.fetch_add(1, Ordering::Relaxed);
                self.latest.send_replace(Some(Bytes::from(format!(
                    "event: snapshot\ndata: {json}\n\n"
                ))));
            }
            Err(e) => tracing::warn!(error = %e, "the ops snapshot could not be encoded"),
        }
    }

    /// Snapshots taken so far.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Ends the feed's task at its next tick (the hub stops).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// A viewer's stream of SSE events: the newest snapshot (if one is fresh), then each new
    /// one; a comment first, so the viewer knows it is connected.
    pub fn viewer(
        &self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + 'static {
        let mut rx = self.latest.subscribe();
        rx.mark_changed();
        let hello = futures_util::stream::once(async {
            Ok(Bytes::from_static(b": connected\nretry: 2000\n\n"))
        });
        let updates = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let latest = rx.borrow_and_update().clone();
                if let Some(event) = latest {
                    return Some((Ok(event), rx));
                }
            }
        });
        futures_util::StreamExt::chain(hello, updates)
    }
}
