//! Shard ownership: each node holds the leases of its fair share of shards, and knows who
//! holds the others.
//!
//! Every `heartbeat_every`, a node's [`Ownership`] task:
//! 1. drops the local shards whose lease may have run out (no renewal for a ttl: partitioned
//!    or stalled), stopping their actors;
//! 2. heartbeats and lists the live nodes (one statement), and computes its share
//!    ([`super::rendezvous`]);
//! 3. hands over the shards that moved away: stops their local actors first (a commit in
//!    flight finishes), then releases their leases (one statement), so the new owner takes
//!    them on its next round;
//! 4. renews the leases it keeps (one statement), dropping those it lost;
//! 5. acquires the shards of its share it does not hold (one statement for all of them;
//!    refused while another node's lease runs: it tries again next round);
//! 6. reads who holds every other shard (for forwarding).
//!
//! So a round is at most five statements, whatever the number of shards that move.
//!
//! # How fast a dead node's shards move
//!
//! A node counts as live while its heartbeat is younger than `lease_ttl` *or* it still holds
//! an unexpired lease ([`membership`]). A node killed at time `K` (the database's clock) sent
//! its last heartbeat and renewal before `K`, so by `K + lease_ttl` it is no longer live and
//! none of its leases runs any more: the first round of each survivor that starts after that
//! counts it dead, gives the survivor its share of the dead node's shards, and takes all of
//! them in its acquisition statement (every lease in it has expired).
//!
//! When that round starts: rounds run every `heartbeat_every`, and besides, each round learns
//! from its heartbeat statement the moment the first other live node stops counting as live
//! (if nothing renews), and the next round starts then (5 ms later, counted from the answer,
//! so never before it) if that is earlier. A survivor has a round between the dead node's last
//! renewal and its death (two rounds per ttl at least), so it starts its taking round right at
//! the death. Hence every shard of a node killed at `K` is held again by
//! **`K + lease_ttl` + one round** (five statements, milliseconds on a healthy database, plus
//! the 5 ms); and in any case (a survivor whose rounds failed or were late) by
//! `K + lease_ttl + heartbeat_every` + one round ([`OwnershipSettings::failover_bound`]). With
//! the defaults (6 s + 1 s) that is about 6 s, 7 s at most. Requests for a moved shard are
//! forwarded to its new owner once the other survivors have read the new holders, which they
//! do in the same woken round or the next (at most one more `heartbeat_every`).
//!
//! A node's own idea of a lease ends `lease_ttl` after it *sent* the renewal, never later than
//! the database's, so [`OwnershipView::token`] never answers a token the database already let
//! go. And whatever this node believes, a commit with a stale token is refused by the storage.

use super::membership::{self, Node};
use super::rendezvous::share_of;
use super::{shard_of, ClusterError, ShardKey, SHARDS};
use crate::storage::postgres::PgStorage;
use crate::storage::{FencingToken, StorageError, UnitOfWork};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

/// How a node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct OwnershipSettings {
    /// This node's id (the owner name of its leases).
    pub node_id: String,
    /// Where other nodes reach this one, e.g. `http://10.0.0.7:8080`.
    pub address: String,
    /// How long a lease (and a heartbeat) lasts without renewal.
    pub lease_ttl: Duration,
    /// How often the node heartbeats, renews and rebalances.
    pub heartbeat_every: Duration,
}

impl OwnershipSettings {
    /// Renewals must come at least twice per ttl, or a lease runs out between two of them.
    pub fn check(&self) -> Result<(), ClusterError> {
        if self.node_id.trim().is_empty() {
            return Err(ClusterError::Config("node_id must name this node".into()));
        }
        if self.heartbeat_every.is_zero() || self.heartbeat_every * 2 > self.lease_ttl {
            return Err(ClusterError::Config(format!(
                "heartbeat_every ({:?}) must be more than zero and at most half of lease_ttl ({:?})",
                self.heartbeat_every, self.lease_ttl
            )));
        }
        if !(self.address.starts_with("http://") || self.address.starts_with("https://")) {
            return Err(ClusterError::Config(format!(
                "the advertised address must be an http:// or https:// URL, not '{}'",
                self.address
            )));
        }
        Ok(())
    }

    /// The longest a dead node's shards stay unowned: its lease's ttl, plus the wait for the
    /// survivors' next round (plus that round's few statements; see the module docs).
    pub fn failover_bound(&self) -> Duration {
        self.lease_ttl + self.heartbeat_every
    }
}

/// Who owns a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node_id: String,
    /// Where to forward to (unknown if the owner has no row in `cluster_nodes`).
    pub address: Option<String>,
    /// The current fencing token, when this node is the owner.
    pub token: Option<FencingToken>,
}

impl Owner {
    pub fn is_local(&self) -> bool {
        self.token.is_some()
    }
}

/// A shard this node holds: its token and until when this node may use it.
#[derive(Debug, Clone, Copy)]
struct Held {
    token: FencingToken,
    until: Instant,
}

#[derive(Default)]
struct Table {
    local: HashMap<u64, Held>,
    /// Other nodes' shards: owner id and address.
    remote: HashMap<u64, (String, Option<String>)>,
}

/// Who owns which shard, as this node last saw it (read by request handlers and actors,
/// written by the [`Ownership`] task only).
pub struct OwnershipView {
    me: Node,
    table: RwLock<Table>,
}

impl OwnershipView {
    fn new(me: Node) -> OwnershipView {
        OwnershipView {
            me,
            table: RwLock::new(Table::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        // Writers replace whole entries, so a poisoned table is still consistent.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.me.id
    }

    /// The current fencing token of `shard`, if this node holds it.
    pub fn token(&self, shard: u64) -> Option<FencingToken> {
        let now = Instant::now();
        self.read()
            .local
            .get(&shard)
            .filter(|h| h.until > now)
            .map(|h| h.token)
    }

    /// The owner of `shard`: this node (with its token), another node, or none known (free,
    /// or moving between nodes right now).
    pub fn owner(&self, shard: u64) -> Option<Owner> {
        if let Some(token) = self.token(shard) {
            return Some(Owner {
                node_id: self.me.id.clone(),
                address: Some(self.me.address.clone()),
                token: Some(token),
            });
        }
        self.read()
            .remote
            .get(&shard)
            .map(|(node_id, address)| Owner {
                node_id: node_id.clone(),
                address: address.clone(),
                token: None,
            })
    }

    /// The shards this node holds now, in order.
    pub fn local_shards(&self) -> Vec<u64> {
        let now = Instant::now();
        let mut shards: Vec<u64> = self
            .read()
            .local
            .iter()
            .filter(|(_, h)| h.until > now)
            .map(|(s, _)| *s)
            .collect();
        shards.sort_unstable();
        shards
    }

    /// Every held shard by owner node id (this node's included), as last seen.
    pub fn owners(&self) -> BTreeMap<String, Vec<u64>> {
        let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for shard in 0..SHARDS {
            if let Some(o) = self.owner(shard) {
                by.entry(o.node_id).or_default().push(shard);
            }
        }
        by
    }
}

/// What fences an entity actor's units of work: nothing on the embedded storage (one process
/// owns everything), the shard's current token in a cluster.
#[derive(Clone, Default)]
pub struct Fence(Option<Arc<OwnershipView>>);

impl Fence {
    /// No fencing: the embedded storage.
    pub fn embedded() -> Fence {
        Fence(None)
    }

    /// Fencing by the shard leases this node holds.
    pub fn cluster(view: Arc<OwnershipView>) -> Fence {
        Fence(Some(view))
    }

    /// Whether this node may run the actor of `key` (always, outside a cluster).
    pub fn owns(&self, key: &impl ShardKey) -> bool {
        self.0
            .as_ref()
            .is_none_or(|v| v.token(shard_of(key)).is_some())
    }

    /// A new customer id, in a shard this node holds (in a cluster, when it holds any): the
    /// node registering a customer runs their actor, with no hop to another node.
    pub fn new_local_customer(&self) -> protocol::CustomerId {
        self.mint(protocol::CustomerId::new, |id| self.owns(id))
    }

    /// A new anonymous basket id, in a shard this node holds (see
    /// [`Fence::new_local_customer`]).
    pub fn new_local_basket(&self) -> protocol::BasketId {
        self.mint(protocol::BasketId::new, |id| self.owns(id))
    }

    /// A new basket id for `customer`, in the customer's shard (in a cluster): the node that
    /// owns a customer owns their basket too, so a signed-in shopper's requests need one node.
    pub fn new_basket_of(&self, customer: &protocol::CustomerId) -> protocol::BasketId {
        let shard = shard_of(customer);
        self.mint(protocol::BasketId::new, |id| shard_of(id) == shard)
    }

    /// `new()` until `fits` (a shard is one in [`SHARDS`], so a few hundred tries at most for
    /// one shard); the embedded storage takes the first.
    fn mint<K>(&self, new: impl Fn() -> K, fits: impl Fn(&K) -> bool) -> K {
        let first = new();
        if self.0.is_none() || fits(&first) {
            return first;
        }
        // Bounded: a node holding no shard right now (or an unlucky run) takes any id, which
        // is still correct (its requests are forwarded), only one hop slower.
        for _ in 0..(SHARDS * 16) {
            let id = new();
            if fits(&id) {
                return id;
            }
        }
        first
    }

    /// `unit`, carrying the token of `key`'s shard in a cluster; `Fenced` if this node does
    /// not hold that shard (nothing is committed then).
    pub fn seal(
        &self,
        key: &impl ShardKey,
        mut unit: UnitOfWork,
    ) -> Result<UnitOfWork, StorageError> {
        if let Some(view) = &self.0 {
            unit.fence = Some(view.token(shard_of(key)).ok_or(StorageError::Fenced)?);
        }
        Ok(unit)
    }

    /// Commits `unit` sealed for `key`'s shard (see [`Fence::seal`]).
    pub async fn commit<K: ShardKey + Sync>(
        &self,
        storage: &dyn crate::storage::Committer,
        key: &K,
        unit: UnitOfWork,
    ) -> Result<(), StorageError> {
        storage.commit(self.seal(key, unit)?).await
    }
}

/// The local actors of a shard: stopped when the shard moves away or its lease is lost.
#[async_trait]
pub trait ShardActivations: Send + Sync {
    /// Stops every local actor of `shard`; returns once they have stopped (a unit in flight
    /// has committed or failed).
    async fn stop_shard(&self, shard: u64);
}

/// Runs a node's part in shard ownership until it leaves (or dies).
pub struct Ownership {
    view: Arc<OwnershipView>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Round>,
}

/// The task's state between rounds.
struct Round {
    pg: Arc<PgStorage>,
    settings: OwnershipSettings,
    view: Arc<OwnershipView>,
    activations: Arc<dyn ShardActivations>,
}

impl Ownership {
    /// Starts the node's rounds (the first one at once). Must run inside a tokio runtime.
    pub fn start(
        pg: Arc<PgStorage>,
        settings: OwnershipSettings,
        activations: Arc<dyn ShardActivations>,
    ) -> Result<Ownership, ClusterError> {
        settings.check()?;
        let view = Arc::new(OwnershipView::new(Node {
            id: settings.node_id.clone(),
            address: settings.address.clone(),
        }));
        let (stop, mut stopped) = oneshot::channel();
        let span = tracing::info_span!("ownership", node = %settings.node_id);
        let mut round = Round {
            pg,
            settings,
            view: view.clone(),
            activations,
        };
        let task = tokio::spawn(
            async move {
                let every = round.settings.heartbeat_every;
                let mut next = Instant::now();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        _ = tokio::time::sleep_until(next) => {
                            let started = Instant::now();
                            let death = round.run().await;
                            // Every `heartbeat_every`, and as soon as another node stops
                            // counting as live if that comes first (its shards are free
                            // then: no need to wait for the next regular round).
                            next = (started + every).max(Instant::now());
                            if let Some(at) = death {
                                next = next.min(at);
                            }
                        }
                    }
                }
                round
            }
            .instrument(span),
        );
        Ok(Ownership {
            view,
            stop: Some(stop),
            task,
        })
    }

    pub fn view(&self) -> Arc<OwnershipView> {
        self.view.clone()
    }

    /// Leaves gracefully: stops the rounds, then for every held shard stops its local actors
    /// and releases the lease, and removes this node from the live ones, so the others take
    /// its shards on their next round, without waiting for a lease to run out.
    pub async fn leave(mut self) -> Result<(), ClusterError> {
        drop(self.stop.take());
        let round = match (&mut self.task).await {
            Ok(round) => round,
            Err(e) => {
                return Err(ClusterError::Storage(StorageError::Io(format!(
                    "the ownership task ended badly: {e}"
                ))))
            }
        };
        let held: Vec<u64> = round.view.read().local.keys().copied().collect();
        round.hand_over(&held).await;
        membership::leave(&round.pg, &round.settings.node_id).await?;
        tracing::info!(node = %round.settings.node_id, "left the cluster");
        Ok(())
    }

    /// Stops the rounds without releasing anything or leaving, as a killed process would
    /// (tests and `omnihub bench cluster`): the leases run out after their ttl.
    pub fn kill(mut self) {
        drop(self.stop.take());
        self.task.abort();
    }
}

impl Round {
    /// One round, bounded by the ttl (a stalled database must not stall the next round);
    /// answers when the first other live node stops counting as live, if known.
    async fn run(&mut self) -> Option<Instant> {
        let ttl = self.settings.lease_ttl;
        match tokio::time::timeout(ttl, self.rebalance()).await {
            Ok(Ok(death)) => death,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shard ownership round failed");
                None
            }
            Err(_) => {
                tracing::warn!(?ttl, "shard ownership round timed out");
                None
            }
        }
    }

    /// A round; answers when (on this node's clock, a little after the database's moment)
    /// the first other live node stops counting as live.
    async fn rebalance(&mut self) -> Result<Option<Instant>, StorageError> {
        self.drop_expired().await;
        let me = self.view.me.clone();
        let live = membership::heartbeat_and_live(&self.pg, &me, self.settings.lease_ttl).await?;
        // The database's `now()` came before the answer: counting from the answer errs late.
        let death = live
            .next_death
            .map(|d| Instant::now() + d + Duration::from_millis(5));
        let ids: Vec<&str> = live.nodes.iter().map(|n| n.id.as_str()).collect();
        let share: BTreeSet<u64> = share_of(SHARDS, &ids, &me.id).into_iter().collect();
        let held: BTreeSet<u64> = self.view.read().local.keys().copied().collect();
        let moved: Vec<u64> = held.difference(&share).copied().collect();
        self.hand_over(&moved).await;
        self.renew(held.intersection(&share).copied().collect())
            .await?;
        self.acquire(share.difference(&held).copied().collect())
            .await?;
        self.refresh_remote().await?;
        Ok(death)
    }

    /// Drops local shards whose lease may have run out (no renewal came through in time).
    async fn drop_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .view
            .read()
            .local
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(s, _)| *s)
            .collect();
        for shard in expired {
            tracing::warn!(
                shard,
                "lease not renewed in time: stopping the shard's actors"
            );
            self.view.write().local.remove(&shard);
            self.activations.stop_shard(shard).await;
        }
    }

    /// Gives `shards` up: no new unit gets their tokens, their actors stop (those in flight
    /// finish), then the leases are released (one statement).
    async fn hand_over(&self, shards: &[u64]) {
        let tokens: Vec<FencingToken> = {
            let mut table = self.view.write();
            shards
                .iter()
                .filter_map(|s| table.local.remove(s).map(|h| h.token))
                .collect()
        };
        if tokens.is_empty() {
            return;
        }
        // All the shards' actors stop at once (a graceful leave hands over every shard).
        futures_util::future::join_all(tokens.iter().map(|t| self.activations.stop_shard(t.shard)))
            .await;
        match self.pg.release_leases(&tokens).await {
            Ok(()) => tracing::info!(shards = tokens.len(), "handed shards over"),
            // They run out by themselves within the ttl.
            Err(e) => tracing::warn!(
                shards = tokens.len(),
                error = %e,
                "cannot release the leases"
            ),
        }
    }

    async fn renew(&mut self, keep: Vec<u64>) -> Result<(), StorageError> {
        if keep.is_empty() {
            return Ok(());
        }
        let tokens: Vec<FencingToken> = {
            let table = self.view.read();
            keep.iter()
                .filter_map(|s| table.local.get(s).map(|h| h.token))
                .collect()
        };
        let sent = Instant::now();
        let renewed: BTreeSet<u64> = self
            .pg
            .renew_leases(&tokens, self.settings.lease_ttl)
            .await?
            .into_iter()
            .collect();
        let until = sent + self.settings.lease_ttl;
        for token in tokens {
            if renewed.contains(&token.shard) {
                if let Some(h) = self.view.write().local.get_mut(&token.shard) {
                    h.until = until;
                }
            } else {
                tracing::warn!(
                    shard = token.shard,
                    "lease lost: stopping the shard's actors"
                );
                self.view.write().local.remove(&token.shard);
                self.activations.stop_shard(token.shard).await;
            }
        }
        Ok(())
    }

    /// Takes the leases of `shards` that are free or expired, in one statement.
    async fn acquire(&mut self, shards: Vec<u64>) -> Result<(), StorageError> {
        if shards.is_empty() {
            return Ok(());
        }
        let sent = Instant::now();
        let acquired = self
            .pg
            .acquire_leases(&shards, &self.settings.node_id, self.settings.lease_ttl)
            .await?;
        if acquired.is_empty() {
            return Ok(());
        }
        tracing::info!(
            asked = shards.len(),
            acquired = acquired.len(),
            "acquired shards"
        );
        let until = sent + self.settings.lease_ttl;
        let mut table = self.view.write();
        for token in acquired {
            tracing::debug!(
                shard = token.shard,
                token = token.token,
                "acquired the shard"
            );
            table.remote.remove(&token.shard);
            table.local.insert(token.shard, Held { token, until });
        }
        Ok(())
    }

    async fn refresh_remote(&mut self) -> Result<(), StorageError> {
        let remote: HashMap<u64, (String, Option<String>)> = membership::holders(&self.pg)
            .await?
            .into_iter()
            .filter(|(_, owner, _)| *owner != self.view.me.id)
            .map(|(shard, owner, address)| (shard, (owner, address)))
            .collect();
        self.view.write().remote = remote;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::BasketId;

    fn view_holding(shard: u64, token: u64, for_: Duration) -> Arc<OwnershipView> {
        let view = Arc::new(OwnershipView::new(Node {
            id: "me".into(),
            address: "http://me".into(),
        }));
        view.write().local.insert(
            shard,
            Held {
                token: FencingToken { shard, token },
                until: Instant::now() + for_,
            },
        );
        view
    }

    #[tokio::test]
    async fn units_carry_the_token_of_a_held_shard_and_are_refused_otherwise() {
        let id = BasketId::new();
        let shard = shard_of(&id);
        let held = Fence::cluster(view_holding(shard, 7, Duration::from_secs(60)));
        let unit = held.seal(&id, UnitOfWork::new()).expect("held here");
        assert_eq!(unit.fence, Some(FencingToken { shard, token: 7 }));
        assert!(held.owns(&id));
        let elsewhere = Fence::cluster(view_holding(
            (shard + 1) % SHARDS,
            7,
            Duration::from_secs(60),
        ));
        assert!(matches!(
            elsewhere.seal(&id, UnitOfWork::new()),
            Err(StorageError::Fenced)
        ));
        assert!(!elsewhere.owns(&id));
        // A lease this node could not renew in time is not used, even before the round drops it.
        let lapsed = Fence::cluster(view_holding(shard, 7, Duration::ZERO));
        assert!(matches!(
            lapsed.seal(&id, UnitOfWork::new()),
            Err(StorageError::Fenced)
        ));
        let embedded = Fence::embedded();
        assert_eq!(
            embedded
                .seal(&id, UnitOfWork::new())
                .expect("no fence")
                .fence,
            None
        );
        assert!(embedded.owns(&id));
    }

    #[test]
    fn settings_are_checked() {
        let ok = OwnershipSettings {
            node_id: "a".into(),
            address: "http://10.0.0.1:8080".into(),
            lease_ttl: Duration::from_secs(6),
            heartbeat_every: Duration::from_secs(1),
        };
        assert!(ok.check().is_ok());
        assert_eq!(ok.failover_bound(), Duration::from_secs(7));
        let slow = OwnershipSettings {
            heartbeat_every: Duration::from_secs(4),
            ..ok.clone()
        };
        assert!(slow.check().is_err());
        let nameless = OwnershipSettings {
            node_id: " ".into(),
            ..ok.clone()
        };
        assert!(nameless.check().is_err());
        let bare = OwnershipSettings {
            address: "10.0.0.1:8080".into(),
            ..ok
        };
        assert!(bare.check().is_err());
    }
}

#[cfg(all(test, feature = "cluster-tests"))]
mod round_tests {
    use super::*;
    use crate::cluster::failover::NoActivations;
    use crate::storage::postgres::tests::on_nodes;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_round_that_sees_a_node_dead_takes_all_its_shards() {
        on_nodes(2, |pgs| async move {
            let ttl = Duration::from_secs(2);
            let every = Duration::from_millis(100);
            let ids = ["node-dead", "node-survivor"];
            // The dead node's last round: a heartbeat, then its share's leases, which outlive
            // the heartbeat (a node renews after heartbeating; here by half a second).
            let dead = Node {
                id: ids[0].into(),
                address: "http://node-dead.invalid".into(),
            };
            membership::heartbeat(&pgs[0], &dead)
                .await
                .expect("heartbeat");
            let its = share_of(SHARDS, &ids, ids[0]);
            let before = pgs[0]
                .acquire_leases(&its, ids[0], ttl + Duration::from_millis(500))
                .await
                .expect("acquired");
            assert_eq!(before.len(), its.len());
            assert!(before.len() > 100, "about half of {SHARDS}");

            let me = Node {
                id: ids[1].into(),
                address: "http://node-survivor.invalid".into(),
            };
            let mut round = Round {
                pg: pgs[1].clone(),
                settings: OwnershipSettings {
                    node_id: me.id.clone(),
                    address: me.address.clone(),
                    lease_ttl: ttl,
                    heartbeat_every: every,
                },
                view: Arc::new(OwnershipView::new(me)),
                activations: Arc::new(NoActivations),
            };
            // Rounds while the node counts as live (by its heartbeat, then by its leases)
            // take the survivor's own share and none of the dead node's shards.
            let mine = share_of(SHARDS, &ids, ids[1]);
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut rounds = 0;
            loop {
                let live = membership::live(&pgs[1], ttl).await.expect("live");
                if !live.iter().any(|n| n.id == ids[0]) {
                    break;
                }
                let death = round.rebalance().await.expect("a round");
                // ... and know when it stops counting as live: when its leases run out.
                let death = death.expect("the moment the other node stops counting as live");
                assert!(death <= Instant::now() + ttl + Duration::from_millis(600));
                rounds += 1;
                assert_eq!(round.view.local_shards(), mine, "only its own share");
                assert!(
                    Instant::now() < deadline,
                    "the dead node never counted dead"
                );
                tokio::time::sleep(every).await;
            }
            assert!(rounds > 0, "a round ran while the node was live");
            // The node counts as dead: the very next round takes every one of its shards
            // (in one statement), with greater tokens.
            let death = round.rebalance().await.expect("a round");
            assert_eq!(death, None, "no other live node");
            let all: Vec<u64> = (0..SHARDS).collect();
            assert_eq!(round.view.local_shards(), all);
            for old in &before {
                let new = round.view.token(old.shard).expect("held");
                assert!(new.token > old.token, "{old:?} -> {new:?}");
            }
            assert!(pgs[0]
                .renew_leases(&before, ttl)
                .await
                .expect("asked")
                .is_empty());
        })
        .await;
    }
}
