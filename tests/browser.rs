//! The storefront in a real browser (headless Chromium through chromedriver): search, a product
//! page, add to basket, sign in with the anonymous basket merged, and the open basket page
//! updating live when the shopper's app changes the basket.
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
    assert!(page.current_url().await.contains("/search?q=coffee"));
    page.click("main a.card-link").await;
    let product = page.text("main h1").await;
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
    assert!(page.current_url().await.ends_with("/basket"));
    assert!(page.text(".site-header").await.contains("Hi, Demo Shopper"));
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
    assert!(
        page.current_url()
            .await
            .starts_with(&format!("{}/pay/", sim.base)),
        "on the provider's page"
    );
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
