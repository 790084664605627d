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
