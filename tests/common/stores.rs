//! Stores for the edge suites: a hub with `[[edge.nodes]]` and edge nodes as real processes,
//! each behind its own TCP proxy, with the JSON of their APIs read the way an operator would.

use super::shop::eventually;
use super::{EdgeProcess, HubProcess};
use serde_json::{json, Value};
use simulators::load::proxy::Proxy;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const ADMIN: &str = "admin-stores-token";
pub const API_TOKEN: &str = "edge-api-token-for-tests";
pub const WAIT: Duration = Duration::from_secs(60);

pub fn credential(replica: &str) -> String {
    format!("node-credential-{replica}")
}

pub fn sha256_hex(text: &str) -> String {
    hub::auth::token_hash(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hub's settings file: its nodes, each with the hash of its credential.
pub fn hub_config(dir: &Path, nodes: &[(&str, &str)]) -> PathBuf {
    let mut toml = String::from("[edge]\nheartbeat_every = \"1s\"\nidle_timeout = \"4s\"\n");
    for (replica, location) in nodes {
        toml.push_str(&format!(
            "[[edge.nodes]]\nreplica = \"{replica}\"\nlocation = \"{location}\"\ncredential_sha256 = \"{}\"\n",
            sha256_hex(&credential(replica))
        ));
    }
    let path = dir.join("hub.toml");
    std::fs::write(&path, toml).expect("hub settings written");
    path
}

pub fn start_hub(dir: &Path, config: &Path) -> HubProcess {
    tokio::task::block_in_place(|| {
        super::start_hub_with(
            &dir.join("hub"),
            &["--config", config.to_str().expect("utf-8 path")],
            &[("OMNIHUB_HUB_ADMIN_TOKEN", ADMIN)],
        )
    })
}

pub fn hub_addr(hub: &HubProcess) -> SocketAddr {
    hub.base
        .trim_start_matches("http://")
        .parse()
        .expect("hub address")
}

/// One store: its node process behind its own proxy.
pub struct Store {
    pub replica: String,
    pub location: String,
    pub data: PathBuf,
    pub proxy: Proxy,
    pub node: EdgeProcess,
}

pub fn node_env(
    replica: &str,
    location: &str,
    data: &Path,
    proxy: &Proxy,
) -> Vec<(&'static str, String)> {
    vec![
        ("OMNIHUB_EDGE_REPLICA", replica.to_string()),
        ("OMNIHUB_EDGE_LOCATION", location.to_string()),
        ("OMNIHUB_EDGE_STORE_NAME", format!("Store {replica}")),
        (
            "OMNIHUB_EDGE_HUB_URL",
            format!("ws://{}/api/v1/edge/sync", proxy.addr),
        ),
        ("OMNIHUB_EDGE_CREDENTIAL", credential(replica)),
        ("OMNIHUB_EDGE_DATA_DIR", data.display().to_string()),
        ("OMNIHUB_EDGE_LISTEN", "127.0.0.1:0".to_string()),
        ("OMNIHUB_EDGE_API_TOKEN", API_TOKEN.to_string()),
        ("OMNIHUB_EDGE_CACHE_MB", "8".to_string()),
        ("OMNIHUB_EDGE_SYNC__HEARTBEAT_EVERY", "1s".to_string()),
        ("OMNIHUB_EDGE_SYNC__IDLE_TIMEOUT", "4s".to_string()),
        ("OMNIHUB_EDGE_SYNC__BACKOFF_MAX", "1s".to_string()),
    ]
}

impl Store {
    pub async fn start(dir: &Path, replica: &str, location: &str, hub: SocketAddr) -> Store {
        Store::start_with(dir, replica, location, hub, &[]).await
    }

    /// [`Store::start`] with extra environment (e.g. `FAILPOINTS`).
    pub async fn start_with(
        dir: &Path,
        replica: &str,
        location: &str,
        hub: SocketAddr,
        extra: &[(&'static str, String)],
    ) -> Store {
        let proxy = Proxy::start(hub).await.expect("the proxy listens");
        let data = dir.join(replica);
        let mut env = node_env(replica, location, &data, &proxy);
        env.extend_from_slice(extra);
        let node = tokio::task::block_in_place(|| super::start_edge(&env));
        Store {
            replica: replica.to_string(),
            location: location.to_string(),
            data,
            proxy,
            node,
        }
    }

    /// SIGKILL, then start again on the same data.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// SIGKILL (if still running), then start again on the same data with extra environment.
    pub fn restart_with(&mut self, extra: &[(&'static str, String)]) {
        self.node.kill();
        let mut env = node_env(&self.replica, &self.location, &self.data, &self.proxy);
        env.extend_from_slice(extra);
        self.node = tokio::task::block_in_place(|| super::start_edge(&env));
    }

    pub async fn get(&self, path: &str) -> Value {
        let res = super::http_client()
            .get(format!("{}{path}", self.node.base))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.expect("json")
    }

    pub async fn post(&self, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut req = super::http_client()
            .post(format!("{}{path}", self.node.base))
            .bearer_auth(API_TOKEN)
            .json(&body);
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let res = req.send().await.expect("sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn receive(&self, sku: &str, units: u64) {
        let (status, body) = self
            .post(
                "/api/v1/stock/adjustments",
                json!({"kind": "receipt", "sku": sku, "units": units, "reason": "delivery"}),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// Sells `quantity` of `sku` for cash; answers the status and body.
    pub async fn sell(
        &self,
        sku: &str,
        quantity: u32,
        override_reason: Option<&str>,
    ) -> (u16, Value) {
        self.sell_keyed(sku, quantity, override_reason, None).await
    }

    pub async fn sell_keyed(
        &self,
        sku: &str,
        quantity: u32,
        override_reason: Option<&str>,
        key: Option<&str>,
    ) -> (u16, Value) {
        self.post(
            "/api/v1/sales",
            json!({
                "lines": [{"sku": sku, "quantity": quantity}],
                "payments": [{"method": "cash", "amount": "1000.00"}],
                "clerk": "anna",
                "override_reason": override_reason,
            }),
            key,
        )
        .await
    }

    pub async fn sync(&self) -> Value {
        self.get("/api/v1/sync").await
    }

    pub async fn stock(&self, sku: &str) -> Value {
        self.get(&format!("/api/v1/stock/{sku}")).await
    }

    /// Every sale id the node holds.
    pub async fn sale_ids(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/sales?limit=100&cursor={c}"),
                None => "/api/v1/sales?limit=100".to_string(),
            };
            let page = self.get(&path).await;
            for sale in page["sales"].as_array().expect("sales") {
                ids.insert(sale["id"].as_str().expect("id").to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return ids,
            }
        }
    }

    /// Waits until the node is connected with its catalog.
    pub async fn online(&self) {
        eventually(WAIT, || async {
            let s = self.sync().await;
            (s["connected"] == true && s["catalog_version"].as_u64().unwrap_or(0) > 0).then_some(())
        })
        .await;
    }

    pub async fn offline(&self) {
        eventually(WAIT, || async {
            (self.sync().await["connected"] == false).then_some(())
        })
        .await;
    }
}

pub async fn admin(hub: &HubProcess, path: &str) -> Value {
    let res = super::http_client()
        .get(format!("{}/api/v1/admin{path}", hub.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "GET {path}: {}", res.status());
    res.json().await.expect("json")
}

pub async fn hub_sale_ids(hub: &HubProcess, location: &str) -> Vec<String> {
    let sales = admin(hub, &format!("/edge/sales?location={location}&limit=10000")).await;
    sales["sales"]
        .as_array()
        .expect("sales")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// Waits until nothing is unacknowledged either way between the hub and the store.
pub async fn converged(hub: &HubProcess, store: &Store) {
    eventually(WAIT, || async {
        let node = store.sync().await;
        let view = admin(hub, &format!("/edge/nodes/{}", store.replica)).await;
        let quiet = node["connected"] == true
            && node["pending"]["entries"] == 0
            && view["connected"] == true
            && view["unacknowledged"]["hub_to_node"] == 0
            && view["unacknowledged"]["node_to_hub"] == 0;
        quiet.then_some(())
    })
    .await;
}

/// The hub's view of a SKU's rights at the store.
pub async fn hub_rights(hub: &HubProcess, store: &Store, sku: &str) -> Value {
    let view = admin(hub, &format!("/edge/nodes/{}", store.replica)).await;
    view["rights"]
        .as_array()
        .expect("rights")
        .iter()
        .find(|r| r["sku"] == sku)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The node and the hub agree on on-hand and every replica's rights for `sku`.
pub async fn same_inventory(hub: &HubProcess, store: &Store, sku: &str) -> Value {
    let node = store.stock(sku).await;
    let at_hub = hub_rights(hub, store, sku).await;
    assert_eq!(
        node["on_hand"], at_hub["on_hand"],
        "on hand: node {node} hub {at_hub}"
    );
    assert_eq!(
        node["node_rights"], at_hub["node_holds"],
        "node rights: {node} {at_hub}"
    );
    assert_eq!(
        node["hub_rights"], at_hub["hub_holds"],
        "hub rights: {node} {at_hub}"
    );
    assert_eq!(node["value"], at_hub["value"], "value: {node} {at_hub}");
    let level = admin(hub, &format!("/stock/{sku}?location={}", store.location)).await;
    assert_eq!(
        level["on_hand"], node["on_hand"],
        "the hub's stock view: {level}"
    );
    node
}

/// A SKU both stores can sell, from the replicated catalog.
pub async fn a_sku(store: &Store, nth: usize) -> String {
    let products = store.get("/api/v1/products?limit=20").await;
    products["products"][nth]["variants"][0]["sku"]
        .as_str()
        .unwrap_or_else(|| panic!("a sku in {products}"))
        .to_string()
}

/// A request to the hub with a bearer token; answers the status and the JSON body.
pub async fn hub_call(
    hub: &HubProcess,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = super::http_client()
        .request(method, format!("{}{path}", hub.base))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A back-office user created with the admin token, with roles; answers a token of theirs.
pub async fn back_office_user(hub: &HubProcess, email: &str, roles: &[&str]) -> String {
    let post = reqwest::Method::POST;
    let (status, user) = hub_call(
        hub,
        post.clone(),
        "/api/v1/admin/users",
        ADMIN,
        Some(json!({"email": email, "name": "Store tests", "roles": roles})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_str().expect("a user id");
    let (status, token) = hub_call(
        hub,
        post,
        &format!("/api/v1/admin/users/{id}/tokens"),
        ADMIN,
        Some(json!({"name": "store tests"})),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    token["token"].as_str().expect("a token").to_string()
}

/// Prices `lines` as a shopper's basket on the hub (the storefront API): the basket's JSON.
pub async fn hub_basket(hub: &HubProcess, lines: &[(&str, u32)]) -> Value {
    let client = super::http_client();
    let created: Value = client
        .post(format!("{}/api/v1/baskets", hub.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("a basket id");
    let token = created["token"].as_str().expect("a basket token");
    for (sku, quantity) in lines {
        let res = client
            .post(format!("{}/api/v1/baskets/{id}/lines", hub.base))
            .header("X-Basket-Token", token)
            .json(&json!({"sku": sku, "quantity": quantity}))
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success(), "add {sku}: {}", res.status());
    }
    client
        .get(format!("{}/api/v1/baskets/{id}", hub.base))
        .header("X-Basket-Token", token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

/// Minor units of a decimal amount as the node writes it (`"12.34"`, as many decimals as the
/// currency has).
pub fn minor_of(decimal: &Value, exponent: u32) -> i64 {
    let text = decimal.as_str().expect("a decimal amount");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    assert_eq!(fraction.len(), exponent as usize, "{text}");
    format!("{whole}{fraction}").parse().expect("an amount")
}

impl Store {
    /// The ids of the promotions the node prices with.
    pub async fn promotion_ids(&self) -> Vec<String> {
        self.get("/api/v1/promotions").await["promotions"]
            .as_array()
            .expect("promotions")
            .iter()
            .map(|p| p["id"].as_str().expect("id").to_string())
            .collect()
    }
}
