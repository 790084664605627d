//! Fulfilment end to end: the OMS, the carrier and the mail sink run as processes; the hub runs
//! in this process. An order reaches the OMS exactly once through the outbox, ships, is tracked
//! to the door, and the customer's emails land in the SMTP sink. Outages queue, dead letters are
//! retried by an operator, and bad webhooks change nothing.

mod common;

use common::shop::{eventually, Shop, ShopOptions, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::time::Duration;

const VISA: &str = "4242424242424242";

fn options() -> ShopOptions {
    ShopOptions {
        fulfilment: true,
        ..ShopOptions::default()
    }
}

/// Buys `lines` as a guest; answers the order number and id.
async fn buy(shop: &Shop, lines: &[(&str, i64)]) -> (String, String) {
    let (number, id, _) = buy_with_link(shop, lines).await;
    (number, id)
}

/// Buys `lines` as a guest; answers the order number, id and the guest's order link.
async fn buy_with_link(shop: &Shop, lines: &[(&str, i64)]) -> (String, String, String) {
    let (basket, token) = shop.basket(lines).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    let (status, _) = shop.pay(&Shop::session_of(&checkout), VISA).await;
    assert_eq!(status, 200);
    let done = shop
        .settled(checkout["id"].as_str().expect("id"), &token)
        .await;
    (
        done["order"]["number"]
            .as_str()
            .expect("number")
            .to_string(),
        done["order"]["id"].as_str().expect("id").to_string(),
        done["order"]["url"].as_str().expect("url").to_string(),
    )
}

async fn get(shop: &Shop, url: String) -> Value {
    shop.client
        .get(url)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

async fn post(shop: &Shop, url: String, body: Value) -> reqwest::Response {
    shop.client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("sent")
}

fn partners(shop: &Shop) -> &common::shop::Partners {
    shop.partners.as_ref().expect("a shop with partners")
}

/// Moves the OMS's and the carrier's clocks on by `seconds`.
async fn advance(shop: &Shop, seconds: u64) {
    let p = partners(shop);
    for base in [&p.oms.base, &p.logistics.base] {
        let res = post(
            shop,
            format!("{base}/_sim/advance"),
            json!({"seconds": seconds}),
        )
        .await;
        assert!(res.status().is_success());
    }
}

async fn mails(shop: &Shop) -> Vec<Value> {
    let body = get(shop, format!("{}/api/messages", partners(shop).inbox)).await;
    body["messages"].as_array().cloned().unwrap_or_default()
}

async fn mail_text(shop: &Shop, id: &str) -> String {
    let body = get(shop, format!("{}/api/messages/{id}", partners(shop).inbox)).await;
    body["raw"].as_str().unwrap_or_default().to_string()
}

#[actix_web::test]
async fn an_order_reaches_the_oms_once_ships_is_tracked_and_mails_the_customer() {
    let shop = Shop::start(options()).await;
    // Every status report arrives three times, some late: the order still moves once per step.
    for base in [&partners(&shop).oms.base, &partners(&shop).logistics.base] {
        let res = post(
            &shop,
            format!("{base}/_sim/faults"),
            json!({"webhooks": {"duplicate": 3, "delay_ms": 50}}),
        )
        .await;
        assert!(res.status().is_success());
    }
    let (number, order_id, link) = buy_with_link(&shop, &[("BEANS", 2)]).await;
    let oms = partners(&shop).oms.base.clone();

    // The outbox delivers the order to the OMS, once.
    eventually(Duration::from_secs(20), || async {
        let stats = get(&shop, format!("{oms}/_sim/stats")).await;
        (stats["orders"] == 1).then_some(())
    })
    .await;

    // The OMS allocates, picks and ships through the carrier; the carrier delivers.
    let order = eventually(Duration::from_secs(60), || async {
        advance(&shop, 5).await;
        let o = shop.admin(&format!("/orders/{order_id}")).await;
        (o["status"] == "Delivered").then_some(o)
    })
    .await;
    assert_eq!(order["number"], number.as_str());
    let stats = get(&shop, format!("{oms}/_sim/stats")).await;
    assert_eq!(stats["orders"], 1);
    assert_eq!(stats["effects_applied_twice"], 0);

    let orders = shop.all_orders().await;
    assert_eq!(orders.len(), 1);

    // The customer's view through the guest link: the parcel with its tracking, and the story.
    let key = link.split("key=").nth(1).expect("key");
    let mine = get(
        &shop,
        shop.url(&format!("/api/v1/orders/lookup?number={number}&key={key}")),
    )
    .await;
    assert_eq!(mine["status"], "Delivered");
    assert!(mine["shipments"][0]["tracking_number"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let story: Vec<&str> = mine["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|t| t["what"].as_str())
        .collect();
    assert!(story.len() >= 3, "{story:?}");
    let mut unique = story.clone();
    unique.dedup();
    assert_eq!(
        unique, story,
        "no step recorded twice despite triplicate reports"
    );
    assert!(
        story.iter().any(|w| w.starts_with("Shipped with")),
        "{story:?}"
    );
    assert!(
        story.last().is_some_and(|w| w.starts_with("Delivered")),
        "{story:?}"
    );
    let page = shop
        .client
        .get(shop.url(&link))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Tracking") && page.contains("Delivered"));

    // Emails: the confirmation, shipped (with its tracking link) and delivered.
    let inbox = eventually(Duration::from_secs(30), || async {
        let m = mails(&shop).await;
        (m.len() >= 3).then_some(m)
    })
    .await;
    let subjects: Vec<String> = inbox
        .iter()
        .filter_map(|m| m["headers"]["subject"].as_str().map(str::to_string))
        .collect();
    assert!(
        subjects.iter().all(|s| s.contains(&number)),
        "every mail names the order: {subjects:?}"
    );
    let mut texts = Vec::new();
    for m in &inbox {
        texts.push(mail_text(&shop, m["id"].as_str().expect("id")).await);
    }
    let all = texts.join("\n");
    assert!(all.contains("/orders/"), "the order link");
    assert!(all.contains("/track/"), "the tracking link");
    assert!(
        all.contains("25.98") || all.contains("25,98"),
        "the lines' total"
    );
    for t in &texts {
        assert!(
            t.contains("Message-ID:") || t.contains("Message-Id:"),
            "{t}"
        );
        assert!(t.contains("multipart/alternative"), "text and HTML");
    }
}

#[actix_web::test]
async fn an_oms_outage_queues_orders_and_delivers_each_once_after_recovery() {
    let shop = Shop::start(options()).await;
    let oms = partners(&shop).oms.base.clone();
    let res = post(&shop, format!("{oms}/_sim/faults"), json!({"outage": true})).await;
    assert!(res.status().is_success());
    for _ in 0..3 {
        buy(&shop, &[("BEANS", 1)]).await;
    }
    let backlog = eventually(Duration::from_secs(20), || async {
        let b = get(&shop, shop.url("/ops/outbox")).await;
        let oms = b["destinations"]["oms"].clone();
        (oms["pending"] == 3 && oms["failed_attempts"].as_u64().unwrap_or(0) > 0).then_some(oms)
    })
    .await;
    assert!(backlog["oldest_age_seconds"].is_number());
    let metrics = shop
        .client
        .get(shop.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("omnihub_outbox_pending{destination=\"oms\"} 3"),
        "{metrics}"
    );
    let res = shop
        .client
        .delete(format!("{oms}/_sim/faults"))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success());
    eventually(Duration::from_secs(30), || async {
        let stats = get(&shop, format!("{oms}/_sim/stats")).await;
        let b = get(&shop, shop.url("/ops/outbox")).await;
        (stats["orders"] == 3 && b["destinations"]["oms"]["pending"] == 0).then_some(())
    })
    .await;
    let stats = get(&shop, format!("{oms}/_sim/stats")).await;
    assert_eq!(stats["effects_applied_twice"], 0);
}

#[actix_web::test]
async fn a_dead_letter_is_seen_and_retried_by_an_operator() {
    let shop = Shop::start(ShopOptions {
        outbox_max_attempts: 2,
        ..options()
    })
    .await;
    let oms = partners(&shop).oms.base.clone();
    let res = post(&shop, format!("{oms}/_sim/faults"), json!({"fail_next": 2})).await;
    assert!(res.status().is_success());
    buy(&shop, &[("TEA", 1)]).await;
    let dead = eventually(Duration::from_secs(20), || async {
        let d = get(&shop, shop.url("/ops/outbox/oms/dead")).await;
        let list = d["dead_letters"].as_array().cloned().unwrap_or_default();
        (list.len() == 1).then(|| list[0].clone())
    })
    .await;
    assert_eq!(dead["attempts"], 2);
    assert!(dead["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("500")));
    assert_eq!(get(&shop, format!("{oms}/_sim/stats")).await["orders"], 0);
    let id = dead["id"].as_str().expect("id");
    let res = shop
        .client
        .post(shop.url(&format!("/ops/outbox/oms/dead/{id}/retry")))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    eventually(Duration::from_secs(20), || async {
        let stats = get(&shop, format!("{oms}/_sim/stats")).await;
        (stats["orders"] == 1).then_some(())
    })
    .await;
    let d = get(&shop, shop.url("/ops/outbox/oms/dead")).await;
    assert_eq!(d["dead_letters"].as_array().map(Vec::len), Some(0));
    let res = shop
        .client
        .delete(shop.url(&format!("/ops/outbox/oms/dead/{id}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 404, "already retried");
}

#[actix_web::test]
async fn bad_fulfilment_webhooks_are_refused_and_change_nothing() {
    let shop = Shop::start(options()).await;
    let (_, order_id) = buy(&shop, &[("BEANS", 1)]).await;
    let before = shop.admin(&format!("/orders/{order_id}")).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let send = |body: Value, secret: &'static str| {
        let body = body.to_string();
        let sig = hub::payments::webhook::sign(secret, now, body.as_bytes());
        shop.client
            .post(shop.url("/webhooks/oms"))
            .header("Omnihub-Signature", format!("t={now},v1={sig}"))
            .body(body)
            .send()
    };
    let shipped = |order: &str| {
        json!({"id": format!("evt_{order}"), "type": "order.shipped", "created": now,
            "data": {"order_id": order, "number": "W-1", "oms_id": "oms_1",
                "shipment": {"id": "s1", "carrier": "DHL", "tracking_number": "T1", "tracking_url": "", "lines": []}}})
    };
    let res = send(shipped(&order_id), "whsec_wrong").await.expect("sent");
    assert_eq!(res.status(), 400);
    let res = send(shipped("01HZZZZZZZZZZZZZZZZZZZZZZZ"), "whsec_oms_demo")
        .await
        .expect("sent");
    assert_eq!(res.status(), 404);
    // Cancel the order, then a "shipped" for it is an impossible transition.
    let res = shop
        .client
        .post(shop.url(&format!("/api/v1/admin/orders/{order_id}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reason": "test"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let cancelled = shop.admin(&format!("/orders/{order_id}")).await;
    let res = send(shipped(&order_id), "whsec_oms_demo")
        .await
        .expect("sent");
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "impossible_transition");
    let after = shop.admin(&format!("/orders/{order_id}")).await;
    assert_eq!(after, cancelled, "unchanged");
    assert_ne!(before["status"], after["status"]);
}

#[actix_web::test]
async fn an_unsubscribe_link_works_for_its_customer_only() {
    let shop = Shop::start(ShopOptions::default()).await;
    let register = |email: &'static str| {
        let shop = &shop;
        async move {
            let body: Value = shop
                .client
                .post(shop.url("/api/v1/customers"))
                .json(&json!({
                    "email": email, "name": "Grace", "password": "correct horse battery",
                    "consents": [{"channel": "email", "purpose": "marketing", "granted": true}],
                }))
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            body["customer"]["id"]
                .as_str()
                .expect("id")
                .parse::<protocol::CustomerId>()
                .expect("a customer id")
        }
    };
    let grace = register("grace@example.com").await;
    let other = register("other@example.com").await;
    let secret = hub::storage::CustomerStore::link_secret(shop.handle.storage.as_ref())
        .await
        .expect("secret");
    let link = hub::unsubscribe::url(&shop.url(""), &secret, grace);
    let page = shop.client.get(&link).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("Unsubscribe"));
    // Someone else's token on this customer, or a changed token: nothing happens.
    let forged = link.replace(
        &hub::unsubscribe::token(&secret, grace),
        &hub::unsubscribe::token(&secret, other),
    );
    let res = shop.client.post(&forged).send().await.expect("sent");
    assert_eq!(res.status(), 404);
    let shop_ref = &shop;
    let opted_out = |id| async move {
        hub::storage::CustomerStore::customer(shop_ref.handle.storage.as_ref(), id)
            .await
            .expect("read")
            .expect("customer")
            .consents
            .current(
                protocol::ConsentChannel::Email,
                protocol::ConsentPurpose::Marketing,
            )
            .is_some_and(|r| !r.granted && r.source == protocol::ConsentSource::Unsubscribe)
    };
    assert!(!opted_out(grace).await);
    // A mail client's one-click unsubscribe (RFC 8058).
    let res = shop
        .client
        .post(&link)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    assert!(opted_out(grace).await);
    assert!(!opted_out(other).await);
}

#[actix_web::test]
async fn emails_wait_while_the_mail_server_is_down_and_go_out_when_it_returns() {
    let mut shop = Shop::start(options()).await;
    // The mail server goes away.
    let smtp = partners(&shop).mail.base.clone();
    {
        let p = shop.partners.as_mut().expect("partners");
        let _ = p.mail.child.kill();
        let _ = p.mail.child.wait();
    }
    let (number, _) = buy(&shop, &[("TEA", 1)]).await;
    eventually(Duration::from_secs(20), || async {
        let b = get(&shop, shop.url("/ops/outbox")).await;
        let email = b["destinations"]["email"].clone();
        (email["pending"].as_u64() >= Some(1) && email["failed_attempts"].as_u64() >= Some(1))
            .then_some(())
    })
    .await;
    // It comes back on the same address: the confirmation goes out.
    let (mail, line) = common::shop::start_process(
        &["sim", "mail", "--smtp", &smtp, "--http", "127.0.0.1:0"],
        "omnihub sim mail: SMTP on ",
    );
    let inbox = line
        .split_once(", inbox on ")
        .expect("the mail line")
        .1
        .trim_end_matches('/')
        .to_string();
    let subjects = eventually(Duration::from_secs(40), || async {
        let body = get(&shop, format!("{inbox}/api/messages")).await;
        let subjects: Vec<String> = body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["headers"]["subject"].as_str().map(str::to_string))
            .collect();
        (!subjects.is_empty()).then_some(subjects)
    })
    .await;
    assert!(subjects.iter().any(|s| s.contains(&number)), "{subjects:?}");
    drop(mail);
}
