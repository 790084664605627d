//! Personalization end to end: slots refused with the JSON path of each problem, role checks and
//! audit; a shopper in a segment gets the segment's hero with the reason, another shopper
//! cannot borrow that identity; "bought together" and "viewed together" computed from events
//! and shown on the product page.

mod common;

use common::{client, settings, spawn_with, SendForJson, TestHub};
use protocol::{AnonymousId, Channel, CustomerId, Event, EventKind, Subject};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

const ADMIN: &str = "personalization-test-admin-token";

async fn spawn_hub() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    s.admin_token = Some(ADMIN.to_string().into());
    spawn_with(dir, s, Arc::new(hub::clock::SystemClock), true).await
}

/// A back-office user with these roles and a token for them.
async fn token_for(hub: &TestHub, email: &str, roles: &[&str]) -> String {
    let c = client();
    let user = c
        .post(hub.url("/api/v1/admin/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"email": email, "name": "Tester", "roles": roles}))
        .json_body()
        .await;
    let id = user["id"].as_str().expect("a user id");
    let token = c
        .post(hub.url(&format!("/api/v1/admin/users/{id}/tokens")))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "tests"}))
        .json_body()
        .await;
    token["token"].as_str().expect("a token").to_string()
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("sent");
    let status = res.status();
    let body = if status == StatusCode::NO_CONTENT {
        Value::Null
    } else {
        res.json().await.expect("a JSON body")
    };
    (status, body)
}

fn hero_slot() -> Value {
    json!({
        "variants": [
            {"id": "tea", "targeting": {"segments": ["tea-fans"]},
             "content": {"title": "Tea time", "sku": "TEA"}},
            {"id": "coffee", "targeting": {"segments": ["coffee-lovers"], "channels": ["web", "mobile"]},
             "content": {"title": "Freshly roasted for you", "text": "New beans.", "sku": "BEANS", "link": "/c/coffee"}}
        ],
        "default": {"title": "Welcome", "image": "/images/house-beans.svg", "link": "/"}
    })
}

async fn put_slot(hub: &TestHub, token: &str, slot: &str, body: &Value) -> (StatusCode, Value) {
    send(
        client()
            .put(hub.url(&format!("/api/v1/admin/slots/{slot}")))
            .bearer_auth(token)
            .json(body),
    )
    .await
}

#[actix_web::test]
async fn slots_are_checked_with_positions_role_checked_and_audited() {
    let hub = spawn_hub().await;
    let c = client();
    let marketer = token_for(&hub, "marketer@example.com", &["marketer"]).await;
    let analyst = token_for(&hub, "analyst@example.com", &["analyst"]).await;
    let support = token_for(&hub, "support@example.com", &["support"]).await;

    // Who may write, who may read.
    let (status, body) = send(
        c.put(hub.url("/api/v1/admin/slots/home_hero"))
            .json(&hero_slot()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = put_slot(&hub, &analyst, "home_hero", &hero_slot()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("role_required"))
    );
    let (status, _) = send(c.get(hub.url("/api/v1/admin/slots")).bearer_auth(&support)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Every problem, each with its JSON path and what to fix.
    let mut bad = hero_slot();
    bad["variants"][1]["targeting"]["channels"] = json!(["web", "fax"]);
    bad["variants"][0]["content"]["sku"] = json!("NOPE-42");
    bad["default"]["link"] = json!("javascript:alert(1)");
    let (status, body) = put_slot(&hub, &marketer, "home_hero", &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_slot");
    let fields: Vec<&str> = body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "variants[0].content.sku",
            "variants[1].targeting.channels[1]",
            "default.link"
        ]
    );
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("unknown SKU 'NOPE-42'"), "{message}");
    let (status, _) = put_slot(&hub, &marketer, "home_hero", &json!({"variants": "x"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = put_slot(&hub, &marketer, "side_banner", &hero_slot()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = send(
        c.get(hub.url("/api/v1/admin/slots/home_hero"))
            .bearer_auth(&analyst),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing half-written");

    // Created, then changed (the admin token may too), read by an analyst.
    let (status, body) = put_slot(&hub, &marketer, "home_hero", &hero_slot()).await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::CREATED, Some(1)),
        "{body}"
    );
    let (status, body) = put_slot(&hub, ADMIN, "home_hero", &hero_slot()).await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{body}"
    );
    let list = c
        .get(hub.url("/api/v1/admin/slots"))
        .bearer_auth(&analyst)
        .json_body()
        .await;
    assert_eq!(list["slots"][0]["slot"], "home_hero");
    assert_eq!(list["slots"][0]["spec"]["variants"][1]["id"], "coffee");

    // The back office's "see as segment" preview.
    let preview = |segments: Value, channel: &str| {
        c.post(hub.url("/api/v1/admin/slots/home_hero/preview"))
            .bearer_auth(&analyst)
            .json(&json!({"segments": segments, "channel": channel}))
            .json_body()
    };
    let seen = preview(json!(["coffee-lovers"]), "web").await;
    assert_eq!(seen["variant"], "coffee");
    assert_eq!(
        seen["reason"],
        "segment coffee-lovers matched (variant 2, coffee)"
    );
    let seen = preview(json!(["coffee-lovers"]), "email").await;
    assert_eq!(
        (seen["variant"].as_str(), seen["reason_code"].as_str()),
        (Some("default"), Some("no_variant_matched"))
    );
    let (status, _) = send(
        c.post(hub.url("/api/v1/admin/slots/home_hero/preview"))
            .bearer_auth(&analyst)
            .json(&json!({"segments": [], "channel": "fax"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Removed; every change is in the audit list.
    let (status, _) = send(
        c.delete(hub.url("/api/v1/admin/slots/home_hero"))
            .bearer_auth(&analyst),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(
        c.delete(hub.url("/api/v1/admin/slots/home_hero"))
            .bearer_auth(&marketer),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(
        c.get(hub.url("/api/v1/admin/slots/home_hero"))
            .bearer_auth(&analyst),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("slot_not_configured"))
    );
    let audit = c
        .get(hub.url("/api/v1/backoffice/audit"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["subject"] == "slot/home_hero")
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["who"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions[0].0, "slot.create");
    assert_eq!(actions[1], ("slot.update", "admin-token"));
    assert_eq!(actions[2].0, "slot.delete");
}

#[actix_web::test]
async fn a_shopper_in_a_segment_gets_its_hero_with_the_reason_and_no_one_else_does() {
    let hub = spawn_hub().await;
    let c = client();
    let (status, body) = put_slot(&hub, ADMIN, "home_hero", &hero_slot()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Ada is in coffee-lovers (a marketer's board audience assignment); Bob is in no segment.
    let ada = hub.register(&c, "ada@example.com").await;
    let ada_id = ada["customer"]["id"].as_str().expect("id").to_string();
    let ada_token = ada["session_token"].as_str().expect("token").to_string();
    let (status, _) = send(
        c.put(hub.url(&format!("/api/v1/admin/boards/audience/{ada_id}")))
            .bearer_auth(ADMIN)
            .json(&json!({"consent": true, "segments": ["coffee-lovers"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let bob = hub.register(&c, "bob@example.com").await;
    let bob_token = bob["session_token"].as_str().expect("token").to_string();

    let slot = |token: &str| {
        c.get(hub.url("/api/v1/slots/home_hero"))
            .bearer_auth(token)
            .json_body()
    };
    let seen = slot(&ada_token).await;
    assert_eq!(seen["variant"], "coffee");
    assert_eq!(seen["position"], 2);
    assert_eq!(seen["content"]["title"], "Freshly roasted for you");
    assert_eq!(
        seen["reason"],
        "segment coffee-lovers matched (variant 2, coffee)"
    );
    let seen = slot(&bob_token).await;
    assert_eq!(
        (seen["variant"].as_str(), seen["reason"].as_str()),
        (Some("default"), Some("default: no variant matched"))
    );

    // Identity never comes from a parameter: Bob cannot ask as Ada.
    let (status, body) = send(
        c.get(hub.url(&format!("/api/v1/slots/home_hero?customer={ada_id}")))
            .bearer_auth(&bob_token),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_query"))
    );
    let (status, _) = send(
        c.get(hub.url("/api/v1/slots/home_hero"))
            .bearer_auth("not-a-session"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The segment engine's memberships (Profile.segments) count too: an app install whose
    // profile is in tea-fans.
    let install = AnonymousId::new();
    let mut profile = protocol::experience::Profile::new(Subject::Anonymous(install));
    profile.segments = vec!["tea-fans".into()];
    let mut write = hub::experience::store::Write::default();
    write.profile(&profile).expect("encodes");
    hub.handle.experience.store.commit(write).expect("stored");
    let seen = c
        .get(hub.url("/api/v1/slots/home_hero?channel=mobile"))
        .header("x-anonymous-id", install.to_string())
        .json_body()
        .await;
    assert_eq!(seen["variant"], "tea", "{seen}");
    assert_eq!(seen["reason"], "segment tea-fans matched (variant 1, tea)");

    // The storefront's home page shows the segment's hero to Ada, its default to a stranger.
    let page = c
        .get(hub.url("/"))
        .header("cookie", format!("omnihub_session={ada_token}"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("Freshly roasted for you"),
        "the segment's hero"
    );
    assert!(page.contains("data-slot-variant=\"coffee\""));
    let page = c
        .get(hub.url("/"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html");
    assert!(page.contains("data-slot-variant=\"default\"") && page.contains("Welcome"));
    assert!(!page.contains("Freshly roasted for you"));

    // A board lookup for Ada carries the board item; an unconfigured slot gives none.
    assert_eq!(
        hub.handle
            .personalization
            .board_item(CustomerId(ada_id.parse().expect("ulid")))
            .await
            .expect("resolved"),
        None
    );
    let board = json!({
        "variants": [{"id": "coffee", "targeting": {"segments": ["coffee-lovers"]},
            "content": {"id": "beans", "title": "Freshly roasted this week", "sku": "BEANS"}}],
        "default": {"id": "hello", "title": "Welcome back"}
    });
    assert_eq!(
        put_slot(&hub, ADMIN, "board_item", &board).await.0,
        StatusCode::CREATED
    );
    let item = hub
        .handle
        .personalization
        .board_item(CustomerId(ada_id.parse().expect("ulid")))
        .await
        .expect("resolved")
        .expect("an item");
    assert_eq!(item.id, "beans");
}

fn at(minutes: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::hours(3) + time::Duration::minutes(minutes)
}

fn order(skus: &str) -> Event {
    Event::new(
        at(0),
        Subject::Customer(CustomerId::new()),
        Channel::Web,
        EventKind::OrderPlaced,
    )
    .with("skus", skus)
}

fn view(who: AnonymousId, minutes: i64, sku: &str) -> Event {
    Event::new(
        at(minutes),
        Subject::Anonymous(who),
        Channel::Mobile,
        EventKind::ProductView,
    )
    .with("sku", sku)
}

async fn caught_up(hub: &TestHub) {
    hub.handle
        .recorder
        .send(hub::actors::recorder::Drain)
        .await
        .expect("recorder drained");
    tokio::time::timeout(
        Duration::from_secs(20),
        hub.handle.personalization.caught_up(),
    )
    .await
    .expect("the recommender catches up in time")
    .expect("the recommender runs");
}

#[actix_web::test]
async fn bought_and_viewed_together_come_from_events_and_show_on_the_product_page() {
    let hub = spawn_hub().await;
    let c = client();
    let record = |e: Event| {
        hub.handle
            .recorder
            .do_send(hub::actors::recorder::Record(e))
    };
    // Beans with tea twice, with cups (sold out) three times, with filler 01 once.
    for skus in [
        "BEANS:1,TEA:2",
        "TEA:1,BEANS:3,CUPS:1",
        "BEANS:1,CUPS:1",
        "CUPS:2,BEANS:1",
        "BEANS:1,FILL-01:1",
    ] {
        record(order(skus));
    }
    // One shopper views 02, 03 and 04 within half an hour, then 05 an hour later.
    let who = AnonymousId::new();
    for (minute, sku) in [
        (0, "FILL-02"),
        (10, "FILL-03"),
        (35, "FILL-04"),
        (100, "FILL-05"),
    ] {
        record(view(who, minute, sku));
    }
    caught_up(&hub).await;

    let recs = c
        .get(hub.url("/api/v1/admin/recommendations/BEANS"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(
        recs["bought_together"],
        json!([{"sku": "CUPS", "count": 3}, {"sku": "TEA", "count": 2}, {"sku": "FILL-01", "count": 1}])
    );
    let recs = c
        .get(hub.url("/api/v1/admin/recommendations/FILL-03"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(
        recs["viewed_together"],
        json!([{"sku": "FILL-02", "count": 1}, {"sku": "FILL-04", "count": 1}])
    );
    let (status, _) = send(c.get(hub.url("/api/v1/admin/recommendations/BEANS"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        c.get(hub.url("/api/v1/admin/recommendations/NOPE"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // With no slot configured, the built-in default shows what was bought together, without
    // the sold-out cups.
    let seen = c
        .get(hub.url("/api/v1/slots/product_recommendations?product=BEANS"))
        .json_body()
        .await;
    assert_eq!(seen["reason_code"], "not_configured");
    let skus: Vec<&str> = seen["products"]
        .as_array()
        .expect("products")
        .iter()
        .filter_map(|p| p["sku"].as_str())
        .collect();
    assert_eq!(skus, ["TEA", "FILL-01"]);
    let page = c
        .get(hub.url("/p/house-beans"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html");
    let section = page
        .split("Customers also bought")
        .nth(1)
        .expect("the recommendations section");
    assert!(
        section.contains("Green Tea"),
        "tea is recommended on the beans page"
    );

    // In the app, viewed together.
    let slot = json!({
        "variants": [{"id": "app", "targeting": {"channels": ["mobile"]},
            "content": {"strategy": "viewed_together", "count": 3, "title": "Others also looked at"}}],
        "default": {"strategy": "bought_together", "count": 4}
    });
    assert_eq!(
        put_slot(&hub, ADMIN, "product_recommendations", &slot)
            .await
            .0,
        StatusCode::CREATED
    );
    let seen = c
        .get(hub.url("/api/v1/slots/product_recommendations?product=FILL-02&channel=mobile"))
        .json_body()
        .await;
    assert_eq!(seen["variant"], "app");
    let skus: Vec<&str> = seen["products"]
        .as_array()
        .expect("products")
        .iter()
        .filter_map(|p| p["sku"].as_str())
        .collect();
    assert_eq!(
        skus,
        ["FILL-03", "FILL-04"],
        "04 came within 30 minutes of 03: one session"
    );
    let seen = c
        .get(hub.url("/api/v1/slots/product_recommendations?product=FILL-05&channel=mobile"))
        .json_body()
        .await;
    assert_eq!(
        seen["products"],
        json!([]),
        "a view an hour later is another session"
    );
}

#[actix_web::test]
async fn the_demo_shopper_sees_the_coffee_hero_and_a_stranger_the_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    s.demo_data = true;
    s.admin_token = Some(ADMIN.to_string().into());
    let hub = spawn_with(dir, s, Arc::new(hub::clock::SystemClock), false).await;
    let c = client();
    let slots = c
        .get(hub.url("/api/v1/admin/slots"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    assert_eq!(
        slots["slots"].as_array().map(Vec::len),
        Some(4),
        "the demo seeds every slot"
    );
    let signed_in = c
        .post(hub.url("/api/v1/sessions"))
        .json(&json!({"email": hub::app::DEMO_EMAIL, "password": hub::app::DEMO_PASSWORD}))
        .json_body()
        .await;
    let token = signed_in["session_token"].as_str().expect("a session");
    let seen = c
        .get(hub.url("/api/v1/slots/home_hero"))
        .bearer_auth(token)
        .json_body()
        .await;
    assert_eq!(seen["variant"], "coffee-lovers", "{seen}");
    assert_eq!(seen["reason_code"], "segment_matched");
    let seen = c.get(hub.url("/api/v1/slots/home_hero")).json_body().await;
    assert_eq!(seen["variant"], "default");
    let block = c
        .get(hub.url("/api/v1/slots/email_block?channel=email"))
        .bearer_auth(token)
        .json_body()
        .await;
    assert_eq!(block["content"]["title"], "New beans in the roastery");
}
