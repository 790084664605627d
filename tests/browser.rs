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
