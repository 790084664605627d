//! Background work runs once across a cluster (issue 11, point 5): three `hub::Application`s
//! on one PostgreSQL schema. An outbox message is delivered to a loopback OMS exactly once,
//! and events recorded on every node are folded once (the analyst's aggregates and profiles
//! equal the events, not three times them), also when the node doing the work leaves
//! gracefully and, separately, dies without leaving: another node takes over within the
//! failover bound and goes on from the durable cursor (the outbox table; the analyst's stored
//! cursor), with no duplicate delivery and no gap. And a payment webhook posted to one node
//! is a duplicate on the others (the dedupe by event id is in PostgreSQL).
//!
//! Compiled with the `cluster-tests` feature; needs PostgreSQL at `OMNIHUB_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Each test's schema is dropped
//! afterwards, also when it fails.

#![cfg(feature = "cluster-tests")]

mod common;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::cluster::{on_schema, settled, start, start_with, Node, HEARTBEAT, LEASE_TTL};
use common::eventually;
use hub::cluster::singleton::Singleton;
use hub::storage::UnitOfWork;
use protocol::{AnonymousId, Channel, Event, EventKind, OutboxMessage, Subject};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

/// A singleton of a node that left or died is taken over within this (the lease runs out,
/// a standby asks every heartbeat), plus slack for a loaded test machine.
const TAKEOVER: Duration = Duration::from_secs(
    LEASE_TTL.as_secs() + 1 + 4, // + HEARTBEAT (250 ms) rounded up, + slack
);
const SETTLE: Duration = Duration::from_secs(30);

/// Waits until exactly one node holds `which`; answers its index and how long it took.
async fn holder(nodes: &[Node], which: Singleton) -> (usize, Duration) {
    let started = Instant::now();
    let at = eventually(SETTLE, || async {
        let holding: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].handle.singletons.holds(which))
            .collect();
        (holding.len() == 1).then(|| holding[0])
    })
    .await;
    (at, started.elapsed())
}

fn within_failover(what: &str, took: Duration) {
    assert!(
        took <= TAKEOVER,
        "{what}: taken over after {took:?}, bound {TAKEOVER:?} (ttl {LEASE_TTL:?} + heartbeat {HEARTBEAT:?} + slack)"
    );
}

// ------------------------------------------------------------------------------------------
// Outbox delivery.

/// A loopback OMS: answers `POST /orders` with 200 and keeps every `X-Message-Id` it got.
struct Oms {
    url: String,
    got: Arc<Mutex<Vec<String>>>,
    server: actix_web::dev::ServerHandle,
}

async fn receive(got: web::Data<Mutex<Vec<String>>>, req: HttpRequest) -> HttpResponse {
    let id = req
        .headers()
        .get("x-message-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    got.lock().expect("not poisoned").push(id);
    HttpResponse::Ok().json(serde_json::json!({"accepted": true}))
}

fn oms() -> Oms {
    let got = web::Data::new(Mutex::new(Vec::new()));
    let shared = got.clone().into_inner();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(got.clone())
            .route("/orders", web::post().to(receive))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listens")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Oms {
        url,
        got: shared,
        server: handle,
    }
}

impl Oms {
    fn received(&self) -> Vec<String> {
        self.got.lock().expect("not poisoned").clone()
    }
}

/// Queues `n` OMS messages through `node` (committed like an order's), answers their ids.
async fn queue(node: &Node, n: usize) -> Vec<String> {
    let mut unit = UnitOfWork::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let m = OutboxMessage::new(
            "oms",
            "order.placed",
            String::new(),
            serde_json::json!({"from": node.id, "n": i}).to_string(),
            OffsetDateTime::now_utc(),
        );
        ids.push(m.id.to_string());
        unit = unit.with_message(m);
    }
    node.handle
        .storage
        .commit(unit)
        .await
        .expect("messages queued");
    node.handle.outbox.wake();
    ids
}

/// Until the OMS got every one of `ids` and nothing waits in the outbox.
async fn delivered(oms: &Oms, node: &Node, ids: &[String]) {
    eventually(SETTLE, || async {
        let got = oms.received();
        let pending = node
            .handle
            .storage_backlog()
            .await
            .ok()?
            .get("oms")
            .map_or(0, |b| b.pending);
        (ids.iter().all(|id| got.contains(id)) && pending == 0).then_some(())
    })
    .await;
}

async fn outbox_once(schema: String) {
    let oms = oms();
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        let url = oms.url.clone();
        nodes.push(start_with(id, &schema, move |s| s.oms.base_url = url).await);
    }
    settled(&nodes.iter().collect::<Vec<_>>()).await;
    let (first, _) = holder(&nodes, Singleton::OutboxDelivery).await;
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            n.handle.outbox.delivering(),
            i == first,
            "only the holder runs delivery workers ({})",
            n.id
        );
    }

    // Queued on every node, delivered by the holder.
    let mut all = Vec::new();
    for n in &nodes {
        all.extend(queue(n, 4).await);
    }
    delivered(&oms, &nodes[0], &all).await;

    // The holder leaves gracefully: another node takes over and delivers what comes next.
    let leaving = nodes.remove(first);
    let left = Instant::now();
    leaving.leave().await;
    let (second, _) = holder(&nodes, Singleton::OutboxDelivery).await;
    within_failover("after a graceful leave", left.elapsed());
    let mut batch = Vec::new();
    for n in &nodes {
        batch.extend(queue(n, 4).await);
    }
    delivered(&oms, &nodes[0], &batch).await;
    all.extend(batch);

    // The new holder dies (releases nothing); messages queued meanwhile wait in the outbox and
    // the survivor delivers them once its lease ran out.
    let dying = nodes.remove(second);
    let died = Instant::now();
    dying.die().await;
    let batch = queue(&nodes[0], 6).await;
    let (_, _) = holder(&nodes, Singleton::OutboxDelivery).await;
    within_failover("after a death", died.elapsed());
    delivered(&oms, &nodes[0], &batch).await;
    all.extend(batch);

    // Everything stopped (rounds in flight finished): what the OMS got is final.
    for n in nodes {
        n.leave().await;
    }
    oms.server.stop(true).await;
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for id in oms.received() {
        *times.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(times.len(), all.len(), "every message delivered");
    assert!(all.iter().all(|id| times.contains_key(id)));
}

#[actix_web::test]
async fn an_outbox_message_is_delivered_once_across_hand_overs_and_a_death() {
    on_schema(outbox_once).await;
}

// ------------------------------------------------------------------------------------------
// The event feed's consumers.

/// What was appended: per subject, its events.
type Expected = BTreeMap<AnonymousId, u64>;

/// Appends, through each node, 8 events of a new shopper and 4 of `shared`.
async fn record(nodes: &[Node], shared: AnonymousId, expected: &mut Expected) {
    for n in nodes {
        let own = AnonymousId::new();
        let event = |subject| {
            Event::new(
                OffsetDateTime::now_utc(),
                Subject::Anonymous(subject),
                Channel::Web,
                EventKind::ProductView,
            )
        };
        let events: Vec<Event> = (0..8)
            .map(|_| event(own))
            .chain((0..4).map(|_| event(shared)))
            .collect();
        n.handle
            .storage
            .append(events.into())
            .await
            .expect("appended");
        *expected.entry(own).or_default() += 8;
        *expected.entry(shared).or_default() += 4;
    }
}

/// Every node has caught up with the log (its own fold or the holder's stored cursor) and
/// reads aggregates and profiles that count each event once.
async fn folded_once(nodes: &[Node], expected: &Expected) {
    let log = nodes[0]
        .handle
        .storage
        .read_sequenced(0, 1_000_000)
        .await
        .expect("the log reads");
    let total = log.len() as u64;
    let head = log.last().map_or(0, |s| s.seq);
    for n in nodes {
        let h = &n.handle;
        // Another node's appends reach this node's `appended` by notification: the waits
        // below are for everything up to `head` only once it has.
        let mut appended = h.storage.appended();
        let heard = tokio::time::timeout(SETTLE, appended.wait_for(|a| *a >= head)).await;
        assert!(heard.is_ok(), "{} never heard of the appends", n.id);
        let waited = tokio::time::timeout(SETTLE, async {
            h.experience.caught_up().await.expect("analyst");
            h.experiments
                .caught_up(h.storage.as_ref())
                .await
                .expect("counter");
            h.personalization.caught_up().await.expect("recommender");
        })
        .await;
        assert!(waited.is_ok(), "{} never caught up with the log", n.id);
        let events = h
            .experience
            .read(|a| a.days.values().map(|d| d.events).sum::<u64>())
            .await
            .expect("aggregates read");
        assert_eq!(events, total, "aggregated events on {}", n.id);
        for (subject, count) in expected {
            let profile = h
                .experience
                .profile(Subject::Anonymous(*subject))
                .await
                .expect("profile read")
                .expect("a profile");
            assert_eq!(profile.events, *count, "profile events on {}", n.id);
        }
    }
}

async fn feed_once(schema: String) {
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        nodes.push(start(id, &schema).await);
    }
    settled(&nodes.iter().collect::<Vec<_>>()).await;
    let (first, _) = holder(&nodes, Singleton::Analyst).await;
    let shared = AnonymousId::new();
    let mut expected = Expected::new();
    record(&nodes, shared, &mut expected).await;
    folded_once(&nodes, &expected).await;
    record(&nodes, shared, &mut expected).await;
    folded_once(&nodes, &expected).await;

    // The analyst's holder leaves gracefully; the next one goes on from the stored cursor.
    let leaving = nodes.remove(first);
    let left = Instant::now();
    leaving.leave().await;
    let (second, _) = holder(&nodes, Singleton::Analyst).await;
    within_failover("after a graceful leave", left.elapsed());
    record(&nodes, shared, &mut expected).await;
    folded_once(&nodes, &expected).await;

    // The next holder dies mid-stream: events recorded meanwhile are folded by the survivor.
    let dying = nodes.remove(second);
    record(std::slice::from_ref(&dying), shared, &mut expected).await;
    let died = Instant::now();
    dying.die().await;
    record(&nodes, shared, &mut expected).await;
    holder(&nodes, Singleton::Analyst).await;
    within_failover("after a death", died.elapsed());
    folded_once(&nodes, &expected).await;
    for n in nodes {
        n.leave().await;
    }
}

#[actix_web::test]
async fn events_recorded_on_every_node_are_folded_once_across_hand_overs_and_a_death() {
    on_schema(feed_once).await;
}

// ------------------------------------------------------------------------------------------
// Webhook intake.

/// A payment-provider event posted to one node is known to every node by its id (the dedupe
/// is in PostgreSQL, not in a node's memory): posted again to another node, it is answered as a
/// duplicate and not applied again.
async fn webhook_once(schema: String) {
    use secrecy::ExposeSecret;
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        nodes.push(start(id, &schema).await);
    }
    let secret = hub::HubSettings::default()
        .payments
        .webhook_secret
        .expose_secret()
        .to_string();
    let body = serde_json::json!({
        "id": format!("evt_{}", ulid::Ulid::new()),
        "type": "checkout.session.expired",
        "data": {"object": {"id": "cs_not_ours", "object": "checkout.session"}},
    })
    .to_string();
    let http = common::client();
    let post = |node: &Node| {
        let t = OffsetDateTime::now_utc().unix_timestamp();
        let signature = hub::payments::webhook::sign(&secret, t, body.as_bytes());
        http.post(node.url("/webhooks/payments"))
            .header("Stripe-Signature", format!("t={t},v1={signature}"))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
    };
    let first: serde_json::Value = post(&nodes[0])
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(first["received"], true, "{first}");
    assert!(
        first.get("duplicate").is_none(),
        "new the first time: {first}"
    );
    for n in &nodes[1..] {
        eventually(SETTLE, || async {
            let answer: serde_json::Value = post(n).await.ok()?.json().await.ok()?;
            (answer["duplicate"] == true).then_some(())
        })
        .await;
    }
    for n in nodes {
        n.leave().await;
    }
}

#[actix_web::test]
async fn a_webhook_event_is_known_to_every_node_by_its_id() {
    on_schema(webhook_once).await;
}
