//! A store's till with customers (`docs/pos.md`, "Customers at the till"): the hub with the mail
//! sink as its SMTP server, one node (replica `berlin`) behind a proxy with a clerk signed in at
//! till 1, open; a shopper with a phone and loyalty number and a web basket.

use super::shop::{start_process, SimProcess};
use super::stores::*;
use super::HubProcess;
use reqwest::Method;
use serde_json::{json, Value};
use simulators::load::proxy::Proxy;

pub const PIN: &str = "4711";
pub const EMAIL: &str = "ada.lovelace@example.com";

pub struct Till {
    pub _dir: tempfile::TempDir,
    pub hub: HubProcess,
    pub store: Store,
    pub _mail: SimProcess,
    /// The mail sink's inbox (`http://…`).
    pub inbox: String,
    /// The clerk's session token.
    pub staff: String,
}

impl Till {
    /// A call to the node's API with the clerk's session (or another token).
    pub async fn call(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let res = super::http_client()
            .post(format!("{}{path}", self.store.node.base))
            .bearer_auth(token)
            .header("X-Till", "1")
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn lookup(&self, body: Value) -> (u16, Value) {
        self.call("/api/v1/pos/customers/lookup", &self.staff, body)
            .await
    }

    pub async fn pull(&self, customer: &str, body: Value) -> (u16, Value) {
        let path = format!("/api/v1/pos/customers/{customer}/basket/pull");
        self.call(&path, &self.staff, body).await
    }

    /// Messages in the mail sink for `to`.
    pub async fn mails(&self, to: &str) -> Vec<Value> {
        mails(&self.inbox, to).await
    }
}

/// Messages in the mail sink at `inbox` for `to`.
pub async fn mails(inbox: &str, to: &str) -> Vec<Value> {
    let body: Value = super::http_client()
        .get(format!("{inbox}/api/messages?to={to}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    body["messages"].as_array().cloned().unwrap_or_default()
}

/// The hub (with the mail sink as its SMTP server), one node with a clerk, till 1 open.
pub async fn till() -> Till {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mail, line) = start_process(
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
    let (smtp, inbox) = line.split_once(", inbox on ").expect("the mail line");
    let (host, port) = smtp.rsplit_once(':').expect("host:port");
    let config = hub_config(dir.path(), &[("berlin", "store-berlin")]);
    let mut toml = std::fs::read_to_string(&config).expect("read");
    toml.push_str(&format!("[email]\nhost = \"{host}\"\nport = {port}\n"));
    std::fs::write(&config, toml).expect("written");
    let hub = start_hub(dir.path(), &config);

    let pin_hash = edge_node::hash_pin(PIN).expect("hashes");
    let node_config = dir.path().join("edge.toml");
    std::fs::write(
        &node_config,
        format!(
            "[pos]\ntills = [\"1\"]\n[[pos.staff]]\nid = \"ana\"\nname = \"Ana Clerk\"\nrole = \"clerk\"\npin_hash = \"{pin_hash}\"\n"
        ),
    )
    .expect("written");
    let proxy = Proxy::start(hub_addr(&hub))
        .await
        .expect("the proxy listens");
    let data = dir.path().join("berlin");
    let env = node_env("berlin", "store-berlin", &data, &proxy);
    let path = node_config.to_str().expect("utf-8").to_string();
    let node = tokio::task::block_in_place(|| super::start_edge_with(&["--config", &path], &env));
    let store = Store {
        replica: "berlin".into(),
        location: "store-berlin".into(),
        data,
        proxy,
        node,
    };
    store.online().await;
    let (status, session) = store
        .post(
            "/api/v1/staff/sessions",
            json!({"staff_id": "ana", "pin": PIN}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let staff = session["token"].as_str().expect("a token").to_string();
    let t = Till {
        _dir: dir,
        hub,
        store,
        _mail: mail,
        inbox: inbox.trim_end_matches('/').to_string(),
        staff,
    };
    let (status, open) = t
        .call("/api/v1/tills/1/open", &t.staff, json!({"float": "100.00"}))
        .await;
    assert_eq!(status, 201, "{open}");
    t
}

/// A shopper registered on the hub with a phone and loyalty number: (customer id, session
/// token, basket id).
pub async fn shopper(t: &Till) -> (String, String, String) {
    let (status, signed) = hub_call(
        &t.hub,
        Method::POST,
        "/api/v1/customers",
        "",
        Some(json!({"email": "Ada.Lovelace@Example.com", "name": "Ada Lovelace", "password": "analytical engine 1843"})),
    )
    .await;
    assert_eq!(status, 201, "{signed}");
    let token = signed["session_token"].as_str().expect("token").to_string();
    let id = signed["customer"]["id"].as_str().expect("id").to_string();
    let basket = signed["customer"]["basket_id"]
        .as_str()
        .expect("basket")
        .to_string();
    let (status, details) = hub_call(
        &t.hub,
        Method::PUT,
        "/api/v1/customers/me/in-store",
        &token,
        Some(json!({"phone": "+49 30 555-0001", "loyalty_number": "7000 1234"})),
    )
    .await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(
        details,
        json!({"phone": "+49305550001", "loyalty_number": "70001234"})
    );
    (id, token, basket)
}

/// Puts `n` lines of SKUs the store sells into the shopper's web basket (SKUs with online
/// stock); answers the SKUs and quantities.
pub async fn fill_basket(t: &Till, token: &str, basket: &str, n: usize) -> Vec<(String, u64)> {
    let mut added = Vec::new();
    for i in 0..20 {
        if added.len() == n {
            break;
        }
        let sku = a_sku(&t.store, i).await;
        let quantity = (added.len() + 1) as u64;
        let (status, _) = hub_call(
            &t.hub,
            Method::POST,
            &format!("/api/v1/baskets/{basket}/lines"),
            token,
            Some(json!({"sku": sku, "quantity": quantity})),
        )
        .await;
        if status == 200 || status == 201 {
            added.push((sku, quantity));
        }
    }
    assert_eq!(added.len(), n, "enough SKUs in stock online");
    added
}

pub async fn web_lines(t: &Till, token: &str, basket: &str) -> Vec<(String, u64)> {
    let (status, view) = hub_call(
        &t.hub,
        Method::GET,
        &format!("/api/v1/baskets/{basket}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    view["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().expect("sku").to_string(),
                l["quantity"].as_u64().expect("quantity"),
            )
        })
        .collect()
}
