//! A return at a store's till in a real browser (headless Chromium through chromedriver), on an
//! edge node whose hub is unreachable: a clerk sells a mug and a coffee for cash, opens Returns,
//! finds the receipt, takes the mug back, sees the refund and the cash to hand back, and the
//! till's Z-report counts the refund and expects that much less cash in the drawer.
//! Runs with `cargo test --features browser-tests --test browser_returns`; needs Debian's
//! `chromium` and `chromium-driver`.

#![cfg(feature = "browser-tests")]

mod common;

use common::webdriver::Driver;
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_sells_then_takes_one_line_back_and_the_z_report_counts_the_refund() {
    use edge_node::{AdjustmentRequest, EdgeNode, EdgeSettings, StaffMember, StaffRole};
    use protocol::{Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant};

    const API_TOKEN: &str = "browser-returns-api-token-0123456789";
    const PIN: &str = "2580";
    // (SKU, name, price in cents, VAT in basis points, a barcode with a valid EAN-13 check digit).
    const ITEMS: [(&str, &str, i64, u32, &str); 2] = [
        ("MUG-1", "Stoneware Mug", 1200, 1900, "4000000000037"),
        ("COF-1", "House Coffee", 499, 1900, "4000000000013"),
    ];
    let euros = |minor: i64| format!("{}.{:02}", minor / 100, minor % 100);

    // One till, one clerk; the hub is a free port nobody listens on (the store is offline).
    let data = tempfile::tempdir().expect("temp dir");
    let hub_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut settings = EdgeSettings {
        data_dir: data.path().to_path_buf(),
        hub_url: format!("ws://127.0.0.1:{hub_port}/sync"),
        credential: Some("browser-returns-node-credential".to_string().into()),
        api_token: Some(API_TOKEN.to_string().into()),
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        cache_mb: 4,
        ..EdgeSettings::default()
    };
    settings.pos.tills = vec!["1".into()];
    settings.pos.staff = vec![StaffMember {
        id: "lena".into(),
        name: "Lena Clerk".into(),
        role: StaffRole::Clerk,
        pin_hash: edge_node::hash_pin(PIN).expect("hashes").into(),
    }];
    let node = EdgeNode::start(settings).await.expect("the node starts");
    let base = node.base_url.clone();
    let products: Vec<Product> = ITEMS
        .iter()
        .map(|&(sku, name, price, rate, barcode)| Product {
            id: ProductId::new(),
            slug: name.to_lowercase().replace(' ', "-"),
            name: name.into(),
            brand: "Omni".into(),
            description: String::new(),
            category: CategoryId("coffee".into()),
            tax_rate_bp: rate,
            tax_class: "standard".into(),
            image: String::new(),
            variants: vec![Variant {
                sku: Sku::parse(sku).expect("valid sku"),
                title: "Default".into(),
                price: Money::new(price, Currency::EUR),
                compare_at: None,
                barcode: Some(barcode.into()),
                weight_grams: 250,
            }],
            attributes: Default::default(),
        })
        .collect();
    let categories = vec![Category {
        id: CategoryId("coffee".into()),
        name: "Coffee".into(),
        description: String::new(),
        position: 1,
    }];
    let store = node.store();
    tokio::task::spawn_blocking(move || {
        store
            .apply_catalog_chunk(1, 1, 1, categories, Vec::new(), products)
            .expect("the catalog installs");
    })
    .await
    .expect("joins");
    for (sku, ..) in ITEMS {
        let delivery = AdjustmentRequest::Receipt {
            sku: sku.into(),
            units: 10,
            reason: None,
            clerk: None,
        };
        node.adjust(delivery, None).await.expect("stock arrives");
    }
    let http = common::http_client();
    let on_hand = |sku: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let stock: Value = http
                .get(format!("{base}/api/v1/stock/{sku}"))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            stock["on_hand"].as_i64().expect("on hand")
        }
    };

    let driver = Driver::start().await;
    let page = driver.session().await;
    let wait = Duration::from_secs(10);

    // Sign in on the keypad; the one till opens with a float of 100.00.
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

    // The sale: scan both, pay 20.00 cash.
    for (_, name, _, _, barcode) in ITEMS {
        page.type_into("[data-scan]", &format!("{barcode}\u{E007}"))
            .await;
        page.wait_for_text("table.lines tbody", wait, |t| t.contains(name))
            .await;
    }
    let total: i64 = ITEMS.iter().map(|i| i.2).sum();
    page.wait_for_text("[data-total]", wait, |t| t.contains(&euros(total)))
        .await;
    page.type_into("[data-given]", "20.00").await;
    page.click("form[data-cash-form] button[type=submit]").await;
    let number = page
        .wait_for_text("[data-receipt-number]", wait, |t| !t.trim().is_empty())
        .await
        .trim()
        .to_string();
    let mugs = on_hand("MUG-1").await;

    // Returns: find the receipt, take the mug back.
    page.goto(&format!("{base}/pos/till")).await;
    page.click("#returns-link").await;
    page.wait_for_url(wait, |u| u.ends_with("/pos/returns"))
        .await;
    page.type_into("#receipt", &number).await;
    page.click("#find-receipt").await;
    let rows = page
        .wait_for_text("form.stack tbody", wait, |t| t.contains("Stoneware Mug"))
        .await;
    assert!(rows.contains("House Coffee"), "{rows}");
    let mut mug_line = None;
    for i in 0..ITEMS.len() {
        let row = page
            .text(&format!("form.stack tbody tr:nth-child({})", i + 1))
            .await;
        if row.contains("Stoneware Mug") {
            mug_line = Some(i);
        }
    }
    let mug_line = mug_line.expect("the mug's line");
    page.type_into(&format!("#q{mug_line}"), "1").await;
    page.type_into("#reason", "a gift, got two").await;
    page.click("#take-return").await;

    // The refund: the mug's price, all of it in cash from the drawer.
    let refund = page
        .wait_for_text("#refund", wait, |t| t.contains("Refund €"))
        .await;
    assert!(
        refund.contains(&format!("Refund €{}", euros(1200))),
        "{refund}"
    );
    assert_eq!(
        page.text("#cash-refund").await.trim(),
        format!("€{}", euros(1200))
    );
    assert_eq!(on_hand("MUG-1").await, mugs + 1, "back on the shelf");
    // The receipt now shows the mug as returned: nothing more of it may come back.
    page.goto(&format!("{base}/pos/returns?receipt={number}"))
        .await;
    let row = page
        .wait_for_text(
            &format!("form.stack tbody tr:nth-child({})", mug_line + 1),
            wait,
            |t| t.contains("Stoneware Mug"),
        )
        .await;
    assert!(row.contains("1 1"), "sold 1, returned 1: {row}");

    // Close the till: the Z-report counts the refund, the drawer expects 12.00 less.
    let expected = 10_000 + total - 1200;
    page.goto(&format!("{base}/pos/till")).await;
    page.click("details.close-till summary").await;
    page.type_into("#counted", &euros(expected)).await;
    page.click("form[action='/pos/till/close'] button[type=submit]")
        .await;
    let sums = page
        .wait_for_text("table.sums", wait, |t| t.contains("Refunds (1)"))
        .await;
    assert!(
        sums.contains(&format!("Refunds (1) €{}", euros(1200)))
            && sums.contains(&format!("Refunded in cash €{}", euros(1200))),
        "{sums}"
    );
    assert_eq!(
        page.text("[data-z-expected]").await.trim(),
        format!("€{}", euros(expected))
    );
    assert_eq!(page.text("[data-z-variance]").await.trim(), "€0.00");
    page.close().await;
    drop(driver);
    node.stop().await.expect("the node stops");
}
