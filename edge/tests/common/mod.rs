//! Shared helpers of the edge node's tests: a small catalog, stores and settings in temp dirs,
//! a fake hub speaking the sync protocol over tokio-tungstenite, and polling with a deadline.
#![allow(dead_code)]
// tungstenite's handshake callback returns its own (large) error response type: its API.
#![allow(clippy::result_large_err)]

pub mod boards;
pub mod pos;

use edge_node::{EdgeSettings, Identity, SaleLineRequest, SaleRequest, Store};
use futures_util::{SinkExt, StreamExt};
use protocol::replication::sync::{decode_frame, encode_frame, Frame, MAX_FRAME_BYTES};
use protocol::replication::ReplicaId;
use protocol::{
    Category, CategoryId, Currency, LocationId, Money, Product, ProductId, Sku, Variant,
};
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub const CREDENTIAL: &str = "berlin-node-credential";
pub const API_TOKEN: &str = "test-api-token-0123456789";

pub fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("valid sku")
}

pub fn location() -> LocationId {
    LocationId("store-berlin".into())
}

pub fn product(sku_text: &str, name: &str, price: i64, rate: u32, barcode: &str) -> Product {
    Product {
        id: ProductId::new(),
        slug: name.to_lowercase().replace(' ', "-"),
        name: name.into(),
        brand: "Omni".into(),
        description: format!("{name}, fresh"),
        category: CategoryId("coffee".into()),
        tax_rate_bp: rate,
        tax_class: "standard".into(),
        image: String::new(),
        variants: vec![Variant {
            sku: sku(sku_text),
            title: "Default".into(),
            price: Money::new(price, Currency::EUR),
            compare_at: None,
            barcode: Some(barcode.into()),
            weight_grams: 250,
        }],
        attributes: Default::default(),
    }
}

/// Coffee at EUR 4.99 (19 %), tea at EUR 2.50 (7 %), a mug at EUR 12.00 (19 %).
pub fn catalog() -> (Vec<Category>, Vec<Product>) {
    (
        vec![Category {
            id: CategoryId("coffee".into()),
            name: "Coffee".into(),
            description: String::new(),
            position: 1,
        }],
        vec![
            product("COF-1", "House Coffee", 499, 1900, "4000000000011"),
            product("TEA-1", "Green Tea", 250, 700, "4000000000028"),
            product("MUG-1", "Mug", 1200, 1900, "4000000000035"),
        ],
    )
}

pub fn identity(replica: &str) -> Identity {
    Identity {
        replica: ReplicaId(replica.into()),
        location: location(),
        store_name: "Berlin".into(),
        safety_buffer: 2,
        online_share_percent: 50,
    }
}

/// A store in `dir` with the test catalog installed.
pub fn open_store(dir: &Path, replica: &str) -> Store {
    let store = Store::open(dir, 4, identity(replica)).expect("store opens");
    if store.catalog().version() == 0 {
        let (categories, products) = catalog();
        store
            .apply_catalog_chunk(1, 1, 1, categories, Vec::new(), products)
            .expect("catalog installs");
    }
    store
}

pub fn line(sku_text: &str, quantity: i64) -> SaleLineRequest {
    SaleLineRequest {
        sku: Some(sku_text.into()),
        barcode: None,
        quantity,
    }
}

pub fn cash(amount: &str) -> edge_node::PaymentRequest {
    edge_node::PaymentRequest {
        method: edge_node::PaymentMethod::Cash,
        amount: amount.into(),
        reference: None,
        card: None,
    }
}

pub fn sale(lines: Vec<SaleLineRequest>, paid_cash: &str) -> SaleRequest {
    SaleRequest {
        lines,
        payments: vec![cash(paid_cash)],
        customer: None,
        clerk: Some("anna".into()),
        override_reason: None,
        coupons: Vec::new(),
    }
}

pub fn receipt(sku_text: &str, units: i64) -> edge_node::AdjustmentRequest {
    edge_node::AdjustmentRequest::Receipt {
        sku: sku_text.into(),
        units,
        reason: None,
        clerk: None,
    }
}

/// Settings for a node in `dir` talking to `hub_url`, with quick sync timings.
pub fn settings(dir: &Path, hub_url: &str) -> EdgeSettings {
    let mut s = EdgeSettings {
        data_dir: dir.to_path_buf(),
        hub_url: hub_url.into(),
        credential: Some(CREDENTIAL.to_string().into()),
        api_token: Some(API_TOKEN.to_string().into()),
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        cache_mb: 4,
        ..EdgeSettings::default()
    };
    s.sync.heartbeat_every = Duration::from_millis(300);
    s.sync.idle_timeout = Duration::from_secs(3);
    s.sync.backoff_initial = Duration::from_millis(50);
    s.sync.backoff_max = Duration::from_millis(400);
    s
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the fake hub's handshake callback does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// Checks the bearer credential (401 when wrong).
    Check,
    /// Refuses every upgrade with 401.
    Refuse,
}

pub type HubWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A fake hub: accepts WebSocket upgrades on a port-0 listener and hands each session to the
/// test, which plays the hub's side of the protocol frame by frame.
pub struct FakeHub {
    pub url: String,
    sessions: mpsc::UnboundedReceiver<HubWs>,
    /// Upgrade attempts seen (refused ones too).
    pub attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeHub {
    pub async fn start(door: Door) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let (tx, sessions) = mpsc::unbounded_channel();
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = attempts.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let check =
                        move |req: &Request, res: Response| -> Result<Response, ErrorResponse> {
                            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("");
                            if door == Door::Refuse || auth != format!("Bearer {CREDENTIAL}") {
                                let mut refusal = ErrorResponse::new(Some(
                                    "{\"error\":{\"code\":\"unknown_node\"}}".into(),
                                ));
                                *refusal.status_mut() =
                                    tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
                                return Err(refusal);
                            }
                            Ok(res)
                        };
                    let config = WebSocketConfig::default()
                        .max_message_size(Some(4 * MAX_FRAME_BYTES))
                        .max_frame_size(Some(4 * MAX_FRAME_BYTES));
                    if let Ok(ws) =
                        tokio_tungstenite::accept_hdr_async_with_config(tcp, check, Some(config))
                            .await
                    {
                        let _ = tx.send(ws);
                    }
                });
            }
        });
        FakeHub {
            url: format!("ws://{addr}/api/v1/edge/sync"),
            sessions,
            attempts,
        }
    }

    /// The next session the node opens.
    pub async fn session(&mut self) -> HubSession {
        let ws = tokio::time::timeout(Duration::from_secs(10), self.sessions.recv())
            .await
            .expect("the node connects in time")
            .expect("the hub is listening");
        HubSession { ws }
    }
}

/// One session, as the hub sees it.
pub struct HubSession {
    pub ws: HubWs,
}

impl HubSession {
    pub async fn send(&mut self, frame: &Frame) {
        let bytes = encode_frame(frame).expect("encodes");
        self.send_raw(bytes).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.try_send_raw(bytes).await.expect("sends");
    }

    /// Sends raw bytes as one binary message; the error when the peer cut the link meanwhile.
    pub async fn try_send_raw(
        &mut self,
        bytes: Vec<u8>,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(Message::Binary(bytes.into())).await
    }

    /// The next message of any kind (5 s at most).
    pub async fn next_message(&mut self) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(5), self.ws.next())
            .await
            .expect("a message in time")
            .and_then(Result::ok)
    }

    /// The next frame that is not a heartbeat or the boards' report that goes with it (5 s at
    /// most).
    pub async fn recv(&mut self) -> Frame {
        loop {
            match self.next_message().await {
                Some(Message::Binary(b)) => match decode_frame(&b).expect("decodes") {
                    Frame::Heartbeat { .. } | Frame::BoardsReport { .. } => continue,
                    other => return other,
                },
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Reads frames until one matches (5 s at most each).
    pub async fn recv_until<T>(&mut self, mut f: impl FnMut(Frame) -> Option<T>) -> T {
        loop {
            if let Some(v) = f(self.recv().await) {
                return v;
            }
        }
    }
}
