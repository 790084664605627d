//! A card sale at a till in a real browser (headless Chromium through chromedriver), with the
//! store's link to the hub cut: the hub as a real process paying through the payment provider
//! simulator, the payment terminal simulator, and an edge node whose link to the hub goes
//! through a TCP proxy. The clerk rings up an item and presses Card: the terminal reads the card
//! presented, the node takes it offline (the receipt says the authorisation is pending); the
//! link comes back and the receipt shows it authorised; the Z-report lists card apart from cash.
//! Runs with `cargo test --features browser-tests --test browser_card`.

#![cfg(feature = "browser-tests")]

mod common;

use common::shop::eventually;
use common::stores::{credential, hub_addr, hub_config, ADMIN};
use common::webdriver::Driver;
use serde_json::{json, Value};
use simulators::load::proxy::Proxy;
use simulators::payments::{PaymentSim, PaymentsConfig};
use simulators::terminal::TerminalSim;
use std::time::{Duration, Instant};

const API_TOKEN: &str = "browser-card-api-token-0123456789";
const PIN: &str = "2580";

async fn node_get(base: &str, path: &str) -> Value {
    common::http_client()
        .get(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

async fn node_post(base: &str, path: &str, body: Value) -> Value {
    let res = common::http_client()
        .post(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "POST {path}: {}", res.status());
    res.json().await.expect("json")
}

async fn connected(base: &str, want: bool) {
    eventually(Duration::from_secs(60), || async {
        (node_get(base, "/api/v1/sync").await["connected"] == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_sold_offline_with_the_link_cut_is_authorised_after_reconnection() {
    use edge_node::{EdgeNode, EdgeSettings, StaffMember, StaffRole};

    let dir = tempfile::tempdir().expect("temp dir");
    let payments = PaymentSim::start(PaymentsConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..PaymentsConfig::default()
    })
    .await
    .expect("the provider starts");
    let terminal = TerminalSim::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the terminal starts");
    let config = hub_config(dir.path(), &[("berlin", "store-berlin")]);
    let hub = tokio::task::block_in_place(|| {
        common::start_hub_with(
            &dir.path().join("hub"),
            &["--config", config.to_str().expect("utf-8 path")],
            &[
                ("OMNIHUB_HUB_ADMIN_TOKEN", ADMIN),
                ("OMNIHUB_HUB_PAYMENTS__BASE_URL", &payments.base_url()),
            ],
        )
    });
    let proxy = Proxy::start(hub_addr(&hub))
        .await
        .expect("the proxy listens");

    // The Berlin node, its link to the hub through the proxy, one till and a clerk.
    let mut settings = EdgeSettings {
        data_dir: dir.path().join("berlin"),
        hub_url: format!("ws://{}/api/v1/edge/sync", proxy.addr),
        credential: Some(credential("berlin").into()),
        api_token: Some(API_TOKEN.to_string().into()),
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        cache_mb: 4,
        ..EdgeSettings::default()
    };
    settings.sync.heartbeat_every = Duration::from_secs(1);
    settings.sync.idle_timeout = Duration::from_secs(4);
    settings.sync.backoff_max = Duration::from_secs(1);
    settings.pos.tills = vec!["1".into()];
    settings.pos.staff = vec![StaffMember {
        id: "lena".into(),
        name: "Lena Clerk".into(),
        role: StaffRole::Clerk,
        pin_hash: edge_node::hash_pin(PIN).expect("hashes").into(),
    }];
    settings.pos.card.terminal_url = terminal.base_url();
    settings.pos.card.retry_every = Duration::from_millis(200);
    let node = EdgeNode::start(settings).await.expect("the node starts");
    let base = node.base_url.clone();
    connected(&base, true).await;
    eventually(Duration::from_secs(60), || async {
        (node_get(&base, "/api/v1/sync").await["catalog_version"].as_u64() > Some(0)).then_some(())
    })
    .await;
    let products = node_get(&base, "/api/v1/products?limit=1").await;
    let variant = &products["products"][0]["variants"][0];
    let sku = variant["sku"].as_str().expect("a sku").to_string();
    let name = products["products"][0]["name"]
        .as_str()
        .expect("a name")
        .to_string();
    node_post(
        &base,
        "/api/v1/stock/adjustments",
        json!({"kind": "receipt", "sku": sku, "units": 10}),
    )
    .await;
    let total = node_post(
        &base,
        "/api/v1/sales/quote",
        json!({"lines": [{"sku": sku, "quantity": 1}]}),
    )
    .await["total"]
        .as_str()
        .expect("a total")
        .to_string();

    let driver = Driver::start().await;
    let page = driver.session().await;
    let wait = Duration::from_secs(10);

    // Sign in on the keypad; the store's one till opens with a float.
    page.goto(&format!("{base}/pos")).await;
    page.wait_for_text("main legend", wait, |t| t.contains("Who is signing in"))
        .await;
    page.click("label.staff-tile:has(input[value=lena]) span")
        .await;
    for key in PIN.chars() {
        page.click(&format!("[data-keypad] button[data-key='{key}']"))
            .await;
    }
    page.click("form.signin button[type=submit]").await;
    page.wait_for_text("main h1", wait, |t| t.contains("Till 1 is closed"))
        .await;
    page.type_into("#float", "100.00").await;
    page.click("form[action='/pos/till/open'] button[type=submit]")
        .await;
    page.wait_for_text("table.lines tbody", wait, |t| {
        t.contains("Scan an item to start a sale.")
    })
    .await;
    page.type_into("[data-scan]", &format!("{sku}\u{E007}"))
        .await;
    page.wait_for_text("table.lines tbody", wait, |t| t.contains(&name))
        .await;

    // The store's internet line goes down.
    proxy.cut();
    connected(&base, false).await;
    page.wait_for_text("[data-sync]", Duration::from_secs(30), |t| {
        t.contains("Offline")
    })
    .await;

    // The customer holds a Visa to the terminal; the clerk presses Card.
    let presented = common::http_client()
        .post(format!("{}/present", terminal.base_url()))
        .json(&json!({"card": "visa"}))
        .send()
        .await
        .expect("sent");
    assert!(presented.status().is_success());
    page.click("form[data-card-form] button[data-card]").await;
    let number = page
        .wait_for_text("[data-receipt-number]", wait, |t| !t.trim().is_empty())
        .await
        .trim()
        .to_string();
    let status = page.text("[data-card-status]").await;
    assert!(status.contains("authorisation pending"), "{status}");
    assert!(page.text("table.sums").await.contains("visa •••• 4242"));
    let receipt_url = page.current_url().await;
    let sale = node_get(&base, &format!("/api/v1/sales/{number}")).await;
    assert_eq!(
        sale["payments"][0]["card"]["recorded_as"], "PaidOfflinePendingAuth",
        "{sale}"
    );
    assert_eq!(sale["payments"][0]["amount"], total.as_str(), "{sale}");

    // The line comes back: the node forwards the authorisation, the receipt shows it.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        page.goto(&receipt_url).await;
        let status = page.text("[data-card-status]").await;
        if status.starts_with("authorised") {
            assert!(status.contains("pi_"), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still '{status}' after reconnecting"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sale = eventually(Duration::from_secs(60), || async {
        let s = node_get(&base, &format!("/api/v1/sales/{number}")).await;
        (s["payments"][0]["card"]["captured"] == true).then_some(s)
    })
    .await;
    assert_eq!(
        sale["payments"][0]["card"]["status"], "authorised",
        "{sale}"
    );

    // Online again, a split tender: half on a Mastercard, the rest in cash with change due
    // from the cash part only.
    let total_minor = common::stores::minor_of(&json!(total), 2);
    let on_card = total_minor / 2;
    let cash_given = 2000 + total_minor;
    let euros = |minor: i64| format!("{}.{:02}", minor / 100, minor % 100);
    page.goto(&format!("{base}/pos/till")).await;
    page.type_into("[data-scan]", &format!("{sku}\u{E007}"))
        .await;
    page.wait_for_text("table.lines tbody", wait, |t| t.contains(&name))
        .await;
    page.click("details.split summary").await;
    page.type_into("[data-split-card]", &euros(on_card)).await;
    page.type_into("[data-split-cash]", &euros(cash_given))
        .await;
    common::http_client()
        .post(format!("{}/present", terminal.base_url()))
        .json(&json!({"card": "mastercard"}))
        .send()
        .await
        .expect("sent");
    page.click("form[data-split-form] button[data-split]").await;
    page.wait_for_text("[data-receipt-number]", wait, |t| {
        !t.trim().is_empty() && t.trim() != number
    })
    .await;
    let change = cash_given - (total_minor - on_card);
    assert_eq!(
        page.text("[data-change-due]").await.trim(),
        format!("€{}", euros(change))
    );
    let sums = page.text("table.sums").await;
    assert!(
        sums.contains("mastercard •••• 4444") && sums.contains("Paid by cash"),
        "{sums}"
    );

    // The Z-report lists the card tender apart from cash.
    page.goto(&format!("{base}/pos/till")).await;
    page.click("details.close-till summary").await;
    page.type_into("#counted", "100.00").await;
    page.click("form[action='/pos/till/close'] button[type=submit]")
        .await;
    let report = page
        .wait_for_text("main", wait, |t| t.contains("Card"))
        .await;
    assert!(report.contains("Cash"), "{report}");
    page.close().await;
    drop(driver);
    node.stop().await.expect("the node stops");
    drop(proxy);
    payments.stop().await;
    terminal.stop().await;
}
