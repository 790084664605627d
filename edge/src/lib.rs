//! `edge-node` is a store's edge node: a small server that keeps the store selling while the
//! internet link is down and syncs with the hub over one WebSocket, as `docs/edge-sync.md`
//! says. It holds the store's replica of the catalog (with the hub's live promotions, which
//! come with each catalog version), stock on hand (a PN-counter) and sell rights (a bounded
//! counter) in sled, records sales and stock adjustments durably (one sled transaction with the
//! outbox entry, flushed, plus a fsync'd journal of sales and deficits), and exposes a JSON API
//! for the in-store POS.
//!
//! It is not the hub, and it does not encode anything itself: stored values and sync frames go
//! through `protocol`'s codec. No price is ever taken from a client: sales are priced here from
//! the replicated catalog and its promotions with `protocol::pricing`, as the hub prices a
//! basket.
//!
//! Entry points: [`EdgeSettings::load`], [`EdgeNode::start`] (returns an [`EdgeHandle`] with
//! the bound address and `stop()`), [`run`] (until Ctrl-C), [`replay_journal`] (a rebuilt node
//! takes over an old journal), and [`store::Store`] for in-process use without HTTP.
//!
//! Modules: [`config`] (settings), [`storage`] (sled layout), [`journal`], [`store`] (the single
//! writer and the domain operations), [`ops`] (requests, results, refusals), [`pos`] (staff PIN
//! sign-in, tills and Z-reports, and the till's HTML pages at `/pos`), [`api`] (HTTP), `sync`
//! (the WebSocket client).

pub mod api;
pub mod boards;
pub mod config;
pub mod journal;
mod metrics;
pub mod ops;
pub mod pos;
pub mod storage;
pub mod store;
mod sync;

pub use config::{ConfigError, EdgeSettings, PosSettings, StaffMember, StaffRole, SyncSettings};
pub use journal::{read_journal, JournalRecord, JournalScan, JOURNAL_FILE};
pub use ops::{
    AdjustmentReceipt, AdjustmentRequest, DeficitView, OpError, PaymentMethod, PaymentRequest,
    ReplayReport, SaleLineRequest, SaleQuote, SaleReceipt, SaleRequest, Shortage, StockLine,
};
pub use pos::{hash_pin, PosClock};
pub use storage::StoreError;
pub use store::{Identity, Store, SyncState};
pub use sync::MAX_IN_FLIGHT;

use actix_web::{web, App, HttpServer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// What can stop the node from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("a background task failed: {0}")]
    Task(String),
}

/// Starts edge nodes.
pub struct EdgeNode;

/// A running node: its address, its store, and `stop()`.
pub struct EdgeHandle {
    /// The bound address of the HTTP API (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub base_url: String,
    store: Arc<Store>,
    server: actix_web::dev::ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    sync_task: tokio::task::JoinHandle<()>,
    /// The card forwarder (`pos::card::run`): stops with the sync task.
    card_task: tokio::task::JoinHandle<()>,
    stop_sync: watch::Sender<bool>,
}

fn identity(settings: &EdgeSettings) -> Identity {
    Identity {
        replica: settings.replica.clone(),
        location: settings.location.clone(),
        store_name: settings.store_name.clone(),
        safety_buffer: settings.safety_buffer,
        online_share_percent: settings.online_share_percent,
    }
}

async fn open_store(settings: &EdgeSettings) -> Result<Store, EdgeError> {
    let (dir, cache, me) = (
        settings.data_dir.clone(),
        settings.cache_mb,
        identity(settings),
    );
    tokio::task::spawn_blocking(move || Store::open(&dir, cache, me))
        .await
        .map_err(|e| EdgeError::Task(e.to_string()))?
        .map_err(EdgeError::from)
}

impl EdgeNode {
    /// Checks the settings, opens storage, binds `listen`, and starts the HTTP server and the
    /// sync task. Runs on a Tokio runtime (or an actix System).
    pub async fn start(settings: EdgeSettings) -> Result<EdgeHandle, EdgeError> {
        EdgeNode::start_with_clock(settings, PosClock::system()).await
    }

    /// [`EdgeNode::start`] with the clock staff sessions and tills are judged by (a manual one
    /// in tests).
    #[tracing::instrument(skip_all, fields(replica = %settings.replica, location = %settings.location))]
    pub async fn start_with_clock(
        settings: EdgeSettings,
        clock: PosClock,
    ) -> Result<EdgeHandle, EdgeError> {
        settings.check()?;
        let settings = Arc::new(settings);
        let store = Arc::new(open_store(&settings).await?);
        let listener =
            std::net::TcpListener::bind(settings.listen).map_err(|source| EdgeError::Bind {
                addr: settings.listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        let (stop_sync, stopped) = watch::channel(false);
        let boards = web::Data::from(boards::Boards::start(
            store.clone(),
            &settings,
            stopped.clone(),
        )?);
        let boards_for_sync = boards.clone().into_inner();
        let state = web::Data::new(api::ApiState {
            store: store.clone(),
            pos: Arc::new(pos::Pos::new(store.clone(), &settings.pos, clock.clone())),
            token: settings.api_token.clone().unwrap_or_default(),
            hub_url: settings.hub_url.clone(),
            max_clock_skew_ms: settings.max_clock_skew.as_millis() as u64,
        });
        let returns = web::Data::new(pos::returns::HubLink::new(&settings)?);
        let desk = web::Data::new(pos::customers::HubDesk::new(&settings, store.clone()));
        let cards = web::Data::new(pos::card::Cards::new(&settings, clock.clone()));
        let card_forwarder = cards.clone().into_inner();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(tracing_actix_web::TracingLogger::default())
                .wrap(actix_web::middleware::from_fn(metrics::observe))
                .app_data(state.clone())
                .app_data(returns.clone())
                .app_data(desk.clone())
                .app_data(boards.clone())
                .configure(boards::http::configure)
                .route("/metrics", web::get().to(metrics::endpoint))
                .app_data(cards.clone())
                .configure(api::configure)
        })
        .disable_signals()
        .shutdown_timeout(5);
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| EdgeError::Bind { addr, source })?
            .run();
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);
        store.update_sync(|s| s.running = true);
        // Offline card payments are forwarded for authorisation once the hub is back; it stops
        // with the sync task, and `stop` waits for it before releasing the store.
        let card_task = tokio::spawn(pos::card::run(
            store.clone(),
            card_forwarder,
            stopped.clone(),
        ));
        let sync_task = tokio::spawn(sync::run(
            store.clone(),
            settings.clone(),
            stopped,
            Some(boards_for_sync),
        ));
        tracing::info!(%addr, hub = %settings.hub_url, "edge node started");
        Ok(EdgeHandle {
            addr,
            base_url: format!("http://{addr}"),
            store,
            server: server_handle,
            server_task,
            sync_task,
            card_task,
            stop_sync,
        })
    }
}

impl EdgeHandle {
    /// The node's store, for in-process use (tests, the benchmark of the local commit).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Records a sale without HTTP (the same path as `POST /api/v1/sales`).
    pub async fn sell(
        &self,
        req: SaleRequest,
        idempotency_key: Option<String>,
    ) -> Result<SaleReceipt, EdgeError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sell(&req, idempotency_key.as_deref()))
            .await
            .map_err(|e| EdgeError::Task(e.to_string()))?
            .map_err(EdgeError::from)
    }

    /// Records a stock adjustment without HTTP.
    pub async fn adjust(
        &self,
        req: AdjustmentRequest,
        idempotency_key: Option<String>,
    ) -> Result<AdjustmentReceipt, EdgeError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.adjust(&req, idempotency_key.as_deref()))
            .await
            .map_err(|e| EdgeError::Task(e.to_string()))?
            .map_err(EdgeError::from)
    }

    /// Replays an old journal into this running node (see [`replay_journal`]).
    pub async fn replay_journal(&self, path: &Path) -> Result<ReplayReport, EdgeError> {
        replay_into(self.store.clone(), path).await
    }

    /// What the sync task reports.
    pub fn sync_state(&self) -> SyncState {
        self.store.sync_state()
    }

    /// Stops gracefully: closes the sync session, stops accepting requests and drains the ones
    /// in flight, then flushes storage.
    pub async fn stop(self) -> Result<(), EdgeError> {
        let _ = self.stop_sync.send(true);
        self.sync_task
            .await
            .map_err(|e| EdgeError::Task(e.to_string()))?;
        self.card_task
            .await
            .map_err(|e| EdgeError::Task(e.to_string()))?;
        self.server.stop(true).await;
        self.server_task
            .await
            .map_err(|e| EdgeError::Task(e.to_string()))??;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| EdgeError::Task(e.to_string()))??;
        release(self.store).await?;
        tracing::info!("edge node stopped");
        Ok(())
    }
}

/// Waits until nothing holds the store any more (the HTTP workers drop their copies on their own
/// threads, a moment after the server says it stopped), so the storage's file lock is free when
/// `stop` returns and the same data dir can be opened again at once.
async fn release(store: Arc<Store>) -> Result<(), EdgeError> {
    let weak = Arc::downgrade(&store);
    drop(store);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while weak.strong_count() > 0 {
        if tokio::time::Instant::now() >= deadline {
            return Err(EdgeError::Task(
                "the storage is still held 10 s after the node stopped".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn replay_into(store: Arc<Store>, path: &Path) -> Result<ReplayReport, EdgeError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<ReplayReport, EdgeError> {
        let scan = read_journal(&path)?;
        if scan.unreadable_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                unreadable_bytes = scan.unreadable_bytes,
                "the journal ends in bytes that do not read as a record; replaying the readable part"
            );
        }
        let mut report = store.replay(scan.records)?;
        if scan.unreadable_bytes > 0 {
            report.skipped.push(format!(
                "{} bytes at the end of {} did not read as a record",
                scan.unreadable_bytes,
                path.display()
            ));
        }
        store.flush()?;
        tracing::info!(?report, "journal replayed");
        Ok(report)
    })
    .await
    .map_err(|e| EdgeError::Task(e.to_string()))?
}

/// Replays an old node's journal into this node's storage (the node must not be running; use
/// [`EdgeHandle::replay_journal`] on a running one): for a rebuilt node with a new replica id,
/// every journaled sale it does not have yet keeps its id and number and is recorded again
/// against this node's rights (units beyond them become deficit records) and queued to the hub,
/// which dedupes by sale id. Used by `omnihub edge --replay-journal <file>`.
pub async fn replay_journal(
    settings: &EdgeSettings,
    journal: &Path,
) -> Result<ReplayReport, EdgeError> {
    settings.check()?;
    let store = Arc::new(open_store(settings).await?);
    replay_into(store, journal).await
}

/// Arms the failpoints named in `FAILPOINTS` (builds with the `failpoints` feature only; a
/// no-op otherwise). The scenario lasts as long as the process.
pub fn arm_failpoints_from_env() {
    #[cfg(feature = "failpoints")]
    {
        static ARMED: std::sync::Once = std::sync::Once::new();
        ARMED.call_once(|| std::mem::forget(fail::FailScenario::setup()));
    }
}

/// Runs a node until Ctrl-C, then stops it gracefully.
pub async fn run(settings: EdgeSettings) -> Result<(), EdgeError> {
    arm_failpoints_from_env();
    let node = EdgeNode::start(settings).await?;
    tracing::info!(url = %node.base_url, "edge node serving; Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    node.stop().await
}
