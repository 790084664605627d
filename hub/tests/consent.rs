//! Consent per channel and purpose, end to end on a real hub: nothing granted by default, the
//! registration's choices, `GET/PUT /api/v1/customers/me/consents`, the storefront's boxes
//! (registration form, account page), the unsubscribe link, `consent_changed` events, the
//! profile and the data download; and a resumable erasure (a job interrupted after it was
//! recorded finishes at the next start, mail to the customer is dropped, later events of the
//! customer id are stored pseudonymised).

mod common;

use common::{client, settings, spawn_with, SendForJson, TestHub};
use hub::storage::{Change, UnitOfWork};
use protocol::{Channel, CustomerId, Event, EventKind, Subject};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "consent-test-admin-token";

async fn spawn_hub() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    s.admin_token = Some(ADMIN.to_string().into());
    spawn_with(dir, s, Arc::new(hub::clock::SystemClock), true).await
}

/// `(channel, purpose) → granted` of a consents body (`{"consents": [...]}`).
fn states(body: &Value) -> Vec<(String, String, bool)> {
    body["consents"]
        .as_array()
        .expect("consents")
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap_or_default().to_string(),
                c["purpose"].as_str().unwrap_or_default().to_string(),
                c["granted"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

fn granted(body: &Value, channel: &str, purpose: &str) -> bool {
    states(body)
        .iter()
        .any(|(c, p, g)| c == channel && p == purpose && *g)
}

fn token(body: &Value) -> String {
    body["session_token"].as_str().expect("token").to_string()
}

fn customer(body: &Value) -> CustomerId {
    body["customer"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("a customer id")
}

#[actix_web::test]
async fn nothing_is_granted_unless_chosen_and_every_change_is_kept() {
    let hub = spawn_hub().await;
    let c = client();
    let quiet = hub.register(&c, "quiet@example.com").await;
    let mine: Value = c
        .get(hub.url("/api/v1/customers/me/consents"))
        .bearer_auth(token(&quiet))
        .json_body()
        .await;
    assert_eq!(states(&mine).len(), 4, "{mine}");
    assert!(states(&mine).iter().all(|(_, _, g)| !g), "{mine}");
    assert_eq!(mine["history"], json!([]));

    let keen = hub
        .register_with(
            &c,
            "keen@example.com",
            json!([
                {"channel": "email", "purpose": "marketing", "granted": true},
                {"channel": "board", "purpose": "personalization", "granted": false},
            ]),
        )
        .await;
    let keen_token = token(&keen);
    let now: Value = c
        .get(hub.url("/api/v1/customers/me/consents"))
        .bearer_auth(&keen_token)
        .json_body()
        .await;
    assert!(granted(&now, "email", "marketing"));
    assert!(!granted(&now, "board", "personalization"));
    assert_eq!(now["history"].as_array().map(Vec::len), Some(2));
    assert_eq!(now["history"][0]["source"], "registration");

    // The customer changes their mind through the API; a repeat records nothing.
    let body = json!({"consents": [
        {"channel": "email", "purpose": "marketing", "granted": false},
        {"channel": "board", "purpose": "personalization", "granted": true},
    ]});
    let changed: Value = c
        .put(hub.url("/api/v1/customers/me/consents"))
        .bearer_auth(&keen_token)
        .json(&body)
        .json_body()
        .await;
    assert!(!granted(&changed, "email", "marketing"));
    assert!(granted(&changed, "board", "personalization"));
    let again: Value = c
        .put(hub.url("/api/v1/customers/me/consents"))
        .bearer_auth(&keen_token)
        .json(&body)
        .json_body()
        .await;
    assert_eq!(again["history"].as_array().map(Vec::len), Some(4));
    assert_eq!(again["history"][3]["source"], "api");

    // Each change is a consent_changed event on the customer's timeline.
    hub.handle
        .recorder
        .send(hub::actors::recorder::Drain)
        .await
        .expect("drained");
    let events: Value = c
        .get(hub.url("/api/v1/customers/me/events"))
        .bearer_auth(&keen_token)
        .json_body()
        .await;
    let consent_events: Vec<&Value> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["kind"] == "consent_changed")
        .collect();
    assert_eq!(consent_events.len(), 4, "{events}");
    assert!(consent_events.iter().any(|e| e["payload"]
        == json!({"channel": "board", "purpose": "personalization", "granted": "true", "source": "api"})));
}

#[actix_web::test]
async fn bad_choices_are_422_and_the_consents_are_the_customers_own() {
    let hub = spawn_hub().await;
    let c = client();
    let ada = hub.register(&c, "ada@example.com").await;
    let table = [
        (
            json!({"consents": [{"channel": "sms", "purpose": "marketing", "granted": true}]}),
            "consents[0].channel",
        ),
        (
            json!({"consents": [{"channel": "email", "purpose": "spam", "granted": true}]}),
            "consents[0].purpose",
        ),
        (
            json!({"consents": [
                {"channel": "email", "purpose": "marketing", "granted": true},
                {"channel": "email", "purpose": "marketing", "granted": false},
            ]}),
            "chosen twice",
        ),
    ];
    for (body, hint) in table {
        let res = c
            .put(hub.url("/api/v1/customers/me/consents"))
            .bearer_auth(token(&ada))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let err: Value = res.json().await.expect("json");
        assert_eq!(err["error"]["code"], "invalid_consents");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(hint), "{message}");
    }
    // A bad choice at registration is refused before the account exists.
    let res = c
        .post(hub.url("/api/v1/customers"))
        .json(
            &json!({"email": "bea@example.com", "name": "Bea", "password": "correct horse battery",
                      "consents": [{"channel": "fax", "purpose": "marketing", "granted": true}]}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Signed out: 401, for reading and for changing.
    let res = c
        .get(hub.url("/api/v1/customers/me/consents"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = c
        .put(hub.url("/api/v1/customers/me/consents"))
        .json(&json!({"consents": []}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn the_profile_the_download_and_the_unsubscribe_link_show_and_change_consents() {
    let hub = spawn_hub().await;
    let c = client();
    let eve = hub.register_consenting(&c, "eve@example.com").await;
    let id = customer(&eve);
    let secret = hub.handle.storage.link_secret().await.expect("secret");
    let res = c
        .post(hub.url(&format!(
            "/unsubscribe?customer={id}&token={}",
            hub::unsubscribe::token(&secret, id)
        )))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let profile: Value = c
        .get(hub.url(&format!("/api/v1/admin/customers/{id}/profile")))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    let history = profile["customer"]["consent_history"]
        .as_array()
        .expect("history");
    let sources: Vec<(&str, bool)> = history
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap_or_default(),
                r["granted"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        vec![("registration", true), ("unsubscribe", false)]
    );
    assert!(!granted(&profile["customer"], "email", "marketing"));
    let data: Value = c
        .get(hub.url("/api/v1/customers/me/data"))
        .bearer_auth(token(&eve))
        .json_body()
        .await;
    assert_eq!(data["customer"]["consent_history"], json!(history));
}

/// A browser: cookies kept, redirects not followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    let end = html[start..].find('"').expect("closing quote");
    html[start..start + end].to_string()
}

async fn page(b: &reqwest::Client, url: String) -> String {
    let res = b.get(url).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.expect("html")
}

#[actix_web::test]
async fn the_storefronts_boxes_start_unticked_and_the_account_page_changes_them() {
    let hub = spawn_hub().await;
    let b = browser();
    let form = page(&b, hub.url("/register")).await;
    assert!(form.contains("name=\"marketing_email\">"), "unticked");
    let res = b
        .post(hub.url("/register"))
        .form(&[
            ("csrf", csrf_of(&form).as_str()),
            ("name", "Flo"),
            ("email", "flo@example.com"),
            ("password", "correct horse battery"),
            ("confirm", "correct horse battery"),
            ("board_personalization", "on"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let mine: Value = b
        .get(hub.url("/api/v1/customers/me/consents"))
        .json_body()
        .await;
    assert!(!granted(&mine, "email", "marketing"));
    assert!(granted(&mine, "board", "personalization"));

    let account = page(&b, hub.url("/account")).await;
    assert!(account.contains("data-consents"));
    assert!(account.contains("name=\"board_personalization\" checked"));
    let res = b
        .post(hub.url("/account/consents"))
        .form(&[
            ("csrf", csrf_of(&account).as_str()),
            ("marketing_email", "on"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let mine: Value = b
        .get(hub.url("/api/v1/customers/me/consents"))
        .json_body()
        .await;
    assert!(granted(&mine, "email", "marketing"));
    assert!(!granted(&mine, "board", "personalization"));
    let last = mine["history"].as_array().and_then(|h| h.last().cloned());
    assert_eq!(last.map(|r| r["source"].clone()), Some(json!("account")));
    // Without the page's CSRF token nothing changes.
    let res = b
        .post(hub.url("/account/consents"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_client_error(), "{}", res.status());
    let mine: Value = b
        .get(hub.url("/api/v1/customers/me/consents"))
        .json_body()
        .await;
    assert!(granted(&mine, "email", "marketing"));
}

/// An email for `to` in the outbox, not due before tomorrow (so no worker touches it).
fn mail_to(to: &str, key: &str) -> protocol::OutboxMessage {
    let now = time::OffsetDateTime::now_utc();
    let mut m = protocol::OutboxMessage::new(
        "email",
        "test",
        key.into(),
        json!({"to": to, "subject": "hello"}).to_string(),
        now,
    );
    m.next_attempt_at = Some(now + time::Duration::days(1));
    m
}

#[actix_web::test]
async fn an_interrupted_erasure_is_resumed_and_later_events_are_pseudonymised() {
    let hub = spawn_hub().await;
    let c = client();
    let gus = hub.register(&c, "gus@example.com").await;
    let id = customer(&gus);
    let other = hub.register(&c, "other@example.com").await;
    // Mail waiting for Gus (and for someone else), and a dead letter for Gus.
    let dead = mail_to("gus@example.com", "dead");
    hub.handle
        .storage
        .commit(
            UnitOfWork::new()
                .with_message(mail_to("gus@example.com", "pending"))
                .with_message(mail_to("other@example.com", "other"))
                .with_message(dead.clone()),
        )
        .await
        .expect("queued");
    hub.handle
        .storage
        .commit(UnitOfWork::new().with(Change::DeadLetter(dead)))
        .await
        .expect("dead-lettered");

    // The state a crash right after the job was recorded leaves: the job, and the mark.
    let pseudonym = protocol::AnonymousId::new();
    let job = protocol::privacy::ErasureJob {
        customer: id,
        pseudonym,
        linked: Vec::new(),
        requested_at: time::OffsetDateTime::now_utc(),
        done: vec![protocol::privacy::ErasureStep::Profile],
    };
    let jobs = hub.handle.keyspace.open_tree("privacy").expect("tree");
    jobs.insert(id.to_bytes(), protocol::encode(&job).expect("encodes"))
        .expect("stored");
    hub.handle
        .storage
        .commit(UnitOfWork::new().with(Change::MarkErased {
            customer: id,
            pseudonym,
        }))
        .await
        .expect("marked");

    // An event of Gus arriving now is stored under the pseudonym, without personal keys.
    let late = Event::new(
        time::OffsetDateTime::now_utc(),
        Subject::Customer(id),
        Channel::Web,
        EventKind::Search,
    )
    .with("query", "gus's secret")
    .with("results", 3);
    let late_id = late.id;
    hub.handle
        .storage
        .append(vec![late].into())
        .await
        .expect("appended");
    let log = hub
        .handle
        .storage
        .read_sequenced(0, 100_000)
        .await
        .expect("log");
    let stored = log
        .iter()
        .find(|s| s.event.id == late_id)
        .expect("the late event");
    assert_eq!(stored.event.subject, Subject::Anonymous(pseudonym));
    assert_eq!(
        stored.event.payload.keys().collect::<Vec<_>>(),
        vec!["results"]
    );

    // What the next start runs.
    let resumed = hub::experience::privacy::resume(&hub.handle)
        .await
        .expect("resumed");
    assert_eq!(resumed, 1);
    let record = hub
        .handle
        .storage
        .customer(id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        record.email,
        protocol::privacy::placeholder_email(pseudonym),
        "the job's pseudonym, not a new one"
    );
    assert!(record.name.is_empty());
    assert!(jobs.iter().next().is_none(), "the finished job is gone");
    let pending = hub
        .handle
        .storage
        .pending("email", 1000)
        .await
        .expect("read");
    let keys: Vec<&str> = pending.iter().map(|m| m.key.as_str()).collect();
    assert!(!keys.contains(&"pending"), "{keys:?}");
    assert!(keys.contains(&"other"), "{keys:?}");
    assert!(hub
        .handle
        .storage
        .dead_letters("email", 1000)
        .await
        .expect("read")
        .iter()
        .all(|m| !m.payload.contains("gus@")));
    let log = hub
        .handle
        .storage
        .read_sequenced(0, 100_000)
        .await
        .expect("log");
    assert!(log.iter().all(|s| s.event.subject != Subject::Customer(id)));
    // Nothing left to resume; the other customer is untouched.
    assert_eq!(
        hub::experience::privacy::resume(&hub.handle)
            .await
            .expect("resumed"),
        0
    );
    let res = c
        .get(hub.url("/api/v1/customers/me"))
        .bearer_auth(token(&other))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
}
