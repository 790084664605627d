//! Returns across stores (issue 6, POS point 6): the hub, the payment simulator and two edge
//! nodes as real processes. A card sale at Berlin (paid with a PaymentIntent made on the
//! simulator) is partly returned at Hamburg, which finds the receipt through the hub; Berlin sees
//! that return; Berlin takes the rest back while its link is cut; after the link returns, and
//! after Berlin is killed and restarted, the simulator holds exactly one refund per return, to
//! the original payment. An unknown receipt is refused by the hub.

mod common;

use common::shop::{eventually, start_payments, SECRET_KEY};
use common::stores::*;
use serde_json::{json, Value};

const PIN: &str = "4711";

/// Till 1 and a manager, `anna`, on every node.
fn pos_env() -> Vec<(&'static str, String)> {
    let hash = edge_node::hash_pin(PIN).expect("hashes");
    vec![
        ("OMNIHUB_EDGE_POS__TILLS", "[\"1\"]".to_string()),
        (
            "OMNIHUB_EDGE_POS__STAFF",
            format!("[{{id=\"anna\",name=\"Anna\",role=\"manager\",pin_hash=\"{hash}\"}}]"),
        ),
    ]
}

/// Signs anna in at `store` (its till already open) and answers her session token.
async fn staff_at_open(store: &Store) -> String {
    let res = common::http_client()
        .post(format!("{}/api/v1/staff/sessions", store.node.base))
        .json(&json!({"staff_id": "anna", "pin": PIN}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// Signs anna in at `store`, opens till 1, and answers her session token.
async fn staff_at(store: &Store) -> String {
    let c = common::http_client();
    let res = c
        .post(format!("{}/api/v1/staff/sessions", store.node.base))
        .json(&json!({"staff_id": "anna", "pin": PIN}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    let token = res.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let res = c
        .post(format!("{}/api/v1/tills/1/open", store.node.base))
        .bearer_auth(&token)
        .json(&json!({"float": "50.00"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    token
}

async fn call(
    store: &Store,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let c = common::http_client();
    let url = format!("{}{path}", store.node.base);
    let mut req = match method {
        "POST" => c.post(url),
        _ => c.get(url),
    }
    .bearer_auth(token)
    .header("X-Till", "1");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A PaymentIntent for `minor` cents made and confirmed on the simulator, as a terminal would.
async fn card_payment(sim: &str, minor: i64) -> String {
    let res = common::http_client()
        .post(format!("{sim}/v1/payment_intents"))
        .bearer_auth(SECRET_KEY)
        .form(&[
            ("amount", minor.to_string()),
            ("currency", "eur".to_string()),
            ("payment_method", "pm_card_visa".to_string()),
            ("confirm", "true".to_string()),
            // As the hub authorises a store's card payment: for that store's node.
            ("metadata[replica]", "berlin".to_string()),
        ])
        .send()
        .await
        .expect("sent");
    let intent: Value = res.json().await.expect("json");
    assert_eq!(intent["status"], "succeeded", "{intent}");
    intent["id"].as_str().expect("id").to_string()
}

async fn refunds_of(sim: &str, intent: &str) -> Vec<i64> {
    let res = common::http_client()
        .get(format!(
            "{sim}/v1/refunds?payment_intent={intent}&limit=100"
        ))
        .bearer_auth(SECRET_KEY)
        .send()
        .await
        .expect("sent");
    let list: Value = res.json().await.expect("json");
    let mut amounts: Vec<i64> = list["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["amount"].as_i64().expect("amount"))
        .collect();
    amounts.sort_unstable();
    amounts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_sale_is_returned_at_two_stores_and_refunded_once_per_return() {
    let dir = tempfile::tempdir().expect("temp dir");
    let payments = start_payments();
    let config = hub_config(
        dir.path(),
        &[("berlin", "store-berlin"), ("hamburg", "store-hamburg")],
    );
    let mut toml = std::fs::read_to_string(&config).expect("reads");
    toml.push_str(&format!(
        "[payments]\nbase_url = \"{}\"\nsecret_key = \"{SECRET_KEY}\"\nretries = 1\n",
        payments.base
    ));
    std::fs::write(&config, toml).expect("writes");
    let hub = start_hub(dir.path(), &config);
    let mut berlin = Store::start_with(
        dir.path(),
        "berlin",
        "store-berlin",
        hub_addr(&hub),
        &pos_env(),
    )
    .await;
    let hamburg = Store::start_with(
        dir.path(),
        "hamburg",
        "store-hamburg",
        hub_addr(&hub),
        &pos_env(),
    )
    .await;
    berlin.online().await;
    hamburg.online().await;
    let sku = a_sku(&berlin, 0).await;
    berlin.receive(&sku, 5).await;
    let at_berlin = staff_at(&berlin).await;
    let at_hamburg = staff_at(&hamburg).await;

    // Two units at Berlin, paid by card.
    let lines = json!([{"sku": sku, "quantity": 2}]);
    let (status, quote) = call(
        &berlin,
        &at_berlin,
        "POST",
        "/api/v1/sales/quote",
        Some(json!({"lines": lines})),
    )
    .await;
    assert_eq!(status, 200, "{quote}");
    let total = quote["total"].as_str().expect("total").to_string();
    let minor = (total.parse::<f64>().expect("decimal") * 100.0).round() as i64;
    let intent = card_payment(&payments.base, minor).await;
    let (status, sold) = call(
        &berlin,
        &at_berlin,
        "POST",
        "/api/v1/sales",
        Some(json!({"lines": lines, "payments": [{"method": "card", "amount": total, "reference": intent}]})),
    )
    .await;
    assert_eq!(status, 201, "{sold}");
    let number = sold["number"].as_str().expect("number").to_string();
    assert!(number.starts_with("BERLIN-"), "{number}");
    converged(&hub, &berlin).await;

    // Hamburg finds it through the hub and takes one back: its shelf gets the unit.
    let (status, unknown) = call(
        &hamburg,
        &at_hamburg,
        "GET",
        "/api/v1/returns/receipts/BERLIN-999999",
        None,
    )
    .await;
    assert_eq!(
        (status, &unknown["error"]["code"]),
        (404, &json!("unknown_receipt")),
        "{unknown}"
    );
    let (status, found) = call(
        &hamburg,
        &at_hamburg,
        "GET",
        &format!("/api/v1/returns/receipts/{number}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (&found["source"], &found["lines"][0]["returnable"]),
        (&json!("hub"), &json!(2))
    );
    let (status, first) = call(
        &hamburg,
        &at_hamburg,
        "POST",
        "/api/v1/returns",
        Some(json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}]})),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["refunds"][0]["method"], "card");
    assert_eq!(first["refunds"][0]["reference"], json!(intent));
    assert_eq!(hamburg.stock(&sku).await["on_hand"], 1);
    converged(&hub, &hamburg).await;

    // Berlin sees Hamburg's return while online, then takes the last unit back offline.
    let (_, found) = call(
        &berlin,
        &at_berlin,
        "GET",
        &format!("/api/v1/returns/receipts/{number}"),
        None,
    )
    .await;
    assert_eq!(
        (&found["source"], &found["lines"][0]["returned"]),
        (&json!("local"), &json!(1))
    );
    berlin.proxy.cut();
    berlin.offline().await;
    let (status, second) = call(
        &berlin,
        &at_berlin,
        "POST",
        "/api/v1/returns",
        Some(json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}]})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let halves = {
        let mut h = vec![
            money_minor(&first["refunds"][0]["amount"]),
            money_minor(&second["refunds"][0]["amount"]),
        ];
        h.sort_unstable();
        h
    };
    assert_eq!(
        halves.iter().sum::<i64>(),
        minor,
        "the whole card payment, once"
    );

    berlin.proxy.restore();
    berlin.online().await;
    converged(&hub, &berlin).await;
    eventually(WAIT, || async {
        (refunds_of(&payments.base, &intent).await == halves).then_some(())
    })
    .await;
    // A restarted node resyncs from what the hub acknowledged: nothing is refunded again.
    berlin.restart();
    berlin.online().await;
    converged(&hub, &berlin).await;
    assert_eq!(refunds_of(&payments.base, &intent).await, halves);
}

fn money_minor(v: &Value) -> i64 {
    let text = v.as_str().expect("an amount");
    (text.parse::<f64>().expect("decimal") * 100.0).round() as i64
}

/// The hub with the payment simulator as its provider (webhooks registered, so a paid
/// checkout becomes an order) and these nodes.
async fn hub_with_payments(
    dir: &std::path::Path,
    nodes: &[(&str, &str)],
) -> (common::HubProcess, common::shop::SimProcess) {
    let payments = start_payments();
    let config = hub_config(dir, nodes);
    let mut toml = std::fs::read_to_string(&config).expect("reads");
    toml.push_str(&format!(
        "[payments]\nbase_url = \"{}\"\nsecret_key = \"{SECRET_KEY}\"\nwebhook_secret = \"{}\"\nretries = 1\n",
        payments.base,
        common::shop::WEBHOOK_SECRET
    ));
    std::fs::write(&config, toml).expect("writes");
    let hub = start_hub(dir, &config);
    common::shop::register_webhook(&common::http_client(), &payments.base, &hub.base).await;
    (hub, payments)
}

/// A shopper's web order of `quantity` units of `sku`, paid by card on the simulator's hosted
/// page: the order as the admin API shows it.
async fn web_order(hub: &common::HubProcess, sim: &str, sku: &str, quantity: u32) -> Value {
    let c = common::http_client();
    let (status, level) = hub_call(
        hub,
        reqwest::Method::PUT,
        &format!("/api/v1/admin/stock/{sku}"),
        ADMIN,
        Some(json!({"on_hand": 20})),
    )
    .await;
    assert!(status < 300, "{level}");
    let created: Value = c
        .post(format!("{}/api/v1/baskets", hub.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    let token = created["token"].as_str().expect("token").to_string();
    let res = c
        .post(format!("{}/api/v1/baskets/{id}/lines", hub.base))
        .header("X-Basket-Token", &token)
        .json(&json!({"sku": sku, "quantity": quantity}))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "{}", res.status());
    let res = c
        .post(format!("{}/api/v1/baskets/{id}/checkout", hub.base))
        .header("X-Basket-Token", &token)
        .json(&json!({
            "email": "shopper@example.com",
            "address": {"name": "Ada Lovelace", "line1": "Unter den Linden 1", "city": "Berlin", "postcode": "10117", "country": "DE"},
            "shipping_method": "standard",
        }))
        .send()
        .await
        .expect("sent");
    let checkout: Value = res.json().await.expect("json");
    let session = checkout["payment_url"]
        .as_str()
        .unwrap_or_else(|| panic!("a payment url: {checkout}"))
        .rsplit('/')
        .next()
        .expect("session")
        .to_string();
    let res = c
        .post(format!("{sim}/_sim/checkout/sessions/{session}/pay"))
        .json(&json!({"card": "4242424242424242"}))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "pay: {}", res.status());
    let checkout_id = checkout["id"].as_str().expect("checkout id").to_string();
    eventually(WAIT, || async {
        admin(hub, "/orders?limit=50").await["orders"]
            .as_array()
            .and_then(|o| {
                o.iter()
                    .find(|o| o["checkout"] == json!(checkout_id))
                    .cloned()
            })
    })
    .await
}

async fn order(hub: &common::HubProcess, number: &str) -> Value {
    admin(hub, &format!("/orders/{number}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_order_is_returned_at_a_store_and_refunded_to_its_payment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (hub, payments) = hub_with_payments(dir.path(), &[("berlin", "store-berlin")]).await;
    let mut berlin = Store::start_with(
        dir.path(),
        "berlin",
        "store-berlin",
        hub_addr(&hub),
        &pos_env(),
    )
    .await;
    berlin.online().await;
    let sku = a_sku(&berlin, 0).await;
    let placed = web_order(&hub, &payments.base, &sku, 2).await;
    let number = placed["number"].as_str().expect("number").to_string();
    let intent = placed["payment"]["payment_intent"]
        .as_str()
        .expect("intent")
        .to_string();
    let paid = placed["payment"]["amount"]["minor"].as_i64().expect("paid");
    let line = &placed["breakdown"]["lines"][0];
    let unit = (line["line_total"]["minor"].as_i64().expect("line")
        - line["discount"]["minor"].as_i64().expect("discount"))
        / 2;
    // The back office refunds all but one unit and 1.00 (shipping, a goodwill gesture).
    let by_office = paid - unit - 100;
    let (status, refunded) = hub_call(
        &hub,
        reqwest::Method::POST,
        &format!("/api/v1/admin/orders/{number}/refunds"),
        ADMIN,
        Some(json!({"amount": format!("{}.{:02}", by_office / 100, by_office % 100), "reason": "goodwill"})),
    )
    .await;
    assert!(status < 300, "{refunded}");

    let at_berlin = staff_at(&berlin).await;
    let (status, found) = call(
        &berlin,
        &at_berlin,
        "GET",
        &format!("/api/v1/returns/receipts/{}", number.to_lowercase()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (
            &found["source"],
            &found["kind"],
            &found["lines"][0]["returnable"]
        ),
        (&json!("hub"), &json!("online_order"), &json!(2)),
        "{found}"
    );
    let on_hand = berlin.stock(&sku).await["on_hand"].as_i64().unwrap_or(0);

    // One unit back: refunded to the order's card, the unit on Berlin's shelf.
    let body =
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}], "reason": "too big"});
    let post = |key: &'static str, body: Value| {
        let token = at_berlin.clone();
        let base = berlin.node.base.clone();
        async move {
            let res = common::http_client()
                .post(format!("{base}/api/v1/returns"))
                .bearer_auth(token)
                .header("X-Till", "1")
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .expect("sent");
            let replayed = res.headers().get("idempotent-replayed").is_some();
            (
                res.status().as_u16(),
                replayed,
                res.json::<Value>().await.expect("json"),
            )
        }
    };
    let (status, _, first) = post("web-return-1", body.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        (
            &first["refunds"][0]["method"],
            &first["refunds"][0]["reference"],
            &first["cash_refund"]
        ),
        (&json!("card"), &json!(intent), &json!("0.00")),
        "{first}"
    );
    assert_eq!(money_minor(&first["refunded"]), unit);
    let (status, replayed, again) = post("web-return-1", body.clone()).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        berlin.stock(&sku).await["on_hand"].as_i64().unwrap_or(0),
        on_hand + 1
    );

    // The second unit: the payment has only 1.00 left after the back office's refund.
    let (status, _, over) = post("web-return-2", body.clone()).await;
    assert_eq!(
        (status, &over["error"]["code"]),
        (409, &json!("over_refund")),
        "{over}"
    );
    // More units than were ordered and not returned yet.
    let too_many = json!({"receipt": number, "lines": [{"line": 0, "quantity": 2}]});
    let (status, _, over) = post("web-return-3", too_many).await;
    assert_eq!(
        (status, &over["error"]["code"]),
        (409, &json!("over_return")),
        "{over}"
    );

    // The hub refunds the order's payment once, and the order records it.
    converged(&hub, &berlin).await;
    eventually(WAIT, || async {
        let mut want = vec![by_office, unit];
        want.sort_unstable();
        (refunds_of(&payments.base, &intent).await == want).then_some(())
    })
    .await;
    let after = order(&hub, &number).await;
    assert_eq!(after["payment"]["refundable"]["minor"], 100, "{after}");
    assert_eq!(
        after["payment"]["refunds"].as_array().map(Vec::len),
        Some(2)
    );
    berlin.restart_with(&pos_env());
    berlin.online().await;
    converged(&hub, &berlin).await;
    assert_eq!(refunds_of(&payments.base, &intent).await.len(), 2);

    // Offline, an online order cannot be looked up or returned: the clear message.
    berlin.proxy.cut();
    berlin.offline().await;
    let at_berlin = staff_at_open(&berlin).await;
    let (status, refused) = call(
        &berlin,
        &at_berlin,
        "POST",
        "/api/v1/returns",
        Some(json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}]})),
    )
    .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (503, &json!("hub_unreachable")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("online order")),
        "{refused}"
    );
}

/// A card sale of one unit of `sku` at `store` (the intent made on the simulator as a terminal
/// would, `manual`: authorised, not captured): its receipt number, intent and amount.
async fn card_sale(
    store: &Store,
    token: &str,
    sim: &str,
    sku: &str,
    manual: bool,
) -> (String, String, i64) {
    let lines = json!([{"sku": sku, "quantity": 1}]);
    let (status, quote) = call(
        store,
        token,
        "POST",
        "/api/v1/sales/quote",
        Some(json!({"lines": lines})),
    )
    .await;
    assert_eq!(status, 200, "{quote}");
    let total = quote["total"].as_str().expect("total").to_string();
    let minor = money_minor(&quote["total"]);
    let mut form = vec![
        ("amount", minor.to_string()),
        ("currency", "eur".to_string()),
        ("payment_method", "pm_card_visa".to_string()),
        ("confirm", "true".to_string()),
        ("metadata[replica]", store.replica.clone()),
    ];
    if manual {
        form.push(("capture_method", "manual".to_string()));
    }
    let intent: Value = common::http_client()
        .post(format!("{sim}/v1/payment_intents"))
        .bearer_auth(SECRET_KEY)
        .form(&form)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let want = if manual {
        "requires_capture"
    } else {
        "succeeded"
    };
    assert_eq!(intent["status"], want, "{intent}");
    let intent = intent["id"].as_str().expect("id").to_string();
    let (status, sold) = call(
        store,
        token,
        "POST",
        "/api/v1/sales",
        Some(json!({"lines": lines, "payments": [{"method": "card", "amount": total, "reference": intent}]})),
    )
    .await;
    assert_eq!(status, 201, "{sold}");
    (
        sold["number"].as_str().expect("number").to_string(),
        intent,
        minor,
    )
}

async fn store_refunds(hub: &common::HubProcess, query: &str) -> Vec<Value> {
    admin(hub, &format!("/edge/refunds{query}")).await["refunds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unit_returned_at_two_stores_is_a_conflict_and_refunded_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (hub, payments) = hub_with_payments(
        dir.path(),
        &[("berlin", "store-berlin"), ("hamburg", "store-hamburg")],
    )
    .await;
    let berlin = Store::start_with(
        dir.path(),
        "berlin",
        "store-berlin",
        hub_addr(&hub),
        &pos_env(),
    )
    .await;
    let hamburg = Store::start_with(
        dir.path(),
        "hamburg",
        "store-hamburg",
        hub_addr(&hub),
        &pos_env(),
    )
    .await;
    berlin.online().await;
    hamburg.online().await;
    let sku = a_sku(&berlin, 0).await;
    berlin.receive(&sku, 3).await;
    let at_berlin = staff_at(&berlin).await;
    let at_hamburg = staff_at(&hamburg).await;
    let (number, intent, minor) = card_sale(&berlin, &at_berlin, &payments.base, &sku, false).await;
    converged(&hub, &berlin).await;

    // Berlin is cut off; Hamburg takes the unit back through the hub, and is refunded.
    berlin.proxy.cut();
    berlin.offline().await;
    let one = json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}]});
    let (status, at_h) = call(
        &hamburg,
        &at_hamburg,
        "POST",
        "/api/v1/returns",
        Some(one.clone()),
    )
    .await;
    assert_eq!(status, 201, "{at_h}");
    eventually(WAIT, || async {
        (refunds_of(&payments.base, &intent).await == vec![minor]).then_some(())
    })
    .await;
    // Berlin, offline, knows only its own sale: it takes the same unit back.
    let (status, at_b) = call(&berlin, &at_berlin, "POST", "/api/v1/returns", Some(one)).await;
    assert_eq!(status, 201, "{at_b}");
    assert_eq!(at_b["refunds"][0]["method"], "card", "{at_b}");

    // Merged: a conflict on Berlin's node, and no second refund of the card.
    berlin.proxy.restore();
    berlin.online().await;
    converged(&hub, &berlin).await;
    let conflict = eventually(WAIT, || async {
        admin(&hub, "/edge/nodes/berlin").await["conflicts"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["kind"] == "over_return").cloned())
    })
    .await;
    let detail = conflict["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&number) && detail.contains("1 sold, 2 returned"),
        "{detail}"
    );
    let flagged = eventually(WAIT, || async {
        store_refunds(&hub, "")
            .await
            .into_iter()
            .find(|r| r["number"] == at_b["number"] && r["state"] == "failed")
    })
    .await;
    assert_eq!(flagged["refunds"][0]["amount"], "0.00", "{flagged}");
    assert_eq!(
        money_minor(&flagged["refunds"][0]["short"]),
        minor,
        "{flagged}"
    );
    assert_eq!(refunds_of(&payments.base, &intent).await, vec![minor]);
    // Hamburg's refund is done: listed only with state=all.
    let all = store_refunds(&hub, "?state=all").await;
    assert!(
        all.iter()
            .any(|r| r["number"] == at_h["number"] && r["state"] == "done"),
        "{all:?}"
    );
    // What is short cannot be retried onto the card.
    let id = flagged["return"].as_str().expect("id");
    let (status, body) = hub_call(
        &hub,
        reqwest::Method::POST,
        &format!("/api/v1/admin/edge/refunds/{id}/retry"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("nothing_to_retry")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_provider_refuses_is_listed_for_an_operator_who_retries_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (hub, payments) = hub_with_payments(dir.path(), &[("berlin", "store-berlin")]).await;
    let berlin = Store::start_with(
        dir.path(),
        "berlin",
        "store-berlin",
        hub_addr(&hub),
        &pos_env(),
    )
    .await;
    berlin.online().await;
    let sku = a_sku(&berlin, 0).await;
    berlin.receive(&sku, 3).await;
    let at_berlin = staff_at(&berlin).await;
    // Authorised but never captured: the provider refuses to refund it.
    let (number, intent, minor) = card_sale(&berlin, &at_berlin, &payments.base, &sku, true).await;
    let (status, back) = call(
        &berlin,
        &at_berlin,
        "POST",
        "/api/v1/returns",
        Some(json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}]})),
    )
    .await;
    assert_eq!(status, 201, "{back}");
    converged(&hub, &berlin).await;
    let failed = eventually(WAIT, || async {
        store_refunds(&hub, "")
            .await
            .into_iter()
            .find(|r| r["number"] == back["number"] && r["state"] == "failed")
    })
    .await;
    let reason = failed["refunds"][0]["refused"].as_str().expect("a reason");
    assert!(reason.contains("successful charge"), "{failed}");

    // The list and the retry need the admin token.
    let (status, _) = hub_call(
        &hub,
        reqwest::Method::GET,
        "/api/v1/admin/edge/refunds",
        "wrong",
        None,
    )
    .await;
    assert_eq!(status, 401);
    let id = failed["return"].as_str().expect("id").to_string();
    let retry = format!("/api/v1/admin/edge/refunds/{id}/retry");
    let (status, _) = hub_call(&hub, reqwest::Method::POST, &retry, "wrong", None).await;
    assert_eq!(status, 401);
    let (status, body) = hub_call(
        &hub,
        reqwest::Method::POST,
        "/api/v1/admin/edge/refunds/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Someone captures the payment at the provider; the operator retries: refunded once.
    let res = common::http_client()
        .post(format!(
            "{}/v1/payment_intents/{intent}/capture",
            payments.base
        ))
        .bearer_auth(SECRET_KEY)
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "capture: {}", res.status());
    let (status, body) = hub_call(&hub, reqwest::Method::POST, &retry, ADMIN, None).await;
    assert_eq!((status, &body["state"]), (202, &json!("due")), "{body}");
    let done = eventually(WAIT, || async {
        store_refunds(&hub, "?state=all")
            .await
            .into_iter()
            .find(|r| r["return"] == json!(id) && r["state"] == "done")
    })
    .await;
    assert_eq!(done["attempt"], 1, "{done}");
    assert!(done["refunds"][0]["refund"].is_string(), "{done}");
    assert_eq!(refunds_of(&payments.base, &intent).await, vec![minor]);
    assert!(store_refunds(&hub, "")
        .await
        .iter()
        .all(|r| r["return"] != json!(id)));
    let (status, body) = hub_call(&hub, reqwest::Method::POST, &retry, ADMIN, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("nothing_to_retry")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_never_refunds_a_payment_not_authorised_for_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (hub, payments) = hub_with_payments(dir.path(), &[("berlin", "store-berlin")]).await;
    let berlin = Store::start_with(
        dir.path(),
        "berlin",
        "store-berlin",
        hub_addr(&hub),
        &pos_env(),
    )
    .await;
    berlin.online().await;
    let sku = a_sku(&berlin, 0).await;
    berlin.receive(&sku, 3).await;
    let at_berlin = staff_at(&berlin).await;
    let lines = json!([{"sku": sku, "quantity": 1}]);
    let (_, quote) = call(
        &berlin,
        &at_berlin,
        "POST",
        "/api/v1/sales/quote",
        Some(json!({"lines": lines})),
    )
    .await;
    let total = quote["total"].as_str().expect("total").to_string();
    // Someone else's payment (a web order's, say): paid, but not through this store's node.
    let theirs: Value = common::http_client()
        .post(format!("{}/v1/payment_intents", payments.base))
        .bearer_auth(SECRET_KEY)
        .form(&[
            ("amount", money_minor(&quote["total"]).to_string()),
            ("currency", "eur".to_string()),
            ("payment_method", "pm_card_visa".to_string()),
            ("confirm", "true".to_string()),
        ])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let theirs = theirs["id"].as_str().expect("id").to_string();
    // A card payment typed in with that reference (no money taken), then the goods "returned".
    let (status, sold) = call(
        &berlin,
        &at_berlin,
        "POST",
        "/api/v1/sales",
        Some(json!({"lines": lines, "payments": [{"method": "card", "amount": total, "reference": theirs}]})),
    )
    .await;
    assert_eq!(status, 201, "{sold}");
    let (status, back) = call(
        &berlin,
        &at_berlin,
        "POST",
        "/api/v1/returns",
        Some(json!({"receipt": sold["number"], "lines": [{"line": 0, "quantity": 1}]})),
    )
    .await;
    assert_eq!(status, 201, "{back}");
    converged(&hub, &berlin).await;
    // The hub does not refund it: flagged for a person, nothing paid to that card.
    let failed = eventually(WAIT, || async {
        store_refunds(&hub, "")
            .await
            .into_iter()
            .find(|r| r["number"] == back["number"] && r["state"] == "failed")
    })
    .await;
    assert!(failed["refunds"][0]["refund"].is_null(), "{failed}");
    assert_eq!(refunds_of(&payments.base, &theirs).await, Vec::<i64>::new());
}
