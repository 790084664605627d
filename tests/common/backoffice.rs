//! A hub for the back-office and ops browser suite (`tests/browser_backoffice.rs`): the real
//! `omnihub hub` process with the demo catalog, an admin token and an ops token, the payment
//! simulator wired in (so orders can be placed), configured store nodes, and outbox
//! destinations that fail fast: the OMS and the mail server point at ports nobody listens on
//! until a test starts the OMS simulator there.

use super::shop::{eventually, start_payments, start_process, SimProcess};
use super::shop::{SECRET_KEY, WEBHOOK_SECRET};
use super::webdriver::Session;
use super::HubProcess;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

pub const ADMIN: &str = "browser-backoffice-admin-token";
pub const OPS: &str = "browser-backoffice-ops-token";
pub const PASSWORD: &str = "correct horse battery staple";
pub const WAIT: Duration = Duration::from_secs(30);

/// A loopback address nobody listens on (yet).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

pub struct BackOffice {
    pub hub: HubProcess,
    pub payments: SimProcess,
    /// Where the hub sends orders; nothing listens until [`BackOffice::start_oms`].
    pub oms_addr: SocketAddr,
    pub oms: Option<SimProcess>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl BackOffice {
    /// The hub with store nodes `(replica, location)` configured (see `common::stores`).
    pub async fn start(nodes: &[(&str, &str)]) -> BackOffice {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = super::stores::hub_config(dir.path(), nodes);
        let payments = tokio::task::block_in_place(start_payments);
        let oms_addr = free_addr();
        let mail_port = free_addr().port().to_string();
        let oms_url = format!("http://{oms_addr}");
        let env = [
            ("OMNIHUB_HUB_ADMIN_TOKEN", ADMIN),
            ("OMNIHUB_HUB_OPS_TOKEN", OPS),
            ("OMNIHUB_HUB_PAYMENTS__BASE_URL", payments.base.as_str()),
            ("OMNIHUB_HUB_PAYMENTS__SECRET_KEY", SECRET_KEY),
            ("OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("OMNIHUB_HUB_OMS__BASE_URL", oms_url.as_str()),
            ("OMNIHUB_HUB_OMS__CONNECT_TIMEOUT", "1s"),
            ("OMNIHUB_HUB_EMAIL__HOST", "127.0.0.1"),
            ("OMNIHUB_HUB_EMAIL__PORT", mail_port.as_str()),
            // One failed attempt makes a dead letter; a retried one is tried at once.
            ("OMNIHUB_HUB_OUTBOX__MAX_ATTEMPTS", "1"),
            ("OMNIHUB_HUB_OUTBOX__BASE_BACKOFF", "100ms"),
            ("OMNIHUB_HUB_OUTBOX__MAX_BACKOFF", "500ms"),
            ("OMNIHUB_HUB_OUTBOX__BREAKER_COOLDOWN", "500ms"),
            ("OMNIHUB_HUB_OUTBOX__POLL_EVERY", "100ms"),
        ];
        let hub = tokio::task::block_in_place(|| {
            super::start_hub_with(
                &dir.path().join("hub"),
                &["--config", config.to_str().expect("utf-8 path")],
                &env,
            )
        });
        let http = super::http_client();
        super::shop::register_webhook(&http, &payments.base, &hub.base).await;
        BackOffice {
            hub,
            payments,
            oms_addr,
            oms: None,
            http,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.hub.base)
    }

    /// Starts the OMS simulator where the hub sends orders: deliveries succeed from now on.
    pub fn start_oms(&mut self) {
        let listen = self.oms_addr.to_string();
        let (oms, _) = tokio::task::block_in_place(|| {
            start_process(
                &["sim", "oms", "--listen", &listen, "--step", "1h"],
                "oms simulator listening on ",
            )
        });
        self.oms = Some(oms);
    }

    /// A call with the admin token; answers status and JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Creates a back-office user with [`PASSWORD`]; answers its id.
    pub async fn user(&self, email: &str, name: &str, roles: &[&str]) -> String {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/api/v1/admin/users",
                Some(json!({"email": email, "name": name, "roles": roles, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, 201, "user {email}: {body}");
        body["id"].as_str().expect("id").to_string()
    }

    /// A GET with the ops token; answers the JSON.
    pub async fn ops(&self, path: &str) -> Value {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(OPS)
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.expect("json")
    }

    /// The dead letters waiting for `destination`.
    pub async fn dead_letters(&self, destination: &str) -> Vec<Value> {
        self.ops(&format!("/ops/outbox/{destination}/dead")).await["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `destination` has exactly `n` dead letters; answers them.
    pub async fn dead_letters_become(&self, destination: &str, n: usize) -> Vec<Value> {
        eventually(WAIT, || async {
            let dead = self.dead_letters(destination).await;
            (dead.len() == n).then_some(dead)
        })
        .await
    }

    /// The slugs of the first `n` products of a category (the demo catalog's).
    pub async fn slugs_of(&self, category: &str, n: usize) -> Vec<String> {
        let res: Value = self
            .http
            .get(self.url(&format!("/api/v1/products?category={category}")))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let slugs: Vec<String> = res["items"]
            .as_array()
            .unwrap_or_else(|| panic!("products of {category}: {res}"))
            .iter()
            .filter_map(|p| p["slug"].as_str().map(str::to_string))
            .take(n)
            .collect();
        assert_eq!(slugs.len(), n, "{n} products in {category}: {res}");
        slugs
    }

    /// SKUs of `n` products of a category with at least five units in stock (one per product).
    pub async fn skus_of(&self, category: &str, n: usize) -> Vec<String> {
        let mut skus = Vec::new();
        for slug in self
            .slugs_of(category, 1)
            .await
            .into_iter()
            .chain(self.all_slugs_of(category).await)
        {
            let product: Value = self
                .http
                .get(self.url(&format!("/api/v1/products/{slug}")))
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            let in_stock = product["variants"]
                .as_array()
                .unwrap_or_else(|| panic!("variants of {slug}: {product}"))
                .iter()
                .find(|v| v["available"].as_i64().unwrap_or(0) >= 5)
                .and_then(|v| v["sku"].as_str());
            if let Some(sku) = in_stock {
                if !skus.iter().any(|s| s == sku) {
                    skus.push(sku.to_string());
                }
            }
            if skus.len() == n {
                return skus;
            }
        }
        panic!("not {n} products in stock in {category}: {skus:?}");
    }

    /// The slugs of a category's first page of products.
    async fn all_slugs_of(&self, category: &str) -> Vec<String> {
        let res: Value = self
            .http
            .get(self.url(&format!("/api/v1/products?category={category}")))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        res["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|p| p["slug"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A shopper's client: signed in as `customer` (email, password) when given, else a guest;
    /// keeps its cookies.
    pub async fn shopper(&self, customer: Option<(&str, &str)>) -> reqwest::Client {
        let c = reqwest::Client::builder()
            .cookie_store(true)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        if let Some((email, password)) = customer {
            let res = c
                .post(self.url("/api/v1/sessions"))
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .expect("sent");
            assert!(
                res.status().is_success(),
                "{email} signs in: {}",
                res.status()
            );
        }
        c
    }

    /// A basket of `shopper` with `lines`; answers (id, token).
    pub async fn basket(
        &self,
        shopper: &reqwest::Client,
        lines: &[(&str, u32)],
    ) -> (String, String) {
        let created: Value = shopper
            .post(self.url("/api/v1/baskets"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let id = created["id"].as_str().expect("a basket id").to_string();
        // A signed-in customer's basket goes by the session; a guest's by its token.
        let token = created["token"].as_str().unwrap_or_default().to_string();
        for (sku, quantity) in lines {
            let res = shopper
                .post(self.url(&format!("/api/v1/baskets/{id}/lines")))
                .headers(basket_token(&token))
                .json(&json!({"sku": sku, "quantity": quantity}))
                .send()
                .await
                .expect("sent");
            let status = res.status();
            assert!(
                status.is_success(),
                "add {sku}: {status} {}",
                res.text().await.unwrap_or_default()
            );
        }
        (id, token)
    }

    /// A basket's JSON.
    pub async fn basket_json(&self, shopper: &reqwest::Client, basket: &(String, String)) -> Value {
        shopper
            .get(self.url(&format!("/api/v1/baskets/{}", basket.0)))
            .headers(basket_token(&basket.1))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// Buys `lines` as `shopper` (paid with the simulator's test card); waits for the order
    /// and answers the checkout's JSON.
    pub async fn buy(
        &self,
        shopper: &reqwest::Client,
        email: &str,
        lines: &[(&str, u32)],
    ) -> Value {
        let (basket, token) = self.basket(shopper, lines).await;
        let res = shopper
            .post(self.url(&format!("/api/v1/baskets/{basket}/checkout")))
            .headers(basket_token(&token))
            .json(&json!({
                "email": email,
                "address": {"name": "Ada Lovelace", "line1": "Unter den Linden 1", "city": "Berlin", "postcode": "10117", "country": "DE"},
                "shipping_method": "standard",
            }))
            .send()
            .await
            .expect("sent");
        let status = res.status();
        let checkout: Value = res.json().await.expect("json");
        assert_eq!(status, 201, "checkout: {checkout}");
        let session = checkout["payment_url"]
            .as_str()
            .expect("payment_url")
            .rsplit('/')
            .next()
            .expect("a session id")
            .to_string();
        let res = self
            .http
            .post(format!(
                "{}/_sim/checkout/sessions/{session}/pay",
                self.payments.base
            ))
            .json(&json!({"card": "4242424242424242"}))
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success(), "paid: {}", res.status());
        let id = checkout["id"].as_str().expect("checkout id").to_string();
        eventually(WAIT, || async {
            let c: Value = shopper
                .get(self.url(&format!("/api/v1/checkouts/{id}")))
                .headers(basket_token(&token))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (!c["order"].is_null() || c["state"] == "completed").then_some(c)
        })
        .await
    }
}

/// The `X-Basket-Token` header of a guest's basket (none for a signed-in customer's).
fn basket_token(token: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if !token.is_empty() {
        headers.insert("x-basket-token", token.parse().expect("a header value"));
    }
    headers
}

/// Signs `page` in to the back office as `email` (with [`PASSWORD`]) and waits for the
/// dashboard.
pub async fn sign_in(page: &Session, base: &str, email: &str) {
    page.goto(&format!("{base}/backoffice/login")).await;
    page.type_into("#email", email).await;
    page.type_into("#password", PASSWORD).await;
    page.click("#sign-in").await;
    page.wait_for_url(WAIT, |u| u.ends_with("/backoffice"))
        .await;
}

/// Signs `page` out of the back office (the layout's sign-out button).
pub async fn sign_out(page: &Session, base: &str) {
    page.goto(&format!("{base}/backoffice")).await;
    page.click("form[action='/backoffice/logout'] button").await;
    page.wait_for_url(WAIT, |u| u.contains("/backoffice/login"))
        .await;
}

/// The HTTP status the browser got for the page it shows (Chromium's navigation timing).
pub async fn status_of_page(page: &Session) -> u64 {
    page.execute(
        "return performance.getEntriesByType('navigation')[0].responseStatus;",
        json!([]),
    )
    .await
    .as_u64()
    .expect("a response status")
}

/// The hrefs of the back office's navigation on the page shown.
pub async fn nav_links(page: &Session) -> Vec<String> {
    let links = page
        .execute(
            "return Array.from(document.querySelectorAll('#nav a')).map(a => a.getAttribute('href'));",
            json!([]),
        )
        .await;
    links
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Creates a back-office user with `roles` and `password` on a hub started by a suite of its
/// own (the hub's admin token).
pub async fn create_user(
    base: &str,
    admin_token: &str,
    email: &str,
    roles: &[&str],
    password: &str,
) {
    let res = super::http_client()
        .post(format!("{base}/api/v1/admin/users"))
        .bearer_auth(admin_token)
        .json(&json!({"email": email, "name": email, "roles": roles, "password": password}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 201, "user {email} created");
}

/// Signs `page` in to the back office as `email` with `password` and waits for the dashboard.
pub async fn sign_in_with(page: &Session, base: &str, email: &str, password: &str) {
    page.goto(&format!("{base}/backoffice/login")).await;
    page.type_into("#email", email).await;
    page.type_into("#password", password).await;
    page.click("#sign-in").await;
    page.wait_for_url(WAIT, |u| {
        u.ends_with("/backoffice") || u.ends_with("/backoffice/")
    })
    .await;
}
