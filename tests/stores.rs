//! Stores that keep selling when their internet link is down: the hub and two edge nodes as real
//! processes, with a TCP proxy on each node's link that the test cuts and restores. After the
//! links return, every replica shows the same inventory, the hub holds every sale exactly once,
//! no unit was sold beyond the rights without a deficit record, and every deficit is settled or
//! flagged. Nodes and the hub are killed with SIGKILL mid-sync and lose nothing.

mod common;

use common::shop::eventually;
use common::stores::*;
use serde_json::json;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_sell_their_last_units_offline_and_converge_with_every_sale_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hub_config(
        dir.path(),
        &[("berlin", "store-berlin"), ("hamburg", "store-hamburg")],
    );
    let hub = start_hub(dir.path(), &config);
    let berlin = Store::start(dir.path(), "berlin", "store-berlin", hub_addr(&hub)).await;
    let hamburg = Store::start(dir.path(), "hamburg", "store-hamburg", hub_addr(&hub)).await;
    berlin.online().await;
    hamburg.online().await;
    let sku = a_sku(&berlin, 0).await;

    // Deliveries: each node creates its shelf's rights and grants the hub its online share
    // (half of what is above the safety buffer of 2).
    berlin.receive(&sku, 10).await;
    hamburg.receive(&sku, 6).await;
    for (store, hub_share) in [(&berlin, 4), (&hamburg, 2)] {
        converged(&hub, store).await;
        let stock = same_inventory(&hub, store, &sku).await;
        assert_eq!(stock["hub_rights"], hub_share, "{stock}");
    }

    // The links go down. Each store sells every unit it holds rights to, and no more without a
    // clerk's override; with one, the sale goes through as a deficit.
    berlin.proxy.cut();
    hamburg.proxy.cut();
    berlin.offline().await;
    hamburg.offline().await;
    let mut sold = Vec::new();
    for (store, own) in [(&berlin, 6), (&hamburg, 4)] {
        for i in 0..own {
            let key = format!("{}-sale-{i}", store.replica);
            let (status, first) = store.sell_keyed(&sku, 1, None, Some(&key)).await;
            assert_eq!(status, 201, "{first}");
            // A till retrying after a timeout gets the same sale, not a second one.
            let (status, again) = store.sell_keyed(&sku, 1, None, Some(&key)).await;
            assert_eq!(status, 201);
            assert_eq!(again["id"], first["id"]);
        }
        let (status, refused) = store.sell(&sku, 1, None).await;
        assert_eq!(status, 409, "{refused}");
        assert_eq!(refused["error"]["code"], "insufficient_rights");
        let (status, forced) = store
            .sell(&sku, 1, Some("customer holds the last box from the shelf"))
            .await;
        assert_eq!(status, 201, "{forced}");
        assert_eq!(
            forced["deficits"].as_array().map(Vec::len),
            Some(1),
            "{forced}"
        );
        sold.push((store, own + 1));
    }
    // Meanwhile the ERP's count for Berlin arrives at the hub: it is queued for the node.
    let res = common::http_client()
        .put(format!("{}/api/v1/admin/stock/{sku}", hub.base))
        .bearer_auth(ADMIN)
        .json(&json!({"on_hand": 25, "location": "store-berlin"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 202);

    berlin.proxy.restore();
    hamburg.proxy.restore();
    for (store, units) in sold {
        converged(&hub, store).await;
        // Every sale is on the hub exactly once.
        let on_hub = hub_sale_ids(&hub, &store.location).await;
        let distinct: BTreeSet<String> = on_hub.iter().cloned().collect();
        assert_eq!(on_hub.len(), distinct.len(), "a sale counted twice");
        assert_eq!(distinct, store.sale_ids().await);
        assert_eq!(distinct.len(), units);
        // Every deficit was settled from the hub's unpromised rights (it promised none).
        let deficits = store.get("/api/v1/deficits").await;
        for d in deficits["deficits"].as_array().expect("deficits") {
            assert_eq!(d["settlement"]["settled"], 1, "{d}");
            assert_eq!(d["settlement"]["short"], 0, "{d}");
        }
        // Every unit sold consumed a right: the node's own, or one the hub settled with.
        let rights = hub_rights(&hub, store, &sku).await;
        assert_eq!(rights["consumed"], units as u64, "{rights}");
        same_inventory(&hub, store, &sku).await;
    }
    // The count reached Berlin's node after the link returned; the node made the rights.
    let stock = berlin.stock(&sku).await;
    // The count was forwarded with the on-hand the hub saw then (10) and applied as a
    // difference (+15), so the 7 units sold meanwhile are not counted back onto the shelf.
    assert_eq!(stock["on_hand"], 3 + 15, "{stock}");
    assert_eq!(hamburg.stock(&sku).await["on_hand"], 6 - 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_the_hub_killed_mid_sync_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hub_config(dir.path(), &[("berlin", "store-berlin")]);
    let mut hub = start_hub(dir.path(), &config);
    let mut berlin = Store::start(dir.path(), "berlin", "store-berlin", hub_addr(&hub)).await;
    berlin.online().await;
    let sku = a_sku(&berlin, 1).await;
    berlin.receive(&sku, 1_000).await;
    converged(&hub, &berlin).await;

    // Offline, the store rings up 300 sales.
    berlin.proxy.cut();
    berlin.offline().await;
    let mut made = BTreeSet::new();
    for _ in 0..300 {
        let (status, sale) = berlin.sell(&sku, 1, None).await;
        assert_eq!(status, 201, "{sale}");
        made.insert(sale["id"].as_str().expect("id").to_string());
    }
    // The link returns; the node is killed while it catches up, and restarted.
    berlin.proxy.restore();
    eventually(WAIT, || async {
        let on_hub = hub_sale_ids(&hub, "store-berlin").await.len();
        (on_hub > 0).then_some(())
    })
    .await;
    berlin.restart();
    // The hub is killed as the node resumes, and restarted on the same data.
    eventually(WAIT, || async {
        (berlin.sync().await["connected"] == true).then_some(())
    })
    .await;
    drop(hub);
    hub = start_hub(dir.path(), &config);
    berlin.proxy.set_upstream(hub_addr(&hub));
    converged(&hub, &berlin).await;

    let on_hub = hub_sale_ids(&hub, "store-berlin").await;
    let distinct: BTreeSet<String> = on_hub.iter().cloned().collect();
    assert_eq!(on_hub.len(), distinct.len(), "a sale counted twice");
    assert_eq!(distinct, made, "every acknowledged sale, once");
    assert_eq!(berlin.sale_ids().await, made);
    let stock = same_inventory(&hub, &berlin, &sku).await;
    assert_eq!(stock["on_hand"], 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_node_replays_its_journal_under_a_new_id_and_the_old_one_is_retired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hub_config(
        dir.path(),
        &[("berlin", "store-berlin"), ("berlin-2", "store-berlin")],
    );
    let hub = start_hub(dir.path(), &config);
    let mut berlin = Store::start(dir.path(), "berlin", "store-berlin", hub_addr(&hub)).await;
    berlin.online().await;
    let sku = a_sku(&berlin, 2).await;
    berlin.receive(&sku, 20).await;
    let mut made = BTreeSet::new();
    for _ in 0..3 {
        let (status, sale) = berlin.sell(&sku, 1, None).await;
        assert_eq!(status, 201, "{sale}");
        made.insert(sale["id"].as_str().expect("id").to_string());
    }
    converged(&hub, &berlin).await;
    // Offline, two more sales; then the node's disk dies. Only its journal is saved.
    berlin.proxy.cut();
    berlin.offline().await;
    for _ in 0..2 {
        let (status, sale) = berlin.sell(&sku, 2, None).await;
        assert_eq!(status, 201, "{sale}");
        made.insert(sale["id"].as_str().expect("id").to_string());
    }
    berlin.node.kill();
    let saved = dir.path().join("journal-of-berlin.log");
    std::fs::copy(berlin.data.join("journal.log"), &saved).expect("journal saved");
    std::fs::remove_dir_all(&berlin.data).expect("the old node's disk is gone");

    // The operator retires the old id: its rights are written off and its credential refused.
    let res = common::http_client()
        .post(format!(
            "{}/api/v1/admin/edge/nodes/berlin/retire",
            hub.base
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let refused = common::http_client()
        .get(format!("{}/api/v1/edge/sync", hub.base))
        .bearer_auth(credential("berlin"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);

    // The rebuilt node takes a new id and replays the journal's unsynced sales as its own.
    berlin.proxy.restore();
    let data = dir.path().join("berlin-2");
    let env = node_env("berlin-2", "store-berlin", &data, &berlin.proxy);
    let rebuilt = tokio::task::block_in_place(|| {
        common::start_edge_with(&["--replay-journal", saved.to_str().expect("path")], &env)
    });
    let rebuilt = Store {
        replica: "berlin-2".into(),
        location: "store-berlin".into(),
        data,
        proxy: berlin.proxy,
        node: rebuilt,
    };
    rebuilt.online().await;
    converged(&hub, &rebuilt).await;
    let on_hub = hub_sale_ids(&hub, "store-berlin").await;
    let distinct: BTreeSet<String> = on_hub.iter().cloned().collect();
    assert_eq!(on_hub.len(), distinct.len(), "a sale counted twice");
    assert_eq!(distinct, made);
    // The replayed sales had no rights on the new node: they are deficits, each settled or short.
    let deficits = rebuilt.get("/api/v1/deficits").await;
    let units: u64 = deficits["deficits"]
        .as_array()
        .expect("deficits")
        .iter()
        .map(|d| {
            assert!(d["settlement"].is_object(), "settled or flagged: {d}");
            d["units"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(units, 4);
}

/// (subtotal, discount, total, [(rate, gross, tax)], [(promotion, amount)]) of a hub basket.
type Priced = (i64, i64, i64, Vec<(u64, i64, i64)>, Vec<(String, i64)>);

fn hub_priced(basket: &serde_json::Value) -> Priced {
    let minor = |v: &serde_json::Value| v["minor"].as_i64().expect("minor units");
    (
        minor(&basket["subtotal"]),
        minor(&basket["discount"]),
        minor(&basket["total"]),
        basket["taxes"]
            .as_array()
            .expect("taxes")
            .iter()
            .map(|t| {
                (
                    t["rate_bp"].as_u64().expect("rate"),
                    minor(&t["gross"]),
                    minor(&t["tax"]),
                )
            })
            .collect(),
        basket["promotions"]["applied"]
            .as_array()
            .expect("applied")
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().expect("id").to_string(),
                    minor(&a["amount"]),
                )
            })
            .collect(),
    )
}

fn node_priced(sale: &serde_json::Value) -> Priced {
    let minor = |v: &serde_json::Value| minor_of(v, 2);
    (
        minor(&sale["subtotal"]),
        minor(&sale["discount"]),
        minor(&sale["total"]),
        sale["taxes"]
            .as_array()
            .expect("taxes")
            .iter()
            .map(|t| {
                (
                    t["rate_bp"].as_u64().expect("rate"),
                    minor(&t["gross"]),
                    minor(&t["tax"]),
                )
            })
            .collect(),
        sale["promotions"]["applied"]
            .as_array()
            .expect("applied")
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().expect("id").to_string(),
                    minor(&a["amount"]),
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_made_in_the_back_office_prices_a_store_sale_as_the_hub_prices_a_basket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hub_config(dir.path(), &[("berlin", "store-berlin")]);
    let hub = start_hub(dir.path(), &config);
    let berlin = Store::start(dir.path(), "berlin", "store-berlin", hub_addr(&hub)).await;
    berlin.online().await;
    let (first, second) = (a_sku(&berlin, 0).await, a_sku(&berlin, 1).await);
    let lines = [(first.as_str(), 3u32), (second.as_str(), 2u32)];
    for (sku, _) in lines {
        berlin.receive(sku, 10).await;
        // The shopper's basket on the hub needs the units online too.
        let (status, body) = hub_call(
            &hub,
            reqwest::Method::PUT,
            &format!("/api/v1/admin/stock/{sku}"),
            ADMIN,
            Some(json!({"on_hand": 50})),
        )
        .await;
        assert!(status < 300, "{status} {body}");
    }
    let before = hub_priced(&hub_basket(&hub, &lines).await);
    assert_eq!(before.1, 0, "no promotion yet");

    // A merchandiser drafts 15 % off the first product and 2.00 off a basket of 10.00 or more,
    // on every channel; an approver approves it (nobody approves their own).
    let merchandiser = back_office_user(&hub, "merch@stores.example", &["merchandiser"]).await;
    let approver = back_office_user(&hub, "approver@stores.example", &["approver"]).await;
    let post = reqwest::Method::POST;
    for (id, spec) in [
        (
            "STORE15",
            json!({"combination": {"type": "stackable", "group": "product"},
                   "benefit": {"type": "percent_off", "target": {"type": "skus", "skus": [first]}, "percent_bp": 1500}}),
        ),
        (
            "BASKET2",
            json!({"combination": {"type": "stackable", "group": "basket"},
                   "conditions": [{"type": "min_subtotal", "amount": {"minor": 1000, "currency": "EUR"}}],
                   "benefit": {"type": "amount_off_basket", "amount": {"minor": 200, "currency": "EUR"}}}),
        ),
    ] {
        let (status, body) = hub_call(
            &hub,
            post.clone(),
            "/api/v1/backoffice/promotions",
            &merchandiser,
            Some(json!({"id": id, "name": format!("{id} in every channel"), "spec": spec})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let approved_at = std::time::Instant::now();
    for id in ["STORE15", "BASKET2"] {
        let (status, body) = hub_call(
            &hub,
            post.clone(),
            &format!("/api/v1/backoffice/promotions/{id}/approve"),
            &approver,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "active", "{body}");
    }
    // The node gets them with its next catalog version.
    eventually(WAIT, || async {
        let ids = berlin.promotion_ids().await;
        (ids.contains(&"STORE15".to_string()) && ids.contains(&"BASKET2".to_string())).then_some(())
    })
    .await;
    println!(
        "the approved promotions reached the node in {} ms",
        approved_at.elapsed().as_millis()
    );

    // The same lines: a shopper's basket on the hub, a sale at the till.
    let on_hub = hub_priced(&hub_basket(&hub, &lines).await);
    let (status, sale) = berlin
        .post(
            "/api/v1/sales",
            json!({
                "lines": lines.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
                "payments": [{"method": "cash", "amount": "1000.00"}],
                "clerk": "anna",
            }),
            None,
        )
        .await;
    assert_eq!(status, 201, "{sale}");
    let at_till = node_priced(&sale);
    assert_eq!(
        at_till, on_hub,
        "the till and the hub price the same lines alike"
    );
    assert_eq!(on_hub.0, before.0, "the same shelf prices");
    assert!(on_hub.1 > 200, "both promotions applied: {on_hub:?}");
    let applied: Vec<&str> = on_hub.4.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert_eq!(
        minor_of(&sale["change_due"], 2),
        100_000 - at_till.2,
        "change from the discounted total"
    );

    // Ended on the hub, the promotion stops applying at the till too.
    let (status, body) = hub_call(
        &hub,
        post,
        "/api/v1/backoffice/promotions/STORE15/end",
        &approver,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(WAIT, || async {
        (!berlin
            .promotion_ids()
            .await
            .contains(&"STORE15".to_string()))
        .then_some(())
    })
    .await;
    let (status, sale) = berlin.sell(&first, 1, None).await;
    assert_eq!(status, 201, "{sale}");
    let on_hub = hub_priced(&hub_basket(&hub, &[(first.as_str(), 1)]).await);
    assert_eq!(node_priced(&sale), on_hub);
    assert!(on_hub.4.iter().all(|(id, _)| id != "STORE15"), "{on_hub:?}");
}
