//! A store's edge node as the hub sees it: a WebSocket client speaking the frames of
//! `protocol::replication::sync`, and hubs with the test stores `berlin` and `paris`.

use super::eventually;
use futures_util::{SinkExt, StreamExt};
use hub::config::EdgeNodeSettings;
use hub::HubSettings;
use protocol::replication::sync::{
    decode_frame, encode_frame, Frame, Item, Scarce, Vector, PROTOCOL_VERSION,
};
use protocol::replication::{Hlc, ReplicaId, SaleLine, SaleRecord};
use protocol::{Currency, LocationId, Money, Sku};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use ulid::Ulid;

pub const ADMIN: &str = "edge-admin-token";
pub const BERLIN: &str = "berlin-credential";
pub const PARIS: &str = "paris-credential";
pub const WAIT: Duration = Duration::from_secs(10);

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn node_settings(replica: &str, location: &str, credential: &str) -> EdgeNodeSettings {
    EdgeNodeSettings {
        replica: replica.into(),
        location: location.into(),
        name: format!("Store {replica}"),
        credential_sha256: hex::encode(hub::auth::token_hash(credential)),
    }
}

pub fn settings(dir: &std::path::Path) -> HubSettings {
    let mut s = super::settings(dir);
    s.admin_token = Some(ADMIN.to_string().into());
    s.edge.nodes = vec![
        node_settings("berlin", "store-berlin", BERLIN),
        node_settings("paris", "store-paris", PARIS),
    ];
    s
}

pub async fn spawn_with(
    settings_for: impl FnOnce(&std::path::Path) -> HubSettings,
) -> super::TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = settings_for(dir.path());
    let hub = super::spawn_with(dir, s, Arc::new(hub::clock::SystemClock), true).await;
    // The replica looks for a new catalog every 250 ms and offers none while it is empty: wait
    // until it has the seeded one (version 2), so a node's first welcome brings the catalog
    // before anything else.
    eventually(WAIT, || async {
        let live = hub.handle.edge.live().await.expect("live");
        live.iter().all(|n| n.catalog_version >= 2).then_some(())
    })
    .await;
    hub
}

pub async fn spawn() -> super::TestHub {
    spawn_with(settings).await
}

pub fn berlin() -> ReplicaId {
    ReplicaId("berlin".into())
}

pub fn store_berlin() -> LocationId {
    LocationId("store-berlin".into())
}

pub fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("sku")
}

pub fn stamp() -> Hlc {
    Hlc {
        ms: 1_700_000_000_000,
        c: 0,
        r: berlin(),
    }
}

pub fn sale(units: u32) -> SaleRecord {
    let price = Money::new(450, Currency::EUR);
    SaleRecord {
        id: Ulid::new(),
        number: "berlin-1".into(),
        replica: berlin(),
        location: store_berlin(),
        at: stamp(),
        lines: vec![SaleLine {
            sku: sku("TEA"),
            name: "Green Tea".into(),
            quantity: units,
            unit_price: price,
            total: Money::new(450 * i64::from(units), Currency::EUR),
            tax_rate_bp: 700,
        }],
        total: Money::new(450 * i64::from(units), Currency::EUR),
        taxes: Vec::new(),
        payments: Vec::new(),
        customer: None,
        clerk: Some("ada".into()),
        promotions: Default::default(),
        coupons: Vec::new(),
    }
}

pub fn tea_key() -> Scarce {
    Scarce::Stock {
        sku: sku("TEA"),
        location: store_berlin(),
    }
}

pub fn hello(replica: &str, location: &str, have: Vector, catalog_version: u64) -> Frame {
    Frame::Hello {
        version: PROTOCOL_VERSION,
        replica: ReplicaId(replica.into()),
        location: LocationId(location.into()),
        have,
        catalog_version,
        time_ms: 1_700_000_000_000,
        pending: 0,
        // As a node before catalog deltas: the whole catalog at each new version.
        catalog_fingerprint: String::new(),
        catalog_deltas: false,
        // A node that takes coupons at the till (see `hello_before_coupons` for one that
        // does not).
        coupons: true,
    }
}

/// `Hello` of a node from before coupons at the till: `coupons` false, as an absent field
/// decodes.
pub fn hello_before_coupons(replica: &str, location: &str) -> Frame {
    let mut frame = hello(replica, location, Vector::new(), 0);
    if let Frame::Hello { coupons, .. } = &mut frame {
        *coupons = false;
    }
    frame
}

/// A node's end of the socket, with frames read ahead while waiting for an ack.
pub struct Node {
    pub ws: Socket,
    pub ahead: std::collections::VecDeque<Frame>,
}

pub async fn connect(
    hub: &super::TestHub,
    credential: Option<&str>,
) -> Result<Node, Box<tokio_tungstenite::tungstenite::Error>> {
    connect_to(hub.addr, credential).await
}

/// Opens a sync session with the hub at `addr`, with `credential` if given.
pub async fn connect_to(
    addr: std::net::SocketAddr,
    credential: Option<&str>,
) -> Result<Node, Box<tokio_tungstenite::tungstenite::Error>> {
    let mut req = format!("ws://{addr}/api/v1/edge/sync")
        .into_client_request()
        .expect("request");
    if let Some(c) = credential {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {c}").parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| Node {
            ws,
            ahead: Default::default(),
        })
        .map_err(Box::new)
}

impl Node {
    pub async fn send(&mut self, frame: &Frame) {
        let bytes = encode_frame(frame).expect("encodes");
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("sent");
    }

    pub async fn next_message(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("a message in time")
            .map(|m| m.expect("a readable message"))
    }

    /// The next frame that is not a heartbeat.
    pub async fn recv(&mut self) -> Frame {
        if let Some(frame) = self.ahead.pop_front() {
            return frame;
        }
        self.read().await
    }

    pub async fn read(&mut self) -> Frame {
        loop {
            match self.next_message().await {
                Some(Message::Binary(bytes)) => match decode_frame(&bytes).expect("decodes") {
                    Frame::Heartbeat { .. } => continue,
                    frame => return frame,
                },
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Reads until the hub's close frame: its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next_message().await {
                Some(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Message::Close(None)) | None => panic!("closed without a code"),
                Some(_) => continue,
            }
        }
    }

    /// `Hello` and the `Welcome`; reads the catalog chunks that follow when the node is behind.
    pub async fn handshake(
        &mut self,
        replica: &str,
        location: &str,
        have: Vector,
        catalog: Option<u64>,
    ) -> Frame {
        self.send(&hello(replica, location, have, catalog.unwrap_or(0)))
            .await;
        let welcome = self.recv().await;
        let Frame::Welcome {
            catalog_version, ..
        } = &welcome
        else {
            panic!("expected welcome, got {welcome:?}");
        };
        if catalog != Some(*catalog_version) {
            loop {
                match self.recv().await {
                    Frame::Catalog { part, parts, .. } => {
                        if part + 1 == parts {
                            break;
                        }
                    }
                    other => panic!("expected catalog chunks, got {other:?}"),
                }
            }
        }
        welcome
    }

    pub async fn deltas(&mut self, from_seq: u64, to_seq: u64, items: Vec<Item>) -> u64 {
        self.send(&Frame::Deltas {
            origin: berlin(),
            from_seq,
            to_seq,
            items,
        })
        .await;
        // The hub's own batches may come before the ack: keep them for later.
        loop {
            match self.read().await {
                Frame::Ack { origin, seq } => {
                    assert_eq!(origin, berlin());
                    return seq;
                }
                other => self.ahead.push_back(other),
            }
        }
    }

    /// The next batch of the hub's stream: its range and items.
    pub async fn hub_batch(&mut self) -> (u64, u64, Vec<Item>) {
        match self.recv().await {
            Frame::Deltas {
                origin,
                from_seq,
                to_seq,
                items,
            } => {
                assert!(origin.is_hub());
                (from_seq, to_seq, items)
            }
            other => panic!("expected the hub's deltas, got {other:?}"),
        }
    }
}
