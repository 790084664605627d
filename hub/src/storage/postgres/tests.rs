//! PostgreSQL's run of the conformance suite, and what only the cluster storage does: fencing,
//! and appends announced across nodes. Compiled with the `cluster-tests` feature; needs the
//! server at `OMNIHUB_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Each test works in a schema of its own, dropped afterwards (also when the test fails).

use super::PgStorage;
use crate::storage::{
    BasketStore, Change, Committer, CustomerStore, EventLog, FencingToken, OrderStore,
    StorageError, UnitOfWork,
};
use protocol::{
    AnonymousId, Basket, BasketId, BasketOwner, Channel, Currency, Event, EventKind, Subject,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

pub(crate) use super::testing::{admin, drop_schema, fresh_schema, url};

/// Runs `case` with `nodes` storages on one fresh schema (as hub nodes sharing a database),
/// then drops the schema, and only then fails if the case failed.
pub(crate) async fn on_nodes<F, Fut>(nodes: usize, case: F)
where
    F: FnOnce(Vec<Arc<PgStorage>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (schema, options) = fresh_schema().await;
    let mut storages = Vec::new();
    for _ in 0..nodes {
        storages.push(
            PgStorage::connect(options.clone(), 4)
                .await
                .expect("storage opens and migrates"),
        );
    }
    let closing = storages.clone();
    let outcome = tokio::spawn(case(storages)).await;
    for s in closing {
        s.close().await;
    }
    drop_schema(&schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The conformance suite's harness: one node.
pub async fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<PgStorage>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_nodes(1, |mut nodes| async move {
        let s = nodes.pop().expect("one node");
        case(s).await
    })
    .await;
}

mod conformance {
    crate::storage::conformance::suite!(super::on_postgres);
}

fn basket(version: u64) -> Basket {
    let mut b = Basket::new(
        BasketId::new(),
        BasketOwner::Anonymous,
        Currency::EUR,
        OffsetDateTime::UNIX_EPOCH,
    );
    b.version = version;
    b
}

fn event() -> Event {
    Event::new(
        OffsetDateTime::UNIX_EPOCH,
        Subject::Anonymous(AnonymousId::new()),
        Channel::Web,
        EventKind::ProductView,
    )
}

const TTL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fencing_token_writes_nothing_of_its_unit() {
    on_nodes(2, |nodes| async move {
        let (a, b) = (&nodes[0], &nodes[1]);
        let old = a
            .acquire_lease(7, "node-a", Duration::ZERO)
            .await
            .expect("acquired")
            .expect("the shard was free");
        // The lease ran out at once (a paused or partitioned node): another node takes it.
        let new = b
            .acquire_lease(7, "node-b", TTL)
            .await
            .expect("acquired")
            .expect("an expired lease can be taken");
        assert_eq!(new.shard, 7);
        assert!(new.token > old.token, "tokens grow on every acquisition");
        assert_eq!(
            a.lease_holder(7).await.expect("read"),
            Some(("node-b".into(), new))
        );

        let stale_basket = basket(1);
        let mut stale = UnitOfWork::new()
            .with(Change::PutBasket(stale_basket.clone()))
            .with(Change::MarkWebhookEvent("evt_stale".into()))
            .with_event(event());
        stale.fence = Some(old);
        assert!(matches!(a.commit(stale).await, Err(StorageError::Fenced)));
        assert_eq!(b.basket(stale_basket.id).await.expect("read"), None);
        assert!(!b.webhook_seen("evt_stale").await.expect("read"));
        assert!(b.read_sequenced(0, 10).await.expect("read").is_empty());
        assert!(matches!(
            a.renew_lease(old, TTL).await,
            Err(StorageError::Fenced)
        ));

        let mut current = UnitOfWork::new().with(Change::PutBasket(basket(2)));
        current.fence = Some(new);
        b.commit(current).await.expect("the owner's write is kept");
        // A token that was never handed out, and a shard without a lease, are refused too.
        for bogus in [
            FencingToken {
                shard: 7,
                token: new.token + 1,
            },
            FencingToken { shard: 8, token: 1 },
        ] {
            let mut unit = UnitOfWork::new().with(Change::PutBasket(basket(3)));
            unit.fence = Some(bogus);
            assert!(matches!(b.commit(unit).await, Err(StorageError::Fenced)));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_is_refused_to_others_until_released() {
    on_nodes(2, |nodes| async move {
        let (a, b) = (&nodes[0], &nodes[1]);
        let held = a
            .acquire_lease(1, "node-a", TTL)
            .await
            .expect("acquired")
            .expect("free");
        assert_eq!(
            b.acquire_lease(1, "node-b", TTL).await.expect("asked"),
            None
        );
        a.renew_lease(held, TTL)
            .await
            .expect("renewed by its owner");
        a.release_lease(held).await.expect("released");
        assert_eq!(a.lease_holder(1).await.expect("read"), None);
        let taken = b
            .acquire_lease(1, "node-b", TTL)
            .await
            .expect("acquired")
            .expect("released leases can be taken");
        assert!(taken.token > held.token);
        // Writes with the released token are refused.
        let mut unit = UnitOfWork::new().with(Change::PutBasket(basket(1)));
        unit.fence = Some(held);
        assert!(matches!(a.commit(unit).await, Err(StorageError::Fenced)));
        // The same owner acquiring again (a restarted node) also gets a new token, which
        // fences its previous incarnation.
        let again = b
            .acquire_lease(1, "node-b", TTL)
            .await
            .expect("acquired")
            .expect("its own lease");
        assert!(again.token > taken.token);
        let mut unit = UnitOfWork::new().with(Change::PutBasket(basket(1)));
        unit.fence = Some(taken);
        assert!(matches!(b.commit(unit).await, Err(StorageError::Fenced)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_statement_takes_a_dead_owners_shards_and_leaves_a_live_owners_alone() {
    on_nodes(3, |nodes| async move {
        let (dead, live, survivor) = (&nodes[0], &nodes[1], &nodes[2]);
        let odd: Vec<u64> = (0..256).filter(|s| s % 2 == 1).collect();
        let even: Vec<u64> = (0..256).filter(|s| s % 2 == 0).collect();
        // The dead node's leases run out at once (it was killed right after taking them);
        // the live node's run for 30 s.
        let before = dead
            .acquire_leases(&odd, "node-dead", Duration::ZERO)
            .await
            .expect("acquired");
        assert_eq!(before.iter().map(|t| t.shard).collect::<Vec<_>>(), odd);
        let kept = live
            .acquire_leases(&even, "node-live", TTL)
            .await
            .expect("acquired");
        assert_eq!(kept.len(), 128);
        // The survivor asks for every shard (twice over: duplicates are harmless) in one
        // statement: it gets exactly the dead node's, each with a greater token.
        let mut all: Vec<u64> = (0..256).rev().collect();
        all.extend(0..256);
        let taken = survivor
            .acquire_leases(&all, "node-survivor", TTL)
            .await
            .expect("acquired");
        assert_eq!(taken.iter().map(|t| t.shard).collect::<Vec<_>>(), odd);
        for (old, new) in before.iter().zip(&taken) {
            assert!(new.token > old.token, "{old:?} -> {new:?}");
        }
        for t in &kept {
            assert_eq!(
                survivor.lease_holder(t.shard).await.expect("read"),
                Some(("node-live".into(), *t)),
                "a live owner keeps its lease and token"
            );
        }
        // The dead node's tokens are fenced; the live node's and the survivor's renew.
        assert!(dead
            .renew_leases(&before, TTL)
            .await
            .expect("asked")
            .is_empty());
        let mut renewed = live.renew_leases(&kept, TTL).await.expect("renewed");
        renewed.sort_unstable();
        assert_eq!(renewed, even);
        let mut renewed = survivor.renew_leases(&taken, TTL).await.expect("renewed");
        renewed.sort_unstable();
        assert_eq!(renewed, odd);
        // Releasing in one statement frees them all (and only them), for greater tokens next.
        survivor.release_leases(&taken).await.expect("released");
        let again = live
            .acquire_leases(&all, "node-live", TTL)
            .await
            .expect("acquired");
        assert_eq!(again.len(), 256, "the released ones and its own");
        for (t, a) in taken.iter().zip(again.iter().filter(|a| a.shard % 2 == 1)) {
            assert!(a.token > t.token);
        }
        // An empty batch asks nothing.
        assert!(survivor
            .acquire_leases(&[], "node-survivor", TTL)
            .await
            .expect("asked")
            .is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_on_one_node_wake_readers_on_another() {
    on_nodes(2, |nodes| async move {
        let (a, b) = (&nodes[0], &nodes[1]);
        let mut rx = b.appended();
        let start = *rx.borrow();
        a.append(vec![event(), event(), event()].into())
            .await
            .expect("appended");
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v >= start + 3))
            .await
            .expect("node b hears of node a's append in time")
            .expect("watch open");
        let read = b.read_sequenced(start, 10).await.expect("read");
        assert_eq!(read.len(), 3);
        // The link secret is shared by the nodes.
        assert_eq!(
            a.link_secret().await.expect("read"),
            b.link_secret().await.expect("read")
        );
    })
    .await;
}
