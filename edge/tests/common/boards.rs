//! Helpers of the board tests: a node with boards, a board's WebSocket client, a playlist, and
//! a fake hub audience endpoint (`GET /api/v1/edge/boards/audience/{customer}`).

use super::*;
use edge_node::boards::{hash_board_token, BoardConfig};
use edge_node::{EdgeHandle, EdgeNode};
use protocol::board::{BoardItem, BoardPlaylist};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const ENTRANCE_TOKEN: &str = "entrance-board-token-0123456789";
pub const KIOSK_TOKEN: &str = "kiosk-board-token-0123456789ab";

/// Settings with two boards (`entrance`, and the kiosk `kiosk`) and quick board timings.
pub fn board_settings(dir: &Path, hub_url: &str) -> EdgeSettings {
    let mut s = settings(dir, hub_url);
    s.boards.list = vec![
        BoardConfig {
            id: "entrance".into(),
            name: "Entrance TV".into(),
            kiosk: false,
            token_sha256: hash_board_token(ENTRANCE_TOKEN).into(),
        },
        BoardConfig {
            id: "kiosk".into(),
            name: "Coffee kiosk".into(),
            kiosk: true,
            token_sha256: hash_board_token(KIOSK_TOKEN).into(),
        },
    ];
    s.boards.presence_for = Duration::from_secs(60);
    s
}

pub fn content(id: &str, title: &str) -> BoardItem {
    BoardItem {
        id: id.into(),
        title: title.into(),
        body: String::new(),
        sku: None,
        offer_quantity: None,
        seconds: None,
    }
}

pub fn product_item(id: &str, sku_text: &str) -> BoardItem {
    BoardItem {
        sku: Some(sku(sku_text)),
        ..content(id, "")
    }
}

/// The default items (a welcome, coffee with its stock) and a `coffee-lovers` segment.
pub fn playlist() -> BoardPlaylist {
    BoardPlaylist {
        items: vec![
            content("welcome", "Welcome to Berlin"),
            product_item("coffee", "COF-1"),
        ],
        segments: BTreeMap::from([(
            "coffee-lovers".to_string(),
            vec![content("beans", "Fresh beans for you")],
        )]),
        dwell_secs: 5,
    }
}

/// Starts a node with boards whose hub is at `hub_url`, its catalog loaded, `units` of COF-1
/// on hand, and `playlist` at `version` (0: none).
pub async fn board_node(
    dir: &Path,
    hub_url: &str,
    units: i64,
    version: u64,
    list: BoardPlaylist,
) -> EdgeHandle {
    let node = EdgeNode::start(board_settings(dir, hub_url))
        .await
        .expect("starts");
    let store = node.store();
    let (categories, products) = catalog();
    store
        .apply_catalog_chunk(1, 0, 1, categories, Vec::new(), products)
        .expect("catalog");
    if units > 0 {
        store
            .adjust(&receipt("COF-1", units), None)
            .expect("receipt");
    }
    if version > 0 {
        edge_node::boards::store_playlist(&store, version, list).expect("playlist");
    }
    node
}

pub type BoardWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A board's connection.
pub struct Board {
    pub ws: BoardWs,
}

impl Board {
    /// Connects as board `id` and says hello with `token`.
    pub async fn connect(node: &EdgeHandle, id: &str, token: &str) -> Board {
        let url = format!("ws://{}/boards/{id}/ws", node.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the node upgrades");
        let mut board = Board { ws };
        board
            .send(serde_json::json!({ "t": "hello", "token": token }))
            .await;
        board
    }

    pub async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("sends");
    }

    /// The next message: `Ok(json)` for a text frame, `Err(close code)` for a close (5 s at most).
    pub async fn next(&mut self) -> Result<Value, u16> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a message in time");
            match m {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(t.as_str()).expect("JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(1005, |f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                other => panic!("the board's socket ended: {other:?}"),
            }
        }
    }

    /// Reads feed messages until one satisfies `f` (5 s at most each).
    pub async fn feed_until(&mut self, mut f: impl FnMut(&Value) -> bool) -> Value {
        loop {
            match self.next().await {
                Ok(m) if m["t"] == "feed" && f(&m) => return m,
                Ok(_) => continue,
                Err(code) => panic!("closed with {code} before the awaited feed"),
            }
        }
    }
}

/// An item of a feed message by id.
pub fn feed_item<'a>(feed: &'a Value, id: &str) -> Option<&'a Value> {
    feed["items"].as_array()?.iter().find(|i| i["id"] == id)
}

/// What the fake hub answers about each customer, and how often it was asked.
#[derive(Clone, Default)]
pub struct Audiences {
    pub answers: Arc<Mutex<BTreeMap<String, Value>>>,
    pub asked: Arc<std::sync::atomic::AtomicUsize>,
}

/// A fake hub that answers audience lookups (with the node credential) and nothing else; its
/// `ws://…/api/v1/edge/sync` URL for the node, and the server to stop it.
pub async fn audience_hub(audiences: Audiences) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    async fn answer(
        req: HttpRequest,
        path: web::Path<String>,
        a: web::Data<Audiences>,
    ) -> HttpResponse {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {CREDENTIAL}") {
            return HttpResponse::Unauthorized().finish();
        }
        a.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let answers = a.answers.lock().expect("lock");
        HttpResponse::Ok().json(
            answers
                .get(path.as_str())
                .cloned()
                .unwrap_or(serde_json::json!({"personalise": false, "segments": []})),
        )
    }
    let data = web::Data::new(audiences);
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/api/v1/edge/boards/audience/{customer}",
            web::get().to(answer),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("binds");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("ws://{addr}/api/v1/edge/sync"), handle)
}
