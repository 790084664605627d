//! The back office's marketing pages against a real hub on port 0: segments (a rule error shown
//! with its line and column and nothing saved), personalization slots (problems with their JSON
//! path, the preview as the API resolves it), A/B experiments (a split that does not add up is
//! refused; the report page shows the API's figures), board playlists (problems with their
//! field, stale edits refused, publications audited with before and after), the preview as a
//! segment, and the roles and CSRF checks of their forms.

mod common;

use common::pages::{csrf_in, location, page, text_of};
use common::{spawn_with, TestHub};
use hub::clock::SystemClock;
use protocol::AnonymousId;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const ADMIN_TOKEN: &str = "marketing-pages-admin-token";
const PASSWORD: &str = "correct horse battery staple";

async fn spawn() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = common::settings(dir.path());
    s.admin_token = Some(ADMIN_TOKEN.to_string().into());
    spawn_with(dir, s, Arc::new(SystemClock), true).await
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn user(hub: &TestHub, email: &str, roles: &[&str]) {
    let res = common::client()
        .post(hub.url("/api/v1/admin/users"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"email": email, "name": "Tester", "roles": roles, "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
}

/// A browser signed in as a new user with `roles`.
async fn signed_in(hub: &TestHub, email: &str, roles: &[&str]) -> reqwest::Client {
    user(hub, email, roles).await;
    let c = browser();
    let (_, html) = page(&c, hub, "/backoffice/login").await;
    let res = c
        .post(hub.url("/backoffice/login"))
        .form(&[
            ("csrf", csrf_in(&html).as_str()),
            ("email", email),
            ("password", PASSWORD),
            ("next", "/backoffice"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{email} signs in");
    c
}

/// Posts a form with the session's CSRF token read from page `from`.
async fn post_form(
    c: &reqwest::Client,
    hub: &TestHub,
    from: &str,
    to: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let (status, html) = page(c, hub, from).await;
    assert_eq!(status, StatusCode::OK, "{from}: {html}");
    let csrf = csrf_in(&html);
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let res = c.post(hub.url(to)).form(&form).send().await.expect("sent");
    let status = res.status();
    let to = location(&res);
    (status, to, res.text().await.expect("body"))
}

async fn api(
    method: reqwest::Method,
    hub: &TestHub,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = common::client()
        .request(method, hub.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("sent");
    let status = res.status();
    let text = res.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(hub: &TestHub, path: &str) -> (StatusCode, Value) {
    api(reqwest::Method::GET, hub, path, None).await
}

/// The newest audit entry with `action` on `subject`.
async fn audit_entry(hub: &TestHub, action: &str, subject: &str) -> Value {
    let (status, audit) = get(hub, "/api/v1/backoffice/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .rev()
        .find(|e| e["action"] == action && e["subject"] == subject)
        .unwrap_or_else(|| panic!("{action} on {subject} is audited: {audit}"))
        .clone()
}

#[actix_web::test]
async fn a_segment_rule_error_is_shown_with_its_position_and_nothing_is_saved() {
    let hub = spawn().await;
    let mara = signed_in(&hub, "mara@example.com", &["marketer"]).await;
    let (status, html) = page(&mara, &hub, "/backoffice/segments/new").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="segment-form""#));

    // A rule that does not parse: 422, the form again with the line and column, nothing saved.
    let bad = "orders >= 1\nand orders wihtin 60d = 0";
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/segments/new",
        "/backoffice/segments",
        &[("key", "lapsing"), ("name", "Lapsing"), ("rule", bad)],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("Nothing was saved"), "{html}");
    assert!(
        html.contains(r#"id="rule-error" data-line="2" data-column="12""#),
        "{html}"
    );
    assert!(html.contains("line 2, column 12"), "{html}");
    assert!(html.contains("wihtin"), "the typed rule is kept: {html}");
    let (status, _) = get(&hub, "/api/v1/admin/segments/lapsing").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing saved");

    // A bad key is a form error too.
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/segments/new",
        "/backoffice/segments",
        &[("key", "Not A Key"), ("name", "x"), ("rule", "orders >= 1")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("key:"), "{html}");

    // A good rule is saved, audited, and listed with its member count.
    let good = "orders >= 1 and orders within 60d = 0";
    let (status, to, _) = post_form(
        &mara,
        &hub,
        "/backoffice/segments/new",
        "/backoffice/segments",
        &[("key", "lapsing"), ("name", "Lapsing"), ("rule", good)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(to, "/backoffice/segments/lapsing");
    let (status, stored) = get(&hub, "/api/v1/admin/segments/lapsing").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored["rule"], good);
    let created = audit_entry(&hub, "segment.create", "segment/lapsing").await;
    assert_eq!(created["who_email"], "mara@example.com");
    let (status, html) = page(&mara, &hub, "/backoffice/segments").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="members-lapsing""#), "{html}");

    // The same saved twice: the key is taken.
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/segments/new",
        "/backoffice/segments",
        &[("key", "lapsing"), ("name", "Again"), ("rule", good)],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("exists"), "{html}");

    // Editing with a bad rule keeps the stored one; a good edit bumps the version, audited with
    // before and after.
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/segments/lapsing",
        "/backoffice/segments/lapsing",
        &[("name", "Lapsing"), ("rule", "orders >=")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains(r#"id="rule-error""#), "{html}");
    let (_, stored) = get(&hub, "/api/v1/admin/segments/lapsing").await;
    assert_eq!(stored["rule"], good);
    assert_eq!(stored["version"], 1);
    let (status, _, _) = post_form(
        &mara,
        &hub,
        "/backoffice/segments/lapsing",
        "/backoffice/segments/lapsing",
        &[("name", "Lapsed buyers"), ("rule", "orders >= 2")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, stored) = get(&hub, "/api/v1/admin/segments/lapsing").await;
    assert_eq!(
        (stored["version"].as_u64(), stored["name"].as_str()),
        (Some(2), Some("Lapsed buyers"))
    );
    let updated = audit_entry(&hub, "segment.update", "segment/lapsing").await;
    assert!(updated["before"].as_str().expect("before").contains(good));
    assert!(updated["after"]
        .as_str()
        .expect("after")
        .contains("orders >= 2"));

    // The members page.
    let (status, html) = page(&mara, &hub, "/backoffice/segments/lapsing/members").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="member-total""#));
    let (status, _) = page(
        &mara,
        &hub,
        "/backoffice/segments/lapsing/members?after=nonsense",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = page(&mara, &hub, "/backoffice/segments/no-such").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An analyst reads, without the form, and may not change anything.
    let ada = signed_in(&hub, "ada@example.com", &["analyst"]).await;
    let (status, html) = page(&ada, &hub, "/backoffice/segments/lapsing").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains(r#"id="segment-form""#));
    let (status, _, _) = post_form(
        &ada,
        &hub,
        "/backoffice/segments/lapsing",
        "/backoffice/segments/lapsing/delete",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Without the CSRF token: refused.
    let res = mara
        .post(hub.url("/backoffice/segments/lapsing/delete"))
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Deleted by the marketer, audited.
    let (status, _, _) = post_form(
        &mara,
        &hub,
        "/backoffice/segments/lapsing",
        "/backoffice/segments/lapsing/delete",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = get(&hub, "/api/v1/admin/segments/lapsing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    audit_entry(&hub, "segment.delete", "segment/lapsing").await;
    hub.server.stop(true).await;
}

fn hero_spec() -> Value {
    json!({
        "variants": [
            {"id": "coffee", "targeting": {"segments": ["coffee-lovers"], "channels": ["web", "mobile"]},
             "content": {"title": "Freshly roasted for you", "text": "New beans.", "sku": "BEANS"}}
        ],
        "default": {"title": "Welcome", "image": "/images/house-beans.svg", "link": "/"}
    })
}

#[actix_web::test]
async fn slots_show_problems_with_their_json_path_and_preview_as_the_api_resolves() {
    let hub = spawn().await;
    let mara = signed_in(&hub, "mara@example.com", &["marketer"]).await;
    let (status, html) = page(&mara, &hub, "/backoffice/slots").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"href="/backoffice/slots/home_hero""#));

    // An unknown SKU and a bad channel: each named by its JSON path; nothing saved.
    let mut bad = hero_spec();
    bad["variants"][0]["content"]["sku"] = json!("NO-SUCH-SKU");
    bad["variants"][0]["targeting"]["channels"] = json!(["web", "telepathy"]);
    let bad_text = serde_json::to_string_pretty(&bad).expect("json");
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/slots/home_hero",
        "/backoffice/slots/home_hero",
        &[("spec", &bad_text)],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("variants[0].content.sku"), "{html}");
    assert!(html.contains("variants[0].targeting.channels[1]"), "{html}");
    let (status, _) = get(&hub, "/api/v1/admin/slots/home_hero").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing saved");
    // Not JSON at all: the line and column.
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/slots/home_hero",
        "/backoffice/slots/home_hero",
        &[("spec", "{\n  \"variants\": [,]\n}")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("line 2, column"), "{html}");
    let (status, _) = page(&mara, &hub, "/backoffice/slots/no_such_slot").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Saved, audited, and shown per variant.
    let text = serde_json::to_string(&hero_spec()).expect("json");
    let (status, to, html) = post_form(
        &mara,
        &hub,
        "/backoffice/slots/home_hero",
        "/backoffice/slots/home_hero",
        &[("spec", &text)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(to, "/backoffice/slots/home_hero");
    let (status, stored) = get(&hub, "/api/v1/admin/slots/home_hero").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored["version"], 1);
    let entry = audit_entry(&hub, "slot.create", "slot/home_hero").await;
    assert_eq!(entry["who_email"], "mara@example.com");
    let (_, html) = page(&mara, &hub, "/backoffice/slots/home_hero").await;
    assert!(html.contains(r#"id="variants-table""#) && html.contains("Freshly roasted for you"));
    // The editor shows what was saved in the shape it takes: saving it again is a new version.
    let shown = html
        .split(r#"name="spec" spellcheck="false" rows="18" required>"#)
        .nth(1)
        .and_then(|rest| rest.split("</textarea>").next())
        .expect("the editor")
        .replace("&quot;", "\"")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&");
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/slots/home_hero",
        "/backoffice/slots/home_hero",
        &[("spec", &shown)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (_, stored) = get(&hub, "/api/v1/admin/slots/home_hero").await;
    assert_eq!(stored["version"], 2);
    let entry = audit_entry(&hub, "slot.update", "slot/home_hero").await;
    assert!(
        entry["before"].is_string() && entry["after"].is_string(),
        "{entry}"
    );

    // The preview answers what the API's preview answers, for segments and for a channel.
    for (segments, channel) in [
        ("coffee-lovers", "web"),
        ("coffee-lovers", "pos"),
        ("", "web"),
    ] {
        let (status, expected) = api(
            reqwest::Method::POST,
            &hub,
            "/api/v1/admin/slots/home_hero/preview",
            Some(json!({"segments": if segments.is_empty() { vec![] } else { vec![segments] }, "channel": channel})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{expected}");
        let (status, html) = page(
            &mara,
            &hub,
            &format!("/backoffice/slots/home_hero?segments={segments}&channel={channel}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            text_of(&html, "preview-variant"),
            expected["variant"].as_str().expect("variant"),
            "{segments} on {channel}"
        );
    }
    let (_, html) = page(&mara, &hub, "/backoffice/slots/home_hero?channel=telepathy").await;
    assert!(html.contains(r#"id="preview-error""#), "{html}");
    let (_, html) = page(&mara, &hub, "/backoffice/slots/home_hero?customer=nobody").await;
    assert!(text_of(&html, "preview-error").contains("not a customer id"));

    // An analyst previews but may not save.
    let ada = signed_in(&hub, "ada@example.com", &["analyst"]).await;
    let (status, html) = page(
        &ada,
        &hub,
        "/backoffice/slots/home_hero?segments=coffee-lovers",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains(r#"id="slot-form""#));
    assert_eq!(text_of(&html, "preview-variant"), "coffee");
    let (status, _, _) = post_form(
        &ada,
        &hub,
        "/backoffice/slots/home_hero",
        "/backoffice/slots/home_hero",
        &[("spec", &text)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    hub.server.stop(true).await;
}

async fn caught_up(hub: &TestHub) {
    hub.handle.drain_events().await;
    hub.handle
        .experiments
        .caught_up(hub.handle.storage.as_ref())
        .await
        .expect("the counter caught up");
}

#[actix_web::test]
async fn an_experiment_split_that_does_not_add_up_is_refused_and_the_report_shows_the_api_figures()
{
    let hub = spawn().await;
    let mara = signed_in(&hub, "mara@example.com", &["marketer"]).await;
    let form = |variants: &'static str| {
        vec![
            ("key", "hero-test"),
            ("name", "Hero test"),
            ("hypothesis", "A bigger hero sells"),
            ("surface", "storefront"),
            ("goal", "basket_line_added"),
            ("audience", ""),
            ("variants", variants),
        ]
    };
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/experiments/new",
        "/backoffice/experiments",
        &form("control 60 Today\nbigger 30 Bigger hero"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("add up to 90.00 %"), "{html}");
    let (status, _) = get(&hub, "/api/v1/admin/experiments/hero-test").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing saved");
    let (status, _, html) = post_form(
        &mara,
        &hub,
        "/backoffice/experiments/new",
        "/backoffice/experiments",
        &form("control half"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("variants, line 1"), "{html}");

    let (status, to, _) = post_form(
        &mara,
        &hub,
        "/backoffice/experiments/new",
        "/backoffice/experiments",
        &form("control 50 Today\nbigger 50 Bigger hero"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(to, "/backoffice/experiments/hero-test");
    audit_entry(&hub, "experiment.create", "experiment/hero-test").await;
    let (status, _, _) = post_form(
        &mara,
        &hub,
        "/backoffice/experiments/hero-test",
        "/backoffice/experiments/hero-test/start",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, made) = get(&hub, "/api/v1/admin/experiments/hero-test").await;
    assert_eq!(made["status"], "running");
    let started = audit_entry(&hub, "experiment.start", "experiment/hero-test").await;
    assert!(started["before"]
        .as_str()
        .expect("before")
        .contains("draft"));
    // Starting twice: a message, not a change.
    let (status, _, _) = post_form(
        &mara,
        &hub,
        "/backoffice/experiments/hero-test",
        "/backoffice/experiments/hero-test/start",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Shoppers are exposed; every third one adds to the basket (the goal).
    let c = common::client();
    for i in 0..24 {
        let anon = AnonymousId::new();
        let res = c
            .get(hub.url("/api/v1/experiments/hero-test/assignment?expose=true"))
            .header("x-anonymous-id", anon.to_string())
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        if i % 3 == 0 {
            let basket: Value = c
                .post(hub.url("/api/v1/baskets"))
                .header("x-anonymous-id", anon.to_string())
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            let res = c
                .post(hub.url(&format!(
                    "/api/v1/baskets/{}/lines",
                    basket["id"].as_str().expect("id")
                )))
                .header("x-basket-token", basket["token"].as_str().expect("token"))
                .header("x-anonymous-id", anon.to_string())
                .json(&json!({"sku": "BEANS", "quantity": 1}))
                .send()
                .await
                .expect("sent");
            assert_eq!(res.status(), StatusCode::OK);
        }
    }
    caught_up(&hub).await;
    let (status, report) = get(&hub, "/api/v1/admin/experiments/hero-test/report").await;
    assert_eq!(status, StatusCode::OK);

    // An analyst reads the report page: the API's figures, formatted.
    let ada = signed_in(&hub, "ada@example.com", &["analyst"]).await;
    let (status, html) = page(&ada, &hub, "/backoffice/experiments/hero-test").await;
    assert_eq!(status, StatusCode::OK);
    let mut exposed = 0;
    let mut converted = 0;
    for row in report["variants"].as_array().expect("variants") {
        let key = row["key"].as_str().expect("key");
        assert_eq!(
            text_of(&html, &format!("exposures-{key}")),
            row["exposures"].to_string()
        );
        assert_eq!(
            text_of(&html, &format!("conversions-{key}")),
            row["conversions"].to_string()
        );
        exposed += row["exposures"].as_u64().expect("n");
        converted += row["conversions"].as_u64().expect("n");
        let rate = row["conversion_rate"]
            .as_f64()
            .map_or("—".to_string(), |r| format!("{:.2} %", r * 100.0));
        assert_eq!(text_of(&html, &format!("rate-{key}")), rate);
        if let Some(cmp) = row["vs_control"].as_object() {
            let diff = cmp["difference"].as_f64().expect("difference");
            assert_eq!(
                text_of(&html, &format!("difference-{key}")),
                format!("{:+.2} pts", diff * 100.0)
            );
            let low = cmp["ci95_low"].as_f64().expect("low");
            let high = cmp["ci95_high"].as_f64().expect("high");
            assert_eq!(
                text_of(&html, &format!("interval-{key}")),
                format!("{:+.2} pts to {:+.2} pts", low * 100.0, high * 100.0)
            );
            let p = cmp["p_value"]
                .as_f64()
                .map_or("—".to_string(), |p| format!("{p:.4}"));
            assert_eq!(text_of(&html, &format!("p-{key}")), p);
        }
    }
    assert_eq!((exposed, converted), (24, 8), "{report}");
    assert!(
        html.contains(r#"id="uplift-chart"><svg class="chart""#),
        "{html}"
    );
    let mismatch = report["sample_ratio"]["mismatch"]
        .as_bool()
        .unwrap_or(false);
    assert_eq!(html.contains(r#"id="srm-warning""#), mismatch);
    // Fewer than 30 per variant: the warning is shown.
    assert!(html.contains("fewer than 30"), "{html}");
    // The analyst sees no buttons and may not stop it.
    assert!(!html.contains(r#"id="stop-experiment""#));
    let (status, _, _) = post_form(
        &ada,
        &hub,
        "/backoffice/experiments/hero-test",
        "/backoffice/experiments/hero-test/stop",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, html) = page(&mara, &hub, "/backoffice/experiments").await;
    assert!(html.contains(r#"href="/backoffice/experiments/hero-test""#));
    let (status, _, _) = post_form(
        &mara,
        &hub,
        "/backoffice/experiments/hero-test",
        "/backoffice/experiments/hero-test/stop",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, made) = get(&hub, "/api/v1/admin/experiments/hero-test").await;
    assert_eq!(made["status"], "stopped");
    let (status, _) = page(&ada, &hub, "/backoffice/experiments/no-such").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    hub.server.stop(true).await;
}

#[actix_web::test]
async fn playlists_are_checked_audited_and_the_preview_shows_a_segment_what_it_sees() {
    let hub = spawn().await;
    let mia = signed_in(&hub, "mia@example.com", &["merchandiser"]).await;
    let (status, html) = page(&mia, &hub, "/backoffice/playlists/all").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="erp-owned""#));
    let version = |html: &str| {
        let marker = r#"name="base_version" value=""#;
        let start = html.find(marker).expect("base version") + marker.len();
        html[start..].split('"').next().expect("v").to_string()
    };
    let base = version(&html);

    // Problems are named by their field; nothing is published.
    let bad = json!({"items": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]}).to_string();
    let (status, _, html) = post_form(
        &mia,
        &hub,
        "/backoffice/playlists/all",
        "/backoffice/playlists/all",
        &[("playlist", &bad), ("base_version", &base)],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("items[1].id"), "{html}");
    let (_, listed) = get(&hub, "/api/v1/admin/boards/playlists").await;
    assert_eq!(listed["version"].to_string(), base, "nothing published");
    let (status, _) = page(&mia, &hub, "/backoffice/playlists/no-such-store").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let playlist = json!({
        "items": [{"id": "welcome", "title": "Welcome"}, {"id": "beans", "title": "", "sku": "BEANS"}],
        "segments": {"coffee-lovers": [{"id": "roast", "title": "Fresh roast", "sku": "BEANS", "offer_quantity": 2}]},
        "dwell_secs": 8
    })
    .to_string();
    let (status, _, _) = post_form(
        &mia,
        &hub,
        "/backoffice/playlists/all",
        "/backoffice/playlists/all",
        &[("playlist", &playlist), ("base_version", &base)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page(&mia, &hub, "/backoffice/playlists/all").await;
    assert!(
        html.contains("House Beans"),
        "the ERP's product name, read-only: {html}"
    );
    let first = audit_entry(&hub, "board.playlist.publish", "playlist/all").await;
    assert_eq!(first["who_email"], "mia@example.com");
    assert!(first["after"]
        .as_str()
        .expect("after")
        .contains("Fresh roast"));
    // A stale edit (opened before that publication) is refused and nothing changes.
    let late = json!({"items": [{"id": "late", "title": "Late"}]}).to_string();
    let (status, _, html) = post_form(
        &mia,
        &hub,
        "/backoffice/playlists/all",
        "/backoffice/playlists/all",
        &[("playlist", &late), ("base_version", &base)],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    // A second publication is audited with the first as its before.
    let newer = version(&page(&mia, &hub, "/backoffice/playlists/all").await.1);
    let second = json!({"items": [{"id": "hello", "title": "Hello"}], "segments": {"coffee-lovers": [{"id": "roast", "title": "Fresh roast", "sku": "BEANS"}]}}).to_string();
    let (status, _, _) = post_form(
        &mia,
        &hub,
        "/backoffice/playlists/all",
        "/backoffice/playlists/all",
        &[("playlist", &second), ("base_version", &newer)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let entry = audit_entry(&hub, "board.playlist.publish", "playlist/all").await;
    assert!(
        entry["before"]
            .as_str()
            .expect("before")
            .contains("Welcome"),
        "{entry}"
    );
    assert!(entry["after"].as_str().expect("after").contains("Hello"));

    // A hero for the segment, through the API.
    let (status, _) = api(
        reqwest::Method::PUT,
        &hub,
        "/api/v1/admin/slots/home_hero",
        Some(hero_spec()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // The preview as coffee-lovers: the segment's hero and board items; as nobody: defaults.
    let mara = signed_in(&hub, "mara@example.com", &["marketer"]).await;
    let (status, html) = page(
        &mara,
        &hub,
        "/backoffice/preview?segment=coffee-lovers&channel=web",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="preview-banner""#));
    assert_eq!(text_of(&html, "preview-as"), "coffee-lovers");
    assert_eq!(
        text_of(&html, "preview-hero-title"),
        "Freshly roasted for you"
    );
    assert_eq!(text_of(&html, "preview-hero-variant"), "coffee");
    assert_eq!(text_of(&html, "preview-board-segment"), "coffee-lovers");
    assert!(
        html.contains("Fresh roast") && !html.contains("<td>Hello</td>"),
        "{html}"
    );
    let (_, html) = page(&mara, &hub, "/backoffice/preview").await;
    assert_eq!(text_of(&html, "preview-hero-title"), "Welcome");
    assert_eq!(text_of(&html, "preview-hero-variant"), "default");
    assert!(html.contains("<td>Hello</td>"), "{html}");
    // The hero on a channel the variant does not target: the default, as the live page.
    let (_, html) = page(
        &mara,
        &hub,
        "/backoffice/preview?segment=coffee-lovers&channel=pos",
    )
    .await;
    assert_eq!(text_of(&html, "preview-hero-variant"), "default");
    // Bad input is said, not a failure.
    let (status, html) = page(
        &mara,
        &hub,
        "/backoffice/preview?segment=no-such&channel=telepathy&product=NOPE",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let problems = html
        .split(r#"id="preview-problems""#)
        .nth(1)
        .expect("problems");
    assert!(
        problems.contains("no-such") && problems.contains("channel:") && problems.contains("NOPE")
    );
    // A support user may not preview; an analyst may.
    let sam = signed_in(&hub, "sam@example.com", &["support"]).await;
    let (status, _) = page(&sam, &hub, "/backoffice/preview").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let ada = signed_in(&hub, "ada@example.com", &["analyst"]).await;
    let (status, _) = page(&ada, &hub, "/backoffice/preview?segment=coffee-lovers").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = page(&ada, &hub, "/backoffice/playlists").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    hub.server.stop(true).await;
}
