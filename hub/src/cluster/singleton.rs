//! Work that runs once across the cluster: the node holding the lease on a reserved shard runs
//! it, the others stand by.
//!
//! Each [`Singleton`] has a shard of its own at or above 2^40 (next to the relays',
//! [`EVENT_RELAY_SHARD`] and [`OUTBOX_RELAY_SHARD`]), leased in `shard_leases` like an entity
//! shard. [`Singletons::run`] supervises one: it acquires the lease whenever it is free, starts
//! the work with a [`Term`], renews the lease every `renew_every`, and stops the work when the
//! lease is lost — fenced by a newer holder, or not renewed in time: the work is told to stop
//! half a `renew_every` before the lease could lapse (counted from when the last renewal was *sent*,
//! never later than the database's expiry). A graceful [`SingletonHandle::stop`] stops the work
//! first, then releases the lease, so another node takes over within one `renew_every`; a node
//! that dies stops renewing, and a standby (asking every `renew_every`) takes over within
//! `lease_ttl + renew_every`.
//!
//! **Fencing.** A holder that lost its lease may still be in the middle of a write. So:
//! - units of work carry [`Term::token`] (`UnitOfWork::fence`), checked by the storage in the
//!   unit's transaction;
//! - keyspace writes (a singleton's cursor and state) go through [`Term::apply`]: one keyspace
//!   transaction that reads the singleton's **holder key** (`singleton_holders/<name>`, the
//!   fencing token of its latest holder) and writes only if it is still this term's token.
//!   A new holder writes its (greater) token there before its work starts, under the same
//!   key lock, so every write of a stale holder is either before that — and the new holder
//!   reads it — or refused with [`StorageError::Fenced`].
//!
//! **Embedded** (sled, one process): [`Singletons::embedded`] starts the work at once, with no
//! lease and no fence, exactly as the hub ran it before.

use crate::storage::jetstream::outbox::OUTBOX_RELAY_SHARD;
use crate::storage::jetstream::relay::EVENT_RELAY_SHARD;
use crate::storage::kv::{Abort, Batch, Keyspace, Tree, TxError};
use crate::storage::postgres::PgStorage;
use crate::storage::{FencingToken, Result, StorageError};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// The tree of holder keys: a singleton's name → the fencing token of its latest holder.
pub const HOLDERS_TREE: &str = "singleton_holders";

/// Tasks that must run on one node only. Their shards follow the relays'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Singleton {
    /// The experience analyst (profiles, segments, analytics from the event feed).
    Analyst,
    /// The experiments counter (exposures and conversions from the event feed).
    ExperimentCounter,
    /// The recommender (co-purchase model from the event feed).
    Recommender,
    /// The marketing automation scheduler's timers.
    AutomationTimers,
    /// The PostgreSQL outbox delivery workers.
    OutboxDelivery,
    /// The checkout sweeper (expired checkouts, their holds).
    CheckoutSweeper,
    /// The ERP import schedulers (pulls on a schedule).
    ImportSchedulers,
    /// The purge of account linking's expired codes and tokens.
    OAuthPurge,
    /// The card refunds of store returns.
    StoreRefunds,
}

impl Singleton {
    pub const ALL: [Singleton; 9] = [
        Singleton::Analyst,
        Singleton::ExperimentCounter,
        Singleton::Recommender,
        Singleton::AutomationTimers,
        Singleton::OutboxDelivery,
        Singleton::CheckoutSweeper,
        Singleton::ImportSchedulers,
        Singleton::OAuthPurge,
        Singleton::StoreRefunds,
    ];

    /// The reserved shard whose lease makes a node this singleton's holder. Fixed: a change
    /// lets two versions run the same singleton during a rolling upgrade.
    pub const fn shard(self) -> u64 {
        OUTBOX_RELAY_SHARD
            + match self {
                Singleton::Analyst => 1,
                Singleton::ExperimentCounter => 2,
                Singleton::Recommender => 3,
                Singleton::AutomationTimers => 4,
                Singleton::OutboxDelivery => 5,
                Singleton::CheckoutSweeper => 6,
                Singleton::ImportSchedulers => 7,
                Singleton::OAuthPurge => 8,
                Singleton::StoreRefunds => 9,
            }
    }

    /// Its name in logs and its holder key.
    pub const fn name(self) -> &'static str {
        match self {
            Singleton::Analyst => "analyst",
            Singleton::ExperimentCounter => "experiment_counter",
            Singleton::Recommender => "recommender",
            Singleton::AutomationTimers => "automation_timers",
            Singleton::OutboxDelivery => "outbox_delivery",
            Singleton::CheckoutSweeper => "checkout_sweeper",
            Singleton::ImportSchedulers => "import_schedulers",
            Singleton::OAuthPurge => "oauth_purge",
            Singleton::StoreRefunds => "store_refunds",
        }
    }
}

// The relays' shards come first; every singleton's is reserved (>= 2^40) and its own.
const _: () = assert!(EVENT_RELAY_SHARD == 1 << 40 && OUTBOX_RELAY_SHARD == EVENT_RELAY_SHARD + 1);

/// How a cluster node holds its singletons' leases.
#[derive(Debug, Clone)]
pub struct SingletonSettings {
    /// The owner name of the leases (the node id).
    pub node_id: String,
    /// A lease lasts this long unrenewed.
    pub lease_ttl: Duration,
    /// Renew (holder) and ask for the lease (standby) this often; at most half the ttl.
    pub renew_every: Duration,
}

impl SingletonSettings {
    fn check(&self) -> Result<()> {
        if self.renew_every.is_zero() || self.renew_every * 2 > self.lease_ttl {
            return Err(StorageError::Io(format!(
                "singleton leases: renewing every {:?} must be more than zero and at most half \
                 the lease ttl {:?}",
                self.renew_every, self.lease_ttl
            )));
        }
        Ok(())
    }
}

/// What a singleton's work is on this node: an actor that runs on every node (it serves reads
/// too) and does the singleton's part only where it is the holder.
#[derive(Clone)]
pub enum Role {
    /// The only node (embedded): works, writes unfenced.
    Alone,
    /// The holder for this term: works, every write fenced by the term.
    Holding(Term),
    /// Another node works: this one follows what the holder stores.
    Standby,
}

impl Role {
    /// Whether this node does the work (rather than follow).
    pub fn works(&self) -> bool {
        !matches!(self, Role::Standby)
    }

    /// The term writes are fenced by (`None`: unfenced, or not working).
    pub fn term(&self) -> Option<&Term> {
        match self {
            Role::Holding(term) => Some(term),
            Role::Alone | Role::Standby => None,
        }
    }
}

/// To an actor with a [`Role`]: this node holds the singleton for a term (`Some`) or no
/// longer (`None`).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Lead(pub Option<Term>);

/// What a running singleton holds: its fence, and the signal to stop.
#[derive(Clone)]
pub struct Term {
    fence: Option<KvFence>,
    stop: watch::Receiver<bool>,
}

/// The holder key a term's keyspace writes are checked against.
#[derive(Clone)]
struct KvFence {
    keyspace: Keyspace,
    holders: Tree,
    key: &'static str,
    token: FencingToken,
}

impl Term {
    /// The fencing token units of work of this term carry (`None` when embedded).
    pub fn token(&self) -> Option<FencingToken> {
        self.fence.as_ref().map(|f| f.token)
    }

    /// Whether the work must stop (the lease is lost or the node stops).
    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when the work must stop.
    pub async fn stopped(&mut self) {
        while !*self.stop.borrow_and_update() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }

    /// Applies `batch` to `tree` (of `keyspace`) if this term still holds its singleton:
    /// `Fenced` (and nothing written) once a newer holder took it. Embedded: a plain batch.
    /// Blocking (the keyspace is synchronous): call it off the async threads.
    pub fn apply(&self, keyspace: &Keyspace, tree: &Tree, batch: &Batch) -> Result<()> {
        let Some(fence) = &self.fence else {
            return tree.apply_batch(batch.clone());
        };
        let mine = fence.token.token.to_be_bytes();
        keyspace
            .transaction(&[tree, &fence.holders], |tx| {
                if tx.get(&fence.holders, fence.key)?.as_deref() != Some(mine.as_slice()) {
                    return Err(Abort::Abort(()));
                }
                tx.apply_batch(tree, batch)?;
                Ok(())
            })
            .map_err(|e| match e {
                TxError::Abort(()) => StorageError::Fenced,
                TxError::Storage(e) => e,
            })
    }
}

impl KvFence {
    /// Makes `token` the holder's: refused (`Fenced`) if a greater token is there already.
    fn claim(&self) -> Result<()> {
        let token = self.token.token;
        self.keyspace
            .transaction(&[&self.holders], |tx| {
                let current = tx
                    .get(&self.holders, self.key)?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                    .map(u64::from_be_bytes);
                if current.is_some_and(|c| c > token) {
                    return Err(Abort::Abort(()));
                }
                tx.insert(&self.holders, self.key, token.to_be_bytes())?;
                Ok(())
            })
            .map_err(|e| match e {
                TxError::Abort(()) => StorageError::Fenced,
                TxError::Storage(e) => e,
            })
    }
}

/// Runs singletons: at once when embedded, under their leases in a cluster.
#[derive(Clone)]
pub struct Singletons {
    keyspace: Keyspace,
    cluster: Option<Arc<Cluster>>,
}

struct Cluster {
    pg: Arc<PgStorage>,
    settings: SingletonSettings,
    holders: Tree,
}

impl Singletons {
    /// One process owns everything: every singleton runs here, unfenced.
    pub fn embedded(keyspace: Keyspace) -> Singletons {
        Singletons {
            keyspace,
            cluster: None,
        }
    }

    /// A cluster node: a singleton runs while this node holds its lease in `pg`; its holder
    /// keys are in `keyspace` (the cluster's, in the same database).
    pub fn cluster(
        pg: Arc<PgStorage>,
        keyspace: Keyspace,
        settings: SingletonSettings,
    ) -> Result<Singletons> {
        settings.check()?;
        let holders = keyspace.open_tree(HOLDERS_TREE)?;
        Ok(Singletons {
            keyspace,
            cluster: Some(Arc::new(Cluster {
                pg,
                settings,
                holders,
            })),
        })
    }

    /// Whether singletons here are leased (a cluster node).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Runs `work` as `which`: the future it makes runs while this node holds the singleton
    /// and must end soon after its [`Term`] says stop (it is aborted if it has not ended
    /// within the lease ttl). It is started again on every new term. Must be called within a
    /// tokio runtime.
    pub fn run<F, Fut>(&self, which: Singleton, work: F) -> SingletonHandle
    where
        F: Fn(Term) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            leading: AtomicBool::new(false),
            work: Mutex::new(None),
        });
        let task = match &self.cluster {
            None => {
                let term = Term {
                    fence: None,
                    stop: stopped,
                };
                let work = tokio::spawn(work(term));
                shared.set_work(Some(work.abort_handle()));
                shared.leading.store(true, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Err(e) = work.await {
                        if e.is_panic() {
                            tracing::error!(singleton = which.name(), "the singleton panicked");
                        }
                    }
                })
            }
            Some(cluster) => {
                let supervisor = Supervisor {
                    which,
                    cluster: cluster.clone(),
                    keyspace: self.keyspace.clone(),
                    shared: shared.clone(),
                };
                tokio::spawn(supervisor.run(work, stopped))
            }
        };
        SingletonHandle {
            which,
            stop,
            task,
            shared,
        }
    }
}

impl Singletons {
    /// Runs `tick` every `every` while this node holds `which` (periodic work such as the
    /// checkout sweeper or the import schedulers' pulls); a tick in progress finishes before
    /// the term ends.
    pub fn run_every<F, Fut>(&self, which: Singleton, every: Duration, tick: F) -> SingletonHandle
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tick = Arc::new(tick);
        self.run(which, move |mut term| {
            let tick = tick.clone();
            async move {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = term.stopped() => return,
                        _ = interval.tick() => tick().await,
                    }
                }
            }
        })
    }
}

/// What the handle and the supervisor share.
struct Shared {
    leading: AtomicBool,
    /// The running work's task, aborted with the node ([`SingletonHandle::abandon`]).
    work: Mutex<Option<AbortHandle>>,
}

impl Shared {
    fn set_work(&self, work: Option<AbortHandle>) {
        *self
            .work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = work;
    }
}

/// A supervised singleton on this node.
pub struct SingletonHandle {
    which: Singleton,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl SingletonHandle {
    pub fn singleton(&self) -> Singleton {
        self.which
    }

    /// Whether the work runs on this node now.
    pub fn is_running(&self) -> bool {
        self.shared.leading.load(Ordering::SeqCst)
    }

    /// Graceful stop: the work stops, then the lease is released (another node takes over
    /// at its next ask).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            if e.is_panic() {
                tracing::error!(singleton = self.which.name(), "the supervisor panicked");
            }
        }
    }

    /// Ends everything here at once without releasing anything, as if the node died (the
    /// lease runs out; tests use it to kill a holder).
    pub fn abandon(self) {
        self.task.abort();
        if let Some(work) = self
            .shared
            .work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            work.abort();
        }
        self.shared.leading.store(false, Ordering::SeqCst);
    }
}

/// The singletons a node runs, for shutdown and for asking which it holds now.
#[derive(Clone, Default)]
pub struct SingletonGroup(Arc<Mutex<Vec<SingletonHandle>>>);

impl SingletonGroup {
    pub fn add(&self, handle: SingletonHandle) {
        self.lock().push(handle);
    }

    /// Whether `which` runs on this node now (embedded: always, once started).
    pub fn holds(&self, which: Singleton) -> bool {
        self.lock()
            .iter()
            .any(|h| h.which == which && h.is_running())
    }

    /// Stops every singleton gracefully (work first, then the lease), all at once.
    pub async fn stop(&self) {
        let handles = std::mem::take(&mut *self.lock());
        futures_util::future::join_all(handles.into_iter().map(SingletonHandle::stop)).await;
    }

    /// Ends every singleton here without releasing anything (as if the node died).
    pub fn abandon(&self) {
        for h in std::mem::take(&mut *self.lock()) {
            h.abandon();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SingletonHandle>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How a term ended.
enum Ended {
    /// The node stops: the lease is released.
    Stopping,
    /// The lease is lost or may be about to lapse: ask again later.
    Lost,
    /// The work ended on its own: step down (released), ask again later.
    WorkDone,
}

struct Supervisor {
    which: Singleton,
    cluster: Arc<Cluster>,
    keyspace: Keyspace,
    shared: Arc<Shared>,
}

impl Supervisor {
    #[tracing::instrument(skip_all, fields(singleton = self.which.name()))]
    async fn run<F, Fut>(self, work: F, mut stop: watch::Receiver<bool>)
    where
        F: Fn(Term) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let settings = &self.cluster.settings;
        loop {
            if *stop.borrow() {
                return;
            }
            let sent = Instant::now();
            let lease = self
                .cluster
                .pg
                .acquire_lease(self.which.shard(), &settings.node_id, settings.lease_ttl)
                .await;
            match lease {
                Ok(Some(token)) => {
                    let ended = self.term(&work, token, sent, &mut stop).await;
                    if !matches!(ended, Ended::Lost) {
                        if let Err(e) = self.cluster.pg.release_lease(token).await {
                            tracing::warn!(error = %e, "releasing the singleton's lease");
                        }
                    }
                    if matches!(ended, Ended::Stopping) {
                        return;
                    }
                }
                Ok(None) => {}
                Err(StorageError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "asking for the singleton's lease"),
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(settings.renew_every) => {}
            }
        }
    }

    /// Holds `token`'s lease (acquired by a request sent at `sent`) and runs the work until
    /// the term ends.
    async fn term<F, Fut>(
        &self,
        work: &F,
        token: FencingToken,
        sent: Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended
    where
        F: Fn(Term) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let settings = &self.cluster.settings;
        let fence = KvFence {
            keyspace: self.keyspace.clone(),
            holders: self.cluster.holders.clone(),
            key: self.which.name(),
            token,
        };
        let claiming = fence.clone();
        match tokio::task::spawn_blocking(move || claiming.claim()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "claiming the singleton's holder key");
                return Ended::Lost;
            }
            Err(e) => {
                tracing::error!(error = %e, "claiming the singleton's holder key");
                return Ended::Lost;
            }
        }
        // Ours until `ttl` after the request that acquired or renewed it was sent; the work
        // is told to stop half a `renew_every` before that if no renewal came through.
        let mut valid_until = sent + settings.lease_ttl;
        let (halt, halted) = watch::channel(false);
        let mut running = tokio::spawn(work(Term {
            fence: Some(fence),
            stop: halted,
        }));
        self.shared.set_work(Some(running.abort_handle()));
        self.shared.leading.store(true, Ordering::SeqCst);
        tracing::info!(token = token.token, "running the singleton here");
        let guard = settings.renew_every / 2;
        let mut renew_at = Instant::now() + settings.renew_every;
        let ended = loop {
            tokio::select! {
                _ = stop.changed() => break Ended::Stopping,
                _ = &mut running => break Ended::WorkDone,
                _ = tokio::time::sleep_until(valid_until - guard) => {
                    tracing::warn!("the singleton's lease was not renewed in time; stopping it");
                    break Ended::Lost;
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    let sent = Instant::now();
                    let renewal = tokio::time::timeout_at(
                        valid_until - guard,
                        self.cluster.pg.renew_lease(token, settings.lease_ttl),
                    );
                    match renewal.await {
                        Ok(Ok(())) => valid_until = sent + settings.lease_ttl,
                        Ok(Err(StorageError::Fenced)) => {
                            tracing::info!("the singleton's lease was taken over; stopping it");
                            break Ended::Lost;
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "renewing the singleton's lease"),
                        Err(_) => tracing::warn!("renewing the singleton's lease timed out"),
                    }
                    renew_at = Instant::now() + settings.renew_every;
                }
            }
        };
        let _ = halt.send(true);
        if !running.is_finished()
            && tokio::time::timeout(settings.lease_ttl, &mut running)
                .await
                .is_err()
        {
            tracing::warn!("the singleton did not stop within the lease ttl; aborting it");
            running.abort();
        }
        self.shared.set_work(None);
        self.shared.leading.store(false, Ordering::SeqCst);
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn sled_keyspace() -> (tempfile::TempDir, Keyspace) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(1 << 20)
            .open()
            .expect("sled opens");
        (dir, Keyspace::sled(db))
    }

    #[test]
    fn every_singleton_has_a_reserved_shard_of_its_own() {
        let mut shards: Vec<u64> = Singleton::ALL.iter().map(|s| s.shard()).collect();
        assert!(shards.iter().all(|&s| s >= 1 << 40), "{shards:?}");
        assert!(!shards.contains(&EVENT_RELAY_SHARD) && !shards.contains(&OUTBOX_RELAY_SHARD));
        shards.sort_unstable();
        shards.dedup();
        assert_eq!(shards.len(), Singleton::ALL.len());
        let mut names: Vec<&str> = Singleton::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Singleton::ALL.len());
    }

    #[tokio::test]
    async fn embedded_runs_the_work_at_once_unfenced_until_stopped() {
        let (_dir, keyspace) = sled_keyspace();
        let singletons = Singletons::embedded(keyspace.clone());
        assert!(!singletons.is_cluster());
        let tree = keyspace.open_tree("state").expect("a tree");
        let ran = Arc::new(AtomicUsize::new(0));
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let handle = singletons.run(Singleton::ExperimentCounter, {
            let ran = ran.clone();
            let keyspace = keyspace.clone();
            let tree = tree.clone();
            move |mut term| {
                ran.fetch_add(1, Ordering::SeqCst);
                let keyspace = keyspace.clone();
                let tree = tree.clone();
                let seen_tx = seen_tx.clone();
                async move {
                    let mut batch = Batch::default();
                    batch.insert(b"cursor".to_vec(), 7u64.to_be_bytes().to_vec());
                    let wrote = term.apply(&keyspace, &tree, &batch);
                    let _ = seen_tx.send((term.token(), wrote.is_ok()));
                    term.stopped().await;
                    let _ = seen_tx.send((None, term.is_stopped()));
                }
            }
        });
        let (token, wrote) = seen.recv().await.expect("the work started");
        assert_eq!(token, None, "no fence when embedded");
        assert!(wrote, "an embedded term writes without a holder key");
        assert!(handle.is_running());
        assert_eq!(
            tree.get(b"cursor").expect("readable"),
            Some(7u64.to_be_bytes().to_vec())
        );
        assert!(
            keyspace
                .open_tree(HOLDERS_TREE)
                .expect("a tree")
                .iter()
                .next()
                .is_none(),
            "embedded mode keeps no holder keys"
        );
        handle.stop().await;
        assert_eq!(seen.recv().await, Some((None, true)), "told to stop");
        assert_eq!(ran.load(Ordering::SeqCst), 1, "started once");
    }

    #[tokio::test]
    async fn a_term_whose_holder_key_moved_on_writes_nothing() {
        // The fence itself, on sled's transactions: the same code path as on PostgreSQL.
        let (_dir, keyspace) = sled_keyspace();
        let holders = keyspace.open_tree(HOLDERS_TREE).expect("a tree");
        let tree = keyspace.open_tree("state").expect("a tree");
        let fence = |token| KvFence {
            keyspace: keyspace.clone(),
            holders: holders.clone(),
            key: Singleton::Analyst.name(),
            token: FencingToken {
                shard: Singleton::Analyst.shard(),
                token,
            },
        };
        let (_stop, stopped) = watch::channel(false);
        let term = |token| Term {
            fence: Some(fence(token)),
            stop: stopped.clone(),
        };
        let mut batch = Batch::default();
        batch.insert(b"k".to_vec(), b"old".to_vec());
        assert!(
            matches!(
                term(1).apply(&keyspace, &tree, &batch),
                Err(StorageError::Fenced)
            ),
            "unclaimed: refused"
        );
        fence(1).claim().expect("claimed");
        term(1)
            .apply(&keyspace, &tree, &batch)
            .expect("the holder writes");
        fence(2).claim().expect("a newer holder claims");
        assert!(matches!(fence(1).claim(), Err(StorageError::Fenced)));
        let mut stale = Batch::default();
        stale.insert(b"k".to_vec(), b"stale".to_vec());
        assert!(matches!(
            term(1).apply(&keyspace, &tree, &stale),
            Err(StorageError::Fenced)
        ));
        assert_eq!(tree.get(b"k").expect("readable"), Some(b"old".to_vec()));
    }

    #[tokio::test]
    async fn embedded_periodic_work_ticks_until_stopped() {
        let (_dir, keyspace) = sled_keyspace();
        let ticks = Arc::new(AtomicUsize::new(0));
        let handle = Singletons::embedded(keyspace).run_every(
            Singleton::CheckoutSweeper,
            Duration::from_millis(5),
            {
                let ticks = ticks.clone();
                move || {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    async {}
                }
            },
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while ticks.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "the work does not tick");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.stop().await;
        let after = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after,
            "no tick after the stop"
        );
    }

    #[test]
    fn settings_that_cannot_renew_in_time_are_refused() {
        let s = |ttl, every| SingletonSettings {
            node_id: "n".into(),
            lease_ttl: Duration::from_millis(ttl),
            renew_every: Duration::from_millis(every),
        };
        assert!(s(6000, 1000).check().is_ok());
        assert!(s(6000, 3000).check().is_ok());
        assert!(s(6000, 3001).check().is_err());
        assert!(s(6000, 0).check().is_err());
    }
}
