//! The back office and the ops page in a real browser (headless Chromium through chromedriver),
//! against the real `omnihub hub` process: every role signs in and sees only its pages, a
//! promotion goes from a merchandiser's draft through another person's approval to the
//! storefront's prices, an operator retries and discards dead letters, the ops page shows a
//! store node go offline when its link is cut, and an analyst and customer service see real
//! orders in charts and a customer's timeline.
//!
//! Runs with `cargo test --features browser-tests --test browser_backoffice`; needs Debian's
//! `chromium` and `chromium-driver` (`.ci/run` installs them when missing). With
//! `OMNIHUB_SCREENSHOTS=docs/screenshots` the tests also save the pictures the docs show.

#![cfg(feature = "browser-tests")]

mod common;

use common::backoffice::{nav_links, sign_in, status_of_page, BackOffice, WAIT};
use common::shop::eventually;
use common::stores::Store;
use common::webdriver::{Driver, Session};
use serde_json::{json, Value};
use std::time::Duration;

const ROLES: [&str; 6] = [
    "admin",
    "merchandiser",
    "marketer",
    "analyst",
    "approver",
    "support",
];

/// Every page of the navigation and the roles that may open it (`docs/backoffice.md`).
const PAGES: &[(&str, &[&str])] = &[
    ("/backoffice", &ROLES),
    ("/backoffice/orders", &["support", "admin"]),
    ("/backoffice/customers", &["support", "marketer", "admin"]),
    ("/backoffice/catalog", &["merchandiser", "admin"]),
    (
        "/backoffice/promotions",
        &["merchandiser", "marketer", "approver", "admin"],
    ),
    ("/backoffice/imports", &["merchandiser", "admin"]),
    ("/backoffice/analytics", &["analyst", "marketer", "admin"]),
    ("/backoffice/users", &["admin"]),
    ("/backoffice/audit", &["admin"]),
    ("/ops", &["admin"]),
];

/// The demo shopper `hub` seeds with the demo catalog.
const SHOPPER: (&str, &str) = ("shopper@example.com", "omnihub-demo");

async fn open(page: &Session, base: &str, path: &str) -> u64 {
    page.goto(&format!("{base}{path}")).await;
    status_of_page(page).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_signs_in_and_sees_only_the_pages_it_may_use() {
    let bo = BackOffice::start(&[]).await;
    let base = bo.hub.base.clone();
    for role in ROLES {
        bo.user(
            &format!("{role}@example.com"),
            &format!("Test {role}"),
            &[role],
        )
        .await;
    }
    let driver = Driver::start().await;
    for role in ROLES {
        let page = driver.session().await;
        sign_in(&page, &base, &format!("{role}@example.com")).await;
        assert_eq!(status_of_page(&page).await, 200, "{role}'s dashboard");
        assert!(
            page.text("h1").await.len() > 1,
            "{role}'s dashboard has a title"
        );
        let links = nav_links(&page).await;
        for (path, roles) in PAGES {
            let allowed = roles.contains(&role);
            assert_eq!(
                links.iter().any(|l| l == path),
                allowed,
                "{path} in {role}'s navigation: {links:?}"
            );
            let status = open(&page, &base, path).await;
            if allowed {
                assert_eq!(status, 200, "{path} as {role}");
            } else {
                assert_eq!(status, 403, "{path} as {role}");
                let body = page.text("body").await;
                assert!(
                    body.contains("Not for your role") || body.contains("may not use"),
                    "{path} as {role} says why: {body}"
                );
            }
        }
        // Whatever else the navigation grows, each entry opens for the role that sees it.
        for link in &links {
            assert_eq!(open(&page, &base, link).await, 200, "{link} as {role}");
        }
        if role == "admin" {
            // The ops page, by the back-office session alone (no ops token typed).
            open(&page, &base, "/ops").await;
            page.wait_for_text("#live-text", WAIT, |t| t == "live")
                .await;
            assert!(page
                .text("#signed-in-as")
                .await
                .contains("admin@example.com"));
        }
        page.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchandiser_drafts_a_promotion_another_person_approves_it_and_it_prices_baskets() {
    let bo = BackOffice::start(&[]).await;
    let base = bo.hub.base.clone();
    // The author may approve promotions too: the four-eyes rule, not a role, stops her.
    let mia = bo
        .user(
            "mia@example.com",
            "Mia Merch",
            &["merchandiser", "approver"],
        )
        .await;
    bo.user("ada@example.com", "Ada Approver", &["approver"])
        .await;
    bo.user("root@example.com", "Root Admin", &["admin"]).await;
    let sku = bo.skus_of("coffee", 1).await.remove(0);
    let shopper = bo.shopper(None).await;
    let basket = bo.basket(&shopper, &[(&sku, 2)]).await;
    let before = bo.basket_json(&shopper, &basket).await;

    let driver = Driver::start().await;
    let page = driver.session().await;
    sign_in(&page, &base, "mia@example.com").await;
    open(&page, &base, "/backoffice/promotions").await;
    page.click("#new-promotion").await;
    page.wait_for_url(WAIT, |u| u.ends_with("/backoffice/promotions/new"))
        .await;
    page.type_into("#promotion-id", "COFFEE10").await;
    page.type_into("#promotion-name", "Coffee: ten percent off")
        .await;
    page.type_into(
        "#promotion-description",
        "Every coffee ten percent cheaper this week.",
    )
    .await;
    page.type_into(
        "#promotion-spec",
        r#"{"benefit": {"type": "percent_off", "target": {"type": "categories", "categories": ["coffee"]}, "percent_bp": 1000}, "combination": {"type": "stackable", "group": "coffee"}, "priority": 10}"#,
    )
    .await;
    page.click("#save-promotion").await;
    page.wait_for_url(WAIT, |u| u.ends_with("/backoffice/promotions/COFFEE10"))
        .await;
    assert_eq!(page.text("#promotion-status").await, "draft");
    // Her own draft: no approve button, and the API refuses her approval too.
    assert_eq!(page.count("#approve").await, 0);
    assert!(page.text("#own-draft").await.contains("another approver"));
    let (_, token) = bo
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/admin/users/{mia}/tokens"),
            Some(json!({"name": "browser test"})),
        )
        .await;
    let res = bo
        .http
        .post(bo.url("/api/v1/backoffice/promotions/COFFEE10/approve"))
        .bearer_auth(token["token"].as_str().expect("a token"))
        .send()
        .await
        .expect("sent");
    assert!(
        res.status().is_client_error(),
        "the author's own approval: {}",
        res.status()
    );
    page.close().await;

    // Another approver sees the draft waiting on the dashboard and approves it.
    let page = driver.session().await;
    sign_in(&page, &base, "ada@example.com").await;
    assert_eq!(page.text("#stat-approvals .value").await, "1");
    page.click("#stat-approvals").await;
    page.wait_for_text("#promotions-table", WAIT, |t| t.contains("COFFEE10"))
        .await;
    open(&page, &base, "/backoffice/promotions/COFFEE10").await;
    assert_eq!(page.text("#promotion-status").await, "draft");
    page.screenshot_for_docs("backoffice-promotion-approval")
        .await;
    page.click("#approve").await;
    let question = page.accept_dialog(WAIT).await;
    assert!(!question.is_empty());
    page.wait_for_text("#promotion-status", WAIT, |t| t == "active")
        .await;
    page.close().await;

    // Live: the storefront prices the same basket ten percent lower.
    let after = eventually(WAIT, || async {
        let after = bo.basket_json(&shopper, &basket).await;
        (after.to_string().contains("COFFEE10")).then_some(after)
    })
    .await;
    assert!(
        !before.to_string().contains("COFFEE10"),
        "no discount before: {before}"
    );
    assert_ne!(before["total"], after["total"], "{before}\n{after}");

    // The admin's audit log has who did what.
    let page = driver.session().await;
    sign_in(&page, &base, "root@example.com").await;
    open(&page, &base, "/backoffice/audit").await;
    let table = page.text("#audit-table").await;
    for shown in [
        "promotion.create",
        "promotion.approve",
        "mia@example.com",
        "ada@example.com",
        "promotion/COFFEE10",
    ] {
        assert!(table.contains(shown), "{shown} in the audit log: {table}");
    }
    page.screenshot_for_docs("backoffice-audit").await;
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_and_discards_dead_letters_on_the_ops_page() {
    let mut bo = BackOffice::start(&[("berlin", "store-berlin")]).await;
    let base = bo.hub.base.clone();
    bo.user("ops@example.com", "Olga Ops", &["admin"]).await;
    // An order while the OMS and the mail server are down: one attempt each, then dead.
    let sku = bo.skus_of("coffee", 1).await.remove(0);
    let guest = bo.shopper(None).await;
    bo.buy(&guest, "guest@example.com", &[(&sku, 1)]).await;
    let oms = bo.dead_letters_become("oms", 1).await.remove(0);
    let mail = bo.dead_letters_become("email", 1).await.remove(0);
    let oms_id = oms["id"].as_str().expect("id").to_string();
    let mail_id = mail["id"].as_str().expect("id").to_string();

    let driver = Driver::start().await;
    let page = driver.session().await;
    sign_in(&page, &base, "ops@example.com").await;
    // The dashboard counts them and links to the ops page.
    assert_eq!(page.text("#stat-dead-letters .value").await, "2");
    page.click("#stat-dead-letters").await;
    page.wait_for_url(WAIT, |u| u.ends_with("/ops")).await;
    page.wait_for_text("#live-text", WAIT, |t| t == "live")
        .await;
    let oms_row = format!("li[data-dead-letter='{oms_id}']");
    let mail_row = format!("li[data-dead-letter='{mail_id}']");
    assert_eq!(page.count(&oms_row).await, 1);
    assert_eq!(page.count(&mail_row).await, 1);
    page.screenshot_for_docs("ops").await;

    // The OMS is back: the operator sends its letter again, and it is delivered.
    bo.start_oms();
    page.click(&format!("button[data-action='retry'][data-id='{oms_id}']"))
        .await;
    let question = page.accept_dialog(WAIT).await;
    assert!(question.contains(&oms_id), "{question}");
    page.wait_for_text("#flash", WAIT, |t| t.contains("Queued"))
        .await;
    page.wait_for_count(&oms_row, WAIT, |n| n == 0).await;
    assert!(bo.dead_letters("oms").await.is_empty());
    // The live feed shows the delivery (and the letter stays gone).
    page.wait_for_text("tr[data-destination='oms']", WAIT, |t| {
        // destination, circuit, backlog, oldest, delivered, …
        t.split_whitespace().nth(4) == Some("1")
    })
    .await;
    assert_eq!(page.count(&oms_row).await, 0);

    // The mail letter is dropped for good.
    page.click(&format!(
        "button[data-action='discard'][data-id='{mail_id}']"
    ))
    .await;
    page.accept_dialog(WAIT).await;
    page.wait_for_text("#flash", WAIT, |t| t.contains("Discarded"))
        .await;
    page.wait_for_count(&mail_row, WAIT, |n| n == 0).await;
    assert!(bo.dead_letters("email").await.is_empty());
    let outbox = bo.ops("/ops/outbox").await;
    assert_eq!(outbox["destinations"]["oms"]["delivered"], 1, "{outbox}");
    assert_eq!(outbox["destinations"]["email"]["dead"], 0, "{outbox}");
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_page_shows_a_store_node_go_offline_when_its_link_is_cut() {
    let bo = BackOffice::start(&[("berlin", "store-berlin")]).await;
    let base = bo.hub.base.clone();
    bo.user("ops@example.com", "Olga Ops", &["admin"]).await;
    let store = Store::start(
        bo.dir.path(),
        "berlin",
        "store-berlin",
        common::stores::hub_addr(&bo.hub),
    )
    .await;
    store.online().await;

    let driver = Driver::start().await;
    let page = driver.session().await;
    sign_in(&page, &base, "ops@example.com").await;
    open(&page, &base, "/ops").await;
    page.wait_for_text("#live-text", WAIT, |t| t == "live")
        .await;
    page.wait_for_count("tr[data-node='berlin'][data-connected='true']", WAIT, |n| {
        n == 1
    })
    .await;
    assert!(page.text("tr[data-node='berlin']").await.contains("online"));
    // A mark on this document: if the page reloaded, it would be gone.
    page.execute("window.stillTheSamePage = true; return true;", json!([]))
        .await;

    store.proxy.cut();
    page.wait_for_count(
        "tr[data-node='berlin'][data-connected='false']",
        Duration::from_secs(30),
        |n| n == 1,
    )
    .await;
    assert!(page
        .text("tr[data-node='berlin']")
        .await
        .contains("offline"));
    assert_eq!(
        page.execute("return window.stillTheSamePage === true;", json!([]))
            .await,
        Value::Bool(true),
        "updated live, not reloaded"
    );
    // And back when the link is.
    store.proxy.restore();
    page.wait_for_count("tr[data-node='berlin'][data-connected='true']", WAIT, |n| {
        n == 1
    })
    .await;
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_sees_the_days_orders_in_charts_and_support_a_customers_timeline() {
    let bo = BackOffice::start(&[]).await;
    let base = bo.hub.base.clone();
    bo.user("ana@example.com", "Ana Analyst", &["analyst"])
        .await;
    bo.user("sam@example.com", "Sam Support", &["support"])
        .await;
    bo.user("root@example.com", "Root Admin", &["admin"]).await;
    let coffee = bo.skus_of("coffee", 3).await;
    let tea = bo.skus_of("tea", 2).await;
    // The demo shopper looks at products and buys twice; a guest buys once.
    let shopper = bo.shopper(Some(SHOPPER)).await;
    let views: Vec<Value> = bo
        .slugs_of("coffee", 6)
        .await
        .iter()
        .map(|slug| json!({"kind": "product_view", "payload": {"slug": slug}}))
        .collect();
    let res = shopper
        .post(bo.url("/api/v1/events"))
        .json(&json!({ "events": views }))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "events: {}", res.status());
    bo.buy(&shopper, SHOPPER.0, &[(&coffee[0], 2), (&tea[0], 1)])
        .await;
    bo.buy(&shopper, SHOPPER.0, &[(&coffee[1], 1)]).await;
    let guest = bo.shopper(None).await;
    bo.buy(
        &guest,
        "guest@example.com",
        &[(&coffee[2], 3), (&tea[1], 2)],
    )
    .await;

    let driver = Driver::start().await;
    let page = driver.session().await;
    sign_in(&page, &base, "ana@example.com").await;
    // The analytics fold events in the background: look until the orders are in.
    eventually(WAIT, || async {
        open(&page, &base, "/backoffice/analytics").await;
        let funnel = page.text("#funnel-chart").await;
        page.text("#conversion")
            .await
            .ends_with('%')
            .then_some(funnel)
    })
    .await;
    for chart in [
        "#funnel-chart svg",
        "#revenue-chart svg",
        "#products-chart svg",
    ] {
        assert_eq!(page.count(chart).await, 1, "{chart}");
    }
    let products_chart = page.text("#products-chart").await;
    assert!(!products_chart.trim().is_empty(), "top products drawn");
    page.screenshot_for_docs("backoffice-analytics").await;
    page.close().await;

    // Customer service finds the shopper and sees the orders on the timeline.
    let page = driver.session().await;
    sign_in(&page, &base, "sam@example.com").await;
    open(
        &page,
        &base,
        &format!("/backoffice/customers?q={}", SHOPPER.0),
    )
    .await;
    if !page.current_url().await.contains("/backoffice/customers/") {
        page.click("main table a").await;
    }
    page.wait_for_text("h1", WAIT, |t| t.contains("Demo Shopper"))
        .await;
    let timeline = eventually(WAIT, || async {
        page.goto(&page.current_url().await).await;
        let t = page.text("main").await;
        (t.matches("order_placed").count() >= 2).then_some(t)
    })
    .await;
    assert!(timeline.contains("product_view"), "{timeline}");
    assert!(
        !timeline.contains("guest@example.com"),
        "another customer's data"
    );
    page.screenshot_for_docs("backoffice-customer").await;
    page.close().await;

    // The admin's dashboard: today's orders and revenue.
    let page = driver.session().await;
    sign_in(&page, &base, "root@example.com").await;
    page.wait_for_text("#stat-orders .value", WAIT, |t| t == "3")
        .await;
    page.screenshot_for_docs("backoffice-dashboard").await;
    page.close().await;
}
