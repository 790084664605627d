//! A store's advertising board in a real browser (headless Chromium through chromedriver): the
//! board page of an offline edge node plays the playlist it holds, with live price and stock,
//! and shows a stock change within a second.
//! Runs with `cargo test --features browser-tests --test browser_boards`; needs Debian's
//! `chromium` and `chromium-driver` (`.ci/run` installs them when missing).

#![cfg(feature = "browser-tests")]

mod common;

use common::webdriver::Driver;
use edge_node::boards::{hash_board_token, BoardConfig};
use edge_node::{AdjustmentRequest, EdgeNode, EdgeSettings};
use protocol::board::{BoardItem, BoardPlaylist};
use protocol::{Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant};
use std::time::{Duration, Instant};

const TOKEN: &str = "browser-test-board-token-0123456789";

fn coffee() -> Product {
    Product {
        id: ProductId::new(),
        slug: "house-coffee".into(),
        name: "House Coffee".into(),
        brand: "Omni".into(),
        description: String::new(),
        category: CategoryId("coffee".into()),
        tax_rate_bp: 1900,
        tax_class: "standard".into(),
        image: String::new(),
        variants: vec![Variant {
            sku: Sku::parse("COF-1").expect("sku"),
            title: "Default".into(),
            price: Money::new(499, Currency::EUR),
            compare_at: None,
            barcode: None,
            weight_grams: 250,
        }],
        attributes: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_page_shows_a_stock_change_within_a_second() {
    // A node whose hub is a free port nobody listens on, with one board.
    let data = tempfile::tempdir().expect("temp dir");
    let hub_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut settings = EdgeSettings {
        data_dir: data.path().to_path_buf(),
        hub_url: format!("ws://127.0.0.1:{hub_port}/api/v1/edge/sync"),
        credential: Some("browser-test-node-credential".to_string().into()),
        api_token: Some("browser-test-api-token-0123456789".to_string().into()),
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        cache_mb: 4,
        ..EdgeSettings::default()
    };
    settings.boards.list = vec![BoardConfig {
        id: "entrance".into(),
        name: "Entrance TV".into(),
        kiosk: false,
        token_sha256: hash_board_token(TOKEN).into(),
    }];
    let node = EdgeNode::start(settings).await.expect("the node starts");
    let store = node.store();
    let category = Category {
        id: CategoryId("coffee".into()),
        name: "Coffee".into(),
        description: String::new(),
        position: 1,
    };
    store
        .apply_catalog_chunk(1, 0, 1, vec![category], Vec::new(), vec![coffee()])
        .expect("catalog");
    let receipt = AdjustmentRequest::Receipt {
        sku: "COF-1".into(),
        units: 12,
        reason: None,
        clerk: None,
    };
    store.adjust(&receipt, None).expect("stock");
    let playlist = BoardPlaylist {
        items: vec![
            BoardItem {
                id: "welcome".into(),
                title: "Welcome to Berlin".into(),
                body: "Fresh coffee every day".into(),
                sku: None,
                offer_quantity: None,
                seconds: None,
            },
            BoardItem {
                id: "coffee".into(),
                title: String::new(),
                body: String::new(),
                sku: Some(Sku::parse("COF-1").expect("sku")),
                offer_quantity: None,
                seconds: None,
            },
        ],
        ..BoardPlaylist::default()
    };
    edge_node::boards::store_playlist(&store, 1, playlist).expect("playlist");
    // The node's storage is released on stop only once nothing holds it.
    drop(store);

    let driver = Driver::start().await;
    let page = driver.session().await;
    page.goto(&format!("{}/boards/entrance#token={TOKEN}", node.base_url))
        .await;
    let wait = Duration::from_secs(10);
    let tile = ".tile[data-item='coffee']";
    page.wait_for_text(tile, wait, |t| {
        t.contains("House Coffee") && t.contains("4.99 EUR")
    })
    .await;
    page.wait_for_text(&format!("{tile} .stock"), wait, |t| t == "In stock")
        .await;
    page.wait_for_text("#status", wait, |t| t == "live").await;

    // Nine damaged units leave 3: the board says so within a second.
    let count = AdjustmentRequest::Damage {
        sku: "COF-1".into(),
        units: 9,
        reason: "browser test".into(),
        clerk: None,
    };
    let changed = Instant::now();
    node.adjust(count, None).await.expect("adjusted");
    page.wait_for_text(&format!("{tile} .stock"), Duration::from_secs(1), |t| {
        t == "Only 3 left"
    })
    .await;
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");

    page.close().await;
    node.stop().await.expect("stops");
}
