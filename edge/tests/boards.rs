//! The store's advertising boards, over the node's real HTTP and WebSocket: a board needs its
//! own token and that token opens no POS endpoint; the playlist comes from the hub by version
//! and keeps playing with the hub gone and after a restart; boards see stock change live;
//! heartbeats keep a board lit and silence darkens it; a consenting shopper's segment shows for
//! a while, a shopper without consent (or unknown offline) gets the default; impressions and
//! interactions reach the hub as board events, after an outage too.

mod common;

use common::boards::*;
use common::*;
use edge_node::EdgeNode;
use protocol::replication::sync::{Frame, Item};
use protocol::replication::ReplicaId;
use protocol::{Channel, CustomerId, EventKind, Subject};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

async fn get(node: &edge_node::EdgeHandle, path: &str, token: &str) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .get(format!("{}{path}", node.base_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("answers");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn beacon(
    node: &edge_node::EdgeHandle,
    board: &str,
    token: &str,
    customer: &str,
) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/boards/{board}/presence", node.base_url))
        .bearer_auth(token)
        .json(&json!({ "customer": customer }))
        .send()
        .await
        .expect("answers");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A hub URL where nothing listens (the node retries in the background).
fn nowhere() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("ws://127.0.0.1:{port}/api/v1/edge/sync")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_needs_its_own_token_and_that_token_opens_no_pos_endpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = board_node(dir.path(), &nowhere(), 10, 1, playlist()).await;

    // Another board's token, or none, is refused with a close code.
    let mut wrong = Board::connect(&node, "entrance", KIOSK_TOKEN).await;
    assert_eq!(wrong.next().await, Err(4001));
    let mut right = Board::connect(&node, "entrance", ENTRANCE_TOKEN).await;
    assert_eq!(right.next().await.expect("welcome")["t"], "welcome");

    // The board's token is not a key to the till or to ops.
    for path in [
        "/api/v1/sales",
        "/api/v1/stock",
        "/api/v1/boards",
        "/api/v1/pos/audit",
    ] {
        let (status, body) = get(&node, path, ENTRANCE_TOKEN).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    let sale = reqwest::Client::new()
        .post(format!("{}/api/v1/sales", node.base_url))
        .bearer_auth(ENTRANCE_TOKEN)
        .json(&sale(vec![line("COF-1", 1)], "5.00"))
        .send()
        .await
        .expect("answers");
    assert_eq!(sale.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        node.store()
            .stock_of(&sku("COF-1"))
            .expect("stock")
            .map(|l| l.on_hand),
        Some(10)
    );

    // A beacon needs that board's token; an unknown board is 404; a bad loyalty id is 400.
    let shopper = CustomerId::new().to_string();
    assert_eq!(
        beacon(&node, "entrance", KIOSK_TOKEN, &shopper).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        beacon(&node, "nope", ENTRANCE_TOKEN, &shopper).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = beacon(&node, "entrance", ENTRANCE_TOKEN, "not-a-card").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_loyalty_id"))
    );
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playlist_comes_from_the_hub_by_version_and_plays_offline_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = FakeHub::start(Door::Check).await;
    let node = board_node(dir.path(), &hub.url, 4, 0, playlist()).await;
    let mut board = Board::connect(&node, "entrance", ENTRANCE_TOKEN).await;
    let empty = board.feed_until(|_| true).await;
    assert_eq!(
        (
            empty["version"].as_u64(),
            empty["items"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );

    let mut session = hub.session().await;
    assert!(matches!(session.recv().await, Frame::Hello { .. }));
    session
        .send(&Frame::Welcome {
            have: BTreeMap::from([(ReplicaId("berlin".into()), 0)]),
            catalog_version: 1,
            hub_time_ms: edge_node::store::now_ms(),
        })
        .await;
    let have = session
        .recv_until(|f| match f {
            Frame::BoardsHave { version } => Some(version),
            _ => None,
        })
        .await;
    assert_eq!(have, 0, "a node without a playlist says so");
    session
        .send(&Frame::Boards {
            version: 3,
            playlist: playlist(),
        })
        .await;
    let feed = board.feed_until(|f| f["version"] == 3).await;
    assert_eq!(
        feed_item(&feed, "welcome").expect("welcome")["title"],
        "Welcome to Berlin"
    );
    let coffee = feed_item(&feed, "coffee").expect("coffee");
    assert_eq!(
        (
            coffee["title"].as_str(),
            coffee["price"].as_str(),
            coffee["currency"].as_str()
        ),
        (Some("House Coffee"), Some("4.99"), Some("EUR"))
    );
    assert_eq!(coffee["stock"]["label"], "Only 4 left");

    // The hub goes away: the board keeps its feed, and stock still moves on it.
    drop(session);
    drop(hub);
    // (The hub was granted part of the rights while connected: the clerk sells the units on the
    // shelf as a recorded override.)
    let mut last_four = sale(vec![line("COF-1", 4)], "20.00");
    last_four.override_reason = Some("units on the shelf".into());
    node.sell(last_four, None).await.expect("sold");
    let sold_out = board
        .feed_until(|f| feed_item(f, "coffee").is_some_and(|c| c["stock"]["state"] == "out"))
        .await;
    assert_eq!(
        feed_item(&sold_out, "coffee").expect("coffee")["stock"]["label"],
        "Sold out"
    );
    node.adjust(receipt("COF-1", 2), None)
        .await
        .expect("received");
    let back = board
        .feed_until(|f| feed_item(f, "coffee").is_some_and(|c| c["stock"]["state"] == "back"))
        .await;
    assert_eq!(
        feed_item(&back, "coffee").expect("coffee")["stock"]["label"],
        "Back in stock – only 2 left"
    );

    // After a restart, with no hub at all, the board plays version 3 from the node's cache.
    drop(board);
    node.stop().await.expect("stops");
    let node = EdgeNode::start(board_settings(dir.path(), &nowhere()))
        .await
        .unwrap_or_else(|e| panic!("restarts: {e}"));
    let mut board = Board::connect(&node, "entrance", ENTRANCE_TOKEN).await;
    let feed = board.feed_until(|f| f["version"] == 3).await;
    assert!(feed_item(&feed, "coffee").is_some(), "{feed}");
    node.stop().await.expect("stops");

    // Back with a hub: the node says it has version 3, so the hub need not send it again.
    let mut hub = FakeHub::start(Door::Check).await;
    let node = EdgeNode::start(board_settings(dir.path(), &hub.url))
        .await
        .expect("restarts");
    let mut session = hub.session().await;
    assert!(matches!(session.recv().await, Frame::Hello { .. }));
    session
        .send(&Frame::Welcome {
            have: BTreeMap::from([(ReplicaId("berlin".into()), 0)]),
            catalog_version: 1,
            hub_time_ms: edge_node::store::now_ms(),
        })
        .await;
    let have = session
        .recv_until(|f| match f {
            Frame::BoardsHave { version } => Some(version),
            _ => None,
        })
        .await;
    assert_eq!(have, 3);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_board_lit_for_ops_and_silence_darkens_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = board_settings(dir.path(), &nowhere());
    s.boards.heartbeat_every = Duration::from_millis(200);
    s.boards.dark_after = Duration::from_millis(800);
    let node = EdgeNode::start(s).await.expect("starts");
    let lit = |list: &Value, id: &str| {
        list["boards"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["id"] == id))
            .map(|b| {
                (
                    b["dark"].as_bool(),
                    b["connections"].as_u64(),
                    b["last_seen"].is_string(),
                )
            })
    };
    let (status, list) = get(&node, "/api/v1/boards", API_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        lit(&list, "entrance"),
        Some((Some(true), Some(0), false)),
        "never seen: dark"
    );

    let mut board = Board::connect(&node, "entrance", ENTRANCE_TOKEN).await;
    assert_eq!(board.next().await.expect("welcome")["heartbeat_secs"], 0.2);
    // Heartbeats for longer than dark_after keep it lit.
    for _ in 0..6 {
        board.send(json!({"t": "heartbeat"})).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, list) = get(&node, "/api/v1/boards", API_TOKEN).await;
    assert_eq!(lit(&list, "entrance"), Some((Some(false), Some(1), true)));
    assert_eq!(lit(&list, "kiosk"), Some((Some(true), Some(0), false)));
    // Silence: the node closes the connection and ops see the board dark.
    let closed = loop {
        match board.next().await {
            Err(code) => break code,
            Ok(_) => continue,
        }
    };
    assert_eq!(closed, 4008);
    let (_, list) = get(&node, "/api/v1/boards", API_TOKEN).await;
    assert_eq!(lit(&list, "entrance"), Some((Some(true), Some(0), true)));
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consenting_shopper_gets_their_segment_for_a_while_and_others_the_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audiences = Audiences::default();
    let (fan, stranger, shy) = (CustomerId::new(), CustomerId::new(), CustomerId::new());
    audiences.answers.lock().expect("lock").extend([
        (
            fan.to_string(),
            json!({"personalise": true, "segments": ["coffee-lovers"]}),
        ),
        (
            shy.to_string(),
            json!({"personalise": false, "segments": []}),
        ),
        // A loyalty card (as scanned, normalised to its digits): the hub names its consenting
        // owner for their events.
        (
            "70004242".to_string(),
            json!({"personalise": true, "segments": ["coffee-lovers"], "customer": fan}),
        ),
    ]);
    let (hub_url, hub) = audience_hub(audiences.clone()).await;
    let mut s = board_settings(dir.path(), &hub_url);
    s.boards.presence_for = Duration::from_millis(1500);
    let node = EdgeNode::start(s).await.expect("starts");
    let (categories, products) = catalog();
    node.store()
        .apply_catalog_chunk(1, 0, 1, categories, Vec::new(), products)
        .expect("catalog");
    edge_node::boards::store_playlist(&node.store(), 2, playlist()).expect("playlist");
    let mut board = Board::connect(&node, "kiosk", KIOSK_TOKEN).await;
    board
        .feed_until(|f| f["version"] == 2 && f["segment"].is_null())
        .await;

    // A consenting fan scans their card at the kiosk: their segment's content, nothing of them.
    board
        .send(json!({"t": "scan", "code": fan.to_string()}))
        .await;
    let personal = board.feed_until(|f| f["segment"] == "coffee-lovers").await;
    assert_eq!(
        feed_item(&personal, "beans").expect("beans")["title"],
        "Fresh beans for you"
    );
    assert!(personal["until_ms"].as_u64().is_some());
    assert!(
        !personal.to_string().contains(&fan.to_string()),
        "no shopper id on screen"
    );
    // ... for a while, then the default again.
    let started = std::time::Instant::now();
    board.feed_until(|f| f["segment"].is_null()).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "shown for presence_for"
    );

    // A shopper without consent (a beacon event): the default content.
    let (status, outcome) = beacon(&node, "kiosk", KIOSK_TOKEN, &shy.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(
        (
            outcome["personalised"].as_bool(),
            outcome["source"].as_str()
        ),
        (Some(false), Some("hub"))
    );

    // The hub goes down: the fan is known from the cache, a stranger gets the default.
    hub.stop(true).await;
    let (_, outcome) = beacon(&node, "kiosk", KIOSK_TOKEN, &fan.to_string()).await;
    assert_eq!(
        (
            outcome["personalised"].as_bool(),
            outcome["source"].as_str()
        ),
        (Some(true), Some("cache"))
    );
    board.feed_until(|f| f["segment"] == "coffee-lovers").await;
    let (_, outcome) = beacon(&node, "kiosk", KIOSK_TOKEN, &stranger.to_string()).await;
    assert_eq!(
        (
            outcome["personalised"].as_bool(),
            outcome["source"].as_str()
        ),
        (Some(false), Some("unknown"))
    );
    board.feed_until(|f| f["segment"].is_null()).await;
    assert_eq!(audiences.asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_item_for_a_consenting_shopper_shows_first_and_from_the_cache_offline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audiences = Audiences::default();
    let (fan, shy) = (CustomerId::new(), CustomerId::new());
    let picked = json!({"id": "picked-beans", "title": "Picked for you", "sku": "COF-1"});
    audiences.answers.lock().expect("lock").extend([
        (
            fan.to_string(),
            json!({"personalise": true, "segments": ["coffee-lovers"], "customer": fan, "item": picked}),
        ),
        // An item in an answer that does not personalise is never shown.
        (
            shy.to_string(),
            json!({"personalise": false, "segments": [], "item": picked}),
        ),
    ]);
    let (hub_url, hub) = audience_hub(audiences.clone()).await;
    let mut s = board_settings(dir.path(), &hub_url);
    s.boards.presence_for = Duration::from_millis(1500);
    let node = EdgeNode::start(s).await.expect("starts");
    let (categories, products) = catalog();
    node.store()
        .apply_catalog_chunk(1, 0, 1, categories, Vec::new(), products)
        .expect("catalog");
    edge_node::boards::store_playlist(&node.store(), 2, playlist()).expect("playlist");
    let mut board = Board::connect(&node, "kiosk", KIOSK_TOKEN).await;
    board
        .feed_until(|f| f["version"] == 2 && f["segment"].is_null())
        .await;

    let first_is_picked = |f: &Value| f["items"][0]["id"] == "picked-beans";
    let (status, outcome) = beacon(&node, "kiosk", KIOSK_TOKEN, &fan.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(
        (outcome["personalised"].as_bool(), outcome["item"].as_str()),
        (Some(true), Some("picked-beans")),
        "{outcome}"
    );
    let personal = board.feed_until(first_is_picked).await;
    let item = &personal["items"][0];
    assert_eq!(item["title"], "Picked for you");
    assert!(item["price"].is_string(), "priced by the store: {item}");
    assert_eq!(personal["personal_item"], "picked-beans");
    assert_eq!(personal["segment"], "coffee-lovers");
    assert!(
        feed_item(&personal, "beans").is_some(),
        "the segment's items follow"
    );
    assert!(personal["until_ms"].as_u64().is_some());
    assert!(!personal.to_string().contains(&fan.to_string()));
    // For presence_for, then the default again.
    let plain = board
        .feed_until(|f| f["segment"].is_null() && f["personal_item"].is_null())
        .await;
    assert!(feed_item(&plain, "picked-beans").is_none());

    // Without consent, the item in the answer is ignored.
    let (_, outcome) = beacon(&node, "kiosk", KIOSK_TOKEN, &shy.to_string()).await;
    assert_eq!(
        (outcome["personalised"].as_bool(), outcome["item"].as_str()),
        (Some(false), None),
        "{outcome}"
    );

    // The hub gone: the item comes from the cache with the rest of the answer.
    hub.stop(true).await;
    let (_, outcome) = beacon(&node, "kiosk", KIOSK_TOKEN, &fan.to_string()).await;
    assert_eq!(
        (outcome["source"].as_str(), outcome["item"].as_str()),
        (Some("cache"), Some("picked-beans")),
        "{outcome}"
    );
    board.feed_until(first_is_picked).await;
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loyalty_card_scanned_at_a_kiosk_personalises_for_its_consenting_owner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audiences = Audiences::default();
    let fan = CustomerId::new();
    audiences.answers.lock().expect("lock").insert(
        "70004242".to_string(),
        json!({"personalise": true, "segments": ["coffee-lovers"], "customer": fan}),
    );
    let (hub_url, hub) = audience_hub(audiences.clone()).await;
    let node = EdgeNode::start(board_settings(dir.path(), &hub_url))
        .await
        .expect("starts");
    let (categories, products) = catalog();
    node.store()
        .apply_catalog_chunk(1, 0, 1, categories, Vec::new(), products)
        .expect("catalog");
    edge_node::boards::store_playlist(&node.store(), 2, playlist()).expect("playlist");
    let mut board = Board::connect(&node, "kiosk", KIOSK_TOKEN).await;
    board.feed_until(|f| f["version"] == 2).await;
    // The card as printed, with spaces: the node asks the hub by its digits.
    board.send(json!({"t": "scan", "code": "7000 4242"})).await;
    let personal = board.feed_until(|f| f["segment"] == "coffee-lovers").await;
    assert!(
        !personal.to_string().contains("7000"),
        "no card number on screen"
    );
    // The same card by beacon, with the hub gone: from the cache.
    hub.stop(true).await;
    let (status, outcome) = beacon(&node, "kiosk", KIOSK_TOKEN, "7000-4242").await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(
        (
            outcome["personalised"].as_bool(),
            outcome["source"].as_str()
        ),
        (Some(true), Some("cache"))
    );
    board.feed_until(|f| f["segment"] == "coffee-lovers").await;
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impressions_and_interactions_reach_the_hub_as_board_events_after_an_outage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = FakeHub::start(Door::Refuse).await;
    let node = board_node(dir.path(), &hub.url, 10, 1, playlist()).await;
    let mut board = Board::connect(&node, "entrance", ENTRANCE_TOKEN).await;
    board.feed_until(|f| f["version"] == 1).await;
    // Offline (the hub refuses the node): the events wait in the outbox.
    board
        .send(json!({"t": "impression", "item": "coffee"}))
        .await;
    board
        .send(json!({"t": "interaction", "item": "coffee", "action": "touch"}))
        .await;
    board
        .send(json!({"t": "impression", "item": "no such id!"}))
        .await;
    assert_eq!(
        board.next().await.ok().map(|m| m["code"].clone()),
        Some(json!("bad_item"))
    );
    let pending = eventually(5, "two events in the outbox", || {
        node.store()
            .cursors()
            .ok()
            .filter(|c| c.pending_entries() >= 2)
            .map(|c| c.pending_entries())
    })
    .await;
    assert!(pending >= 2);
    node.stop().await.expect("stops");
    drop(hub);

    // Back online: the node's batch carries both, channel `board`, with the board and item.
    hub = FakeHub::start(Door::Check).await;
    let node = EdgeNode::start(board_settings(dir.path(), &hub.url))
        .await
        .expect("restarts");
    let mut session = hub.session().await;
    assert!(matches!(session.recv().await, Frame::Hello { .. }));
    session
        .send(&Frame::Welcome {
            have: BTreeMap::from([(ReplicaId("berlin".into()), 0)]),
            catalog_version: 1,
            hub_time_ms: edge_node::store::now_ms(),
        })
        .await;
    let mut events = Vec::new();
    while events.len() < 2 {
        if let Frame::Deltas { items, .. } = session.recv().await {
            events.extend(items.into_iter().filter_map(|i| match i {
                Item::Event(e) => Some(e),
                _ => None,
            }));
        }
    }
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::BoardImpression, EventKind::BoardInteraction]
    );
    for e in &events {
        assert_eq!(e.channel, Channel::Board);
        assert!(
            matches!(e.subject, Subject::Anonymous(_)),
            "no shopper near: anonymous"
        );
        assert_eq!(
            (e.payload["board"].as_str(), e.payload["item"].as_str()),
            ("entrance", "coffee")
        );
        assert_eq!(e.payload["store"], "store-berlin");
    }
    assert_eq!(events[1].payload["action"], "touch");
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reports_its_boards_to_the_hub_and_in_its_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = FakeHub::start(Door::Check).await;
    let node = EdgeNode::start(board_settings(dir.path(), &hub.url))
        .await
        .expect("starts");
    let mut session = hub.session().await;
    assert!(matches!(session.recv().await, Frame::Hello { .. }));
    session
        .send(&Frame::Welcome {
            have: BTreeMap::from([(ReplicaId("berlin".into()), 0)]),
            catalog_version: 1,
            hub_time_ms: edge_node::store::now_ms(),
        })
        .await;
    let mut board = Board::connect(&node, "entrance", ENTRANCE_TOKEN).await;
    assert_eq!(board.next().await.expect("welcome")["t"], "welcome");
    board.send(json!({"t": "heartbeat"})).await;
    // With its heartbeats the node reports each board: the entrance lit, the kiosk dark.
    let reported = loop {
        let Some(tokio_tungstenite::tungstenite::Message::Binary(bytes)) =
            session.next_message().await
        else {
            continue;
        };
        let Ok(Frame::BoardsReport { boards }) = protocol::replication::sync::decode_frame(&bytes)
        else {
            continue;
        };
        if boards.iter().any(|b| b.id == "entrance" && !b.dark) {
            break boards;
        }
    };
    let by_id: BTreeMap<&str, &protocol::board::BoardReport> =
        reported.iter().map(|b| (b.id.as_str(), b)).collect();
    assert_eq!(by_id.len(), 2);
    assert_eq!(by_id["entrance"].connections, 1);
    assert!(by_id["entrance"].last_seen_ms.is_some());
    assert!(by_id["kiosk"].dark);

    let metrics = |token: Option<&'static str>| {
        let url = format!("{}/metrics", node.base_url);
        async move {
            let mut req = reqwest::Client::new().get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let res = req.send().await.expect("answers");
            (res.status(), res.text().await.unwrap_or_default())
        }
    };
    assert_eq!(metrics(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        metrics(Some(ENTRANCE_TOKEN)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, text) = metrics(Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "omnihub_node_boards_configured 2",
        "omnihub_node_board_online{board=\"entrance\"} 1",
        "omnihub_node_board_online{board=\"kiosk\"} 0",
        "omnihub_node_sync_connected 1",
        "omnihub_node_outbox_pending_entries 0",
        "omnihub_node_store_failed 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    assert!(text.contains(
        "omnihub_node_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"4xx\"}"
    ));
    node.stop().await.expect("stops");
}
