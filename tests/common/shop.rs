//! A shop for the checkout suites: the payment simulator as a real `omnihub sim payments`
//! process, and a hub in this process (so a test can drive its clock and its stock) with a
//! small known catalog, wired together the way a deployment is: the hub calls the simulator's
//! API, the simulator posts signed webhooks to the hub.
//!
//! The hub is one node on sled, or — built with the `cluster-tests` feature and run with
//! `OMNIHUB_TEST_SHOP=cluster` — three nodes on one fresh PostgreSQL schema (`storage =
//! "cluster"`, on a thread of their own, stopped and the schema dropped when the shop is
//! dropped): [`Shop::url`] spreads requests over the nodes round-robin, starting at the second
//! node, and the provider's webhooks go to the first node — so a test's first basket (made by
//! its first request) is another node's, and so are about two thirds of all checkouts.

use hub::clock::ManualClock;
use hub::{Application, HubHandle, HubSettings};
use protocol::{Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const SECRET_KEY: &str = "sk_test_omnihub";
pub const WEBHOOK_SECRET: &str = "whsec_e2e_secret";
pub const ADMIN_TOKEN: &str = "admin-e2e-token";

/// A running `omnihub sim payments`; killed when dropped.
pub struct SimProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `omnihub <args>` and waits for the stdout line starting with `prefix`; answers the
/// process and the rest of that line.
pub fn start_process(args: &[&str], prefix: &'static str) -> (SimProcess, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omnihub"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the simulator starts");
    let rest = super::listening_line(&mut child, prefix, Duration::from_secs(60));
    (
        SimProcess {
            child,
            base: rest.clone(),
        },
        rest,
    )
}

/// Starts the OMS, the carrier (stepping every second) and the mail sink, sending their
/// webhooks to the hub at `hub`.
pub fn start_partners(hub: &str) -> Partners {
    let (mut mail, line) = start_process(
        &[
            "sim",
            "mail",
            "--smtp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
        "omnihub sim mail: SMTP on ",
    );
    // "127.0.0.1:P, inbox on http://127.0.0.1:Q/"
    let (smtp, inbox) = line.split_once(", inbox on ").expect("the mail line");
    mail.base = smtp.to_string();
    let inbox = inbox.trim_end_matches('/').to_string();
    let (logistics, _) = start_process(
        &[
            "sim",
            "logistics",
            "--listen",
            "127.0.0.1:0",
            "--step",
            "1s",
            "--webhook-url",
            &format!("{hub}/webhooks/logistics"),
        ],
        "logistics simulator listening on ",
    );
    let (oms, _) = start_process(
        &[
            "sim",
            "oms",
            "--listen",
            "127.0.0.1:0",
            "--step",
            "1s",
            "--webhook-url",
            &format!("{hub}/webhooks/oms"),
            "--logistics-url",
            &logistics.base,
        ],
        "oms simulator listening on ",
    );
    Partners {
        oms,
        logistics,
        mail,
        inbox,
    }
}

/// Registers the hub's payment webhook endpoint at the payment simulator (Stripe's
/// `POST /v1/webhook_endpoints`; the simulator signs with the secret it was started with).
pub async fn register_webhook(client: &reqwest::Client, payments: &str, hub: &str) {
    let res = client
        .post(format!("{payments}/v1/webhook_endpoints"))
        .bearer_auth(SECRET_KEY)
        .form(&[
            ("url", format!("{hub}/webhooks/payments")),
            ("enabled_events[]", "*".to_string()),
        ])
        .send()
        .await
        .expect("sent");
    assert!(
        res.status().is_success(),
        "webhook endpoint: {}",
        res.status()
    );
}

/// Starts the payment simulator on port 0 and waits for the line with its address.
pub fn start_payments() -> SimProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omnihub"))
        .args(["sim", "payments", "--listen", "127.0.0.1:0"])
        .args([
            "--secret-key",
            SECRET_KEY,
            "--webhook-secret",
            WEBHOOK_SECRET,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the simulator starts");
    let base = super::listening_line(
        &mut child,
        "payments simulator listening on ",
        Duration::from_secs(60),
    );
    SimProcess { child, base }
}

/// Knobs of a test shop.
pub struct ShopOptions {
    pub hold_for: Duration,
    pub reconcile_after: Duration,
    pub release_after_provider_down: Duration,
    pub attempts_per_basket: u32,
    /// Also start the OMS, the carrier and the mail sink as processes, wired to the hub.
    pub fulfilment: bool,
    /// Outbox attempts before a dead letter.
    pub outbox_max_attempts: u32,
}

impl Default for ShopOptions {
    fn default() -> Self {
        ShopOptions {
            hold_for: Duration::from_secs(15 * 60),
            reconcile_after: Duration::from_secs(60),
            release_after_provider_down: Duration::from_secs(120),
            attempts_per_basket: 10,
            fulfilment: false,
            outbox_max_attempts: 10,
        }
    }
}

/// The fulfilment partners of a shop, as processes.
pub struct Partners {
    pub oms: SimProcess,
    pub logistics: SimProcess,
    pub mail: SimProcess,
    /// The mail sink's inbox (HTTP) base.
    pub inbox: String,
}

pub struct Shop {
    pub sim: SimProcess,
    pub partners: Option<Partners>,
    /// The (first) node's address: webhooks and partners are sent there.
    pub addr: SocketAddr,
    pub handle: HubHandle,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub server: actix_web::dev::ServerHandle,
    /// Every node (one on sled); the first is `addr` and `handle`.
    pub nodes: Vec<(SocketAddr, HubHandle)>,
    next: std::sync::atomic::AtomicUsize,
    /// The cluster's nodes, run on a thread of their own.
    #[cfg(feature = "cluster-tests")]
    cluster: Option<cluster::Run>,
    _dir: tempfile::TempDir,
}

/// Which storage a shop's hub runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Sled,
    /// Three nodes on PostgreSQL (`cluster-tests` only).
    Cluster,
}

impl Storage {
    /// `OMNIHUB_TEST_SHOP=cluster` with the `cluster-tests` feature; sled otherwise.
    pub fn from_env() -> Storage {
        let wanted = std::env::var("OMNIHUB_TEST_SHOP").is_ok_and(|v| v == "cluster");
        if wanted && cfg!(feature = "cluster-tests") {
            Storage::Cluster
        } else {
            assert!(
                !wanted,
                "OMNIHUB_TEST_SHOP=cluster needs the cluster-tests feature"
            );
            Storage::Sled
        }
    }
}

/// Settings of a shop's hub (node), before the storage is chosen.
fn hub_settings(
    options: &ShopOptions,
    sim: &SimProcess,
    partners: Option<&Partners>,
    dir: &std::path::Path,
) -> HubSettings {
    let mut s = HubSettings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        cache_mb: 8,
        workers: 2,
        actor_threads: 2,
        admin_token: Some(ADMIN_TOKEN.to_string().into()),
        ..HubSettings::default()
    };
    s.payments.base_url = sim.base.clone();
    s.payments.secret_key = SECRET_KEY.to_string().into();
    s.payments.webhook_secret = WEBHOOK_SECRET.to_string().into();
    s.payments.timeout = Duration::from_secs(2);
    s.payments.retries = 2;
    s.checkout.sweep_every = Duration::from_millis(50);
    s.checkout.hold_for = options.hold_for;
    s.checkout.reconcile_after = options.reconcile_after;
    s.checkout.release_after_provider_down = options.release_after_provider_down;
    s.checkout.attempts_per_basket = options.attempts_per_basket;
    s.outbox.max_attempts = options.outbox_max_attempts;
    s.outbox.base_backoff = Duration::from_millis(100);
    s.outbox.max_backoff = Duration::from_millis(500);
    s.outbox.breaker_cooldown = Duration::from_millis(500);
    s.outbox.poll_every = Duration::from_millis(100);
    match partners {
        Some(p) => {
            s.oms.base_url = p.oms.base.clone();
            let (host, port) = p.mail.base.rsplit_once(':').expect("host:port");
            s.email.host = host.to_string();
            s.email.port = port.parse().expect("port");
        }
        // Nothing listens there: OMS deliveries fail and wait, which the checkout suite
        // does not look at.
        None => {
            s.oms.base_url = "http://127.0.0.1:9".into();
            s.email.port = 9;
        }
    }
    s
}

/// The shop's catalog and online stock, stored through `handle`.
async fn seed(handle: &HubHandle) {
    handle
        .upsert_catalog(
            vec![Category {
                id: CategoryId("coffee".into()),
                name: "Coffee".into(),
                description: "Beans".into(),
                position: 1,
            }],
            vec![
                product("House Beans", "BEANS", 1299),
                product("Last Beans", "LAST", 950),
                product("Green Tea", "TEA", 450),
            ],
        )
        .await
        .expect("catalog");
    handle
        .set_online_stock(vec![
            (sku("BEANS"), 1000),
            (sku("LAST"), 10),
            (sku("TEA"), 5),
        ])
        .await
        .expect("stock");
}

/// Three hub nodes on one fresh PostgreSQL schema, on a thread (and actix system) of their own,
/// so dropping the shop can stop them and drop the schema while the test's own runtime waits.
#[cfg(feature = "cluster-tests")]
pub mod cluster {
    use super::*;
    use hub::config::StorageKind;
    use hub::storage::postgres::testing;

    /// The secret the shop's nodes call each other with.
    pub const CLUSTER_SECRET: &str = "shop-cluster-secret-0123456789";

    /// The running nodes; stopped (shards handed over) and the schema dropped on drop.
    pub struct Run {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Run {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                // The nodes' thread also drops the schema; its panic is not this one's.
                let _ = thread.join();
            }
        }
    }

    /// A started node as the test sees it.
    pub type Started = (SocketAddr, HubHandle, actix_web::dev::ServerHandle);

    /// Starts three nodes (the first on `first`) with `settings(i, dir)`, seeds each node's
    /// caches, and answers once every shard has an owner and every node holds some.
    pub async fn start(
        first: std::net::TcpListener,
        settings: impl Fn(&std::path::Path) -> HubSettings + Send + 'static,
        clock: Arc<ManualClock>,
    ) -> (Run, Vec<Started>) {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let (schema, _) = testing::fresh_schema().await;
                let outcome = actix_web::rt::spawn(run_nodes(
                    schema.clone(),
                    first,
                    settings,
                    clock,
                    ready_tx,
                    stop_rx,
                ))
                .await;
                testing::drop_schema(&schema).await;
                if let Err(e) = outcome {
                    std::panic::resume_unwind(e.into_panic());
                }
            })
        });
        let started = ready_rx.await.expect("the cluster's nodes start");
        let run = Run {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        (run, started)
    }

    async fn run_nodes(
        schema: String,
        first: std::net::TcpListener,
        settings: impl Fn(&std::path::Path) -> HubSettings,
        clock: Arc<ManualClock>,
        ready: tokio::sync::oneshot::Sender<Vec<Started>>,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut first = Some(first);
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut s = settings(dir.path());
            s.storage = StorageKind::Cluster;
            s.cluster.postgres_url = testing::url_in(&schema).into();
            s.cluster.pool_size = 8;
            s.cluster.node_id = format!("shop-{i}");
            s.cluster.lease_ttl = Duration::from_secs(2);
            s.cluster.heartbeat_every = Duration::from_millis(250);
            s.cluster.secret = Some(CLUSTER_SECRET.to_string().into());
            let app = match first.take() {
                Some(listener) => Application::build_on(listener, s, clock.clone()).await,
                None => Application::build(s, clock.clone()).await,
            }
            .expect("a cluster node builds");
            let started = (app.address(), app.handle(), app.server_handle());
            let running = actix_web::rt::spawn(app.run());
            nodes.push((started, running));
            dirs.push(dir);
        }
        for ((_, handle, _), _) in &nodes {
            // The catalog and stock are cached per node: every node stores the same.
            seed(handle).await;
        }
        let ids: Vec<String> = (0..nodes.len()).map(|i| format!("shop-{i}")).collect();
        eventually(Duration::from_secs(30), || async {
            nodes
                .iter()
                .all(|((_, h, _), _)| {
                    let owners = h.ownership.as_ref().expect("a cluster node").owners();
                    owners.values().map(Vec::len).sum::<usize>() == hub::cluster::SHARDS as usize
                        && ids
                            .iter()
                            .all(|id| owners.get(id).is_some_and(|s| !s.is_empty()))
                })
                .then_some(())
        })
        .await;
        let _ = ready.send(nodes.iter().map(|(s, _)| s.clone()).collect());
        let _ = stop.await;
        for ((_, _, server), running) in nodes {
            server.stop(true).await;
            let _ = running.await;
        }
        drop(dirs);
    }
}

fn product(name: &str, sku: &str, price: i64) -> Product {
    let slug = name.to_lowercase().replace(' ', "-");
    Product {
        id: ProductId::new(),
        slug: slug.clone(),
        name: name.into(),
        brand: "Test Roasters".into(),
        description: format!("{name}, freshly made."),
        category: CategoryId("coffee".into()),
        tax_rate_bp: 700,
        tax_class: "reduced".into(),
        image: format!("/images/{slug}.svg"),
        variants: vec![Variant {
            sku: Sku::parse(sku).expect("valid sku"),
            title: "500 g".into(),
            price: Money::new(price, Currency::EUR),
            compare_at: None,
            barcode: None,
            weight_grams: 550,
        }],
        attributes: Default::default(),
    }
}

pub fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("sku")
}

impl Shop {
    /// Simulator process + in-process hub with `BEANS` (12.99, 1000 in stock), `LAST` (9.50, 10)
    /// and `TEA` (4.50, 5), and the hub's webhook endpoint registered at the simulator.
    pub async fn start(options: ShopOptions) -> Shop {
        Shop::start_on(options, Storage::from_env()).await
    }

    /// Like [`Shop::start`], on the given storage.
    pub async fn start_on(options: ShopOptions, storage: Storage) -> Shop {
        let sim = start_payments();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the hub");
        let hub_base = format!("http://{}", listener.local_addr().expect("bound"));
        let partners = options.fulfilment.then(|| start_partners(&hub_base));
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let shop = match storage {
            Storage::Sled => {
                let s = hub_settings(&options, &sim, partners.as_ref(), dir.path());
                let app = Application::build_on(listener, s, clock.clone())
                    .await
                    .expect("hub builds");
                let addr = app.address();
                let handle = app.handle();
                let server = app.server_handle();
                actix_web::rt::spawn(app.run());
                seed(&handle).await;
                Shop {
                    sim,
                    partners,
                    addr,
                    nodes: vec![(addr, handle.clone())],
                    handle,
                    clock,
                    client,
                    server,
                    next: Default::default(),
                    #[cfg(feature = "cluster-tests")]
                    cluster: None,
                    _dir: dir,
                }
            }
            #[cfg(feature = "cluster-tests")]
            Storage::Cluster => {
                let base = hub_settings(&options, &sim, partners.as_ref(), dir.path());
                let settings = move |dir: &std::path::Path| {
                    let mut s = base.clone();
                    s.data_dir = dir.to_path_buf();
                    s
                };
                let (run, started) = cluster::start(listener, settings, clock.clone()).await;
                let (addr, handle, server) = started[0].clone();
                Shop {
                    sim,
                    partners,
                    addr,
                    nodes: started.iter().map(|(a, h, _)| (*a, h.clone())).collect(),
                    handle,
                    clock,
                    client,
                    server,
                    // The first request goes to node 1: a test's first basket is node 1's,
                    // so the provider's webhooks for it reach a node that does not own it.
                    next: std::sync::atomic::AtomicUsize::new(1),
                    cluster: Some(run),
                    _dir: dir,
                }
            }
            #[cfg(not(feature = "cluster-tests"))]
            Storage::Cluster => {
                unreachable!("Storage::from_env answers sled without cluster-tests")
            }
        };
        register_webhook(&shop.client, &shop.sim.base, &hub_base).await;
        shop
    }

    /// Sets online stock on every node (each node keeps its own view of it).
    pub async fn set_online_stock(&self, levels: Vec<(Sku, i64)>) {
        for (_, handle) in &self.nodes {
            handle
                .set_online_stock(levels.clone())
                .await
                .expect("stock");
        }
    }

    /// The URL of `path` at the `i`-th node.
    pub fn node_url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.nodes[i].0, path)
    }

    /// The URL of `path` at the next node (round-robin; always the one node on sled).
    pub fn url(&self, path: &str) -> String {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.nodes.len();
        self.node_url(i, path)
    }

    pub fn sim_url(&self, path: &str) -> String {
        format!("{}{}", self.sim.base, path)
    }

    /// A new anonymous basket with these lines; answers (basket id, token).
    pub async fn basket(&self, lines: &[(&str, i64)]) -> (String, String) {
        let created: Value = self
            .client
            .post(self.url("/api/v1/baskets"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let id = created["id"].as_str().expect("id").to_string();
        let token = created["token"].as_str().expect("token").to_string();
        for (sku, quantity) in lines {
            let res = self
                .client
                .post(self.url(&format!("/api/v1/baskets/{id}/lines")))
                .header("X-Basket-Token", &token)
                .json(&json!({"sku": sku, "quantity": quantity}))
                .send()
                .await
                .expect("sent");
            assert!(res.status().is_success(), "add {sku}: {}", res.status());
        }
        (id, token)
    }

    /// Starts a checkout to Berlin with standard shipping.
    pub async fn checkout(&self, basket: &str, token: &str) -> reqwest::Response {
        self.checkout_with(basket, token, json!({})).await
    }

    /// Starts a checkout with extra fields merged into the body.
    pub async fn checkout_with(
        &self,
        basket: &str,
        token: &str,
        extra: Value,
    ) -> reqwest::Response {
        let mut body = json!({
            "email": "guest@example.com",
            "address": {"name": "Ada Lovelace", "line1": "Unter den Linden 1", "city": "Berlin", "postcode": "10117", "country": "DE"},
            "shipping_method": "standard",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.client
            .post(self.url(&format!("/api/v1/baskets/{basket}/checkout")))
            .header("X-Basket-Token", token)
            .json(&body)
            .send()
            .await
            .expect("sent")
    }

    /// Starts a checkout that must succeed; answers its JSON.
    pub async fn checkout_ok(&self, basket: &str, token: &str) -> Value {
        let res = self.checkout(basket, token).await;
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, 201, "checkout: {body}");
        body
    }

    /// The session id in a checkout's payment URL.
    pub fn session_of(checkout: &Value) -> String {
        checkout["payment_url"]
            .as_str()
            .expect("payment_url")
            .rsplit('/')
            .next()
            .expect("a last segment")
            .to_string()
    }

    /// Pays a session through the simulator's test API; answers status and body.
    pub async fn pay(&self, session: &str, card: &str) -> (u16, Value) {
        self.pay_with(session, json!({"card": card})).await
    }

    pub async fn pay_with(&self, session: &str, body: Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.sim_url(&format!("/_sim/checkout/sessions/{session}/pay")))
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn faults(&self, faults: Value) {
        let res = self
            .client
            .post(self.sim_url("/_sim/faults"))
            .json(&faults)
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success(), "faults: {}", res.status());
    }

    pub async fn clear_faults(&self) {
        let res = self
            .client
            .delete(self.sim_url("/_sim/faults"))
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success());
    }

    /// Cancels a checkout's payment as its shopper; it must succeed. Answers the checkout.
    pub async fn cancel(&self, id: &str, token: &str) -> Value {
        let res = self
            .client
            .post(self.url(&format!("/api/v1/checkouts/{id}/cancel")))
            .header("X-Basket-Token", token)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 200, "cancel {id}");
        res.json().await.expect("json")
    }

    pub async fn get_checkout(&self, id: &str, token: &str) -> Value {
        self.client
            .get(self.url(&format!("/api/v1/checkouts/{id}")))
            .header("X-Basket-Token", token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// Waits until the checkout has left `payment_pending`; answers it.
    pub async fn settled(&self, id: &str, token: &str) -> Value {
        eventually(Duration::from_secs(20), || async {
            let c = self.get_checkout(id, token).await;
            (c["state"] != "payment_pending").then_some(c)
        })
        .await
    }

    pub async fn get_basket(&self, id: &str, token: &str) -> Value {
        self.client
            .get(self.url(&format!("/api/v1/baskets/{id}")))
            .header("X-Basket-Token", token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// (on hand, held) of a SKU online.
    pub fn stock(&self, s: &str) -> (i64, i64) {
        self.handle
            .inventory
            .level(&protocol::LocationId::online(), &sku(s))
            .map_or((0, 0), |l| (l.on_hand, l.held))
    }

    /// Waits until a SKU's (on hand, held) is `want`: a paid order's hold becomes a sale right
    /// after the order is stored (available-to-promise is the same either way).
    pub async fn stock_becomes(&self, s: &str, want: (i64, i64)) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.stock(s);
            if now == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stock of {s} is {now:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn admin(&self, path: &str) -> Value {
        self.client
            .get(self.url(&format!("/api/v1/admin{path}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// Every order of the shop (admin API), newest first.
    pub async fn all_orders(&self) -> Vec<Value> {
        let body = self.admin("/orders?limit=200").await;
        body["orders"].as_array().cloned().unwrap_or_default()
    }

    pub async fn sim_audit(&self) -> Value {
        self.client
            .get(self.sim_url("/_sim/audit"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    pub async fn sim_session(&self, session: &str) -> Value {
        self.client
            .get(self.sim_url(&format!("/v1/checkout/sessions/{session}")))
            .bearer_auth(SECRET_KEY)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_that(timeout, "condition", check).await
}

/// [`eventually`], naming `what` was waited for when it panics.
pub async fn eventually_that<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
