//! Membership, ownership, fencing and forwarding against PostgreSQL (the `cluster-tests`
//! feature; the server at `OMNIHUB_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test has a schema of its own, dropped
//! afterwards, also when it fails. Nothing here times anything: waits are polls with a bound.

use super::failover::{all_held_by, held_by, time_failover, wait_for, NoActivations};
use super::forward::{route, Forwarder, FORWARDED_BY};
use super::ownership::{Ownership, OwnershipSettings, ShardActivations};
use super::rendezvous::assign;
use super::{shard_of, SHARDS};
use crate::storage::postgres::PgStorage;
use crate::storage::{Change, Committer, FencingToken, StorageError, UnitOfWork};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use async_trait::async_trait;
use futures_util::FutureExt;
use protocol::{Basket, BasketId, BasketOwner, Currency, CustomerId, SessionRecord};
use sqlx::postgres::PgConnectOptions;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

use crate::storage::postgres::tests::{admin, url};

/// Runs `case` with `nodes` storages on one fresh schema, then drops the schema, and only
/// then fails if the case failed.
async fn on_schema<F, Fut>(nodes: usize, case: F)
where
    F: FnOnce(Vec<Arc<PgStorage>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin(&format!("CREATE SCHEMA {schema}")).await;
    let options: PgConnectOptions = url().parse().expect("a valid url");
    let options = options.options([("search_path", schema.as_str())]);
    let mut storages = Vec::new();
    for _ in 0..nodes {
        storages.push(
            PgStorage::connect(options.clone(), 4)
                .await
                .expect("storage opens and migrates"),
        );
    }
    let outcome = AssertUnwindSafe(case(storages.clone()))
        .catch_unwind()
        .await;
    for s in storages {
        s.close().await;
    }
    admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn settings(id: &str, ttl: Duration, every: Duration) -> OwnershipSettings {
    OwnershipSettings {
        node_id: id.into(),
        address: format!("http://{id}.invalid"),
        lease_ttl: ttl,
        heartbeat_every: every,
    }
}

const SETTLE: Duration = Duration::from_secs(20);

/// What rendezvous hashing assigns to `ids`, by owner.
fn expected(ids: &[&str]) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut by: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for (shard, owner) in assign(SHARDS, ids).into_iter().enumerate() {
        by.entry(ids[owner].to_string())
            .or_default()
            .push(shard as u64);
    }
    by
}

/// Polls `check` until it holds or `SETTLE` passes.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {SETTLE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn basket_unit(id: BasketId, fence: Option<FencingToken>) -> UnitOfWork {
    let basket = Basket::new(
        id,
        BasketOwner::Anonymous,
        Currency::EUR,
        OffsetDateTime::now_utc(),
    );
    let mut unit = UnitOfWork::new().with(Change::PutBasket(basket));
    unit.fence = fence;
    unit
}

/// A basket id in `shard`.
fn basket_in(shard: u64) -> BasketId {
    loop {
        let id = BasketId::new();
        if shard_of(&id) == shard {
            return id;
        }
    }
}

#[tokio::test]
async fn three_nodes_share_every_shard_as_rendezvous_hashing_says() {
    on_schema(3, |pgs| async move {
        let ids = ["node-a", "node-b", "node-c"];
        let ttl = Duration::from_secs(3);
        let every = Duration::from_millis(150);
        let nodes: Vec<Ownership> = pgs
            .iter()
            .zip(ids)
            .map(|(pg, id)| {
                Ownership::start(
                    pg.clone(),
                    settings(id, ttl, every),
                    Arc::new(NoActivations),
                )
                .expect("valid settings")
            })
            .collect();
        let want = expected(&ids);
        let held = wait_for(&pgs[0], SETTLE, |h| *h == want)
            .await
            .expect("the nodes settle on the rendezvous assignment");
        for shards in held.values() {
            // Even shares: at most ceil(256 / 3) = 86, so at least 256 - 2 * 86 = 84.
            assert!((84..=86).contains(&shards.len()), "{}", shards.len());
        }
        for (node, id) in nodes.iter().zip(ids) {
            let view = node.view();
            eventually("each view sees its shards and the others'", || {
                view.local_shards() == want[id] && (0..SHARDS).all(|s| view.owner(s).is_some())
            })
            .await;
            let theirs = want.iter().find(|(o, _)| *o != id).expect("another node");
            let owner = view.owner(theirs.1[0]).expect("an owner");
            assert_eq!(owner.node_id, *theirs.0);
            assert_eq!(owner.address, Some(format!("http://{}.invalid", theirs.0)));
            assert!(!owner.is_local() && view.token(theirs.1[0]).is_none());
            let mine = view.owner(want[id][0]).expect("an owner");
            assert!(mine.is_local());
        }
        for node in nodes {
            node.leave().await.expect("leaves");
        }
        let after = held_by(&pgs[0]).await.expect("reads leases");
        assert!(after.is_empty(), "leaving releases every lease: {after:?}");
    })
    .await;
}

#[tokio::test]
async fn a_killed_node_s_shards_go_to_the_survivors_and_its_tokens_are_fenced() {
    on_schema(3, |pgs| async move {
        let ids = ["node-a", "node-b", "node-c"];
        let ttl = Duration::from_millis(1500);
        let every = Duration::from_millis(200);
        let mut nodes: Vec<Ownership> = pgs
            .iter()
            .zip(ids)
            .map(|(pg, id)| {
                Ownership::start(
                    pg.clone(),
                    settings(id, ttl, every),
                    Arc::new(NoActivations),
                )
                .expect("valid settings")
            })
            .collect();
        let want = expected(&ids);
        wait_for(&pgs[0], SETTLE, |h| *h == want)
            .await
            .expect("settled");
        let victim = nodes.remove(0);
        let shard = want["node-a"][0];
        let view = victim.view();
        eventually("the victim knows its token", || view.token(shard).is_some()).await;
        let stale = view.token(shard).expect("a token");
        let id = basket_in(shard);
        pgs[0]
            .commit(basket_unit(id, Some(stale)))
            .await
            .expect("the owner's unit commits");
        victim.kill();
        let held = wait_for(&pgs[1], SETTLE, |h| all_held_by(h, &ids[1..]))
            .await
            .expect("the survivors take every shard once the leases run out");
        assert_eq!(held, expected(&ids[1..]), "and share them by rendezvous");
        let refused = pgs[0].commit(basket_unit(id, Some(stale))).await;
        assert!(
            matches!(refused, Err(StorageError::Fenced)),
            "the dead node's token is refused: {refused:?}"
        );
        let new_owner = usize::from(!expected(&ids[1..])["node-b"].contains(&shard));
        let fresh = nodes[new_owner].view();
        eventually("the new owner has a token", || fresh.token(shard).is_some()).await;
        let token = fresh.token(shard).expect("a token");
        assert!(token.token > stale.token);
        pgs[1 + new_owner]
            .commit(basket_unit(id, Some(token)))
            .await
            .expect("the new owner's unit commits");
        for node in nodes {
            node.leave().await.expect("leaves");
        }
    })
    .await;
}

/// Records, for each shard stopped, whether its lease was still this node's at that moment.
struct Recording {
    pg: Arc<PgStorage>,
    node: String,
    stopped: Mutex<Vec<(u64, bool)>>,
}

#[async_trait]
impl ShardActivations for Recording {
    async fn stop_shard(&self, shard: u64) {
        let holder = self.pg.lease_holder(shard).await.expect("reads the lease");
        let still_mine = holder.is_some_and(|(owner, _)| owner == self.node);
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((shard, still_mine));
    }
}

#[tokio::test]
async fn a_graceful_leave_hands_over_without_waiting_for_the_ttl() {
    on_schema(3, |pgs| async move {
        let ids = ["node-a", "node-b", "node-c"];
        // A lease would last a minute: only releasing can move shards within the bound.
        let ttl = Duration::from_secs(60);
        let every = Duration::from_millis(100);
        let recording = Arc::new(Recording {
            pg: pgs[2].clone(),
            node: "node-c".into(),
            stopped: Mutex::new(Vec::new()),
        });
        let mut nodes = Vec::new();
        for (i, (pg, id)) in pgs.iter().zip(ids).enumerate() {
            let activations: Arc<dyn ShardActivations> = if i == 2 {
                recording.clone()
            } else {
                Arc::new(NoActivations)
            };
            nodes.push(
                Ownership::start(pg.clone(), settings(id, ttl, every), activations)
                    .expect("valid settings"),
            );
        }
        let want = expected(&ids);
        wait_for(&pgs[0], SETTLE, |h| *h == want)
            .await
            .expect("settled");
        // Only the leave's stops count: a node whose first round ran before the others'
        // heartbeats took more than its share and handed the rest over while settling.
        recording
            .stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let leaving = nodes.pop().expect("three nodes");
        leaving.leave().await.expect("leaves");
        let held = wait_for(&pgs[0], SETTLE, |h| all_held_by(h, &ids[..2]))
            .await
            .expect("the others take the shards at once");
        assert_eq!(held, expected(&ids[..2]));
        let stopped = recording
            .stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut shards: Vec<u64> = stopped.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        assert_eq!(shards, want["node-c"], "every shard's actors were stopped");
        assert!(
            stopped.iter().all(|(_, still_mine)| *still_mine),
            "actors stop before the lease is released"
        );
        for node in nodes {
            node.leave().await.expect("leaves");
        }
    })
    .await;
}

#[tokio::test]
async fn a_failover_can_be_timed() {
    on_schema(2, |pgs| async move {
        let report = time_failover(pgs, Duration::from_millis(1200), Duration::from_millis(200))
            .await
            .expect("the survivor takes over");
        assert!(report.moved > 0 && report.moved < SHARDS as usize);
        assert_eq!(report.bound, Duration::from_millis(1400));
    })
    .await;
}

/// A node of the forwarding test: what its handlers saw.
#[derive(Default)]
struct Seen {
    hits: AtomicUsize,
}

async fn echo(
    req: HttpRequest,
    body: web::Bytes,
    me: web::Data<(String, Arc<Seen>)>,
) -> HttpResponse {
    me.1.hits.fetch_add(1, Ordering::SeqCst);
    let forwarded_by = req
        .headers()
        .get(FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    HttpResponse::Created()
        .insert_header(("x-served-by", me.0.clone()))
        .json(serde_json::json!({
            "node": me.0,
            "path": req.uri().to_string(),
            "body": String::from_utf8_lossy(&body),
            "forwarded_by": forwarded_by,
            "cookie": req.headers().get("cookie").and_then(|v| v.to_str().ok()),
        }))
}

/// Starts a node's HTTP server (forwarding middleware, echo handlers) on port 0, and its
/// ownership with the server's address.
fn serve(
    pg: Arc<PgStorage>,
    id: &str,
) -> (Ownership, actix_web::dev::ServerHandle, Arc<Seen>, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = format!("http://{}", listener.local_addr().expect("an address"));
    let mut s = settings(id, Duration::from_secs(3), Duration::from_millis(150));
    s.address = address.clone();
    let ownership = Ownership::start(pg.clone(), s, Arc::new(NoActivations)).expect("valid");
    let forwarder = web::Data::new(Forwarder::new(ownership.view(), pg).expect("a client"));
    let seen = Arc::new(Seen::default());
    let me = web::Data::new((id.to_string(), seen.clone()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(forwarder.clone())
            .app_data(me.clone())
            .wrap(from_fn(route))
            .route("/api/v1/baskets/{id}/lines", web::post().to(echo))
            .route("/api/v1/customers/me", web::get().to(echo))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listens")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (ownership, handle, seen, address)
}

#[actix_web::test]
async fn a_request_for_another_node_s_entity_gets_the_owner_s_answer_and_never_loops() {
    on_schema(2, |pgs| async move {
        let (a, a_server, a_seen, a_url) = serve(pgs[0].clone(), "node-a");
        let (b, b_server, b_seen, _) = serve(pgs[1].clone(), "node-b");
        let want = expected(&["node-a", "node-b"]);
        wait_for(&pgs[0], SETTLE, |h| *h == want)
            .await
            .expect("settled");
        let a_view = a.view();
        eventually("a knows every owner", || {
            (0..SHARDS).all(|s| a_view.owner(s).is_some())
        })
        .await;
        let http = reqwest::Client::new();
        // B's basket, asked at A: B answers, through A.
        let theirs = basket_in(want["node-b"][0]);
        let res = http
            .post(format!("{a_url}/api/v1/baskets/{theirs}/lines?x=1"))
            .header("cookie", "omnihub_basket=t")
            .body("{\"sku\":\"S-1\"}")
            .send()
            .await
            .expect("answers");
        assert_eq!(res.status().as_u16(), 201);
        assert_eq!(res.headers()["x-served-by"], "node-b");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["node"], "node-b");
        assert_eq!(body["path"], format!("/api/v1/baskets/{theirs}/lines?x=1"));
        assert_eq!(body["body"], "{\"sku\":\"S-1\"}");
        assert_eq!(body["forwarded_by"], "node-a");
        assert_eq!(body["cookie"], "omnihub_basket=t");
        assert_eq!(
            (
                a_seen.hits.load(Ordering::SeqCst),
                b_seen.hits.load(Ordering::SeqCst)
            ),
            (0, 1)
        );
        // A's own basket is served at A.
        let ours = basket_in(want["node-a"][0]);
        let res = http
            .post(format!("{a_url}/api/v1/baskets/{ours}/lines"))
            .send()
            .await
            .expect("answers");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(
            (body["node"].as_str(), body["forwarded_by"].as_str()),
            (Some("node-a"), None)
        );
        // Already forwarded once, and not A's: refused, never a second hop.
        let res = http
            .post(format!("{a_url}/api/v1/baskets/{theirs}/lines"))
            .header(FORWARDED_BY, "node-b")
            .send()
            .await
            .expect("answers");
        assert_eq!(res.status().as_u16(), 503);
        assert_eq!(res.headers()["retry-after"], "1");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_owner");
        assert_eq!(b_seen.hits.load(Ordering::SeqCst), 1, "B never saw it");
        // A signed-in customer of B's shard, asked at A with a bearer session: B answers.
        let customer = loop {
            let c = CustomerId::new();
            if want["node-b"].contains(&shard_of(&c)) {
                break c;
            }
        };
        let now = OffsetDateTime::now_utc();
        pgs[0]
            .commit(UnitOfWork::new().with(Change::PutSession {
                token_hash: crate::auth::token_hash("session-1"),
                session: SessionRecord {
                    customer,
                    created_at: now,
                    expires_at: now + time::Duration::days(1),
                },
            }))
            .await
            .expect("a session");
        let res = http
            .get(format!("{a_url}/api/v1/customers/me"))
            .bearer_auth("session-1")
            .send()
            .await
            .expect("answers");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["node"], "node-b");
        a_server.stop(true).await;
        b_server.stop(true).await;
        a.leave().await.expect("leaves");
        b.leave().await.expect("leaves");
    })
    .await;
}
