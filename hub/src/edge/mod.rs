//! The hub's side of edge-node sync (`docs/edge-sync.md` is the contract): the stores' nodes
//! connect over one WebSocket each (`GET /api/v1/edge/sync`), and the hub keeps its replica of
//! their locations' state — stock on hand, sell rights, the grow-only sets of store sales,
//! deficits, settlements and conflicts — plus one outbox per node of its own changes for them.
//!
//! - [`replica::EdgeReplica`] is the single writer of that state: it merges batches from the
//!   sessions, settles deficits, answers `WantRights`, queues commands and retires replicas.
//! - [`session::NodeSession`] is one actor per connected node: the handshake, acknowledgements,
//!   the hub → node stream with flow control, catalog chunks, heartbeats and closes.
//! - [`store::EdgeStore`] is the storage boundary ([`sled_store::SledEdgeStore`] on the hub's sled
//!   database); [`merge`] turns a batch into one atomic, durable write.
//! - [`admin`] is the operator's view under `/api/v1/admin/edge`.
//!
//! The hub never creates rights for a store location: stock news for one ([`forward_count`]) is
//! a command to the node that owns it.

pub mod admin;
pub mod boards;
pub mod card;
pub mod catalog;
pub mod coupons;
pub mod customers;
pub mod kv_store;
pub mod merge;
pub mod receipts;
pub mod replica;
pub mod returns;
pub mod session;
pub mod sled_store;
pub mod store;

use crate::config::EdgeSettings;
use crate::storage::StorageError;
use protocol::replication::{CommandKind, ReplicaId};
use protocol::{LocationId, Sku};
use replica::{EdgeReplica, ForwardCommand, LiveStatus, NodeLive};
use std::sync::Arc;
use std::time::Duration;
use store::EdgeStore;

/// What went wrong on the hub's side of edge sync.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Config(String),
    #[error("location '{0}' is not owned by any edge node")]
    NotAStore(LocationId),
    #[error("every node of location '{0}' is retired")]
    NoActiveNode(LocationId),
    #[error("unknown edge node '{0}'")]
    UnknownNode(String),
    #[error("edge node '{0}' is retired")]
    Retired(ReplicaId),
    #[error("the edge replica has stopped")]
    Closed,
}

/// One configured node, with the SHA-256 of its credential.
#[derive(Debug, Clone)]
pub struct Node {
    pub replica: ReplicaId,
    pub location: LocationId,
    pub name: String,
    credential_sha256: [u8; 32],
}

/// The configured nodes.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    list: Vec<Node>,
}

impl Nodes {
    /// The nodes of checked settings (see [`EdgeSettings::check`]).
    pub fn from_settings(settings: &EdgeSettings) -> Result<Nodes, String> {
        settings.check()?;
        let mut list = Vec::with_capacity(settings.nodes.len());
        for n in &settings.nodes {
            let replica = ReplicaId::node(&n.replica).map_err(|e| e.to_string())?;
            let hash = hex::decode(&n.credential_sha256)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| format!("node '{}': bad credential_sha256", n.replica))?;
            list.push(Node {
                name: if n.name.is_empty() {
                    n.replica.clone()
                } else {
                    n.name.clone()
                },
                replica,
                location: LocationId(n.location.clone()),
                credential_sha256: hash,
            });
        }
        Ok(Nodes { list })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.list.iter()
    }

    pub fn get(&self, replica: &ReplicaId) -> Option<&Node> {
        self.list.iter().find(|n| &n.replica == replica)
    }

    /// Whether a node owns `location` (retired or not).
    pub fn is_store(&self, location: &LocationId) -> bool {
        self.list.iter().any(|n| &n.location == location)
    }

    /// The nodes of `location`, in configuration order.
    pub fn of_location<'a>(&'a self, location: &'a LocationId) -> impl Iterator<Item = &'a Node> {
        self.list.iter().filter(move |n| &n.location == location)
    }

    /// The node whose credential this is. Every configured hash is compared, in constant time,
    /// so the answer's timing does not tell how close a guess came or which node it matched.
    pub fn authenticate(&self, credential: &str) -> Option<&Node> {
        use subtle::ConstantTimeEq;
        let presented = crate::auth::token_hash(credential);
        let mut found = None;
        for node in &self.list {
            if bool::from(presented.ct_eq(&node.credential_sha256)) {
                found = Some(node);
            }
        }
        found
    }
}

/// Sync timing, from `[edge]`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_every: Duration,
    pub idle_timeout: Duration,
    pub max_clock_skew: Duration,
}

impl From<&EdgeSettings> for Timing {
    fn from(s: &EdgeSettings) -> Timing {
        Timing {
            heartbeat_every: s.heartbeat_every,
            idle_timeout: s.idle_timeout,
            max_clock_skew: s.max_clock_skew,
        }
    }
}

/// What the rest of the hub holds of edge sync: the replica's address, the nodes and the store.
#[derive(Clone)]
pub struct EdgeHandle {
    /// Where the stores' click-and-collect reports go (see [`replica::pickup`]).
    pub(crate) pickups: replica::pickup::ReportSink,
    pub(crate) replica: actix::Addr<EdgeReplica>,
    pub(crate) nodes: Arc<Nodes>,
    pub(crate) store: Arc<dyn EdgeStore>,
    pub(crate) timing: Timing,
}

/// A command queued for a node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Forwarded {
    pub command: ulid::Ulid,
    pub node: ReplicaId,
    pub location: LocationId,
}

impl EdgeHandle {
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The store of the hub's replica state (read side).
    pub fn store(&self) -> &Arc<dyn EdgeStore> {
        &self.store
    }

    /// Store sales as the hub has merged them, newest first, at one location or all, each with
    /// the time the hub first stored it.
    pub async fn sales(
        &self,
        location: Option<&LocationId>,
        limit: usize,
    ) -> Result<Vec<store::MergedSale>, EdgeError> {
        Ok(self.store.sales(location, limit).await?)
    }

    /// Each node's live status (connection, backlog each way, skew).
    pub async fn live(&self) -> Result<Vec<NodeLive>, EdgeError> {
        self.replica
            .send(LiveStatus)
            .await
            .map_err(|_| EdgeError::Closed)
    }
}

/// Forwards a stock count for a store location to the node that owns it, as a `Command(Count)`
/// queued durably in that node's outbox (delivered when it connects); the node alone applies it
/// and creates the location's rights. Used by the admin stock API and the ERP importer.
pub async fn forward_count(
    edge: &EdgeHandle,
    sku: Sku,
    location: LocationId,
    on_hand: i64,
) -> Result<Forwarded, EdgeError> {
    edge.replica
        .send(ForwardCommand {
            location: location.clone(),
            kind: CommandKind::Count {
                sku,
                location,
                on_hand,
                // Filled by the replica with its merged on hand there as it queues the command.
                as_seen: None,
            },
        })
        .await
        .map_err(|_| EdgeError::Closed)?
}

/// Forwards goods back on a store's shelf (a cancelled or returned order) as a
/// `Command(Restock)` to the node that owns the location.
pub async fn forward_restock(
    edge: &EdgeHandle,
    sku: Sku,
    location: LocationId,
    units: u64,
    reason: String,
) -> Result<Forwarded, EdgeError> {
    edge.replica
        .send(ForwardCommand {
            location: location.clone(),
            kind: CommandKind::Restock {
                sku,
                location,
                units,
                reason,
            },
        })
        .await
        .map_err(|_| EdgeError::Closed)?
}

/// Milliseconds since the Unix epoch of a time.
pub(crate) fn unix_ms(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The time of Unix milliseconds.
pub(crate) fn from_unix_ms(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EdgeNodeSettings;

    fn settings(credentials: &[(&str, &str, &str)]) -> EdgeSettings {
        EdgeSettings {
            nodes: credentials
                .iter()
                .map(|(replica, location, credential)| EdgeNodeSettings {
                    replica: (*replica).into(),
                    location: (*location).into(),
                    name: String::new(),
                    credential_sha256: hex::encode(crate::auth::token_hash(credential)),
                })
                .collect(),
            ..EdgeSettings::default()
        }
    }

    #[test]
    fn credentials_find_their_node_and_nothing_else() {
        let nodes = Nodes::from_settings(&settings(&[
            ("berlin", "store-berlin", "secret-b"),
            ("paris", "store-paris", "secret-p"),
        ]))
        .expect("valid");
        assert_eq!(
            nodes.authenticate("secret-p").map(|n| n.replica.as_str()),
            Some("paris")
        );
        assert!(nodes.authenticate("secret-x").is_none());
        assert!(nodes.authenticate("").is_none());
        assert!(nodes.is_store(&LocationId("store-berlin".into())));
        assert!(!nodes.is_store(&LocationId::online()));
    }

    #[test]
    fn bad_node_settings_are_refused() {
        for bad in [
            settings(&[("Berlin", "store-berlin", "x")]),
            settings(&[("hub", "store-berlin", "x")]),
            settings(&[("berlin", "online", "x")]),
            settings(&[("berlin", "", "x")]),
            settings(&[("berlin", "a", "x"), ("berlin", "b", "y")]),
        ] {
            assert!(Nodes::from_settings(&bad).is_err(), "{bad:?}");
        }
        let mut short = settings(&[("berlin", "store-berlin", "x")]);
        short.nodes[0].credential_sha256 = "abcd".into();
        assert!(Nodes::from_settings(&short).is_err());
    }
}
