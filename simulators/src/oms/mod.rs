//! The order management system simulator, `omnihub sim oms`: the warehouse side of an order.
//! The hub hands it orders (`POST /orders`, idempotent by order id, as an outbox delivers at
//! least once); it allocates, picks and ships them on an accelerated clock, asks the logistics
//! simulator for a carrier and tracking number per shipment, and reports every step to the hub
//! as a signed webhook (`order.allocated`, `order.picked`, `order.shipped` once per shipment,
//! `order.cancelled`, `order.returned`).
//!
//! It is a simulator, not an OMS: everything lives in memory, bounded (`--max-orders`), and is
//! gone when it stops. `/_sim/*` is a test API that needs no key — statistics that count
//! duplicate deliveries and effects applied twice, the clock, faults (errors, timeouts, outages,
//! duplicate, late, dropped and held-back webhooks), returns — and `/` a dashboard for people.
//!
//! Entry points: [`run`] for the binary (blocks until Ctrl-C or SIGTERM); [`OmsSim::start`] for
//! tests and the demo.

mod api;
mod book;
mod dashboard;
mod shipping;
mod testapi;

#[cfg(test)]
mod tests;

use crate::common::clock::SimClock;
use crate::common::faults::{Faults, SharedFaults};
use crate::common::server::{self, ProcessError, Running, Simulator};
use crate::common::webhooks::{WebhookSettings, Webhooks};
use crate::common::{is_http_url, lock};
use actix_web::web;
use book::Book;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, instrument};

/// Events waiting for the hub before new ones are dropped: a backlog of 100,000 orders moves
/// through one lifecycle step at a time, so this holds a whole step of it.
const WEBHOOK_QUEUE: usize = 100_000;

/// Settings of `omnihub sim oms`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct OmsArgs {
    /// Where the API listens (port 0 picks a free port).
    #[arg(long, env = "OMNIHUB_SIM_OMS_LISTEN", default_value_t = OmsConfig::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The one key accepted as `Authorization: Bearer <key>`.
    #[arg(long, env = "OMNIHUB_SIM_OMS_API_KEY", default_value = "oms_test_key")]
    pub api_key: String,
    /// Where status webhooks go (the hub's `/webhooks/oms`); none are sent without it.
    #[arg(long, env = "OMNIHUB_SIM_OMS_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The key of the webhooks' `Omnihub-Signature` HMAC.
    #[arg(
        long,
        env = "OMNIHUB_SIM_OMS_WEBHOOK_SECRET",
        default_value = "whsec_oms_demo"
    )]
    pub webhook_secret: String,
    /// The logistics simulator asked for shipments; while it is unreachable, shipping waits
    /// and retries.
    #[arg(
        long,
        env = "OMNIHUB_SIM_OMS_LOGISTICS_URL",
        default_value = "http://127.0.0.1:8204"
    )]
    pub logistics_url: String,
    /// The logistics simulator's API key.
    #[arg(
        long,
        env = "OMNIHUB_SIM_OMS_LOGISTICS_API_KEY",
        default_value = "logistics_test_key"
    )]
    pub logistics_api_key: String,
    /// Time between lifecycle steps (received → allocated → picked → shipped), e.g. `5s`.
    #[arg(long, env = "OMNIHUB_SIM_OMS_STEP", default_value = "5s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// An order with more lines than this ships as two shipments.
    #[arg(long, env = "OMNIHUB_SIM_OMS_SPLIT_OVER", default_value_t = 3)]
    pub split_over: usize,
    /// Orders kept in memory; the oldest are forgotten beyond it.
    #[arg(long, env = "OMNIHUB_SIM_OMS_MAX_ORDERS", default_value_t = 1_000_000)]
    pub max_orders: usize,
    /// Webhook deliveries in flight at once; 1 sends one at a time, strictly in order.
    #[arg(
        long,
        env = "OMNIHUB_SIM_OMS_WEBHOOK_CONCURRENCY",
        default_value_t = 16
    )]
    pub webhook_concurrency: usize,
}

impl From<OmsArgs> for OmsConfig {
    fn from(args: OmsArgs) -> OmsConfig {
        OmsConfig {
            listen: args.listen,
            api_key: args.api_key,
            webhook_url: args.webhook_url,
            webhook_secret: args.webhook_secret,
            logistics_url: args.logistics_url,
            logistics_api_key: args.logistics_api_key,
            step: args.step,
            split_over: args.split_over,
            max_orders: args.max_orders,
            webhook_concurrency: args.webhook_concurrency,
        }
    }
}

/// What [`OmsSim::start`] needs; [`OmsConfig::default`] matches the command line without
/// flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OmsConfig {
    pub listen: SocketAddr,
    pub api_key: String,
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    pub logistics_url: String,
    pub logistics_api_key: String,
    pub step: Duration,
    pub split_over: usize,
    pub max_orders: usize,
    pub webhook_concurrency: usize,
}

impl OmsConfig {
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8203);

    fn check(&self) -> Result<(), OmsError> {
        let bad = |what: &str| Err(OmsError::BadArguments(what.to_owned()));
        if self.api_key.is_empty() {
            return bad("--api-key must not be empty");
        }
        if self.webhook_secret.is_empty() {
            return bad("--webhook-secret must not be empty");
        }
        if self.webhook_url.as_deref().is_some_and(|u| !is_http_url(u)) {
            return bad("--webhook-url must be an http(s) URL");
        }
        if !is_http_url(&self.logistics_url) {
            return bad("--logistics-url must be an http(s) URL");
        }
        if self.step.is_zero() {
            return bad("--step must be longer than zero");
        }
        if self.split_over == 0 {
            return bad("--split-over must be at least 1");
        }
        if self.max_orders == 0 {
            return bad("--max-orders must be at least 1");
        }
        if !(1..=1024).contains(&self.webhook_concurrency) {
            return bad("--webhook-concurrency must be between 1 and 1024");
        }
        Ok(())
    }
}

impl Default for OmsConfig {
    fn default() -> OmsConfig {
        OmsConfig {
            listen: OmsConfig::DEFAULT_LISTEN,
            api_key: "oms_test_key".into(),
            webhook_url: None,
            webhook_secret: "whsec_oms_demo".into(),
            logistics_url: "http://127.0.0.1:8204".into(),
            logistics_api_key: "logistics_test_key".into(),
            step: Duration::from_secs(5),
            split_over: 3,
            max_orders: 1_000_000,
            webhook_concurrency: 16,
        }
    }
}

/// Why the OMS simulator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum OmsError {
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

impl ProcessError for OmsError {
    fn runtime(error: std::io::Error) -> OmsError {
        OmsError::Runtime(error)
    }

    fn signal(error: std::io::Error) -> OmsError {
        OmsError::Signal(error)
    }
}

/// What the handlers share. The book's lock is held only for a synchronous step, never across
/// an `.await`.
struct Shared {
    api_key: String,
    book: Mutex<Book>,
    clock: SimClock,
    faults: SharedFaults,
    webhooks: Webhooks,
    logistics: shipping::Logistics,
}

impl Shared {
    /// Moves every order whose next step is due, publishes the events, and starts the shipping
    /// calls that became due; returns them so a caller may wait for them.
    fn tick(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let jobs = {
            let mut book = lock(&self.book);
            let (events, jobs) = book.advance_due(self.clock.now_ms(), self.clock.unix());
            // Published under the lock, so an order's events are queued in the order they
            // happened.
            for event in events {
                self.webhooks.publish(event);
            }
            jobs
        };
        jobs.into_iter()
            .map(|job| tokio::spawn(shipping::ship(Arc::clone(self), job)))
            .collect()
    }
}

/// A running OMS simulator, serving in the background until [`OmsSim::stop`] or drop.
pub struct OmsSim {
    base_url: String,
    shared: Arc<Shared>,
    running: Running,
}

impl std::fmt::Debug for OmsSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OmsSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl OmsSim {
    /// Binds the configured address (port 0 picks a free port) and starts serving, delivering
    /// webhooks and moving orders along. Call it inside a tokio runtime.
    #[instrument(name = "oms_sim_start", skip_all, fields(listen = %config.listen))]
    pub async fn start(config: OmsConfig) -> Result<OmsSim, OmsError> {
        config.check()?;
        let listen_error = |source| OmsError::Listen {
            addr: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(listen_error)?;
        let faults: SharedFaults = Arc::new(Mutex::new(Faults::default()));
        let webhooks = Webhooks::start(
            WebhookSettings {
                url: config.webhook_url.clone(),
                secret: config.webhook_secret.clone(),
                queue_cap: WEBHOOK_QUEUE,
                concurrency: config.webhook_concurrency,
                user_agent: "omnihub-sim-oms",
            },
            Arc::clone(&faults),
            tokio::runtime::Handle::current(),
        )
        .map_err(OmsError::Client)?;
        let logistics = shipping::Logistics::new(&config).map_err(OmsError::Client)?;
        let step_ms = u64::try_from(config.step.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            api_key: config.api_key.clone(),
            book: Mutex::new(Book::new(step_ms, config.split_over, config.max_orders)),
            clock: SimClock::new(),
            faults: Arc::clone(&faults),
            webhooks,
            logistics,
        });
        let data = web::Data::from(Arc::clone(&shared));
        let mut running = Running::start(listener, move |config: &mut web::ServiceConfig| {
            config.app_data(data.clone());
            api::routes(config);
            testapi::routes(config, Arc::clone(&faults));
            dashboard::routes(config);
        })
        .map_err(listen_error)?;
        running.keep(tokio::spawn(ticker(Arc::clone(&shared), config.step)));
        let base_url = format!("http://{}", running.address());
        info!(address = %running.address(), "oms simulator started");
        Ok(OmsSim {
            base_url,
            shared,
            running,
        })
    }

    /// Where the simulator listens.
    pub fn address(&self) -> SocketAddr {
        self.running.address()
    }

    /// `http://{address}`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Stops serving, moving orders and delivering webhooks.
    #[instrument(name = "oms_sim_stop", skip_all)]
    pub async fn stop(mut self) {
        self.shared.webhooks.stop();
        self.running.stop("oms").await;
    }
}

impl Drop for OmsSim {
    fn drop(&mut self) {
        self.shared.webhooks.stop();
    }
}

impl Simulator for OmsSim {
    fn base_url(&self) -> String {
        OmsSim::base_url(self)
    }

    async fn stop(self) {
        OmsSim::stop(self).await;
    }
}

/// Moves orders along as simulated time passes, a tenth of a step at a time (10 ms to 500 ms).
async fn ticker(shared: Arc<Shared>, step: Duration) {
    let mut tick = crate::common::clock::ticks(step);
    loop {
        tick.tick().await;
        // Shipping calls run on their own; the next tick does not wait for them.
        drop(shared.tick());
    }
}

/// Runs the simulator until Ctrl-C or SIGTERM: the blocking entry point for `omnihub sim oms`.
/// Prints `oms simulator listening on http://ADDR` once it listens.
pub fn run(args: OmsArgs) -> Result<(), OmsError> {
    let config = OmsConfig::from(args);
    config.check()?;
    server::run("oms", OmsSim::start(config))
}
