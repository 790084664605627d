//! The OMS and logistics simulators end to end over HTTP, as the hub uses them: both started
//! in-process on port 0, the OMS pointed at the logistics simulator, and a webhook receiver on
//! port 0 for each that checks every `Omnihub-Signature`. Time moves only by `/_sim/advance`
//! (a step is a minute, so real time never moves an order on by itself during a test).
#![allow(clippy::unwrap_used)]

use super::{OmsConfig, OmsSim};
use crate::logistics::{LogisticsConfig, LogisticsSim};
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const OMS_KEY: &str = "oms_unit_key";
const OMS_SECRET: &str = "whsec_oms_unit";
const LOGISTICS_KEY: &str = "logistics_unit_key";
const LOGISTICS_SECRET: &str = "whsec_logistics_unit";
/// Seconds between lifecycle steps in these tests.
const STEP: u64 = 60;
/// How long a test waits for anything before failing.
const DEADLINE: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Collects webhook bodies, answering the first `failures` with 500, and checks signatures.
struct Receiver {
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Value>,
}

impl Receiver {
    async fn start(secret: &'static str, failures: usize) -> Receiver {
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, events) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sender, seen) = (sender.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let Some((signature, body)) = read_request(&mut stream).await else {
                            return;
                        };
                        let failed = seen.fetch_add(1, Ordering::SeqCst) < failures;
                        let status = if failed { "500 Oops" } else { "200 OK" };
                        let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                        stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
                        assert!(
                            verify(secret, &body, &signature),
                            "bad signature {signature} for {body}"
                        );
                        if !failed {
                            let _ = sender.send(serde_json::from_str(&body).unwrap());
                        }
                    }
                });
            }
        });
        Receiver { addr, events }
    }

    fn url(&self) -> String {
        format!("http://{}/webhooks", self.addr)
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("a webhook in time")
            .unwrap()
    }

    /// The next event whose `data.status` (tracking) or `type` (orders) is `what`.
    async fn next_of(&mut self, what: &str) -> Value {
        loop {
            let event = self.next().await;
            if event["type"] == what || event["data"]["status"] == what {
                return event;
            }
        }
    }

    /// Whether nothing more arrives within a short wait.
    async fn quiet(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(300), self.events.recv())
            .await
            .is_err()
    }
}

/// Reads one HTTP/1.1 request: its `Omnihub-Signature` and body; `None` at the end.
async fn read_request(stream: &mut BufReader<tokio::net::TcpStream>) -> Option<(String, String)> {
    let mut signature = String::new();
    let mut length = 0;
    let mut started = false;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            if started {
                break;
            }
            continue;
        }
        started = true;
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("omnihub-signature:") {
            signature = line["omnihub-signature:".len()..].trim().to_owned();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((signature, String::from_utf8(body).unwrap()))
}

/// Checks `t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, with `t` within five minutes.
fn verify(secret: &str, body: &str, header: &str) -> bool {
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
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    (now - timestamp).abs() < 300 && signatures.contains(&expected)
}

fn logistics_config(receiver: &Receiver, listen: SocketAddr) -> LogisticsConfig {
    LogisticsConfig {
        listen,
        api_key: LOGISTICS_KEY.into(),
        webhook_url: Some(receiver.url()),
        webhook_secret: LOGISTICS_SECRET.into(),
        step: Duration::from_secs(STEP),
        ..LogisticsConfig::default()
    }
}

fn oms_config(receiver: &Receiver, logistics_url: String) -> OmsConfig {
    OmsConfig {
        listen: any_port(),
        api_key: OMS_KEY.into(),
        webhook_url: Some(receiver.url()),
        webhook_secret: OMS_SECRET.into(),
        logistics_url,
        logistics_api_key: LOGISTICS_KEY.into(),
        step: Duration::from_secs(STEP),
        ..OmsConfig::default()
    }
}

struct Harness {
    oms: OmsSim,
    logistics: LogisticsSim,
    oms_hooks: Receiver,
    logistics_hooks: Receiver,
    http: reqwest::Client,
}

impl Harness {
    async fn start() -> Harness {
        let oms_hooks = Receiver::start(OMS_SECRET, 0).await;
        let logistics_hooks = Receiver::start(LOGISTICS_SECRET, 0).await;
        let logistics = LogisticsSim::start(logistics_config(&logistics_hooks, any_port()))
            .await
            .unwrap();
        let oms = OmsSim::start(oms_config(&oms_hooks, logistics.base_url()))
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(DEADLINE)
            .build()
            .unwrap();
        Harness {
            oms,
            logistics,
            oms_hooks,
            logistics_hooks,
            http,
        }
    }

    async fn stop(self) {
        self.oms.stop().await;
        self.logistics.stop().await;
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value, HeaderMap) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    async fn post_order(&self, order: &Value, message_id: &str) -> (u16, Value, HeaderMap) {
        let request = self
            .http
            .post(format!("{}/orders", self.oms.base_url()))
            .bearer_auth(OMS_KEY)
            .header("x-message-id", message_id)
            .json(order);
        self.send(request).await
    }

    async fn oms_call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.oms.base_url());
        let (status, body, _) = self
            .send(self.http.request(method, url).bearer_auth(OMS_KEY))
            .await;
        (status, body)
    }

    async fn sim(&self, base: &str, path: &str, body: Value) -> Value {
        let (status, body, _) = self
            .send(self.http.post(format!("{base}{path}")).json(&body))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn get(&self, url: String) -> (u16, Value) {
        let (status, body, _) = self.send(self.http.get(url)).await;
        (status, body)
    }

    /// Moves the OMS's clock on by `steps` lifecycle steps.
    async fn advance_oms(&self, steps: u64) {
        let base = self.oms.base_url();
        self.sim(&base, "/_sim/advance", json!({"seconds": steps * STEP}))
            .await;
    }

    async fn advance_logistics(&self, steps: u64) {
        let base = self.logistics.base_url();
        self.sim(&base, "/_sim/advance", json!({"seconds": steps * STEP}))
            .await;
    }

    async fn oms_faults(&self, faults: Value) {
        let base = self.oms.base_url();
        self.sim(&base, "/_sim/faults", faults).await;
    }

    async fn oms_stats(&self) -> Value {
        self.get(format!("{}/_sim/stats", self.oms.base_url()))
            .await
            .1
    }
}

/// An order as the hub sends it, with `lines` lines.
fn order(lines: usize) -> Value {
    let order_id = ulid::Ulid::new().to_string();
    json!({
        "order_id": order_id,
        "number": "W-000001",
        "channel": "web",
        "email": "ada@example.test",
        "lines": (0..lines).map(|i| json!({
            "sku": format!("SKU-{i}"),
            "name": format!("Item {i}"),
            "quantity": 2,
            "unit_price": {"minor": 1299, "currency": "EUR"},
        })).collect::<Vec<_>>(),
        "address": {
            "name": "Ada Lovelace", "line1": "Hauptstraße 1", "line2": "", "city": "Leipzig",
            "region": "SN", "postcode": "04109", "country": "DE", "phone": "+49 341 000000"
        },
        "shipping_method": "standard",
        "total": {"minor": 2598 * lines as i64 + 940, "currency": "EUR"},
    })
}

fn message_id() -> String {
    ulid::Ulid::new().to_string()
}

#[tokio::test]
async fn an_order_is_taken_once_and_followed_to_the_doorstep() {
    let mut h = Harness::start().await;
    let order = order(2);
    let order_id = order["order_id"].as_str().unwrap();

    let (status, first, headers) = h.post_order(&order, &message_id()).await;
    assert_eq!(status, 201, "{first}");
    assert!(first["oms_id"].as_str().unwrap().starts_with("oms_"));
    assert_eq!(first["order_id"], order_id);
    assert_eq!(first["status"], "received");
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, again, headers) = h.post_order(&order, &message_id()).await;
    assert_eq!(status, 200);
    assert_eq!(again, first, "a repeat replays the first body exactly");
    assert_eq!(headers["idempotent-replayed"], "true");
    let stats = h.oms_stats().await;
    assert_eq!(
        stats,
        json!({"orders": 1, "deliveries": 2, "duplicates": 1, "effects_applied_twice": 0,
               "distinct_message_ids": 2})
    );

    h.advance_oms(1).await;
    let allocated = h.oms_hooks.next().await;
    assert_eq!(allocated["type"], "order.allocated");
    assert!(allocated["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(allocated["data"]["oms_id"], first["oms_id"]);
    assert_eq!(allocated["data"]["number"], "W-000001");
    assert_eq!(allocated["data"]["shipment"], Value::Null);
    h.advance_oms(1).await;
    assert_eq!(h.oms_hooks.next().await["type"], "order.picked");
    h.advance_oms(1).await;
    let shipped = h.oms_hooks.next().await;
    assert_eq!(shipped["type"], "order.shipped");
    let shipment = &shipped["data"]["shipment"];
    assert!(shipment["id"].as_str().unwrap().starts_with("shp_"));
    assert!(["DHL", "UPS", "DPD"].contains(&shipment["carrier"].as_str().unwrap()));
    let tracking_number = shipment["tracking_number"].as_str().unwrap().to_owned();
    assert_eq!(
        shipment["tracking_url"],
        format!("{}/track/{tracking_number}", h.logistics.base_url())
    );
    assert_eq!(
        shipment["lines"],
        json!([{"sku": "SKU-0", "quantity": 2}, {"sku": "SKU-1", "quantity": 2}])
    );

    let (status, shown) = h
        .oms_call(reqwest::Method::GET, &format!("/orders/{order_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "shipped");
    assert_eq!(shown["deliveries"], 2);
    assert_eq!(
        shown["shipments"][0]["tracking_number"],
        tracking_number.as_str()
    );

    let label = h.logistics_hooks.next_of("label_created").await;
    assert_eq!(label["type"], "tracking.updated");
    assert_eq!(label["data"]["order_id"], order_id);
    assert_eq!(label["data"]["reference"], shipment["id"]);
    assert_eq!(label["data"]["tracking_number"], tracking_number.as_str());
    for status in ["picked_up", "in_transit", "out_for_delivery", "delivered"] {
        h.advance_logistics(1).await;
        let event = h.logistics_hooks.next().await;
        assert_eq!(event["data"]["status"], status);
        assert!(event["data"]["at"].is_i64() && event["data"]["location"].is_string());
    }
    let (status, tracked) = h
        .get(format!(
            "{}/api/track/{tracking_number}",
            h.logistics.base_url()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(tracked["status"], "delivered");
    assert_eq!(tracked["events"].as_array().unwrap().len(), 5);
    let page = h
        .http
        .get(format!(
            "{}/track/{tracking_number}",
            h.logistics.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(&tracking_number) && page.contains("out for delivery"));
    let (status, _) = h
        .get(format!("{}/api/track/JJD000", h.logistics.base_url()))
        .await;
    assert_eq!(status, 404);

    h.sim(
        &h.oms.base_url(),
        &format!("/_sim/orders/{order_id}/return"),
        json!({}),
    )
    .await;
    let returned = h.oms_hooks.next().await;
    assert_eq!(returned["type"], "order.returned");
    assert_eq!(h.oms_stats().await["effects_applied_twice"], 0);
    h.stop().await;
}

#[tokio::test]
async fn an_order_with_more_lines_than_split_over_ships_as_two_shipments() {
    let mut h = Harness::start().await;
    let (status, _, _) = h.post_order(&order(5), &message_id()).await;
    assert_eq!(status, 201);
    h.advance_oms(3).await;
    h.oms_hooks.next_of("order.picked").await;
    let first = h.oms_hooks.next_of("order.shipped").await;
    let second = h.oms_hooks.next_of("order.shipped").await;
    let mut sizes: Vec<usize> = [&first, &second]
        .iter()
        .map(|e| e["data"]["shipment"]["lines"].as_array().unwrap().len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 3]);
    assert_ne!(
        first["data"]["shipment"]["tracking_number"],
        second["data"]["shipment"]["tracking_number"]
    );
    assert_ne!(first["id"], second["id"]);
    h.stop().await;
}

#[tokio::test]
async fn an_order_is_cancelled_before_it_ships_and_not_after() {
    let mut h = Harness::start().await;
    let early = order(1);
    let late = order(1);
    h.post_order(&early, &message_id()).await;
    h.post_order(&late, &message_id()).await;
    h.advance_oms(1).await;
    let early_id = early["order_id"].as_str().unwrap();
    let late_id = late["order_id"].as_str().unwrap();

    let (status, cancelled) = h
        .oms_call(reqwest::Method::POST, &format!("/orders/{early_id}/cancel"))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let event = h.oms_hooks.next_of("order.cancelled").await;
    assert_eq!(event["data"]["order_id"], early_id);
    let (status, _) = h
        .oms_call(reqwest::Method::POST, &format!("/orders/{early_id}/cancel"))
        .await;
    assert_eq!(status, 200, "cancelling twice is harmless");

    h.advance_oms(2).await;
    let shipped = h.oms_hooks.next_of("order.shipped").await;
    assert_eq!(
        shipped["data"]["order_id"], late_id,
        "the cancelled order never ships"
    );
    let (status, refused) = h
        .oms_call(reqwest::Method::POST, &format!("/orders/{late_id}/cancel"))
        .await;
    assert_eq!(status, 409);
    assert_eq!(refused["error"]["code"], "already_shipped");
    assert!(
        h.oms_hooks.quiet().await,
        "no second cancellation, no late shipment"
    );
    let (status, _) = h
        .oms_call(reqwest::Method::POST, "/orders/01UNKNOWN/cancel")
        .await;
    assert_eq!(status, 404);
    h.stop().await;
}

#[tokio::test]
async fn outages_failures_keys_and_bad_orders_are_answered_as_documented() {
    let h = Harness::start().await;
    let order = order(1);

    h.oms_faults(json!({"outage": true})).await;
    let (status, body, _) = h.post_order(&order, &message_id()).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "outage");
    h.oms_faults(json!({"outage": false, "fail_next": 1})).await;
    let (status, _, _) = h.post_order(&order, &message_id()).await;
    assert_eq!(status, 500);
    let (status, _, _) = h.post_order(&order, &message_id()).await;
    assert_eq!(status, 201, "recovered");
    let stats = h.oms_stats().await;
    assert_eq!(
        (stats["orders"].as_u64(), stats["deliveries"].as_u64()),
        (Some(1), Some(1))
    );

    let url = format!("{}/orders", h.oms.base_url());
    let (status, body, _) = h.send(h.http.post(&url).json(&order)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _, _) = h
        .send(h.http.post(&url).bearer_auth("wrong").json(&order))
        .await;
    assert_eq!(status, 401);

    let mut no_lines = order.clone();
    no_lines["lines"] = json!([]);
    no_lines["order_id"] = json!(ulid::Ulid::new().to_string());
    let mut bad_quantity = no_lines.clone();
    bad_quantity["lines"] =
        json!([{"sku": "A", "quantity": -1, "unit_price": {"minor": 1, "currency": "EUR"}}]);
    let mut no_address = no_lines.clone();
    no_address.as_object_mut().unwrap().remove("address");
    for (body, code) in [
        (no_lines, "missing_lines"),
        (bad_quantity, "bad_quantity"),
        (no_address, "invalid_order"),
    ] {
        let (status, answer, _) = h.post_order(&body, &message_id()).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["error"]["code"], code);
        assert!(answer["error"]["message"].is_string());
    }
    let (status, body, _) = h
        .send(h.http.post(&url).bearer_auth(OMS_KEY).body("{not json"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_json");

    let (status, faults) = h.get(format!("{}/_sim/faults", h.oms.base_url())).await;
    assert_eq!(status, 200);
    assert_eq!(faults["fail_next"], 0);
    assert_eq!(faults["webhooks"]["duplicate"], 1);
    h.stop().await;
}

#[tokio::test]
async fn duplicated_webhooks_arrive_three_times_with_one_event_id() {
    let mut h = Harness::start().await;
    h.oms_faults(json!({"webhooks": {"duplicate": 3}})).await;
    h.post_order(&order(1), &message_id()).await;
    h.advance_oms(1).await;
    let copies = [
        h.oms_hooks.next().await,
        h.oms_hooks.next().await,
        h.oms_hooks.next().await,
    ];
    assert!(copies
        .iter()
        .all(|c| c["type"] == "order.allocated" && c["id"] == copies[0]["id"]));
    assert!(h.oms_hooks.quiet().await);
    let (_, log) = h.get(format!("{}/_sim/deliveries", h.oms.base_url())).await;
    let log = log["deliveries"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| d["status"] == "delivered"));
    h.stop().await;
}

#[tokio::test]
async fn failed_webhooks_are_retried_and_dropped_ones_never_sent() {
    let mut hooks = Receiver::start(OMS_SECRET, 1).await;
    let oms = OmsSim::start(oms_config(&hooks, "http://127.0.0.1:9".into()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let post = |order: Value| {
        http.post(format!("{}/orders", oms.base_url()))
            .bearer_auth(OMS_KEY)
            .json(&order)
            .send()
    };
    post(order(1)).await.unwrap();
    http.post(format!("{}/_sim/advance", oms.base_url()))
        .json(&json!({"seconds": STEP}))
        .send()
        .await
        .unwrap();
    // The first attempt got a 500; the retry half a second later arrives.
    assert_eq!(hooks.next().await["type"], "order.allocated");

    http.post(format!("{}/_sim/faults", oms.base_url()))
        .json(&json!({"webhooks": {"drop_next": 1}}))
        .send()
        .await
        .unwrap();
    http.post(format!("{}/_sim/advance", oms.base_url()))
        .json(&json!({"seconds": STEP}))
        .send()
        .await
        .unwrap();
    assert!(hooks.quiet().await, "order.picked was dropped");
    oms.stop().await;
}

#[tokio::test]
async fn shipping_waits_while_the_logistics_simulator_is_down() {
    let mut oms_hooks = Receiver::start(OMS_SECRET, 0).await;
    let logistics_hooks = Receiver::start(LOGISTICS_SECRET, 0).await;
    // A port nobody listens on yet, where the logistics simulator starts later.
    let free = std::net::TcpListener::bind(any_port()).unwrap();
    let logistics_addr = free.local_addr().unwrap();
    drop(free);
    let oms = OmsSim::start(oms_config(&oms_hooks, format!("http://{logistics_addr}")))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let order = order(1);
    let order_id = order["order_id"].as_str().unwrap();
    http.post(format!("{}/orders", oms.base_url()))
        .bearer_auth(OMS_KEY)
        .json(&order)
        .send()
        .await
        .unwrap();
    let advance = || {
        http.post(format!("{}/_sim/advance", oms.base_url()))
            .json(&json!({"seconds": 3 * STEP}))
            .send()
    };
    advance().await.unwrap();
    oms_hooks.next_of("order.picked").await;
    let shown: Value = http
        .get(format!("{}/orders/{order_id}", oms.base_url()))
        .bearer_auth(OMS_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "picked", "nothing ships without a carrier");

    let logistics = LogisticsSim::start(logistics_config(&logistics_hooks, logistics_addr))
        .await
        .unwrap();
    advance().await.unwrap();
    let shipped = oms_hooks.next_of("order.shipped").await;
    assert_eq!(shipped["data"]["order_id"], order_id);
    assert!(shipped["data"]["shipment"]["tracking_number"].is_string());
    oms.stop().await;
    logistics.stop().await;
}

#[tokio::test]
async fn the_carrier_replays_labels_reports_exceptions_and_checks_its_key() {
    let mut hooks = Receiver::start(LOGISTICS_SECRET, 0).await;
    let config = LogisticsConfig {
        exception_rate: 1.0,
        ..logistics_config(&hooks, any_port())
    };
    let logistics = LogisticsSim::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/shipments", logistics.base_url());
    let shipment = json!({
        "order_id": "01ORDER", "reference": "shp_ref_1",
        "address": {"city": "Hamburg", "country": "DE"},
        "lines": [{"sku": "MUG", "quantity": 1}],
    });
    let first = http
        .post(&url)
        .bearer_auth(LOGISTICS_KEY)
        .json(&shipment)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "label_created");
    assert!(first["id"].as_str().unwrap().starts_with("shp_"));
    let again = http
        .post(&url)
        .bearer_auth(LOGISTICS_KEY)
        .json(&shipment)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let refused = http.post(&url).json(&shipment).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let bad = http
        .post(&url)
        .bearer_auth(LOGISTICS_KEY)
        .json(&json!({"reference": "x", "address": {}, "lines": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);

    http.post(format!("{}/_sim/advance", logistics.base_url()))
        .json(&json!({"seconds": 10 * STEP}))
        .send()
        .await
        .unwrap();
    let mut statuses = Vec::new();
    while statuses.last() != Some(&"delivered".to_owned()) {
        statuses.push(
            hooks.next().await["data"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        statuses,
        [
            "label_created",
            "picked_up",
            "in_transit",
            "out_for_delivery",
            "exception",
            "delivered"
        ]
    );
    let stats: Value = http
        .get(format!("{}/_sim/stats", logistics.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"shipments": 1, "deliveries": 2, "duplicates": 1, "effects_applied_twice": 0,
               "delivered": 1, "exceptions": 1})
    );
    logistics.stop().await;
}

#[tokio::test]
async fn the_dashboards_show_orders_and_parcels() {
    let h = Harness::start().await;
    h.post_order(&order(1), &message_id()).await;
    h.advance_oms(3).await;
    let oms_page = h.http.get(h.oms.base_url()).send().await.unwrap();
    assert_eq!(oms_page.status(), 200);
    let oms_page = oms_page.text().await.unwrap();
    assert!(oms_page.contains("W-000001") && oms_page.contains("shipped"));
    assert!(!oms_page.contains(OMS_SECRET));
    let page = h.http.get(h.logistics.base_url()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("label_created"));
    let health = h
        .http
        .get(format!("{}/healthz", h.oms.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    h.stop().await;
}
