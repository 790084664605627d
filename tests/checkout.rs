//! Checkout, payments and orders end to end: the payment simulator runs as its own process and
//! speaks Stripe's API and signed webhooks over loopback; the hub runs in this process so a test
//! can move its clock and its stock. Judged on the failure cases: declines, double submits,
//! duplicated, reordered and dropped webhooks, a provider that times out, holds that expire,
//! payments that arrive after their hold, and the race for the last units.

mod common;

use common::shop::{eventually, Shop, ShopOptions, ADMIN_TOKEN, WEBHOOK_SECRET};
use serde_json::{json, Value};
use std::time::Duration;

const VISA: &str = "4242424242424242";
const DECLINED: &str = "4000000000000002";
const NO_FUNDS: &str = "4000000000009995";
const THREE_DS: &str = "4000002500003155";

fn orders_for(orders: &[Value], checkout: &str) -> usize {
    orders.iter().filter(|o| o["checkout"] == checkout).count()
}

#[actix_web::test]
async fn a_paid_checkout_becomes_one_order_and_a_sale() {
    let shop = Shop::start(ShopOptions::default()).await;
    let (basket, token) = shop.basket(&[("BEANS", 2), ("TEA", 1)]).await;

    // The quote prices what the page shows: lines, shipping, tax per rate, total.
    let quote: Value = shop
        .client
        .get(shop.url(&format!("/api/v1/baskets/{basket}/quote?country=DE")))
        .header("X-Basket-Token", &token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(quote["breakdown"]["total"]["minor"], 2 * 1299 + 450 + 490);

    let checkout = shop.checkout_ok(&basket, &token).await;
    assert_eq!(checkout["state"], "payment_pending");
    let total = checkout["breakdown"]["total"]["minor"]
        .as_i64()
        .expect("total");
    assert_eq!(total, 2 * 1299 + 450 + 490, "items plus 4.90 shipping");
    let session = Shop::session_of(&checkout);
    assert_eq!(shop.sim_session(&session).await["amount_total"], total);

    // Locked on every device, stock held.
    let locked = shop.get_basket(&basket, &token).await;
    assert_eq!(locked["checkout"]["state"], "payment_pending");
    let add = shop
        .client
        .post(shop.url(&format!("/api/v1/baskets/{basket}/lines")))
        .header("X-Basket-Token", &token)
        .json(&json!({"sku": "BEANS", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(add.status(), 409);
    let body: Value = add.json().await.expect("json");
    assert_eq!(body["error"]["code"], "basket_locked");
    shop.stock_becomes("BEANS", (1000, 2)).await;

    // The hosted page shows the amount; the card is typed there, never at the hub.
    let page = shop
        .client
        .get(checkout["payment_url"].as_str().expect("url"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("35.38") || page.contains("35,38"),
        "the amount: {page}"
    );

    let (status, _) = shop.pay(&session, VISA).await;
    assert_eq!(status, 200);
    let done = shop
        .settled(checkout["id"].as_str().expect("id"), &token)
        .await;
    assert_eq!(done["state"], "paid");
    let number = done["order"]["number"].as_str().expect("number");
    assert!(number.starts_with("W-"), "{number}");

    shop.stock_becomes("BEANS", (998, 0)).await;
    shop.stock_becomes("TEA", (4, 0)).await;
    let after = shop.get_basket(&basket, &token).await;
    assert!(after["checkout"].is_null());
    assert_eq!(after["lines"].as_array().map(Vec::len), Some(0));

    // The guest's link works; without the key, or for someone else, there is nothing.
    let url = done["order"]["url"].as_str().expect("url");
    let key = url.split("key=").nth(1).expect("key");
    let order: Value = shop
        .client
        .get(shop.url(&format!("/api/v1/orders/lookup?number={number}&key={key}")))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(order["paid"]["minor"], total);
    let wrong = shop
        .client
        .get(shop.url(&format!("/api/v1/orders/lookup?number={number}&key=guess")))
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 404);
    let (_, other_token) = shop.basket(&[]).await;
    let foreign = shop
        .client
        .get(shop.url(&format!(
            "/api/v1/checkouts/{}",
            checkout["id"].as_str().expect("id")
        )))
        .header("X-Basket-Token", other_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(foreign.status(), 404);
    assert_eq!(shop.sim_audit().await["double_charges"], 0);
}

#[actix_web::test]
async fn a_declined_card_keeps_the_page_open_and_cancel_gives_everything_back() {
    let shop = Shop::start(ShopOptions::default()).await;
    let (basket, token) = shop.basket(&[("TEA", 2)]).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    let id = checkout["id"].as_str().expect("id").to_string();
    let session = Shop::session_of(&checkout);

    let (status, body) = shop.pay(&session, NO_FUNDS).await;
    assert_eq!(status, 402, "{body}");
    // The shopper sees why on every device, in words.
    let message = eventually(Duration::from_secs(10), || async {
        let b = shop.get_basket(&basket, &token).await;
        b["checkout"]["message"].as_str().map(str::to_string)
    })
    .await;
    assert!(message.contains("insufficient funds"), "{message}");

    // Another try on the same page can still succeed...
    let (status, _) = shop.pay(&session, DECLINED).await;
    assert_eq!(status, 402);
    // ...but the shopper gives up: the session is expired first, then stock and basket return.
    let cancelled = shop.cancel(&id, &token).await;
    assert_eq!(cancelled["state"], "cancelled");
    assert!(cancelled["message"]
        .as_str()
        .is_some_and(|m| m.contains("nothing was charged")));
    assert_eq!(shop.sim_session(&session).await["status"], "expired");
    let (status, _) = shop.pay(&session, VISA).await;
    assert!(status >= 400, "an expired session cannot be paid");
    shop.stock_becomes("TEA", (5, 0)).await;
    let b = shop.get_basket(&basket, &token).await;
    assert!(b["checkout"].is_null());
    assert_eq!(b["lines"][0]["quantity"], 2, "the basket is intact");
    assert!(shop.all_orders().await.is_empty());
}

#[actix_web::test]
async fn three_d_secure_is_a_step_on_the_providers_side() {
    let shop = Shop::start(ShopOptions::default()).await;
    let (basket, token) = shop.basket(&[("BEANS", 1)]).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    let session = Shop::session_of(&checkout);
    let (status, _) = shop
        .pay_with(
            &session,
            json!({"card": THREE_DS, "three_d_secure": "fail"}),
        )
        .await;
    assert!(status >= 400);
    let (status, body) = shop
        .pay_with(
            &session,
            json!({"card": THREE_DS, "three_d_secure": "approve"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = shop
        .settled(checkout["id"].as_str().expect("id"), &token)
        .await;
    assert_eq!(done["state"], "paid");
}

#[actix_web::test]
async fn double_submit_two_tabs_and_duplicated_webhooks_make_one_order_and_one_charge() {
    let shop = Shop::start(ShopOptions::default()).await;
    shop.faults(json!({"webhooks": {"duplicate": 5}})).await;
    let (basket, token) = shop.basket(&[("BEANS", 3)]).await;
    // Two tabs press "Pay" at once, then one presses it again.
    let (a, b) = tokio::join!(
        shop.checkout(&basket, &token),
        shop.checkout(&basket, &token)
    );
    let a: Value = a.json().await.expect("json");
    let b: Value = b.json().await.expect("json");
    let c: Value = shop
        .checkout(&basket, &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(a["id"], b["id"], "one checkout at a time");
    assert_eq!(a["id"], c["id"]);
    assert_eq!(a["payment_url"], b["payment_url"]);
    shop.stock_becomes("BEANS", (1000, 3)).await;

    let id = a["id"].as_str().expect("id").to_string();
    let session = Shop::session_of(&a);
    let (status, _) = shop.pay(&session, VISA).await;
    assert_eq!(status, 200);
    let (again, body) = shop.pay(&session, VISA).await;
    assert_eq!(again, 200, "a paid session is answered as it is: {body}");
    assert_eq!(body["payment_status"], "paid");
    // The success redirect races the (five) webhooks.
    let confirms = (0..4).map(|_| {
        shop.client
            .post(shop.url(&format!("/api/v1/checkouts/{id}/confirm")))
            .header("X-Basket-Token", &token)
            .send()
    });
    for r in futures_util::future::join_all(confirms).await {
        assert!(r.expect("sent").status().is_success());
    }
    let done = shop.settled(&id, &token).await;
    assert_eq!(done["state"], "paid");
    // Let every duplicate arrive before counting.
    eventually(Duration::from_secs(20), || async {
        let d: Value = shop
            .client
            .get(shop.sim_url("/_sim/deliveries"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let list = d.as_array().or_else(|| d["deliveries"].as_array())?.clone();
        let pending = list
            .iter()
            .any(|x| x["status"] == "pending" || x["status"] == "queued");
        (!pending && list.len() >= 5).then_some(())
    })
    .await;
    let orders = shop.all_orders().await;
    assert_eq!(orders_for(&orders, &id), 1, "exactly one order");
    assert_eq!(orders.len(), 1);
    shop.stock_becomes("BEANS", (997, 0)).await;
    let audit = shop.sim_audit().await;
    assert_eq!(audit["double_charges"], 0, "{audit}");
    assert_eq!(audit["charges_succeeded"], 1, "{audit}");
}

#[actix_web::test]
async fn a_dropped_webhook_is_made_up_for_by_reconciliation() {
    let shop = Shop::start(ShopOptions::default()).await;
    shop.faults(json!({"webhooks": {"drop_next": 100}})).await;
    let (basket, token) = shop.basket(&[("BEANS", 1)]).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    let id = checkout["id"].as_str().expect("id").to_string();
    let (status, _) = shop.pay(&Shop::session_of(&checkout), VISA).await;
    assert_eq!(status, 200);
    // No webhook will come; after `reconcile_after` the sweeper asks the provider.
    assert_eq!(
        shop.get_checkout(&id, &token).await["state"],
        "payment_pending"
    );
    shop.clock.advance(Duration::from_secs(61));
    let done = shop.settled(&id, &token).await;
    assert_eq!(done["state"], "paid");
    assert_eq!(orders_for(&shop.all_orders().await, &id), 1);
}

#[actix_web::test]
async fn delayed_and_reordered_webhooks_still_make_one_order() {
    let shop = Shop::start(ShopOptions::default()).await;
    shop.faults(json!({"webhooks": {"delay_ms": 300, "reorder": true, "duplicate": 2}}))
        .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (basket, token) = shop.basket(&[("BEANS", 1)]).await;
        let checkout = shop.checkout_ok(&basket, &token).await;
        let (status, _) = shop.pay(&Shop::session_of(&checkout), VISA).await;
        assert_eq!(status, 200);
        ids.push((checkout["id"].as_str().expect("id").to_string(), token));
    }
    for (id, token) in &ids {
        assert_eq!(shop.settled(id, token).await["state"], "paid");
    }
    let orders = shop.all_orders().await;
    for (id, _) in &ids {
        assert_eq!(orders_for(&orders, id), 1);
    }
    shop.stock_becomes("BEANS", (997, 0)).await;
}

#[actix_web::test]
async fn a_provider_that_fails_then_recovers_never_charges_without_an_order() {
    let shop = Shop::start(ShopOptions::default()).await;
    let (basket, token) = shop.basket(&[("TEA", 1)]).await;
    // Two 500s: the client retries with the same idempotency key and gets through.
    shop.faults(json!({"fail_next": 2})).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    assert_eq!(checkout["state"], "payment_pending");
    let cancelled = shop
        .cancel(checkout["id"].as_str().expect("id"), &token)
        .await;
    assert_eq!(cancelled["state"], "cancelled");

    // Timeouts beyond the retries: a clear 503, nothing held, the basket unlocked.
    shop.faults(json!({"timeout_next": 3})).await;
    let res = shop.checkout(&basket, &token).await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "payment_provider_unavailable");
    shop.stock_becomes("TEA", (5, 0)).await;
    assert!(shop.get_basket(&basket, &token).await["checkout"].is_null());

    // Recovered: the same basket checks out and pays.
    shop.clear_faults().await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    let (status, _) = shop.pay(&Shop::session_of(&checkout), VISA).await;
    assert_eq!(status, 200);
    let done = shop
        .settled(checkout["id"].as_str().expect("id"), &token)
        .await;
    assert_eq!(done["state"], "paid");
    assert_eq!(shop.all_orders().await.len(), 1);
    assert_eq!(shop.sim_audit().await["double_charges"], 0);
}

#[actix_web::test]
async fn an_expired_hold_expires_the_session_first_then_gives_the_stock_back() {
    let shop = Shop::start(ShopOptions::default()).await;
    let (basket, token) = shop.basket(&[("LAST", 4)]).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    let id = checkout["id"].as_str().expect("id").to_string();
    let session = Shop::session_of(&checkout);
    shop.stock_becomes("LAST", (10, 4)).await;
    shop.clock.advance(Duration::from_secs(14 * 60));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        shop.get_checkout(&id, &token).await["state"],
        "payment_pending",
        "not before its time"
    );
    shop.clock.advance(Duration::from_secs(61));
    let done = shop.settled(&id, &token).await;
    assert_eq!(done["state"], "expired");
    assert_eq!(shop.sim_session(&session).await["status"], "expired");
    let (status, _) = shop.pay(&session, VISA).await;
    assert!(status >= 400, "the old basket can never be paid");
    shop.stock_becomes("LAST", (10, 0)).await;
    let b = shop.get_basket(&basket, &token).await;
    assert!(b["checkout"].is_null());
    assert_eq!(b["lines"][0]["quantity"], 4);
}

/// The provider is down when the hold ends: the session cannot be expired, so after a grace the
/// stock goes back anyway. The shopper then pays (the session was still open at the provider).
async fn paid_after_the_hold(stock_left: i64) -> (Shop, Value) {
    let shop = Shop::start(ShopOptions {
        release_after_provider_down: Duration::from_secs(60),
        ..ShopOptions::default()
    })
    .await;
    let (basket, token) = shop.basket(&[("TEA", 3)]).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    let id = checkout["id"].as_str().expect("id").to_string();
    shop.faults(json!({"fail_next": 1_000_000})).await;
    shop.clock.advance(Duration::from_secs(15 * 60 + 61));
    eventually(Duration::from_secs(20), || async {
        (shop.stock("TEA") == (5, 0)).then_some(())
    })
    .await;
    assert_eq!(
        shop.get_checkout(&id, &token).await["state"],
        "payment_pending",
        "locked until the session is known to be expired or paid"
    );
    // Meanwhile the shelf changed (a store sale, a count).
    shop.set_online_stock(vec![(common::shop::sku("TEA"), stock_left)])
        .await;
    // The test API pays even while the provider's API answers 500 to the hub.
    let (status, body) = shop.pay(&Shop::session_of(&checkout), VISA).await;
    assert_eq!(status, 200, "{body}");
    let done = shop.settled(&id, &token).await;
    assert_eq!(done["state"], "paid");
    (shop, done)
}

#[actix_web::test]
async fn a_payment_after_its_hold_expired_still_becomes_an_order_when_stock_is_there() {
    let (shop, done) = paid_after_the_hold(5).await;
    let orders = shop.all_orders().await;
    assert_eq!(orders.len(), 1);
    assert!(orders[0]["needs_attention"].is_null(), "{}", orders[0]);
    shop.stock_becomes("TEA", (2, 0)).await;
    assert_eq!(orders_for(&orders, done["id"].as_str().expect("id")), 1);
}

#[actix_web::test]
async fn a_payment_after_its_hold_expired_without_stock_is_flagged_and_refunded() {
    let (shop, _) = paid_after_the_hold(1).await;
    let orders = shop.all_orders().await;
    assert_eq!(orders.len(), 1, "the order is still recorded");
    let order = &orders[0];
    assert!(order["needs_attention"]
        .as_str()
        .is_some_and(|m| m.contains("Refunded automatically")));
    shop.stock_becomes("TEA", (1, 0)).await;
    // The provider is back: the sweeper pays the refund it owes.
    shop.clear_faults().await;
    let refunded = eventually(Duration::from_secs(20), || async {
        let o = shop
            .admin(&format!("/orders/{}", order["id"].as_str().expect("id")))
            .await;
        (o["payment"]["refundable"]["minor"] == 0).then_some(o)
    })
    .await;
    assert_eq!(
        refunded["status"], "Cancelled",
        "recorded, never to be fulfilled"
    );
    assert_eq!(
        refunded["payment"]["refunded"]["minor"],
        refunded["payment"]["amount"]["minor"]
    );
    assert!(refunded["refund_due"].is_null());
}

#[actix_web::test]
async fn fifty_checkouts_for_ten_units_make_exactly_ten_orders() {
    let shop = Shop::start(ShopOptions::default()).await;
    let mut baskets = Vec::new();
    for _ in 0..50 {
        baskets.push(shop.basket(&[("LAST", 1)]).await);
    }
    let shop_ref = &shop;
    let attempts = baskets
        .iter()
        .map(|(b, t)| async move { (shop_ref.checkout(b, t).await, t.clone()) });
    let mut won = Vec::new();
    let mut out_of_stock = 0;
    for (res, token) in futures_util::future::join_all(attempts).await {
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        match status.as_u16() {
            201 => won.push((body, token)),
            409 => {
                assert_eq!(body["error"]["code"], "out_of_stock", "{body}");
                out_of_stock += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won.len(), 10, "as many checkouts as units");
    assert_eq!(out_of_stock, 40);
    shop.stock_becomes("LAST", (10, 10)).await;
    for (checkout, _) in &won {
        let (status, _) = shop.pay(&Shop::session_of(checkout), VISA).await;
        assert_eq!(status, 200);
    }
    for (checkout, token) in &won {
        let done = shop
            .settled(checkout["id"].as_str().expect("id"), token)
            .await;
        assert_eq!(done["state"], "paid");
    }
    assert_eq!(shop.all_orders().await.len(), 10);
    shop.stock_becomes("LAST", (0, 0)).await;
}

#[actix_web::test]
async fn webhooks_with_bad_or_stale_signatures_change_nothing() {
    let shop = Shop::start(ShopOptions::default()).await;
    let (basket, token) = shop.basket(&[("BEANS", 1)]).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    let id = checkout["id"].as_str().expect("id");
    let session = Shop::session_of(&checkout);
    let event = json!({
        "id": "evt_forged", "object": "event", "type": "checkout.session.completed",
        "data": {"object": {"id": session, "object": "checkout.session", "status": "complete",
            "payment_status": "paid", "amount_total": 1789, "currency": "eur",
            "client_reference_id": id, "payment_intent": "pi_forged", "metadata": {"checkout_id": id}}}
    })
    .to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let post = |header: String| {
        shop.client
            .post(shop.url("/webhooks/payments"))
            .header("Stripe-Signature", header)
            .header("Content-Type", "application/json")
            .body(event.clone())
            .send()
    };
    let forged = hub::payments::webhook::sign("whsec_wrong", now, event.as_bytes());
    let res = post(format!("t={now},v1={forged}")).await.expect("sent");
    assert_eq!(res.status(), 400);
    let stale = hub::payments::webhook::sign(WEBHOOK_SECRET, now - 301, event.as_bytes());
    let res = post(format!("t={},v1={stale}", now - 301))
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "bad_signature");
    assert_eq!(
        shop.get_checkout(id, &token).await["state"],
        "payment_pending"
    );
    assert!(shop.all_orders().await.is_empty());

    // A well-signed event of a type the hub does not use is acknowledged.
    let other = json!({"id": "evt_other", "object": "event", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}).to_string();
    let sig = hub::payments::webhook::sign(WEBHOOK_SECRET, now, other.as_bytes());
    let res = shop
        .client
        .post(shop.url("/webhooks/payments"))
        .header("Stripe-Signature", format!("t={now},v1={sig}"))
        .body(other)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn the_client_never_sets_the_price_and_bad_input_is_explained() {
    let shop = Shop::start(ShopOptions {
        attempts_per_basket: 2,
        ..ShopOptions::default()
    })
    .await;
    let (basket, token) = shop.basket(&[("BEANS", 1)]).await;
    // A tampered total is ignored: the provider is asked for the hub's own amount.
    let res = shop
        .checkout_with(
            &basket,
            &token,
            json!({"total": {"minor": 1, "currency": "EUR"}, "amount": 1}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let checkout: Value = res.json().await.expect("json");
    assert_eq!(checkout["breakdown"]["total"]["minor"], 1299 + 490);
    assert_eq!(
        shop.sim_session(&Shop::session_of(&checkout)).await["amount_total"],
        1299 + 490
    );
    let id = checkout["id"].as_str().expect("id");
    shop.cancel(id, &token).await;

    // A bad address: every field problem at once, 422, nothing held.
    let res = shop
        .checkout_with(
            &basket,
            &token,
            json!({"address": {"name": "", "line1": "x", "city": "Paris", "postcode": "1234", "country": "FR"}}),
        )
        .await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_address");
    let fields: Vec<&str> = body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"name") && fields.contains(&"postcode"),
        "{fields:?}"
    );
    shop.stock_becomes("BEANS", (1000, 0)).await;
    let res = shop
        .checkout_with(&basket, &token, json!({"email": "not-an-email"}))
        .await;
    assert_eq!(res.status(), 422);
    let res = shop
        .checkout_with(&basket, &token, json!({"shipping_method": "teleport"}))
        .await;
    assert_eq!(res.status(), 422);

    // Rate limit per basket: two attempts that reach the stock per ten minutes (typos in the
    // form above do not count).
    let second = shop.checkout_ok(&basket, &token).await;
    shop.cancel(second["id"].as_str().expect("id"), &token)
        .await;
    let res = shop.checkout(&basket, &token).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));

    // Someone else's basket or checkout: 404.
    let (_, stranger) = shop.basket(&[]).await;
    let res = shop.checkout(&basket, &stranger).await;
    assert_eq!(res.status(), 404);
    let res = shop
        .client
        .get(shop.url("/api/v1/orders/01HZZZZZZZZZZZZZZZZZZZZZZZ"))
        .header("X-Basket-Token", &stranger)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 404);
}

#[actix_web::test]
async fn the_admin_api_refunds_part_then_cancels_and_restocks() {
    let shop = Shop::start(ShopOptions::default()).await;
    let (basket, token) = shop.basket(&[("BEANS", 2)]).await;
    let checkout = shop.checkout_ok(&basket, &token).await;
    shop.pay(&Shop::session_of(&checkout), VISA).await;
    let done = shop
        .settled(checkout["id"].as_str().expect("id"), &token)
        .await;
    let number = done["order"]["number"]
        .as_str()
        .expect("number")
        .to_string();
    shop.stock_becomes("BEANS", (998, 0)).await;

    let refund = |amount: Option<&str>, token: &str| {
        let mut body = json!({"reason": "damaged"});
        if let Some(a) = amount {
            body["amount"] = json!(a);
        }
        shop.client
            .post(shop.url(&format!("/api/v1/admin/orders/{number}/refunds")))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    assert_eq!(
        refund(Some("5.00"), "wrong").await.expect("sent").status(),
        401
    );
    let res = refund(Some("5.00"), ADMIN_TOKEN).await.expect("sent");
    assert_eq!(res.status(), 200);
    let order: Value = res.json().await.expect("json");
    assert_eq!(order["payment"]["refunded"]["minor"], 500);
    let res = refund(Some("999.00"), ADMIN_TOKEN).await.expect("sent");
    assert_eq!(res.status(), 409, "more than is left");
    let res = refund(Some("-1"), ADMIN_TOKEN).await.expect("sent");
    assert_eq!(res.status(), 422);

    let res = shop
        .client
        .post(shop.url(&format!("/api/v1/admin/orders/{number}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reason": "customer asked"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let order: Value = res.json().await.expect("json");
    assert_eq!(order["status"], "Cancelled");
    assert_eq!(order["payment"]["refundable"]["minor"], 0);
    shop.stock_becomes("BEANS", (1000, 0)).await;
    let res = shop
        .client
        .get(shop.url("/api/v1/admin/orders/W-999999"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 404);
}

#[actix_web::test]
async fn a_customers_orders_are_theirs_alone_and_listed_newest_first() {
    let shop = Shop::start(ShopOptions::default()).await;
    let shop = &shop;
    let register = |email: &'static str| async move {
        let body: Value = shop
            .client
            .post(shop.url("/api/v1/customers"))
            .json(&json!({"email": email, "name": "Grace", "password": "correct horse battery"}))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        (
            body["session_token"].as_str().expect("token").to_string(),
            body["basket"]["id"].as_str().expect("basket").to_string(),
        )
    };
    let (grace, basket) = register("grace@example.com").await;
    let (mallory, _) = register("mallory@example.com").await;
    let mut numbers = Vec::new();
    for quantity in [1, 2] {
        let res = shop
            .client
            .post(shop.url(&format!("/api/v1/baskets/{basket}/lines")))
            .bearer_auth(&grace)
            .json(&json!({"sku": "BEANS", "quantity": quantity}))
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success());
        // No email in the body: the account's is used.
        let res = shop
            .client
            .post(shop.url(&format!("/api/v1/baskets/{basket}/checkout")))
            .bearer_auth(&grace)
            .json(&json!({
                "address": {"name": "Grace Hopper", "line1": "1 Main St", "city": "Arlington", "region": "VA", "postcode": "22201", "country": "US"},
                "shipping_method": "standard"
            }))
            .send()
            .await
            .expect("sent");
        let status = res.status();
        let checkout: Value = res.json().await.expect("json");
        assert_eq!(status, 201, "{checkout}");
        assert_eq!(checkout["email"], "grace@example.com");
        assert_eq!(checkout["breakdown"]["prices_include_tax"], false);
        shop.pay(&Shop::session_of(&checkout), VISA).await;
        let id = checkout["id"].as_str().expect("id");
        let done = eventually(Duration::from_secs(20), || async {
            let c: Value = shop
                .client
                .get(shop.url(&format!("/api/v1/checkouts/{id}")))
                .bearer_auth(&grace)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (c["state"] == "paid").then_some(c)
        })
        .await;
        numbers.push(
            done["order"]["number"]
                .as_str()
                .expect("number")
                .to_string(),
        );
    }
    let list: Value = shop
        .client
        .get(shop.url("/api/v1/orders"))
        .bearer_auth(&grace)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let listed: Vec<&str> = list["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(|o| o["number"].as_str())
        .collect();
    assert_eq!(listed, vec![numbers[1].as_str(), numbers[0].as_str()]);
    let order_id = list["orders"][0]["id"].as_str().expect("id");
    let own = shop
        .client
        .get(shop.url(&format!("/api/v1/orders/{order_id}")))
        .bearer_auth(&grace)
        .send()
        .await
        .expect("sent");
    assert_eq!(own.status(), 200);
    let foreign = shop
        .client
        .get(shop.url(&format!("/api/v1/orders/{order_id}")))
        .bearer_auth(&mallory)
        .send()
        .await
        .expect("sent");
    assert_eq!(foreign.status(), 404);
    let theirs: Value = shop
        .client
        .get(shop.url("/api/v1/orders"))
        .bearer_auth(&mallory)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["orders"].as_array().map(Vec::len), Some(0));
    let anonymous = shop
        .client
        .get(shop.url("/api/v1/orders"))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
}

#[actix_web::test]
async fn the_admin_api_counts_stock_and_keeps_what_is_held() {
    let shop = Shop::start(ShopOptions::default()).await;
    let (basket, token) = shop.basket(&[("TEA", 2)]).await;
    shop.checkout_ok(&basket, &token).await;
    let put = |sku: &str, body: Value, token: &str| {
        shop.client
            .put(shop.url(&format!("/api/v1/admin/stock/{sku}")))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let res = put("TEA", json!({"on_hand": 50}), "wrong")
        .await
        .expect("sent");
    assert_eq!(res.status(), 401);
    let res = put("TEA", json!({"on_hand": 50}), ADMIN_TOKEN)
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let level: Value = res.json().await.expect("json");
    assert_eq!(level["on_hand"], 50);
    assert_eq!(
        level["held"], 2,
        "a count does not release what checkouts hold"
    );
    assert_eq!(level["available"], 48);
    let res = put("TEA", json!({"on_hand": -1}), ADMIN_TOKEN)
        .await
        .expect("sent");
    assert_eq!(res.status(), 422);
    let res = put(
        "TEA",
        json!({"on_hand": 1, "location": "store-9"}),
        ADMIN_TOKEN,
    )
    .await
    .expect("sent");
    assert_eq!(res.status(), 422);
    let res = put("NOPE", json!({"on_hand": 1}), ADMIN_TOKEN)
        .await
        .expect("sent");
    assert_eq!(res.status(), 404);
    assert_eq!(shop.admin("/stock/TEA").await["available"], 48);
}

/// Calls between hub nodes (`hub::cluster::remote`): the hub's own work on an actor another
/// node owns reaches that node. Three nodes on PostgreSQL, whatever `OMNIHUB_TEST_SHOP` says.
#[cfg(feature = "cluster-tests")]
mod across_nodes {
    use super::*;
    use common::shop::Storage;

    /// Which node owns the shard of `basket` (a basket id).
    fn owner_of(shop: &Shop, basket: &str) -> usize {
        let id: protocol::BasketId = basket.parse().expect("a basket id");
        let shard = hub::cluster::shard_of(&id);
        shop.nodes
            .iter()
            .position(|(_, h)| {
                h.ownership
                    .as_ref()
                    .expect("a cluster node")
                    .owner(shard)
                    .is_some_and(|o| o.is_local())
            })
            .expect("a node owns the basket")
    }

    async fn ok(res: reqwest::Response, what: &str) -> Value {
        let status = res.status();
        let body = res.text().await.expect("a body");
        assert!(status.is_success(), "{what}: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
    }

    fn quantity(basket: &Value, sku: &str) -> i64 {
        basket["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["sku"] == sku)
            .and_then(|l| l["quantity"].as_i64())
            .unwrap_or(0)
    }

    #[actix_web::test]
    async fn sign_in_on_a_node_owning_neither_basket_merges_the_anonymous_lines() {
        let shop = Shop::start_on(ShopOptions::default(), Storage::Cluster).await;
        // Registered on node 0: the customer and their basket are in a shard of node 0.
        let registered = ok(
            shop.client
                .post(shop.node_url(0, "/api/v1/customers"))
                .json(&json!({
                    "email": "merge@example.com",
                    "name": "Mer Ge",
                    "password": "a long enough password"
                }))
                .send()
                .await
                .expect("sent"),
            "register",
        )
        .await;
        let own_basket = registered["customer"]["basket_id"]
            .as_str()
            .expect("the customer's basket")
            .to_string();
        ok(
            shop.client
                .post(shop.node_url(0, &format!("/api/v1/baskets/{own_basket}/lines")))
                .bearer_auth(registered["session_token"].as_str().expect("a session"))
                .json(&json!({"sku": "TEA", "quantity": 1}))
                .send()
                .await
                .expect("sent"),
            "a line in the customer's basket",
        )
        .await;
        // Later, signed out, they fill an anonymous basket made on node 1.
        let created = ok(
            shop.client
                .post(shop.node_url(1, "/api/v1/baskets"))
                .send()
                .await
                .expect("sent"),
            "an anonymous basket",
        )
        .await;
        let anonymous = created["id"].as_str().expect("id").to_string();
        let token = created["token"].as_str().expect("token").to_string();
        ok(
            shop.client
                .post(shop.node_url(1, &format!("/api/v1/baskets/{anonymous}/lines")))
                .header("X-Basket-Token", &token)
                .json(&json!({"sku": "BEANS", "quantity": 2}))
                .send()
                .await
                .expect("sent"),
            "a line in the anonymous basket",
        )
        .await;
        assert_eq!(
            owner_of(&shop, &own_basket),
            0,
            "the customer's basket is node 0's"
        );
        assert_eq!(
            owner_of(&shop, &anonymous),
            1,
            "the anonymous basket is node 1's"
        );

        // They sign in on node 2, which owns neither.
        let signed_in = ok(
            shop.client
                .post(shop.node_url(2, "/api/v1/sessions"))
                .header("X-Basket-Token", &token)
                .json(&json!({"email": "merge@example.com", "password": "a long enough password"}))
                .send()
                .await
                .expect("sent"),
            "sign in on node 2",
        )
        .await;
        assert_eq!(
            signed_in["basket"]["id"],
            own_basket.as_str(),
            "{signed_in}"
        );
        assert_eq!(quantity(&signed_in["basket"], "BEANS"), 2, "{signed_in}");
        assert_eq!(quantity(&signed_in["basket"], "TEA"), 1, "{signed_in}");
        // The merge is stored: every node serves the merged basket, and the anonymous basket is
        // closed (merged once: signing in again brings nothing twice).
        let session = signed_in["session_token"].as_str().expect("a session");
        for i in 0..3 {
            let current = ok(
                shop.client
                    .get(shop.node_url(i, "/api/v1/basket"))
                    .bearer_auth(session)
                    .send()
                    .await
                    .expect("sent"),
                "the current basket",
            )
            .await;
            assert_eq!(current["id"], own_basket.as_str(), "on node {i}");
            assert_eq!(quantity(&current, "BEANS"), 2, "on node {i}: {current}");
        }
        let again = ok(
            shop.client
                .post(shop.node_url(2, "/api/v1/sessions"))
                .header("X-Basket-Token", &token)
                .json(&json!({"email": "merge@example.com", "password": "a long enough password"}))
                .send()
                .await
                .expect("sent"),
            "sign in again",
        )
        .await;
        assert_eq!(quantity(&again["basket"], "BEANS"), 2, "{again}");
    }

    #[actix_web::test]
    async fn calls_between_nodes_need_the_cluster_secret() {
        let shop = Shop::start_on(ShopOptions::default(), Storage::Cluster).await;
        let call = shop.node_url(0, "/internal/v1/cluster/call");
        let attempts = [
            // A client claiming to be a node.
            vec![("x-omnihub-forwarded-by", "shop-1")],
            vec![
                ("x-omnihub-forwarded-by", "shop-1"),
                ("x-omnihub-cluster-secret", "guessed"),
            ],
            // The secret, but not from a node.
            vec![(
                "x-omnihub-cluster-secret",
                common::shop::cluster::CLUSTER_SECRET,
            )],
        ];
        for headers in attempts {
            let mut req = shop.client.post(&call).body(vec![1, 2, 3]);
            for (n, v) in &headers {
                req = req.header(*n, *v);
            }
            let res = req.send().await.expect("sent");
            assert_eq!(res.status(), 401, "{headers:?}");
            let body: Value = res.json().await.expect("json");
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        }
        // With the secret, a call that is not one is refused as such (nothing runs).
        let res = shop
            .client
            .post(&call)
            .header("x-omnihub-forwarded-by", "shop-1")
            .header(
                "x-omnihub-cluster-secret",
                common::shop::cluster::CLUSTER_SECRET,
            )
            .body(vec![1, 2, 3])
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 400);
    }

    #[actix_web::test]
    async fn a_webhook_at_a_node_that_does_not_own_the_checkout_makes_one_order() {
        let shop = Shop::start_on(ShopOptions::default(), Storage::Cluster).await;
        // The provider's webhooks go to node 0; this basket is node 1's.
        let created = ok(
            shop.client
                .post(shop.node_url(1, "/api/v1/baskets"))
                .send()
                .await
                .expect("sent"),
            "a basket",
        )
        .await;
        let basket = created["id"].as_str().expect("id").to_string();
        let token = created["token"].as_str().expect("token").to_string();
        assert_eq!(owner_of(&shop, &basket), 1);
        ok(
            shop.client
                .post(shop.node_url(1, &format!("/api/v1/baskets/{basket}/lines")))
                .header("X-Basket-Token", &token)
                .json(&json!({"sku": "BEANS", "quantity": 1}))
                .send()
                .await
                .expect("sent"),
            "a line",
        )
        .await;
        let checkout = shop.checkout_ok(&basket, &token).await;
        let id = checkout["id"].as_str().expect("id").to_string();
        // Each webhook is delivered three times, all to node 0.
        shop.faults(json!({"webhooks": {"duplicate": 3}})).await;
        // Paid on the provider's page: only the webhook tells the hub (the clock stands still,
        // so reconciliation never looks, and nobody follows the redirect).
        let (status, body) = shop.pay(&Shop::session_of(&checkout), VISA).await;
        assert_eq!(status, 200, "{body}");
        let done = shop.settled(&id, &token).await;
        assert_eq!(done["state"], "paid", "{done}");
        assert!(done["order"]["number"].is_string(), "{done}");
        // Every delivery answered, none left to retry.
        eventually(Duration::from_secs(20), || async {
            let d: Value = shop
                .client
                .get(shop.sim_url("/_sim/deliveries"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let list = d.as_array().or_else(|| d["deliveries"].as_array())?.clone();
            let pending = list
                .iter()
                .any(|x| x["status"] == "pending" || x["status"] == "queued");
            (!pending && list.len() >= 3).then_some(())
        })
        .await;
        let orders = shop.all_orders().await;
        assert_eq!(orders_for(&orders, &id), 1, "exactly one order");
        assert_eq!(orders.len(), 1);
        let audit = shop.sim_audit().await;
        assert_eq!(audit["charges_succeeded"], 1, "{audit}");
    }
}
