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
