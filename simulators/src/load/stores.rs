//! `omnihub load stores`: the stores issue's benchmark of edge-node sync.
//!
//! It starts one hub as a child process (`omnihub hub --config <generated TOML>`, demo catalog,
//! every benchmark node listed in `[[edge.nodes]]` with the SHA-256 of its credential) and runs
//! the edge nodes in this process with [`EdgeNode::start`], each with its own data directory
//! (sled and the fsync'd journal). Every node waits for the catalog from the hub and is stocked
//! with receipts deep enough for the run. Then, one phase after the other:
//!
//! 1. **catch-up**: one node stands behind a byte-counting TCP proxy. With the link cut it records
//!    `--lines` sale lines (sales of 1–4 lines), then the link is restored and the benchmark
//!    times how long after the node's reconnection its outbox is fully acknowledged by the hub
//!    (the hub acknowledges only what it stored durably), and counts the bytes the proxy carried
//!    node → hub in that time, per sale line.
//! 2. **steady state**: `--nodes` nodes each sell `--rate` sales/s for `--duration`, paced and
//!    open-loop (each sale starts on schedule, whether or not the last one has finished). The
//!    sync lag of a sale is the hub's `merged_at_ms` (its wall clock when it first stored the
//!    sale, from `GET /api/v1/admin/edge/sales`) minus the node's wall clock when the sale's
//!    local commit returned; both run on this machine, on the same clock. Informational: the time
//!    until the hub's `Ack` covering the sale is back at the node.
//! 3. **local commit**: `--commits` sales one after another on a connected node through
//!    [`EdgeHandle::sell`] (sled transaction, flush, journal fsync), then as many through
//!    `POST /api/v1/sales` over HTTP for comparison.
//!
//! Last, the audit: every sale any node made is listed by the hub exactly once (by id). A failed
//! audit makes the command exit non-zero. Every wait has a deadline; the hub child is killed and a
//! temporary data directory deleted at the end, also after an error.

use super::http::{fetch_json, status_kind, transport_kind};
use super::proxy::Proxy;
use super::report::{self, OpStats, Outcome, Summary, Target};
use super::{parse_duration, LoadError};
use edge_node::storage::Cursors;
use edge_node::{
    AdjustmentRequest, EdgeHandle, EdgeNode, EdgeSettings, PaymentMethod, PaymentRequest,
    SaleLineRequest, SaleRequest, Store, SyncSettings,
};
use protocol::replication::sync::{item_size, Item};
use protocol::replication::ReplicaId;
use protocol::LocationId;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use ulid::Ulid;

/// Arguments of `omnihub load stores`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoresArgs {
    /// Edge nodes selling at once in the steady-state phase.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Sales per second each of those nodes makes, paced and open-loop.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long the steady-state phase sells, e.g. `20s`.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Sale lines the catch-up node records while its link is cut (in sales of 1–4 lines).
    #[arg(long, default_value_t = 10_000)]
    pub lines: usize,
    /// Sales timed one after another for the local durable commit (and as many over HTTP).
    #[arg(long, default_value_t = 2_000)]
    pub commits: usize,
    /// Where the hub and the nodes keep their data (new or empty; kept afterwards) [default: a
    /// temporary directory, deleted afterwards].
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// The targets of the stores issue.
const CATCH_UP_TARGET: Duration = Duration::from_secs(5);
const BYTES_PER_LINE_TARGET: f64 = 200.0;
const LAG_P99_TARGET_MS: f64 = 100.0;
const COMMIT_P99_TARGET_MS: f64 = 5.0;

/// The hub's sales listing returns at most this many sales of a location per request; the audit
/// reads each location's sales in one request, so no node may make more.
const MAX_LISTED: usize = 10_000;
const MAX_NODES: usize = 50;
const MAX_RATE: f64 = 500.0;
const MAX_DURATION: Duration = Duration::from_secs(600);
/// Sales cycle through 1, 2, 3, 4 lines: 25,000 lines are at most 10,000 sales.
const MAX_LINES: usize = 25_000;
/// Sales not timed before each run of the local commit (in-process and over HTTP).
const WARMUP_SALES: usize = 50;
const MAX_COMMITS: usize = MAX_LISTED / 2 - WARMUP_SALES;
/// SKUs every node sells (the first of the demo catalog in one currency), each line one unit.
const SKUS: usize = 40;
/// Cash handed over for each sale (change is given back; it covers any 4 demo lines).
const CASH: &str = "10000.00";

/// Deadlines of the waits outside the measured phases.
const HUB_START: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(60);
/// Deadlines of the catch-up and of the drain after the steady state (generous: a miss is
/// reported as a figure, not hidden by a short deadline).
const CONVERGE_LIMIT: Duration = Duration::from_secs(120);
/// The nodes' longest reconnect delay (the default is 30 s): the catch-up is timed from the
/// reconnection, and the restore → reconnection time is shown apart.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often convergence and acknowledgements are looked at.
const CONVERGE_POLL: Duration = Duration::from_millis(5);
const ACK_POLL: Duration = Duration::from_millis(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const API_TOKEN_PREFIX: &str = "bench-api-token";

/// Runs the benchmark: the data directory outlives the runtime, so nothing still running writes
/// into a directory being deleted. Ctrl-C ends the run the same way as an error does (the hub
/// child killed, the nodes stopped with the runtime, a temporary directory deleted).
pub fn run(args: StoresArgs, runtime: tokio::runtime::Runtime) -> Result<(), LoadError> {
    check_arguments(&args)?;
    let data = DataDir::new(args.data.clone())?;
    let result = runtime.block_on(async {
        tokio::select! {
            result = bench(&args, &data) => result,
            _ = tokio::signal::ctrl_c() => Err(stores_error("interrupted (Ctrl-C)")),
        }
    });
    // After an error, node tasks may still run: stop them before the data goes.
    runtime.shutdown_timeout(Duration::from_secs(10));
    drop(data);
    result
}

fn check_arguments(args: &StoresArgs) -> Result<(), LoadError> {
    let bad = |m: String| Err(LoadError::BadArguments(m));
    if !(1..=MAX_NODES).contains(&args.nodes) {
        return bad(format!("--nodes must be between 1 and {MAX_NODES}"));
    }
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= MAX_RATE) {
        return bad(format!(
            "--rate must be above 0 and at most {MAX_RATE} sales/s"
        ));
    }
    if args.duration < Duration::from_secs(1) || args.duration > MAX_DURATION {
        return bad("--duration must be between 1s and 10m".into());
    }
    let per_node = steady_sales(args);
    if !(1..=MAX_LISTED).contains(&per_node) {
        return bad(format!(
            "--rate × --duration is {per_node} sales per node: it must be between 1 and {MAX_LISTED} (the hub lists at most {MAX_LISTED} sales of a store per request)"
        ));
    }
    if !(1..=MAX_LINES).contains(&args.lines) {
        return bad(format!("--lines must be between 1 and {MAX_LINES}"));
    }
    if !(1..=MAX_COMMITS).contains(&args.commits) {
        return bad(format!("--commits must be between 1 and {MAX_COMMITS}"));
    }
    Ok(())
}

fn steady_sales(args: &StoresArgs) -> usize {
    (args.rate * args.duration.as_secs_f64()).round() as usize
}

/// Lines of the `i`-th sale of a run: 1, 2, 3, 4, 1, 2, …
fn lines_of(i: usize) -> usize {
    i % 4 + 1
}

/// The sizes of sales totalling exactly `lines` lines: 1, 2, 3, 4, … with the last one cut short.
fn sale_sizes(lines: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = lines;
    while left > 0 {
        let n = lines_of(sizes.len()).min(left);
        sizes.push(n);
        left -= n;
    }
    sizes
}

fn stores_error(what: impl Into<String>) -> LoadError {
    LoadError::Stores(what.into())
}

/// The wall clock in whole milliseconds since the epoch, as the node and the hub stamp it.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// The data directory, the hub child and its admin API
// ---------------------------------------------------------------------------------------------

/// The data directory: the one given (must be new or empty, kept), or a temporary one deleted on
/// drop.
struct DataDir {
    path: PathBuf,
    temporary: bool,
}

impl DataDir {
    fn new(given: Option<PathBuf>) -> Result<DataDir, LoadError> {
        let (path, temporary) = match given {
            Some(path) => (path, false),
            None => (
                std::env::temp_dir().join(format!("omnihub-load-stores-{}", Ulid::new())),
                true,
            ),
        };
        let empty = match std::fs::read_dir(&path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(LoadError::BadArguments(format!(
                    "--data {}: {e}",
                    path.display()
                )))
            }
        };
        if !empty {
            return Err(LoadError::BadArguments(format!(
                "--data {} is not empty: give a new or empty directory, so the hub and the nodes start empty",
                path.display()
            )));
        }
        std::fs::create_dir_all(&path).map_err(|e| {
            LoadError::BadArguments(format!("cannot create {}: {e}", path.display()))
        })?;
        Ok(DataDir { path, temporary })
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

/// One node of the run as the hub's settings and the node's own name it.
#[derive(Debug, Clone)]
struct NodePlan {
    replica: String,
    location: String,
    credential: String,
}

impl NodePlan {
    fn new(replica: String) -> NodePlan {
        NodePlan {
            location: format!("store-{replica}"),
            credential: format!("bench-credential-{replica}-{}", Ulid::new()),
            replica,
        }
    }
}

/// The hub's settings: every node of the run with the SHA-256 of its credential.
fn write_hub_config(dir: &Path, nodes: &[NodePlan]) -> Result<PathBuf, LoadError> {
    let mut toml =
        String::from("# Written by `omnihub load stores`: the benchmark's nodes.\n[edge]\n");
    for n in nodes {
        toml.push_str(&format!(
            "[[edge.nodes]]\nreplica = \"{}\"\nlocation = \"{}\"\nname = \"Bench {}\"\ncredential_sha256 = \"{}\"\n",
            n.replica,
            n.location,
            n.replica,
            sha256_hex(&n.credential)
        ));
    }
    let path = dir.join("hub.toml");
    std::fs::write(&path, toml)
        .map_err(|e| stores_error(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// The hub as a child process (killed when dropped).
struct HubChild {
    child: tokio::process::Child,
    base: String,
    addr: SocketAddr,
}

impl HubChild {
    async fn start(config: &Path, data: &Path, admin_token: &str) -> Result<HubChild, LoadError> {
        let exe = std::env::current_exe()
            .map_err(|e| stores_error(format!("cannot find the omnihub binary: {e}")))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("hub")
            .arg("--config")
            .arg(config)
            .env("OMNIHUB_HUB_LISTEN", "127.0.0.1:0")
            .env("OMNIHUB_HUB_DATA_DIR", data)
            .env("OMNIHUB_HUB_DEMO_DATA", "true")
            .env("OMNIHUB_HUB_ADMIN_TOKEN", admin_token)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| stores_error(format!("cannot start `omnihub hub`: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| stores_error("the hub's standard output is not piped"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the hub's standard output to its end: the address line, then its log lines
        // (warnings and worse), passed on to standard error.
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match (line.strip_prefix("omnihub hub listening on "), tx.take()) {
                    (Some(addr), Some(tx)) => {
                        let _ = tx.send(addr.trim().to_string());
                    }
                    (_, unused) => {
                        tx = unused;
                        eprintln!("[hub] {line}");
                    }
                }
            }
        });
        let base = match tokio::time::timeout(HUB_START, rx).await {
            Ok(Ok(base)) => base,
            Ok(Err(_)) => {
                let status = child.wait().await.ok();
                return Err(stores_error(format!(
                    "the hub exited during start-up ({}); see its log above",
                    status.map_or("status unknown".into(), |s| s.to_string())
                )));
            }
            Err(_) => {
                return Err(stores_error(format!(
                    "the hub did not report its address within {HUB_START:?}"
                )))
            }
        };
        let addr: SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| stores_error(format!("the hub reported '{base}', not an address: {e}")))?;
        let mut hub = HubChild { child, base, addr };
        hub.wait_ready().await?;
        Ok(hub)
    }

    async fn wait_ready(&mut self) -> Result<(), LoadError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(LoadError::Client)?;
        let deadline = Instant::now() + HUB_START;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(stores_error(format!(
                    "the hub exited during start-up ({status}); see its log above"
                )));
            }
            let ready = client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(stores_error(format!(
                    "the hub at {} was not ready within {HUB_START:?}",
                    self.base
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The hub's admin API.
struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A sale in the hub's listing.
#[derive(Debug, Deserialize)]
struct Listed {
    id: Ulid,
    merged_at_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Listing {
    sales: Vec<Listed>,
}

impl Admin {
    fn new(base: &str, token: &str) -> Result<Admin, LoadError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(LoadError::Client)?;
        Ok(Admin {
            http,
            base: base.to_string(),
            token: token.to_string(),
        })
    }

    /// Every sale the hub has merged at `location` (at most [`MAX_LISTED`]).
    async fn sales(&self, location: &str) -> Result<Vec<Listed>, LoadError> {
        let request = self
            .http
            .get(format!("{}/api/v1/admin/edge/sales", self.base))
            .query(&[
                ("location", location.to_string()),
                ("limit", MAX_LISTED.to_string()),
            ])
            .bearer_auth(&self.token);
        let listing: Listing =
            fetch_json(request)
                .await
                .map_err(|detail| LoadError::Unexpected {
                    target: self.base.clone(),
                    what: format!("GET /api/v1/admin/edge/sales?location={location}"),
                    detail,
                })?;
        Ok(listing.sales)
    }
}

// ---------------------------------------------------------------------------------------------
// The nodes
// ---------------------------------------------------------------------------------------------

/// A node running in this process.
struct Node {
    replica: String,
    location: String,
    handle: EdgeHandle,
    store: Arc<Store>,
}

/// A sale a node made: its id, when its local commit returned (wall clock, whole ms), how long
/// the commit took, an upper bound of the seq of the outbox entry that carries it, and the size
/// of its record as the sync sends it (where measured).
#[derive(Debug, Clone, Copy)]
struct Made {
    id: Ulid,
    lines: usize,
    committed_ms: u64,
    took: Duration,
    seq: u64,
    record_bytes: usize,
}

impl Node {
    async fn start(
        plan: &NodePlan,
        hub: SocketAddr,
        data: &Path,
        api_token: &str,
    ) -> Result<Node, LoadError> {
        let settings = EdgeSettings {
            replica: ReplicaId(plan.replica.clone()),
            location: LocationId(plan.location.clone()),
            store_name: format!("Bench {}", plan.replica),
            hub_url: format!("ws://{hub}/api/v1/edge/sync"),
            credential: Some(plan.credential.clone().into()),
            data_dir: data.join(&plan.replica),
            cache_mb: 8,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            api_token: Some(api_token.to_string().into()),
            sync: SyncSettings {
                backoff_max: BACKOFF_MAX,
                ..SyncSettings::default()
            },
            ..EdgeSettings::default()
        };
        let handle = EdgeNode::start(settings).await.map_err(|e| {
            stores_error(format!("the edge node {} did not start: {e}", plan.replica))
        })?;
        Ok(Node {
            replica: plan.replica.clone(),
            location: plan.location.clone(),
            store: handle.store(),
            handle,
        })
    }

    async fn cursors(&self) -> Result<Cursors, LoadError> {
        cursors(&self.store).await
    }

    /// Connected, with every own change acknowledged by the hub.
    async fn quiet(&self) -> Result<bool, LoadError> {
        let c = self.cursors().await?;
        Ok(self.handle.sync_state().connected && c.acked == c.last_seq())
    }

    async fn stop(self) -> Result<(), LoadError> {
        // The node's stop waits until nothing holds its storage: let go of this copy first.
        drop(self.store);
        match tokio::time::timeout(WAIT, self.handle.stop()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(stores_error(format!(
                "the edge node {} did not stop cleanly: {e}",
                self.replica
            ))),
            Err(_) => Err(stores_error(format!(
                "the edge node {} did not stop within {WAIT:?}",
                self.replica
            ))),
        }
    }
}

async fn cursors(store: &Arc<Store>) -> Result<Cursors, LoadError> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.cursors())
        .await
        .map_err(LoadError::Task)?
        .map_err(|e| stores_error(format!("reading a node's cursors: {e}")))
}

/// Polls `check` every `every` until it answers true; an error after `limit`.
async fn until<F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<(), LoadError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, LoadError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(stores_error(format!("{what}: not within {limit:?}")));
        }
        tokio::time::sleep(every).await;
    }
}

/// The SKUs to sell: the first [`SKUS`] of the node's catalog in one currency.
fn pick_skus(store: &Store) -> Vec<String> {
    let catalog = store.catalog();
    let variants: Vec<_> = catalog
        .snapshot
        .products()
        .iter()
        .flat_map(|p| p.variants.iter())
        .collect();
    let Some(currency) = variants.first().map(|v| v.price.currency) else {
        return Vec::new();
    };
    variants
        .into_iter()
        .filter(|v| v.price.currency == currency)
        .map(|v| v.sku.as_str().to_string())
        .take(SKUS)
        .collect()
}

/// Receipts of every SKU, deep enough for `lines` lines of one unit spread evenly over them
/// (the node grants the hub about half of what is above its safety buffer, so twice that).
async fn stock(node: &Node, skus: &[String], lines: usize) -> Result<i64, LoadError> {
    let per_sku = lines.div_ceil(skus.len().max(1));
    let units = (per_sku * 2 + 100).min(1_000_000) as i64;
    for sku in skus {
        let receipt = AdjustmentRequest::Receipt {
            sku: sku.clone(),
            units,
            reason: Some("load stores: stock for the run".into()),
            clerk: None,
        };
        node.handle
            .adjust(receipt, None)
            .await
            .map_err(|e| stores_error(format!("a receipt of {sku} at {}: {e}", node.replica)))?;
    }
    Ok(units)
}

/// A sale of `lines` lines (one unit each) of the next SKUs after `cursor`, paid in cash.
fn sale_request(skus: &[String], cursor: &mut usize, lines: usize) -> SaleRequest {
    let lines = (0..lines)
        .map(|_| {
            let sku = skus.get(*cursor % skus.len().max(1)).cloned();
            *cursor += 1;
            SaleLineRequest {
                sku,
                barcode: None,
                quantity: 1,
            }
        })
        .collect();
    SaleRequest {
        lines,
        payments: vec![PaymentRequest {
            method: PaymentMethod::Cash,
            amount: CASH.into(),
            reference: None,
            card: None,
        }],
        customer: None,
        clerk: Some("bench".into()),
        override_reason: None,
        coupons: Vec::new(),
    }
}

/// Records a sale on the node's store (what [`EdgeHandle::sell`] does, on a blocking thread),
/// timing its durable commit and reading an upper bound of its outbox seq afterwards.
async fn sell_on(store: Arc<Store>, req: SaleRequest) -> Result<Made, String> {
    let done = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let receipt = store.sell(&req, None).map_err(|e| e.to_string())?;
        let took = started.elapsed();
        let committed_ms = wall_ms();
        let seq = store
            .cursors()
            .map_err(|e| format!("reading the cursors: {e}"))?
            .last_seq();
        Ok(Made {
            id: receipt.entry.sale.id,
            lines: receipt.entry.sale.lines.len(),
            committed_ms,
            took,
            seq,
            record_bytes: 0,
        })
    })
    .await;
    match done {
        Ok(result) => result,
        Err(e) => Err(format!("the sale's task failed: {e}")),
    }
}

/// One sale through [`EdgeHandle::sell`], timed around the call.
async fn sell_timed(node: &Node, req: SaleRequest) -> Result<Made, String> {
    let started = Instant::now();
    let receipt = node
        .handle
        .sell(req, None)
        .await
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let committed_ms = wall_ms();
    let lines = receipt.entry.sale.lines.len();
    let id = receipt.entry.sale.id;
    Ok(Made {
        id,
        lines,
        committed_ms,
        took,
        seq: 0,
        record_bytes: item_size(&Item::Sale(receipt.entry.sale)),
    })
}

fn error_kind(e: &str) -> String {
    e.chars().take(120).collect()
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// What the phases found.
struct CatchUp {
    sales: usize,
    lines: usize,
    offline: OpStats,
    recording: Duration,
    restore_to_reconnect: Duration,
    reconnect_to_converged: Duration,
    up_bytes: u64,
    down_bytes: u64,
    /// The sale records alone, each encoded as a sync `Item` (MessagePack with field names).
    record_bytes: u64,
    /// Sales the hub listed for the node right after the convergence.
    listed: usize,
}

struct Steady {
    sales: usize,
    window: Duration,
    max_late: Duration,
    lag: OpStats,
    ack_lag: OpStats,
    commit: OpStats,
    without_merge_time: usize,
    negative: usize,
}

struct Commits {
    in_process: OpStats,
    in_process_window: Duration,
    http: OpStats,
    http_window: Duration,
}

async fn bench(args: &StoresArgs, data: &DataDir) -> Result<(), LoadError> {
    let started = Instant::now();
    let mut plans: Vec<NodePlan> = (1..=args.nodes)
        .map(|i| NodePlan::new(format!("bench-{i:02}")))
        .collect();
    plans.push(NodePlan::new("bench-catchup".into()));
    plans.push(NodePlan::new("bench-till".into()));
    let admin_token = format!("bench-admin-{}", Ulid::new());
    let api_token = format!("{API_TOKEN_PREFIX}-{}", Ulid::new());
    let config = write_hub_config(&data.path, &plans)?;
    let hub = HubChild::start(&config, &data.path.join("hub"), &admin_token).await?;
    let admin = Admin::new(&hub.base, &admin_token)?;
    let result = with_hub(args, data, &hub, &admin, &plans, &api_token, started).await;
    hub.stop().await;
    result
}

async fn with_hub(
    args: &StoresArgs,
    data: &DataDir,
    hub: &HubChild,
    admin: &Admin,
    plans: &[NodePlan],
    api_token: &str,
    started: Instant,
) -> Result<(), LoadError> {
    let proxy = Proxy::start(hub.addr)
        .await
        .map_err(|e| stores_error(format!("the proxy cannot listen: {e}")))?;
    let nodes_dir = data.path.join("nodes");
    let mut nodes = Vec::with_capacity(plans.len());
    for (i, plan) in plans.iter().enumerate() {
        // The catch-up node (second to last) reaches the hub through the proxy.
        let upstream = if i + 2 == plans.len() {
            proxy.addr
        } else {
            hub.addr
        };
        nodes.push(Node::start(plan, upstream, &nodes_dir, api_token).await?);
    }
    let (till, catch_up, steady_nodes) = match nodes.as_slice() {
        [steady @ .., catch_up, till] => (till, catch_up, steady),
        _ => return Err(stores_error("too few nodes")),
    };
    let all: Vec<&Node> = nodes.iter().collect();

    // Every node has the catalog from the hub, then its stock.
    for node in &all {
        until(
            &format!("{} receives the catalog from the hub", node.replica),
            WAIT,
            Duration::from_millis(50),
            || async { Ok(!node.store.catalog().snapshot.products().is_empty()) },
        )
        .await?;
    }
    let skus = pick_skus(&catch_up.store);
    if skus.len() < 4 {
        return Err(stores_error(format!(
            "the hub's catalog has {} SKUs in one currency; the benchmark needs at least 4 (start the hub with demo data)",
            skus.len()
        )));
    }
    let mut units = BTreeMap::new();
    let steady_lines = steady_sales(args) * 4;
    let till_lines = (args.commits + WARMUP_SALES) * 2 * 4;
    for (node, lines) in steady_nodes
        .iter()
        .map(|n| (n, steady_lines))
        .chain([(catch_up, args.lines), (till, till_lines)])
    {
        units.insert(node.replica.clone(), stock(node, &skus, lines).await?);
    }
    for node in &all {
        until(
            &format!("{} has its stock acknowledged by the hub", node.replica),
            WAIT,
            Duration::from_millis(20),
            || node.quiet(),
        )
        .await?;
    }

    print_header(args, data, hub, &all, &skus, &units);

    let mut made: BTreeMap<String, Vec<Made>> = BTreeMap::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();

    println!(
        "(a) catch-up: {} sale lines recorded with the link cut, then the link restored",
        args.lines
    );
    let catch = catch_up_phase(
        args,
        catch_up,
        &proxy,
        admin,
        &skus,
        &mut made,
        &mut failures,
    )
    .await?;
    print_catch_up(&catch);

    println!(
        "(b) steady state: {} nodes × {} sales/s for {}, paced open-loop, {} sales each",
        args.nodes,
        args.rate,
        humantime::format_duration(args.duration),
        steady_sales(args)
    );
    let steady = steady_phase(args, steady_nodes, admin, &skus, &mut made, &mut failures).await?;
    print_steady(&steady);

    println!(
        "(c) local durable commit: {} sales one after another on a connected node ({} not timed first)",
        args.commits, WARMUP_SALES
    );
    let commits = commit_phase(
        args,
        till,
        api_token,
        &skus,
        &catch.offline,
        &mut made,
        &mut failures,
    )
    .await?;

    println!("audit");
    let lines = audit(admin, &all, &made, &failures).await?;
    for line in &lines {
        println!("  {line}");
    }
    println!();

    println!("targets");
    print!(
        "{}",
        report::render_targets(&targets(&catch, &steady, &commits))
    );
    println!();

    for node in nodes {
        node.stop().await?;
    }
    drop(proxy);
    println!(
        "run: {:.1} s wall, hub and nodes stopped{}",
        started.elapsed().as_secs_f64(),
        if data.temporary {
            ", temporary data deleted"
        } else {
            ""
        }
    );
    let failed = lines.iter().filter(|l| l.pass == Some(false)).count();
    if failed > 0 {
        return Err(LoadError::AuditFailed(failed));
    }
    Ok(())
}

fn print_header(
    args: &StoresArgs,
    data: &DataDir,
    hub: &HubChild,
    nodes: &[&Node],
    skus: &[String],
    units: &BTreeMap<String, i64>,
) {
    println!("omnihub load stores");
    println!(
        "  hub        {}: `omnihub hub` as a child process, demo catalog, {} nodes in [[edge.nodes]]",
        hub.base,
        nodes.len()
    );
    println!(
        "  nodes      {} edge nodes in this process (EdgeNode::start; sled + fsync'd journal each, 1 HTTP worker): {} for the steady state, 1 catching up behind a byte-counting TCP proxy, 1 till for the commit figures; reconnect backoff at most {}",
        nodes.len(),
        args.nodes,
        humantime::format_duration(BACKOFF_MAX)
    );
    println!(
        "  data       {}{}",
        data.path.display(),
        if data.temporary {
            " (temporary, deleted afterwards)"
        } else {
            " (kept)"
        }
    );
    let (low, high) = (
        units.values().min().copied().unwrap_or(0),
        units.values().max().copied().unwrap_or(0),
    );
    println!(
        "  stock      {} SKUs per node, a receipt of {low}–{high} units each (the node grants the hub about half above its safety buffer)",
        skus.len()
    );
    println!("  sales      1–4 lines each (cycling 1, 2, 3, 4), one unit per line, cash");
    println!();
}

async fn catch_up_phase(
    args: &StoresArgs,
    node: &Node,
    proxy: &Proxy,
    admin: &Admin,
    skus: &[String],
    made: &mut BTreeMap<String, Vec<Made>>,
    failures: &mut BTreeMap<String, u64>,
) -> Result<CatchUp, LoadError> {
    proxy.cut();
    until(
        &format!("{} notices its link is cut", node.replica),
        WAIT,
        Duration::from_millis(10),
        || async { Ok(!node.handle.sync_state().connected) },
    )
    .await?;
    let mut offline = OpStats::new()?;
    let mut mine = Vec::new();
    let mut cursor = 0;
    let recording = Instant::now();
    for n in sale_sizes(args.lines) {
        let req = sale_request(skus, &mut cursor, n);
        match sell_timed(node, req).await {
            Ok(m) => {
                offline.record(Outcome::Ok(m.took));
                mine.push(m);
            }
            Err(e) => {
                offline.record(Outcome::Error(error_kind(&e)));
                *failures.entry(error_kind(&e)).or_default() += 1;
            }
        }
    }
    let recording = recording.elapsed();
    let last_offline = node.cursors().await?.last_seq();
    let (sales, lines) = (mine.len(), mine.iter().map(|m| m.lines).sum());
    let record_bytes = mine.iter().map(|m| m.record_bytes as u64).sum();
    made.insert(node.location.clone(), mine);

    let restored = Instant::now();
    proxy.restore();
    let deadline = restored + CONVERGE_LIMIT;
    let converged = loop {
        let c = node.cursors().await?;
        if c.last_seq() >= last_offline && c.acked == c.last_seq() {
            break Instant::now();
        }
        if Instant::now() > deadline {
            return Err(stores_error(format!(
                "the catch-up did not converge within {CONVERGE_LIMIT:?}: the hub acknowledged {} of {} ({})",
                c.acked,
                c.last_seq(),
                node.handle.sync_state().last_close.unwrap_or_default()
            )));
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    };
    let (up_bytes, down_bytes) = proxy.bytes();
    let reconnected = proxy.reconnected().unwrap_or(restored);
    let listed = admin.sales(&node.location).await?.len();
    Ok(CatchUp {
        sales,
        lines,
        offline,
        recording,
        restore_to_reconnect: reconnected.saturating_duration_since(restored),
        reconnect_to_converged: converged.saturating_duration_since(reconnected),
        up_bytes,
        down_bytes,
        record_bytes,
        listed,
    })
}

fn print_catch_up(c: &CatchUp) {
    println!(
        "  offline     {} sales ({} lines) recorded with the link cut in {:.1} s",
        c.sales,
        c.lines,
        c.recording.as_secs_f64()
    );
    println!(
        "  reconnect   the node's first connection came {} ms after the restore (its backoff)",
        c.restore_to_reconnect.as_millis()
    );
    println!(
        "  converged   {} ms after that connection ({} ms after the restore): the node's outbox acknowledged up to its last seq (the hub acknowledges only what it stored durably; polled every {} ms); the hub then listed {} of the {} sales",
        c.reconnect_to_converged.as_millis(),
        (c.restore_to_reconnect + c.reconnect_to_converged).as_millis(),
        CONVERGE_POLL.as_millis(),
        c.listed,
        c.sales
    );
    println!(
        "  bytes       node → hub {} B in that time = {:.1} B per sale line (TCP payload through the proxy: WebSocket handshake, Hello, batches, heartbeats, acks); hub → node {} B",
        c.up_bytes,
        per_line(c.up_bytes, c.lines),
        c.down_bytes
    );
    println!(
        "  of which    the sale records alone, each encoded as the sync sends it (MessagePack with field names): {} B = {:.1} B per sale line",
        c.record_bytes,
        per_line(c.record_bytes, c.lines)
    );
    println!();
}

fn per_line(bytes: u64, lines: usize) -> f64 {
    if lines == 0 {
        0.0
    } else {
        bytes as f64 / lines as f64
    }
}

/// The acknowledgements a node received: (acked seq, when, wall clock ms), in order.
async fn watch_acks(store: Arc<Store>, mut stop: watch::Receiver<bool>) -> Vec<(u64, u64)> {
    let mut seen = store.sync_state().last_ack_ms;
    let mut timeline = Vec::new();
    loop {
        let last = store.sync_state().last_ack_ms;
        if last != seen {
            // The cursors first, then the time of the latest ack: if another ack lands between
            // the two reads, the time is the later one (an upper bound).
            if let Ok(c) = cursors(&store).await {
                let at = store.sync_state().last_ack_ms;
                if let Some(at) = at {
                    timeline.push((c.acked, at));
                }
                seen = at;
            }
        }
        if *stop.borrow() {
            return timeline;
        }
        tokio::select! {
            _ = tokio::time::sleep(ACK_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn steady_phase(
    args: &StoresArgs,
    nodes: &[Node],
    admin: &Admin,
    skus: &[String],
    made: &mut BTreeMap<String, Vec<Made>>,
    failures: &mut BTreeMap<String, u64>,
) -> Result<Steady, LoadError> {
    let per_node = steady_sales(args);
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let (stop_watch, stopped) = watch::channel(false);
    let watchers: Vec<JoinHandle<Vec<(u64, u64)>>> = nodes
        .iter()
        .map(|n| tokio::spawn(watch_acks(n.store.clone(), stopped.clone())))
        .collect();
    let start = Instant::now() + Duration::from_millis(100);
    let mut sellers = JoinSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let store = node.store.clone();
        let skus = skus.to_vec();
        let location = node.location.clone();
        // Nodes start spread over one period, as stores are not in step.
        let offset = period.mul_f64(i as f64 / nodes.len() as f64);
        sellers.spawn(async move {
            let mut sales = JoinSet::new();
            let mut cursor = 0;
            let mut max_late = Duration::ZERO;
            for k in 0..per_node {
                let at = start + offset + period.mul_f64(k as f64);
                tokio::time::sleep_until(at.into()).await;
                max_late = max_late.max(Instant::now().saturating_duration_since(at));
                let req = sale_request(&skus, &mut cursor, lines_of(k));
                sales.spawn(sell_on(store.clone(), req));
            }
            let mut out = Vec::with_capacity(per_node);
            let mut errors = Vec::new();
            while let Some(done) = sales.join_next().await {
                match done {
                    Ok(Ok(m)) => out.push(m),
                    Ok(Err(e)) => errors.push(e),
                    Err(e) => errors.push(format!("the sale's task failed: {e}")),
                }
            }
            (location, out, errors, max_late)
        });
    }
    let mut commit = OpStats::new()?;
    let mut max_late = Duration::ZERO;
    let mut by_location: BTreeMap<String, Vec<Made>> = BTreeMap::new();
    while let Some(done) = sellers.join_next().await {
        let (location, out, errors, late) = done.map_err(LoadError::Task)?;
        max_late = max_late.max(late);
        for m in &out {
            commit.record(Outcome::Ok(m.took));
        }
        for e in errors {
            commit.record(Outcome::Error(error_kind(&e)));
            *failures.entry(error_kind(&e)).or_default() += 1;
        }
        by_location.insert(location, out);
    }
    let window = start.elapsed();
    let drained = Instant::now();
    for node in nodes {
        let deadline = drained + CONVERGE_LIMIT;
        loop {
            if node.quiet().await? {
                break;
            }
            if Instant::now() > deadline {
                return Err(stores_error(format!(
                    "{} did not get its sales acknowledged within {CONVERGE_LIMIT:?} after the steady state",
                    node.replica
                )));
            }
            tokio::time::sleep(CONVERGE_POLL).await;
        }
    }
    let _ = stop_watch.send(true);
    let mut timelines = BTreeMap::new();
    for (node, watcher) in nodes.iter().zip(watchers) {
        timelines.insert(
            node.location.clone(),
            watcher.await.map_err(LoadError::Task)?,
        );
    }

    let mut lag = OpStats::new()?;
    let mut ack_lag = OpStats::new()?;
    let (mut without_merge_time, mut negative, mut sales) = (0, 0, 0);
    for (location, mine) in &by_location {
        let merged: BTreeMap<Ulid, Option<u64>> = admin
            .sales(location)
            .await?
            .into_iter()
            .map(|l| (l.id, l.merged_at_ms))
            .collect();
        let timeline = timelines.get(location).map(Vec::as_slice).unwrap_or(&[]);
        for m in mine {
            sales += 1;
            match merged.get(&m.id).copied().flatten() {
                Some(at) => {
                    if at < m.committed_ms {
                        negative += 1;
                    }
                    lag.record(Outcome::Ok(Duration::from_millis(
                        at.saturating_sub(m.committed_ms),
                    )));
                }
                None => without_merge_time += 1,
            }
            let first = timeline.partition_point(|(acked, _)| *acked < m.seq);
            if let Some((_, at)) = timeline.get(first) {
                ack_lag.record(Outcome::Ok(Duration::from_millis(
                    at.saturating_sub(m.committed_ms),
                )));
            }
        }
    }
    made.extend(by_location);
    Ok(Steady {
        sales,
        window,
        max_late,
        lag,
        ack_lag,
        commit,
        without_merge_time,
        negative,
    })
}

fn print_steady(s: &Steady) {
    println!("  lag   = the hub's merged_at_ms (its wall clock when it first stores the sale, in the write that stores it, before that write's flush) − the node's wall clock when the sale's local commit returned; same machine, same clock, both in whole ms (so each lag is within 1 ms of the true one)");
    println!("  ack   = the node's last_ack_ms when it has stored the hub's Ack covering the sale (after the hub's flush and the Ack's way back) − the same commit time; polled every {} ms, an upper bound", ACK_POLL.as_millis());
    let rows = vec![
        Summary::of("commit → merged on the hub", &s.lag, s.window),
        Summary::of("commit → ack back at the node", &s.ack_lag, s.window),
        Summary::of("local commit (under this load)", &s.commit, s.window),
    ];
    print!("{}", report::render_table(&rows));
    println!(
        "  {} sales in {:.1} s ({:.1}/s); sales started at most {:.1} ms behind their schedule; {} merged in an earlier ms than the commit returned (counted as 0 ms); {} without a merge time",
        s.sales,
        s.window.as_secs_f64(),
        report::per_second(s.sales as u64, s.window),
        s.max_late.as_secs_f64() * 1000.0,
        s.negative,
        s.without_merge_time
    );
    println!();
}

async fn commit_phase(
    args: &StoresArgs,
    node: &Node,
    api_token: &str,
    skus: &[String],
    offline: &OpStats,
    made: &mut BTreeMap<String, Vec<Made>>,
    failures: &mut BTreeMap<String, u64>,
) -> Result<Commits, LoadError> {
    let mut mine = Vec::new();
    let mut cursor = 0;
    let mut in_process = OpStats::new()?;
    let mut window_start = Instant::now();
    for i in 0..WARMUP_SALES + args.commits {
        if i == WARMUP_SALES {
            window_start = Instant::now();
        }
        let req = sale_request(skus, &mut cursor, lines_of(i));
        match sell_timed(node, req).await {
            Ok(m) => {
                if i >= WARMUP_SALES {
                    in_process.record(Outcome::Ok(m.took));
                }
                mine.push(m);
            }
            Err(e) => {
                in_process.record(Outcome::Error(error_kind(&e)));
                *failures.entry(error_kind(&e)).or_default() += 1;
            }
        }
    }
    let in_process_window = window_start.elapsed();

    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .map_err(LoadError::Client)?;
    let url = format!("{}/api/v1/sales", node.handle.base_url);
    let mut over_http = OpStats::new()?;
    for i in 0..WARMUP_SALES + args.commits {
        if i == WARMUP_SALES {
            window_start = Instant::now();
        }
        let req = sale_request(skus, &mut cursor, lines_of(i));
        let started = Instant::now();
        let outcome = match http
            .post(&url)
            .bearer_auth(api_token)
            .json(&req)
            .send()
            .await
        {
            Ok(res) => {
                let status = res.status();
                match res.bytes().await {
                    Ok(body) if status.as_u16() == 201 => {
                        let took = started.elapsed();
                        match serde_json::from_slice::<SaleId>(&body) {
                            Ok(sale) => {
                                mine.push(Made {
                                    id: sale.id,
                                    lines: lines_of(i),
                                    committed_ms: wall_ms(),
                                    took,
                                    seq: 0,
                                    record_bytes: 0,
                                });
                                Outcome::Ok(took)
                            }
                            Err(e) => Outcome::Error(format!("the sale's body: {e}")),
                        }
                    }
                    Ok(body) => Outcome::Error(status_kind(status, &body)),
                    Err(e) => Outcome::Error(transport_kind(&e)),
                }
            }
            Err(e) => Outcome::Error(transport_kind(&e)),
        };
        match outcome {
            Outcome::Ok(took) if i >= WARMUP_SALES => over_http.record(Outcome::Ok(took)),
            Outcome::Error(e) => {
                *failures.entry(e.clone()).or_default() += 1;
                over_http.record(Outcome::Error(e));
            }
            _ => {}
        }
    }
    let http_window = window_start.elapsed();
    made.insert(node.location.clone(), mine);

    let rows = vec![
        Summary::of(
            "EdgeHandle::sell, connected",
            &in_process,
            in_process_window,
        ),
        Summary::of("POST /api/v1/sales (HTTP)", &over_http, http_window),
    ];
    print!("{}", report::render_table(&rows));
    let offline_row = Summary::of("EdgeHandle::sell, offline (a)", offline, Duration::ZERO);
    println!(
        "  informational: during (a), {} sales with the link cut: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; during (b), under the steady load, see above",
        offline_row.count, offline_row.p50_ms, offline_row.p99_ms, offline_row.max_ms
    );
    println!("  a commit is the sled transaction (sale, stock, rights, outbox entry, cursors), sled's flush and the journal's fsync; EdgeHandle::sell is timed around the call (its blocking-thread hop included); HTTP adds JSON, the token check and loopback TCP on one keep-alive connection");
    println!();
    Ok(Commits {
        in_process,
        in_process_window,
        http: over_http,
        http_window,
    })
}

#[derive(Debug, Deserialize)]
struct SaleId {
    id: Ulid,
}

/// One audit line: what was checked, what was found, and whether it passed.
#[derive(Debug, Clone, PartialEq)]
struct AuditLine {
    check: &'static str,
    found: String,
    pass: Option<bool>,
}

impl std::fmt::Display for AuditLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "SKIP",
        };
        write!(f, "{verdict}  {}: {}", self.check, self.found)
    }
}

/// Every sale made is listed by the hub exactly once, and nothing else is.
async fn audit(
    admin: &Admin,
    nodes: &[&Node],
    made: &BTreeMap<String, Vec<Made>>,
    failures: &BTreeMap<String, u64>,
) -> Result<Vec<AuditLine>, LoadError> {
    let (mut total_made, mut total_listed) = (0usize, 0usize);
    let (mut twice, mut missing, mut unknown) = (0usize, 0usize, 0usize);
    let mut worst = Vec::new();
    for node in nodes {
        let mine: BTreeSet<Ulid> = made
            .get(&node.location)
            .map(|m| m.iter().map(|m| m.id).collect())
            .unwrap_or_default();
        let listed = admin.sales(&node.location).await?;
        let distinct: BTreeSet<Ulid> = listed.iter().map(|l| l.id).collect();
        total_made += mine.len();
        total_listed += listed.len();
        twice += listed.len() - distinct.len();
        let lost = mine.difference(&distinct).count();
        let extra = distinct.difference(&mine).count();
        missing += lost;
        unknown += extra;
        if lost + extra > 0 || listed.len() != distinct.len() {
            worst.push(format!(
                "{}: {} made, {} listed",
                node.location,
                mine.len(),
                listed.len()
            ));
        }
    }
    let exact = twice == 0 && missing == 0 && unknown == 0 && total_listed == total_made;
    let refused: u64 = failures.values().sum();
    let mut found = format!(
        "{} stores, {total_made} sales made, {total_listed} listed by the hub (GET /api/v1/admin/edge/sales per store), {twice} twice, {missing} missing, {unknown} not made by this run",
        nodes.len()
    );
    if !worst.is_empty() {
        found.push_str(&format!(" ({})", worst.join("; ")));
    }
    let mut failed_kinds = String::new();
    for (kind, n) in failures {
        failed_kinds.push_str(&format!("; {n} x {kind}"));
    }
    Ok(vec![
        AuditLine {
            check: "every sale on the hub exactly once",
            found,
            pass: Some(exact),
        },
        AuditLine {
            check: "every sale accepted by its node",
            found: format!("{refused} refused or failed{failed_kinds}"),
            pass: Some(refused == 0),
        },
    ])
}

fn targets(c: &CatchUp, s: &Steady, k: &Commits) -> Vec<Target> {
    let bytes_per_line = per_line(c.up_bytes, c.lines);
    let lag = Summary::of("lag", &s.lag, s.window);
    let commit = Summary::of("commit", &k.in_process, k.in_process_window);
    let http = Summary::of("http", &k.http, k.http_window);
    vec![
        Target {
            goal: format!(
                "catch-up of {} lines < {} s (reconnect → converged)",
                c.lines,
                CATCH_UP_TARGET.as_secs()
            ),
            measured: format!(
                "{:.2} s ({:.2} s after the restore)",
                c.reconnect_to_converged.as_secs_f64(),
                (c.restore_to_reconnect + c.reconnect_to_converged).as_secs_f64()
            ),
            met: Some(c.reconnect_to_converged < CATCH_UP_TARGET),
        },
        Target {
            goal: format!("catch-up bytes node → hub < {BYTES_PER_LINE_TARGET:.0} per sale line"),
            measured: format!("{bytes_per_line:.1} B per line"),
            met: Some(c.lines > 0 && bytes_per_line < BYTES_PER_LINE_TARGET),
        },
        Target {
            goal: format!("steady-state sync lag p99 < {LAG_P99_TARGET_MS:.0} ms"),
            measured: format!(
                "p50 {:.1} / p99 {:.1} / max {:.1} ms ({} sales)",
                lag.p50_ms, lag.p99_ms, lag.max_ms, lag.count
            ),
            met: (lag.count > 0).then_some(lag.p99_ms < LAG_P99_TARGET_MS),
        },
        Target {
            goal: format!(
                "durable local commit p99 < {COMMIT_P99_TARGET_MS:.0} ms (EdgeHandle::sell)"
            ),
            measured: format!(
                "p50 {:.2} / p99 {:.2} / max {:.2} ms; HTTP p99 {:.2} ms",
                commit.p50_ms, commit.p99_ms, commit.max_ms, http.p99_ms
            ),
            met: (commit.count > 0).then_some(commit.p99_ms < COMMIT_P99_TARGET_MS),
        },
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args() -> StoresArgs {
        StoresArgs {
            nodes: 10,
            rate: 20.0,
            duration: Duration::from_secs(20),
            lines: 10_000,
            commits: 2_000,
            data: None,
        }
    }

    #[test]
    fn sales_cycle_through_one_to_four_lines_and_total_exactly() {
        let sizes = sale_sizes(10_000);
        assert_eq!(sizes.iter().sum::<usize>(), 10_000);
        assert_eq!(sizes.len(), 4_000);
        assert_eq!(&sizes[..5], &[1, 2, 3, 4, 1]);
        assert_eq!(sale_sizes(4), vec![1, 2, 1]);
        assert!(sale_sizes(MAX_LINES).len() <= MAX_LISTED);
        assert!(sale_sizes(0).is_empty());
    }

    #[test]
    fn the_defaults_are_accepted_and_runs_too_big_to_audit_are_not() {
        assert!(check_arguments(&args()).is_ok());
        assert_eq!(steady_sales(&args()), 400);
        for spoil in [
            StoresArgs { nodes: 0, ..args() },
            StoresArgs {
                rate: 0.0,
                ..args()
            },
            StoresArgs {
                rate: f64::NAN,
                ..args()
            },
            StoresArgs {
                rate: 500.0,
                duration: Duration::from_secs(30),
                ..args()
            },
            StoresArgs {
                lines: MAX_LINES + 1,
                ..args()
            },
            StoresArgs {
                commits: MAX_COMMITS + 1,
                ..args()
            },
            StoresArgs {
                duration: Duration::from_millis(10),
                ..args()
            },
        ] {
            assert!(
                matches!(check_arguments(&spoil), Err(LoadError::BadArguments(_))),
                "{spoil:?}"
            );
        }
    }

    #[test]
    fn sale_lines_walk_the_skus_in_turn() {
        let skus: Vec<String> = ["A-1", "B-1", "C-1"].map(String::from).to_vec();
        let mut cursor = 0;
        let first = sale_request(&skus, &mut cursor, 2);
        let second = sale_request(&skus, &mut cursor, 2);
        let names = |r: &SaleRequest| -> Vec<String> {
            r.lines.iter().filter_map(|l| l.sku.clone()).collect()
        };
        assert_eq!(names(&first), vec!["A-1", "B-1"]);
        assert_eq!(names(&second), vec!["C-1", "A-1"]);
        assert!(second.lines.iter().all(|l| l.quantity == 1));
    }

    #[test]
    fn a_given_data_directory_must_be_new_or_empty() {
        let dir = std::env::temp_dir().join(format!("omnihub-stores-test-{}", Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x"), "x").unwrap();
        assert!(matches!(
            DataDir::new(Some(dir.clone())),
            Err(LoadError::BadArguments(_))
        ));
        let fresh = dir.join("fresh");
        let kept = DataDir::new(Some(fresh.clone())).unwrap();
        drop(kept);
        assert!(fresh.exists(), "a given directory is kept");
        std::fs::remove_dir_all(&dir).unwrap();
        let temporary = DataDir::new(None).unwrap();
        let path = temporary.path.clone();
        assert!(path.exists());
        drop(temporary);
        assert!(!path.exists(), "a temporary directory is deleted");
    }
}
