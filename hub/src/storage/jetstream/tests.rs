//! The event relay and the stream reader against NATS JetStream and PostgreSQL. Compiled with
//! the `cluster-tests` feature; needs NATS at `OMNIHUB_TEST_NATS` (default
//! `nats://127.0.0.1:4222`) and PostgreSQL as in `postgres::tests`. Each test works under a
//! stream prefix and a schema of its own, both deleted afterwards (also when the test fails).

use super::outbox::{DeliveryConsumer, OutboxRelay};
use super::reader::EventStreamReader;
use super::relay::{EventRelay, RelayOptions, CURSOR_NAME, EVENT_RELAY_SHARD};
use super::{connect, event_stream, JetStreamError, Names, SEQ_HEADER};
use crate::outbox::{Deliverer, DeliveryError, DeliveryPolicy};
use crate::storage::postgres::{tests::on_nodes, PgStorage};
use crate::storage::{Committer, EventLog, Outbox, Sequenced, StorageError, UnitOfWork};
use async_nats::jetstream;
use async_trait::async_trait;
use protocol::{codec, AnonymousId, Channel, Event, EventKind, OutboxMessage, Subject};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

fn nats_url() -> SecretString {
    SecretString::from(
        std::env::var("OMNIHUB_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
    )
}

/// Runs `case` with `nodes` storages on one fresh schema and a fresh stream prefix, then
/// deletes the prefix's streams and the schema, and only then fails if the case failed.
async fn on_cluster<F, Fut>(nodes: usize, case: F)
where
    F: FnOnce(Vec<Arc<PgStorage>>, jetstream::Context, Names) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_nodes(nodes, |storages| async move {
        let js = connect(&nats_url(), "omnihub-tests")
            .await
            .expect("NATS answers (cluster-tests need it; .ci/run starts it)");
        let prefix = format!("t{}_", ulid::Ulid::new().to_string().to_lowercase());
        let names = Names::new(&prefix).expect("a valid prefix");
        let outcome = tokio::spawn(case(storages, js.clone(), names.clone())).await;
        for stream in [names.events_stream(), names.outbox_stream()] {
            match js.delete_stream(&stream).await {
                Ok(_) => {}
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => panic!("deleting the test's stream {stream} failed: {e}"),
            }
        }
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}

const KINDS: [EventKind; 3] = [
    EventKind::ProductView,
    EventKind::Search,
    EventKind::OrderPlaced,
];

fn events(n: usize) -> Arc<[Event]> {
    (0..n)
        .map(|i| {
            Event::new(
                OffsetDateTime::UNIX_EPOCH,
                Subject::Anonymous(AnonymousId::new()),
                Channel::Web,
                KINDS[i % KINDS.len()],
            )
        })
        .collect()
}

/// Appends `n` events in commits of up to 7 (so a relay's batches straddle commits).
async fn append(pg: &PgStorage, n: usize) {
    let all = events(n);
    for chunk in all.chunks(7) {
        pg.append(chunk.to_vec().into()).await.expect("appended");
    }
}

/// Polls `check` until it holds, failing after a bound.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cursor_reaches(pg: &PgStorage, seq: u64) {
    eventually(&format!("the relay's cursor reaching {seq}"), || async {
        pg.relay_cursor(CURSOR_NAME).await.expect("read") >= seq
    })
    .await;
}

fn options(owner: &str) -> RelayOptions {
    RelayOptions {
        lease_ttl: Duration::from_secs(2),
        ..RelayOptions::new(owner)
    }
}

/// Every message of the stream, in stream order, as the log it should copy: checks each one's
/// subject, message id and sequence header on the way.
async fn stream_contents(js: &jetstream::Context, names: &Names) -> Vec<Sequenced> {
    let mut stream = event_stream(js, names).await.expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    let mut out = Vec::new();
    for stream_seq in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(stream_seq).await.expect("message");
        let seq: u64 = m
            .headers
            .get(SEQ_HEADER)
            .expect("a sequence header")
            .as_str()
            .parse()
            .expect("a number");
        let event: Event = codec::decode(&m.payload).expect("an event");
        assert_eq!(m.subject.as_str(), names.event_subject(event.kind));
        assert_eq!(
            m.headers.get("Nats-Msg-Id").expect("a message id").as_str(),
            event.id.to_string()
        );
        out.push(Sequenced { seq, event });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_in_order_exactly_once_across_a_restart_mid_batch() {
    on_cluster(1, |nodes, js, names| async move {
        let pg = nodes[0].clone();
        append(&pg, 30).await;
        let crashed = EventRelay::new(pg.clone(), js.clone(), names.clone(), options("node-a"))
            .await
            .expect("relay");
        let token = pg
            .acquire_lease(EVENT_RELAY_SHARD, "node-a", Duration::from_secs(30))
            .await
            .expect("asked")
            .expect("free");
        // One whole round (published, acknowledged, cursor moved) ...
        let mut term = crashed.sync(token).await.expect("synced");
        let log = pg.read_sequenced(0, 100).await.expect("read");
        assert_eq!(log.len(), 30);
        crashed
            .publish(&mut term, &log[..5])
            .await
            .expect("published");
        crashed.advance(&term).await.expect("advanced");
        // ... then a batch the stream acknowledged up to 12 before the relay died, without
        // moving its cursor.
        crashed
            .publish(&mut term, &log[5..12])
            .await
            .expect("published");
        assert_eq!(pg.relay_cursor(CURSOR_NAME).await.expect("read"), 5);

        // The node restarts (same owner: the new lease token fences the old incarnation).
        let restarted = EventRelay::new(pg.clone(), js.clone(), names.clone(), options("node-a"))
            .await
            .expect("relay")
            .spawn();
        cursor_reaches(&pg, 30).await;
        assert_eq!(
            restarted.published(),
            18,
            "the acknowledged tail is not published again"
        );
        assert_eq!(
            stream_contents(&js, &names).await,
            log,
            "the log, once, in order"
        );

        // The old incarnation wakes up: its cursor move is fenced, and what it publishes again
        // is dropped as duplicates.
        assert!(matches!(
            crashed.advance(&term).await,
            Err(JetStreamError::Storage(StorageError::Fenced))
        ));
        let mut stale = term;
        crashed
            .publish(&mut stale, &log[12..20])
            .await
            .expect("duplicates are acknowledged");
        assert_eq!(stream_contents(&js, &names).await, log);

        // New appends keep flowing.
        append(&pg, 4).await;
        cursor_reaches(&pg, 34).await;
        restarted.stop().await.expect("stopped cleanly");
        let log = pg.read_sequenced(0, 100).await.expect("read");
        assert_eq!(stream_contents(&js, &names).await, log);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_relays_only_the_lease_holder_publishes_and_the_other_takes_over() {
    on_cluster(2, |nodes, js, names| async move {
        let (a, b) = (nodes[0].clone(), nodes[1].clone());
        let relay_a = EventRelay::new(a.clone(), js.clone(), names.clone(), options("node-a"))
            .await
            .expect("relay")
            .spawn();
        let relay_b = EventRelay::new(b.clone(), js.clone(), names.clone(), options("node-b"))
            .await
            .expect("relay")
            .spawn();
        append(&a, 20).await;
        append(&b, 20).await;
        cursor_reaches(&a, 40).await;
        let (holder, _) = a
            .lease_holder(EVENT_RELAY_SHARD)
            .await
            .expect("read")
            .expect("a relay holds the lease");
        let (leader, follower) = if holder == "node-a" {
            (relay_a, relay_b)
        } else {
            (relay_b, relay_a)
        };
        assert_eq!((leader.published(), follower.published()), (40, 0));

        // The leader stops (gives its lease up); the other node's relay takes over.
        leader.stop().await.expect("stopped cleanly");
        append(&a, 10).await;
        cursor_reaches(&a, 50).await;
        assert_eq!(follower.published(), 10);
        follower.stop().await.expect("stopped cleanly");
        let log = a.read_sequenced(0, 100).await.expect("read");
        assert_eq!(log.len(), 50);
        assert_eq!(stream_contents(&js, &names).await, log);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_behind_the_stream_is_refused_once_duplicates_are_forgotten() {
    on_cluster(1, |nodes, js, names| async move {
        let pg = nodes[0].clone();
        // The stream forgets message ids after 100 ms, so a stale relay's events are no longer
        // dropped as duplicates: only the expected last sequence stops them.
        js.create_stream(async_nats::jetstream::stream::Config {
            name: names.events_stream(),
            subjects: vec![names.events_subjects()],
            duplicate_window: Duration::from_millis(100),
            ..Default::default()
        })
        .await
        .expect("stream created");
        append(&pg, 8).await;
        let log = pg.read_sequenced(0, 100).await.expect("read");
        let old = EventRelay::new(pg.clone(), js.clone(), names.clone(), options("node-a"))
            .await
            .expect("relay");
        let token = pg
            .acquire_lease(EVENT_RELAY_SHARD, "node-a", Duration::ZERO)
            .await
            .expect("asked")
            .expect("free");
        let mut stale = old.sync(token).await.expect("synced");
        old.publish(&mut stale, &log[..5]).await.expect("published");
        // The old relay pauses past its lease; a new one takes over and publishes the rest.
        let new = EventRelay::new(pg.clone(), js.clone(), names.clone(), options("node-b"))
            .await
            .expect("relay");
        let token = pg
            .acquire_lease(EVENT_RELAY_SHARD, "node-b", Duration::from_secs(30))
            .await
            .expect("asked")
            .expect("expired");
        let mut term = new.sync(token).await.expect("synced");
        new.publish(&mut term, &log[5..]).await.expect("published");
        // Not a wait for readiness: the property needs the server's 100 ms window to pass.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The old relay wakes up and publishes what it thinks comes next.
        assert!(matches!(
            old.publish(&mut stale, &log[5..7]).await,
            Err(JetStreamError::Overtaken)
        ));
        assert_eq!(
            stream_contents(&js, &names).await,
            log,
            "still the log, once"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_refuses_a_stream_with_a_hole() {
    on_cluster(1, |nodes, js, names| async move {
        let pg = nodes[0].clone();
        append(&pg, 3).await;
        let relay = EventRelay::new(pg.clone(), js.clone(), names.clone(), options("node-a"))
            .await
            .expect("relay")
            .spawn();
        cursor_reaches(&pg, 3).await;
        relay.stop().await.expect("stopped cleanly");
        // Something other than the relay writes a later sequence into the stream.
        let stray = events(1)[0].clone();
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(codec::encode(&stray).expect("encoded").into())
            .header(SEQ_HEADER, "7");
        js.send_publish(names.event_subject(stray.kind), message)
            .await
            .expect("sent")
            .await
            .expect("stored");
        let mut reader = EventStreamReader::open(&js, &names, 0)
            .await
            .expect("opened");
        let mut read = Vec::new();
        let refused = loop {
            match tokio::time::timeout(Duration::from_secs(10), reader.next(2))
                .await
                .expect("an answer in time")
            {
                Ok(batch) => read.extend(batch),
                Err(e) => break e,
            }
        };
        assert_eq!(read, pg.read_sequenced(0, 10).await.expect("read"));
        assert!(
            matches!(refused, JetStreamError::Gap { after: 3, got: 7 }),
            "{refused}"
        );
        assert_eq!(reader.cursor(), 3);
    })
    .await;
}

/// Reads from `reader` until it handed out `n` events.
async fn read_n(reader: &mut EventStreamReader, n: usize) -> Vec<Sequenced> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), reader.next(8))
            .await
            .expect("events arrive in time")
            .expect("read");
        assert!(!batch.is_empty() && batch.len() <= 8);
        out.extend(batch);
    }
    assert_eq!(out.len(), n, "no more than asked for was there");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_hands_out_the_log_and_resumes_from_a_sequence() {
    on_cluster(1, |nodes, js, names| async move {
        let pg = nodes[0].clone();
        // A reader opened on an empty stream waits for the first events.
        let mut early = EventStreamReader::open(&js, &names, 0)
            .await
            .expect("opened");
        let relay = EventRelay::new(pg.clone(), js.clone(), names.clone(), options("node-a"))
            .await
            .expect("relay")
            .spawn();
        append(&pg, 25).await;
        cursor_reaches(&pg, 25).await;
        let log = pg.read_sequenced(0, 100).await.expect("read");
        assert_eq!(read_n(&mut early, 25).await, log);
        assert_eq!(early.cursor(), 25);

        let mut from_0 = EventStreamReader::open(&js, &names, 0)
            .await
            .expect("opened");
        assert_eq!(read_n(&mut from_0, 25).await, log);
        let mut from_17 = EventStreamReader::open(&js, &names, 17)
            .await
            .expect("opened");
        assert_eq!(read_n(&mut from_17, 8).await, log[17..].to_vec());

        // Tailing: appends made while the readers wait reach them.
        append(&pg, 5).await;
        let log = pg.read_sequenced(0, 100).await.expect("read");
        assert_eq!(read_n(&mut from_17, 5).await, log[25..].to_vec());
        assert_eq!(read_n(&mut early, 5).await, log[25..].to_vec());
        assert_eq!(from_17.cursor(), 30);
        relay.stop().await.expect("stopped cleanly");

        // Events the stream no longer holds (purged or expired) are refused, not skipped.
        let stream = event_stream(&js, &names).await.expect("stream");
        stream.purge().sequence(11).await.expect("purged below 11");
        match EventStreamReader::open(&js, &names, 3).await {
            Err(JetStreamError::Truncated {
                after: 3,
                first: 11,
            }) => {}
            other => panic!("expected Truncated, got {:?}", other.map(|r| r.cursor())),
        }
        let mut from_10 = EventStreamReader::open(&js, &names, 10)
            .await
            .expect("opened");
        assert_eq!(read_n(&mut from_10, 20).await, log[10..].to_vec());
    })
    .await;
}

/// The `oms` destination of one node: records what it delivered; always fails `poison`
/// messages.
struct Recording {
    node: &'static str,
    delivered: Arc<Mutex<Vec<(&'static str, ulid::Ulid)>>>,
}

#[async_trait]
impl Deliverer for Recording {
    fn destination(&self) -> &'static str {
        "oms"
    }

    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        if message.kind == "poison" {
            return Err(DeliveryError::Retry("the partner answered 503".into()));
        }
        self.delivered
            .lock()
            .expect("not poisoned")
            .push((self.node, message.id));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_competing_delivery_consumers_deliver_each_message_once() {
    on_cluster(2, |nodes, js, names| async move {
        let (a, b) = (nodes[0].clone(), nodes[1].clone());
        let now = OffsetDateTime::now_utc();
        let mut queued = Vec::new();
        for unit in 0..8 {
            let mut work = UnitOfWork::new();
            for i in 0..5 {
                let m = OutboxMessage::new(
                    "oms",
                    "order.placed",
                    String::new(),
                    format!("{{\"n\":{}}}", unit * 5 + i),
                    now,
                );
                queued.push(m.id);
                work = work.with_message(m);
            }
            a.commit(work).await.expect("committed");
        }
        let poison = OutboxMessage::new("oms", "poison", String::new(), "{}".into(), now);
        b.commit(UnitOfWork::new().with_message(poison.clone()))
            .await
            .expect("committed");

        let delivered = Arc::new(Mutex::new(Vec::new()));
        let policy = DeliveryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            ..DeliveryPolicy::default()
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for (node, storage) in [("node-a", a.clone()), ("node-b", b.clone())] {
            let deliverer = Arc::new(Recording {
                node,
                delivered: delivered.clone(),
            });
            let consumer = DeliveryConsumer::new(&js, &names, deliverer, storage, policy)
                .await
                .expect("bound");
            workers.push(consumer.spawn(stopped.clone()));
        }
        let relay = OutboxRelay::new(
            a.clone(),
            js.clone(),
            names.clone(),
            options("node-a"),
            Duration::from_millis(50),
        )
        .await
        .expect("relay")
        .spawn();

        eventually(
            "every message delivered and the poison one dead",
            || async {
                delivered.lock().expect("not poisoned").len() >= queued.len()
                    && b.dead_letter("oms", poison.id)
                        .await
                        .expect("read")
                        .is_some()
            },
        )
        .await;
        relay.stop().await.expect("stopped cleanly");
        let _ = stop.send(true);
        for w in workers {
            w.await.expect("joined").expect("stopped cleanly");
        }

        let delivered = delivered.lock().expect("not poisoned").clone();
        let mut times: BTreeMap<ulid::Ulid, usize> = BTreeMap::new();
        for (_, id) in &delivered {
            *times.entry(*id).or_default() += 1;
        }
        assert_eq!(times.len(), queued.len(), "every message delivered");
        assert!(times.values().all(|n| *n == 1), "none delivered twice");
        let dead = b
            .dead_letter("oms", poison.id)
            .await
            .expect("read")
            .expect("dead");
        assert_eq!(dead.attempts, 3);
        assert_eq!(dead.last_error.as_deref(), Some("the partner answered 503"));
        assert!(
            a.pending("oms", 100).await.expect("read").is_empty(),
            "moved out of PostgreSQL"
        );
        let mut stream = js.get_stream(names.outbox_stream()).await.expect("stream");
        let left = stream.info().await.expect("info").state.messages;
        assert_eq!(
            left, 0,
            "the work queue is empty once everything is settled"
        );
    })
    .await;
}
