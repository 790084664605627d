//! Load generators: `omnihub load <scenario>` drives a running hub over HTTP on this machine and
//! prints latency percentiles, throughput and the targets they are held against.
//!
//! Every scenario is bounded (each loop ends by time or by count, every request has a timeout)
//! and may only target loopback: a benchmark is not a way to load someone else's server. The
//! `stores` scenario starts its own hub (a child process on loopback) and runs the stores' edge
//! nodes in this process.

mod checkout;
pub mod events;
mod http;
pub mod proxy;
pub mod report;
mod rng;
mod shoppers;
mod stores;

pub use checkout::CheckoutArgs;
pub use shoppers::ShopperArgs;
pub use stores::StoresArgs;

use clap::Subcommand;
use std::time::Duration;

/// The load scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum LoadCommand {
    /// Simulated web/mobile shoppers (browse, search, view, basket changes) against the hub, then
    /// the same load against the bare `/healthz`, then the memory cost of many basket actors.
    Shoppers(ShopperArgs),
    /// Full checkouts (basket, checkout, payment at the payment simulator, webhook, order) with
    /// orders/s, the latency of the hub's own calls and an audit for duplicate orders, double
    /// charges and oversold stock.
    Checkout(CheckoutArgs),
    /// Stores' edge nodes syncing with a hub it starts itself (a child `omnihub hub`, nodes in
    /// this process): catch-up after 10,000 sale lines recorded offline (time and bytes per
    /// line), sync lag at 10 nodes × 20 sales/s, the durable local commit of a sale, and an
    /// audit that the hub holds every sale exactly once.
    Stores(StoresArgs),
}

/// Why a load run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("'{0}' is not a usable target URL: {1}")]
    BadTarget(String, String),
    #[error("the benchmark may only target this machine: the host of '{0}' must be 127.0.0.1, localhost or [::1]")]
    NotLoopback(String),
    #[error("invalid arguments: {0}")]
    BadArguments(String),
    #[error("cannot start the load generator: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the hub at {target} does not answer ({detail}); start it first, e.g. `omnihub hub`")]
    Unreachable { target: String, detail: String },
    #[error("the hub at {target} answered {what} unexpectedly: {detail}")]
    Unexpected {
        target: String,
        what: String,
        detail: String,
    },
    #[error("the hub at {0} has no product with at least {1} units in stock to put in baskets; start it with demo data (OMNIHUB_HUB_DEMO_DATA=true)")]
    NoStock(String, i64),
    #[error("the hub at {target} has only {found} SKUs with at least {min_units} units available; this benchmark needs {needed} so that stock does not run out during the run: give --admin-token (the hub's OMNIHUB_HUB_ADMIN_TOKEN) and the benchmark sets deep stock itself, or load a catalog with deeper stock")]
    TooLittleStock {
        target: String,
        found: usize,
        needed: usize,
        min_units: i64,
    },
    #[error("the payment simulator at {target} does not answer ({detail}); start it first, e.g. `omnihub sim payments`")]
    SimulatorUnreachable { target: String, detail: String },
    #[error("the payment simulator at {target} answered {what} unexpectedly: {detail}")]
    SimulatorUnexpected {
        target: String,
        what: String,
        detail: String,
    },
    #[error("the audit failed: {0} check(s) did not pass (see above)")]
    AuditFailed(usize),
    #[error("a load client task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("the stores benchmark cannot go on: {0}")]
    Stores(String),
    #[error("cannot keep the latency figures: {0}")]
    Figures(#[from] report::CombineError),
}

impl From<hdrhistogram::CreationError> for LoadError {
    fn from(e: hdrhistogram::CreationError) -> LoadError {
        LoadError::Figures(report::CombineError::Creation(e))
    }
}

impl From<hdrhistogram::AdditionError> for LoadError {
    fn from(e: hdrhistogram::AdditionError) -> LoadError {
        LoadError::Figures(report::CombineError::Addition(e))
    }
}

/// Runs a load scenario to its end and prints its figures on standard output. Builds its own
/// multi-threaded tokio runtime, so call it from synchronous code.
pub fn run(command: LoadCommand) -> Result<(), LoadError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("omnihub-load")
        .build()
        .map_err(LoadError::Runtime)?;
    match command {
        LoadCommand::Shoppers(args) => runtime.block_on(shoppers::run(args)),
        LoadCommand::Checkout(args) => runtime.block_on(checkout::run(args)),
        LoadCommand::Stores(args) => stores::run(args, runtime),
    }
}

/// Checks that `target` is an `http(s)` URL on loopback (127.0.0.1, localhost or ::1) and returns
/// it without a trailing slash, ready to have API paths appended.
pub fn loopback_base(target: &str) -> Result<String, LoadError> {
    let url = reqwest::Url::parse(target)
        .map_err(|e| LoadError::BadTarget(target.to_string(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(LoadError::BadTarget(
            target.to_string(),
            format!("the scheme must be http or https, not '{}'", url.scheme()),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(LoadError::BadTarget(
            target.to_string(),
            "give the hub's base URL, without a query or fragment".into(),
        ));
    }
    // The URL parser normalizes hosts: lower-case names, canonical IPv4 (`127.1` is
    // `127.0.0.1`) and compressed IPv6 in brackets.
    if !matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")) {
        return Err(LoadError::NotLoopback(target.to_string()));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Parses a human duration such as `20s`, `500ms` or `2m` (for clap).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration such as 20s or 2m: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:8080", Some("http://127.0.0.1:8080")),
            ("http://127.0.0.1:18080/", Some("http://127.0.0.1:18080")),
            ("http://localhost:8080", Some("http://localhost:8080")),
            ("http://LOCALHOST", Some("http://localhost")),
            ("https://[::1]:8443/", Some("https://[::1]:8443")),
            (
                "http://127.0.0.1:8080/shop/",
                Some("http://127.0.0.1:8080/shop"),
            ),
            ("http://10.0.0.5:8080", None),
            ("http://127.0.0.2:8080", None),
            ("http://example.com", None),
            ("http://localhost.example.com", None),
            ("http://[::2]:8080", None),
            ("http://0.0.0.0:8080", None),
            ("http://127.1:8080", Some("http://127.0.0.1:8080")),
            ("http://[0:0:0:0:0:0:0:1]:8080", Some("http://[::1]:8080")),
        ];
        for (target, expected) in cases {
            match (loopback_base(target), expected) {
                (Ok(base), Some(want)) => assert_eq!(&base, want, "{target}"),
                (Err(LoadError::NotLoopback(t)), None) => assert_eq!(&t, target),
                (got, _) => panic!("{target}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn malformed_targets_say_what_is_wrong() {
        for target in [
            "127.0.0.1:8080",
            "ftp://127.0.0.1/",
            "not a url",
            "http://127.0.0.1:8080/?x=1",
        ] {
            let err = loopback_base(target).unwrap_err();
            assert!(matches!(err, LoadError::BadTarget(..)), "{target}: {err:?}");
            assert!(err.to_string().contains(target), "{err}");
        }
        let err = loopback_base("http://192.168.1.10:8080")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only target this machine") && err.contains("192.168.1.10"),
            "{err}"
        );
    }

    #[test]
    fn durations_read_like_humans_write_them() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").unwrap_err().contains("'soon'"));
    }
}
