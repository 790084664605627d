//! Click-and-collect end to end (`docs/click-and-collect.md`): a hub process with one store's
//! node (behind a proxy), the payment simulator and the mail sink as processes, and the node's
//! clerk signed in over the node's API.

use super::shop::{eventually, register_webhook, start_payments, start_process, SimProcess};
use super::shop::{SECRET_KEY, WEBHOOK_SECRET};
use super::stores::{hub_config, node_env, Store, ADMIN, WAIT};
use super::HubProcess;
use serde_json::{json, Value};
use simulators::load::proxy::Proxy;
use std::path::{Path, PathBuf};

pub const REPLICA: &str = "berlin";
pub const LOCATION: &str = "store-berlin";
pub const METHOD: &str = "collect:store-berlin";
pub const CLERK: &str = "ben";
pub const CLERK_PIN: &str = "135790";

/// The hub, its partners and the store.
pub struct Collect {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub payments: SimProcess,
    pub mail: SimProcess,
    /// The mail sink's inbox (HTTP) base.
    pub inbox: String,
    pub hub: HubProcess,
    pub store: Store,
    pub client: reqwest::Client,
}

/// The node's settings file: one till and a clerk who signs in with [`CLERK_PIN`].
fn edge_config(dir: &Path) -> PathBuf {
    let hash = edge_node::hash_pin(CLERK_PIN).expect("hashes");
    let toml = format!(
        "[pos]\ntills = [\"1\"]\n[[pos.staff]]\nid = \"{CLERK}\"\nname = \"Ben Clerk\"\nrole = \"clerk\"\npin_hash = \"{hash}\"\n"
    );
    let path = dir.join("edge.toml");
    std::fs::write(&path, toml).expect("edge settings written");
    path
}

impl Collect {
    pub async fn start() -> Collect {
        Collect::start_with(&[]).await
    }

    /// [`Collect::start`] with extra hub environment (e.g. failpoints armed at start).
    pub async fn start_with(extra: &[(&str, &str)]) -> Collect {
        let dir = tempfile::tempdir().expect("temp dir");
        let payments = tokio::task::block_in_place(start_payments);
        let (mut mail, line) = tokio::task::block_in_place(|| {
            start_process(
                &[
                    "sim",
                    "mail",
                    "--smtp",
                    "127.0.0.1:0",
                    "--http",
                    "127.0.0.1:0",
                ],
                "omnihub sim mail: SMTP on ",
            )
        });
        let (smtp, inbox) = line.split_once(", inbox on ").expect("the mail line");
        mail.base = smtp.to_string();
        let inbox = inbox.trim_end_matches('/').to_string();
        let config = hub_config(dir.path(), &[(REPLICA, LOCATION)]);
        let client = super::http_client();
        let collect = Collect {
            hub: start_collect_hub(dir.path(), &config, &payments, &mail, extra),
            store: start_store(dir.path()).await,
            dir,
            config,
            payments,
            mail,
            inbox,
            client,
        };
        register_webhook(&collect.client, &collect.payments.base, &collect.hub.base).await;
        collect
            .store
            .proxy
            .set_upstream(super::stores::hub_addr(&collect.hub));
        collect.store.online().await;
        collect
    }

    /// SIGKILL the hub (if it still runs) and start it again on the same data.
    pub async fn restart_hub(&mut self, extra: &[(&str, &str)]) {
        let _ = self.hub.child.kill();
        let _ = tokio::task::block_in_place(|| self.hub.child.wait());
        self.hub = start_collect_hub(
            self.dir.path(),
            &self.config,
            &self.payments,
            &self.mail,
            extra,
        );
        self.store
            .proxy
            .set_upstream(super::stores::hub_addr(&self.hub));
    }

    /// A shopper's basket on the hub with these lines: (id, token).
    pub async fn basket(&self, lines: &[(&str, u32)]) -> (String, String) {
        let base = &self.hub.base;
        let created: Value = self
            .client
            .post(format!("{base}/api/v1/baskets"))
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
                .post(format!("{base}/api/v1/baskets/{id}/lines"))
                .header("X-Basket-Token", &token)
                .json(&json!({"sku": sku, "quantity": quantity}))
                .send()
                .await
                .expect("sent");
            assert!(res.status().is_success(), "add {sku}: {}", res.status());
        }
        (id, token)
    }

    /// `POST /baskets/{id}/checkout` with this body: (status, body).
    pub async fn checkout(&self, basket: &(String, String), body: Value) -> (u16, Value) {
        let res = self
            .client
            .post(format!(
                "{}/api/v1/baskets/{}/checkout",
                self.hub.base, basket.0
            ))
            .header("X-Basket-Token", &basket.1)
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Checks out for pickup at the store with only a name and an email, pays with a test card
    /// at the payment simulator, and waits for the order: answers the hub's admin view of it.
    pub async fn buy_for_pickup(&self, lines: &[(&str, u32)], name: &str) -> Value {
        let basket = self.basket(lines).await;
        let (status, checkout) = self
            .checkout(
                &basket,
                json!({
                    "email": "ada@example.com",
                    "address": {"name": name},
                    "shipping_method": METHOD,
                }),
            )
            .await;
        assert_eq!(status, 201, "{checkout}");
        let session = checkout["payment_url"]
            .as_str()
            .expect("payment url")
            .rsplit('/')
            .next()
            .expect("session id")
            .to_string();
        let paid = self
            .client
            .post(format!(
                "{}/_sim/checkout/sessions/{session}/pay",
                self.payments.base
            ))
            .json(&json!({"card": "4242424242424242"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(paid.status(), 200);
        let id = checkout["id"].as_str().expect("checkout id").to_string();
        let order = eventually(WAIT, || async {
            let c: Value = self
                .client
                .get(format!("{}/api/v1/checkouts/{id}", self.hub.base))
                .header("X-Basket-Token", &basket.1)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (c["state"] == "paid").then(|| c["order"]["id"].as_str().map(str::to_string))?
        })
        .await;
        self.order(&order).await
    }

    /// The hub's admin view of an order.
    pub async fn order(&self, id: &str) -> Value {
        super::stores::admin(&self.hub, &format!("/orders/{id}")).await
    }

    /// Waits until the hub's order has this status; answers it.
    pub async fn order_becomes(&self, id: &str, status: &str) -> Value {
        eventually(WAIT, || async {
            let o = self.order(id).await;
            (o["status"] == status).then_some(o)
        })
        .await
    }

    /// The node's pick list entry of an order, once it is there.
    pub async fn on_pick_list(&self, number: &str) -> Value {
        eventually(WAIT, || async {
            let list = self.store.get("/api/v1/pickups?closed=50").await;
            list["pickups"]
                .as_array()?
                .iter()
                .find(|p| p["number"] == number)
                .cloned()
        })
        .await
    }

    /// A staff session token of the clerk.
    pub async fn clerk_token(&self) -> String {
        let res = self
            .client
            .post(format!("{}/api/v1/staff/sessions", self.store.node.base))
            .json(&json!({"staff_id": CLERK, "pin": CLERK_PIN}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.expect("json");
        body["token"].as_str().expect("a token").to_string()
    }

    /// `POST` on the node as the clerk: (status, body).
    pub async fn as_clerk(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .client
            .post(format!("{}{path}", self.store.node.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The subjects of the mails in the sink.
    pub async fn subjects(&self) -> Vec<String> {
        let body: Value = self
            .client
            .get(format!("{}/api/messages", self.inbox))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        body["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["headers"]["subject"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn start_collect_hub(
    dir: &Path,
    config: &Path,
    payments: &SimProcess,
    mail: &SimProcess,
    extra: &[(&str, &str)],
) -> HubProcess {
    let (host, port) = mail.base.rsplit_once(':').expect("host:port");
    let mut env = vec![
        ("OMNIHUB_HUB_ADMIN_TOKEN", ADMIN),
        ("OMNIHUB_HUB_PAYMENTS__BASE_URL", payments.base.as_str()),
        ("OMNIHUB_HUB_PAYMENTS__SECRET_KEY", SECRET_KEY),
        ("OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("OMNIHUB_HUB_EMAIL__HOST", host),
        ("OMNIHUB_HUB_EMAIL__PORT", port),
        ("OMNIHUB_HUB_OUTBOX__POLL_EVERY", "100ms"),
        ("OMNIHUB_HUB_CHECKOUT__SWEEP_EVERY", "200ms"),
    ];
    env.extend_from_slice(extra);
    tokio::task::block_in_place(|| {
        super::start_hub_with(
            &dir.join("hub"),
            &["--config", config.to_str().expect("utf-8 path")],
            &env,
        )
    })
}

/// The store's node (with a clerk) behind its proxy; the proxy's upstream is set once the hub
/// runs.
async fn start_store(dir: &Path) -> Store {
    let placeholder = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let proxy = Proxy::start(placeholder).await.expect("the proxy listens");
    let data = dir.join(REPLICA);
    let env = node_env(REPLICA, LOCATION, &data, &proxy);
    let config = edge_config(dir);
    let node = tokio::task::block_in_place(|| {
        super::start_edge_with(&["--config", config.to_str().expect("utf-8 path")], &env)
    });
    Store {
        replica: REPLICA.to_string(),
        location: LOCATION.to_string(),
        data,
        proxy,
        node,
    }
}
