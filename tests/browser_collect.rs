//! Click-and-collect at the till in a real browser (headless Chromium through chromedriver),
//! against real processes: the hub, the store's node, the payment simulator and the mail sink
//! (`tests/common/collect.rs`). A shopper's paid pickup order (checked out and paid through the
//! API) appears on the till's "Click & collect" screen; the clerk signs in on the keypad, opens
//! the till, picks the order and hands it over in the page; the page shows it collected and the
//! hub's order says "Collected".
//! Runs with `cargo test --features browser-tests --test browser_collect`; needs Debian's
//! `chromium` and `chromium-driver` (`.ci/run` installs them when missing).

#![cfg(feature = "browser-tests")]

mod common;

use common::collect::{Collect, CLERK, CLERK_PIN};
use common::stores::{a_sku, converged};
use common::webdriver::Driver;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_picks_and_hands_over_a_paid_pickup_on_the_click_and_collect_screen() {
    let c = Collect::start().await;
    let sku = a_sku(&c.store, 0).await;
    // A delivery of 10: the node grants the hub part of it, so the hub can promise a pickup.
    c.store.receive(&sku, 10).await;
    converged(&c.hub, &c.store).await;
    let order = c.buy_for_pickup(&[(sku.as_str(), 2)], "Ada Lovelace").await;
    assert_eq!(order["status"], "Being prepared for pickup", "{order}");
    let id = order["id"].as_str().expect("id").to_string();
    let number = order["number"].as_str().expect("number").to_string();
    assert_eq!(c.on_pick_list(&number).await["status"], "waiting");

    let driver = Driver::start().await;
    let page = driver.session().await;
    // Generous: the suite runs beside other builds on a small machine.
    let wait = Duration::from_secs(20);
    let base = c.store.node.base.clone();

    // Sign in on the keypad and open the store's only till.
    page.goto(&format!("{base}/pos")).await;
    page.wait_for_text("main legend", wait, |t| t.contains("Who is signing in"))
        .await;
    page.click(&format!("label.staff-tile:has(input[value={CLERK}]) span"))
        .await;
    for key in CLERK_PIN.chars() {
        page.click(&format!("[data-keypad] button[data-key='{key}']"))
            .await;
    }
    assert_eq!(page.property("#pin", "value").await, json!(CLERK_PIN));
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

    // The header link opens the pick list, where the shopper's order waits to be picked.
    page.click("[data-collect-link]").await;
    page.wait_for_url(wait, |u| u.ends_with("/pos/collect"))
        .await;
    let card = format!("article[data-pickup='{number}']");
    page.wait_for_text(&format!("{card} [data-pickup-status]"), wait, |t| {
        t.trim() == "To pick"
    })
    .await;
    let shown = page.text(&card).await;
    // (The name is set in capitals by the stylesheet, and WebDriver reads the rendered text.)
    assert!(shown.to_lowercase().contains("ada lovelace"), "{shown}");
    assert!(shown.contains(&sku), "{shown}");

    // Picked, with nothing missing: ready at the till and at the hub.
    page.click(&format!("{card} button[data-pick]")).await;
    page.wait_for_text(&format!("{card} [data-pickup-status]"), wait, |t| {
        t.trim() == "Ready for pickup"
    })
    .await;
    assert!(
        page.text("[data-collect-done]").await.contains(&number),
        "the page says which order changed"
    );
    c.order_becomes(&id, "Ready for pickup").await;

    // Handed over: collected at the till, and the hub's order says so.
    page.click(&format!("{card} button[data-handover]")).await;
    page.wait_for_text(&format!("{card} [data-pickup-status]"), wait, |t| {
        t.trim() == "Collected"
    })
    .await;
    let shown = page.text(&card).await;
    assert!(shown.contains("handed over"), "{shown}");
    assert!(
        !shown.contains("Hand over") && !shown.contains("Picked"),
        "no more buttons on a collected order: {shown}"
    );
    let collected = c.order_becomes(&id, "Collected").await;
    assert_eq!(collected["pickup"]["promised"], true, "{collected}");
    let entry = c.on_pick_list(&number).await;
    assert_eq!(entry["status"], "collected", "{entry}");
    assert_eq!(entry["picked_by"], CLERK, "{entry}");
    assert_eq!(entry["handed_over_by"], CLERK, "{entry}");
    page.close().await;
}
