//! Actor lifecycle: passivation after idle time (an injected clock), re-activation from storage.

mod common;

use common::{client, eventually, SendForJson};
use hub::clock::ManualClock;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

#[actix_web::test]
async fn idle_actors_passivate_and_come_back_from_storage() {
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = common::settings(dir.path());
    settings.passivate_after = Duration::from_secs(600);
    settings.idle_check_every = Duration::from_millis(20);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let hub = common::spawn_with(dir, settings, Arc::new(clock.clone()), true).await;
    let c = client();

    let res = hub.register(&c, "idle@example.com").await;
    let token = res["session_token"].as_str().expect("token").to_string();
    let basket = res["basket"]["id"].as_str().expect("id").to_string();
    let added = c
        .post(hub.url(&format!("/api/v1/baskets/{basket}/lines")))
        .bearer_auth(&token)
        .json(&json!({"sku": "BEANS", "quantity": 3}))
        .send()
        .await
        .expect("sent");
    assert_eq!(added.status(), 200);
    let stats = hub.handle.stats().await.expect("stats");
    assert_eq!((stats.active_baskets, stats.active_customers), (1, 1));

    // Nine minutes idle: still active.
    clock.advance(Duration::from_secs(540));
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hub.handle.stats().await.expect("stats").active_baskets,
        1,
        "not idle long enough"
    );

    // Past ten minutes: both passivate.
    clock.advance(Duration::from_secs(61));
    eventually(Duration::from_secs(5), || async {
        let s = hub.handle.stats().await?;
        (s.active_baskets == 0 && s.active_customers == 0).then_some(())
    })
    .await;

    // The next request re-activates both from storage, with every line.
    let view: Value = c
        .get(hub.url("/api/v1/basket"))
        .bearer_auth(&token)
        .json_body()
        .await;
    assert_eq!(view["lines"][0]["quantity"], 3);
    assert_eq!(view["id"], basket.as_str());
    let stats = hub.handle.stats().await.expect("stats");
    assert_eq!((stats.active_baskets, stats.active_customers), (1, 1));
    assert!(stats.passivations >= 2);
}

#[actix_web::test]
async fn a_watched_basket_stays_active() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = common::settings(dir.path());
    settings.idle_check_every = Duration::from_millis(20);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let hub = common::spawn_with(dir, settings, Arc::new(clock.clone()), true).await;
    let created: Value = client().post(hub.url("/api/v1/baskets")).json_body().await;
    let (id, token) = (
        created["id"].as_str().expect("id"),
        created["token"].as_str().expect("token"),
    );
    let mut req = format!("ws://{}/api/v1/baskets/{id}/live", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-basket-token", token.parse().expect("header"));
    let (socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgraded");
    clock.advance(Duration::from_secs(3600));
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        hub.handle.stats().await.expect("stats").active_baskets,
        1,
        "a live watcher keeps it active"
    );
    drop(socket);
    eventually(Duration::from_secs(5), || async {
        (hub.handle.stats().await?.active_baskets == 0).then_some(())
    })
    .await;
}
