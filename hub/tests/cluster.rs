//! Hub nodes on one PostgreSQL (`storage = "cluster"`), in one process: three
//! `hub::Application`s on port 0 sharing a fresh schema, with distinct node ids. A basket made on
//! one node is changed and read on the others (forwarded to its owner), a customer registered on
//! one is seen signed in on the others, and a node that leaves gracefully hands its shards over
//! while a client keeps working, without an error.
//!
//! Compiled with the `cluster-tests` feature; needs PostgreSQL at `OMNIHUB_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`). The schema is dropped afterwards, also
//! when the test fails.

#![cfg(feature = "cluster-tests")]

mod common;

use common::client;
use common::cluster::{json_ok, on_schema, quantity, settled, start, Node};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn three_nodes(schema: &str) {
    let a = start("node-a", schema).await;
    let b = start("node-b", schema).await;
    let c = start("node-c", schema).await;
    settled(&[&a, &b, &c]).await;
    let http = client();
    let nodes = [&a, &b, &c];

    // An anonymous basket made on a; changed on a node that does not own it, read on each.
    let created = json_ok(
        http.post(a.url("/api/v1/baskets"))
            .send()
            .await
            .expect("sent"),
        "create a basket",
    )
    .await;
    let id = created["id"].as_str().expect("an id").to_string();
    let token = created["token"].as_str().expect("a token").to_string();
    assert!(
        a.owns_basket(&id),
        "a new basket is made in a shard of the node making it"
    );
    let other = nodes
        .iter()
        .find(|n| !n.owns_basket(&id))
        .expect("a node that does not own it");
    for _ in 0..3 {
        json_ok(
            http.post(other.url(&format!("/api/v1/baskets/{id}/lines")))
                .header("x-basket-token", &token)
                .json(&json!({"sku": "BEANS", "quantity": 1}))
                .send()
                .await
                .expect("sent"),
            "add on a non-owner",
        )
        .await;
    }
    for n in nodes {
        let read = json_ok(
            http.get(n.url(&format!("/api/v1/baskets/{id}")))
                .header("x-basket-token", &token)
                .send()
                .await
                .expect("sent"),
            "read on each node",
        )
        .await;
        assert_eq!(quantity(&read, "BEANS"), 3, "on {}: {read}", n.id);
        // The shopper's current basket, by the basket token alone.
        let current = json_ok(
            http.get(n.url("/api/v1/basket"))
                .header("x-basket-token", &token)
                .send()
                .await
                .expect("sent"),
            "current basket by token",
        )
        .await;
        assert_eq!(current["id"], id.as_str(), "on {}", n.id);
    }

    // A customer registered on b, seen signed in on every node; their basket works anywhere.
    let registered = json_ok(
        http.post(b.url("/api/v1/customers"))
            .json(&json!({
                "email": "cluster@example.com",
                "name": "Clu Ster",
                "password": "a long enough password"
            }))
            .send()
            .await
            .expect("sent"),
        "register",
    )
    .await;
    let session = registered["session_token"]
        .as_str()
        .expect("a session")
        .to_string();
    for n in nodes {
        let me = json_ok(
            http.get(n.url("/api/v1/customers/me"))
                .bearer_auth(&session)
                .send()
                .await
                .expect("sent"),
            "me",
        )
        .await;
        assert_eq!(me["email"], "cluster@example.com", "on {}", n.id);
        json_ok(
            http.get(n.url("/api/v1/basket"))
                .bearer_auth(&session)
                .send()
                .await
                .expect("sent"),
            "the signed-in shopper's basket",
        )
        .await;
    }

    // The owner of the anonymous basket leaves gracefully while a client keeps adding to it
    // through another node: every request succeeds, and no acknowledged add is lost.
    let owner = nodes
        .iter()
        .position(|n| n.owns_basket(&id))
        .expect("someone owns the basket");
    let via = nodes[(owner + 1) % 3];
    let via_url = via.url(&format!("/api/v1/baskets/{id}/lines"));
    let (token2, http2) = (token.clone(), http.clone());
    let progress = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let seen = progress.clone();
    let hammer = actix_web::rt::spawn(async move {
        let mut acknowledged = 0i64;
        let started = tokio::time::Instant::now();
        // Paced and capped below BEANS' stock of 100 (3 are in the basket already).
        while started.elapsed() < Duration::from_secs(4) && acknowledged < 90 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let res = http2
                .post(&via_url)
                .header("x-basket-token", &token2)
                .json(&json!({"sku": "BEANS", "quantity": 1}))
                .send()
                .await
                .expect("sent");
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            assert!(status.is_success(), "during the hand-over: {status} {body}");
            acknowledged += 1;
            seen.store(acknowledged, std::sync::atomic::Ordering::SeqCst);
        }
        acknowledged
    });
    // The owner leaves once the client is well under way (a few adds acknowledged).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while progress.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client makes no progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leaving = nodes[owner];
    leaving.server.stop(true).await;
    let acknowledged = hammer.await.expect("the client ran");
    assert!(acknowledged > 0);
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner)
        .map(|(_, n)| *n)
        .collect();
    let read = json_ok(
        http.get(survivors[0].url(&format!("/api/v1/baskets/{id}")))
            .header("x-basket-token", &token)
            .send()
            .await
            .expect("sent"),
        "read after the leave",
    )
    .await;
    assert_eq!(quantity(&read, "BEANS"), 3 + acknowledged, "{read}");
    assert!(
        survivors.iter().any(|n| n.owns_basket(&id)),
        "a survivor took the basket's shard"
    );
    // Every shard ends up with the two survivors.
    settled(&survivors).await;

    for n in [a, b, c] {
        n.server.stop(true).await;
        // Run to its end: shards handed over, connections closed.
        n.stopped
            .await
            .expect("the node ran")
            .expect("the node stopped cleanly");
    }
}

#[actix_web::test]
async fn nodes_share_baskets_and_customers_and_hand_shards_over_on_leave() {
    on_schema(|schema| async move { three_nodes(&schema).await }).await;
}
