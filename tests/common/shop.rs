//! A shop for the checkout suites: the payment simulator as a real `omnihub sim payments`
//! process, and a hub in this process (so a test can drive its clock and its stock) with a
//! small known catalog, wired together the way a deployment is: the hub calls the simulator's
//! API, the simulator posts signed webhooks to the hub.

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
    pub addr: SocketAddr,
    pub handle: HubHandle,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub server: actix_web::dev::ServerHandle,
    _dir: tempfile::TempDir,
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
        let sim = start_payments();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the hub");
        let hub_base = format!("http://{}", listener.local_addr().expect("bound"));
        let partners = options.fulfilment.then(|| start_partners(&hub_base));
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = HubSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().to_path_buf(),
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
        match &partners {
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
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let app = Application::build_on(listener, s, clock.clone())
            .await
            .expect("hub builds");
        let addr = app.address();
        let handle = app.handle();
        let server = app.server_handle();
        actix_web::rt::spawn(app.run());
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
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let shop = Shop {
            sim,
            partners,
            addr,
            handle,
            clock,
            client,
            server,
            _dir: dir,
        };
        register_webhook(&shop.client, &shop.sim.base, &shop.url("")).await;
        shop
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
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
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
