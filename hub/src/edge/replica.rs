//! The edge replica actor: the single writer of the hub's replica of the store locations. Every
//! change — a node's batch, a forwarded command, a retirement, a catalog version — is planned
//! and committed inside one exclusive handler ([`AtomicResponse`]), so no two writes interleave.
//! It also knows which session each node has (a second one replaces the first) and what the
//! operator sees of each node.

use super::catalog::{catalog_digest, fingerprint_with, CatalogChange, History, NodeCatalog};
use super::coupons::{node_promotions, pass as coupon_pass, CouponPolicy, Known, StoreCoupon};
use super::merge::{merge_batch, relay_location, Env, Holds, Working};
use super::session::{CatalogChanged, NodeSession, OutboxGrew, Replaced, RetiredNow};
use super::store::{CatalogVersion, EdgeStore, EdgeWrite, NodeMeta, NodeState, RetiredRecord};
use super::{unix_ms, EdgeError, EdgeHandle, Forwarded, Nodes, Timing};
use crate::actors::inventory::Inventory;
use crate::actors::offers::{NoOffers, Offers};
use crate::clock::Clock;
use crate::config::EdgeSettings;
use actix::prelude::*;
use arc_swap::ArcSwap;
use protocol::promotion::PromotionSet;
use protocol::replication::sync::{Item, Scarce, Vector};
use protocol::replication::{Command, CommandKind, ConflictRecord, HybridClock, ReplicaId};
use protocol::{CatalogSnapshot, LocationId, Sku, StockLevel};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use ulid::Ulid;

/// How often the replica looks whether the catalog snapshot or the live promotions were
/// replaced (both are an `Arc` swap away, so a look costs two loads and a pointer compare).
const CATALOG_POLL: Duration = Duration::from_millis(250);
/// How often the replica reads the coupons the stores may redeem (off the actor) and, when
/// anything a pass depends on changed, passes over them (terms, grants, ends).
const COUPON_POLL: Duration = Duration::from_millis(500);

/// What the replica last looked at, to tell a change cheaply.
struct Seen {
    snapshot: Arc<CatalogSnapshot>,
    /// [`catalog_digest`] of `snapshot` (the costly part of the fingerprint).
    digest: [u8; 32],
    /// What the nodes get of `live` ([`node_promotions`]).
    promotions: Arc<PromotionSet>,
    /// The back office's live set as last looked at.
    live: Arc<PromotionSet>,
}

/// What the replica knows of one node.
struct Live {
    state: NodeState,
    /// The node's `have[hub]`: hub entries up to it are durable on the node.
    acked: u64,
    /// The current session: its id and address.
    session: Option<(u64, Addr<NodeSession>)>,
    /// The current session's node said in `Hello` that it takes coupons at the till: only such
    /// a node is sent coupon terms and granted coupon rights (an older one would keep rights
    /// it never uses nor hands back).
    coupons: bool,
    /// The node's boards as it last reported them (with its heartbeats), and when the hub
    /// heard that (Unix ms, hub clock). Kept in memory only: a node reports again soon.
    boards: Vec<protocol::board::BoardReport>,
    boards_heard_ms: Option<u64>,
}

/// What the last coupon pass that settled everything was made of: a pass with the same
/// inputs would change nothing, so it is skipped.
#[derive(PartialEq)]
struct CouponInputs {
    /// [`EdgeReplica::coupon_gen`] when it ran.
    generation: u64,
    coupons: Vec<StoreCoupon>,
    connected: Vec<ReplicaId>,
}

/// Click-and-collect: promising pickups at a store, and where the nodes' reports go.
#[path = "pickup.rs"]
pub mod pickup;

pub struct EdgeReplica {
    /// Where merged pickup reports go.
    pickups: pickup::ReportSink,
    store: Arc<dyn EdgeStore>,
    nodes: Arc<Nodes>,
    holds: Arc<dyn Holds>,
    clock: Arc<dyn Clock>,
    hlc: HybridClock,
    timing: Timing,
    catalog: Arc<ArcSwap<CatalogSnapshot>>,
    /// The live promotions (the back office): they travel with the catalog.
    offers: Arc<dyn Offers>,
    /// The catalog and promotions last looked at.
    seen: Seen,
    /// A version could not be stored: look again at the next poll even if nothing changed.
    catalog_retry: bool,
    /// What nodes are given as `catalog_version`, and the version and fingerprint they know it
    /// by.
    offered: NodeCatalog,
    catalog_version: CatalogVersion,
    /// Whether this process issued `catalog_version` (at start or since): then a node can only
    /// have that version from this process, i.e. if it is in `catalog_given`.
    catalog_fresh: bool,
    /// The nodes this process offered `catalog_version` to.
    catalog_given: BTreeSet<ReplicaId>,
    levels: mpsc::UnboundedSender<Vec<StockLevel>>,
    live: BTreeMap<ReplicaId, Live>,
    /// What the coupon passes sent each node.
    coupons: Known,
    coupon_policy: CouponPolicy,
    /// Grows whenever something a coupon pass reads besides the back office's coupons may
    /// have changed: a node connected or went (its terms are sent again), a merge touched a
    /// coupon's rights, a replica was retired, a pass failed or left work for the next.
    coupon_gen: u64,
    /// A read of the coupons is under way (off the actor).
    coupon_reading: bool,
    /// The inputs of the last pass that settled everything.
    coupon_last: Option<CouponInputs>,
    /// What a merge does for store sales it meets first (emailed receipts), once set.
    sale_follow_up: Option<Arc<dyn super::receipts::SaleFollowUp>>,
}

/// Sets what merges do for the store sales they meet first (see [`super::receipts`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSaleFollowUp(pub Arc<dyn super::receipts::SaleFollowUp>);

impl Handler<SetSaleFollowUp> for EdgeReplica {
    type Result = ();

    fn handle(&mut self, msg: SetSaleFollowUp, _ctx: &mut Context<Self>) {
        self.sale_follow_up = Some(msg.0);
    }
}

/// A node's session said `Hello`: registers it (replacing an older one) and answers what the
/// `Welcome` needs.
#[derive(Message)]
#[rtype(result = "Result<Welcomed, EdgeError>")]
pub struct Connect {
    pub node: ReplicaId,
    pub session: u64,
    pub addr: Addr<NodeSession>,
    pub have: Vector,
    pub catalog_version: u64,
    pub time_ms: u64,
    pub pending: u64,
    /// The node takes coupons at the till (`Hello.coupons`).
    pub coupons: bool,
}

/// What a session needs after `Hello`.
pub struct Welcomed {
    /// `have[node]`.
    pub have: u64,
    /// The node's `have[hub]`: where the hub → node stream resumes.
    pub acked: u64,
    pub outbox_last: u64,
    pub catalog_version: u64,
    pub catalog: NodeCatalog,
    pub hub_time_ms: u64,
}

/// A session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub node: ReplicaId,
    pub session: u64,
}

/// Applies a node's `Deltas` durably; answers the sequence to acknowledge (`have` after it).
#[derive(Message)]
#[rtype(result = "Result<u64, EdgeError>")]
pub struct ApplyDeltas {
    pub node: ReplicaId,
    pub from_seq: u64,
    pub to_seq: u64,
    pub items: Vec<Item>,
}

/// The node acknowledged the hub's entries up to `seq`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeAcked {
    pub node: ReplicaId,
    pub seq: u64,
}

/// The node sent a heartbeat.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Heard {
    pub node: ReplicaId,
    pub time_ms: u64,
    pub pending: u64,
}

/// The node reported its boards (`Frame::BoardsReport`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct BoardsHeard {
    pub node: ReplicaId,
    pub boards: Vec<protocol::board::BoardReport>,
}

/// Queues a command for the node that owns `location`. A `Count` without `as_seen` is given the
/// hub's merged on hand of that SKU at that location as it stands when the command is queued
/// (in the replica's exclusive handler, so no merge slips in between).
#[derive(Message)]
#[rtype(result = "Result<Forwarded, EdgeError>")]
pub struct ForwardCommand {
    pub location: LocationId,
    pub kind: CommandKind,
}

/// Retires a replica id (idempotent): answers the retirement record.
#[derive(Message)]
#[rtype(result = "Result<RetiredRecord, EdgeError>")]
pub struct Retire(pub ReplicaId);

/// Records a conflict the hub saw on a node's sync.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordConflict {
    pub node: ReplicaId,
    pub kind: String,
    pub detail: String,
}

/// Each node's live status.
#[derive(Message)]
#[rtype(result = "Vec<NodeLive>")]
pub struct LiveStatus;

/// One node as the operator sees it.
#[derive(Debug, Clone)]
pub struct NodeLive {
    pub replica: ReplicaId,
    pub name: String,
    pub location: LocationId,
    pub connected: bool,
    pub meta: NodeMeta,
    /// `have[node]` on the hub.
    pub have: u64,
    /// Last sequence of the hub → node stream, and how far the node has it.
    pub outbox_last: u64,
    pub acked: u64,
    pub retired: Option<RetiredRecord>,
    pub catalog_version: u64,
    pub skew_exceeds_limit: bool,
    /// The node's boards as it last reported them, and when the hub heard that (Unix ms).
    pub boards: Vec<protocol::board::BoardReport>,
    pub boards_heard_ms: Option<u64>,
}

impl NodeLive {
    /// Hub changes for the node it has not acknowledged.
    pub fn unacked_to_node(&self) -> u64 {
        self.outbox_last.saturating_sub(self.acked)
    }
}

/// Applies stock levels to the inventory view in the order they were merged; levels queued
/// meanwhile are folded into one update.
async fn publish_levels(inventory: Inventory, mut rx: mpsc::UnboundedReceiver<Vec<StockLevel>>) {
    while let Some(first) = rx.recv().await {
        let mut latest: BTreeMap<(LocationId, Sku), StockLevel> = BTreeMap::new();
        let mut fold = |levels: Vec<StockLevel>| {
            for l in levels {
                latest.insert((l.location.clone(), l.sku.clone()), l);
            }
        };
        fold(first);
        while let Ok(more) = rx.try_recv() {
            fold(more);
        }
        if let Err(e) = inventory.set(latest.into_values().collect()).await {
            tracing::error!(error = %e, "store stock levels could not be published");
        }
    }
}

/// What the replica starts with.
pub struct Start {
    pub settings: EdgeSettings,
    pub store: Arc<dyn EdgeStore>,
    pub holds: Arc<dyn Holds>,
    pub inventory: Inventory,
    pub catalog: Arc<ArcSwap<CatalogSnapshot>>,
    pub clock: Arc<dyn Clock>,
}

impl EdgeReplica {
    /// [`EdgeReplica::start_with`] without promotions: nodes get the catalog alone.
    pub async fn start(start: Start) -> Result<EdgeHandle, EdgeError> {
        EdgeReplica::start_with(start, Arc::new(NoOffers)).await
    }

    /// Loads the stored state, publishes the store locations' stock to the inventory view (which
    /// also mends a crash between a merge and its publication) and starts the actor.
    /// `offers` gives the live promotions, which travel to the nodes with the catalog.
    pub async fn start_with(
        start: Start,
        offers: Arc<dyn Offers>,
    ) -> Result<EdgeHandle, EdgeError> {
        let nodes = Arc::new(Nodes::from_settings(&start.settings).map_err(EdgeError::Config)?);
        let mut loaded = start.store.load().await?;
        let snapshot = start.catalog.load_full();
        let live_set = offers.live();
        let promotions = node_promotions(&live_set);
        let digest = catalog_digest(&snapshot);
        let fp = fingerprint_with(&digest, promotions.promotions());
        let mut catalog_fresh = false;
        let stored_changes = std::mem::take(&mut loaded.catalog_changes);
        let stored_versions: Vec<u64> = stored_changes.iter().map(|c| c.to).collect();
        let mut history = History::default();
        let catalog_version = match loaded.catalog.take() {
            Some(c) if c.fingerprint == fp => {
                history = History::rebuild(stored_changes, c.version);
                c
            }
            before => {
                // The content changed while the hub was down: what changed is not known, so
                // nodes behind get the whole catalog.
                catalog_fresh = true;
                let c = CatalogVersion {
                    version: before.map_or(1, |b| b.version.saturating_add(1)),
                    fingerprint: fp,
                };
                start
                    .store
                    .commit(EdgeWrite {
                        catalog: Some(c.clone()),
                        catalog_changes_dropped: stored_versions.clone(),
                        ..EdgeWrite::default()
                    })
                    .await?;
                c
            }
        };
        let unusable: Vec<u64> = stored_versions
            .into_iter()
            .filter(|v| !catalog_fresh && !history.versions().any(|h| h == *v))
            .collect();
        if !unusable.is_empty() {
            start
                .store
                .commit(EdgeWrite {
                    catalog_changes_dropped: unusable,
                    ..EdgeWrite::default()
                })
                .await?;
        }
        let levels: Vec<StockLevel> = start
            .store
            .all_on_hand()
            .await?
            .into_iter()
            .filter(|r| nodes.is_store(&r.location))
            .map(|r| StockLevel {
                on_hand: r.state.value(),
                sku: r.sku,
                location: r.location,
                held: 0,
            })
            .collect();
        if !levels.is_empty() {
            start.inventory.set(levels).await?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        actix::spawn(publish_levels(start.inventory.clone(), rx));
        let live = nodes
            .iter()
            .map(|n| {
                let state = loaded.nodes.remove(&n.replica).unwrap_or_default();
                let acked = state.outbox_last.saturating_sub(state.outbox_len);
                (
                    n.replica.clone(),
                    Live {
                        state,
                        acked,
                        session: None,
                        coupons: false,
                        boards: Vec::new(),
                        boards_heard_ms: None,
                    },
                )
            })
            .collect();
        let timing = Timing::from(&start.settings);
        let pickups = pickup::ReportSink::default();
        let replica = EdgeReplica {
            pickups: pickups.clone(),
            store: start.store.clone(),
            nodes: nodes.clone(),
            holds: start.holds,
            clock: start.clock,
            hlc: HybridClock::new(ReplicaId::hub()),
            timing,
            catalog: start.catalog,
            offers,
            offered: NodeCatalog {
                snapshot: snapshot.clone(),
                promotions: promotions.clone(),
                fingerprint: catalog_version.fingerprint.clone(),
                history: Arc::new(history),
            },
            seen: Seen {
                snapshot,
                digest,
                promotions,
                live: live_set,
            },
            catalog_retry: false,
            catalog_version,
            catalog_fresh,
            catalog_given: BTreeSet::new(),
            levels: tx,
            live,
            coupons: Known::default(),
            coupon_policy: CouponPolicy {
                per_node: start.settings.coupon_grant_per_node,
                percent: start.settings.coupon_grant_percent,
            },
            coupon_gen: 0,
            coupon_reading: false,
            coupon_last: None,
            sale_follow_up: None,
        }
        .start();
        Ok(EdgeHandle {
            pickups,
            replica,
            nodes,
            store: start.store,
            timing,
        })
    }

    fn now_ms(&self) -> u64 {
        unix_ms(self.clock.now())
    }

    fn retired_set(&self) -> BTreeSet<ReplicaId> {
        self.live
            .iter()
            .filter(|(_, l)| l.state.retired.is_some())
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// After a commit: the nodes' new outbox ends, and their sessions told.
    fn outbox_grew(&mut self, last: BTreeMap<ReplicaId, u64>) {
        for (node, seq) in last {
            if let Some(live) = self.live.get_mut(&node) {
                if seq > live.state.outbox_last {
                    live.state.outbox_last = seq;
                    if let Some((_, addr)) = &live.session {
                        addr.do_send(OutboxGrew { last: seq });
                    }
                }
            }
        }
    }

    /// Tells every connected node but `except` that the catalog version changed (each session
    /// offers it), and notes them as given it.
    fn announce_catalog(&mut self, except: Option<&ReplicaId>) {
        let offered = self.offered.has_products();
        for (node, live) in &self.live {
            if Some(node) == except {
                continue;
            }
            if let Some((_, addr)) = &live.session {
                addr.do_send(CatalogChanged {
                    version: self.catalog_version.version,
                    catalog: self.offered.clone(),
                });
                if offered {
                    self.catalog_given.insert(node.clone());
                }
            }
        }
    }

    /// The catalog version to raise the hub's to so that a node reporting `node_version` in its
    /// `Hello` switches, if it must: the node has a version the hub cannot vouch for — a later
    /// one (the hub was restored from a backup), or the same number this process issued without
    /// giving it to that node (issued before the restore, with other content). A node switches
    /// only to a higher version, so the hub goes above it.
    fn catalog_to_raise(&self, node: &ReplicaId, node_version: u64) -> Option<CatalogVersion> {
        let hub = self.catalog_version.version;
        let unvouched = node_version > hub
            || (node_version == hub && self.catalog_fresh && !self.catalog_given.contains(node));
        if !unvouched {
            return None;
        }
        match node_version.max(hub).checked_add(1) {
            Some(version) => Some(CatalogVersion {
                version,
                fingerprint: self.catalog_version.fingerprint.clone(),
            }),
            None => {
                tracing::error!(%node, node_version, "the node's catalog version cannot be passed");
                None
            }
        }
    }

    /// Gives the nodes a new catalog version when the content of the catalog snapshot or of
    /// the live promotions changed (a promotion created, approved, ended, or its window opened
    /// or closed: the back office publishes a new set for each).
    fn check_catalog(&mut self, ctx: &mut Context<Self>) {
        let snapshot = self.catalog.load_full();
        let live = self.offers.live();
        let new_snapshot = !Arc::ptr_eq(&snapshot, &self.seen.snapshot);
        let mut promotions = self.seen.promotions.clone();
        if !Arc::ptr_eq(&live, &self.seen.live) {
            promotions = node_promotions(&live);
            self.seen.live = live;
        }
        let new_promotions = !Arc::ptr_eq(&promotions, &self.seen.promotions)
            && promotions.promotions() != self.seen.promotions.promotions();
        if !new_snapshot && !new_promotions && !self.catalog_retry {
            return;
        }
        self.catalog_retry = false;
        if new_snapshot {
            self.seen.digest = catalog_digest(&snapshot);
            self.seen.snapshot = snapshot;
        }
        self.seen.promotions = promotions;
        let fp = fingerprint_with(&self.seen.digest, self.seen.promotions.promotions());
        if fp == self.catalog_version.fingerprint {
            return;
        }
        let Some(version) = self.catalog_version.version.checked_add(1) else {
            tracing::error!("the catalog version cannot grow past u64::MAX; the nodes keep theirs");
            return;
        };
        let next = CatalogVersion {
            version,
            fingerprint: fp,
        };
        let mut offer = NodeCatalog {
            snapshot: self.seen.snapshot.clone(),
            promotions: self.seen.promotions.clone(),
            fingerprint: next.fingerprint.clone(),
            history: Arc::default(),
        };
        // What changed, kept for catalog deltas if small enough.
        let products = offer.snapshot.products().len();
        let change =
            CatalogChange::between(self.catalog_version.version, &self.offered, version, &offer)
                .kept(products);
        let (history, dropped) = self.offered.history.with(change.clone(), products);
        offer.history = Arc::new(history);
        let store = self.store.clone();
        let write = EdgeWrite {
            catalog: Some(next.clone()),
            catalog_change: change,
            catalog_changes_dropped: dropped,
            ..EdgeWrite::default()
        };
        ctx.wait(
            async move { store.commit(write).await }
                .into_actor(self)
                .map(move |res, act, _| match res {
                    Ok(_) => {
                        tracing::info!(
                            version = next.version,
                            promotions = offer.promotions.len(),
                            "catalog version for the nodes"
                        );
                        act.catalog_version = next;
                        act.offered = offer;
                        act.catalog_fresh = true;
                        act.catalog_given.clear();
                        act.announce_catalog(None);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "catalog version not stored; trying again");
                        act.catalog_retry = true;
                    }
                }),
        );
    }
}

impl EdgeReplica {
    /// The connected nodes that take coupons at the till.
    fn coupon_nodes(&self) -> Vec<ReplicaId> {
        self.live
            .iter()
            .filter(|(_, l)| l.session.is_some() && l.coupons && l.state.retired.is_none())
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Something a coupon pass reads may have changed: the next poll passes.
    fn coupons_changed(&mut self) {
        self.coupon_gen = self.coupon_gen.wrapping_add(1);
    }

    /// Reads the coupons the stores may redeem off the actor (a storage scan must not stall
    /// merges and sessions), then passes over them if anything changed since the last pass
    /// that settled everything ([`EdgeReplica::coupon_pass`]).
    fn check_coupons(&mut self, ctx: &mut Context<Self>) {
        if self.coupon_reading || self.coupon_nodes().is_empty() {
            return;
        }
        self.coupon_reading = true;
        let now = self.clock.now();
        let offers = self.offers.clone();
        ctx.spawn(
            async move {
                tokio::task::spawn_blocking(move || offers.store_coupons(now))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|read| read)
            }
            .into_actor(self)
            .map(move |read, act, ctx| {
                act.coupon_reading = false;
                match read {
                    Ok(coupons) => act.coupon_pass(ctx, coupons, now),
                    Err(e) => {
                        tracing::warn!(error = %e, "the coupons for the stores cannot be read")
                    }
                }
            }),
        );
    }

    /// One coupon pass ([`super::coupons::pass`]) for the connected nodes that take coupons,
    /// committed like a merge; the actor waits for it, so no merge interleaves. Skipped when
    /// its inputs — the coupons (with their uses), the nodes, and [`EdgeReplica::coupon_gen`]
    /// (what a merge, a connection or a retirement changed) — are those of the last pass that
    /// settled everything: it would change nothing.
    fn coupon_pass(
        &mut self,
        ctx: &mut Context<Self>,
        coupons: Vec<StoreCoupon>,
        now: time::OffsetDateTime,
    ) {
        let connected = self.coupon_nodes();
        if connected.is_empty() {
            return;
        }
        let inputs = CouponInputs {
            generation: self.coupon_gen,
            coupons,
            connected,
        };
        if self.coupon_last.as_ref() == Some(&inputs) {
            return;
        }
        self.coupon_last = None;
        let mut known = std::mem::take(&mut self.coupons);
        let (store, nodes, holds, offers) = (
            self.store.clone(),
            self.nodes.clone(),
            self.holds.clone(),
            self.offers.clone(),
        );
        let mut hlc = self.hlc.clone();
        let policy = self.coupon_policy;
        ctx.wait(
            async move {
                let env = Env {
                    nodes: &nodes,
                    holds: holds.as_ref(),
                    offers: offers.as_ref(),
                    now,
                };
                let mut w = Working::new(store.as_ref());
                let planned = coupon_pass(
                    &mut w,
                    &env,
                    &mut hlc,
                    &inputs.coupons,
                    &inputs.connected,
                    &mut known,
                    policy,
                )
                .await
                .map(|settled| (settled, w.finish()));
                let res = match planned {
                    Ok((settled, p)) if p.write.is_empty() => Ok((settled, BTreeMap::new())),
                    // What it wrote changes what the next pass reads: that one runs too.
                    Ok((_, p)) => store.commit(p.write).await.map(|last| (false, last)),
                    Err(e) => Err(e),
                };
                (res, known, hlc, inputs)
            }
            .into_actor(self)
            .map(|(res, known, hlc, inputs), act, _| {
                act.hlc = hlc;
                match res {
                    Ok((settled, last)) => {
                        act.coupons = known;
                        act.outbox_grew(last);
                        if settled {
                            act.coupon_last = Some(inputs);
                        }
                    }
                    Err(e) => {
                        // Sent again in full at the next pass.
                        tracing::error!(error = %e, "coupon pass failed");
                        act.coupons = Known::default();
                    }
                }
            }),
        );
    }
}

impl Actor for EdgeReplica {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(CATALOG_POLL, |act, ctx| act.check_catalog(ctx));
        ctx.run_interval(COUPON_POLL, |act, ctx| act.check_coupons(ctx));
    }
}

impl Handler<Connect> for EdgeReplica {
    type Result = AtomicResponse<Self, Result<Welcomed, EdgeError>>;

    fn handle(&mut self, msg: Connect, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.store.shared() {
            return AtomicResponse::new(self.connect(msg));
        }
        // Hub nodes share the store: another node may have served this store's node since
        // this one loaded its state (merged its deltas, queued entries for it). Its session
        // resumes from the stored state, so nothing acknowledged is sent again.
        // Its store's stock is published again too (mending a hub node that stopped between
        // a merge and its publication, as a start does).
        let store = self.store.clone();
        let node = msg.node.clone();
        let location = self.nodes.get(&msg.node).map(|n| n.location.clone());
        AtomicResponse::new(Box::pin(
            async move {
                let state = store.load().await?.nodes.remove(&node);
                let mut levels = Vec::new();
                if let Some(location) = location {
                    levels = store
                        .all_on_hand()
                        .await?
                        .into_iter()
                        .filter(|r| r.location == location)
                        .map(|r| StockLevel {
                            on_hand: r.state.value(),
                            sku: r.sku,
                            location: r.location,
                            held: 0,
                        })
                        .collect();
                }
                Ok::<_, crate::storage::StorageError>((state, levels))
            }
            .into_actor(self)
            .then(move |stored, act, _| match stored {
                Ok((state, levels)) => {
                    if let Some(live) = act.live.get_mut(&msg.node) {
                        let state = state.unwrap_or_default();
                        live.acked = state.outbox_last.saturating_sub(state.outbox_len);
                        live.state = state;
                    }
                    if !levels.is_empty() {
                        let _ = act.levels.send(levels);
                    }
                    act.connect(msg)
                }
                Err(e) => Box::pin(actix::fut::ready(Err(e.into()))),
            }),
        ))
    }
}

impl EdgeReplica {
    fn connect(&mut self, msg: Connect) -> ResponseActFuture<Self, Result<Welcomed, EdgeError>> {
        let now_ms = self.now_ms();
        let max_skew = i64::try_from(self.timing.max_clock_skew.as_millis()).unwrap_or(i64::MAX);
        let hub_time_ms = now_ms;
        let conflict_stamp = self.hlc.now(now_ms);
        let raise_catalog = self.catalog_to_raise(&msg.node, msg.catalog_version);
        // A location one of whose replicas is retired: a node of it connecting for the first
        // time is given the location's whole state (it may have been configured only after the
        // retirement, when nothing was relayed to it).
        let location = self.nodes.get(&msg.node).map(|n| n.location.clone());
        let heir_of_retired = location.as_ref().is_some_and(|at| {
            self.live.iter().any(|(r, l)| {
                r != &msg.node && l.state.retired.as_ref().is_some_and(|x| &x.location == at)
            })
        });
        let (nodes, holds, now) = (self.nodes.clone(), self.holds.clone(), self.clock.now());
        let offers = self.offers.clone();
        let Some(live) = self.live.get_mut(&msg.node) else {
            return Box::pin(actix::fut::ready(Err(EdgeError::UnknownNode(msg.node.0))));
        };
        if live.state.retired.is_some() {
            return Box::pin(actix::fut::ready(Err(EdgeError::Retired(msg.node))));
        }
        if let Some((old_id, old)) = live.session.replace((msg.session, msg.addr)) {
            tracing::info!(node = %msg.node, old_session = old_id, "a new session replaces the old one");
            old.do_send(Replaced);
        }
        live.coupons = msg.coupons;
        let relay = heir_of_retired && live.state.meta.connected_ms.is_none();
        let skew = i64::try_from(now_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(msg.time_ms).unwrap_or(i64::MAX));
        let node_acked = msg.have.get(&ReplicaId::hub()).copied().unwrap_or(0);
        let meta = NodeMeta {
            connected_ms: Some(now_ms),
            skew_ms: Some(skew),
            node_pending: msg.pending,
            node_have: msg.have,
            node_catalog_version: msg.catalog_version,
            ..live.state.meta.clone()
        };
        let mut write = EdgeWrite {
            meta: vec![(msg.node.clone(), meta.clone())],
            catalog: raise_catalog.clone(),
            ..EdgeWrite::default()
        };
        if let Some(raised) = &raise_catalog {
            tracing::warn!(node = %msg.node, node_version = msg.catalog_version,
                hub_version = self.catalog_version.version, raised = raised.version,
                "the node has a catalog version the hub cannot vouch for (a restored hub?); \
                 raising the hub's so the node switches");
        }
        if node_acked > live.state.outbox_last {
            tracing::warn!(node = %msg.node, node_acked, hub_last = live.state.outbox_last,
                "the node has more of the hub's stream than the hub remembers; continuing after it");
            write.outbox_floor.push((msg.node.clone(), node_acked));
        }
        if skew.abs() > max_skew {
            tracing::warn!(node = %msg.node, skew_ms = skew, "node clock skew beyond the limit");
            write.conflicts.push((
                msg.node.clone(),
                ConflictRecord {
                    id: Ulid::new(),
                    replica: ReplicaId::hub(),
                    kind: "clock_skew".into(),
                    detail: format!(
                        "the node's clock is {skew} ms behind the hub's (limit {max_skew} ms)"
                    ),
                    at: conflict_stamp,
                },
            ));
        }
        let store = self.store.clone();
        let node = msg.node.clone();
        Box::pin(
            async move {
                if let (true, Some(location)) = (relay, location) {
                    let env = Env {
                        nodes: &nodes,
                        holds: holds.as_ref(),
                        offers: offers.as_ref(),
                        now,
                    };
                    let mut w = Working::new(store.as_ref());
                    relay_location(&mut w, &env, &location, &node).await?;
                    let relayed = w.finish().write.outbox;
                    tracing::info!(%node, %location, entries = relayed.len(),
                        "first connection at a location with a retired replica: its state relayed");
                    write.outbox.extend(relayed);
                }
                let last = store.commit(write).await?;
                store.drop_outbox(&node, node_acked).await?;
                Ok::<_, EdgeError>(last)
            }
            .into_actor(self)
            .map(move |res, act, _| {
                let last = res?;
                act.outbox_grew(last);
                if let Some(raised) = raise_catalog {
                    act.catalog_version = raised;
                    act.catalog_fresh = true;
                    act.catalog_given.clear();
                    act.announce_catalog(Some(&msg.node));
                }
                if msg.catalog_version < act.catalog_version.version && act.offered.has_products() {
                    // The session offers it right after the welcome.
                    act.catalog_given.insert(msg.node.clone());
                }
                let catalog_version = act.catalog_version.version;
                let catalog = act.offered.clone();
                let live = act
                    .live
                    .get_mut(&msg.node)
                    .ok_or_else(|| EdgeError::UnknownNode(msg.node.0.clone()))?;
                live.state.meta = meta;
                live.acked = node_acked;
                act.coupons.forget(&msg.node);
                act.coupon_gen = act.coupon_gen.wrapping_add(1);
                Ok(Welcomed {
                    have: live.state.have,
                    acked: node_acked,
                    outbox_last: live.state.outbox_last,
                    catalog_version,
                    catalog,
                    hub_time_ms,
                })
            }),
        )
    }
}

impl Handler<Disconnect> for EdgeReplica {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Disconnect, _ctx: &mut Context<Self>) -> Self::Result {
        let now_ms = self.now_ms();
        let Some(live) = self
            .live
            .get_mut(&msg.node)
            .filter(|l| l.session.as_ref().is_some_and(|(id, _)| *id == msg.session))
        else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        };
        live.session = None;
        live.coupons = false;
        live.state.meta.disconnected_ms = Some(now_ms);
        let write = EdgeWrite {
            meta: vec![(msg.node.clone(), live.state.meta.clone())],
            ..EdgeWrite::default()
        };
        self.coupons_changed();
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if let Err(e) = store.commit(write).await {
                    tracing::warn!(node = %msg.node, error = %e, "disconnection not recorded");
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<ApplyDeltas> for EdgeReplica {
    type Result = AtomicResponse<Self, Result<u64, EdgeError>>;

    fn handle(&mut self, msg: ApplyDeltas, _ctx: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        let (origin, have, mut meta) = match (self.nodes.get(&msg.node), self.live.get(&msg.node)) {
            (Some(n), Some(l)) if l.state.retired.is_none() => {
                (n.clone(), l.state.have, l.state.meta.clone())
            }
            (Some(_), Some(_)) => {
                return AtomicResponse::new(Box::pin(actix::fut::ready(Err(EdgeError::Retired(
                    msg.node,
                )))))
            }
            _ => {
                return AtomicResponse::new(Box::pin(actix::fut::ready(Err(
                    EdgeError::UnknownNode(msg.node.0),
                ))))
            }
        };
        if msg.to_seq <= have || msg.from_seq > have.saturating_add(1) {
            tracing::debug!(node = %msg.node, from = msg.from_seq, to = msg.to_seq, have,
                "duplicate or gap: acknowledging what the hub has");
            return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(have))));
        }
        meta.last_sync_ms = Some(unix_ms(now));
        if msg.items.iter().any(|i| {
            matches!(
                i,
                Item::Rights {
                    key: Scarce::Coupon { .. },
                    ..
                }
            )
        }) {
            // A node's row of a coupon's counter: what the next coupon pass sees of it.
            self.coupons_changed();
        }
        let store = self.store.clone();
        let nodes = self.nodes.clone();
        let holds = self.holds.clone();
        let offers = self.offers.clone();
        let mut hlc = self.hlc.clone();
        let to_seq = msg.to_seq;
        let node = msg.node.clone();
        let stored_meta = meta.clone();
        let follow_up = self.sale_follow_up.clone();
        let span = tracing::info_span!("edge_merge", node = %msg.node, from = msg.from_seq, to = to_seq, items = msg.items.len());
        AtomicResponse::new(Box::pin(
            tracing::Instrument::instrument(
                async move {
                    let env = Env {
                        nodes: &nodes,
                        holds: holds.as_ref(),
                        offers: offers.as_ref(),
                        now,
                    };
                    let mut w = Working::new(store.as_ref());
                    merge_batch(&mut w, &env, &mut hlc, &origin, msg.items).await?;
                    let mut planned = w.finish();
                    let pickups = std::mem::take(&mut planned.pickups);
                    if let Some(f) = &follow_up {
                        if !planned.write.sales.is_empty() {
                            f.before_store(&origin.name, &planned.write.sales).await?;
                        }
                    }
                    planned.write.have = Some((node.clone(), to_seq));
                    planned.write.meta.push((node, stored_meta));
                    // Crash tests stop here: merged in memory, nothing stored, nothing acked.
                    fail::fail_point!("edge.merge.before_commit", |_| std::process::abort());
                    let last = store.commit(planned.write).await?;
                    // Crash tests stop here: durable, not acknowledged (the node sends it again).
                    fail::fail_point!("edge.merge.after_commit_before_ack", |_| {
                        std::process::abort()
                    });
                    Ok::<_, EdgeError>((planned.levels, last, hlc, pickups))
                },
                span,
            )
            .into_actor(self)
            .map(move |res, act, _| {
                let (levels, last, hlc, pickups) = res?;
                act.pickups.send(pickups);
                act.hlc = hlc;
                if let Some(live) = act.live.get_mut(&msg.node) {
                    live.state.have = to_seq;
                    live.state.meta.last_sync_ms = meta.last_sync_ms;
                }
                act.outbox_grew(last);
                if !levels.is_empty() {
                    let _ = act.levels.send(levels);
                }
                Ok(to_seq)
            }),
        ))
    }
}

impl Handler<NodeAcked> for EdgeReplica {
    type Result = ();

    fn handle(&mut self, msg: NodeAcked, ctx: &mut Context<Self>) {
        let Some(live) = self.live.get_mut(&msg.node) else {
            return;
        };
        if msg.seq <= live.acked {
            return;
        }
        live.acked = msg.seq.min(live.state.outbox_last);
        let store = self.store.clone();
        ctx.spawn(
            async move {
                if let Err(e) = store.drop_outbox(&msg.node, msg.seq).await {
                    tracing::warn!(node = %msg.node, error = %e, "acknowledged entries not dropped");
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Heard> for EdgeReplica {
    type Result = ();

    fn handle(&mut self, msg: Heard, _ctx: &mut Context<Self>) {
        let now_ms = self.now_ms();
        if let Some(live) = self.live.get_mut(&msg.node) {
            live.state.meta.node_pending = msg.pending;
            live.state.meta.skew_ms = Some(
                i64::try_from(now_ms)
                    .unwrap_or(i64::MAX)
                    .saturating_sub(i64::try_from(msg.time_ms).unwrap_or(i64::MAX)),
            );
        }
    }
}

impl Handler<BoardsHeard> for EdgeReplica {
    type Result = ();

    fn handle(&mut self, msg: BoardsHeard, _ctx: &mut Context<Self>) {
        let now_ms = self.now_ms();
        if let Some(live) = self.live.get_mut(&msg.node) {
            live.boards = msg.boards;
            live.boards_heard_ms = Some(now_ms);
        }
    }
}

impl Handler<ForwardCommand> for EdgeReplica {
    type Result = AtomicResponse<Self, Result<Forwarded, EdgeError>>;

    fn handle(&mut self, msg: ForwardCommand, _ctx: &mut Context<Self>) -> Self::Result {
        let ready = |r| AtomicResponse::new(Box::pin(actix::fut::ready(r)));
        if !self.nodes.is_store(&msg.location) {
            return ready(Err(EdgeError::NotAStore(msg.location)));
        }
        let retired = self.retired_set();
        let Some(owner) = self
            .nodes
            .of_location(&msg.location)
            .filter(|n| !retired.contains(&n.replica))
            .last()
            .map(|n| n.replica.clone())
        else {
            return ready(Err(EdgeError::NoActiveNode(msg.location)));
        };
        let now_ms = self.now_ms();
        let mut command = Command {
            id: Ulid::new(),
            kind: msg.kind,
            at: self.hlc.now(now_ms),
        };
        let forwarded = Forwarded {
            command: command.id,
            node: owner.clone(),
            location: msg.location,
        };
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if let CommandKind::Count {
                    sku,
                    location,
                    as_seen: as_seen @ None,
                    ..
                } = &mut command.kind
                {
                    // What the hub has merged so far: the node applies `on_hand − as_seen`, so
                    // its sales the hub has not seen yet stay sold.
                    let seen = store.on_hand(location, sku).await?.unwrap_or_default();
                    *as_seen = Some(seen.value());
                }
                tracing::debug!(node = %owner, command = %command.id, kind = ?command.kind,
                    "command queued for the node");
                let write = EdgeWrite {
                    outbox: vec![(owner, vec![Item::Command(command)])],
                    ..EdgeWrite::default()
                };
                store.commit(write).await
            }
            .into_actor(self)
            .map(move |res, act, _| {
                act.outbox_grew(res?);
                Ok(forwarded)
            }),
        ))
    }
}

impl Handler<Retire> for EdgeReplica {
    type Result = AtomicResponse<Self, Result<RetiredRecord, EdgeError>>;

    fn handle(&mut self, msg: Retire, _ctx: &mut Context<Self>) -> Self::Result {
        let ready = |r| AtomicResponse::new(Box::pin(actix::fut::ready(r)));
        let (Some(node), Some(live)) = (self.nodes.get(&msg.0).cloned(), self.live.get(&msg.0))
        else {
            return ready(Err(EdgeError::UnknownNode(msg.0 .0)));
        };
        if let Some(done) = &live.state.retired {
            return ready(Ok(done.clone()));
        }
        let retired = self.retired_set();
        // The retirement writes off the coupon rights the replica held.
        self.coupons_changed();
        let store = self.store.clone();
        let nodes = self.nodes.clone();
        let holds = self.holds.clone();
        let offers = self.offers.clone();
        let now = self.clock.now();
        AtomicResponse::new(Box::pin(
            async move {
                let env = Env {
                    nodes: &nodes,
                    holds: holds.as_ref(),
                    offers: offers.as_ref(),
                    now,
                };
                let mut w = Working::new(store.as_ref());
                let record = super::merge::retire(&mut w, &env, &retired, &node).await?;
                let planned = w.finish();
                let last = store.commit(planned.write).await?;
                Ok::<_, EdgeError>((record, last))
            }
            .into_actor(self)
            .map(move |res, act, _| {
                let (record, last) = res?;
                tracing::warn!(node = %record.replica, written_off = ?record.written_off, "replica retired");
                if let Some(live) = act.live.get_mut(&record.replica) {
                    live.state.retired = Some(record.clone());
                    if let Some((_, addr)) = live.session.take() {
                        addr.do_send(RetiredNow);
                    }
                }
                act.outbox_grew(last);
                Ok(record)
            }),
        ))
    }
}

impl Handler<RecordConflict> for EdgeReplica {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: RecordConflict, _ctx: &mut Context<Self>) -> Self::Result {
        let now_ms = self.now_ms();
        let write = EdgeWrite {
            conflicts: vec![(
                msg.node.clone(),
                ConflictRecord {
                    id: Ulid::new(),
                    replica: ReplicaId::hub(),
                    kind: msg.kind,
                    detail: msg.detail,
                    at: self.hlc.now(now_ms),
                },
            )],
            ..EdgeWrite::default()
        };
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if let Err(e) = store.commit(write).await {
                    tracing::error!(node = %msg.node, error = %e, "conflict not recorded");
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<LiveStatus> for EdgeReplica {
    type Result = MessageResult<LiveStatus>;

    fn handle(&mut self, _: LiveStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let limit = i64::try_from(self.timing.max_clock_skew.as_millis()).unwrap_or(i64::MAX);
        MessageResult(
            self.nodes
                .iter()
                .filter_map(|n| {
                    let live = self.live.get(&n.replica)?;
                    Some(NodeLive {
                        replica: n.replica.clone(),
                        name: n.name.clone(),
                        location: n.location.clone(),
                        connected: live.session.is_some(),
                        meta: live.state.meta.clone(),
                        have: live.state.have,
                        outbox_last: live.state.outbox_last,
                        acked: live.acked,
                        retired: live.state.retired.clone(),
                        catalog_version: self.catalog_version.version,
                        skew_exceeds_limit: live
                            .state
                            .meta
                            .skew_ms
                            .is_some_and(|s| s.abs() > limit),
                        boards: live.boards.clone(),
                        boards_heard_ms: live.boards_heard_ms,
                    })
                })
                .collect(),
        )
    }
}
