//! Click-and-collect end to end (`docs/click-and-collect.md`): the hub, a store's node, the
//! payment simulator and the mail sink as real processes. A shopper checks out for pickup at
//! the store with a name and an email only (no postal address) and pays at the simulator; the
//! order appears on the store's pick list; its units are never sold to a walk-in customer, not
//! even with an override; the clerk picks (the hub shows "Ready for pickup" and mails the
//! shopper once) and hands over (the hub shows "Collected"); a second order cancelled before
//! the handover goes off the pick list and its units sell again.

mod common;

use common::collect::*;
use common::shop::eventually;
use common::stores::{a_sku, converged, WAIT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pickup_is_picked_handed_over_and_a_cancelled_one_releases_its_units() {
    let c = Collect::start().await;
    let sku = a_sku(&c.store, 0).await;
    // A delivery of 10: the node grants the hub its online share (4, above a buffer of 2).
    c.store.receive(&sku, 10).await;
    converged(&c.hub, &c.store).await;
    assert_eq!(c.store.stock(&sku).await["hub_rights"], 4);

    // The quote offers the store; a delivery still needs a postal address, a pickup does not.
    let basket = c.basket(&[(sku.as_str(), 3)]).await;
    let quote: serde_json::Value = c
        .client
        .get(format!(
            "{}/api/v1/baskets/{}/quote?country=DE",
            c.hub.base, basket.0
        ))
        .header("X-Basket-Token", &basket.1)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let offered: Vec<&str> = quote["shipping_options"]
        .as_array()
        .expect("options")
        .iter()
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert!(offered.contains(&METHOD), "{quote}");
    let (status, refused) = c
        .checkout(
            &basket,
            json!({"email": "ada@example.com", "address": {"name": "Ada"}, "shipping_method": "standard"}),
        )
        .await;
    assert_eq!(status, 422, "a delivery without an address: {refused}");
    let (status, refused) = c
        .checkout(
            &basket,
            json!({"email": "ada@example.com", "address": {"name": " "}, "shipping_method": METHOD}),
        )
        .await;
    assert_eq!(status, 422, "a pickup needs a name: {refused}");

    let kept = c.buy_for_pickup(&[(sku.as_str(), 3)], "Ada Lovelace").await;
    let cancelled = c.buy_for_pickup(&[(sku.as_str(), 1)], "Grace Hopper").await;
    for order in [&kept, &cancelled] {
        assert_eq!(order["status"], "Being prepared for pickup", "{order}");
        assert_eq!(order["address"]["line1"], "", "no postal address: {order}");
        assert_eq!(order["breakdown"]["shipping"]["id"], METHOD);
    }
    let number = kept["number"].as_str().expect("number").to_string();
    let id = kept["id"].as_str().expect("id").to_string();
    let other = cancelled["number"].as_str().expect("number").to_string();
    let listed = c.on_pick_list(&number).await;
    assert_eq!(listed["status"], "waiting", "{listed}");
    assert_eq!(listed["customer_name"], "Ada Lovelace");
    assert_eq!(listed["lines"][0]["quantity"], 3);
    assert_eq!(c.on_pick_list(&other).await["status"], "waiting");
    assert_eq!(
        c.order(&id).await["pickup"]["promised"],
        true,
        "the hub's rights were consumed for it"
    );

    // 10 on the shelf, 4 set aside: a walk-in sale of 7 is refused even with an override.
    let (status, body) = c
        .store
        .sell(&sku, 7, Some("customer insists on the last boxes"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "held_for_pickup", "{body}");

    // Cancelled before the handover: off the pick list, and its unit sells again (7 = 10 − 3).
    let cancel = c
        .client
        .post(format!(
            "{}/api/v1/admin/orders/{}/cancel",
            c.hub.base,
            cancelled["id"].as_str().expect("id")
        ))
        .bearer_auth(common::stores::ADMIN)
        .json(&json!({"reason": "shopper changed their mind"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(cancel.status(), 200);
    eventually(WAIT, || async {
        let p = c.on_pick_list(&other).await;
        (p["status"] == "cancelled").then_some(())
    })
    .await;
    let gone = c.order(cancelled["id"].as_str().expect("id")).await;
    assert_eq!(gone["status"], "Cancelled", "{gone}");
    assert_eq!(gone["pickup"]["released"], true, "{gone}");
    let (status, body) = c
        .store
        .sell(&sku, 7, Some("customer insists on the last boxes"))
        .await;
    assert_eq!(status, 201, "the released unit sells: {body}");
    let (status, body) = c.store.sell(&sku, 1, Some("one more")).await;
    assert_eq!(status, 409, "the 3 picked are still set aside: {body}");
    assert_eq!(body["error"]["code"], "held_for_pickup");

    // The clerk picks: the hub shows it ready and mails the shopper once.
    let token = c.clerk_token().await;
    let (status, body) = c
        .as_clerk(
            &token,
            &format!("/api/v1/pickups/{number}/handover"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "not picked yet: {body}");
    assert_eq!(body["error"]["code"], "not_picked");
    let (status, body) = c
        .as_clerk(
            &token,
            &format!("/api/v1/pickups/{number}/pick"),
            json!({"short": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready_for_pickup");
    let ready = c.order_becomes(&id, "Ready for pickup").await;
    assert!(
        ready["timeline"]
            .to_string()
            .contains("Ready for pickup at"),
        "{ready}"
    );
    let store_name = kept["pickup"]["store_name"].as_str().expect("a store name");
    let ready_subject = format!("Your order {number} is ready for pickup at {store_name}");
    eventually(WAIT, || async {
        c.subjects().await.contains(&ready_subject).then_some(())
    })
    .await;

    // The handover: collected at the hub, the units leave the shelf.
    let (status, body) = c
        .as_clerk(
            &token,
            &format!("/api/v1/pickups/{number}/handover"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "collected");
    c.order_becomes(&id, "Collected").await;
    assert_eq!(c.store.stock(&sku).await["on_hand"], 0);
    converged(&c.hub, &c.store).await;
    // Once everything is synced (and the outbox idle), the ready mail is still there once.
    let subjects = c.subjects().await;
    let ready_mails = subjects.iter().filter(|s| **s == ready_subject).count();
    assert_eq!(ready_mails, 1, "{subjects:?}");
    // A collected order is refunded, not cancelled.
    let cancel = c
        .client
        .post(format!("{}/api/v1/admin/orders/{id}/cancel", c.hub.base))
        .bearer_auth(common::stores::ADMIN)
        .send()
        .await
        .expect("sent");
    assert!(cancel.status().is_client_error(), "{}", cancel.status());
}
