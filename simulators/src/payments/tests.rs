//! The simulator end to end over HTTP, as a Stripe client library and a shopper's browser would
//! use it: form-encoded `/v1` calls, the hosted page, the `/_sim` test API, and a webhook
//! receiver on port 0 that checks every signature.
#![allow(clippy::unwrap_used)]

use super::{PaymentSim, PaymentsConfig};
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const KEY: &str = "sk_test_unit";
const WEBHOOK_SECRET: &str = "whsec_unit";
/// Form fields of one request.
type Form<'a> = &'a [(&'a str, &'a str)];

/// How long a test waits for anything (a webhook, a state) before failing.
const DEADLINE: Duration = Duration::from_secs(10);

struct Harness {
    sim: PaymentSim,
    http: reqwest::Client,
    base: String,
}

impl Harness {
    /// A simulator with the default webhook concurrency.
    async fn start() -> Harness {
        Harness::start_with(PaymentsConfig::default().webhook_concurrency).await
    }

    /// A simulator with `webhook_concurrency` deliveries in flight per endpoint.
    async fn start_with(webhook_concurrency: usize) -> Harness {
        let config = PaymentsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret_key: KEY.into(),
            webhook_secret: WEBHOOK_SECRET.into(),
            merchant_name: "Test Shop".into(),
            webhook_concurrency,
            ..PaymentsConfig::default()
        };
        let sim = PaymentSim::start(config).await.unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(DEADLINE)
            .build()
            .unwrap();
        let base = sim.base_url();
        Harness { sim, http, base }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value, HeaderMap) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let request = self.http.post(self.url(path)).bearer_auth(KEY).form(form);
        let (status, body, _) = self.send(request).await;
        (status, body)
    }

    async fn post_keyed(
        &self,
        path: &str,
        form: &[(&str, &str)],
        key: &str,
    ) -> (u16, Value, HeaderMap) {
        let request = self
            .http
            .post(self.url(path))
            .bearer_auth(KEY)
            .header("idempotency-key", key)
            .form(form);
        self.send(request).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body, _) = self
            .send(self.http.get(self.url(path)).bearer_auth(KEY))
            .await;
        (status, body)
    }

    async fn sim(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let (status, body, _) = self
            .send(self.http.request(method, self.url(path)).json(&body))
            .await;
        (status, body)
    }

    async fn faults(&self, faults: Value) {
        let (status, _) = self
            .sim(reqwest::Method::POST, "/_sim/faults", faults)
            .await;
        assert_eq!(status, 200);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A session for 2 × €12.50 + €4.99 with the given extra parameters.
    async fn session(&self, extra: &[(&str, &str)]) -> Value {
        let mut form = vec![
            ("mode", "payment"),
            (
                "success_url",
                "https://shop.test/ok?session={CHECKOUT_SESSION_ID}",
            ),
            ("cancel_url", "https://shop.test/basket"),
            ("line_items[0][price_data][currency]", "eur"),
            ("line_items[0][price_data][unit_amount]", "1250"),
            ("line_items[0][price_data][product_data][name]", "Blue mug"),
            ("line_items[0][quantity]", "2"),
            ("line_items[1][price_data][currency]", "eur"),
            ("line_items[1][price_data][unit_amount]", "499"),
            ("line_items[1][price_data][product_data][name]", "Green tea"),
            ("line_items[1][quantity]", "1"),
        ];
        form.extend_from_slice(extra);
        let (status, session) = self.post("/v1/checkout/sessions", &form).await;
        assert_eq!(status, 200, "{session}");
        session
    }

    /// Submits the hosted page's card form.
    async fn hosted_pay(&self, id: &str, card: &str) -> reqwest::Response {
        let form = [
            ("card_number", card),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
            ("cardholder_name", "Ada Lovelace"),
        ];
        self.http
            .post(self.url(&format!("/pay/{id}")))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    async fn sim_pay(&self, id: &str, body: Value) -> (u16, Value) {
        self.sim(
            reqwest::Method::POST,
            &format!("/_sim/checkout/sessions/{id}/pay"),
            body,
        )
        .await
    }

    async fn audit(&self) -> Value {
        self.sim(reqwest::Method::GET, "/_sim/audit", Value::Null)
            .await
            .1
    }

    /// The first logged delivery that passes `done`, waiting for it (the log is written once
    /// the receiver's answer is read, a moment after the receiver has seen the event).
    async fn delivery(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (_, log) = self
                .sim(reqwest::Method::GET, "/_sim/deliveries", Value::Null)
                .await;
            if let Some(found) = log["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| done(d))
            {
                return found.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such delivery in {log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens and expires `count` sessions, one after the other, each raising
    /// `checkout.session.expired`; returns their ids.
    async fn expire_sessions(&self, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let session = self.session(&[]).await;
            let (status, _) = self
                .post(
                    &format!("/v1/checkout/sessions/{}/expire", id(&session)),
                    &[],
                )
                .await;
            assert_eq!(status, 200);
            ids.push(id(&session));
        }
        ids
    }

    /// Registers a webhook endpoint for all events, as a hub would.
    async fn register(&self, receiver: &Receiver) -> Value {
        let url = receiver.url();
        let (status, endpoint) = self
            .post(
                "/v1/webhook_endpoints",
                &[("url", &url), ("enabled_events[]", "*")],
            )
            .await;
        assert_eq!(status, 200, "{endpoint}");
        endpoint
    }
}

fn id(object: &Value) -> String {
    object["id"].as_str().unwrap().to_owned()
}

/// The id of the object an event is about.
fn object_id(event: &Value) -> String {
    id(&event["data"]["object"])
}

/// A webhook endpoint on port 0: answers the first `failures` requests 500, the rest 200 (each
/// after `slow`), serving connections concurrently, and hands every (verified) event over a
/// channel with when its request arrived.
struct Receiver {
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<(Instant, Value)>,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        Receiver::start_slow(failures, Duration::ZERO).await
    }

    async fn start_slow(failures: usize, slow: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, events) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sender, seen) = (sender.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let mut signature = String::new();
                    let mut length = 0;
                    let mut arrived = None;
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        arrived.get_or_insert_with(Instant::now);
                        let lower = line.to_ascii_lowercase();
                        if let Some(value) = lower.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("stripe-signature:") {
                            signature = line["stripe-signature:".len()..].trim().to_owned();
                        }
                    }
                    let Some(arrived) = arrived else {
                        return;
                    };
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    let failed = seen.fetch_add(1, AtomicOrdering::SeqCst) < failures;
                    tokio::time::sleep(slow).await;
                    let status = if failed {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
                    if !failed {
                        let body = String::from_utf8(body).unwrap();
                        assert!(
                            verify(&body, &signature),
                            "bad signature {signature} for {body}"
                        );
                        let _ = sender.send((arrived, serde_json::from_str(&body).unwrap()));
                    }
                });
            }
        });
        Receiver { addr, events }
    }

    fn url(&self) -> String {
        format!("http://{}/webhooks/stripe", self.addr)
    }

    async fn next(&mut self) -> Value {
        self.next_timed().await.1
    }

    /// The next event with when its request arrived.
    async fn next_timed(&mut self) -> (Instant, Value) {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("a webhook in time")
            .unwrap()
    }

    /// The next event of `kind`, skipping others.
    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let event = self.next().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// Whether nothing more arrives within a short wait (for dropped deliveries).
    async fn quiet(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(300), self.events.recv())
            .await
            .is_err()
    }
}

/// Verifies a `Stripe-Signature` header as Stripe's libraries do: any `v1` entry matching the
/// HMAC of `"{t}.{body}"`, and `t` within five minutes.
fn verify(body: &str, header: &str) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    (now - timestamp).abs() < 300 && signatures.contains(&expected)
}

#[tokio::test]
async fn sessions_are_created_retrieved_and_expired() {
    let h = Harness::start().await;
    let session = h
        .session(&[
            ("client_reference_id", "order-1"),
            ("metadata[checkout_id]", "chk-1"),
        ])
        .await;
    assert_eq!(session["object"], "checkout.session");
    assert!(id(&session).starts_with("cs_test_"));
    assert_eq!(session["amount_total"], 2 * 1250 + 499);
    assert_eq!(session["currency"], "eur");
    assert_eq!(
        (&session["status"], &session["payment_status"]),
        (&json!("open"), &json!("unpaid"))
    );
    assert_eq!(session["url"], format!("{}/pay/{}", h.base, id(&session)));
    assert_eq!(session["metadata"], json!({"checkout_id": "chk-1"}));
    assert_eq!(session["client_reference_id"], "order-1");

    let (status, fetched) = h
        .get(&format!("/v1/checkout/sessions/{}", id(&session)))
        .await;
    assert_eq!((status, &fetched), (200, &session));
    let (status, items) = h
        .get(&format!(
            "/v1/checkout/sessions/{}/line_items",
            id(&session)
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(items["data"][0]["amount_total"], 2500);

    let path = format!("/v1/checkout/sessions/{}/expire", id(&session));
    let (status, expired) = h.post(&path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&expired["status"], &expired["url"]),
        (&json!("expired"), &Value::Null)
    );
    let (status, again) = h.post(&path, &[]).await;
    assert_eq!(
        (status, &again["error"]["type"]),
        (400, &json!("invalid_request_error"))
    );

    let (status, missing) = h.get("/v1/checkout/sessions/cs_test_nope").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "resource_missing");
    assert_eq!(missing["error"]["param"], "session");
    h.sim.stop().await;
}

#[tokio::test]
async fn session_parameters_are_validated_as_stripe_does() {
    let h = Harness::start().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let soon = (now + 10 * 60).to_string();
    let late = (now + 25 * 3600).to_string();
    let fine = (now + 3600).to_string();
    for at in [&soon, &late] {
        let form = [
            ("mode", "payment"),
            ("success_url", "https://shop.test/ok"),
            ("expires_at", at.as_str()),
            ("line_items[0][price_data][currency]", "eur"),
            ("line_items[0][price_data][unit_amount]", "100"),
            ("line_items[0][price_data][product_data][name]", "Mug"),
            ("line_items[0][quantity]", "1"),
        ];
        let (status, error) = h.post("/v1/checkout/sessions", &form).await;
        assert_eq!(
            (status, &error["error"]["param"]),
            (400, &json!("expires_at")),
            "{error}"
        );
    }
    let session = h.session(&[("expires_at", &fine)]).await;
    assert_eq!(session["expires_at"].as_str().map(str::to_owned), None);
    assert_eq!(session["expires_at"], json!(now + 3600));

    let cases: &[(Form, &str, &str)] = &[
        (
            &[("mode", "payment"), ("success_url", "https://s.test/")],
            "parameter_missing",
            "line_items",
        ),
        (
            &[("success_url", "https://s.test/")],
            "parameter_missing",
            "mode",
        ),
        (
            &[("mode", "subscription"), ("success_url", "https://s.test/")],
            "parameter_invalid",
            "mode",
        ),
        (
            &[
                ("mode", "payment"),
                ("success_url", "https://s.test/"),
                ("line_items[0][price_data][currency]", "eur"),
                ("line_items[0][price_data][unit_amount]", "12.5"),
                ("line_items[0][price_data][product_data][name]", "Mug"),
                ("line_items[0][quantity]", "1"),
            ],
            "parameter_invalid_integer",
            "line_items[0][price_data][unit_amount]",
        ),
        (
            &[("mode", "payment"), ("colour", "red")],
            "parameter_unknown",
            "colour",
        ),
    ];
    for (form, code, param) in cases {
        let (status, error) = h.post("/v1/checkout/sessions", form).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(
            (&error["error"]["code"], &error["error"]["param"]),
            (&json!(code), &json!(param))
        );
    }
    h.sim.stop().await;
}

#[tokio::test]
async fn the_hosted_page_shows_the_order_and_pays_with_4242() {
    let h = Harness::start().await;
    let session = h.session(&[]).await;
    let page = h
        .http
        .get(session["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for text in [
        "€29.99",
        "Test Shop",
        "Blue mug",
        "Green tea",
        "Pay €29.99",
        "Back to Test Shop",
    ] {
        assert!(html.contains(text), "the page lacks {text}");
    }

    let response = h.hosted_pay(&id(&session), "4242 4242 4242 4242").await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("https://shop.test/ok?session={}", id(&session))
    );

    let (_, paid) = h
        .get(&format!(
            "/v1/checkout/sessions/{}?expand[]=payment_intent",
            id(&session)
        ))
        .await;
    assert_eq!(
        (&paid["status"], &paid["payment_status"]),
        (&json!("complete"), &json!("paid"))
    );
    assert_eq!(paid["payment_intent"]["status"], "succeeded");
    assert_eq!(paid["payment_intent"]["amount_received"], 2999);
    h.sim.stop().await;
}

#[tokio::test]
async fn a_declined_card_leaves_the_page_open_for_another_try() {
    let h = Harness::start().await;
    let session = h.session(&[]).await;
    let sid = id(&session);
    for (card, message) in [
        ("4000 0000 0000 0002", "Your card was declined."),
        ("4000 0000 0000 9995", "Your card has insufficient funds."),
        ("4242 4242 4242 4241", "Your card number is invalid."),
        ("4000 0000 0000 0010", "Your card was declined."),
    ] {
        let response = h.hosted_pay(&sid, card).await;
        assert!(response.status().is_client_error(), "{card}");
        assert!(response.text().await.unwrap().contains(message), "{card}");
    }
    let (_, open) = h
        .get(&format!(
            "/v1/checkout/sessions/{sid}?expand[]=payment_intent"
        ))
        .await;
    assert_eq!(open["status"], "open");
    let intent = &open["payment_intent"];
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(
        intent["last_payment_error"]["decline_code"],
        "generic_decline"
    );

    assert_eq!(
        h.hosted_pay(&sid, "5555 5555 5555 4444").await.status(),
        303
    );
    let (_, paid) = h.get(&format!("/v1/payment_intents/{}", id(intent))).await;
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["last_payment_error"], Value::Null);
    h.sim.stop().await;
}

#[tokio::test]
async fn three_d_secure_can_be_completed_or_failed() {
    let h = Harness::start().await;
    let session = h.session(&[]).await;
    let sid = id(&session);
    let page = h.hosted_pay(&sid, "4000 0025 0000 3155").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Confirm your payment"));
    let authenticate = |action: &'static str| {
        h.http
            .post(h.url(&format!("/pay/{sid}/authenticate")))
            .form(&[("action", action)])
            .send()
    };
    let failed = authenticate("fail").await.unwrap();
    assert_eq!(failed.status(), 400);
    assert!(failed
        .text()
        .await
        .unwrap()
        .contains("unable to authenticate"));
    let (_, open) = h.get(&format!("/v1/checkout/sessions/{sid}")).await;
    assert_eq!(open["status"], "open");

    assert_eq!(
        h.hosted_pay(&sid, "4000 0025 0000 3155").await.status(),
        200
    );
    let done = authenticate("complete").await.unwrap();
    assert_eq!(done.status(), 303);

    // The same through the test API.
    let other = id(&h.session(&[]).await);
    let (status, error) = h
        .sim_pay(
            &other,
            json!({"card": "4000002500003155", "three_d_secure": "fail"}),
        )
        .await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (400, &json!("payment_intent_authentication_failure"))
    );
    let (status, paid) = h.sim_pay(&other, json!({"card": "4000002500003155"})).await;
    assert_eq!((status, &paid["status"]), (200, &json!("complete")));
    h.sim.stop().await;
}

#[tokio::test]
async fn paying_twice_charges_once_and_the_audit_sees_double_charges() {
    let h = Harness::start().await;
    let session = h.session(&[("client_reference_id", "order-7")]).await;
    let sid = id(&session);
    let (status, paid) = h.sim_pay(&sid, json!({"card": "4242424242424242"})).await;
    assert_eq!((status, &paid["payment_status"]), (200, &json!("paid")));
    let (status, again) = h.sim_pay(&sid, json!({"card": "4242424242424242"})).await;
    assert_eq!(
        (status, &again["payment_intent"]),
        (200, &paid["payment_intent"])
    );
    let page = h.hosted_pay(&sid, "4242 4242 4242 4242").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("already paid"));
    let audit = h.audit().await;
    assert_eq!(
        (&audit["sessions_paid"], &audit["charges_succeeded"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(audit["amount_captured"], 2999);
    assert_eq!(audit["double_charges"], 0);

    // A second session for the same order, paid too, is a double charge.
    let twin = h.session(&[("client_reference_id", "order-7")]).await;
    h.sim_pay(&id(&twin), json!({"card": "4242424242424242"}))
        .await;
    let audit = h.audit().await;
    assert_eq!(audit["double_charges"], 1);
    assert_eq!(
        audit["double_charged"][0]["reference"],
        "client_reference_id:order-7"
    );
    h.sim.stop().await;
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_other_parameters() {
    let h = Harness::start().await;
    let form = [
        ("amount", "1500"),
        ("currency", "eur"),
        ("metadata[order]", "o-1"),
    ];
    let (status, first, _) = h.post_keyed("/v1/payment_intents", &form, "key-1").await;
    assert_eq!(status, 200);
    let (status, replay, headers) = h.post_keyed("/v1/payment_intents", &form, "key-1").await;
    assert_eq!((status, &replay), (200, &first));
    assert_eq!(headers["idempotent-replayed"], "true");
    let (_, list) = h.get("/v1/payment_intents").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    let other = [
        ("amount", "1600"),
        ("currency", "eur"),
        ("metadata[order]", "o-1"),
    ];
    let (status, error, _) = h.post_keyed("/v1/payment_intents", &other, "key-1").await;
    assert_eq!(
        (status, &error["error"]["type"]),
        (400, &json!("idempotency_error"))
    );

    // A decline is stored and replayed too.
    let declined = [
        ("amount", "900"),
        ("currency", "eur"),
        ("payment_method", "pm_card_chargeDeclined"),
        ("confirm", "true"),
    ];
    let (status, first, _) = h
        .post_keyed("/v1/payment_intents", &declined, "key-2")
        .await;
    assert_eq!(status, 402);
    let (status, replay, _) = h
        .post_keyed("/v1/payment_intents", &declined, "key-2")
        .await;
    assert_eq!((status, replay), (402, first));
    h.sim.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_refused() {
    let h = Harness::start().await;
    let url = h.url("/v1/payment_intents");
    let (status, error, _) = h.send(h.http.get(&url)).await;
    assert_eq!(
        (status, &error["error"]["type"]),
        (401, &json!("invalid_request_error"))
    );
    let (status, _, _) = h.send(h.http.get(&url).bearer_auth("sk_test_other")).await;
    assert_eq!(status, 401);
    let (status, _, _) = h.send(h.http.get(&url).basic_auth(KEY, None::<&str>)).await;
    assert_eq!(status, 200);
    let (status, error, _) = h
        .send(h.http.get(h.url("/v1/nothing")).bearer_auth(KEY))
        .await;
    assert_eq!(status, 404);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Unrecognized request URL"));
    h.sim.stop().await;
}

#[tokio::test]
async fn payment_intents_confirm_capture_cancel_and_decline() {
    let h = Harness::start().await;
    let (status, auto) = h
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "EUR"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{auto}");
    assert_eq!(
        (&auto["status"], &auto["amount_received"], &auto["currency"]),
        (&json!("succeeded"), &json!(2000), &json!("eur"))
    );
    assert!(auto["latest_charge"].as_str().unwrap().starts_with("ch_"));

    let (_, manual) = h
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "3000"),
                ("currency", "eur"),
                ("capture_method", "manual"),
            ],
        )
        .await;
    assert_eq!(manual["status"], "requires_payment_method");
    let pi = id(&manual);
    let (_, confirmed) = h
        .post(
            &format!("/v1/payment_intents/{pi}/confirm"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(
        (&confirmed["status"], &confirmed["amount_capturable"]),
        (&json!("requires_capture"), &json!(3000))
    );
    let (_, captured) = h
        .post(&format!("/v1/payment_intents/{pi}/capture"), &[])
        .await;
    assert_eq!(
        (&captured["status"], &captured["amount_received"]),
        (&json!("succeeded"), &json!(3000))
    );
    let (status, error) = h
        .post(&format!("/v1/payment_intents/{pi}/capture"), &[])
        .await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (400, &json!("payment_intent_unexpected_state"))
    );

    let (_, held) = h
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "500"),
                ("currency", "eur"),
                ("capture_method", "manual"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
        )
        .await;
    let (_, canceled) = h
        .post(&format!("/v1/payment_intents/{}/cancel", id(&held)), &[])
        .await;
    assert_eq!(canceled["status"], "canceled");
    let (status, _) = h
        .post(&format!("/v1/payment_intents/{}/cancel", id(&held)), &[])
        .await;
    assert_eq!(status, 400);

    for (method, decline) in [
        ("pm_card_chargeDeclined", "generic_decline"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
        ),
    ] {
        let (status, error) = h
            .post(
                "/v1/payment_intents",
                &[
                    ("amount", "700"),
                    ("currency", "eur"),
                    ("payment_method", method),
                    ("confirm", "true"),
                ],
            )
            .await;
        assert_eq!(status, 402);
        let error = &error["error"];
        assert_eq!(
            (&error["type"], &error["code"], &error["decline_code"]),
            (
                &json!("card_error"),
                &json!("card_declined"),
                &json!(decline)
            )
        );
        assert_eq!(error["payment_intent"]["status"], "requires_payment_method");
    }
    let (status, error) = h
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "700"),
                ("currency", "eur"),
                ("payment_method", "pm_nope"),
            ],
        )
        .await;
    assert_eq!(
        (status, &error["error"]["param"]),
        (404, &json!("payment_method"))
    );
    let audit = h.audit().await;
    assert_eq!(audit["amount_captured"], 5000);
    h.sim.stop().await;
}

#[tokio::test]
async fn refunds_may_be_partial_or_full_but_not_more() {
    let h = Harness::start().await;
    let (_, intent) = h
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "eur"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
        )
        .await;
    let pi = id(&intent);
    let (status, partial) = h
        .post("/v1/refunds", &[("payment_intent", &pi), ("amount", "500")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&partial["object"], &partial["amount"], &partial["status"]),
        (&json!("refund"), &json!(500), &json!("succeeded"))
    );
    let (status, error) = h
        .post(
            "/v1/refunds",
            &[("payment_intent", &pi), ("amount", "1501")],
        )
        .await;
    assert_eq!((status, &error["error"]["param"]), (400, &json!("amount")));
    let charge = intent["latest_charge"].as_str().unwrap();
    let (_, rest) = h.post("/v1/refunds", &[("charge", charge)]).await;
    assert_eq!(rest["amount"], 1500);
    let (status, error) = h.post("/v1/refunds", &[("payment_intent", &pi)]).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (400, &json!("charge_already_refunded"))
    );
    let (_, charge) = h.get(&format!("/v1/charges/{charge}")).await;
    assert_eq!(
        (&charge["refunded"], &charge["amount_refunded"]),
        (&json!(true), &json!(2000))
    );
    let (_, refunds) = h.get(&format!("/v1/refunds?payment_intent={pi}")).await;
    assert_eq!(refunds["data"].as_array().unwrap().len(), 2);
    h.sim.stop().await;
}

#[tokio::test]
async fn webhooks_are_signed_ordered_and_carry_the_objects() {
    // One delivery at a time keeps the order the events were raised in.
    let h = Harness::start_with(1).await;
    let mut receiver = Receiver::start(0).await;
    let endpoint = h.register(&receiver).await;
    assert_eq!(endpoint["secret"], WEBHOOK_SECRET);
    let session = h.session(&[("metadata[checkout_id]", "chk-9")]).await;
    h.hosted_pay(&id(&session), "4000 0000 0000 0002").await;
    let failed = receiver.next().await;
    assert_eq!(failed["type"], "payment_intent.payment_failed");
    assert_eq!(
        failed["data"]["object"]["last_payment_error"]["code"],
        "card_declined"
    );

    h.hosted_pay(&id(&session), "4242 4242 4242 4242").await;
    let completed = receiver.next().await;
    assert_eq!(completed["type"], "checkout.session.completed");
    assert_eq!(
        (&completed["object"], &completed["livemode"]),
        (&json!("event"), &json!(false))
    );
    assert_eq!(completed["data"]["object"]["id"], json!(id(&session)));
    assert_eq!(
        completed["data"]["object"]["metadata"]["checkout_id"],
        "chk-9"
    );
    assert_eq!(receiver.next().await["type"], "payment_intent.succeeded");

    let intent = completed["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();
    h.post(
        "/v1/refunds",
        &[("payment_intent", &intent), ("amount", "100")],
    )
    .await;
    let refunded = receiver.next().await;
    assert_eq!(refunded["type"], "charge.refunded");
    assert_eq!(refunded["data"]["object"]["amount_refunded"], 100);

    let other = h.session(&[]).await;
    h.post(&format!("/v1/checkout/sessions/{}/expire", id(&other)), &[])
        .await;
    assert_eq!(receiver.next().await["type"], "checkout.session.expired");

    let (status, event) = h.get(&format!("/v1/events/{}", id(&completed))).await;
    assert_eq!((status, &event), (200, &completed));
    let first = h.delivery(|d| d["event_id"] == completed["id"]).await;
    assert_eq!(
        (&first["status"], &first["attempts"]),
        (&json!("delivered"), &json!(1))
    );
    h.sim.stop().await;
}

#[tokio::test]
async fn webhook_faults_duplicate_drop_and_retry() {
    let h = Harness::start().await;
    let mut receiver = Receiver::start(1).await;
    h.register(&receiver).await;

    // The receiver fails the first request: the delivery is retried.
    let session = h.session(&[]).await;
    h.post(
        &format!("/v1/checkout/sessions/{}/expire", id(&session)),
        &[],
    )
    .await;
    let expired = receiver.next().await;
    assert_eq!(expired["type"], "checkout.session.expired");
    let first = h.delivery(|d| d["status"] == "delivered").await;
    assert_eq!(first["attempts"], 2);

    h.faults(json!({"webhooks": {"duplicate": 3}})).await;
    let session = h.session(&[]).await;
    h.post(
        &format!("/v1/checkout/sessions/{}/expire", id(&session)),
        &[],
    )
    .await;
    let copies = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    assert!(copies
        .iter()
        .all(|c| c["id"] == copies[0]["id"] && c["data"]["object"]["id"] == json!(id(&session))));

    h.faults(json!({"webhooks": {"duplicate": 1, "drop_next": 1}}))
        .await;
    let dropped = h.session(&[]).await;
    h.post(
        &format!("/v1/checkout/sessions/{}/expire", id(&dropped)),
        &[],
    )
    .await;
    let kept = h.session(&[]).await;
    h.post(&format!("/v1/checkout/sessions/{}/expire", id(&kept)), &[])
        .await;
    assert_eq!(
        receiver.next().await["data"]["object"]["id"],
        json!(id(&kept))
    );
    assert!(receiver.quiet().await);
    h.delivery(|d| d["status"] == "dropped").await;

    // Paused: held back, then all sent once released (in no promised order, as concurrent).
    h.faults(json!({"webhooks": {"pause": true}})).await;
    let ids = h.expire_sessions(3).await;
    assert!(receiver.quiet().await);
    h.faults(json!({"webhooks": {"pause": false}})).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(object_id(&receiver.next().await));
    }
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    h.sim.stop().await;
}

#[tokio::test]
async fn one_at_a_time_paused_webhooks_come_newest_first_and_retries_do_not_block() {
    let h = Harness::start_with(1).await;
    let mut receiver = Receiver::start(1).await;
    h.register(&receiver).await;

    // The first delivery fails; the next one goes out while it waits for its retry.
    let ids = h.expire_sessions(2).await;
    assert_eq!(object_id(&receiver.next().await), ids[1]);
    assert_eq!(object_id(&receiver.next().await), ids[0]);

    // Paused, then released newest-first.
    h.faults(json!({"webhooks": {"pause": true}})).await;
    let mut ids = h.expire_sessions(3).await;
    assert!(receiver.quiet().await);
    h.faults(json!({"webhooks": {"pause": false, "reorder": true}}))
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(object_id(&receiver.next().await));
    }
    ids.reverse();
    assert_eq!(got, ids);
    h.sim.stop().await;
}

/// Raises `count` events whose delivery takes 200 ms each at the receiver, held back until all
/// are queued; returns their sessions' ids in the order raised and when each request arrived, in
/// the order they arrived.
async fn slow_deliveries(
    concurrency: usize,
    count: usize,
) -> (Vec<String>, Vec<(Instant, String)>) {
    let h = Harness::start_with(concurrency).await;
    let mut receiver = Receiver::start_slow(0, Duration::from_millis(200)).await;
    h.register(&receiver).await;
    h.faults(json!({"webhooks": {"pause": true}})).await;
    let ids = h.expire_sessions(count).await;
    h.faults(json!({"webhooks": {"pause": false}})).await;
    let mut arrivals = Vec::new();
    for _ in 0..count {
        let (at, event) = receiver.next_timed().await;
        arrivals.push((at, object_id(&event)));
    }
    arrivals.sort_by_key(|(at, _)| *at);
    h.sim.stop().await;
    (ids, arrivals)
}

#[tokio::test]
async fn concurrent_deliveries_are_not_serialized_by_a_slow_receiver() {
    let (ids, arrivals) = slow_deliveries(16, 10).await;
    let spread = arrivals[9].0 - arrivals[0].0;
    // One at a time, the last would arrive at least 9 × 200 ms after the first.
    assert!(
        spread < Duration::from_millis(400),
        "10 requests arrived over {spread:?}"
    );
    let mut got: Vec<String> = arrivals.into_iter().map(|(_, id)| id).collect();
    got.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn one_delivery_at_a_time_keeps_the_order() {
    let (ids, arrivals) = slow_deliveries(1, 5).await;
    for pair in arrivals.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= Duration::from_millis(190), "only {gap:?} apart");
    }
    let got: Vec<String> = arrivals.into_iter().map(|(_, id)| id).collect();
    assert_eq!(got, ids);
}

#[tokio::test]
async fn api_faults_fail_and_hold_v1_calls_only() {
    let h = Harness::start().await;
    h.faults(json!({"fail_next": 1})).await;
    let (status, error) = h.get("/v1/payment_intents").await;
    assert_eq!(
        (status, &error["error"]["type"]),
        (500, &json!("api_error"))
    );
    let (status, _) = h.get("/v1/payment_intents").await;
    assert_eq!(status, 200);

    h.faults(json!({"fail_next": 1})).await;
    let (status, _) = h
        .sim(reqwest::Method::GET, "/_sim/audit", Value::Null)
        .await;
    assert_eq!(status, 200, "faults spare /_sim");
    let (status, faults) = h
        .sim(reqwest::Method::GET, "/_sim/faults", Value::Null)
        .await;
    assert_eq!((status, &faults["fail_next"]), (200, &json!(1)));
    h.sim(reqwest::Method::DELETE, "/_sim/faults", Value::Null)
        .await;

    h.faults(json!({"timeout_next": 1})).await;
    let impatient = h
        .http
        .get(h.url("/v1/payment_intents"))
        .bearer_auth(KEY)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(impatient.is_err_and(|e| e.is_timeout()));
    let (status, _) = h.get("/v1/payment_intents").await;
    assert_eq!(status, 200);
    h.sim.stop().await;
}

#[tokio::test]
async fn sessions_expire_when_their_time_passes() {
    let h = Harness::start().await;
    let mut receiver = Receiver::start(0).await;
    h.register(&receiver).await;
    let session = h.session(&[]).await;
    let (status, _) = h
        .sim(
            reqwest::Method::POST,
            "/_sim/clock",
            json!({"advance_seconds": 25 * 3600}),
        )
        .await;
    assert_eq!(status, 200);
    let event = receiver.next_of("checkout.session.expired").await;
    assert_eq!(event["data"]["object"]["id"], json!(id(&session)));
    let page = h
        .http
        .get(h.url(&format!("/pay/{}", id(&session))))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("expired"));
    let (status, error) = h
        .sim_pay(&id(&session), json!({"card": "4242424242424242"}))
        .await;
    assert_eq!(status, 400, "{error}");
    h.sim.stop().await;
}

#[tokio::test]
async fn the_dashboard_shows_recent_objects_and_never_the_webhook_secret() {
    let h = Harness::start().await;
    let receiver = Receiver::start(0).await;
    h.register(&receiver).await;
    let paid = h
        .session(&[("client_reference_id", "<script>alert(1)</script>")])
        .await;
    let paid_id = id(&paid);
    let (status, _) = h
        .sim_pay(&paid_id, json!({"card": "4242424242424242"}))
        .await;
    assert_eq!(status, 200);
    let open_id = id(&h.session(&[]).await);
    h.delivery(|d| d["event_type"] == "checkout.session.completed" && d["status"] == "delivered")
        .await;
    h.faults(json!({"webhooks": {"pause": true}})).await;

    let response = h.http.get(h.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.unwrap();
    // minijinja's HTML escaping also escapes `/`.
    let escaped = |text: &str| text.replace('/', "&#x2f;");
    for text in [
        "Test Shop",
        "Test mode",
        "4242 4242 4242 4242",
        "pm_card_visa",
        &paid_id,
        &format!("href=\"/pay/{open_id}\""),
        "checkout.session.completed",
        &escaped(&receiver.url()),
        &escaped(&h.base),
        "webhooks.pause",
        "&lt;script&gt;alert(1)&lt;",
    ] {
        assert!(html.contains(text), "the dashboard lacks {text}");
    }
    assert!(!html.contains(&format!("href=\"/pay/{paid_id}\"")));
    assert!(!html.contains("<script>"));
    assert!(!html.contains(WEBHOOK_SECRET));
    assert!(!html.contains(KEY));
    h.sim.stop().await;
}
