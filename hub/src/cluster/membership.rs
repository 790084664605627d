//! Which hub nodes are live: each node's row of `cluster_nodes`, heartbeated with the
//! database's clock (`now()`, never a node's), live while its heartbeat is younger than a ttl
//! *or* it still holds an unexpired shard lease.
//!
//! The second half makes "dead" and "its shards can be taken" the same moment: a node renews
//! its leases after its heartbeat in each round, so its leases outlive its heartbeat by a
//! little; counting it dead on the heartbeat alone would make the survivors try (and fail) to
//! take its shards in one round and succeed only one round later. Counted this way, the first
//! round that sees a node dead takes every one of its shards.

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

/// Whether a node counts as live (see the module docs): `$1` is the heartbeat ttl in
/// milliseconds, `$2` the number of shards (singleton and relay leases, above them, do not
/// keep a node live).
const LIVE: &str = "(n.heartbeat_at > now() - $1 * interval '1 millisecond' \
     OR EXISTS (SELECT 1 FROM shard_leases l WHERE l.owner = n.node_id \
     AND l.shard < $2 AND l.expires_at > now()))";

fn shard_count() -> i64 {
    i64::try_from(crate::cluster::SHARDS).unwrap_or(i64::MAX)
}

fn nodes(rows: Vec<(String, String)>) -> Vec<Node> {
    rows.into_iter()
        .map(|(id, address)| Node { id, address })
        .collect()
}

/// The live nodes (heartbeat younger than `ttl`, or holding an unexpired shard lease), by id.
pub async fn live(pg: &PgStorage, ttl: Duration) -> Result<Vec<Node>> {
    let rows: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT n.node_id, n.address FROM cluster_nodes n WHERE {LIVE} ORDER BY n.node_id"
    ))
    .bind(millis(ttl))
    .bind(shard_count())
    .fetch_all(pg.pool())
    .await
    .map_err(db)?;
    Ok(nodes(rows))
}

/// The live nodes as [`heartbeat_and_live`] lists them, and how soon the first of the
/// others stops counting as live (unless it heartbeats or renews before).
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// By id, `node` included.
    pub nodes: Vec<Node>,
    /// From the database's `now()`: the earliest moment another live node's heartbeat and
    /// leases have all run out.
    pub next_death: Option<Duration>,
}

/// [`heartbeat`] for `node`, then [`live`], in one statement (one round trip). The answer
/// always includes `node` (the statement's own heartbeat is not visible to its query).
pub async fn heartbeat_and_live(pg: &PgStorage, node: &Node, ttl: Duration) -> Result<Live> {
    let rows: Vec<(String, String, Option<f64>)> = sqlx::query_as(&format!(
        "WITH beat AS (INSERT INTO cluster_nodes (node_id, address, heartbeat_at) \
         VALUES ($3, $4, now()) ON CONFLICT (node_id) DO UPDATE \
         SET address = EXCLUDED.address, heartbeat_at = now() RETURNING node_id) \
         SELECT n.node_id, n.address, EXTRACT(EPOCH FROM GREATEST( \
         n.heartbeat_at + $1 * interval '1 millisecond', \
         (SELECT max(l.expires_at) FROM shard_leases l WHERE l.owner = n.node_id \
         AND l.shard < $2)) - now())::float8 * 1000.0 \
         FROM cluster_nodes n WHERE n.node_id <> $3 AND {LIVE} \
         UNION ALL SELECT $3, $4, NULL ORDER BY 1"
    ))
    .bind(millis(ttl))
    .bind(shard_count())
    .bind(&node.id)
    .bind(&node.address)
    .fetch_all(pg.pool())
    .await
    .map_err(db)?;
    let next_death = rows
        .iter()
        .filter_map(|(_, _, ms)| *ms)
        .filter(|ms| ms.is_finite())
        .fold(None, |min: Option<f64>, ms| {
            Some(min.map_or(ms, |m| m.min(ms)))
        })
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    Ok(Live {
        nodes: rows
            .into_iter()
            .map(|(id, address, _)| Node { id, address })
            .collect(),
        next_death,
    })
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
