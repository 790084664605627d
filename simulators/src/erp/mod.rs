//! The ERP simulator, `omnihub sim erp`: the retailer's ERP/RMS as the hub's importer sees it.
//! It generates a catalog from a seed (products with variants, categories, brands, attributes
//! and EAN-13 barcodes; prices per list, currency and validity; stock levels per location and
//! movements; promotions; coupons) and serves it as five feeds — JSON or CSV, paged by cursor
//! over a compacted change log — in the wire format of [`protocol::feed`]. It also pushes
//! feeds to the hub's import endpoints, signed with HMAC, once on request or every so often.
//! `docs/erp-feeds.md` is the contract.
//!
//! It is a simulator, not an ERP: everything lives in memory and is gone when it stops; the
//! same seed (and anchor day) gives the same catalog. `/test/*` (also served as `/_sim/*`, the
//! other simulators' prefix) is a test API that needs no key: changes, faults (bad rows,
//! duplicates, out-of-order versions, slow, failing and broken responses), pushes and state;
//! `/` is a status page for people.
//!
//! Entry points: [`run`] for the binary (blocks until Ctrl-C or SIGTERM); [`ErpSim::start`]
//! for tests and the demo.

mod api;
mod catalog;
mod changes;
mod dashboard;
mod faults;
mod log;
mod page;
mod push;
mod testapi;

#[cfg(test)]
mod tests;

use crate::common::server::{self, ProcessError, Running, Simulator};
use crate::common::{is_http_url, lock, unix_now};
use actix_web::web;
use catalog::{Catalog, MAX_PRODUCTS};
use changes::Applied;
use faults::ErpFaults;
use log::Store;
use push::{PushRecord, Pusher};
use serde::Serialize;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, instrument};

pub use push::PushFormat;

/// Changes and pushes the status page lists.
const RECENT: usize = 20;

/// Settings of `omnihub sim erp`.
#[derive(clap::Args, Clone, PartialEq, Eq)]
pub struct ErpArgs {
    /// Where the feeds, the test API and the status page listen (port 0 picks a free port).
    #[arg(long, env = "OMNIHUB_SIM_ERP_LISTEN", default_value_t = ErpConfig::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The seed of the generated catalog: the same seed gives the same catalog.
    #[arg(long, env = "OMNIHUB_SIM_ERP_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Products to generate (each with 1 to 3 variants), up to 1,000,000.
    #[arg(long, env = "OMNIHUB_SIM_ERP_PRODUCTS", default_value_t = 60)]
    pub products: u32,
    /// Stock locations, comma-separated: `online` (the web warehouse) and store locations.
    #[arg(
        long,
        env = "OMNIHUB_SIM_ERP_LOCATIONS",
        value_delimiter = ',',
        default_value = "online,store-berlin,store-hamburg"
    )]
    pub locations: Vec<String>,
    /// Stock movements to generate after the levels (default: one per 50 variants, 3 to
    /// 2,000).
    #[arg(long, env = "OMNIHUB_SIM_ERP_STOCK_DELTAS")]
    pub stock_deltas: Option<u32>,
    /// The hub to push feeds to (its base URL; rows go to `{url}/api/v1/import/{feed}`).
    #[arg(long, env = "OMNIHUB_SIM_ERP_PUSH_TO")]
    pub push_to: Option<String>,
    /// How often to push what changed since the last push, e.g. `30s`.
    #[arg(long, env = "OMNIHUB_SIM_ERP_PUSH_EVERY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub push_every: Duration,
    /// The key of the pushes' `X-Omnihub-Signature` HMAC (the hub's import secret).
    #[arg(
        long,
        env = "OMNIHUB_SIM_ERP_PUSH_SECRET",
        default_value = "omnihub-demo-erp-secret"
    )]
    pub push_secret: String,
    /// The body of a push: `json` (`{"rows": [...]}`) or `csv`.
    #[arg(long, env = "OMNIHUB_SIM_ERP_PUSH_FORMAT", value_enum, default_value_t = PushFormat::Json)]
    pub push_format: PushFormat,
    /// Rows per push request (1 to 10,000).
    #[arg(long, env = "OMNIHUB_SIM_ERP_PUSH_PAGE_SIZE", default_value_t = 1000)]
    pub push_page_size: usize,
    /// Makes a change this often (a new retail price or a stock movement), e.g. `5s`, so the
    /// feeds move on their own; none without it.
    #[arg(long, env = "OMNIHUB_SIM_ERP_CHANGE_EVERY", value_parser = humantime::parse_duration)]
    pub change_every: Option<Duration>,
}

impl std::fmt::Debug for ErpArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpArgs")
            .field("listen", &self.listen)
            .field("seed", &self.seed)
            .field("products", &self.products)
            .field("locations", &self.locations)
            .field("push_to", &self.push_to)
            .field("push_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl From<ErpArgs> for ErpConfig {
    fn from(args: ErpArgs) -> ErpConfig {
        ErpConfig {
            listen: args.listen,
            seed: args.seed,
            products: args.products,
            locations: args.locations,
            stock_deltas: args.stock_deltas,
            anchor: None,
            push_to: args.push_to,
            push_every: args.push_every,
            push_secret: args.push_secret,
            push_format: args.push_format,
            push_page_size: args.push_page_size,
            change_every: args.change_every,
        }
    }
}

/// What [`ErpSim::start`] needs; [`ErpConfig::default`] matches the command line without
/// flags.
#[derive(Clone, PartialEq, Eq)]
pub struct ErpConfig {
    pub listen: SocketAddr,
    pub seed: u64,
    pub products: u32,
    pub locations: Vec<String>,
    /// Generated stock movements; `None`: one per 50 variants, 3 to 2,000.
    pub stock_deltas: Option<u32>,
    /// Unix seconds that generated sale and expiry dates count from; `None`: midnight UTC of
    /// today.
    pub anchor: Option<i64>,
    pub push_to: Option<String>,
    pub push_every: Duration,
    pub push_secret: String,
    pub push_format: PushFormat,
    pub push_page_size: usize,
    pub change_every: Option<Duration>,
}

impl std::fmt::Debug for ErpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpConfig")
            .field("listen", &self.listen)
            .field("seed", &self.seed)
            .field("products", &self.products)
            .field("locations", &self.locations)
            .field("push_to", &self.push_to)
            .field("push_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ErpConfig {
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8202);

    fn check(&self) -> Result<(), ErpError> {
        let bad = |what: &str| Err(ErpError::BadArguments(what.to_owned()));
        if !(1..=MAX_PRODUCTS).contains(&self.products) {
            return bad("--products must be between 1 and 1000000");
        }
        if self.locations.is_empty() || self.locations.len() > 1000 {
            return bad("--locations needs 1 to 1000 locations");
        }
        for (i, location) in self.locations.iter().enumerate() {
            let ok = (1..=64).contains(&location.len())
                && location
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return bad("--locations: each is 1 to 64 of a-z, 0-9 and '-'");
            }
            if self.locations[..i].contains(location) {
                return bad("--locations: a location is listed twice");
            }
        }
        if self.stock_deltas.is_some_and(|d| d > 10_000_000) {
            return bad("--stock-deltas must be at most 10000000");
        }
        if self.push_to.as_deref().is_some_and(|u| !is_http_url(u)) {
            return bad("--push-to must be an http(s) URL");
        }
        if self.push_every < Duration::from_millis(100) {
            return bad("--push-every must be at least 100ms");
        }
        if self.push_secret.is_empty() {
            return bad("--push-secret must not be empty");
        }
        if !(1..=api::MAX_LIMIT).contains(&self.push_page_size) {
            return bad("--push-page-size must be between 1 and 10000");
        }
        if self
            .change_every
            .is_some_and(|d| d < Duration::from_millis(10))
        {
            return bad("--change-every must be at least 10ms");
        }
        Ok(())
    }
}

impl Default for ErpConfig {
    fn default() -> ErpConfig {
        ErpConfig {
            listen: ErpConfig::DEFAULT_LISTEN,
            seed: 42,
            products: 60,
            locations: ["online", "store-berlin", "store-hamburg"]
                .map(str::to_owned)
                .to_vec(),
            stock_deltas: None,
            anchor: None,
            push_to: None,
            push_every: Duration::from_secs(10),
            push_secret: "omnihub-demo-erp-secret".into(),
            push_format: PushFormat::Json,
            push_page_size: 1000,
            change_every: None,
        }
    }
}

/// Why the ERP simulator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ErpError {
    #[error("invalid arguments: {0}")]
    BadArguments(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot wait for Ctrl-C or SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
}

impl ProcessError for ErpError {
    fn runtime(error: std::io::Error) -> ErpError {
        ErpError::Runtime(error)
    }

    fn signal(error: std::io::Error) -> ErpError {
        ErpError::Signal(error)
    }
}

/// Counters for `/test/state` and the status page.
#[derive(Debug, Clone, Default, Serialize)]
struct Stats {
    /// `GET /feeds/{feed}` requests answered with a page.
    pages_served: u64,
    /// Rows in those pages and in pushes, duplicates included.
    rows_served: u64,
    changes_applied: u64,
    push_requests: u64,
}

/// The state behind one lock: held only for synchronous steps, never across an `.await`.
struct Sim {
    store: Store,
    faults: ErpFaults,
    stats: Stats,
    recent_changes: VecDeque<Applied>,
    recent_pushes: VecDeque<PushRecord>,
}

impl Sim {
    fn applied(&mut self, applied: &[Applied]) {
        self.stats.changes_applied += applied.len() as u64;
        for a in applied {
            if self.recent_changes.len() == RECENT {
                self.recent_changes.pop_front();
            }
            self.recent_changes.push_back(a.clone());
        }
    }

    fn pushed(&mut self, record: PushRecord) {
        self.stats.push_requests += 1;
        if self.recent_pushes.len() == RECENT {
            self.recent_pushes.pop_front();
        }
        self.recent_pushes.push_back(record);
    }
}

/// What the handlers and the background tasks share.
struct Shared {
    sim: Mutex<Sim>,
    pusher: Pusher,
}

/// A running ERP simulator, serving in the background until [`ErpSim::stop`] or drop.
pub struct ErpSim {
    base_url: String,
    running: Running,
}

impl std::fmt::Debug for ErpSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Generates the store of a configuration.
fn generate(config: &ErpConfig) -> Store {
    let anchor = config
        .anchor
        .unwrap_or_else(|| catalog::midnight(unix_now()));
    let catalog = Catalog::new(
        config.seed,
        config.products,
        config.locations.clone(),
        anchor,
    );
    let deltas = config
        .stock_deltas
        .unwrap_or_else(|| (catalog.variants() / 50).clamp(3, 2_000));
    Store::new(catalog, deltas)
}

impl ErpSim {
    /// Generates the catalog, binds the configured address (port 0 picks a free port) and
    /// starts serving, pushing (with `push_to`) and changing (with `change_every`). Call it
    /// inside a tokio runtime.
    #[instrument(name = "erp_sim_start", skip_all, fields(listen = %config.listen))]
    pub async fn start(config: ErpConfig) -> Result<ErpSim, ErpError> {
        config.check()?;
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| ErpError::Listen {
                addr: config.listen,
                source,
            })?;
        let started = std::time::Instant::now();
        let store = generate(&config);
        info!(
            products = config.products,
            variants = store.catalog.variants(),
            ms = started.elapsed().as_millis() as u64,
            "catalog generated"
        );
        let shared = Arc::new(Shared {
            sim: Mutex::new(Sim {
                store,
                faults: ErpFaults::default(),
                stats: Stats::default(),
                recent_changes: VecDeque::new(),
                recent_pushes: VecDeque::new(),
            }),
            pusher: Pusher::new(config.push_secret.clone()).map_err(ErpError::Client)?,
        });
        let data = web::Data::from(Arc::clone(&shared));
        let mut running = Running::start(listener, move |app: &mut web::ServiceConfig| {
            app.app_data(data.clone())
                .configure(api::routes)
                .configure(testapi::routes)
                .configure(dashboard::routes);
        })
        .map_err(|source| ErpError::Listen {
            addr: config.listen,
            source,
        })?;
        if let Some(url) = config.push_to.clone() {
            let every = config.push_every;
            let (format, page_size) = (config.push_format, config.push_page_size);
            running.keep(tokio::spawn(push::every(
                Arc::clone(&shared),
                url,
                every,
                format,
                page_size,
            )));
        }
        if let Some(every) = config.change_every {
            running.keep(tokio::spawn(change_every(
                Arc::clone(&shared),
                every,
                config.seed,
            )));
        }
        let base_url = format!("http://{}", running.address());
        info!(%base_url, "erp simulator listening");
        Ok(ErpSim { base_url, running })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    pub fn address(&self) -> SocketAddr {
        self.running.address()
    }

    /// Stops the background tasks and the server.
    pub async fn stop(mut self) {
        self.running.stop("erp").await;
    }
}

impl Simulator for ErpSim {
    fn base_url(&self) -> String {
        ErpSim::base_url(self)
    }

    async fn stop(self) {
        ErpSim::stop(self).await;
    }
}

/// Makes a plausible change every `every` (`--change-every`).
async fn change_every(shared: Arc<Shared>, every: Duration, seed: u64) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut rng = catalog::Rng::new(seed, 99, 0);
    loop {
        tick.tick().await;
        let mut sim = lock(&shared.sim);
        let change = changes::random_change(&sim.store, &mut rng);
        match changes::apply(&mut sim.store, vec![change]) {
            Ok(applied) => sim.applied(&applied),
            Err(refusal) => tracing::warn!(code = refusal.code, "a generated change was refused"),
        }
    }
}

/// Runs the simulator until Ctrl-C or SIGTERM: the blocking entry point for `omnihub sim erp`.
/// Prints `erp simulator listening on http://ADDR` once it listens.
pub fn run(args: ErpArgs) -> Result<(), ErpError> {
    let config = ErpConfig::from(args);
    config.check()?;
    server::run("erp", ErpSim::start(config))
}
