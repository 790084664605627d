//! Shared helpers: a real hub on port 0 in a temp dir with a small known catalog.

#![allow(dead_code)]

#[cfg(feature = "cluster-tests")]
pub mod cluster;
pub mod edge_node;
pub mod pages;

use hub::clock::{Clock, SystemClock};
use hub::{Application, HubHandle, HubSettings};
use protocol::{Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct TestHub {
    pub addr: SocketAddr,
    pub handle: HubHandle,
    pub server: actix_web::dev::ServerHandle,
    pub dir: tempfile::TempDir,
}

impl TestHub {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Registers a customer (password "correct horse battery"), consenting to nothing;
    /// answers the signed-in body.
    pub async fn register(&self, c: &reqwest::Client, email: &str) -> serde_json::Value {
        self.register_with(c, email, serde_json::json!([])).await
    }

    /// Registers a customer who consents to marketing email at registration.
    pub async fn register_consenting(&self, c: &reqwest::Client, email: &str) -> serde_json::Value {
        self.register_with(c, email, serde_json::json!([marketing_email()]))
            .await
    }

    /// Registers a customer with these consent choices (`[{"channel", "purpose", "granted"}]`).
    pub async fn register_with(
        &self,
        c: &reqwest::Client,
        email: &str,
        consents: serde_json::Value,
    ) -> serde_json::Value {
        let res = c
            .post(self.url("/api/v1/customers"))
            .json(&serde_json::json!({"email": email, "name": "Ada", "password": "correct horse battery", "consents": consents}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), reqwest::StatusCode::CREATED);
        res.json().await.expect("json")
    }
}

/// The consent choice a marketing mail needs.
pub fn marketing_email() -> serde_json::Value {
    serde_json::json!({"channel": "email", "purpose": "marketing", "granted": true})
}

pub fn settings(dir: &std::path::Path) -> HubSettings {
    let mut s = HubSettings {
        listen: "127.0.0.1:0".parse().expect("valid addr"),
        data_dir: dir.to_path_buf(),
        cache_mb: 8,
        workers: 2,
        actor_threads: 2,
        ..HubSettings::default()
    };
    s.channels.sign_in_per_account_per_minute = 1000;
    s.channels.sign_in_per_address_per_minute = 1000;
    s
}

pub fn product(name: &str, sku: &str, price: i64, category: &str) -> Product {
    Product {
        id: ProductId::new(),
        slug: name.to_lowercase().replace(' ', "-"),
        name: name.into(),
        brand: "Test Roasters".into(),
        description: format!("{name}, freshly made."),
        category: CategoryId(category.into()),
        tax_rate_bp: 700,
        tax_class: "reduced".into(),
        image: format!("/images/{}.svg", name.to_lowercase().replace(' ', "-")),
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

/// The test catalog: SKU `BEANS` (stock 100), `TEA` (stock 5), `CUPS` (stock 0), plus 30
/// filler products for paging.
pub async fn seed(handle: &HubHandle) {
    let categories = vec![
        Category {
            id: CategoryId("coffee".into()),
            name: "Coffee".into(),
            description: "Beans".into(),
            position: 1,
        },
        Category {
            id: CategoryId("tea".into()),
            name: "Tea".into(),
            description: "Leaves".into(),
            position: 2,
        },
    ];
    let mut products = vec![
        product("House Beans", "BEANS", 1299, "coffee"),
        product("Green Tea", "TEA", 450, "tea"),
        product("Espresso Cups", "CUPS", 2500, "coffee"),
    ];
    let mut stock = vec![
        (Sku::parse("BEANS").expect("sku"), 100),
        (Sku::parse("TEA").expect("sku"), 5),
        (Sku::parse("CUPS").expect("sku"), 0),
    ];
    for i in 0..30 {
        let sku = format!("FILL-{i:02}");
        products.push(product(
            &format!("Filler Blend {i:02}"),
            &sku,
            500 + i,
            "coffee",
        ));
        stock.push((Sku::parse(&sku).expect("sku"), 50));
    }
    handle
        .upsert_catalog(categories, products)
        .await
        .expect("catalog stored");
    handle.set_online_stock(stock).await.expect("stock stored");
}

pub async fn spawn_with(
    dir: tempfile::TempDir,
    settings: HubSettings,
    clock: Arc<dyn Clock>,
    seed_catalog: bool,
) -> TestHub {
    let app = Application::build(settings, clock)
        .await
        .expect("hub builds");
    let addr = app.address();
    let handle = app.handle();
    let server = app.server_handle();
    actix_web::rt::spawn(app.run());
    if seed_catalog {
        seed(&handle).await;
    }
    TestHub {
        addr,
        handle,
        server,
        dir,
    }
}

pub async fn spawn() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = settings(dir.path());
    spawn_with(dir, s, Arc::new(SystemClock), true).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
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
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a request and reads its JSON body, failing the test on a transport error or non-JSON.
#[allow(async_fn_in_trait)]
pub trait SendForJson {
    async fn json_body(self) -> serde_json::Value;
}

impl SendForJson for reqwest::RequestBuilder {
    async fn json_body(self) -> serde_json::Value {
        self.send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("a JSON body")
    }
}

/// A basket's live WebSocket (`/api/v1/baskets/{id}/live`) as a signed-in web page holds it.
pub struct LiveBasket {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl LiveBasket {
    /// Opens the socket with the customer's bearer session; answers it with the first view.
    pub async fn open(
        hub: &TestHub,
        basket: &str,
        session: &str,
    ) -> (LiveBasket, serde_json::Value) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}/api/v1/baskets/{basket}/live", hub.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {session}").parse().expect("header"),
        );
        let (socket, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket opens");
        let mut live = LiveBasket { socket };
        let first = live.next_view().await;
        (live, first)
    }

    async fn next_view(&mut self) -> serde_json::Value {
        use futures_util::StreamExt;
        loop {
            let frame = self.socket.next().await.expect("a frame").expect("ok");
            if let Ok(text) = frame.to_text() {
                return serde_json::from_str(text).expect("json");
            }
        }
    }

    /// The first view with `item_count` items, if one comes within `within`.
    pub async fn wait_for_items(
        &mut self,
        items: u64,
        within: Duration,
    ) -> Option<serde_json::Value> {
        tokio::time::timeout(within, async {
            loop {
                let view = self.next_view().await;
                if view["item_count"] == items {
                    return view;
                }
            }
        })
        .await
        .ok()
    }
}

/// A paid web order `id` numbered `number` for `customer`, placed at `at`, as checkout makes
/// one (for tests that store orders directly).
pub fn order_record(
    id: protocol::OrderId,
    number: &str,
    customer: protocol::CustomerId,
    email: &str,
    at: time::OffsetDateTime,
) -> protocol::order::OrderRecord {
    use serde_json::json;
    let eur = |minor: i64| json!({"minor": minor, "currency": "EUR"});
    serde_json::from_value(json!({
        "id": id,
        "number": number,
        "checkout": protocol::CheckoutId::new(),
        "basket": protocol::BasketId::new(),
        "customer": customer,
        "subject": protocol::Subject::Customer(customer),
        "email": email,
        "channel": "web",
        "address": {"name": "A", "line1": "Street 1", "line2": "", "city": "Berlin", "region": "",
                    "postcode": "10115", "country": "DE", "phone": ""},
        "breakdown": {
            "currency": "EUR", "country": "DE", "prices_include_tax": true, "item_count": 1,
            "lines": [], "subtotal": eur(1299), "discount": eur(0),
            "shipping": {"id": "standard", "name": "Standard", "price": eur(0), "delivery": "2 days"},
            "taxes": [], "tax_total": eur(0), "total": eur(1299), "weight_grams": 0,
        },
        "payment": {"provider": "sim", "session_id": "cs", "payment_intent": null, "amount": eur(1299), "refunds": []},
        "progress": "paid",
        "lookup_key": "key",
        "created_at": at.format(&time::format_description::well_known::Rfc3339).expect("time"),
        "stock_committed": true,
    }))
    .expect("an order record")
}
