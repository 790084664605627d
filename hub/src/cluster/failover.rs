//! Timing a failover (for `omnihub bench cluster`, and used by the cluster tests without
//! timing anything): nodes share the shards, one dies without releasing, and the survivors
//! take its shards once its leases run out.

use super::membership;
use super::ownership::{Ownership, OwnershipSettings, ShardActivations};
use super::{ClusterError, SHARDS};
use crate::storage::postgres::PgStorage;
use crate::storage::StorageError;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// No local actors (the nodes of a failover run serve nothing).
pub struct NoActivations;

#[async_trait]
impl ShardActivations for NoActivations {
    async fn stop_shard(&self, _shard: u64) {}
}

/// Held entity shards by owner, from the lease table (the database's view, not a node's); the
/// singletons' reserved shards (at and above [`SHARDS`]) are not counted.
pub async fn held_by(pg: &PgStorage) -> Result<BTreeMap<String, Vec<u64>>, StorageError> {
    let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (shard, owner, _) in membership::holders(pg).await? {
        if shard >= SHARDS {
            continue;
        }
        by.entry(owner).or_default().push(shard);
    }
    for shards in by.values_mut() {
        shards.sort_unstable();
    }
    Ok(by)
}

/// Polls `held_by` every 20 ms until `done` holds, or fails after `bound`.
pub async fn wait_for(
    pg: &PgStorage,
    bound: Duration,
    done: impl Fn(&BTreeMap<String, Vec<u64>>) -> bool,
) -> Result<BTreeMap<String, Vec<u64>>, ClusterError> {
    let deadline = Instant::now() + bound;
    loop {
        let held = held_by(pg).await?;
        if done(&held) {
            return Ok(held);
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Config(format!(
                "not settled within {bound:?}: {:?}",
                held.iter().map(|(o, s)| (o, s.len())).collect::<Vec<_>>()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether exactly `nodes` hold every shard between them.
pub fn all_held_by(held: &BTreeMap<String, Vec<u64>>, nodes: &[&str]) -> bool {
    held.keys().all(|o| nodes.contains(&o.as_str()))
        && held.values().map(Vec::len).sum::<usize>() == SHARDS as usize
}

/// What a failover run measured.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    /// Shards the killed node held.
    pub moved: usize,
    /// From the kill until the survivors held every shard.
    pub took: Duration,
    /// What the settings promise: `lease_ttl + heartbeat_every`.
    pub bound: Duration,
}

/// Starts a node per storage (all on one database), waits until they share every shard,
/// kills the first without releasing, and times until the others hold every shard. The
/// survivors leave gracefully at the end.
pub async fn time_failover(
    nodes: Vec<Arc<PgStorage>>,
    ttl: Duration,
    every: Duration,
) -> Result<FailoverReport, ClusterError> {
    if nodes.len() < 2 {
        return Err(ClusterError::Config("a failover needs two nodes".into()));
    }
    let ids: Vec<String> = (0..nodes.len()).map(|i| format!("bench-{i}")).collect();
    let mut running = Vec::new();
    for (pg, id) in nodes.iter().zip(&ids) {
        let settings = OwnershipSettings {
            node_id: id.clone(),
            address: format!("http://{id}.invalid"),
            lease_ttl: ttl,
            heartbeat_every: every,
        };
        running.push(Ownership::start(
            pg.clone(),
            settings,
            Arc::new(NoActivations),
        )?);
    }
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let settle = (ttl + every) * 4;
    let before = wait_for(&nodes[1], settle, |h| {
        all_held_by(h, &all) && h.len() == all.len()
    })
    .await?;
    let moved = before.get(&ids[0]).map_or(0, Vec::len);
    let mut running = running.into_iter();
    if let Some(victim) = running.next() {
        victim.kill();
    }
    let killed = Instant::now();
    wait_for(&nodes[1], settle, |h| all_held_by(h, &all[1..])).await?;
    let took = killed.elapsed();
    for node in running {
        node.leave().await?;
    }
    Ok(FailoverReport {
        moved,
        took,
        bound: ttl + every,
    })
}
