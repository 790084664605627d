//! Hub nodes on one PostgreSQL (`storage = "cluster"`), in one process, for the cluster suites:
//! `hub::Application`s on port 0 sharing a fresh schema ([`on_schema`]), with distinct node ids.
//! Needs PostgreSQL at `OMNIHUB_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use super::{eventually, seed, settings};
use hub::clock::SystemClock;
use hub::config::StorageKind;
use hub::{Application, HubHandle};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn url() -> String {
    std::env::var("OMNIHUB_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub async fn admin(sql: &str) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url())
        .await
        .expect("PostgreSQL answers (cluster-tests need it; .ci/run starts it)");
    sqlx::query(sql).execute(&pool).await.expect(sql);
    pool.close().await;
}

pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    pub handle: HubHandle,
    pub server: actix_web::dev::ServerHandle,
    pub stopped: tokio::task::JoinHandle<Result<(), hub::HubError>>,
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
}

pub async fn start(id: &str, schema: &str) -> Node {
    start_with(id, schema, settings).await
}

/// [`start`] with settings made by `settings_for` (in the node's data dir), then made a
/// cluster node's.
pub async fn start_with(
    id: &str,
    schema: &str,
    settings_for: impl FnOnce(&std::path::Path) -> hub::HubSettings,
) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings_for(dir.path());
    s.storage = StorageKind::Cluster;
    s.cluster.postgres_url =
        SecretString::from(format!("{}?options=-c%20search_path%3D{schema}", url()));
    s.cluster.pool_size = 8;
    s.cluster.node_id = id.into();
    s.cluster.lease_ttl = Duration::from_secs(2);
    s.cluster.heartbeat_every = Duration::from_millis(250);
    let app = Application::build(s, Arc::new(SystemClock))
        .await
        .expect("a cluster node builds");
    let node = Node {
        id: id.into(),
        addr: app.address(),
        handle: app.handle(),
        server: app.server_handle(),
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

pub async fn json_ok(res: reqwest::Response, what: &str) -> Value {
    let status = res.status();
    let body = res.text().await.expect("a body");
    assert!(status.is_success(), "{what}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
}

pub fn quantity(basket: &Value, sku: &str) -> i64 {
    basket["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["sku"] == sku)
        .and_then(|l| l["quantity"].as_i64())
        .unwrap_or(0)
}

/// Runs `test` on a fresh schema, dropped afterwards (also when the test fails).
pub async fn on_schema<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin(&format!("CREATE SCHEMA {schema}")).await;
    let outcome = {
        let schema = schema.clone();
        actix_web::rt::spawn(async move { test(schema).await }).await
    };
    admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
