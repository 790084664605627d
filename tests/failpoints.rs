//! Crash between "applied" and "flushed": the sled writer has applied a group of units in memory
//! and the process dies before the flush. Nothing of the group was acknowledged, and after a
//! restart every unit in it is there whole or not at all — never half-written.
//! Runs with `cargo test --features failpoints --test failpoints` (CI does).

#![cfg(feature = "failpoints")]

mod common;

use serde_json::{json, Value};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";

async fn register(
    client: &reqwest::Client,
    base: &str,
    email: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/api/v1/customers"))
        .json(&json!({"email": email, "name": "Crash", "password": PASSWORD}))
        .send()
        .await
}

async fn sign_in(client: &reqwest::Client, base: &str, email: &str) -> Option<String> {
    let res = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .ok()?;
    let body: Value = res.json().await.ok()?;
    body["session_token"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_flush_leaves_whole_units_or_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let client = common::http_client();
    let mut hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &[]));
    let base = hub.base.clone();

    let before: Value = register(&client, &base, "before@example.com")
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let token = before["session_token"].as_str().expect("token");
    // Let the recorder write the registration's events first, so the next unit the writer
    // handles — the one the failpoint stops — is the registration below.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events: Value = client
            .get(format!("{base}/api/v1/customers/me/events"))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if events["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|e| e["kind"] == "registered"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events not recorded in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let armed = client
        .post(format!("{base}/ops/failpoints"))
        .json(&json!({"name": "sled.before_flush", "actions": "return"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(armed.status(), 204);

    // The registration's unit (email claim, customer, basket) is applied, then the process dies.
    let crashed = register(&client, &base, "during@example.com").await;
    assert!(
        crashed.is_err(),
        "the hub died before answering: {crashed:?}"
    );
    let status = tokio::task::block_in_place(|| hub.child.wait()).expect("reaped");
    assert!(!status.success(), "aborted by the failpoint");
    drop(hub);

    let hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &[]));
    let base = hub.base.clone();
    assert!(
        sign_in(&client, &base, "before@example.com")
            .await
            .is_some(),
        "an acknowledged registration survives"
    );
    match sign_in(&client, &base, "during@example.com").await {
        // The whole unit reached the disk: the customer has their basket too.
        Some(token) => {
            let basket = client
                .get(format!("{base}/api/v1/basket"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("sent");
            assert_eq!(basket.status(), 200);
        }
        // None of it did: the email is free again, not claimed by a customer who does not exist.
        None => assert_eq!(
            register(&client, &base, "during@example.com")
                .await
                .expect("sent")
                .status(),
            201
        ),
    }
}

/// The first product of the demo catalog with plenty of stock: (slug, sku, available).
async fn stocked_product(client: &reqwest::Client, base: &str) -> (String, String, i64) {
    let list: Value = client
        .get(format!("{base}/api/v1/products?limit=20"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    for item in list["items"].as_array().expect("items") {
        let slug = item["slug"].as_str().expect("slug");
        let (sku, available) = availability(client, base, slug).await;
        if available >= 10 {
            return (slug.to_string(), sku, available);
        }
    }
    panic!("no demo product with stock");
}

async fn availability(client: &reqwest::Client, base: &str, slug: &str) -> (String, i64) {
    let detail: Value = client
        .get(format!("{base}/api/v1/products/{slug}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let v = &detail["variants"][0];
    (
        v["sku"].as_str().expect("sku").to_string(),
        v["available"].as_i64().expect("available"),
    )
}

/// SIGKILL-equivalent (abort) between "the provider says paid" and "the order is stored": the
/// webhook that reported the payment dies with the hub. After a restart the order appears — once
/// — because the hub reconciles open checkouts with the provider, and the stock is sold once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_payment_and_order_makes_the_order_after_restart_once() {
    use common::shop::{start_payments, SECRET_KEY, WEBHOOK_SECRET};
    let data = tempfile::tempdir().expect("temp dir");
    let client = common::http_client();
    let sim = tokio::task::block_in_place(start_payments);
    let env = [
        ("OMNIHUB_HUB_PAYMENTS__BASE_URL", sim.base.as_str()),
        ("OMNIHUB_HUB_PAYMENTS__SECRET_KEY", SECRET_KEY),
        ("OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("OMNIHUB_HUB_CHECKOUT__RECONCILE_AFTER", "1s"),
        ("OMNIHUB_HUB_CHECKOUT__SWEEP_EVERY", "100ms"),
        ("OMNIHUB_HUB_ADMIN_TOKEN", "crash-admin"),
    ];
    let mut hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &env));
    let base = hub.base.clone();
    common::shop::register_webhook(&client, &sim.base, &base).await;

    let (slug, sku, before) = stocked_product(&client, &base).await;
    let created: Value = client
        .post(format!("{base}/api/v1/baskets"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let basket = created["id"].as_str().expect("id");
    let token = created["token"].as_str().expect("token");
    let added = client
        .post(format!("{base}/api/v1/baskets/{basket}/lines"))
        .header("X-Basket-Token", token)
        .json(&json!({"sku": sku, "quantity": 2}))
        .send()
        .await
        .expect("sent");
    assert!(added.status().is_success());
    let checkout: Value = client
        .post(format!("{base}/api/v1/baskets/{basket}/checkout"))
        .header("X-Basket-Token", token)
        .json(&json!({
            "email": "crash@example.com",
            "address": {"name": "Ada", "line1": "Unter den Linden 1", "city": "Berlin", "postcode": "10117", "country": "DE"},
            "shipping_method": "standard"
        }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let checkout_id = checkout["id"].as_str().expect("checkout id").to_string();
    let session = checkout["payment_url"]
        .as_str()
        .expect("payment url")
        .rsplit('/')
        .next()
        .expect("session id")
        .to_string();

    let armed = client
        .post(format!("{base}/ops/failpoints"))
        .json(&json!({"name": "checkout.before_order", "actions": "return"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(armed.status(), 204);
    let paid = client
        .post(format!("{}/_sim/checkout/sessions/{session}/pay", sim.base))
        .json(&json!({"card": "4242424242424242"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(paid.status(), 200);
    // The webhook reaches the hub, which dies before storing the order.
    let status = tokio::task::block_in_place(|| hub.child.wait()).expect("reaped");
    assert!(!status.success(), "aborted at the failpoint");
    drop(hub);

    let hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &env));
    let base = hub.base.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let order = loop {
        let c: Value = client
            .get(format!("{base}/api/v1/checkouts/{checkout_id}"))
            .header("X-Basket-Token", token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if c["state"] == "paid" {
            break c["order"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no order after restart: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(order["number"]
        .as_str()
        .is_some_and(|n| n.starts_with("W-")));
    let orders: Value = client
        .get(format!("{base}/api/v1/admin/orders?limit=200"))
        .bearer_auth("crash-admin")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let for_checkout = orders["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter(|o| o["checkout"] == checkout_id.as_str())
        .count();
    assert_eq!(for_checkout, 1, "exactly one order");
    let (_, after) = availability(&client, &base, &slug).await;
    assert_eq!(after, before - 2, "sold once");
    // Sold, not merely held: on hand went down by two and nothing is held any more.
    let level: Value = client
        .get(format!("{base}/api/v1/admin/stock/{sku}"))
        .bearer_auth("crash-admin")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(level["on_hand"], before - 2, "{level}");
    assert_eq!(level["held"], 0, "{level}");
    let audit: Value = client
        .get(format!("{}/_sim/audit", sim.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(audit["double_charges"], 0);
}

/// Killed mid-delivery: the OMS has the order, the hub dies before recording that it was
/// delivered. After a restart the outbox sends it again; the OMS recognises the order id, so
/// the effect is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_delivery_and_ack_applies_the_order_once_at_the_oms() {
    use common::shop::{start_payments, start_process, SECRET_KEY, WEBHOOK_SECRET};
    let data = tempfile::tempdir().expect("temp dir");
    let client = common::http_client();
    let sim = tokio::task::block_in_place(start_payments);
    let (oms, _) = tokio::task::block_in_place(|| {
        start_process(
            &["sim", "oms", "--listen", "127.0.0.1:0", "--step", "1h"],
            "oms simulator listening on ",
        )
    });
    let env = [
        ("OMNIHUB_HUB_PAYMENTS__BASE_URL", sim.base.as_str()),
        ("OMNIHUB_HUB_PAYMENTS__SECRET_KEY", SECRET_KEY),
        ("OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("OMNIHUB_HUB_OMS__BASE_URL", oms.base.as_str()),
        ("OMNIHUB_HUB_EMAIL__PORT", "9"),
        ("OMNIHUB_HUB_OUTBOX__POLL_EVERY", "100ms"),
        ("OMNIHUB_HUB_ADMIN_TOKEN", "crash-admin"),
    ];
    let mut hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &env));
    let base = hub.base.clone();
    common::shop::register_webhook(&client, &sim.base, &base).await;
    let armed = client
        .post(format!("{base}/ops/failpoints"))
        .json(&json!({"name": "outbox.oms.before_ack", "actions": "return"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(armed.status(), 204);

    let (_, sku, _) = stocked_product(&client, &base).await;
    buy_one(&client, &base, &sim.base, &sku).await;
    // The order is stored, the OMS gets it, the hub dies before the ack.
    let status = tokio::task::block_in_place(|| hub.child.wait()).expect("reaped");
    assert!(!status.success(), "aborted at the failpoint");
    drop(hub);
    let stats: Value = client
        .get(format!("{}/_sim/stats", oms.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["orders"], 1, "the OMS had it before the crash");

    let hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &env));
    let base = hub.base.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let backlog: Value = client
            .get(format!("{base}/ops/outbox"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let stats: Value = client
            .get(format!("{}/_sim/stats", oms.base))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if backlog["destinations"]["oms"]["pending"] == 0 && stats["deliveries"] == 2 {
            assert_eq!(stats["orders"], 1, "one order at the OMS");
            assert_eq!(stats["duplicates"], 1, "the redelivery was recognised");
            assert_eq!(stats["effects_applied_twice"], 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not redelivered: {backlog} {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a checkout of one unit of `sku` as a guest and pays it at the simulator.
async fn buy_one(client: &reqwest::Client, base: &str, payments: &str, sku: &str) {
    let created: Value = client
        .post(format!("{base}/api/v1/baskets"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let basket = created["id"].as_str().expect("id");
    let token = created["token"].as_str().expect("token");
    client
        .post(format!("{base}/api/v1/baskets/{basket}/lines"))
        .header("X-Basket-Token", token)
        .json(&json!({"sku": sku, "quantity": 1}))
        .send()
        .await
        .expect("sent");
    let checkout: Value = client
        .post(format!("{base}/api/v1/baskets/{basket}/checkout"))
        .header("X-Basket-Token", token)
        .json(&json!({
            "email": "kill@example.com",
            "address": {"name": "Ada", "line1": "Unter den Linden 1", "city": "Berlin", "postcode": "10117", "country": "DE"},
            "shipping_method": "standard"
        }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let session = checkout["payment_url"]
        .as_str()
        .expect("payment url")
        .rsplit('/')
        .next()
        .expect("session")
        .to_string();
    let paid = client
        .post(format!("{payments}/_sim/checkout/sessions/{session}/pay"))
        .json(&json!({"card": "4242424242424242"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(paid.status(), 200);
}

async fn json_of(client: &reqwest::Client, url: String) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

/// SIGKILL with a full outbox: the OMS is down, three orders wait; the hub is killed and
/// restarted; when the OMS returns, each order reaches it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_with_a_full_outbox_loses_nothing() {
    use common::shop::{start_payments, start_process, SECRET_KEY, WEBHOOK_SECRET};
    let data = tempfile::tempdir().expect("temp dir");
    let client = common::http_client();
    let sim = tokio::task::block_in_place(start_payments);
    let (oms, _) = tokio::task::block_in_place(|| {
        start_process(
            &["sim", "oms", "--listen", "127.0.0.1:0", "--step", "1h"],
            "oms simulator listening on ",
        )
    });
    let down = client
        .post(format!("{}/_sim/faults", oms.base))
        .json(&json!({"outage": true}))
        .send()
        .await
        .expect("sent");
    assert!(down.status().is_success());
    let env = [
        ("OMNIHUB_HUB_PAYMENTS__BASE_URL", sim.base.as_str()),
        ("OMNIHUB_HUB_PAYMENTS__SECRET_KEY", SECRET_KEY),
        ("OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("OMNIHUB_HUB_OMS__BASE_URL", oms.base.as_str()),
        ("OMNIHUB_HUB_EMAIL__PORT", "9"),
        ("OMNIHUB_HUB_OUTBOX__POLL_EVERY", "100ms"),
        ("OMNIHUB_HUB_OUTBOX__BREAKER_COOLDOWN", "500ms"),
        ("OMNIHUB_HUB_OUTBOX__MAX_BACKOFF", "500ms"),
    ];
    let mut hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &env));
    let base = hub.base.clone();
    common::shop::register_webhook(&client, &sim.base, &base).await;
    let (_, sku, _) = stocked_product(&client, &base).await;
    for _ in 0..3 {
        buy_one(&client, &base, &sim.base, &sku).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while json_of(&client, format!("{base}/ops/outbox")).await["destinations"]["oms"]["pending"]
        != 3
    {
        assert!(std::time::Instant::now() < deadline, "orders not queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL.
    hub.child.kill().expect("killed");
    let _ = tokio::task::block_in_place(|| hub.child.wait());
    drop(hub);

    let hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &env));
    let base = hub.base.clone();
    let backlog = json_of(&client, format!("{base}/ops/outbox")).await;
    assert_eq!(
        backlog["destinations"]["oms"]["pending"], 3,
        "nothing lost: {backlog}"
    );
    let up = client
        .delete(format!("{}/_sim/faults", oms.base))
        .send()
        .await
        .expect("sent");
    assert!(up.status().is_success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = json_of(&client, format!("{}/_sim/stats", oms.base)).await;
        let backlog = json_of(&client, format!("{base}/ops/outbox")).await;
        if stats["orders"] == 3 && backlog["destinations"]["oms"]["pending"] == 0 {
            assert_eq!(stats["effects_applied_twice"], 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {stats} {backlog}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

mod edge {
    //! Crashes inside a sync step, at failpoints: the hub dies between merging a node's batch
    //! and acknowledging it; a node dies after a durable sale before answering the till, and
    //! after applying the hub's batch before acknowledging it. Nothing acknowledged is lost and
    //! nothing is counted twice.

    use super::common;
    use common::stores::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    async fn arm_hub(base: &str, name: &str) {
        let armed = common::http_client()
            .post(format!("{base}/ops/failpoints"))
            .json(&json!({"name": name, "actions": "return"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(armed.status(), 204);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hub_dies_after_merging_a_batch_before_acking_it_and_counts_each_sale_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = hub_config(dir.path(), &[("berlin", "store-berlin")]);
        let mut hub = start_hub(dir.path(), &config);
        let berlin = Store::start(dir.path(), "berlin", "store-berlin", hub_addr(&hub)).await;
        berlin.online().await;
        let sku = a_sku(&berlin, 0).await;
        berlin.receive(&sku, 100).await;
        converged(&hub, &berlin).await;

        berlin.proxy.cut();
        berlin.offline().await;
        let mut made = BTreeSet::new();
        for _ in 0..40 {
            let (status, sale) = berlin.sell(&sku, 1, None).await;
            assert_eq!(status, 201, "{sale}");
            made.insert(sale["id"].as_str().expect("id").to_string());
        }
        arm_hub(&hub.base, "edge.merge.after_commit_before_ack").await;
        berlin.proxy.restore();
        // The hub stores the node's first batch durably, then dies before the Ack goes out.
        let status = tokio::task::block_in_place(|| hub.child.wait()).expect("reaped");
        assert!(!status.success(), "aborted at the failpoint");
        let node = berlin.sync().await;
        assert!(
            node["pending"]["entries"].as_u64().unwrap_or(0) > 0,
            "unacknowledged: {node}"
        );

        drop(hub);
        hub = start_hub(dir.path(), &config);
        berlin.proxy.set_upstream(hub_addr(&hub));
        converged(&hub, &berlin).await;
        let on_hub = hub_sale_ids(&hub, "store-berlin").await;
        let distinct: BTreeSet<String> = on_hub.iter().cloned().collect();
        assert_eq!(on_hub.len(), distinct.len(), "a resent batch counted twice");
        assert_eq!(distinct, made);
        let stock = same_inventory(&hub, &berlin, &sku).await;
        assert_eq!(stock["on_hand"], 60);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_dies_after_a_durable_sale_and_the_tills_retry_finds_that_sale() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = hub_config(dir.path(), &[("berlin", "store-berlin")]);
        let hub = start_hub(dir.path(), &config);
        let mut berlin = Store::start(dir.path(), "berlin", "store-berlin", hub_addr(&hub)).await;
        berlin.online().await;
        let sku = a_sku(&berlin, 1).await;
        berlin.receive(&sku, 10).await;
        converged(&hub, &berlin).await;

        berlin.restart_with(&[("FAILPOINTS", "edge.sale.after_commit=return".to_string())]);
        berlin.online().await;
        let body = json!({
            "lines": [{"sku": sku, "quantity": 2}],
            "payments": [{"method": "cash", "amount": "500.00"}],
        });
        let lost = common::http_client()
            .post(format!("{}/api/v1/sales", berlin.node.base))
            .bearer_auth(API_TOKEN)
            .header("idempotency-key", "till-1-receipt-77")
            .json(&body)
            .send()
            .await;
        assert!(lost.is_err(), "the node died before answering: {lost:?}");
        let status = tokio::task::block_in_place(|| berlin.node.child.wait()).expect("reaped");
        assert!(!status.success(), "aborted at the failpoint");

        // The till retries with the same key after the node is back: the sale was durable.
        berlin.restart();
        let retry = common::http_client()
            .post(format!("{}/api/v1/sales", berlin.node.base))
            .bearer_auth(API_TOKEN)
            .header("idempotency-key", "till-1-receipt-77")
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(retry.status(), 201);
        assert_eq!(
            retry
                .headers()
                .get("idempotent-replayed")
                .and_then(|v| v.to_str().ok()),
            Some("true"),
            "the first sale, not a second"
        );
        berlin.online().await;
        converged(&hub, &berlin).await;
        assert_eq!(hub_sale_ids(&hub, "store-berlin").await.len(), 1);
        assert_eq!(berlin.sale_ids().await.len(), 1);
        assert_eq!(same_inventory(&hub, &berlin, &sku).await["on_hand"], 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_dies_after_applying_the_hubs_batch_before_acking_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = hub_config(dir.path(), &[("berlin", "store-berlin")]);
        let hub = start_hub(dir.path(), &config);
        let mut berlin = Store::start(dir.path(), "berlin", "store-berlin", hub_addr(&hub)).await;
        berlin.online().await;
        let sku = a_sku(&berlin, 2).await;
        berlin.receive(&sku, 10).await;
        converged(&hub, &berlin).await;

        berlin.restart_with(&[(
            "FAILPOINTS",
            "edge.sync.after_apply_before_ack=return".to_string(),
        )]);
        berlin.online().await;
        // A count from the hub: the node applies it durably and dies before the Ack.
        let res = common::http_client()
            .put(format!("{}/api/v1/admin/stock/{sku}", hub.base))
            .bearer_auth(ADMIN)
            .json(&json!({"on_hand": 4, "location": "store-berlin"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 202);
        let status = tokio::task::block_in_place(|| berlin.node.child.wait()).expect("reaped");
        assert!(!status.success(), "aborted at the failpoint");

        // The node comes back; the hub sends the batch again; the count is applied once.
        berlin.restart();
        berlin.online().await;
        converged(&hub, &berlin).await;
        let stock = same_inventory(&hub, &berlin, &sku).await;
        assert_eq!(stock["on_hand"], 4, "{stock}");
    }
}
