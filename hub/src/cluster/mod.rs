//! Several hub nodes on one PostgreSQL: which node runs the actor of a basket or customer.
//!
//! - Every basket and customer id maps to one of [`SHARDS`] shards ([`shard_of`], a stable
//!   hash: the same on every node and every version).
//! - [`membership`]: each node heartbeats a row of `cluster_nodes` with the database's clock;
//!   a node is live while its heartbeat is younger than the lease ttl.
//! - [`rendezvous`]: from the live nodes, every node computes the same assignment of shards to
//!   nodes (rendezvous hashing with bounded loads: even shares, few moves when a node comes or
//!   goes).
//! - [`ownership`]: a node acquires the leases of its assigned shards (`shard_leases`, with
//!   fencing tokens), renews them, hands over the shards that move away (stops their local
//!   actors first, then releases), and releases everything when it leaves. [`OwnershipView`]
//!   answers who owns a shard and, for a local shard, its current fencing token; [`Fence`] is
//!   what entity actors put into their units of work.
//! - [`forward`]: an HTTP request for a basket or customer another node owns is forwarded to
//!   that node, once (`X-Omnihub-Forwarded-By` stops loops).
//! - [`remote`]: the hub's own calls to another node's basket or customer actor (webhooks,
//!   the sweeper, sign-in's merge, refunds) go to its owner, node to node, with the cluster
//!   secret.
//!
//! Failover: a node that dies stops renewing; its leases run out at most `lease_ttl` after its
//! last renewal, and its heartbeat is stale by then too, so the survivors, which look every
//! `heartbeat_every`, take its shards within `lease_ttl + heartbeat_every` (plus a round trip).
//! With the defaults (6 s, 1 s): within about 7 s. See [`failover`] for timing it.
//!
//! - [`singleton`]: tasks that run once across the cluster (the analyst, the experiments
//!   counter, the recommender, automation timers, outbox delivery, the import schedulers, the
//!   OAuth purge, store card refunds; started by `crate::app` when `storage = "cluster"`) run
//!   on the holder of a lease on a reserved shard, with their keyspace writes fenced by a
//!   holder key.
//! - [`notify`]: caches loaded at start are reloaded when another node announces a change
//!   (PostgreSQL `LISTEN`/`NOTIFY` on `omnihub_changes`).
//!
//! This module is not storage: the leases and their fencing check are
//! [`crate::storage::postgres::lease`]'s.

pub mod failover;
pub mod forward;
pub mod membership;
pub mod notify;
pub mod ownership;
pub mod remote;
pub mod rendezvous;
pub mod singleton;
#[cfg(all(test, feature = "cluster-tests"))]
mod singleton_tests;
#[cfg(all(test, feature = "cluster-tests"))]
mod tests;

pub use ownership::{Fence, Owner, Ownership, OwnershipView, ShardActivations};

use crate::storage::StorageError;
use protocol::{BasketId, CustomerId};
use sha2::{Digest, Sha256};

/// How many shards the ids are spread over. Fixed: changing it moves every entity.
pub const SHARDS: u64 = 256;

/// What a shard is computed from: an entity's id.
pub trait ShardKey {
    /// The id's bytes.
    fn shard_bytes(&self) -> [u8; 16];
}

impl ShardKey for BasketId {
    fn shard_bytes(&self) -> [u8; 16] {
        self.to_bytes()
    }
}

impl ShardKey for CustomerId {
    fn shard_bytes(&self) -> [u8; 16] {
        self.to_bytes()
    }
}

/// The shard of an entity: SHA-256 of its id's 16 bytes, the first 8 bytes big-endian, modulo
/// [`SHARDS`]. Stable across nodes, platforms and releases (no `std` hasher, whose output
/// is not promised to stay the same).
pub fn shard_of(key: &impl ShardKey) -> u64 {
    let digest = Sha256::digest(key.shard_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % SHARDS
}

/// What went wrong in the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The settings cannot work (e.g. a heartbeat slower than the lease ttl).
    #[error("cluster settings: {0}")]
    Config(String),
}

#[cfg(test)]
mod shard_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shards_are_stable() {
        // Fixed values: a change here moves every stored entity to another shard.
        let cases = [
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV", 163),
            ("01HZY8Q4Z0000000000000000A", 37),
            ("7ZZZZZZZZZZZZZZZZZZZZZZZZZ", 9),
        ];
        for (id, shard) in cases {
            let basket: BasketId = id.parse().expect("a ulid");
            let customer = CustomerId(basket.0);
            assert_eq!(shard_of(&basket), shard, "{id}");
            assert_eq!(shard_of(&customer), shard, "same bytes, same shard");
        }
    }

    proptest! {
        #[test]
        fn every_id_has_a_shard_in_range(raw in any::<u128>()) {
            let id = BasketId(ulid::Ulid(raw));
            let shard = shard_of(&id);
            prop_assert!(shard < SHARDS);
            prop_assert_eq!(shard, shard_of(&id));
        }
    }

    #[test]
    fn ids_spread_over_all_shards() {
        let mut counts = vec![0u32; SHARDS as usize];
        for i in 0..(SHARDS as u128 * 64) {
            counts[shard_of(&BasketId(ulid::Ulid(i * 0x9E37_79B9_7F4A_7C15))) as usize] += 1;
        }
        // 64 per shard expected; a shard far off means a bad hash, not bad luck.
        assert!(
            counts.iter().all(|&c| (24..=112).contains(&c)),
            "{counts:?}"
        );
    }
}
