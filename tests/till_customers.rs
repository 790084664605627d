//! Customers at the till, end to end (`docs/pos.md`, "Customers at the till" and "Receipts"):
//! a hub with the mail sink, a store's node behind a proxy, a clerk signed in at an open till.
//! The clerk finds a customer by an exact email, phone or loyalty number, pulls their web
//! basket onto the sale (once, whatever the retries, priced by the node), and the sale lands
//! on the customer's profile with one emailed receipt. Offline, the till says it needs the hub.

mod common;

use common::shop::eventually;
use common::stores::*;
use common::till::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_finds_a_customer_by_an_exact_email_phone_or_loyalty_number_and_nothing_else() {
    let t = till().await;
    let (id, _, _) = shopper(&t).await;

    // Each key, typed as people type it, finds the one customer: only what the till needs.
    for body in [
        json!({"email": "  ADA.lovelace@example.COM "}),
        json!({"phone": "0049 30 5550001"}),
        json!({"loyalty_number": "7000-1234"}),
    ] {
        let (status, found) = t.lookup(body.clone()).await;
        assert_eq!(status, 200, "{body}: {found}");
        assert_eq!(
            found["customer"],
            json!({"id": id, "name": "Ada Lovelace", "email_masked": "a***@example.com", "loyalty_number": "70001234"}),
            "{body}"
        );
        assert!(!found.to_string().contains(EMAIL), "the email is masked");
    }

    // No match, and partial strings: refused, nothing about anyone else.
    for (body, code) in [
        (json!({"email": "grace@example.com"}), "no_match"),
        (json!({"phone": "+49 30 5550002"}), "no_match"),
        (json!({"loyalty_number": "70001235"}), "no_match"),
        (json!({"email": "ada.lovelace@"}), "invalid_lookup"),
        (json!({"email": "ada"}), "invalid_lookup"),
        (json!({"phone": "555"}), "invalid_lookup"),
        (json!({"loyalty_number": "7000"}), "invalid_lookup"),
        (
            json!({"email": EMAIL, "phone": "+49305550001"}),
            "invalid_lookup",
        ),
        (json!({}), "invalid_lookup"),
    ] {
        let (status, refused) = t.lookup(body.clone()).await;
        let want = if code == "no_match" { 404 } else { 422 };
        assert_eq!(status, want, "{body}: {refused}");
        assert_eq!(refused["error"]["code"], code, "{body}: {refused}");
        assert!(refused.get("customer").is_none());
    }

    // A staff member only: the node's API token is refused.
    let (status, refused) = t
        .call(
            "/api/v1/pos/customers/lookup",
            API_TOKEN,
            json!({"email": EMAIL}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");

    // The hub's endpoint wants a node's credential.
    let lookup = json!({"by": "email", "value": EMAIL});
    for token in ["", "not-a-node-credential", API_TOKEN] {
        let (status, refused) = hub_call(
            &t.hub,
            Method::POST,
            "/api/v1/edge/customers/lookup",
            token,
            Some(lookup.clone()),
        )
        .await;
        assert_eq!(status, 401, "{token}: {refused}");
    }
    let node = credential("berlin");
    let (status, found) = hub_call(
        &t.hub,
        Method::POST,
        "/api/v1/edge/customers/lookup",
        &node,
        Some(lookup.clone()),
    )
    .await;
    assert_eq!(status, 200, "{found}");

    // Guessing is cut short: after a run of misses the node's lookups are refused for a while.
    let mut limited = None;
    for i in 0..40 {
        let (status, answer) = hub_call(
            &t.hub,
            Method::POST,
            "/api/v1/edge/customers/lookup",
            &node,
            Some(json!({"by": "loyalty_number", "value": format!("{}", 80_000_000 + i)})),
        )
        .await;
        if status == 429 {
            limited = Some((i, answer));
            break;
        }
        assert_eq!(status, 404, "{answer}");
    }
    let (after, answer) = limited.expect("lookups are rate limited");
    assert!(after <= 20, "limited after {after} misses");
    assert_eq!(answer["error"]["code"], "too_many_lookups");
    // Even an exact match waits now.
    let (status, _) = hub_call(
        &t.hub,
        Method::POST,
        "/api/v1/edge/customers/lookup",
        &node,
        Some(lookup),
    )
    .await;
    assert_eq!(status, 429);
    let (status, refused) = t.lookup(json!({"email": EMAIL})).await;
    assert_eq!(status, 429, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_basket_moves_to_the_till_once_and_the_sale_joins_the_profile_with_one_receipt() {
    let t = till().await;
    let (id, token, basket) = shopper(&t).await;
    let lines = fill_basket(&t, &token, &basket, 2).await;
    for (sku, _) in &lines {
        t.store.receive(sku, 50).await;
    }
    converged(&t.hub, &t.store).await;

    // Pulling needs the customer found at this till first.
    let sale = protocol::CustomerId::new().to_string();
    let (status, refused) = t.pull(&id, json!({"sale": sale})).await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(web_lines(&t, &token, &basket).await, lines, "nothing moved");
    let (status, _) = t.lookup(json!({"loyalty_number": "70001234"})).await;
    assert_eq!(status, 200);

    // The client cannot send prices: a body with one is refused and moves nothing.
    let (status, refused) = t
        .pull(
            &id,
            json!({"sale": sale, "lines": [{"sku": lines[0].0, "unit_price": "0.01"}]}),
        )
        .await;
    assert!((400..500).contains(&status), "{status}: {refused}");
    assert_eq!(web_lines(&t, &token, &basket).await, lines, "nothing moved");

    // The pull moves the lines, priced by the node.
    let (status, pulled) = t.pull(&id, json!({"sale": sale})).await;
    assert_eq!(status, 200, "{pulled}");
    let got: Vec<(String, u64)> = pulled["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().expect("sku").to_string(),
                l["quantity"].as_u64().expect("qty"),
            )
        })
        .collect();
    assert_eq!(got, lines);
    let products = t.store.get("/api/v1/products?limit=100").await;
    for l in pulled["lines"].as_array().expect("lines") {
        let price = products["products"]
            .as_array()
            .expect("products")
            .iter()
            .flat_map(|p| p["variants"].as_array().cloned().unwrap_or_default())
            .find(|v| v["sku"] == l["sku"])
            .map(|v| v["price"].clone())
            .expect("the node sells it");
        assert_eq!(l["unit_price"], price, "the node's till price: {l}");
    }
    assert!(
        web_lines(&t, &token, &basket).await.is_empty(),
        "the lines left the web basket"
    );

    // A retry (the clerk's double tap, a lost answer) moves nothing more and loses nothing.
    let later = fill_basket(&t, &token, &basket, 1).await;
    for _ in 0..2 {
        let (status, again) = t.pull(&id, json!({"sale": sale})).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["lines"], pulled["lines"]);
    }
    assert_eq!(
        web_lines(&t, &token, &basket).await,
        later,
        "the newer line stays on the web"
    );

    // The sale with the customer: on the hub it joins their profile and mails one receipt.
    let body = json!({
        "lines": lines.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
        "payments": [{"method": "cash", "amount": "1000.00"}],
        "customer": id,
    });
    let res = common::http_client()
        .post(format!("{}/api/v1/sales", t.store.node.base))
        .bearer_auth(&t.staff)
        .header("X-Till", "1")
        .header("Idempotency-Key", &sale)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 201);
    let sold: Value = res.json().await.expect("json");
    let number = sold["number"].as_str().expect("number").to_string();
    converged(&t.hub, &t.store).await;
    let events = eventually(WAIT, || async {
        let (status, events) = hub_call(
            &t.hub,
            Method::GET,
            "/api/v1/customers/me/events",
            &token,
            None,
        )
        .await;
        assert_eq!(status, 200);
        let items = events["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .any(|e| e["channel"] == "pos" && e["kind"] == "order_placed")
            .then_some(items)
    })
    .await;
    let placed = events
        .iter()
        .find(|e| e["channel"] == "pos" && e["kind"] == "order_placed")
        .expect("the store sale");
    assert_eq!(placed["payload"]["number"], number, "{placed}");
    let sent = eventually(WAIT, || async {
        let m = t.mails(EMAIL).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let subject = sent[0]["headers"]["subject"].as_str().unwrap_or_default();
    assert!(subject.contains(&number), "{subject}");
    let message_id = sent[0]["headers"]["message_id"].clone();

    // A resync: the hub is killed and restarted on its data, the node reconnects; then another
    // sale's receipt arrives, and the first was still sent once, with one Message-ID.
    let Till {
        hub,
        store,
        inbox,
        staff,
        _dir: dir,
        _mail,
    } = t;
    drop(hub);
    let config = dir.path().join("hub.toml");
    let hub = start_hub(dir.path(), &config);
    store.proxy.set_upstream(hub_addr(&hub));
    converged(&hub, &store).await;
    let second = protocol::CustomerId::new().to_string();
    let res = common::http_client()
        .post(format!("{}/api/v1/sales", store.node.base))
        .bearer_auth(&staff)
        .header("X-Till", "1")
        .header("Idempotency-Key", &second)
        .json(&json!({
            "lines": [{"sku": lines[0].0, "quantity": 1}],
            "payments": [{"method": "cash", "amount": "1000.00"}],
            "customer": id,
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 201);
    let mails = eventually(WAIT, || async {
        let m = mails(&inbox, EMAIL).await;
        (m.len() >= 2).then_some(m)
    })
    .await;
    // SMTP is at least once: a delivery retried after a slow answer arrives again with the
    // same Message-ID, which the mailbox marks as a duplicate. One receipt means one message.
    let first: Vec<&Value> = mails
        .iter()
        .filter(|m| {
            m["headers"]["subject"]
                .as_str()
                .is_some_and(|s| s.contains(&number))
                && m["duplicate_of"].is_null()
        })
        .collect();
    assert_eq!(first.len(), 1, "{mails:?}");
    assert_eq!(first[0]["headers"]["message_id"], message_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_the_till_needs_the_hub_to_find_a_customer_and_sells_without_one() {
    let t = till().await;
    let (id, _, _) = shopper(&t).await;
    let (status, _) = t.lookup(json!({"email": EMAIL})).await;
    assert_eq!(status, 200);
    let sku = a_sku(&t.store, 0).await;
    t.store.receive(&sku, 5).await;

    t.store.proxy.cut();
    t.store.offline().await;
    let (status, refused) = t.lookup(json!({"email": EMAIL})).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "needs_hub");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("needs the hub") && m.contains("without a customer")),
        "{refused}"
    );
    let (status, refused) = t
        .pull(
            &id,
            json!({"sale": protocol::CustomerId::new().to_string()}),
        )
        .await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "needs_hub");

    let res = common::http_client()
        .post(format!("{}/api/v1/sales", t.store.node.base))
        .bearer_auth(&t.staff)
        .header("X-Till", "1")
        .json(&json!({"lines": [{"sku": sku, "quantity": 1}],
                      "payments": [{"method": "cash", "amount": "1000.00"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.status().as_u16(),
        201,
        "the sale goes on without a customer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voided_sale_gives_the_pulled_lines_back_to_the_web_basket_once() {
    let t = till().await;
    let (id, token, basket) = shopper(&t).await;
    let lines = fill_basket(&t, &token, &basket, 2).await;
    for (sku, _) in &lines {
        t.store.receive(sku, 50).await;
    }
    converged(&t.hub, &t.store).await;
    let (status, _) = t.lookup(json!({"phone": "+49 30 555 0001"})).await;
    assert_eq!(status, 200);
    let give_back = |sale: String| {
        let path = format!("/api/v1/pos/customers/{id}/basket/return");
        let t = &t;
        async move { t.call(&path, &t.staff, json!({ "sale": sale })).await }
    };

    // A sale nothing was pulled onto has nothing to give back.
    let (status, refused) = give_back(protocol::CustomerId::new().to_string()).await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["error"]["code"], "pull_not_found");

    let sale = protocol::CustomerId::new().to_string();
    let (status, pulled) = t.pull(&id, json!({"sale": sale})).await;
    assert_eq!(status, 200, "{pulled}");
    assert!(web_lines(&t, &token, &basket).await.is_empty());
    // Meanwhile the shopper adds one more of the first line on the web.
    let (status, _) = hub_call(
        &t.hub,
        Method::POST,
        &format!("/api/v1/baskets/{basket}/lines"),
        &token,
        Some(json!({"sku": lines[0].0, "quantity": 1})),
    )
    .await;
    assert!(status == 200 || status == 201);

    // The clerk voids the sale: the pulled lines go back, added to what is there now.
    let (status, back) = give_back(sale.clone()).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["returned"], true);
    let want = vec![(lines[0].0.clone(), lines[0].1 + 1), lines[1].clone()];
    let mut got = web_lines(&t, &token, &basket).await;
    got.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(got, sorted);
    // A retry (double tap, a reload of the page) gives nothing more back.
    for _ in 0..2 {
        let (status, again) = give_back(sale.clone()).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["returned"], false);
        assert_eq!(again["lines"], back["lines"]);
    }
    let mut got = web_lines(&t, &token, &basket).await;
    got.sort();
    assert_eq!(got, sorted, "given back once");
    // The voided sale cannot take the lines again: a new sale pulls afresh.
    let (status, replay) = t.pull(&id, json!({"sale": sale})).await;
    assert_eq!(status, 409, "{replay}");
    assert_eq!(replay["error"]["code"], "sale_voided");
    let mut got = web_lines(&t, &token, &basket).await;
    got.sort();
    assert_eq!(got, sorted, "a voided pull is not pulled again");

    // A sale that was rung up keeps its items: giving back is refused, the web stays empty.
    let paid = protocol::CustomerId::new().to_string();
    let (status, pulled) = t.pull(&id, json!({"sale": paid})).await;
    assert_eq!(status, 200, "{pulled}");
    let body = json!({
        "lines": pulled["lines"].as_array().expect("lines").iter()
            .map(|l| json!({"sku": l["sku"], "quantity": l["quantity"]})).collect::<Vec<_>>(),
        "payments": [{"method": "cash", "amount": "5000.00"}],
        "customer": id,
    });
    let res = common::http_client()
        .post(format!("{}/api/v1/sales", t.store.node.base))
        .bearer_auth(&t.staff)
        .header("X-Till", "1")
        .header("Idempotency-Key", &paid)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 201);
    let (status, refused) = give_back(paid).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "sale_recorded");
    assert!(web_lines(&t, &token, &basket).await.is_empty());

    // Only staff; and the hub's endpoint wants the node's credential.
    let (status, _) = t
        .call(
            &format!("/api/v1/pos/customers/{id}/basket/return"),
            API_TOKEN,
            json!({"sale": sale}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = hub_call(
        &t.hub,
        Method::POST,
        &format!("/api/v1/edge/customers/{id}/basket/return"),
        "not-a-node-credential",
        Some(json!({"pull": sale})),
    )
    .await;
    assert_eq!(status, 401);
}
