//! Three real `omnihub hub` processes on one PostgreSQL (`storage = "cluster"`), each reaching
//! the database through a loopback TCP proxy this test owns, so a node can be cut off from the
//! database while it keeps serving HTTP:
//! - hammer: clients on all three nodes add to ONE basket at once; the basket ends up equal to
//!   the sequential model of the acknowledged adds (no lost update), and every add is
//!   acknowledged wherever it landed (forwarded to the owner);
//! - SIGKILL: the owner of the loaded baskets is killed while clients on the other two nodes
//!   keep adding and checking out; every acknowledged add is still there afterwards, no
//!   checkout has two orders, and the failover time is printed;
//! - partition: the owner's proxy stops routing while one of its writes is on the wire; its
//!   lease runs out, another node takes the shard and acknowledges adds; when routing comes
//!   back, the partitioned node's write (sealed with its old fencing token) reaches the
//!   database and is refused there (`omnihub_fenced_units_total`), and the basket is what the
//!   new owner acknowledged.
//!
//! Compiled with the `cluster-tests` feature; needs PostgreSQL at `OMNIHUB_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Each test makes a schema of its own;
//! dropping the cluster (also when a test fails) kills the processes and drops the schema.

#![cfg(feature = "cluster-tests")]

mod common;

use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

const SHARDS: i64 = hub::cluster::SHARDS as i64;

use hub::storage::postgres::testing::url as pg_url;

async fn pg(options: PgConnectOptions, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .expect("PostgreSQL answers (cluster-tests need it; .ci/run starts it)")
}

fn pg_options() -> PgConnectOptions {
    pg_url().parse().expect("a valid PostgreSQL URL")
}

use common::shop::eventually_that as eventually;

// ---------------------------------------------------------------------------------------------
// The proxy between a node and PostgreSQL.

/// What a proxy does with the bytes it carries.
#[derive(Clone, Default)]
struct Route {
    /// Nothing passes either way, and new connections wait: the node is cut off from the
    /// database. Its connections hang (as behind a dead switch) rather than fail.
    stopped: bool,
    /// Bytes from the node that contain this sequence wait until it is cleared, while
    /// everything else passes: holds one statement on its way to the database.
    hold: Option<Arc<Vec<u8>>>,
}

/// A loopback TCP proxy to PostgreSQL that forwards bytes until told otherwise.
struct Proxy {
    addr: SocketAddr,
    route: watch::Sender<Route>,
    /// Chunks held so far (see [`Route::hold`]).
    held: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the proxy");
        let addr = listener.local_addr().expect("bound");
        let (route, routes) = watch::channel(Route::default());
        let held = Arc::new(AtomicUsize::new(0));
        let counter = held.clone();
        let task = tokio::spawn(async move {
            // Dropped with the task: every link ends with the proxy.
            let mut links = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                links.spawn(link(inbound, upstream, routes.clone(), counter.clone()));
                while links.try_join_next().is_some() {}
            }
        });
        Proxy {
            addr,
            route,
            held,
            task,
        }
    }

    /// Cuts the node off from the database.
    fn stop_routing(&self) {
        self.route.send_modify(|r| r.stopped = true);
    }

    /// Routes everything again, held bytes included.
    fn restore(&self) {
        self.route.send_modify(|r| {
            r.stopped = false;
            r.hold = None;
        });
    }

    fn hold(&self, needle: Vec<u8>) {
        self.route.send_modify(|r| r.hold = Some(Arc::new(needle)));
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn link(
    inbound: TcpStream,
    upstream: SocketAddr,
    mut route: watch::Receiver<Route>,
    held: Arc<AtomicUsize>,
) {
    // A connection opened while routing is stopped waits, as one to an unreachable host.
    if route.wait_for(|r| !r.stopped).await.is_err() {
        return;
    }
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let (from_node, to_node) = inbound.into_split();
    let (from_db, to_db) = outbound.into_split();
    tokio::join!(
        pump(from_node, to_db, route.clone(), Some(held)),
        pump(from_db, to_node, route, None),
    );
}

/// Copies `from` to `to` while the route lets it; `held` counts the chunks held for the
/// route's hold sequence (on the node's side only).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut route: watch::Receiver<Route>,
    held: Option<Arc<AtomicUsize>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    // The end of the previous chunk, so a sequence split across two reads is still seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let mut seen = std::mem::take(&mut tail);
        seen.extend_from_slice(chunk);
        let needle = match &held {
            Some(_) => route.borrow().hold.clone(),
            None => None,
        };
        let holding = needle.filter(|n| seen.windows(n.len()).any(|w| w == n.as_slice()));
        if let (Some(_), Some(count)) = (&holding, &held) {
            count.fetch_add(1, Ordering::SeqCst);
        }
        tail = seen[seen.len().saturating_sub(64)..].to_vec();
        let open = route
            .wait_for(|r| !r.stopped && (holding.is_none() || r.hold != holding))
            .await
            .is_ok();
        if !open || to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// How PostgreSQL's extended protocol carries the binds `(shard, token)` of the fencing check
/// (`SELECT … FROM shard_leases WHERE shard = $1 … FOR SHARE` with `token = $2`): two int8
/// parameters in binary, each after its length.
fn fence_check_binds(shard: i64, token: i64) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&8i32.to_be_bytes());
    b.extend_from_slice(&shard.to_be_bytes());
    b.extend_from_slice(&8i32.to_be_bytes());
    b.extend_from_slice(&token.to_be_bytes());
    b
}

// ---------------------------------------------------------------------------------------------
// Hub processes.

/// Shard ownership timing of a cluster.
#[derive(Clone, Copy)]
struct Timing {
    lease_ttl: Duration,
    heartbeat_every: Duration,
}

impl Timing {
    /// Short leases: failovers within about 2.5 s.
    const FAST: Timing = Timing {
        lease_ttl: Duration::from_secs(2),
        heartbeat_every: Duration::from_millis(250),
    };
    /// Leases that survive a busy machine (no fault is injected with these).
    const STEADY: Timing = Timing {
        lease_ttl: Duration::from_secs(5),
        heartbeat_every: Duration::from_millis(500),
    };

    fn failover_bound(self) -> Duration {
        self.lease_ttl + self.heartbeat_every
    }
}

/// One `omnihub hub` process and its proxy to the database; killed when dropped.
struct Node {
    id: String,
    base: String,
    child: Child,
    proxy: Proxy,
    log: PathBuf,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no hand-over, no goodbye.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of an unlabelled counter on the node's `/metrics`.
    async fn counter(&self, http: &reqwest::Client, name: &str) -> f64 {
        let text = http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} is not on {}'s /metrics", self.id))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Extra settings for the nodes (`OMNIHUB_HUB_*` variables).
type Env = Vec<(String, String)>;

/// Three hub nodes on a schema of their own.
struct Cluster {
    schema: String,
    timing: Timing,
    /// This test's own connections to the schema (not through any proxy).
    db: PgPool,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(timing: Timing, env: Env) -> Cluster {
        let schema = format!(
            "t_procs_{}_{}",
            std::process::id(),
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let admin = pg(pg_options(), 1).await;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .expect("schema made");
        admin.close().await;
        let db = pg(pg_options().options([("search_path", schema.as_str())]), 4).await;
        // From here on, dropping the cluster drops the schema.
        let mut cluster = Cluster {
            schema,
            timing,
            db,
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        // The first node loads the demo catalog and stock; the others read them at start.
        let first = cluster.spawn("node-a", true, &env).await;
        cluster.nodes.push(first);
        for id in ["node-b", "node-c"] {
            let node = cluster.spawn(id, false, &env).await;
            cluster.nodes.push(node);
        }
        cluster.settled(&["node-a", "node-b", "node-c"]).await;
        cluster
    }

    async fn spawn(&self, id: &str, demo: bool, env: &Env) -> Node {
        let options = pg_options();
        let upstream: SocketAddr = format!("{}:{}", options.get_host(), options.get_port())
            .parse()
            .expect("PostgreSQL on a loopback address (the proxy connects to it)");
        let proxy = Proxy::start(upstream).await;
        let mut url = reqwest::Url::parse(&pg_url()).expect("a valid PostgreSQL URL");
        url.set_port(Some(proxy.addr.port())).expect("a port");
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.query_pairs_mut()
            .append_pair("options", &format!("-c search_path={}", self.schema));
        let data = self.dir.path().join(id);
        let log = self.dir.path().join(format!("{id}.log"));
        let stderr = std::fs::File::create(&log).expect("a log file");
        let stdout = stderr.try_clone().expect("the log file again");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnihub"));
        cmd.arg("hub")
            .env("OMNIHUB_HUB_LISTEN", "127.0.0.1:0")
            .env("OMNIHUB_HUB_DATA_DIR", &data)
            .env("OMNIHUB_HUB_DEMO_DATA", demo.to_string())
            .env("OMNIHUB_HUB_CACHE_MB", "16")
            .env("OMNIHUB_HUB_WORKERS", "2")
            .env("OMNIHUB_HUB_ACTOR_THREADS", "2")
            .env("OMNIHUB_HUB_STORAGE", "cluster")
            .env("OMNIHUB_HUB_CLUSTER__POSTGRES_URL", url.as_str())
            .env("OMNIHUB_HUB_CLUSTER__NODE_ID", id)
            .env("OMNIHUB_HUB_CLUSTER__POOL_SIZE", "8")
            .env(
                "OMNIHUB_HUB_CLUSTER__LEASE_TTL",
                format!("{}ms", self.timing.lease_ttl.as_millis()),
            )
            .env(
                "OMNIHUB_HUB_CLUSTER__HEARTBEAT_EVERY",
                format!("{}ms", self.timing.heartbeat_every.as_millis()),
            )
            // Nothing listens on the discard port: deliveries wait, nothing leaves the test.
            .env("OMNIHUB_HUB_PAYMENTS__BASE_URL", "http://127.0.0.1:9")
            .env("OMNIHUB_HUB_OMS__BASE_URL", "http://127.0.0.1:9")
            .env("OMNIHUB_HUB_EMAIL__PORT", "9")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("omnihub starts");
        let base = tokio::task::block_in_place(|| listening_line(&mut child, stdout));
        let node = Node {
            id: id.to_string(),
            base,
            child,
            proxy,
            log,
        };
        let http = client();
        eventually(Duration::from_secs(60), "the node is ready", || async {
            let res = http.get(node.url("/readyz")).send().await.ok()?;
            res.status().is_success().then_some(())
        })
        .await;
        node
    }

    fn node(&self, id: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Entity shards held (unexpired) per node, as the database has them.
    async fn held(&self) -> BTreeMap<String, i64> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT owner, count(*) FROM shard_leases \
             WHERE expires_at > now() AND shard < $1 GROUP BY owner",
        )
        .bind(SHARDS)
        .fetch_all(&self.db)
        .await
        .expect("leases read");
        rows.into_iter().collect()
    }

    /// Until exactly `ids` hold every entity shard between them, each some.
    async fn settled(&self, ids: &[&str]) -> BTreeMap<String, i64> {
        let within = self.timing.failover_bound() * 8;
        eventually(within, "the shards settle on the live nodes", || async {
            let held = self.held().await;
            let fair = held.len() == ids.len()
                && ids.iter().all(|id| held.get(*id).is_some_and(|&n| n > 0))
                && held.values().sum::<i64>() == SHARDS;
            fair.then_some(held)
        })
        .await
    }

    /// The node holding `basket`'s shard and its fencing token, as the database has them.
    async fn owner(&self, basket: &str) -> Option<(String, i64)> {
        sqlx::query_as(
            "SELECT owner, token FROM shard_leases WHERE shard = $1 AND expires_at > now()",
        )
        .bind(shard(basket))
        .fetch_optional(&self.db)
        .await
        .expect("lease read")
    }

    /// The last lines of each node's log (shown when a test fails).
    fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} ({} log lines)\n", n.id, lines.len()));
            for l in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // Processes first (their connections end), then the proxies, then the schema.
        for n in &mut self.nodes {
            n.kill();
        }
        self.nodes.clear();
        let schema = self.schema.clone();
        // A runtime of its own: this may run on the test's runtime thread, which cannot block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let admin = pg(pg_options(), 1).await;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&admin)
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("schema {} not dropped: {dropped:?}", self.schema);
        }
    }
}

/// Copies the node's stdout (its log lines) into `log`, and answers the address from the line
/// that tells it (within a deadline).
fn listening_line(child: &mut Child, mut log: std::fs::File) -> String {
    use std::io::{BufRead, Write};
    const PREFIX: &str = "omnihub hub listening on ";
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix(PREFIX) {
                let _ = tx.send(rest.trim().to_string());
            }
            let _ = writeln!(log, "{line}");
        }
    });
    let within = Duration::from_secs(120);
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("no line '{PREFIX}…' within {within:?}"))
}

// ---------------------------------------------------------------------------------------------
// Shoppers.

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn shard(basket: &str) -> i64 {
    let id: protocol::BasketId = basket.parse().expect("a basket id");
    hub::cluster::shard_of(&id) as i64
}

#[derive(Clone, Debug)]
struct Basket {
    id: String,
    token: String,
}

async fn new_basket(http: &reqwest::Client, node: &Node) -> Basket {
    let res = http
        .post(node.url("/api/v1/baskets"))
        .send()
        .await
        .expect("sent");
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert!(
        status.is_success(),
        "a basket on {}: {status} {body}",
        node.id
    );
    Basket {
        id: body["id"].as_str().expect("an id").into(),
        token: body["token"].as_str().expect("a token").into(),
    }
}

/// What came of a request.
#[derive(Debug)]
enum Outcome {
    /// 2xx: the change is acknowledged.
    Acked,
    /// 4xx: refused, nothing changed.
    Refused(u16, String),
    /// 5xx or no answer: perhaps applied, perhaps not.
    Unknown(String),
}

async fn add(http: &reqwest::Client, base: &str, basket: &Basket, sku: &str) -> Outcome {
    let res = http
        .post(format!("{base}/api/v1/baskets/{}/lines", basket.id))
        .header("x-basket-token", &basket.token)
        .json(&json!({"sku": sku, "quantity": 1}))
        .send()
        .await;
    let res = match res {
        Ok(r) => r,
        Err(e) => return Outcome::Unknown(e.to_string()),
    };
    let status = res.status().as_u16();
    let body = res.text().await.unwrap_or_default();
    match status {
        200..=299 => Outcome::Acked,
        400..=499 => Outcome::Refused(status, body),
        _ => Outcome::Unknown(format!("{status} {body}")),
    }
}

/// Whether a `503` says the request was not applied: the shard was moving, or the node it was
/// forwarded to no longer owned it (and does not forward twice). Anything else may have been.
fn not_applied(outcome: &Outcome) -> bool {
    let Outcome::Unknown(text) = outcome else {
        return false;
    };
    let Some(body) = text.strip_prefix("503 ") else {
        return false;
    };
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
    matches!(code.as_deref(), Some("not_owner" | "shard_moving"))
}

/// [`add`], tried again (for up to `within`) while the answer says it was not applied.
async fn add_until_applied(
    http: &reqwest::Client,
    node: &Node,
    basket: &Basket,
    sku: &str,
    within: Duration,
) -> Outcome {
    let deadline = Instant::now() + within;
    loop {
        let outcome = add(http, &node.base, basket, sku).await;
        if !not_applied(&outcome) || Instant::now() >= deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A basket's lines as SKU → quantity, read through `node` (a read is tried again while it
/// gets `503`: a shard moving right now).
async fn lines(http: &reqwest::Client, node: &Node, basket: &Basket) -> BTreeMap<String, i64> {
    let url = node.url(&format!("/api/v1/baskets/{}", basket.id));
    let what = format!("a read of basket {} on {}", basket.id, node.id);
    eventually(Duration::from_secs(20), &what, || async {
        let res = http
            .get(&url)
            .header("x-basket-token", &basket.token)
            .send()
            .await
            .ok()?;
        let status = res.status();
        let body: Value = res.json().await.ok()?;
        if status == 503 {
            return None;
        }
        assert!(status.is_success(), "{what}: {status} {body}");
        Some(lines_of(&body))
    })
    .await
}

fn lines_of(view: &Value) -> BTreeMap<String, i64> {
    view["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["sku"].as_str().unwrap_or_default().to_string(),
                l["quantity"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// SKUs of the demo catalog with at least `stock` units available online.
async fn stocked(http: &reqwest::Client, node: &Node, stock: i64, want: usize) -> Vec<String> {
    let list: Value = http
        .get(node.url("/api/v1/products?limit=100&category=pantry"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let mut out = Vec::new();
    for item in list["items"].as_array().expect("items") {
        let slug = item["slug"].as_str().expect("slug");
        let detail: Value = http
            .get(node.url(&format!("/api/v1/products/{slug}")))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        for v in detail["variants"].as_array().expect("variants") {
            if v["available"].as_i64().unwrap_or(0) >= stock {
                out.push(v["sku"].as_str().expect("sku").to_string());
            }
        }
        if out.len() >= want {
            break;
        }
    }
    assert!(
        out.len() >= want,
        "{want} SKUs with {stock} in stock: {out:?}"
    );
    out.truncate(want);
    out
}

/// Starts a checkout of `basket` through `via` and pays it at the payment simulator `sim`;
/// answers the checkout id. A start whose outcome is unknown (`5xx`, no answer) is tried again
/// until `deadline`: if it did start a checkout, the basket is locked by it (`409`) and names it.
async fn check_out_and_pay(
    http: &reqwest::Client,
    via: &str,
    sim: &str,
    basket: &Basket,
    deadline: Instant,
) -> String {
    let body = json!({
        "email": "guest@example.com",
        "address": {"name": "Ada Lovelace", "line1": "Unter den Linden 1", "city": "Berlin",
                    "postcode": "10117", "country": "DE"},
        "shipping_method": "standard",
    });
    let checkout: Value = loop {
        let res = http
            .post(format!("{via}/api/v1/baskets/{}/checkout", basket.id))
            .header("x-basket-token", &basket.token)
            .json(&body)
            .send()
            .await;
        let answer = match res {
            Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
            Err(_) => None,
        };
        match answer {
            Some((201, text)) => break serde_json::from_str(&text).expect("a checkout"),
            Some((409, _)) => {
                let view: Value = http
                    .get(format!("{via}/api/v1/baskets/{}", basket.id))
                    .header("x-basket-token", &basket.token)
                    .send()
                    .await
                    .expect("sent")
                    .json()
                    .await
                    .expect("json");
                break view["checkout"].clone();
            }
            Some((status @ 400..=499, text)) => panic!("checkout refused: {status} {text}"),
            other => assert!(
                Instant::now() < deadline,
                "no checkout of {} by the deadline: {other:?}",
                basket.id
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = checkout["id"].as_str().expect("a checkout id").to_string();
    let session = checkout["payment_url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("a payment URL")
        .to_string();
    let paid = http
        .post(format!("{sim}/_sim/checkout/sessions/{session}/pay"))
        .json(&json!({"card": "4242424242424242"}))
        .send()
        .await
        .expect("the simulator answers");
    assert!(paid.status().is_success(), "paid: {}", paid.status());
    id
}

/// Orders per checkout id, from the admin API of `node`.
async fn orders_per_checkout(http: &reqwest::Client, node: &Node) -> BTreeMap<String, usize> {
    let body: Value = http
        .get(node.url("/api/v1/admin/orders?limit=200"))
        .bearer_auth(common::shop::ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for o in body["orders"].as_array().into_iter().flatten() {
        *per.entry(o["checkout"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    per
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_basket_hammered_from_three_nodes_equals_the_sequential_model() {
    const CLIENTS_PER_NODE: usize = 4;
    const ADDS_PER_CLIENT: usize = 25;
    let cluster = Cluster::start(Timing::STEADY, Env::new()).await;
    let http = client();
    let skus = Arc::new(stocked(&http, &cluster.nodes[0], 40, 20).await);
    let basket = new_basket(&http, &cluster.nodes[0]).await;
    let (owner, _) = cluster.owner(&basket.id).await.expect("an owned shard");

    let started = Instant::now();
    let mut clients = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for c in 0..CLIENTS_PER_NODE {
            let (http, base, basket, skus) = (
                http.clone(),
                node.base.clone(),
                basket.clone(),
                skus.clone(),
            );
            let id = n * CLIENTS_PER_NODE + c;
            clients.push(tokio::spawn(async move {
                let mut acked: Vec<String> = Vec::new();
                for i in 0..ADDS_PER_CLIENT {
                    let sku = &skus[(id * 7 + i) % skus.len()];
                    match add(&http, &base, &basket, sku).await {
                        Outcome::Acked => acked.push(sku.clone()),
                        other => panic!("add {i} of client {id} via {base}: {other:?}"),
                    }
                }
                acked
            }));
        }
    }
    // The sequential model: adds of one unit commute, so any order of the acknowledged adds
    // gives the same basket.
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    for c in clients {
        for sku in c.await.expect("a client ran") {
            *model.entry(sku).or_default() += 1;
        }
    }
    let took = started.elapsed();
    let total: i64 = model.values().sum();
    assert_eq!(
        total,
        (cluster.nodes.len() * CLIENTS_PER_NODE * ADDS_PER_CLIENT) as i64
    );
    for node in &cluster.nodes {
        assert_eq!(
            lines(&http, node, &basket).await,
            model,
            "the basket read on {} (owner {owner})",
            node.id
        );
    }
    println!(
        "hammer: {total} adds from {} clients on 3 nodes to one basket owned by {owner} in {took:?}; \
         the basket equals the model",
        cluster.nodes.len() * CLIENTS_PER_NODE
    );
}

/// Per basket and SKU: adds acknowledged, and adds whose outcome is unknown.
#[derive(Default)]
struct Tally {
    acked: BTreeMap<(String, String), i64>,
    unknown: BTreeMap<(String, String), i64>,
    /// When each basket last had an add acknowledged.
    last_ack: BTreeMap<String, Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_mid_load_loses_no_acknowledged_add() {
    const BASKETS: usize = 4;
    const CHECKOUTS: usize = 3;
    const MAX_ADDS_PER_WORKER: usize = 150;
    let sim = common::shop::start_payments();
    let env: Env = [
        ("OMNIHUB_HUB_PAYMENTS__BASE_URL", sim.base.as_str()),
        ("OMNIHUB_HUB_PAYMENTS__SECRET_KEY", common::shop::SECRET_KEY),
        (
            "OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET",
            common::shop::WEBHOOK_SECRET,
        ),
        ("OMNIHUB_HUB_ADMIN_TOKEN", common::shop::ADMIN_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut cluster = Cluster::start(Timing::FAST, env).await;
    let http = client();
    let victim = cluster.nodes[0].id.clone();
    let survivors: Vec<String> = cluster.nodes[1..].iter().map(|n| n.id.clone()).collect();
    let skus = Arc::new(stocked(&http, &cluster.nodes[0], 60, 10).await);

    // Baskets made on the victim live in its shards (a node makes new ids in its own shards).
    let mut baskets = Vec::new();
    for _ in 0..BASKETS {
        let b = new_basket(&http, cluster.node(&victim)).await;
        let (owner, _) = cluster.owner(&b.id).await.expect("an owned shard");
        assert_eq!(owner, victim, "a basket made on {victim} is in its shards");
        baskets.push(b);
    }

    // Baskets to check out, one line each; the payment events go to both survivors (the one
    // that does not own the basket refuses them until the provider's retry finds the owner).
    let mut to_check_out = Vec::new();
    for _ in 0..CHECKOUTS {
        let b = new_basket(&http, cluster.node(&victim)).await;
        assert!(matches!(
            add(&http, &cluster.node(&survivors[0]).base, &b, &skus[0]).await,
            Outcome::Acked
        ));
        to_check_out.push(b);
    }
    for s in &survivors {
        common::shop::register_webhook(&http, &sim.base, &cluster.node(s).base).await;
    }

    // Clients on the survivors add to the victim's baskets (forwarded to it) until told to stop.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for (i, basket) in baskets.iter().enumerate() {
        for (w, via) in survivors.iter().enumerate() {
            let (http, base, basket, skus, tally, stopped) = (
                http.clone(),
                cluster.node(via).base.clone(),
                basket.clone(),
                skus.clone(),
                tally.clone(),
                stopped.clone(),
            );
            workers.push(tokio::spawn(async move {
                for n in 0..MAX_ADDS_PER_WORKER {
                    if *stopped.borrow() {
                        break;
                    }
                    let sku = skus[(i * 3 + w + n) % skus.len()].clone();
                    let outcome = add(&http, &base, &basket, &sku).await;
                    let key = (basket.id.clone(), sku);
                    let failed = {
                        let mut t = tally.lock().expect("tally");
                        match outcome {
                            Outcome::Acked => {
                                *t.acked.entry(key).or_default() += 1;
                                t.last_ack.insert(basket.id.clone(), Instant::now());
                                false
                            }
                            Outcome::Unknown(_) => {
                                *t.unknown.entry(key).or_default() += 1;
                                true
                            }
                            Outcome::Refused(status, body) => {
                                panic!("an add refused with {status}: {body}")
                            }
                        }
                    };
                    if failed {
                        // A client backs off a little while the shard moves.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
    }

    // Checkouts through the survivors: one before the kill, the others as soon as it happened
    // (while the failover runs) and after.
    let (killing, kill_seen) = watch::channel(false);
    let checkouts = {
        let (http, via, sim, baskets, mut kill_seen) = (
            http.clone(),
            cluster.node(&survivors[1]).base.clone(),
            sim.base.clone(),
            to_check_out.clone(),
            kill_seen.clone(),
        );
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for (i, b) in baskets.iter().enumerate() {
                if i == 1 {
                    let _ = kill_seen.wait_for(|k| *k).await;
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                ids.push(check_out_and_pay(&http, &via, &sim, b, deadline).await);
            }
            ids
        })
    };

    // Kill once the load is well under way.
    let acked = || tally.lock().expect("tally").acked.values().sum::<i64>();
    eventually(
        Duration::from_secs(30),
        "adds acknowledged before the kill",
        || async { (acked() >= 40).then_some(()) },
    )
    .await;
    let before_kill = acked();
    cluster.node_mut(&victim).kill();
    let killed = Instant::now();
    killing.send_replace(true);
    // Every basket takes adds again, and the survivors hold every shard.
    eventually(
        cluster.timing.failover_bound() * 8,
        "every basket acknowledges adds after the kill",
        || async {
            let t = tally.lock().expect("tally");
            baskets
                .iter()
                .all(|b| t.last_ack.get(&b.id).is_some_and(|at| *at > killed))
                .then_some(())
        },
    )
    .await;
    let serving = killed.elapsed();
    let survivor_ids: Vec<&str> = survivors.iter().map(String::as_str).collect();
    cluster.settled(&survivor_ids).await;
    let shards_moved = killed.elapsed();
    let after_failover = acked();
    eventually(
        Duration::from_secs(30),
        "adds after the failover",
        || async { (acked() >= after_failover + 20).then_some(()) },
    )
    .await;
    stop.send_replace(true);
    for w in workers {
        w.await.expect("a worker ran");
    }

    // Every paid checkout has exactly one order.
    let paid = checkouts.await.expect("the checkouts ran");
    let reader = cluster.node(&survivors[0]);
    let orders = eventually(
        Duration::from_secs(40),
        "an order for every paid checkout",
        || async {
            let per = orders_per_checkout(&http, reader).await;
            paid.iter().all(|c| per.contains_key(c)).then_some(per)
        },
    )
    .await;
    for c in &paid {
        assert_eq!(
            orders.get(c),
            Some(&1),
            "orders of checkout {c}: {orders:?}"
        );
    }
    assert_eq!(orders.len(), paid.len(), "no other orders: {orders:?}");

    // The workers are done: the tally is final.
    let t = std::mem::take(&mut *tally.lock().expect("tally"));
    let mut checked = 0;
    for b in &baskets {
        let got = lines(&http, reader, b).await;
        for sku in skus.iter() {
            let key = (b.id.clone(), sku.clone());
            let acked = t.acked.get(&key).copied().unwrap_or(0);
            let unknown = t.unknown.get(&key).copied().unwrap_or(0);
            let have = got.get(sku).copied().unwrap_or(0);
            assert!(
                acked <= have && have <= acked + unknown,
                "basket {} {sku}: {acked} acknowledged, {unknown} unknown, {have} in the basket",
                b.id
            );
            checked += acked;
        }
        assert!(
            got.keys().all(|s| skus.contains(s)),
            "only SKUs that were added: {got:?}"
        );
    }
    let unknown: i64 = t.unknown.values().sum();
    println!(
        "SIGKILL of {victim}: {} checkouts paid, one order each; \
         {before_kill} adds acknowledged before the kill, {checked} in all, \
         {unknown} with an unknown outcome (refused or cut off during the failover); every \
         basket taking adds again {serving:?} after the kill, every shard on the survivors \
         after {shards_moved:?} (lease_ttl + heartbeat_every = {:?})",
        paid.len(),
        cluster.timing.failover_bound()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_owners_stale_write_is_refused_by_the_database() {
    let cluster = Cluster::start(Timing::FAST, Env::new()).await;
    let http = client();
    let skus = stocked(&http, &cluster.nodes[0], 40, 6).await;
    let (stale_sku, skus) = skus.split_last().expect("skus");
    let victim = &cluster.nodes[0];
    let basket = new_basket(&http, victim).await;
    let (owner, token) = cluster.owner(&basket.id).await.expect("an owned shard");
    assert_eq!(owner, victim.id, "a basket made on a node is in its shards");

    // Acknowledged adds through every node.
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let sku = &skus[i];
        match add(&http, &node.base, &basket, sku).await {
            Outcome::Acked => *model.entry(sku.clone()).or_default() += 1,
            other => panic!("add via {}: {other:?}", node.id),
        }
    }
    let fenced = "omnihub_fenced_units_total";
    assert_eq!(victim.counter(&http, fenced).await, 0.0);

    // The victim's next unit for the basket's shard is held on its way to the database (the
    // link breaks just then), then the victim is cut off from the database altogether.
    victim
        .proxy
        .hold(fence_check_binds(shard(&basket.id), token));
    let stale = {
        let (http, base, basket, sku) = (
            http.clone(),
            victim.base.clone(),
            basket.clone(),
            stale_sku.clone(),
        );
        tokio::spawn(async move { add(&http, &base, &basket, &sku).await })
    };
    eventually(
        Duration::from_secs(10),
        "the victim's write is on the wire with its fencing token",
        || async { (victim.proxy.held() > 0).then_some(()) },
    )
    .await;
    victim.proxy.stop_routing();
    let cut = Instant::now();

    // Its lease runs out; another node takes the shard with a newer token.
    let (new_owner, new_token) = eventually(
        cluster.timing.failover_bound() * 8,
        "another node takes the shard",
        || async {
            cluster
                .owner(&basket.id)
                .await
                .filter(|(o, _)| *o != victim.id)
        },
    )
    .await;
    let took = cut.elapsed();
    assert!(new_token > token, "{new_token} after {token}");
    let others: Vec<&Node> = cluster.nodes.iter().filter(|n| n.id != victim.id).collect();
    for (i, node) in others.iter().enumerate() {
        let sku = &skus[3 + i];
        // A node whose view still names the victim gets `not_owner` from it: tried again.
        let within = cluster.timing.failover_bound() * 2;
        match add_until_applied(&http, node, &basket, sku, within).await {
            Outcome::Acked => *model.entry(sku.clone()).or_default() += 1,
            other => panic!("add via {} after the takeover: {other:?}", node.id),
        }
    }
    assert!(
        !stale.is_finished(),
        "the victim's write waits for the database"
    );

    // Routing comes back: the held unit reaches the database with the old token.
    victim.proxy.restore();
    let outcome = tokio::time::timeout(Duration::from_secs(30), stale)
        .await
        .expect("the stale write is answered once the link is back")
        .expect("the stale write ran");
    assert!(
        matches!(&outcome, Outcome::Unknown(e) if e.starts_with("503")),
        "the stale write is refused: {outcome:?}"
    );
    let refused = victim.counter(&http, fenced).await;
    assert!(
        refused >= 1.0,
        "the database refused the victim's unit for its stale token ({fenced} {refused})"
    );
    let log = std::fs::read_to_string(&victim.log).expect("the victim's log");
    assert!(
        log.contains("its fencing token is no longer the shard's current one"),
        "the refusal is logged"
    );
    // The basket is what the new owner acknowledged, wherever it is read (once the victim,
    // back in touch, has its share of the shards again).
    cluster.settled(&["node-a", "node-b", "node-c"]).await;
    // And every node, the victim included, goes on from there.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let sku = &skus[i];
        let within = cluster.timing.failover_bound() * 2;
        match add_until_applied(&http, node, &basket, sku, within).await {
            Outcome::Acked => *model.entry(sku.clone()).or_default() += 1,
            other => panic!("add via {} after the partition: {other:?}", node.id),
        }
    }
    for node in &cluster.nodes {
        assert_eq!(
            lines(&http, node, &basket).await,
            model,
            "the basket read on {}",
            node.id
        );
    }
    println!(
        "partition of {}: {new_owner} took the shard (token {token} -> {new_token}) {took:?} after \
         the cut; the stale write came back as {outcome:?} and the database counted it fenced",
        victim.id
    );
}
