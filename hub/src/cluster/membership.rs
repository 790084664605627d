//! Which hub nodes are live: each node's row of `cluster_nodes`, heartbeated with the
//! database's clock (`now()`, never a node's), live while younger than a ttl.

use crate::storage::postgres::PgStorage;
use crate::storage::{Result, StorageError};
use std::time::Duration;

/// A live node: its id (the owner name of its leases) and the address other nodes forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// Its advertised internal address, e.g. `http://10.0.0.7:8080`.
    pub address: String,
}

fn db(e: sqlx::Error) -> StorageError {
    crate::storage::postgres::db(e)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Marks `node` live now (and records its address).
pub async fn heartbeat(pg: &PgStorage, node: &Node) -> Result<()> {
    sqlx::query(
        "INSERT INTO cluster_nodes (node_id, address, heartbeat_at) VALUES ($1, $2, now()) \
         ON CONFLICT (node_id) DO UPDATE SET address = EXCLUDED.address, heartbeat_at = now()",
    )
    .bind(&node.id)
    .bind(&node.address)
    .execute(pg.pool())
    .await
    .map_err(db)?;
    Ok(())
}

/// The nodes whose heartbeat is younger than `ttl`, by id.
pub async fn live(pg: &PgStorage, ttl: Duration) -> Result<Vec<Node>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT node_id, address FROM cluster_nodes \
         WHERE heartbeat_at > now() - $1 * interval '1 millisecond' ORDER BY node_id",
    )
    .bind(millis(ttl))
    .fetch_all(pg.pool())
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|(id, address)| Node { id, address })
        .collect())
}

/// Removes `node` (it leaves gracefully): the others stop counting it at once.
pub async fn leave(pg: &PgStorage, node_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
        .bind(node_id)
        .execute(pg.pool())
        .await
        .map_err(db)?;
    Ok(())
}

/// Every held (unexpired) lease: shard, owner id, and the owner's address if it is a known
/// node.
pub async fn holders(pg: &PgStorage) -> Result<Vec<(u64, String, Option<String>)>> {
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT l.shard, l.owner, n.address FROM shard_leases l \
         LEFT JOIN cluster_nodes n ON n.node_id = l.owner WHERE l.expires_at > now()",
    )
    .fetch_all(pg.pool())
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .filter_map(|(shard, owner, address)| {
            u64::try_from(shard).ok().map(|s| (s, owner, address))
        })
        .collect())
}
