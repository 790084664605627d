//! The storefront in a real browser (headless Chromium through chromedriver): search, a product
//! page, add to basket, sign in with the anonymous basket merged, and the open basket page
//! updating live when the shopper's app changes the basket; and a store's till at an offline edge
//! node: sign in on the PIN keypad, scan three items, pay cash, the receipt.
//! Runs with `cargo test --features browser-tests --test browser`; needs Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them when missing).

#![cfg(feature = "browser-tests")]

mod common;

use common::webdriver::Driver;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_browses_fills_a_basket_signs_in_and_sees_live_updates() {
    let data = tempfile::tempdir().expect("temp dir");
    let hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &[]));
    let base = hub.base.clone();
    let driver = Driver::start().await;
    let page = driver.session().await;

    page.goto(&format!("{base}/")).await;
    assert!(page.text("main").await.contains("Shop by category"));

    // Search from the header, open the first result, add it.
    page.type_into("#site-search", "coffee").await;
    page.click("form.search button[type=submit]").await;
    page.wait_for_url(Duration::from_secs(10), |u| u.contains("/search?q=coffee"))
        .await;
    page.wait_for_text("main a.card-link", Duration::from_secs(10), |t| {
        !t.trim().is_empty()
    })
    .await;
    page.click("main a.card-link").await;
    page.wait_for_url(Duration::from_secs(10), |u| u.contains("/p/"))
        .await;
    let product = page
        .wait_for_text("main h1", Duration::from_secs(10), |t| !t.trim().is_empty())
        .await;
    page.click("form.buy button[type=submit]").await;
    page.wait_for_text("[data-basket-count]", Duration::from_secs(5), |t| {
        t.trim() == "1"
    })
    .await;

    // Sign in: the anonymous basket's line joins the demo shopper's basket.
    page.goto(&format!("{base}/signin?next=/basket")).await;
    page.type_into("main input[name=email]", "shopper@example.com")
        .await;
    page.type_into("main input[name=password]", "omnihub-demo")
        .await;
    page.click("main form button[type=submit]").await;
    // (The sign-in page's own URL ends in `next=/basket` too.)
    page.wait_for_url(Duration::from_secs(10), |u| {
        u.ends_with("/basket") && !u.contains("/signin")
    })
    .await;
    page.wait_for_text(".site-header", Duration::from_secs(10), |t| {
        t.contains("Hi, Demo Shopper")
    })
    .await;
    assert!(
        page.text("main .lines").await.contains(&product),
        "the merged line is in the basket"
    );
    let count: u32 = page
        .text("[data-basket-count]")
        .await
        .trim()
        .parse()
        .expect("a count");

    // The shopper's app adds a line: the open page follows within a second or two.
    let session = page.cookie("omnihub_session").await;
    let http = common::http_client();
    let me: Value = http
        .get(format!("{base}/api/v1/customers/me"))
        .bearer_auth(&session)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let tea: Value = http
        .get(format!("{base}/api/v1/products?q=tea&limit=1"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let slug = tea["items"][0]["slug"].as_str().expect("slug");
    let detail: Value = http
        .get(format!("{base}/api/v1/products/{slug}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let basket = me["basket_id"].as_str().expect("basket");
    let added = http
        .post(format!("{base}/api/v1/baskets/{basket}/lines"))
        .bearer_auth(&session)
        .header("x-channel", "mobile")
        .json(&json!({"sku": detail["variants"][0]["sku"], "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(added.status(), 200);
    let expected = (count + 1).to_string();
    page.wait_for_text("[data-basket-count]", Duration::from_secs(5), |t| {
        t.trim() == expected
    })
    .await;
    page.close().await;
}

/// A guest buys in a real browser: basket → checkout form (address, shipping, the breakdown) →
/// the provider's hosted page, where a declined card is refused and the page stays open → the
/// test card 4242 … succeeds → back at the shop, the order confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_pays_on_the_providers_page_after_a_decline_and_sees_the_order() {
    use common::shop::{start_payments, SECRET_KEY, WEBHOOK_SECRET};
    let data = tempfile::tempdir().expect("temp dir");
    let sim = tokio::task::block_in_place(start_payments);
    let env = [
        ("OMNIHUB_HUB_PAYMENTS__BASE_URL", sim.base.as_str()),
        ("OMNIHUB_HUB_PAYMENTS__SECRET_KEY", SECRET_KEY),
        ("OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    let hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &env));
    let base = hub.base.clone();
    let http = common::http_client();
    common::shop::register_webhook(&http, &sim.base, &base).await;
    let driver = Driver::start().await;
    let page = driver.session().await;

    page.goto(&format!("{base}/search?q=coffee")).await;
    page.click("main a.card-link").await;
    page.click("form.buy button[type=submit]").await;
    page.wait_for_text("[data-basket-count]", Duration::from_secs(5), |t| {
        t.trim() == "1"
    })
    .await;
    page.goto(&format!("{base}/checkout")).await;
    let summary = page.text("main").await;
    assert!(
        summary.contains("VAT"),
        "the breakdown shows tax: {summary}"
    );
    page.type_into("#email", "guest@example.com").await;
    page.type_into("#name", "Ada Lovelace").await;
    page.type_into("#line1", "Unter den Linden 1").await;
    page.type_into("#postcode", "10117").await;
    page.type_into("#city", "Berlin").await;
    page.click("button[data-pay]").await;

    // The provider's page: the card is typed there, never at the shop.
    let provider = format!("{}/pay/", sim.base);
    page.wait_for_url(Duration::from_secs(10), |u| u.starts_with(&provider))
        .await;
    page.type_into("#card_number", "4000 0000 0000 0002").await;
    page.type_into("#card_expiry", "12 / 34").await;
    page.type_into("#card_cvc", "123").await;
    page.click("form button[type=submit]").await;
    page.wait_for_text("body", Duration::from_secs(5), |t| t.contains("declined"))
        .await;
    page.type_into("#card_number", "4242 4242 4242 4242").await;
    page.type_into("#card_expiry", "12 / 34").await;
    page.type_into("#card_cvc", "123").await;
    page.click("form button[type=submit]").await;

    let title = page
        .wait_for_text("main h1", Duration::from_secs(20), |t| t.contains("W-"))
        .await;
    assert!(title.contains("is confirmed"), "{title}");
    assert!(
        page.current_url().await.contains("key="),
        "the guest's order link"
    );
    assert!(page.text("main").await.contains("guest@example.com"));
    page.goto(&format!("{base}/basket")).await;
    page.wait_for_text("[data-basket-count]", Duration::from_secs(5), |t| {
        t.trim() == "0" || t.trim().is_empty()
    })
    .await;
    page.close().await;
}

/// The POS pages of a real edge node whose hub is unreachable (the store is offline): a clerk
/// signs in with the on-screen keypad, picks a till and opens it, scans three items the way a
/// keyboard-wedge scanner types them (digits + Enter), sees the node's own total, pays cash and
/// gets a receipt with the change due, which the node has recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_at_an_offline_till_scans_three_items_pays_cash_and_gets_a_receipt() {
    use edge_node::{AdjustmentRequest, EdgeNode, EdgeSettings, StaffMember, StaffRole};
    use protocol::{Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant};

    const API_TOKEN: &str = "browser-test-api-token-0123456789";
    const PIN: &str = "2580";
    // (SKU, name, price in cents, VAT in basis points, a barcode with a valid EAN-13 check digit).
    const ITEMS: [(&str, &str, i64, u32, &str); 3] = [
        ("COF-1", "House Coffee", 499, 1900, "4000000000013"),
        ("TEA-1", "Green Tea", 250, 700, "4000000000020"),
        ("MUG-1", "Stoneware Mug", 1200, 1900, "4000000000037"),
    ];
    let euros = |minor: i64| format!("{}.{:02}", minor / 100, minor % 100);

    // A node whose hub is a free port nobody listens on, with a clerk, a manager and two tills.
    let data = tempfile::tempdir().expect("temp dir");
    let hub_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut settings = EdgeSettings {
        data_dir: data.path().to_path_buf(),
        hub_url: format!("ws://127.0.0.1:{hub_port}/sync"),
        credential: Some("browser-test-node-credential".to_string().into()),
        api_token: Some(API_TOKEN.to_string().into()),
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        cache_mb: 4,
        ..EdgeSettings::default()
    };
    settings.pos.tills = vec!["1".into(), "2".into()];
    settings.pos.staff = [
        ("lena", "Lena Clerk", StaffRole::Clerk, PIN),
        ("max", "Max Manager", StaffRole::Manager, "9876"),
    ]
    .into_iter()
    .map(|(id, name, role, pin)| StaffMember {
        id: id.into(),
        name: name.into(),
        role,
        pin_hash: edge_node::hash_pin(pin).expect("hashes").into(),
    })
    .collect();
    let node = EdgeNode::start(settings).await.expect("the node starts");
    let base = node.base_url.clone();

    // The catalog (as the hub would have sent it before the link went down) and stock.
    let categories = vec![Category {
        id: CategoryId("coffee".into()),
        name: "Coffee".into(),
        description: String::new(),
        position: 1,
    }];
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

    let driver = Driver::start().await;
    let page = driver.session().await;
    let wait = Duration::from_secs(10);

    // Sign in: pick the clerk's tile, tap the PIN on the keypad (a wrong digit, then ⌫).
    page.goto(&format!("{base}/pos")).await;
    page.wait_for_text("main legend", wait, |t| t.contains("Who is signing in"))
        .await;
    page.click("label.staff-tile:has(input[value=lena]) span")
        .await;
    assert!(page.is_selected("input[name=staff][value=lena]").await);
    for key in ["2", "5", "9", "back", "8", "0"] {
        page.click(&format!("[data-keypad] button[data-key='{key}']"))
            .await;
    }
    assert_eq!(page.property("#pin", "value").await, json!(PIN));
    page.click("form.signin button[type=submit]").await;

    // Two tills: pick till 1, then open it with a float.
    page.wait_for_text("main h1", wait, |t| t.contains("Which till"))
        .await;
    assert!(page.text(".bar .clerk").await.contains("Lena Clerk"));
    assert!(
        page.text("[data-sync]").await.contains("Offline"),
        "the hub is unreachable"
    );
    page.click("form[action='/pos/till/select'] button[value='1']")
        .await;
    page.wait_for_text("main h1", wait, |t| t.contains("Till 1 is closed"))
        .await;
    page.type_into("#float", "100.00").await;
    page.click("form[action='/pos/till/open'] button[type=submit]")
        .await;
    page.wait_for_text("table.lines tbody", wait, |t| {
        t.contains("Scan an item to start a sale.")
    })
    .await;

    // Scan three items: each barcode typed into the scan field and Enter, as a scanner does.
    for (_, name, _, _, barcode) in ITEMS {
        page.type_into("[data-scan]", &format!("{barcode}\u{E007}"))
            .await;
        page.wait_for_text("table.lines tbody", wait, |t| t.contains(name))
            .await;
    }
    let lines = page.text("table.lines tbody").await;
    assert!(
        ITEMS.iter().all(|(_, name, ..)| lines.contains(name)),
        "{lines}"
    );

    // The total shown is the node's own quote, the catalog prices added up.
    let http = common::http_client();
    let quote: Value = http
        .post(format!("{base}/api/v1/sales/quote"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"lines": ITEMS.iter().map(|(sku, ..)| json!({"sku": sku, "quantity": 1})).collect::<Vec<_>>()}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let total_minor: i64 = ITEMS.iter().map(|i| i.2).sum();
    assert_eq!(quote["total"], euros(total_minor), "{quote}");
    let shown = page
        .wait_for_text("[data-total]", wait, |t| t.contains('€'))
        .await;
    assert_eq!(shown.trim(), format!("€{}", euros(total_minor)));

    // Pay cash, more than the total: the page shows the change as the amount is typed.
    let given_minor = 5000;
    let change_minor = given_minor - total_minor;
    page.type_into("[data-given]", &euros(given_minor)).await;
    page.wait_for_text("[data-change]", wait, |t| {
        t.trim() == format!("Change due: {}", euros(change_minor))
    })
    .await;
    page.click("form[data-cash-form] button[type=submit]").await;

    // The receipt: its number, total and change due, and a print button.
    let number = page
        .wait_for_text("[data-receipt-number]", wait, |t| !t.trim().is_empty())
        .await
        .trim()
        .to_string();
    assert!(
        page.current_url()
            .await
            .ends_with(&format!("/pos/receipts/{number}")),
        "on the receipt page"
    );
    assert_eq!(
        page.text("[data-receipt-total]").await.trim(),
        format!("€{}", euros(total_minor))
    );
    assert_eq!(
        page.text("[data-change-due]").await.trim(),
        format!("€{}", euros(change_minor))
    );
    assert_eq!(
        page.text("button[data-print]").await.trim(),
        "Print receipt"
    );

    // The node recorded the sale, offline, with the same total and change.
    let res = http
        .get(format!("{base}/api/v1/sales/{number}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let sale: Value = res.json().await.expect("json");
    assert_eq!(sale["total"], euros(total_minor), "{sale}");
    assert_eq!(sale["change_due"], euros(change_minor), "{sale}");
    assert_eq!(sale["clerk"], "lena", "{sale}");
    page.close().await;
    drop(driver);
    node.stop().await.expect("the node stops");
}
