//! Click-and-collect survives a hub crash (`docs/click-and-collect.md`, "Operators"): the hub,
//! a store's node, the payment simulator and the mail sink as processes, with failpoints.
//!
//! - A store's report is stored with the merge; the hub dies before applying it to the order.
//!   After a restart the order shows it, and the shopper gets the "ready" mail once.
//! - The promise to the store fails (the order stays `promised = false`); the hub is killed
//!   and restarted without the fault: the order goes on the store's pick list.
//!
//! Runs with `cargo test --features failpoints --test collect_crash`.

#![cfg(feature = "failpoints")]

mod common;

use common::collect::*;
use common::shop::eventually;
use common::stores::{a_sku, converged, WAIT};
use serde_json::json;

async fn arm(c: &Collect, name: &str, actions: &str) {
    let res = c
        .client
        .post(format!("{}/ops/failpoints", c.hub.base))
        .bearer_auth(common::stores::ADMIN)
        .json(&json!({"name": name, "actions": actions}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_merged_before_a_crash_reaches_its_order_after_the_restart() {
    let mut c = Collect::start().await;
    let sku = a_sku(&c.store, 0).await;
    c.store.receive(&sku, 10).await;
    converged(&c.hub, &c.store).await;
    let order = c.buy_for_pickup(&[(sku.as_str(), 2)], "Ada Lovelace").await;
    let (id, number) = (
        order["id"].as_str().expect("id").to_string(),
        order["number"].as_str().expect("number").to_string(),
    );
    c.on_pick_list(&number).await;

    // The hub dies after storing the merged report, before the order has it.
    arm(&c, "collect.report.before_apply", "return").await;
    let token = c.clerk_token().await;
    let (status, body) = c
        .as_clerk(
            &token,
            &format!("/api/v1/pickups/{number}/pick"),
            json!({"short": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let exit = tokio::task::block_in_place(|| c.hub.child.wait()).expect("reaped");
    assert!(!exit.success(), "aborted at the failpoint");

    c.restart_hub(&[]).await;
    let ready = c.order_becomes(&id, "Ready for pickup").await;
    let store_name = ready["pickup"]["store_name"].as_str().expect("store name");
    let subject = format!("Your order {number} is ready for pickup at {store_name}");
    eventually(WAIT, || async {
        c.subjects().await.contains(&subject).then_some(())
    })
    .await;
    c.store.online().await;
    converged(&c.hub, &c.store).await;
    let subjects = c.subjects().await;
    assert_eq!(
        subjects.iter().filter(|s| **s == subject).count(),
        1,
        "{subjects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_promise_is_made_after_the_restart() {
    let mut c = Collect::start().await;
    let sku = a_sku(&c.store, 0).await;
    c.store.receive(&sku, 10).await;
    converged(&c.hub, &c.store).await;

    // Every promise fails: the order is paid, not on the pick list, and the sweeper's retries
    // fail too.
    arm(&c, "collect.promise", "return").await;
    let order = c.buy_for_pickup(&[(sku.as_str(), 2)], "Ada Lovelace").await;
    let (id, number) = (
        order["id"].as_str().expect("id").to_string(),
        order["number"].as_str().expect("number").to_string(),
    );
    assert_eq!(order["pickup"]["promised"], false, "{order}");
    converged(&c.hub, &c.store).await;
    let list = c.store.get("/api/v1/pickups").await;
    assert_eq!(list["open"], 0, "{list}");

    // Killed and started without the fault: the start-up sweep promises it.
    c.restart_hub(&[]).await;
    let listed = c.on_pick_list(&number).await;
    assert_eq!(listed["status"], "waiting", "{listed}");
    assert_eq!(listed["lines"][0]["quantity"], 2);
    eventually(WAIT, || async {
        let o = c.order(&id).await;
        (o["pickup"]["promised"] == true).then_some(())
    })
    .await;
    // Promised once: the hub's rights at the store went down by the order's 2 units only.
    c.store.online().await;
    converged(&c.hub, &c.store).await;
    let list = c.store.get("/api/v1/pickups").await;
    assert_eq!(list["open"], 1, "{list}");
}
