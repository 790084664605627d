//! `omnihub bench cluster`: what the cluster storage costs against sled (issue 11), on this
//! machine, in one run.
//!
//! 1. The same load — add-to-basket, then full checkouts paid at the payment simulator
//!    (in-process, as in the other benches) and confirmed on the hub — against (a) one hub on
//!    sled, (b) one hub on the cluster storage (PostgreSQL), (c) three hub nodes on the cluster
//!    storage, in this process on port 0. In (c) each request goes to the next node in turn (a
//!    round-robin load balancer), so about two in three are forwarded to the basket's owner —
//!    except the payment confirm (`/api/v1/checkouts/{id}/confirm`), which goes to the node that
//!    made the basket (its owner): the hub does not forward checkout paths yet.
//!    Printed: p50/p99 latency and throughput of each, and the ratios cluster/sled.
//! 2. Forwarding: on the three nodes, one request at a time, the same add-to-basket sent to the
//!    basket's owner and to a node that does not own it, alternately: p50/p99 of each, and the
//!    difference.
//! 3. Failover: three `omnihub hub` processes (this executable) on the cluster storage. A basket
//!    is made, a client adds to it through a node that does not own it every 20 ms, the owner is
//!    killed (SIGKILL), and the time from the kill to the first add that succeeds again (on a
//!    survivor) is measured; then every acknowledged add must still be in the basket. A
//!    replacement node is started for the next round. Printed: each round, min/median/max.
//!
//! The benchmark makes its own PostgreSQL schemas (`bench_<pid>_<ms>_*`) and drops them at the
//! end, also when it fails. It exits non-zero if any request failed (outside the failover gap)
//! or any check did not hold. Everything binds to loopback. The in-process hubs log nothing
//! unless `RUST_LOG` says so (failures are counted in the table); the hub processes log warnings
//! to files in a temporary directory, shown when one fails to start.

use anyhow::{anyhow, bail, ensure, Context};
use hub::cluster::failover;
use hub::config::StorageKind;
use hub::storage::postgres::PgStorage;
use protocol::{Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant};
use secrecy::SecretString;
use serde_json::{json, Value};
use simulators::load::report::{OpStats, Outcome, Summary};
use simulators::payments::{PaymentSim, PaymentsConfig};
use sqlx::postgres::PgPoolOptions;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SKUs in the benchmark's catalog, each with deep stock.
const SKUS: usize = 20;
const DEEP_STOCK: i64 = 10_000_000;
/// The simulator's test card that always succeeds.
const TEST_CARD: &str = "4242424242424242";
const TOKEN_HEADER: &str = "x-basket-token";
/// The failover client's pause between two adds.
const FAILOVER_PACE: Duration = Duration::from_millis(20);
/// Adds acknowledged through a survivor before the owner is killed.
const ADDS_BEFORE_KILL: usize = 10;

/// The flags of `omnihub bench cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterBenchArgs {
    /// PostgreSQL (loopback only); the benchmark makes its own schemas there and drops them.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// Add-to-basket requests per setup (sled, cluster ×1, cluster ×3).
    #[arg(long, default_value_t = 3_000)]
    adds: usize,
    /// Checkouts (basket → paid order) per setup.
    #[arg(long, default_value_t = 300)]
    checkouts: usize,
    /// Clients at once, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Requests to the owner and as many to a non-owner, one at a time, for the forwarding cost.
    #[arg(long, default_value_t = 500)]
    forwards: usize,
    /// Failover rounds (each kills one hub process).
    #[arg(long, default_value_t = 3)]
    failover_rounds: usize,
    /// The cluster nodes' shard lease ttl, e.g. `6s` (the default deployment's).
    #[arg(long, default_value = "6s", value_parser = hub::bench::parse_duration)]
    lease_ttl: Duration,
    /// The cluster nodes' heartbeat, e.g. `1s` (the default deployment's).
    #[arg(long, default_value = "1s", value_parser = hub::bench::parse_duration)]
    heartbeat_every: Duration,
    /// The `omnihub` executable started for the failover's hub processes [default: this one].
    #[arg(long)]
    hub_binary: Option<PathBuf>,
}

impl ClusterBenchArgs {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=1_000_000).contains(&self.adds),
            "--adds must be between 1 and 1,000,000"
        );
        ensure!(
            (1..=100_000).contains(&self.checkouts),
            "--checkouts must be between 1 and 100,000"
        );
        ensure!(
            (1..=256).contains(&self.concurrency),
            "--concurrency must be between 1 and 256"
        );
        ensure!(
            (1..=100_000).contains(&self.forwards),
            "--forwards must be between 1 and 100,000"
        );
        ensure!(
            (1..=20).contains(&self.failover_rounds),
            "--failover-rounds must be between 1 and 20"
        );
        ensure!(
            self.heartbeat_every * 2 <= self.lease_ttl && self.lease_ttl <= Duration::from_secs(60),
            "--heartbeat-every must be at most half of --lease-ttl, and --lease-ttl at most 60s"
        );
        let url = reqwest::Url::parse(&self.postgres)
            .map_err(|e| anyhow!("--postgres is not a URL: {e}"))?;
        ensure!(
            matches!(url.scheme(), "postgres" | "postgresql"),
            "--postgres must be a postgres:// URL"
        );
        ensure!(
            matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")),
            "--postgres must be on this machine (127.0.0.1, localhost or [::1])"
        );
        ensure!(
            url.query().is_none(),
            "--postgres must not have a query: the benchmark sets the search_path itself"
        );
        Ok(())
    }

    /// PostgreSQL's URL with every connection's `search_path` set to `schema`.
    fn schema_url(&self, schema: &str) -> String {
        format!("{}?options=-c%20search_path%3D{schema}", self.postgres)
    }

    /// Host, port and database, without credentials (for the header).
    fn postgres_shown(&self) -> String {
        reqwest::Url::parse(&self.postgres)
            .map(|u| {
                format!(
                    "{}:{}{}",
                    u.host_str().unwrap_or("?"),
                    u.port().unwrap_or(5432),
                    u.path()
                )
            })
            .unwrap_or_else(|_| "?".into())
    }
}

/// Runs the benchmark and prints its figures; an error (or a failed check) exits non-zero.
pub fn run(args: ClusterBenchArgs) -> anyhow::Result<()> {
    args.check()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    actix_web::rt::System::new().block_on(bench(args))
}

async fn bench(args: ClusterBenchArgs) -> anyhow::Result<()> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.postgres)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", args.postgres_shown()))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let base = format!("bench_{}_{millis}", std::process::id());
    let schemas = [format!("{base}_one"), format!("{base}_three")];
    for schema in &schemas {
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .with_context(|| format!("creating schema {schema}"))?;
    }
    println!("omnihub bench cluster");
    if cfg!(debug_assertions) {
        println!("  (a debug build: build with --release for meaningful figures)");
    }
    println!(
        "  PostgreSQL {}, schemas {base}_*; {} clients; per setup {} adds and {} checkouts",
        args.postgres_shown(),
        args.concurrency,
        args.adds,
        args.checkouts
    );
    let outcome = measure(&args, &schemas).await;
    let mut dropped = Ok(());
    for schema in &schemas {
        if let Err(e) = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await
        {
            dropped = Err(anyhow!(e).context(format!("dropping schema {schema}")));
        }
    }
    admin.close().await;
    outcome.and(dropped)
}

async fn measure(args: &ClusterBenchArgs, schemas: &[String; 2]) -> anyhow::Result<()> {
    let sim = PaymentSim::start(PaymentsConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..PaymentsConfig::default()
    })
    .await
    .context("starting the payment simulator")?;
    let outcome = setups(args, schemas, &sim.base_url()).await;
    sim.stop().await;
    let (loads, forwarding) = outcome?;
    print_loads(&loads);
    print_forwarding(&forwarding, args.forwards);
    let failover = failover(args, &schemas[1]).await?;
    print_failover(&failover, args);
    let errors: u64 = loads.iter().map(Load::errors).sum::<u64>() + forwarding.errors();
    ensure!(
        errors == 0,
        "{errors} request(s) failed under load or while measuring forwarding (see the table)"
    );
    Ok(())
}

/// The three setups under the same load, then forwarding on the three nodes.
async fn setups(
    args: &ClusterBenchArgs,
    schemas: &[String; 2],
    payments: &str,
) -> anyhow::Result<(Vec<Load>, Forwarding)> {
    let mut loads = Vec::new();
    let sled = Node::start(args, payments, None, "sled").await?;
    let load = drive(args, &[&sled], payments, "sled").await;
    sled.stop().await?;
    loads.push(load?);

    let one = Node::start(args, payments, Some(&schemas[0]), "bench-one").await?;
    let load = drive(args, &[&one], payments, "cluster ×1").await;
    one.stop().await?;
    loads.push(load?);

    let mut three = Vec::new();
    for id in ["bench-a", "bench-b", "bench-c"] {
        match Node::start(args, payments, Some(&schemas[1]), id).await {
            Ok(node) => three.push(node),
            Err(e) => {
                for node in three {
                    let _ = node.stop().await;
                }
                return Err(e);
            }
        }
    }
    let outcome = async {
        let nodes: Vec<&Node> = three.iter().collect();
        settled(&nodes).await?;
        let load = drive(args, &nodes, payments, "cluster ×3").await?;
        let forwarding = forwarding(args, &nodes).await?;
        anyhow::Ok((load, forwarding))
    }
    .await;
    for node in three {
        node.stop().await?;
    }
    let (load, forwarding) = outcome?;
    loads.push(load);
    Ok((loads, forwarding))
}

/// A hub in this process on port 0.
struct Node {
    id: String,
    addr: SocketAddr,
    handle: hub::HubHandle,
    server: actix_web::dev::ServerHandle,
    stopped: tokio::task::JoinHandle<Result<(), hub::HubError>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// On sled without a schema, else a cluster node `id` on `schema`.
    async fn start(
        args: &ClusterBenchArgs,
        payments: &str,
        schema: Option<&str>,
        id: &str,
    ) -> anyhow::Result<Node> {
        let dir = tempfile::tempdir().context("creating a hub's data dir")?;
        let mut s = hub::HubSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().to_path_buf(),
            ..hub::HubSettings::default()
        };
        s.payments.base_url = payments.to_string();
        if let Some(schema) = schema {
            s.storage = StorageKind::Cluster;
            s.cluster.postgres_url = SecretString::from(args.schema_url(schema));
            s.cluster.node_id = id.into();
            s.cluster.lease_ttl = args.lease_ttl;
            s.cluster.heartbeat_every = args.heartbeat_every;
        }
        let app = hub::Application::build(s, Arc::new(hub::clock::SystemClock))
            .await
            .with_context(|| format!("starting hub {id}"))?;
        let node = Node {
            id: id.into(),
            addr: app.address(),
            handle: app.handle(),
            server: app.server_handle(),
            stopped: actix_web::rt::spawn(app.run()),
            _dir: dir,
        };
        // Catalog and stock are cached per node: every node stores the same, idempotently.
        let (categories, products, stock) = catalog();
        node.handle
            .upsert_catalog(categories, products)
            .await
            .with_context(|| format!("storing the catalog on {id}"))?;
        node.handle
            .set_online_stock(stock)
            .await
            .with_context(|| format!("storing the stock on {id}"))?;
        Ok(node)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn owns_basket(&self, id: &str) -> anyhow::Result<bool> {
        let id: protocol::BasketId = id.parse().map_err(|_| anyhow!("bad basket id {id}"))?;
        let view = self
            .handle
            .ownership
            .as_ref()
            .context("not a cluster node")?;
        Ok(view
            .owner(hub::cluster::shard_of(&id))
            .is_some_and(|o| o.is_local()))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.server.stop(true).await;
        self.stopped
            .await
            .with_context(|| format!("hub {}'s task", self.id))?
            .with_context(|| format!("stopping hub {}", self.id))
    }
}

/// Until every shard has an owner and every node holds some, as each node sees it.
async fn settled(nodes: &[&Node]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = nodes.iter().all(|n| {
            n.handle.ownership.as_ref().is_some_and(|v| {
                let owners = v.owners();
                let held: usize = owners.values().map(Vec::len).sum();
                held == hub::cluster::SHARDS as usize
                    && nodes
                        .iter()
                        .all(|m| owners.get(&m.id).is_some_and(|s| !s.is_empty()))
            })
        });
        if done {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the nodes did not share the shards within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The benchmark's catalog: [`SKUS`] products with deep online stock.
fn catalog() -> (Vec<Category>, Vec<Product>, Vec<(Sku, i64)>) {
    let category = CategoryId("bench".into());
    let mut products = Vec::new();
    let mut stock = Vec::new();
    for sku in skus() {
        let Ok(parsed) = Sku::parse(&sku) else {
            continue;
        };
        products.push(Product {
            id: ProductId::new(),
            slug: sku.to_lowercase(),
            name: format!("Bench Blend {sku}"),
            brand: "Bench Roasters".into(),
            description: "A product of the cluster benchmark.".into(),
            category: category.clone(),
            tax_rate_bp: 700,
            tax_class: "reduced".into(),
            image: "/images/bench.svg".into(),
            variants: vec![Variant {
                sku: parsed.clone(),
                title: "500 g".into(),
                price: Money::new(1299, Currency::EUR),
                compare_at: None,
                barcode: None,
                weight_grams: 550,
            }],
            attributes: Default::default(),
        });
        stock.push((parsed, DEEP_STOCK));
    }
    let categories = vec![Category {
        id: category,
        name: "Bench".into(),
        description: "The cluster benchmark's products".into(),
        position: 1,
    }];
    (categories, products, stock)
}

fn skus() -> Vec<String> {
    (0..SKUS).map(|i| format!("BENCH-{i:02}")).collect()
}

fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .build()
        .context("building the HTTP client")
}

/// A 2xx answer's JSON, or the kind of failure.
async fn send(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let res = request.send().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".to_string()
        } else if e.is_connect() {
            "connect".to_string()
        } else {
            "transport".to_string()
        }
    })?;
    let status = res.status();
    let body = res.bytes().await.map_err(|_| "body".to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    serde_json::from_slice(&body).map_err(|_| "not JSON".to_string())
}

/// Sends `request`, recording its latency (or failure) in `stats`.
async fn timed(stats: &mut OpStats, request: reqwest::RequestBuilder) -> Result<Value, String> {
    let started = Instant::now();
    let answer = send(request).await;
    match &answer {
        Ok(_) => stats.record(Outcome::Ok(started.elapsed())),
        Err(kind) => stats.record(Outcome::Error(kind.clone())),
    }
    answer
}

/// An anonymous basket's id and token.
async fn new_basket(http: &reqwest::Client, base: &str) -> Result<(String, String), String> {
    let made = send(http.post(format!("{base}/api/v1/baskets"))).await?;
    match (made["id"].as_str(), made["token"].as_str()) {
        (Some(id), Some(token)) => Ok((id.to_string(), token.to_string())),
        _ => Err("a basket without id or token".into()),
    }
}

fn add_line(
    http: &reqwest::Client,
    base: &str,
    basket: &str,
    token: &str,
    sku: &str,
) -> reqwest::RequestBuilder {
    http.post(format!("{base}/api/v1/baskets/{basket}/lines"))
        .header(TOKEN_HEADER, token)
        .json(&json!({"sku": sku, "quantity": 1}))
}

/// One setup's figures.
struct Load {
    setup: &'static str,
    adds: OpStats,
    adds_took: Duration,
    checkout: OpStats,
    confirm: OpStats,
    orders: OpStats,
    orders_took: Duration,
    /// Failures before a timed call (making baskets, paying at the simulator).
    other_errors: u64,
}

impl Load {
    fn errors(&self) -> u64 {
        self.adds.errors
            + self.checkout.errors
            + self.confirm.errors
            + self.orders.errors
            + self.other_errors
    }
}

/// Requests go to the nodes in turn.
struct Nodes {
    bases: Vec<String>,
    next: AtomicUsize,
}

impl Nodes {
    fn pick(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        &self.bases[i]
    }
}

/// The adds, then the checkouts, with `--concurrency` clients.
async fn drive(
    args: &ClusterBenchArgs,
    nodes: &[&Node],
    payments: &str,
    setup: &'static str,
) -> anyhow::Result<Load> {
    let http = http()?;
    let nodes = Rc::new(Nodes {
        bases: nodes.iter().map(|n| n.base()).collect(),
        next: AtomicUsize::new(0),
    });
    // Warm-up, not measured: connections, the first activation of each node's actors.
    for _ in 0..nodes.bases.len() * 2 {
        let base = nodes.pick().to_string();
        let (id, token) = new_basket(&http, &base)
            .await
            .map_err(|e| anyhow!("{setup}: the warm-up's basket: {e}"))?;
        send(add_line(&http, &base, &id, &token, "BENCH-00"))
            .await
            .map_err(|e| anyhow!("{setup}: the warm-up's add: {e}"))?;
    }

    let tickets = Rc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.concurrency {
        let (http, nodes, tickets, total) =
            (http.clone(), nodes.clone(), tickets.clone(), args.adds);
        tasks.push(actix_web::rt::spawn(async move {
            let mut stats = OpStats::new()?;
            let mut other = 0u64;
            let skus = skus();
            let mut basket = None;
            while tickets.fetch_add(1, Ordering::Relaxed) < total {
                let (id, token) = match &basket {
                    Some(b) => b,
                    None => match new_basket(&http, nodes.pick()).await {
                        Ok(b) => basket.insert(b),
                        Err(_) => {
                            other += 1;
                            continue;
                        }
                    },
                };
                let sku = &skus[(c + stats.ok() as usize) % skus.len()];
                let _ = timed(&mut stats, add_line(&http, nodes.pick(), id, token, sku)).await;
            }
            anyhow::Ok((stats, other))
        }));
    }
    let mut adds = OpStats::new()?;
    let mut other_errors = 0;
    for task in tasks {
        let (stats, other) = task.await.context("an add client")??;
        adds.merge(&stats)?;
        other_errors += other;
    }
    let adds_took = started.elapsed();

    let tickets = Rc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.concurrency {
        let (http, nodes, tickets, total) =
            (http.clone(), nodes.clone(), tickets.clone(), args.checkouts);
        let sim = payments.to_string();
        tasks.push(actix_web::rt::spawn(async move {
            let mut figures = CheckoutFigures::new()?;
            let mut n = 0usize;
            while tickets.fetch_add(1, Ordering::Relaxed) < total {
                n += 1;
                figures
                    .one(
                        &http,
                        &nodes,
                        &sim,
                        &format!("bench-{c}-{n}@example.com"),
                        n,
                    )
                    .await;
            }
            anyhow::Ok(figures)
        }));
    }
    let mut checkout = OpStats::new()?;
    let mut confirm = OpStats::new()?;
    let mut orders = OpStats::new()?;
    for task in tasks {
        let figures = task.await.context("a checkout client")??;
        checkout.merge(&figures.checkout)?;
        confirm.merge(&figures.confirm)?;
        orders.merge(&figures.orders)?;
        other_errors += figures.other_errors;
    }
    Ok(Load {
        setup,
        adds,
        adds_took,
        checkout,
        confirm,
        orders,
        orders_took: started.elapsed(),
        other_errors,
    })
}

/// One checkout client's figures.
struct CheckoutFigures {
    /// Starting the checkout (stock held, a session opened at the provider).
    checkout: OpStats,
    /// Confirming the payment on the hub (it asks the provider, then makes the order). Sent to
    /// the node that made the basket: the hub does not forward `/api/v1/checkouts/…` to a
    /// basket's owner yet, and a non-owner answers it with a 503.
    confirm: OpStats,
    /// From starting the checkout to the paid order, the payment at the simulator included.
    orders: OpStats,
    other_errors: u64,
}

impl CheckoutFigures {
    fn new() -> anyhow::Result<CheckoutFigures> {
        Ok(CheckoutFigures {
            checkout: OpStats::new()?,
            confirm: OpStats::new()?,
            orders: OpStats::new()?,
            other_errors: 0,
        })
    }

    /// A basket with one line to its paid order; a failure is counted where it happened.
    async fn one(
        &mut self,
        http: &reqwest::Client,
        nodes: &Nodes,
        sim: &str,
        email: &str,
        n: usize,
    ) {
        // The node that makes a basket owns it (a new basket goes to one of its shards).
        let home = nodes.pick().to_string();
        let Ok((basket, token)) = new_basket(http, &home).await else {
            self.other_errors += 1;
            return;
        };
        let sku = &skus()[n % SKUS];
        if send(add_line(http, nodes.pick(), &basket, &token, sku))
            .await
            .is_err()
        {
            self.other_errors += 1;
            return;
        }
        let started = Instant::now();
        let start = http
            .post(format!("{}/api/v1/baskets/{basket}/checkout", nodes.pick()))
            .header(TOKEN_HEADER, &token)
            .json(&json!({
                "email": email,
                "address": {
                    "name": "Bench Shopper",
                    "line1": "Unter den Linden 1",
                    "city": "Berlin",
                    "postcode": "10117",
                    "country": "DE",
                },
                "shipping_method": "standard",
            }));
        let Ok(checkout) = timed(&mut self.checkout, start).await else {
            return;
        };
        let session = checkout["payment_url"]
            .as_str()
            .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
            .map(str::to_string);
        let (Some(id), Some(session)) = (checkout["id"].as_str(), session) else {
            self.other_errors += 1;
            return;
        };
        let pay = http
            .post(format!("{sim}/_sim/checkout/sessions/{session}/pay"))
            .json(&json!({"card": TEST_CARD}));
        if send(pay).await.is_err() {
            self.other_errors += 1;
            return;
        }
        let confirm = http
            .post(format!("{home}/api/v1/checkouts/{id}/confirm"))
            .header(TOKEN_HEADER, &token);
        match timed(&mut self.confirm, confirm).await {
            Ok(done) if done["state"] == "paid" => {
                self.orders.record(Outcome::Ok(started.elapsed()));
            }
            Ok(_) => self
                .orders
                .record(Outcome::Error("confirmed but not paid".into())),
            Err(_) => {}
        }
    }
}

/// Add-to-basket on the owner and on a non-owner.
struct Forwarding {
    owner_id: String,
    other_id: String,
    owner: OpStats,
    other: OpStats,
}

impl Forwarding {
    fn errors(&self) -> u64 {
        self.owner.errors + self.other.errors
    }
}

async fn forwarding(args: &ClusterBenchArgs, nodes: &[&Node]) -> anyhow::Result<Forwarding> {
    let http = http()?;
    let (basket, token) = new_basket(&http, &nodes[0].base())
        .await
        .map_err(|e| anyhow!("forwarding: making a basket: {e}"))?;
    let mut owner = None;
    let mut other = None;
    for n in nodes {
        if n.owns_basket(&basket)? {
            owner = owner.or(Some(*n));
        } else {
            other = other.or(Some(*n));
        }
    }
    let (Some(owner), Some(other)) = (owner, other) else {
        bail!("forwarding: basket {basket} has no owner, or no node that does not own it");
    };
    let mut on_owner = OpStats::new()?;
    let mut on_other = OpStats::new()?;
    let skus = skus();
    // Warm-up, not measured.
    for node in [owner, other, owner, other] {
        send(add_line(&http, &node.base(), &basket, &token, &skus[0]))
            .await
            .map_err(|e| anyhow!("forwarding: the warm-up on {}: {e}", node.id))?;
    }
    for i in 0..args.forwards {
        let sku = &skus[i % skus.len()];
        // Alternately first, so neither side always comes right after the other.
        let order = if i % 2 == 0 {
            [(owner, &mut on_owner), (other, &mut on_other)]
        } else {
            [(other, &mut on_other), (owner, &mut on_owner)]
        };
        for (node, stats) in order {
            let _ = timed(stats, add_line(&http, &node.base(), &basket, &token, sku)).await;
        }
    }
    ensure!(
        owner.owns_basket(&basket)?,
        "forwarding: basket {basket} moved away from {} during the measurement",
        owner.id
    );
    Ok(Forwarding {
        owner_id: owner.id.clone(),
        other_id: other.id.clone(),
        owner: on_owner,
        other: on_other,
    })
}

/// An `omnihub hub` process on the cluster storage.
struct Proc {
    id: String,
    base: String,
    child: Child,
}

impl Proc {
    fn spawn(
        exe: &Path,
        dir: &Path,
        args: &ClusterBenchArgs,
        schema: &str,
        id: &str,
    ) -> anyhow::Result<Proc> {
        let config = dir.join(format!("{id}.toml"));
        let data = dir.join(format!("{id}-data"));
        let log = dir.join(format!("{id}.log"));
        let toml = format!(
            "listen = \"127.0.0.1:0\"\n\
             data_dir = \"{}\"\n\
             storage = \"cluster\"\n\
             [cluster]\n\
             node_id = \"{id}\"\n\
             pool_size = 8\n\
             lease_ttl = \"{}ms\"\n\
             heartbeat_every = \"{}ms\"\n",
            data.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\""),
            args.lease_ttl.as_millis(),
            args.heartbeat_every.as_millis(),
        );
        std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
        let logfile =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = std::process::Command::new(exe)
            .arg("hub")
            .arg("--config")
            .arg(&config)
            // A secret (it may hold a password): from the environment, never in a file.
            .env("OMNIHUB_HUB_CLUSTER__POSTGRES_URL", args.schema_url(schema))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logfile.try_clone().context("the hub's log")?)
            .spawn()
            .with_context(|| format!("starting {} hub", exe.display()))?;
        let stdout = child.stdout.take().context("the hub's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the hub's stdout to its end: the listening line, then its log into the file.
        std::thread::spawn(move || {
            let mut logfile = logfile;
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("omnihub hub listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
                let _ = writeln!(logfile, "{line}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(base) = rx.try_recv() {
                return Ok(Proc {
                    id: id.into(),
                    base,
                    child,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "hub process {id} exited ({status}) before listening; its log:\n{}",
                    tail(&log)
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "hub process {id} did not listen within 60 s; its log:\n{}",
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Until exactly these processes hold every shard between them, each some (the lease table's
/// view).
async fn procs_settled(pg: &PgStorage, procs: &[Proc], within: Duration) -> anyhow::Result<()> {
    let ids: Vec<&str> = procs.iter().map(|p| p.id.as_str()).collect();
    failover::wait_for(pg, within, |held| {
        failover::all_held_by(held, &ids)
            && ids
                .iter()
                .all(|id| held.get(*id).is_some_and(|s| !s.is_empty()))
    })
    .await
    .context("the hub processes did not share the shards")?;
    Ok(())
}

/// The node holding a basket's shard, from the lease table.
async fn owner_of(pg: &PgStorage, basket: &str) -> anyhow::Result<Option<String>> {
    let id: protocol::BasketId = basket
        .parse()
        .map_err(|_| anyhow!("bad basket id {basket}"))?;
    let shard = hub::cluster::shard_of(&id);
    let held = failover::held_by(pg)
        .await
        .context("reading the shard leases")?;
    Ok(held
        .into_iter()
        .find(|(_, shards)| shards.contains(&shard))
        .map(|(owner, _)| owner))
}

/// One failover round's figures.
struct Round {
    killed: String,
    took: Duration,
    refused: usize,
    acknowledged: u64,
    kept: u64,
}

async fn failover(args: &ClusterBenchArgs, schema: &str) -> anyhow::Result<Vec<Round>> {
    let exe = match &args.hub_binary {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let dir = tempfile::tempdir().context("creating the hub processes' dir")?;
    let pg = PgStorage::open(&args.schema_url(schema), 2)
        .await
        .context("connecting to PostgreSQL")?;
    let mut procs: Vec<Proc> = Vec::new();
    let outcome = rounds(args, &exe, dir.path(), schema, &pg, &mut procs).await;
    for p in procs {
        p.kill();
    }
    pg.close().await;
    outcome.map_err(|e| {
        e.context(format!(
            "(hub process logs were in {})",
            dir.path().display()
        ))
    })
}

async fn rounds(
    args: &ClusterBenchArgs,
    exe: &Path,
    dir: &Path,
    schema: &str,
    pg: &PgStorage,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<Vec<Round>> {
    let settle_within = Duration::from_secs(60) + args.lease_ttl * 3;
    for i in 1..=3 {
        procs.push(Proc::spawn(exe, dir, args, schema, &format!("fail-{i}"))?);
    }
    procs_settled(pg, procs, settle_within).await?;
    let http = http()?;
    let mut done = Vec::new();
    for round in 0..args.failover_rounds {
        let maker = &procs[round % procs.len()];
        let (basket, token) = new_basket(&http, &maker.base)
            .await
            .map_err(|e| anyhow!("failover: making a basket on {}: {e}", maker.id))?;
        let owner = owner_of(pg, &basket)
            .await?
            .with_context(|| format!("failover: basket {basket}'s shard has no owner"))?;
        let owner_at = procs
            .iter()
            .position(|p| p.id == owner)
            .with_context(|| format!("failover: the owner {owner} is not one of the processes"))?;
        let via = procs[(owner_at + 1) % procs.len()].base.clone();
        let mut acknowledged = 0u64;
        for _ in 0..ADDS_BEFORE_KILL {
            send(add_line(&http, &via, &basket, &token, "BENCH-01"))
                .await
                .map_err(|e| anyhow!("failover: an add before the kill: {e}"))?;
            acknowledged += 1;
            tokio::time::sleep(FAILOVER_PACE).await;
        }
        let killed = procs.remove(owner_at);
        let killed_id = killed.id.clone();
        let mut child = killed.child;
        child.kill().context("killing the owner")?;
        let killed_at = Instant::now();
        let _ = child.wait();
        let give_up = killed_at + args.lease_ttl * 3 + Duration::from_secs(15);
        let mut refused = 0usize;
        let took = loop {
            match send(add_line(&http, &via, &basket, &token, "BENCH-01")).await {
                Ok(_) => {
                    acknowledged += 1;
                    break killed_at.elapsed();
                }
                Err(_) => refused += 1,
            }
            ensure!(
                Instant::now() < give_up,
                "failover: no add succeeded within {:?} of killing {killed_id}",
                give_up - killed_at
            );
            tokio::time::sleep(FAILOVER_PACE).await;
        };
        let read = send(
            http.get(format!("{via}/api/v1/baskets/{basket}"))
                .header(TOKEN_HEADER, &token),
        )
        .await
        .map_err(|e| anyhow!("failover: reading the basket after the failover: {e}"))?;
        let kept = read["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["sku"] == "BENCH-01")
            .filter_map(|l| l["quantity"].as_u64())
            .sum::<u64>();
        // Each refused add may have been applied without its answer arriving (a timeout), so
        // at most that many more; none fewer than acknowledged.
        ensure!(
            kept >= acknowledged && kept <= acknowledged + refused as u64,
            "failover: the basket holds {kept} units after {acknowledged} acknowledged adds \
             ({refused} refused)"
        );
        done.push(Round {
            killed: killed_id,
            took,
            refused,
            acknowledged,
            kept,
        });
        // fail-1..3 were the first three.
        let replacement = format!("fail-{}", round + 4);
        procs.push(Proc::spawn(exe, dir, args, schema, &replacement)?);
        procs_settled(pg, procs, settle_within).await?;
    }
    Ok(done)
}

fn ms(value: f64) -> String {
    format!("{value:.2}")
}

fn print_loads(loads: &[Load]) {
    println!();
    println!(
        "load (the same for each setup; cluster ×3: each request to the next node in turn, but \
         the payment confirm to the node that made the basket)"
    );
    println!(
        "  {:<22} {:<11} {:>9} {:>9} {:>10} {:>7}",
        "operation", "setup", "p50 ms", "p99 ms", "per s", "errors"
    );
    let rows = |l: &Load| {
        [
            Summary::of("add to basket", &l.adds, l.adds_took),
            Summary::of("checkout start", &l.checkout, l.orders_took),
            Summary::of("payment confirm", &l.confirm, l.orders_took),
            Summary::of("checkout → order", &l.orders, l.orders_took),
        ]
    };
    for op in 0..4 {
        for l in loads {
            let s = &rows(l)[op];
            println!(
                "  {:<22} {:<11} {:>9} {:>9} {:>10.1} {:>7}",
                s.name,
                l.setup,
                ms(s.p50_ms),
                ms(s.p99_ms),
                s.per_second,
                s.errors
            );
        }
    }
    let other: u64 = loads.iter().map(|l| l.other_errors).sum();
    if other > 0 {
        println!("  other failures (making baskets, paying at the simulator): {other}");
    }
    let Some(sled) = loads.iter().find(|l| l.setup == "sled") else {
        return;
    };
    println!();
    println!("ratio cluster / sled (latency above 1: slower; throughput below 1: slower)");
    println!(
        "  {:<22} {:<11} {:>9} {:>9} {:>10}",
        "operation", "setup", "p50", "p99", "per s"
    );
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}×", a / b)
        } else {
            "n/a".into()
        }
    };
    let base = rows(sled);
    for (op, b) in base.iter().enumerate() {
        for l in loads.iter().filter(|l| l.setup != "sled") {
            let s = &rows(l)[op];
            println!(
                "  {:<22} {:<11} {:>9} {:>9} {:>10}",
                s.name,
                l.setup,
                ratio(s.p50_ms, b.p50_ms),
                ratio(s.p99_ms, b.p99_ms),
                ratio(s.per_second, b.per_second)
            );
        }
    }
}

fn print_forwarding(f: &Forwarding, count: usize) {
    let window = Duration::from_secs(1);
    let owner = Summary::of("owner", &f.owner, window);
    let other = Summary::of("non-owner", &f.other, window);
    println!();
    println!(
        "forwarding (cluster ×3, add to basket, one request at a time, {count} to each, alternating)"
    );
    println!(
        "  to the owner ({})           p50 {:>7} ms   p99 {:>7} ms   errors {}",
        f.owner_id,
        ms(owner.p50_ms),
        ms(owner.p99_ms),
        owner.errors
    );
    println!(
        "  to a non-owner ({})         p50 {:>7} ms   p99 {:>7} ms   errors {}",
        f.other_id,
        ms(other.p50_ms),
        ms(other.p99_ms),
        other.errors
    );
    println!(
        "  forwarding cost                  p50 {:>+7.2} ms   p99 {:>+7.2} ms",
        other.p50_ms - owner.p50_ms,
        other.p99_ms - owner.p99_ms
    );
}

fn print_failover(rounds: &[Round], args: &ClusterBenchArgs) {
    println!();
    println!(
        "failover (3 hub processes, lease_ttl {:?}, heartbeat {:?}; SIGKILL of a basket's owner → \
         the first add that succeeds through a survivor, adds every {} ms)",
        args.lease_ttl,
        args.heartbeat_every,
        FAILOVER_PACE.as_millis()
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "  round {}: {:.2} s (killed {}; {} adds refused meanwhile; {} acknowledged, {} in the basket)",
            i + 1,
            r.took.as_secs_f64(),
            r.killed,
            r.refused,
            r.acknowledged,
            r.kept
        );
    }
    let mut took: Vec<Duration> = rounds.iter().map(|r| r.took).collect();
    took.sort();
    if let (Some(min), Some(max)) = (took.first(), took.last()) {
        let median = took[took.len() / 2];
        println!(
            "  failover time: min {:.2} s   median {:.2} s   max {:.2} s",
            min.as_secs_f64(),
            median.as_secs_f64(),
            max.as_secs_f64()
        );
    }
}
