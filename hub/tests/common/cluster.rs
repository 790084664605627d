//! Hub nodes on one PostgreSQL schema, in one process (`cluster-tests`): each test runs its
//! nodes on a fresh schema ([`on_schema`]), dropped afterwards, also when the test fails.
//! PostgreSQL at `OMNIHUB_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`).

use super::{eventually, seed, settings};
use hub::clock::SystemClock;
use hub::config::StorageKind;
use hub::{Application, HubHandle, HubSettings};
use secrecy::SecretString;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The nodes' lease ttl and heartbeat: a dead node's shards and singletons move within
/// `LEASE_TTL + HEARTBEAT` (plus a round trip).
pub const LEASE_TTL: Duration = Duration::from_secs(2);
pub const HEARTBEAT: Duration = Duration::from_millis(250);

pub use hub::storage::postgres::testing::admin;
use hub::storage::postgres::testing::url_in;

/// Runs `case` on a fresh schema (its name is the argument) in the actix runtime, then drops
/// the schema, and only then fails if the case failed.
pub async fn on_schema<F, Fut>(case: F)
where
    F: FnOnce(String) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin(&format!("CREATE SCHEMA {schema}")).await;
    let outcome = {
        let schema = schema.clone();
        actix_web::rt::spawn(async move { case(schema).await }).await
    };
    admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    pub handle: HubHandle,
    pub server: actix_web::dev::ServerHandle,
    pub stopped: tokio::task::JoinHandle<Result<(), hub::HubError>>,
    /// Armed, the node ends like a crash when its server stops.
    pub crash: hub::app::CrashOnStop,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn owns_basket(&self, id: &str) -> bool {
        let id: protocol::BasketId = id.parse().expect("a basket id");
        let view = self.handle.ownership.as_ref().expect("a cluster node");
        view.owner(hub::cluster::shard_of(&id))
            .is_some_and(|o| o.is_local())
    }

    /// Leaves gracefully and runs to the end (shards and singletons handed over).
    pub async fn leave(self) {
        self.server.stop(true).await;
        self.stopped
            .await
            .expect("the node ran")
            .expect("the node stopped cleanly");
    }

    /// Ends as if the process died: nothing released, the leases run out.
    pub async fn die(self) {
        self.crash.arm();
        self.server.stop(false).await;
        self.stopped
            .await
            .expect("the node ran")
            .expect("the node ended");
    }
}

/// A node `id` on `schema` with the test catalog.
pub async fn start(id: &str, schema: &str) -> Node {
    start_with(id, schema, |_| {}).await
}

/// Like [`start`], with `adjust` applied to the settings last.
pub async fn start_with(id: &str, schema: &str, adjust: impl FnOnce(&mut HubSettings)) -> Node {
    start_from(id, schema, settings, adjust).await
}

/// Like [`start_with`], from the settings `settings_for` makes (in the node's data dir).
pub async fn start_from(
    id: &str,
    schema: &str,
    settings_for: impl FnOnce(&std::path::Path) -> HubSettings,
    adjust: impl FnOnce(&mut HubSettings),
) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings_for(dir.path());
    s.storage = StorageKind::Cluster;
    s.cluster.postgres_url = SecretString::from(url_in(schema));
    s.cluster.pool_size = 8;
    s.cluster.node_id = id.into();
    s.cluster.lease_ttl = LEASE_TTL;
    s.cluster.heartbeat_every = HEARTBEAT;
    adjust(&mut s);
    let app = Application::build(s, Arc::new(SystemClock))
        .await
        .expect("a cluster node builds");
    let node = Node {
        id: id.into(),
        addr: app.address(),
        handle: app.handle(),
        server: app.server_handle(),
        crash: app.crash_on_stop(),
        stopped: actix_web::rt::spawn(app.run()),
        _dir: dir,
    };
    // Every node stores the same catalog and stock, idempotently.
    seed(&node.handle).await;
    node
}

/// Until every shard has an owner and every live node holds some, as each node sees it.
pub async fn settled(nodes: &[&Node]) {
    eventually(Duration::from_secs(30), || async {
        nodes
            .iter()
            .all(|n| {
                let owners = n.handle.ownership.as_ref().expect("cluster").owners();
                let held: usize = owners.values().map(Vec::len).sum();
                held == hub::cluster::SHARDS as usize
                    && nodes
                        .iter()
                        .all(|m| owners.get(&m.id).is_some_and(|s| !s.is_empty()))
                    && owners.keys().all(|k| nodes.iter().any(|m| &m.id == k))
            })
            .then_some(())
    })
    .await;
}

pub async fn json_ok(res: reqwest::Response, what: &str) -> serde_json::Value {
    let status = res.status();
    let body = res.text().await.expect("a body");
    assert!(status.is_success(), "{what}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
}

pub fn quantity(basket: &serde_json::Value, sku: &str) -> i64 {
    basket["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["sku"] == sku)
        .and_then(|l| l["quantity"].as_i64())
        .unwrap_or(0)
}
