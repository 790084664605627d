//! Shared setup of the POS tests (staff, overrides, POS pages): staff with argon2 PIN hashes, an
//! offline node with tills, the catalog install with the tea promotion, a JSON API client with
//! sign-in, and a cookie-keeping browser for the `/pos` pages.

use super::{settings, API_TOKEN};
use edge_node::{EdgeHandle, EdgeSettings, StaffMember, StaffRole};
use protocol::promotion::{Promotion, PromotionId, PromotionSpec};
use protocol::{Category, Product};
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;

/// A staff member with `pin` hashed (argon2) as the node stores it.
pub fn member(id: &str, name: &str, role: StaffRole, pin: &str) -> StaffMember {
    StaffMember {
        id: id.into(),
        name: name.into(),
        role,
        pin_hash: edge_node::hash_pin(pin).expect("hashes").into(),
    }
}

/// Settings of a node in `dir` whose hub is unreachable (a free port nobody listens on), with
/// `tills` and `staff`.
pub fn offline_settings(dir: &Path, tills: &[&str], staff: Vec<StaffMember>) -> EdgeSettings {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut s = settings(dir, &format!("ws://127.0.0.1:{port}/sync"));
    s.pos.tills = tills.iter().map(|t| t.to_string()).collect();
    s.pos.staff = staff;
    s
}

/// Tea three for two: the third tea is free.
pub fn tea_promotion() -> Promotion {
    Promotion {
        id: PromotionId::parse("TEA3FOR2").expect("valid id"),
        name: "Tea 3 for 2".into(),
        spec: PromotionSpec::from_json(
            r#"{"combination": {"type": "stackable", "group": "tea"},
                "benefit": {"type": "buy_x_get_y", "buy": {"type": "skus", "skus": ["TEA-1"]}, "buy_quantity": 2,
                            "get": {"type": "skus", "skus": ["TEA-1"]}, "get_quantity": 1, "percent_bp": 10000}}"#,
        )
        .expect("valid spec"),
        created_seq: 1,
    }
}

/// Installs `categories` and `products` with the tea promotion as catalog version 1; with
/// `only_when_empty`, only on a node that has no catalog yet (a restarted node keeps its own).
pub async fn install_catalog(
    node: &EdgeHandle,
    categories: Vec<Category>,
    products: Vec<Product>,
    only_when_empty: bool,
) {
    let store = node.store();
    tokio::task::spawn_blocking(move || {
        if !only_when_empty || store.catalog().version() == 0 {
            store
                .apply_catalog_chunk(1, 1, 1, categories, vec![tea_promotion()], products)
                .expect("catalog installs");
        }
    })
    .await
    .expect("joins");
}

/// The error code of a JSON error body, or "" when it has none.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A client of the node's JSON API.
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(node: &EdgeHandle) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: node.base_url.clone(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        till: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(t) = till {
            req = req.header("X-Till", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("answers");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn sign_in(&self, staff: &str, pin: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/staff/sessions",
            None,
            None,
            Some(json!({"staff_id": staff, "pin": pin})),
        )
        .await
    }

    /// Signs in and returns the session token.
    pub async fn token(&self, staff: &str, pin: &str) -> String {
        let (status, body) = self.sign_in(staff, pin).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().expect("a token").to_string()
    }

    /// Receives `units` of each SKU into stock (with the node's API token).
    pub async fn receive(&self, stock: &[(&str, i64)]) {
        for (sku, units) in stock {
            let (status, body) = self
                .call(
                    Method::POST,
                    "/api/v1/stock/adjustments",
                    Some(API_TOKEN),
                    None,
                    Some(json!({"kind": "receipt", "sku": sku, "units": units})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }

    /// Opens till 1 with a float of EUR 100.00.
    pub async fn open_till(&self, token: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/tills/1/open",
                Some(token),
                None,
                Some(json!({"float": "100.00"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub async fn sell(&self, token: &str, till: Option<&str>, sale: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/sales", Some(token), till, Some(sale))
            .await
    }
}

/// A browser for the POS pages: keeps cookies, does not follow redirects (the tests look at
/// them).
pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// Where a redirect leads, or "" when the answer has no Location.
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first field `name` on the page, if it has one.
    pub fn field_if_any(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        self.body[start..].split('"').next().map(str::to_string)
    }

    /// The value of the first field `name` on the page.
    pub fn field(&self, name: &str) -> String {
        self.field_if_any(name)
            .unwrap_or_else(|| panic!("no field {name} on the page:\n{}", self.body))
    }
}

impl Browser {
    pub fn new(node: &EdgeHandle) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: node.base_url.clone(),
        }
    }

    pub async fn page(&self, req: reqwest::RequestBuilder) -> Page {
        let res = req.send().await.expect("answers");
        Page {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.text().await.expect("a body"),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.page(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.page(self.client.post(format!("{}{path}", self.base)).form(form))
            .await
    }
}

/// Everything the node logs in this test binary, at debug level and up.
pub fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .without_time()
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logs
    })
    .clone()
}

pub struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
