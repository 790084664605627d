//! Singletons and change notifications against PostgreSQL (the `cluster-tests` feature; the
//! server at `OMNIHUB_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`). Each
//! test has a schema of its own, dropped afterwards, also when it fails. Waits are polls with
//! a bound.

use super::notify::{Changes, Topic};
use super::singleton::{Singleton, SingletonHandle, SingletonSettings, Singletons, Term};
use crate::storage::kv::{Batch, Keyspace, Tree};
use crate::storage::postgres::PgStorage;
use crate::storage::{Change, Committer, EventLog, StorageError, UnitOfWork};
use futures_util::FutureExt;
use protocol::Subject;
use protocol::{AnonymousId, Basket, BasketId, BasketOwner, Channel, Currency, Event, EventKind};
use sqlx::postgres::PgConnectOptions;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::storage::postgres::tests::{admin, url};

/// One node: its storage and keyspace, on the test's schema.
#[derive(Clone)]
struct Node {
    pg: Arc<PgStorage>,
    kv: Keyspace,
}

/// Runs `case` with `nodes` nodes on one fresh schema, then drops the schema, and only then
/// fails if the case failed.
async fn on_schema<F, Fut>(nodes: usize, case: F)
where
    F: FnOnce(Vec<Node>) -> Fut,
    Fut: Future<Output = ()>,
{
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin(&format!("CREATE SCHEMA {schema}")).await;
    let options: PgConnectOptions = url().parse().expect("a valid url");
    let options = options.options([("search_path", schema.as_str())]);
    let mut all = Vec::new();
    for _ in 0..nodes {
        all.push(Node {
            pg: PgStorage::connect(options.clone(), 6)
                .await
                .expect("storage opens and migrates"),
            kv: Keyspace::postgres(options.clone(), 4)
                .await
                .expect("the keyspace opens"),
        });
    }
    let outcome = AssertUnwindSafe(case(all.clone())).catch_unwind().await;
    for n in all {
        n.kv.close().await;
        n.pg.close().await;
    }
    admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

const TTL: Duration = Duration::from_millis(1500);
const EVERY: Duration = Duration::from_millis(300);
const SETTLE: Duration = Duration::from_secs(20);

fn singletons(node: &Node, id: &str) -> Singletons {
    Singletons::cluster(
        node.pg.clone(),
        node.kv.clone(),
        SingletonSettings {
            node_id: id.into(),
            lease_ttl: TTL,
            renew_every: EVERY,
        },
    )
    .expect("valid settings")
}

/// Polls `check` until it holds or `SETTLE` passes.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !check() {
        assert!(Instant::now() < deadline, "not within {SETTLE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event() -> Event {
    Event::new(
        OffsetDateTime::now_utc(),
        Subject::Anonymous(AnonymousId::new()),
        Channel::Web,
        EventKind::ProductView,
    )
}

async fn append(node: &Node, n: usize) {
    let events: Vec<Event> = (0..n).map(|_| event()).collect();
    node.pg.append(events.into()).await.expect("appended");
}

const CURSOR: &[u8] = b"cursor";
const COUNT: &[u8] = b"count";

fn read_u64(tree: &Tree, key: &[u8]) -> u64 {
    tree.get(key)
        .expect("readable")
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// A counter like the hub's feed consumers: tails the event log from its stored cursor and
/// stores the number of events seen with the cursor, one fenced batch per read. Restarting
/// from anything but the stored cursor would count events twice or miss them.
fn event_counter(
    node: &Node,
    terms: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
) -> impl Fn(Term) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static {
    let node = node.clone();
    move |mut term| {
        let node = node.clone();
        let terms = terms.clone();
        let running = running.clone();
        Box::pin(async move {
            terms.fetch_add(1, Ordering::SeqCst);
            running.fetch_add(1, Ordering::SeqCst);
            let tree = node.kv.open_tree("counter").expect("a tree");
            while !term.is_stopped() {
                let t = tree.clone();
                let cursor = tokio::task::spawn_blocking(move || read_u64(&t, CURSOR))
                    .await
                    .expect("read");
                let batch = node.pg.read_sequenced(cursor, 7).await.expect("the log");
                if let Some(last) = batch.last() {
                    let (t, kv, term_now) = (tree.clone(), node.kv.clone(), term.clone());
                    let n = batch.len() as u64;
                    let last = last.seq;
                    let stored = tokio::task::spawn_blocking(move || {
                        let mut b = Batch::default();
                        b.insert(
                            COUNT.to_vec(),
                            (read_u64(&t, COUNT) + n).to_be_bytes().to_vec(),
                        );
                        b.insert(CURSOR.to_vec(), last.to_be_bytes().to_vec());
                        term_now.apply(&kv, &t, &b)
                    })
                    .await
                    .expect("stored");
                    match stored {
                        Ok(()) => continue,
                        Err(StorageError::Fenced) => break,
                        Err(e) => panic!("storing the count: {e}"),
                    }
                }
                tokio::select! {
                    _ = term.stopped() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            running.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

fn running_on(handles: &[SingletonHandle]) -> Vec<usize> {
    handles
        .iter()
        .enumerate()
        .filter(|(_, h)| h.is_running())
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test]
async fn of_three_nodes_exactly_one_runs_a_singleton_and_a_graceful_stop_hands_it_over() {
    on_schema(3, |nodes| async move {
        let terms = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let mut handles: Vec<SingletonHandle> = nodes
            .iter()
            .zip(["node-a", "node-b", "node-c"])
            .map(|(n, id)| {
                singletons(n, id).run(
                    Singleton::ExperimentCounter,
                    event_counter(n, terms.clone(), running.clone()),
                )
            })
            .collect();
        eventually("one node runs it", || running_on(&handles).len() == 1).await;
        // For several lease periods it stays on one node: never two at once.
        let watch_until = Instant::now() + TTL * 3;
        while Instant::now() < watch_until {
            assert!(
                running.load(Ordering::SeqCst) <= 1,
                "two copies ran at once"
            );
            assert!(running_on(&handles).len() <= 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(terms.load(Ordering::SeqCst), 1, "one term, renewed");
        append(&nodes[0], 20).await;
        let tree = nodes[1].kv.open_tree("counter").expect("a tree");
        eventually("the events are counted", || read_u64(&tree, COUNT) == 20).await;

        let holder = running_on(&handles)[0];
        let stopped_at = Instant::now();
        handles.remove(holder).stop().await;
        eventually("another node takes over", || {
            running_on(&handles).len() == 1
        })
        .await;
        // Released, so taken at the next ask (one `renew_every`), not after the ttl.
        assert!(stopped_at.elapsed() < TTL, "{:?}", stopped_at.elapsed());
        append(&nodes[2], 5).await;
        eventually("counting goes on", || read_u64(&tree, COUNT) == 25).await;
        assert_eq!(read_u64(&tree, CURSOR), 25);
        assert_eq!(terms.load(Ordering::SeqCst), 2);
        for h in handles {
            h.stop().await;
        }
        assert_eq!(running.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn a_dead_holder_is_replaced_within_ttl_and_counting_resumes_from_the_stored_cursor() {
    on_schema(2, |nodes| async move {
        let terms = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let a = singletons(&nodes[0], "node-a").run(
            Singleton::Analyst,
            event_counter(&nodes[0], terms.clone(), running.clone()),
        );
        eventually("node a runs it", || a.is_running()).await;
        let b = singletons(&nodes[1], "node-b").run(
            Singleton::Analyst,
            event_counter(&nodes[1], terms.clone(), running.clone()),
        );
        append(&nodes[1], 30).await;
        let tree = nodes[1].kv.open_tree("counter").expect("a tree");
        eventually("a counts", || read_u64(&tree, COUNT) == 30).await;
        assert!(!b.is_running(), "b stands by while a holds the lease");

        // a dies: nothing released. Events keep coming.
        let died = Instant::now();
        a.abandon();
        append(&nodes[1], 12).await;
        eventually("b takes over", || b.is_running()).await;
        let took = died.elapsed();
        assert!(took <= TTL + EVERY + Duration::from_secs(1), "{took:?}");
        append(&nodes[1], 3).await;
        eventually("b counts on", || read_u64(&tree, COUNT) == 45).await;
        // Let b go round a few more times: nothing is counted twice.
        tokio::time::sleep(EVERY * 2).await;
        assert_eq!(read_u64(&tree, COUNT), 45);
        assert_eq!(read_u64(&tree, CURSOR), 45);
        assert_eq!(terms.load(Ordering::SeqCst), 2);
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_stale_holder_can_neither_write_the_keyspace_nor_commit_a_unit() {
    on_schema(2, |nodes| async move {
        let kept: Arc<Mutex<Vec<Term>>> = Arc::default();
        let keep = |kept: Arc<Mutex<Vec<Term>>>| {
            move |mut term: Term| {
                kept.lock().expect("not poisoned").push(term.clone());
                async move { term.stopped().await }
            }
        };
        let a = singletons(&nodes[0], "node-a").run(Singleton::CheckoutSweeper, keep(kept.clone()));
        eventually("a runs it", || a.is_running()).await;
        let stale = kept.lock().expect("not poisoned")[0].clone();
        let tree = nodes[0].kv.open_tree("sweeper").expect("a tree");
        let write = |term: Term, value: &'static [u8]| {
            let (kv, tree) = (nodes[0].kv.clone(), tree.clone());
            tokio::task::spawn_blocking(move || {
                let mut b = Batch::default();
                b.insert(b"state".to_vec(), value.to_vec());
                term.apply(&kv, &tree, &b)
            })
        };
        write(stale.clone(), b"a")
            .await
            .expect("ran")
            .expect("the holder writes");
        let unit = |fence| {
            let basket = Basket::new(
                BasketId::new(),
                BasketOwner::Anonymous,
                Currency::EUR,
                OffsetDateTime::now_utc(),
            );
            let mut unit = UnitOfWork::new().with(Change::PutBasket(basket));
            unit.fence = fence;
            unit
        };
        nodes[0]
            .pg
            .commit(unit(stale.token()))
            .await
            .expect("the holder commits");

        // a is paused (keeps its term) while its lease runs out and b takes over.
        a.abandon();
        let b = singletons(&nodes[1], "node-b").run(Singleton::CheckoutSweeper, keep(kept.clone()));
        eventually("b runs it", || b.is_running()).await;
        let current = kept.lock().expect("not poisoned")[1].clone();
        assert!(current.token() > stale.token());

        let refused = write(stale.clone(), b"stale").await.expect("ran");
        assert!(matches!(refused, Err(StorageError::Fenced)), "{refused:?}");
        assert_eq!(tree.get(b"state").expect("readable"), Some(b"a".to_vec()));
        let refused = nodes[0].pg.commit(unit(stale.token())).await;
        assert!(matches!(refused, Err(StorageError::Fenced)), "{refused:?}");
        write(current.clone(), b"b")
            .await
            .expect("ran")
            .expect("the new holder writes");
        nodes[1]
            .pg
            .commit(unit(current.token()))
            .await
            .expect("the new holder commits");
        assert_eq!(tree.get(b"state").expect("readable"), Some(b"b".to_vec()));
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_change_announced_on_one_node_is_reloaded_on_the_other() {
    on_schema(2, |nodes| async move {
        let a = Changes::listen(&nodes[0].pg, "node-a")
            .await
            .expect("listens");
        let b = Changes::listen(&nodes[1].pg, "node-b")
            .await
            .expect("listens");
        let tree_b = nodes[1].kv.open_tree("definitions").expect("a tree");
        let cache_b: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let other_topic = Arc::new(AtomicUsize::new(0));
        b.on(Topic::Experiments, {
            let (tree, cache) = (tree_b.clone(), cache_b.clone());
            move || *cache.lock().expect("not poisoned") = tree.get(b"exp").expect("readable")
        });
        b.on(Topic::Boards, {
            let other_topic = other_topic.clone();
            move || {
                other_topic.fetch_add(1, Ordering::SeqCst);
            }
        });
        let tree_a = nodes[0].kv.open_tree("definitions").expect("a tree");
        tree_a.insert(b"exp", b"v1").expect("stored");
        a.announce(Topic::Experiments);
        eventually("b reloads v1", || {
            cache_b.lock().expect("not poisoned").as_deref() == Some(b"v1".as_slice())
        })
        .await;
        tree_a.insert(b"exp", b"v2").expect("stored");
        a.announce(Topic::Experiments);
        eventually("b reloads v2", || {
            cache_b.lock().expect("not poisoned").as_deref() == Some(b"v2".as_slice())
        })
        .await;
        assert_eq!(
            other_topic.load(Ordering::SeqCst),
            0,
            "only the topic's reloads ran"
        );
        a.stop();
        b.stop();
    })
    .await;
}
