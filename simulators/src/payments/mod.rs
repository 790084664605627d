//! The payment provider simulator, `omnihub sim payments`: an HTTP server speaking the shape of
//! Stripe's API closely enough that Stripe's official client libraries, pointed at its base URL
//! with its test secret key, work against it for what the hub uses — Checkout Sessions with a
//! hosted payment page, PaymentIntents, Refunds, webhook endpoints and signed events, Stripe's
//! error JSON and the `Idempotency-Key` header. `simulators/compat/run.sh` checks that claim
//! with the official Python library.
//!
//! It is a simulator, not a payment processor: card data typed on its hosted page stays there
//! (the hub only ever sees ids), only Stripe's documented test cards and test PaymentMethods
//! behave as cards, and everything lives in memory, bounded, and is gone when it stops.
//!
//! Beside Stripe's `/v1` routes it serves `/pay/{session}` (the hosted page), `/` (a read-only
//! dashboard for people: test cards, recent objects, webhook deliveries, audit, faults) and
//! `/_sim/*`, a test-only API that does not exist at Stripe: pay a session without a browser,
//! read the webhook delivery log and the double-charge audit, move the clock, inject faults.
//! Neither needs a key, so the simulator listens on loopback by default.
//!
//! Entry points: [`run`] for the binary (blocks until Ctrl-C or SIGTERM); [`PaymentSim::start`]
//! for tests and the demo.

mod api;
mod dashboard;
mod errors;
mod faults;
mod form;
mod hosted;
mod idempotency;
mod ledger;
mod objects;
mod testapi;
mod webhooks;

#[cfg(test)]
mod tests;

use crate::common::server::{self, ProcessError, Running, Simulator};
use crate::common::{lock, unix_now};
use actix_web::{web, HttpResponse};
use faults::Faults;
use idempotency::Keys;
use ledger::Ledger;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, instrument};
use webhooks::{RequestInfo, Webhooks};

/// The API version the simulator claims in events and the `Stripe-Version` header (the one
/// `stripe` 16.1.0 for Python pins).
const API_VERSION: &str = "2026-10-28.endive";
/// How often open sessions are checked for expiry.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// Settings of `omnihub sim payments`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct PaymentsArgs {
    /// Where the API and the hosted payment page listen (port 0 picks a free port).
    #[arg(long, env = "OMNIHUB_SIM_PAYMENTS_LISTEN", default_value_t = PaymentsConfig::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The one secret key accepted (Bearer or Basic auth); must start with `sk_test_`.
    #[arg(
        long,
        env = "OMNIHUB_SIM_PAYMENTS_SECRET_KEY",
        default_value = "sk_test_omnihub"
    )]
    pub secret_key: String,
    /// A webhook endpoint that receives every event, signed with --webhook-secret.
    #[arg(long, env = "OMNIHUB_SIM_PAYMENTS_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The signing secret of --webhook-url and of endpoints created with
    /// `POST /v1/webhook_endpoints`; must start with `whsec_`.
    #[arg(
        long,
        env = "OMNIHUB_SIM_PAYMENTS_WEBHOOK_SECRET",
        default_value = "whsec_omnihub_demo"
    )]
    pub webhook_secret: String,
    /// The shop name the hosted payment page shows.
    #[arg(
        long,
        env = "OMNIHUB_SIM_PAYMENTS_MERCHANT_NAME",
        default_value = "Omnihub Demo Shop"
    )]
    pub merchant_name: String,
    /// Base of the hosted page URLs handed out (default `http://<listen address>`).
    #[arg(long, env = "OMNIHUB_SIM_PAYMENTS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How many objects of each kind (sessions, intents, charges, …) are kept in memory.
    #[arg(
        long,
        env = "OMNIHUB_SIM_PAYMENTS_MAX_OBJECTS",
        default_value_t = 200_000
    )]
    pub max_objects: usize,
    /// Webhook deliveries in flight at once per endpoint, as Stripe sends them concurrently and
    /// in no promised order; 1 sends one at a time, strictly in order.
    #[arg(
        long,
        env = "OMNIHUB_SIM_PAYMENTS_WEBHOOK_CONCURRENCY",
        default_value_t = 16
    )]
    pub webhook_concurrency: usize,
}

impl From<PaymentsArgs> for PaymentsConfig {
    fn from(args: PaymentsArgs) -> PaymentsConfig {
        PaymentsConfig {
            listen: args.listen,
            secret_key: args.secret_key,
            webhook_url: args.webhook_url,
            webhook_secret: args.webhook_secret,
            merchant_name: args.merchant_name,
            public_url: args.public_url,
            max_objects: args.max_objects,
            webhook_concurrency: args.webhook_concurrency,
        }
    }
}

/// What [`PaymentSim::start`] needs; [`PaymentsConfig::default`] matches the command line
/// without flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentsConfig {
    pub listen: SocketAddr,
    pub secret_key: String,
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    pub merchant_name: String,
    pub public_url: Option<String>,
    pub max_objects: usize,
    pub webhook_concurrency: usize,
}

impl PaymentsConfig {
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8201);

    fn check(&self) -> Result<(), PaymentsError> {
        let bad = |what: &str| Err(PaymentsError::BadArguments(what.to_owned()));
        if !self.secret_key.starts_with("sk_test_") || self.secret_key.len() <= "sk_test_".len() {
            return bad("--secret-key must start with sk_test_");
        }
        if !self.webhook_secret.starts_with("whsec_") {
            return bad("--webhook-secret must start with whsec_");
        }
        for (flag, url) in [
            ("--webhook-url", &self.webhook_url),
            ("--public-url", &self.public_url),
        ] {
            if let Some(url) = url {
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => return bad(&format!("{flag} must be an http(s) URL")),
                }
            }
        }
        if self.max_objects == 0 {
            return bad("--max-objects must be at least 1");
        }
        if !(1..=webhooks::MAX_CONCURRENCY).contains(&self.webhook_concurrency) {
            return bad(&format!(
                "--webhook-concurrency must be between 1 and {}",
                webhooks::MAX_CONCURRENCY
            ));
        }
        Ok(())
    }
}

impl Default for PaymentsConfig {
    fn default() -> PaymentsConfig {
        PaymentsConfig {
            listen: PaymentsConfig::DEFAULT_LISTEN,
            secret_key: "sk_test_omnihub".into(),
            webhook_url: None,
            webhook_secret: "whsec_omnihub_demo".into(),
            merchant_name: "Omnihub Demo Shop".into(),
            public_url: None,
            max_objects: 200_000,
            webhook_concurrency: 16,
        }
    }
}

/// Why the payment simulator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
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

impl ProcessError for PaymentsError {
    fn runtime(error: std::io::Error) -> PaymentsError {
        PaymentsError::Runtime(error)
    }

    fn signal(error: std::io::Error) -> PaymentsError {
        PaymentsError::Signal(error)
    }
}

/// What the handlers share. Each lock is held only for a synchronous step, never across an
/// `.await`; when two are needed, the ledger is taken before the webhooks.
struct Shared {
    secret_key: String,
    webhook_secret: String,
    merchant_name: String,
    ledger: Mutex<Ledger>,
    keys: Mutex<Keys>,
    faults: Arc<Mutex<Faults>>,
    webhooks: Webhooks,
    pages: minijinja::Environment<'static>,
    /// Seconds added to the wall clock by `POST /_sim/clock`.
    clock_offset: AtomicI64,
}

impl Shared {
    /// The simulator's clock, Unix seconds.
    fn now(&self) -> i64 {
        unix_now().saturating_add(self.clock_offset.load(Ordering::Relaxed))
    }

    /// Runs `change` on the ledger after expiring what is due, then publishes the events both
    /// raised, in order, before anyone else can touch the ledger.
    fn with_ledger<T>(
        &self,
        request: &RequestInfo,
        change: impl FnOnce(&mut Ledger, i64) -> T,
    ) -> T {
        let now = self.now();
        let mut ledger = lock(&self.ledger);
        ledger.expire_due(now);
        self.publish(&mut ledger, &RequestInfo::default(), now);
        let result = change(&mut ledger, now);
        self.publish(&mut ledger, request, now);
        result
    }

    fn publish(&self, ledger: &mut Ledger, request: &RequestInfo, now: i64) {
        for (kind, object) in ledger.outbox.drain(..) {
            self.webhooks.publish(kind, object, request, now);
        }
    }
}

/// A running payment simulator, serving in the background until [`PaymentSim::stop`] or drop.
pub struct PaymentSim {
    address: SocketAddr,
    base_url: String,
    shared: web::Data<Shared>,
    running: Running,
}

impl std::fmt::Debug for PaymentSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentSim")
            .field("address", &self.address)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl PaymentSim {
    /// Binds the configured address (port 0 picks a free port), registers `webhook_url` if
    /// given, and starts serving. Call it inside a tokio runtime; webhook deliveries and the
    /// expiry ticker run on it.
    #[instrument(name = "payments_sim_start", skip_all, fields(listen = %config.listen))]
    pub async fn start(config: PaymentsConfig) -> Result<PaymentSim, PaymentsError> {
        config.check()?;
        let listen_error = |source| PaymentsError::Listen {
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

        let faults = Arc::new(Mutex::new(Faults::default()));
        let runtime = tokio::runtime::Handle::current();
        let webhooks = Webhooks::new(
            Arc::clone(&faults),
            runtime,
            config.max_objects,
            config.webhook_concurrency,
        )
        .map_err(PaymentsError::Client)?;
        let shared = web::Data::new(Shared {
            secret_key: config.secret_key.clone(),
            webhook_secret: config.webhook_secret.clone(),
            merchant_name: config.merchant_name.clone(),
            ledger: Mutex::new(Ledger::new(public_url, config.max_objects)),
            keys: Mutex::new(Keys::new(config.max_objects)),
            faults,
            webhooks,
            pages: hosted::pages(),
            clock_offset: AtomicI64::new(0),
        });
        if let Some(url) = &config.webhook_url {
            shared.webhooks.add_endpoint(
                url.clone(),
                config.webhook_secret.clone(),
                vec!["*".into()],
                Some("--webhook-url".into()),
                serde_json::Map::new(),
                shared.now(),
            );
        }

        let data = shared.clone();
        let mut running = Running::start(listener, move |config: &mut web::ServiceConfig| {
            config
                .app_data(data.clone())
                .app_data(web::FormConfig::default().limit(64 * 1024))
                .configure(api::routes)
                .configure(hosted::routes)
                .configure(testapi::routes)
                .configure(dashboard::routes)
                .route("/healthz", web::get().to(healthz))
                .default_service(web::to(api::no_route));
        })
        .map_err(listen_error)?;
        let ticker_shared = shared.clone();
        running.keep(tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_TICK);
            loop {
                tick.tick().await;
                ticker_shared.with_ledger(&RequestInfo::default(), |_, _| ());
            }
        }));
        info!(%address, "payment simulator started");
        Ok(PaymentSim {
            address,
            base_url,
            shared,
            running,
        })
    }

    /// Where the simulator listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://{address}`: the API base for client libraries (`/v1/...` below it).
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Stops serving and delivering webhooks, and waits for the server (a few seconds at most).
    #[instrument(name = "payments_sim_stop", skip_all)]
    pub async fn stop(mut self) {
        self.shared.webhooks.stop();
        self.running.stop("payments").await;
    }
}

impl Drop for PaymentSim {
    fn drop(&mut self) {
        self.shared.webhooks.stop();
    }
}

impl Simulator for PaymentSim {
    fn base_url(&self) -> String {
        PaymentSim::base_url(self)
    }

    async fn stop(self) {
        PaymentSim::stop(self).await;
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Runs the simulator until Ctrl-C or SIGTERM: the blocking entry point for
/// `omnihub sim payments`. Prints `payments simulator listening on http://ADDR` once it listens.
pub fn run(args: PaymentsArgs) -> Result<(), PaymentsError> {
    let config = PaymentsConfig::from(args);
    config.check()?;
    server::run("payments", PaymentSim::start(config))
}
