//! The logistics (carrier) simulator, `omnihub sim logistics`: buys labels (`POST /shipments`,
//! idempotent by the shipper's reference) with a carrier and a tracking number, moves each
//! parcel through its tracking events on an accelerated clock (label created, picked up, in
//! transit, out for delivery, delivered, sometimes an exception first), reports each to the hub
//! as a signed `tracking.updated` webhook, and serves a public tracking lookup
//! (`/track/{number}` for people, `/api/track/{number}` as JSON).
//!
//! It is a simulator, not a carrier: everything lives in memory, bounded, and is gone when it
//! stops. `/_sim/*` is a test API that needs no key (statistics, the clock, faults) and `/` a
//! dashboard for people.
//!
//! Entry points: [`run`] for the binary (blocks until Ctrl-C or SIGTERM); [`LogisticsSim::start`]
//! for tests and the demo.

mod api;
mod dashboard;
mod parcels;
mod testapi;

use crate::common::clock::SimClock;
use crate::common::faults::{Faults, SharedFaults};
use crate::common::server::{self, ProcessError, Running, Simulator};
use crate::common::webhooks::{WebhookSettings, Webhooks};
use crate::common::{is_http_url, lock};
use actix_web::web;
use parcels::Parcels;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, instrument};

/// Events waiting for the hub before new ones are dropped.
const WEBHOOK_QUEUE: usize = 100_000;

/// Settings of `omnihub sim logistics`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct LogisticsArgs {
    /// Where the API and the tracking pages listen (port 0 picks a free port).
    #[arg(long, env = "OMNIHUB_SIM_LOGISTICS_LISTEN", default_value_t = LogisticsConfig::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The one key accepted as `Authorization: Bearer <key>`.
    #[arg(
        long,
        env = "OMNIHUB_SIM_LOGISTICS_API_KEY",
        default_value = "logistics_test_key"
    )]
    pub api_key: String,
    /// Where tracking webhooks go (the hub's `/webhooks/logistics`); none are sent without it.
    #[arg(long, env = "OMNIHUB_SIM_LOGISTICS_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The key of the webhooks' `Omnihub-Signature` HMAC.
    #[arg(
        long,
        env = "OMNIHUB_SIM_LOGISTICS_WEBHOOK_SECRET",
        default_value = "whsec_logistics_demo"
    )]
    pub webhook_secret: String,
    /// Time between tracking events, e.g. `5s`.
    #[arg(long, env = "OMNIHUB_SIM_LOGISTICS_STEP", default_value = "5s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// The share of parcels (0.0 to 1.0) that get an `exception` before they are delivered.
    #[arg(
        long,
        env = "OMNIHUB_SIM_LOGISTICS_EXCEPTION_RATE",
        default_value_t = 0.0
    )]
    pub exception_rate: f64,
    /// Base of the tracking URLs handed out (default `http://<listen address>`).
    #[arg(long, env = "OMNIHUB_SIM_LOGISTICS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Shipments kept in memory; the oldest are forgotten beyond it.
    #[arg(
        long,
        env = "OMNIHUB_SIM_LOGISTICS_MAX_SHIPMENTS",
        default_value_t = 1_000_000
    )]
    pub max_shipments: usize,
    /// Webhook deliveries in flight at once; 1 sends one at a time, strictly in order.
    #[arg(
        long,
        env = "OMNIHUB_SIM_LOGISTICS_WEBHOOK_CONCURRENCY",
        default_value_t = 16
    )]
    pub webhook_concurrency: usize,
}

impl From<LogisticsArgs> for LogisticsConfig {
    fn from(args: LogisticsArgs) -> LogisticsConfig {
        LogisticsConfig {
            listen: args.listen,
            api_key: args.api_key,
            webhook_url: args.webhook_url,
            webhook_secret: args.webhook_secret,
            step: args.step,
            exception_rate: args.exception_rate,
            public_url: args.public_url,
            max_shipments: args.max_shipments,
            webhook_concurrency: args.webhook_concurrency,
        }
    }
}

/// What [`LogisticsSim::start`] needs; [`LogisticsConfig::default`] matches the command line
/// without flags.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticsConfig {
    pub listen: SocketAddr,
    pub api_key: String,
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    pub step: Duration,
    pub exception_rate: f64,
    pub public_url: Option<String>,
    pub max_shipments: usize,
    pub webhook_concurrency: usize,
}

impl LogisticsConfig {
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8204);

    fn check(&self) -> Result<(), LogisticsError> {
        let bad = |what: &str| Err(LogisticsError::BadArguments(what.to_owned()));
        if self.api_key.is_empty() {
            return bad("--api-key must not be empty");
        }
        if self.webhook_secret.is_empty() {
            return bad("--webhook-secret must not be empty");
        }
        for (flag, url) in [
            ("--webhook-url", &self.webhook_url),
            ("--public-url", &self.public_url),
        ] {
            if url.as_deref().is_some_and(|u| !is_http_url(u)) {
                return bad(&format!("{flag} must be an http(s) URL"));
            }
        }
        if self.step.is_zero() {
            return bad("--step must be longer than zero");
        }
        if !(0.0..=1.0).contains(&self.exception_rate) {
            return bad("--exception-rate must be between 0.0 and 1.0");
        }
        if self.max_shipments == 0 {
            return bad("--max-shipments must be at least 1");
        }
        if !(1..=1024).contains(&self.webhook_concurrency) {
            return bad("--webhook-concurrency must be between 1 and 1024");
        }
        Ok(())
    }
}

impl Default for LogisticsConfig {
    fn default() -> LogisticsConfig {
        LogisticsConfig {
            listen: LogisticsConfig::DEFAULT_LISTEN,
            api_key: "logistics_test_key".into(),
            webhook_url: None,
            webhook_secret: "whsec_logistics_demo".into(),
            step: Duration::from_secs(5),
            exception_rate: 0.0,
            public_url: None,
            max_shipments: 1_000_000,
            webhook_concurrency: 16,
        }
    }
}

/// Why the logistics simulator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum LogisticsError {
    #[error("invalid arguments: {0}")]
    BadArguments(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the webhook client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot wait for Ctrl-C or SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
}

impl ProcessError for LogisticsError {
    fn runtime(error: std::io::Error) -> LogisticsError {
        LogisticsError::Runtime(error)
    }

    fn signal(error: std::io::Error) -> LogisticsError {
        LogisticsError::Signal(error)
    }
}

/// What the handlers share. The parcels' lock is held only for a synchronous step; events are
/// published under it, so a parcel's events are queued in the order they happened.
struct Shared {
    api_key: String,
    parcels: Mutex<Parcels>,
    clock: SimClock,
    faults: SharedFaults,
    webhooks: Webhooks,
}

impl Shared {
    /// Moves every parcel whose next event is due and publishes the events.
    fn tick(&self) {
        let mut parcels = lock(&self.parcels);
        for event in parcels.advance_due(self.clock.now_ms(), self.clock.unix()) {
            self.webhooks.publish(event);
        }
    }
}

/// A running logistics simulator, serving in the background until [`LogisticsSim::stop`] or
/// drop.
pub struct LogisticsSim {
    base_url: String,
    shared: Arc<Shared>,
    running: Running,
}

impl std::fmt::Debug for LogisticsSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogisticsSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl LogisticsSim {
    /// Binds the configured address (port 0 picks a free port) and starts serving, delivering
    /// webhooks and moving parcels along. Call it inside a tokio runtime.
    #[instrument(name = "logistics_sim_start", skip_all, fields(listen = %config.listen))]
    pub async fn start(config: LogisticsConfig) -> Result<LogisticsSim, LogisticsError> {
        config.check()?;
        let listen_error = |source| LogisticsError::Listen {
            addr: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        let base_url = format!("http://{address}");
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| base_url.clone())
            .trim_end_matches('/')
            .to_owned();
        let faults: SharedFaults = Arc::new(Mutex::new(Faults::default()));
        let webhooks = Webhooks::start(
            WebhookSettings {
                url: config.webhook_url.clone(),
                secret: config.webhook_secret.clone(),
                queue_cap: WEBHOOK_QUEUE,
                concurrency: config.webhook_concurrency,
                user_agent: "omnihub-sim-logistics",
            },
            Arc::clone(&faults),
            tokio::runtime::Handle::current(),
        )
        .map_err(LogisticsError::Client)?;
        let step_ms = u64::try_from(config.step.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            api_key: config.api_key.clone(),
            parcels: Mutex::new(Parcels::new(
                step_ms,
                config.exception_rate,
                public_url,
                config.max_shipments,
            )),
            clock: SimClock::new(),
            faults: Arc::clone(&faults),
            webhooks,
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
        info!(%address, "logistics simulator started");
        Ok(LogisticsSim {
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

    /// Stops serving, moving parcels and delivering webhooks.
    #[instrument(name = "logistics_sim_stop", skip_all)]
    pub async fn stop(mut self) {
        self.shared.webhooks.stop();
        self.running.stop("logistics").await;
    }
}

impl Drop for LogisticsSim {
    fn drop(&mut self) {
        self.shared.webhooks.stop();
    }
}

impl Simulator for LogisticsSim {
    fn base_url(&self) -> String {
        LogisticsSim::base_url(self)
    }

    async fn stop(self) {
        LogisticsSim::stop(self).await;
    }
}

/// Moves parcels along as simulated time passes, a tenth of a step at a time (10 ms to
/// 500 ms).
async fn ticker(shared: Arc<Shared>, step: Duration) {
    let mut tick = crate::common::clock::ticks(step);
    loop {
        tick.tick().await;
        shared.tick();
    }
}

/// Runs the simulator until Ctrl-C or SIGTERM: the blocking entry point for
/// `omnihub sim logistics`. Prints `logistics simulator listening on http://ADDR` once it
/// listens.
pub fn run(args: LogisticsArgs) -> Result<(), LogisticsError> {
    let config = LogisticsConfig::from(args);
    config.check()?;
    server::run("logistics", LogisticsSim::start(config))
}
