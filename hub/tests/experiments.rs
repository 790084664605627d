//! A/B tests through the hub's API: validation and roles, sticky assignment across sign-in and
//! channels, exposures and conversions counted once, the report's numbers, and a promotion
//! restricted to a variant.

mod common;

use common::{client, spawn_with, TestHub};
use hub::clock::SystemClock;
use protocol::experiment::{bucket, variant_at, VariantSpec};
use protocol::{AnonymousId, CustomerId, Subject};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

const ADMIN: &str = "experiments-admin-token";

async fn send(rb: RequestBuilder) -> (StatusCode, Value) {
    let res = rb.send().await.expect("sent");
    let status = res.status();
    (status, res.json().await.expect("a JSON body"))
}

async fn start_hub() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = common::settings(dir.path());
    s.admin_token = Some(ADMIN.to_string().into());
    spawn_with(dir, s, Arc::new(SystemClock), true).await
}

/// A back-office user with `roles` and their API token.
async fn user(hub: &TestHub, c: &reqwest::Client, email: &str, roles: &[&str]) -> String {
    let (status, user) = send(
        c.post(hub.url("/api/v1/admin/users"))
            .bearer_auth(ADMIN)
            .json(&json!({"email": email, "name": "Tester", "roles": roles})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let id = user["id"].as_str().expect("id");
    let (status, token) = send(
        c.post(hub.url(&format!("/api/v1/admin/users/{id}/tokens")))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "tests"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    token["token"].as_str().expect("token").to_string()
}

fn experiment(key: &str, surface: &str, goal: &str, variants: Value) -> Value {
    json!({
        "key": key, "name": format!("Test {key}"), "hypothesis": "B beats A",
        "surface": surface, "goal": goal, "variants": variants,
    })
}

async fn create_and_start(hub: &TestHub, c: &reqwest::Client, body: Value) -> Value {
    let (status, made) = send(
        c.post(hub.url("/api/v1/admin/experiments"))
            .bearer_auth(ADMIN)
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().expect("key").to_string();
    let (status, started) = send(
        c.post(hub.url(&format!("/api/v1/admin/experiments/{key}/start")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["status"], "running");
    started
}

#[actix_web::test]
async fn splits_that_do_not_add_up_are_refused_and_roles_are_checked() {
    let hub = start_hub().await;
    let c = client();
    let marketer = user(&hub, &c, "m@example.com", &["marketer"]).await;
    let analyst = user(&hub, &c, "a@example.com", &["analyst"]).await;
    let support = user(&hub, &c, "s@example.com", &["support"]).await;
    let url = hub.url("/api/v1/admin/experiments");

    // Bad splits: 422 naming the field and why; nothing is created.
    let cases = [
        (
            json!([{"key": "a", "weight_bp": 5000}, {"key": "b", "weight_bp": 4000}]),
            "variants",
            "add up to 90.00 %",
        ),
        (
            json!([{"key": "a", "percent": 70}, {"key": "b", "percent": 40}]),
            "variants",
            "add up to 110.00 %",
        ),
        (
            json!([{"key": "a", "weight_bp": 10000}]),
            "variants",
            "at least 2 variants",
        ),
        (
            json!([{"key": "a", "weight_bp": 5000}, {"key": "a", "weight_bp": 5000}]),
            "variants[1].key",
            "used twice",
        ),
    ];
    for (variants, field, words) in cases {
        let (status, body) = send(c.post(&url).bearer_auth(&marketer).json(&experiment(
            "bad",
            "storefront",
            "order_placed",
            variants.clone(),
        )))
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{variants}: {body}"
        );
        let fields = body["error"]["details"]["fields"]
            .as_array()
            .expect("fields");
        assert!(
            fields
                .iter()
                .any(|f| f["field"] == field && f["message"].as_str().unwrap_or("").contains(words)),
            "{variants}: {body}"
        );
    }
    let (status, _) = send(
        c.get(hub.url("/api/v1/admin/experiments/bad"))
            .bearer_auth(&marketer),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Roles: an analyst reads but does not write; support does neither; no token is a 401.
    let body = experiment(
        "hero-test",
        "storefront",
        "order_placed",
        json!([{"key": "control", "percent": 50}, {"key": "bold", "percent": 50}]),
    );
    let (status, _) = send(c.post(&url).bearer_auth(&analyst).json(&body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(c.post(&url).json(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, made) = send(c.post(&url).bearer_auth(&marketer).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["status"], "draft");
    let (status, _) = send(c.get(&url).bearer_auth(&support)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, list) = send(c.get(&url).bearer_auth(&analyst)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["experiments"][0]["key"], "hero-test");

    // A draft's weights may change; a running experiment's may not (409, saying why).
    let one = hub.url("/api/v1/admin/experiments/hero-test");
    let reweigh = json!({"variants": [{"key": "control", "weight_bp": 8000}, {"key": "bold", "weight_bp": 2000}]});
    let (status, patched) = send(c.patch(&one).bearer_auth(&marketer).json(&reweigh)).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["variants"][0]["weight_bp"], 8000);
    let (status, _) = send(c.post(format!("{one}/start")).bearer_auth(&analyst)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, started) = send(c.post(format!("{one}/start")).bearer_auth(&marketer)).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let (status, refused) = send(c.patch(&one).bearer_auth(&marketer).json(&reweigh)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "experiment_frozen");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("statistics"));
    let (status, renamed) = send(
        c.patch(&one)
            .bearer_auth(&marketer)
            .json(&json!({"name": "Bold hero"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    let (status, _) = send(c.post(format!("{one}/start")).bearer_auth(&marketer)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, report) = send(c.get(format!("{one}/report")).bearer_auth(&analyst)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["variants"][0]["exposures"], 0);

    // Every change is in the audit list.
    let (_, audit) = send(
        c.get(hub.url("/api/v1/backoffice/audit"))
            .bearer_auth(ADMIN),
    )
    .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("experiment."))
        .collect();
    assert_eq!(
        actions,
        [
            "experiment.create",
            "experiment.update",
            "experiment.start",
            "experiment.update"
        ]
    );
}

fn variants(weights: &[(&str, u32)]) -> Vec<VariantSpec> {
    weights
        .iter()
        .map(|(k, w)| VariantSpec {
            key: k.to_string(),
            weight_bp: *w,
            description: String::new(),
        })
        .collect()
}

async fn assignment(
    hub: &TestHub,
    c: &reqwest::Client,
    key: &str,
    who: impl FnOnce(RequestBuilder) -> RequestBuilder,
    expose: bool,
) -> Value {
    let url = hub.url(&format!(
        "/api/v1/experiments/{key}/assignment?expose={expose}"
    ));
    let (status, body) = send(who(c.get(url))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn caught_up(hub: &TestHub) {
    hub.handle.drain_events().await;
    hub.handle
        .experiments
        .caught_up(hub.handle.storage.as_ref())
        .await
        .expect("the counter caught up");
}

async fn report(hub: &TestHub, c: &reqwest::Client, key: &str) -> Value {
    caught_up(hub).await;
    let (status, body) = send(
        c.get(hub.url(&format!("/api/v1/admin/experiments/{key}/report")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn row<'a>(report: &'a Value, variant: &str) -> &'a Value {
    report["variants"]
        .as_array()
        .and_then(|v| v.iter().find(|r| r["key"] == variant))
        .expect("the variant's row")
}

#[actix_web::test]
async fn a_shopper_keeps_their_variant_across_sign_in_and_channels_and_converts_once() {
    let hub = start_hub().await;
    let c = client();
    let weights = [("a", 2500), ("b", 2500), ("c", 2500), ("d", 2500)];
    let started = create_and_start(
        &hub,
        &c,
        experiment(
            "home-hero",
            "storefront",
            "basket_line_added",
            json!(weights
                .iter()
                .map(|(k, w)| json!({"key": k, "weight_bp": w}))
                .collect::<Vec<_>>()),
        ),
    )
    .await;
    let salt = started["salt"].as_str().expect("salt").to_string();
    let spec = variants(&weights);

    // Anonymous on the web, exposed; then registered from that browser. Retried until the
    // customer's own hash would give another variant, so keeping the anonymous one is a fact
    // the test can see.
    let mut found = None;
    let mut earlier_variants = Vec::new();
    for i in 0..20u64 {
        let anon = AnonymousId::new();
        let web = |rb: RequestBuilder| rb.header("x-anonymous-id", anon.to_string());
        let first = assignment(&hub, &c, "home-hero", web, true).await;
        assert_eq!(first["reason"]["type"], "hashed", "{first}");
        let again = assignment(&hub, &c, "home-hero", web, false).await;
        assert_eq!(again["variant"], first["variant"]);
        assert_eq!(again["reason"]["type"], "first_exposure", "{again}");
        let (status, signed) = send(
            c.post(hub.url("/api/v1/customers"))
                .header("x-anonymous-id", anon.to_string())
                .json(&json!({"email": format!("ada{i}@example.com"), "name": "Ada", "password": "correct horse battery"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{signed}");
        let customer: CustomerId = signed["customer"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("customer id");
        let own = variant_at(&spec, bucket(&salt, &Subject::Customer(customer)))
            .expect("a variant")
            .key
            .clone();
        if own != first["variant"] {
            found = Some((first["variant"].clone(), signed, anon, i));
            break;
        }
        earlier_variants.push(first["variant"].clone());
    }
    // Each earlier try left one exposed subject (its customer, joined to its anonymous visit).
    let (variant, signed, anon, earlier) = found.expect("a customer whose own hash differs");
    let token = signed["session_token"].as_str().expect("token").to_string();
    caught_up(&hub).await;

    // The app, signed in, with no anonymous id: the same variant, carried over.
    let app = |rb: RequestBuilder| rb.bearer_auth(&token);
    let on_app = assignment(&hub, &c, "home-hero", app, true).await;
    assert_eq!(on_app["variant"], variant, "{on_app}");
    assert_eq!(on_app["reason"]["type"], "carried_over", "{on_app}");
    let exposed = c
        .post(hub.url("/api/v1/experiments/home-hero/exposures"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(exposed.status(), StatusCode::OK);

    // Converts (the goal is a basket add) twice: counted once.
    let basket = signed["basket"]["id"].as_str().expect("basket id");
    for sku in ["BEANS", "TEA"] {
        let (status, body) = send(
            c.post(hub.url(&format!("/api/v1/baskets/{basket}/lines")))
                .bearer_auth(&token)
                .json(&json!({"sku": sku, "quantity": 1})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Another shopper is exposed and does not convert.
    let other = AnonymousId::new();
    let seen = assignment(
        &hub,
        &c,
        "home-hero",
        |rb| rb.header("x-anonymous-id", other.to_string()),
        true,
    )
    .await;

    let r = report(&hub, &c, "home-hero").await;
    let total: u64 = r["variants"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|v| v["exposures"].as_u64().unwrap_or(0))
        .sum();
    // The anonymous visit and the customer are one subject; plus the other shopper, plus one
    // per earlier try.
    assert_eq!(total, 2 + earlier, "{r}");
    let mine = row(&r, variant.as_str().expect("variant"));
    assert_eq!(mine["conversions"], 1, "{r}");
    // Per variant: the earlier tries', this shopper's and the other shopper's exposures.
    for v in r["variants"].as_array().expect("rows") {
        let key = &v["key"];
        let expected = earlier_variants.iter().filter(|e| *e == key).count()
            + usize::from(*key == variant)
            + usize::from(*key == seen["variant"]);
        assert_eq!(v["exposures"], expected, "{key}: {r}");
        if *key != variant {
            assert_eq!(v["conversions"], 0, "{key}: {r}");
        }
    }
    assert!(r["method"]["interval"]
        .as_str()
        .unwrap_or("")
        .contains("Newcombe"));

    // The anonymous id used again after sign-in still answers the customer's variant.
    let later = assignment(
        &hub,
        &c,
        "home-hero",
        |rb| rb.header("x-anonymous-id", anon.to_string()),
        false,
    )
    .await;
    assert_eq!(later["variant"], variant);

    // Without any identity there is nothing stable to assign: 422. A draft or unknown: 404.
    let (status, body) = send(c.get(hub.url("/api/v1/experiments/home-hero/assignment"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "anonymous_id_required");
    let (status, _) = send(
        c.get(hub.url("/api/v1/experiments/nope/assignment"))
            .header("x-anonymous-id", other.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn a_promotion_restricted_to_a_variant_applies_to_that_variant_only_and_exposes() {
    let hub = start_hub().await;
    let c = client();
    let author = user(
        &hub,
        &c,
        "author@example.com",
        &["merchandiser", "marketer"],
    )
    .await;
    let approver = user(&hub, &c, "approver@example.com", &["approver"]).await;
    create_and_start(
        &hub,
        &c,
        experiment(
            "tenoff",
            "promotion",
            "order_placed",
            json!([{"key": "control", "percent": 50}, {"key": "ten", "percent": 50}]),
        ),
    )
    .await;
    let (status, body) = send(
        c.post(hub.url("/api/v1/backoffice/promotions"))
            .bearer_auth(&author)
            .json(&json!({"id": "AB-TEN", "name": "Ten off", "spec": {
                "conditions": [{"type": "experiment", "experiment": "tenoff", "variants": ["ten"]}],
                "benefit": {"type": "percent_off_basket", "percent_bp": 1000},
                "combination": {"type": "stackable", "group": "ab"}
            }})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = send(
        c.post(hub.url("/api/v1/backoffice/promotions/AB-TEN/approve"))
            .bearer_auth(&approver),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A promotion experiment condition without variants is refused at creation.
    let (status, body) = send(
        c.post(hub.url("/api/v1/backoffice/promotions"))
            .bearer_auth(&author)
            .json(&json!({"id": "AB-BAD", "name": "Bad", "spec": {
                "conditions": [{"type": "experiment", "experiment": "tenoff", "variants": []}],
                "benefit": {"type": "free_shipping"},
                "combination": {"type": "exclusive"}
            }})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let anon = AnonymousId::new();
        let (status, basket) = send(
            c.post(hub.url("/api/v1/baskets"))
                .header("x-anonymous-id", anon.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{basket}");
        let (id, token) = (
            basket["id"].as_str().expect("id").to_string(),
            basket["token"].as_str().expect("token").to_string(),
        );
        let (status, priced) = send(
            c.post(hub.url(&format!("/api/v1/baskets/{id}/lines")))
                .header("x-basket-token", &token)
                .header("x-anonymous-id", anon.to_string())
                .json(&json!({"sku": "BEANS", "quantity": 1})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{priced}");
        let applied = priced["promotions"]["applied"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["id"] == "AB-TEN"));
        // Another variant's promotion is not named to the shopper.
        let named = priced["promotions"]["not_applied"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["id"] == "AB-TEN"));
        assert!(!named, "{priced}");
        // Pricing the basket was the exposure: the assignment is stored now.
        let a = assignment(
            &hub,
            &c,
            "tenoff",
            |rb| rb.header("x-anonymous-id", anon.to_string()),
            false,
        )
        .await;
        assert_eq!(a["reason"]["type"], "first_exposure", "{a}");
        assert_eq!(applied, a["variant"] == "ten", "{a} {priced}");
        seen.insert(applied);
    }
    assert_eq!(seen.len(), 2, "40 shoppers all fell in one variant");
    let r = report(&hub, &c, "tenoff").await;
    let exposures: u64 = ["control", "ten"]
        .iter()
        .map(|v| row(&r, v)["exposures"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(exposures, 40, "{r}");
}

#[actix_web::test]
async fn a_customer_exposed_on_two_devices_before_signing_in_counts_once_and_keeps_their_own() {
    let hub = start_hub().await;
    let c = client();
    create_and_start(
        &hub,
        &c,
        experiment(
            "two-devices",
            "board",
            "basket_line_added",
            json!([{"key": "a", "percent": 50}, {"key": "b", "percent": 50}]),
        ),
    )
    .await;
    let signed = hub.register(&c, "two@example.com").await;
    let token = signed["session_token"].as_str().expect("token").to_string();
    let own = assignment(&hub, &c, "two-devices", |rb| rb.bearer_auth(&token), true).await;
    let anon = AnonymousId::new();
    let web = |rb: RequestBuilder| rb.header("x-anonymous-id", anon.to_string());
    assignment(&hub, &c, "two-devices", web, true).await;
    caught_up(&hub).await;
    let (status, body) = send(
        c.post(hub.url("/api/v1/sessions"))
            .header("x-anonymous-id", anon.to_string())
            .json(&json!({"email": "two@example.com", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let r = report(&hub, &c, "two-devices").await;
    let total: u64 = ["a", "b"]
        .iter()
        .map(|v| row(&r, v)["exposures"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 1, "one person: {r}");
    assert_eq!(
        row(&r, own["variant"].as_str().expect("variant"))["exposures"],
        1
    );
    // The customer keeps their own variant, on every device.
    let again = assignment(&hub, &c, "two-devices", web, false).await;
    assert_eq!(again["variant"], own["variant"], "{again}");
}

/// The storefront's home page for a browser with this anonymous id.
async fn home_page(hub: &TestHub, c: &reqwest::Client, anon: AnonymousId) -> String {
    c.get(hub.url("/"))
        .header("cookie", format!("omnihub_anon={anon}"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html")
}

#[actix_web::test]
async fn a_slot_variant_bound_to_an_experiment_shows_to_that_variant_and_exposes_once() {
    let hub = start_hub().await;
    let c = client();
    create_and_start(
        &hub,
        &c,
        experiment(
            "hero-test",
            "storefront",
            "order_placed",
            json!([{"key": "control", "percent": 50}, {"key": "B", "percent": 50}]),
        ),
    )
    .await;
    let (status, promo) = send(
        c.post(hub.url("/api/v1/admin/experiments"))
            .bearer_auth(ADMIN)
            .json(&experiment(
                "promo-test",
                "promotion",
                "order_placed",
                json!([{"key": "control", "percent": 50}, {"key": "B", "percent": 50}]),
            )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{promo}");
    let hero =
        |title: &str| json!({"title": title, "image": "/images/house-beans.svg", "link": "/"});
    let slot = |binding: Value| {
        json!({
            "variants": [{"id": "hero-b", "targeting": {"experiment": binding},
                "content": hero("Variant B hero")}],
            "default": hero("Control hero")
        })
    };
    let put = |body: Value| {
        send(
            c.put(hub.url("/api/v1/admin/slots/home_hero"))
                .bearer_auth(ADMIN)
                .json(&body),
        )
    };

    // An unknown experiment or variant, or a promotion's experiment, is refused with its path.
    for (binding, field) in [
        (json!({"id": "nope", "variant": "B"}), "id"),
        (json!({"id": "hero-test", "variant": "Z"}), "variant"),
        (json!({"id": "promo-test", "variant": "B"}), "id"),
    ] {
        let (status, body) = put(slot(binding.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{binding}: {body}"
        );
        assert_eq!(body["error"]["code"], "invalid_slot");
        assert_eq!(
            body["error"]["details"]["fields"][0]["field"],
            format!("variants[0].targeting.experiment.{field}"),
            "{body}"
        );
    }
    let (status, body) = put(slot(json!({"id": "hero-test", "variant": "B"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Anonymous browsers: each sees its variant's hero, with the reason, the same every time,
    // in the API and on the home page.
    let mut seen: Vec<(AnonymousId, String)> = Vec::new();
    for _ in 0..40 {
        let anon = AnonymousId::new();
        let ask = || {
            c.get(hub.url("/api/v1/slots/home_hero"))
                .header("x-anonymous-id", anon.to_string())
        };
        let (status, first) = send(ask()).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let variant = first["experiment"]["variant"]
            .as_str()
            .expect("the experiment's variant")
            .to_string();
        assert_eq!(first["experiment"]["experiment"], "hero-test");
        let (shown, title, reason) = if variant == "B" {
            (
                "hero-b",
                "Variant B hero",
                "experiment hero-test variant B (variant 1, hero-b)".to_string(),
            )
        } else {
            assert_eq!(variant, "control");
            (
                "default",
                "Control hero",
                "default: experiment hero-test variant control".to_string(),
            )
        };
        assert_eq!(
            (
                first["variant"].as_str(),
                first["content"]["title"].as_str(),
                first["reason"].as_str(),
                first["reason_code"].as_str()
            ),
            (
                Some(shown),
                Some(title),
                Some(reason.as_str()),
                Some("experiment")
            ),
            "{first}"
        );
        let (_, again) = send(ask()).await;
        assert_eq!(again["variant"], first["variant"]);
        // The slot exposed the subject through the experiment's own assignment.
        let stored = assignment(
            &hub,
            &c,
            "hero-test",
            |rb| rb.header("x-anonymous-id", anon.to_string()),
            false,
        )
        .await;
        assert_eq!(
            (
                stored["variant"].as_str(),
                stored["reason"]["type"].as_str()
            ),
            (Some(variant.as_str()), Some("first_exposure")),
            "{stored}"
        );
        let page = home_page(&hub, &c, anon).await;
        assert!(
            page.contains(&format!("data-slot-variant=\"{shown}\"")) && page.contains(title),
            "the home page shows {shown}"
        );
        seen.push((anon, variant));
        let variants: std::collections::BTreeSet<&str> =
            seen.iter().map(|(_, v)| v.as_str()).collect();
        if variants.len() == 2 && seen.len() >= 6 {
            break;
        }
    }
    let b = seen.iter().filter(|(_, v)| v == "B").count() as u64;
    let control = seen.len() as u64 - b;
    assert!(b > 0 && control > 0, "both variants seen in 40 visitors");

    // One exposure per subject, however often the slot and the page were shown.
    let counted = report(&hub, &c, "hero-test").await;
    assert_eq!(row(&counted, "B")["exposures"], b, "{counted}");
    assert_eq!(row(&counted, "control")["exposures"], control, "{counted}");

    // Sticky after sign-in: a B browser registers; signed in (no anonymous id) it keeps B,
    // in the API and on a board.
    let (anon_b, _) = seen.iter().find(|(_, v)| v == "B").expect("a B visitor");
    let (status, signed) = send(
        c.post(hub.url("/api/v1/customers"))
            .header("x-anonymous-id", anon_b.to_string())
            .json(&json!({"email": "bea@example.com", "name": "Bea", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{signed}");
    let token = signed["session_token"].as_str().expect("token").to_string();
    let customer: CustomerId = signed["customer"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("customer id");
    caught_up(&hub).await;
    let (_, signed_in) = send(
        c.get(hub.url("/api/v1/slots/home_hero?channel=mobile"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(signed_in["variant"], "hero-b", "{signed_in}");
    let board = json!({
        "variants": [{"id": "board-b", "targeting": {"experiment": {"id": "hero-test", "variant": "B"}},
            "content": {"id": "b-item", "title": "B on the board"}}],
        "default": {"id": "a-item", "title": "Control on the board"}
    });
    let (status, body) = send(
        c.put(hub.url("/api/v1/admin/slots/board_item"))
            .bearer_auth(ADMIN)
            .json(&board),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let item = hub
        .handle
        .personalization
        .board_item(customer)
        .await
        .expect("resolved")
        .expect("an item");
    assert_eq!(item.id, "b-item");
    // Still one subject per variant: the customer is the anonymous visit joined.
    let counted = report(&hub, &c, "hero-test").await;
    assert_eq!(row(&counted, "B")["exposures"], b, "{counted}");

    // Stopped, the experiment's variants show no more: everyone gets the default.
    let (status, _) = send(
        c.post(hub.url("/api/v1/admin/experiments/hero-test/stop"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, stopped) = send(
        c.get(hub.url("/api/v1/slots/home_hero"))
            .header("x-anonymous-id", anon_b.to_string()),
    )
    .await;
    assert_eq!(
        (stopped["variant"].as_str(), stopped["reason_code"].as_str()),
        (Some("default"), Some("no_variant_matched")),
        "{stopped}"
    );
}
