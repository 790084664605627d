//! Customers at a store's till in a real browser (headless Chromium through chromedriver),
//! against the real hub and an online edge node (`docs/pos.md`, "Customers at the till" and
//! "Receipts"): the clerk signs in on the keypad, finds the shopper by loyalty number, pulls
//! their web basket onto the till, voids the sale (the basket goes back to the web), pulls it
//! again and takes cash; the receipt shows the QR code and the shopper's masked email, and the
//! mail sink receives the emailed receipt.
//! Runs with `cargo test --features browser-tests --test browser_till_customers`; needs Debian's
//! `chromium` and `chromium-driver`.

#![cfg(feature = "browser-tests")]

mod common;

use common::shop::eventually;
use common::stores::*;
use common::till::*;
use common::webdriver::{Driver, Session};
use std::time::Duration;

/// The product names the node shows for `skus`.
async fn names(t: &Till, skus: &[(String, u64)]) -> Vec<String> {
    let products = t.store.get("/api/v1/products?limit=100").await;
    skus.iter()
        .map(|(sku, _)| {
            products["products"]
                .as_array()
                .expect("products")
                .iter()
                .find(|p| {
                    p["variants"]
                        .as_array()
                        .is_some_and(|vs| vs.iter().any(|v| v["sku"] == sku.as_str()))
                })
                .and_then(|p| p["name"].as_str())
                .unwrap_or_else(|| panic!("the node sells {sku}"))
                .to_string()
        })
        .collect()
}

/// Finds the shopper by loyalty number on the Customer panel and pulls their web basket.
async fn attach_and_pull(page: &Session, wait: Duration, names: &[String]) {
    page.type_into("[data-customer-value]", "7000 1234").await;
    page.click("[data-customer-form] button[type=submit]").await;
    page.wait_for_text("[data-customer-name]", wait, |t| t == "Ada Lovelace")
        .await;
    assert_eq!(
        page.text("[data-customer-email]").await.trim(),
        "a***@example.com",
        "the clerk sees the email masked"
    );
    page.click("[data-pull-basket]").await;
    page.wait_for_text("[data-basket-pulled]", wait, |t| {
        t.contains("Web basket pulled")
    })
    .await;
    let lines = page.text("table.lines tbody").await;
    assert!(names.iter().all(|n| lines.contains(n.as_str())), "{lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_pulls_a_customers_web_basket_onto_the_till_and_the_receipt_goes_by_email() {
    let t = till().await;
    let (_, token, basket) = shopper(&t).await;
    let lines = fill_basket(&t, &token, &basket, 2).await;
    for (sku, _) in &lines {
        t.store.receive(sku, 50).await;
    }
    converged(&t.hub, &t.store).await;
    let names = names(&t, &lines).await;
    let base = t.store.node.base.clone();

    let driver = Driver::start().await;
    let page = driver.session().await;
    let wait = Duration::from_secs(15);

    // The clerk signs in on the keypad; the node has one till, open.
    page.goto(&format!("{base}/pos")).await;
    page.wait_for_text("main legend", wait, |t| t.contains("Who is signing in"))
        .await;
    page.click("label.staff-tile:has(input[value=ana]) span")
        .await;
    for key in PIN.chars() {
        page.click(&format!("[data-keypad] button[data-key='{key}']"))
            .await;
    }
    page.click("form.signin button[type=submit]").await;
    page.wait_for_text("table.lines tbody", wait, |t| {
        t.contains("Scan an item to start a sale.")
    })
    .await;
    assert!(page.text("[data-sync]").await.contains("Online"));

    // Find Ada by loyalty number and pull her web basket: it leaves the web.
    attach_and_pull(&page, wait, &names).await;
    assert!(web_lines(&t, &token, &basket).await.is_empty());

    // Void the sale: the lines go back to her web basket; the till starts afresh.
    let pulled_sale = page.current_url().await;
    assert!(pulled_sale.contains("pulled=1"), "{pulled_sale}");
    page.click("button[name=action][value=clear]").await;
    let units: u64 = lines.iter().map(|(_, q)| q).sum();
    page.wait_for_text("p.notice", wait, |t| {
        t.contains(&format!("Sale voided. The {units} items pulled"))
    })
    .await;
    assert!(page
        .text("table.lines tbody")
        .await
        .contains("Scan an item to start a sale."));
    let mut back = web_lines(&t, &token, &basket).await;
    back.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(back, want, "the web basket is as it was");

    // The voided sale, reached again (Back), cannot be paid: its items are on the web again.
    page.goto(&pulled_sale).await;
    page.wait_for_text("[data-basket-pulled]", wait, |t| !t.is_empty())
        .await;
    page.type_into("[data-given]", "5000.00").await;
    page.click("form[data-cash-form] button[type=submit]").await;
    page.wait_for_text("p.notice", wait, |t| t.contains("This sale was voided"))
        .await;
    page.click("button[name=action][value=clear]").await;
    page.wait_for_text("p.notice", wait, |t| t.contains("Sale voided."))
        .await;
    let mut again = web_lines(&t, &token, &basket).await;
    again.sort();
    assert_eq!(again, want, "given back once");

    // Again, and this time she pays cash.
    attach_and_pull(&page, wait, &names).await;
    assert!(web_lines(&t, &token, &basket).await.is_empty());
    page.type_into("[data-given]", "5000.00").await;
    page.click("form[data-cash-form] button[type=submit]").await;

    // The receipt: its number as a QR code (an inline SVG) and Ada, masked.
    let number = page
        .wait_for_text("[data-receipt-number]", wait, |t| !t.trim().is_empty())
        .await
        .trim()
        .to_string();
    page.find("[data-receipt-qr] svg").await;
    let customer = page.text("[data-receipt-customer]").await;
    assert!(
        customer.contains("Ada Lovelace") && customer.contains("a***@example.com"),
        "{customer}"
    );
    assert!(!customer.contains(EMAIL), "the email stays masked");

    // The sale syncs to the hub, which mails the receipt to Ada.
    converged(&t.hub, &t.store).await;
    let sent = eventually(WAIT, || async {
        let m = t.mails(EMAIL).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let subject = sent[0]["headers"]["subject"].as_str().unwrap_or_default();
    assert!(subject.contains(&number), "{subject}");
    page.close().await;
}
