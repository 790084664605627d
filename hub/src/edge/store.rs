//! The storage boundary of the hub's edge replica: the stored rows (each a [`Stored`] value
//! encoded by `protocol::codec`) and the [`EdgeStore`] trait. Merging happens in
//! [`super::merge`]; the store only reads rows and commits an [`EdgeWrite`] atomically and
//! durably.

pub use super::catalog::CatalogChange;
use crate::storage::Result;
use async_trait::async_trait;
use protocol::replication::sync::{Item, Scarce, Vector};
use protocol::replication::{
    ConflictRecord, DeficitRecord, OnHand, ReplicaId, Rights, SaleRecord, Settlement,
};
use protocol::{Event, LocationId, Sku, Stored};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use ulid::Ulid;

/// Stock on hand of a SKU at a store location, as the hub has merged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnHandRow {
    pub location: LocationId,
    pub sku: Sku,
    pub state: OnHand,
}

impl Stored for OnHandRow {
    const KIND: &'static str = "edge_on_hand";
    const VERSION: u16 = 1;
}

/// A bounded counter (sell rights of a SKU at a store, or a coupon's redemptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RightsRow {
    pub key: Scarce,
    pub state: Rights,
}

impl Stored for RightsRow {
    const KIND: &'static str = "edge_rights";
    const VERSION: u16 = 1;
}

/// A store sale (kept exactly once, by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredSale(pub SaleRecord);

impl Stored for StoredSale {
    const KIND: &'static str = "edge_sale";
    const VERSION: u16 = 1;
}

/// A store's click-and-collect report, merged but not yet applied to its order (kept until
/// it is: `crate::collect` applies it and then drops it, so a crash in between only applies
/// it again, which changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredPickupReport(pub protocol::replication::PickupReport);

impl Stored for StoredPickupReport {
    const KIND: &'static str = "edge_pickup_report";
    const VERSION: u16 = 1;
}

/// A store sale as the hub lists it: the record and when the hub first stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergedSale {
    #[serde(flatten)]
    pub sale: SaleRecord,
    /// When the hub merged the sale, i.e. first stored it (Unix ms, the hub's clock; stamped in
    /// the write that stores it, before that write's flush). `None` for sales stored before the
    /// hub kept it.
    pub merged_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredDeficit(pub DeficitRecord);

impl Stored for StoredDeficit {
    const KIND: &'static str = "edge_deficit";
    const VERSION: u16 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredSettlement(pub Settlement);

impl Stored for StoredSettlement {
    const KIND: &'static str = "edge_settlement";
    const VERSION: u16 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredConflict(pub ConflictRecord);

impl Stored for StoredConflict {
    const KIND: &'static str = "edge_conflict";
    const VERSION: u16 = 1;
}

/// One entry of the hub → node outbox: one hub change for that node (one or more items).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub seq: u64,
    pub items: Vec<Item>,
    pub at_ms: u64,
}

impl Stored for OutboxEntry {
    const KIND: &'static str = "edge_outbox";
    const VERSION: u16 = 1;
}

/// What the hub remembers of a node between connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// When the hub last applied a batch from the node (Unix ms).
    #[serde(default)]
    pub last_sync_ms: Option<u64>,
    /// When the node last connected, and when its last connection ended.
    #[serde(default)]
    pub connected_ms: Option<u64>,
    #[serde(default)]
    pub disconnected_ms: Option<u64>,
    /// Hub time minus node time at the last handshake or heartbeat.
    #[serde(default)]
    pub skew_ms: Option<i64>,
    /// Changes the node reported as not yet acknowledged (its last `Hello`/`Heartbeat`).
    #[serde(default)]
    pub node_pending: u64,
    /// The node's `have` vector from its last `Hello`.
    #[serde(default)]
    pub node_have: Vector,
    #[serde(default)]
    pub node_catalog_version: u64,
}

impl Stored for NodeMeta {
    const KIND: &'static str = "edge_node";
    const VERSION: u16 = 1;
}

/// A retired replica id: refused from now on, its rights written off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredRecord {
    pub replica: ReplicaId,
    pub location: LocationId,
    pub at_ms: u64,
    /// Per key, the units the replica held when retired (now `W[replica]`).
    pub written_off: Vec<(Scarce, u64)>,
}

impl Stored for RetiredRecord {
    const KIND: &'static str = "edge_retired";
    const VERSION: u16 = 1;
}

/// The catalog version the nodes see: it grows whenever the catalog's content changes, and
/// survives restarts (the in-memory snapshot's version starts again at each start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogVersion {
    pub version: u64,
    /// Hex SHA-256 of the catalog's content at that version.
    pub fingerprint: String,
}

impl Stored for CatalogVersion {
    const KIND: &'static str = "edge_catalog";
    const VERSION: u16 = 1;
}

/// One atomic, durable change of the hub's edge state.
#[derive(Debug, Clone, Default)]
pub struct EdgeWrite {
    pub on_hand: Vec<OnHandRow>,
    pub rights: Vec<RightsRow>,
    /// Stored only if their id is new (a sale is kept exactly once).
    pub sales: Vec<SaleRecord>,
    pub deficits: Vec<DeficitRecord>,
    pub settlements: Vec<Settlement>,
    /// Conflicts, each with the node whose sync raised it (stored only if their id is new).
    pub conflicts: Vec<(ReplicaId, ConflictRecord)>,
    /// Node commands applied (each is applied once by id).
    pub commands_seen: Vec<Ulid>,
    /// Click-and-collect reports to apply to their orders (kept until applied).
    pub pickups: Vec<protocol::replication::PickupReport>,
    pub retired: Vec<RetiredRecord>,
    /// `have[node] = seq`: the highest node sequence applied.
    pub have: Option<(ReplicaId, u64)>,
    pub meta: Vec<(ReplicaId, NodeMeta)>,
    /// Entries appended to nodes' outboxes, in order; each gets the node's next sequence.
    pub outbox: Vec<(ReplicaId, Vec<Item>)>,
    /// Raises a node's outbox sequence to at least this (the node has seen up to it).
    pub outbox_floor: Vec<(ReplicaId, u64)>,
    /// Interaction events, appended to the hub's event log in the same transaction.
    pub events: Vec<Event>,
    pub catalog: Option<CatalogVersion>,
    /// The change that led to `catalog` (kept for catalog deltas), and the kept changes to drop
    /// (by the version they lead to).
    pub catalog_change: Option<CatalogChange>,
    pub catalog_changes_dropped: Vec<u64>,
    /// Store returns (stored only if their id is new, with their due card refunds).
    pub returns: Vec<protocol::replication::ReturnRecord>,
}

impl EdgeWrite {
    pub fn is_empty(&self) -> bool {
        self.on_hand.is_empty()
            && self.rights.is_empty()
            && self.sales.is_empty()
            && self.deficits.is_empty()
            && self.settlements.is_empty()
            && self.conflicts.is_empty()
            && self.commands_seen.is_empty()
            && self.pickups.is_empty()
            && self.retired.is_empty()
            && self.have.is_none()
            && self.meta.is_empty()
            && self.outbox.is_empty()
            && self.outbox_floor.is_empty()
            && self.events.is_empty()
            && self.catalog.is_none()
            && self.catalog_change.is_none()
            && self.catalog_changes_dropped.is_empty()
            && self.returns.is_empty()
    }
}

/// Per node, what the replica keeps in memory, as stored.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// Highest node sequence applied.
    pub have: u64,
    /// Highest hub sequence assigned in the node's outbox.
    pub outbox_last: u64,
    /// Entries still in the node's outbox.
    pub outbox_len: u64,
    pub meta: NodeMeta,
    pub retired: Option<RetiredRecord>,
}

/// Everything loaded at start.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub nodes: BTreeMap<ReplicaId, NodeState>,
    pub catalog: Option<CatalogVersion>,
    /// The kept changes between catalog versions (any order; unreadable ones left out).
    pub catalog_changes: Vec<CatalogChange>,
}

/// A deficit with the hub's settlement of it, if made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeficitView {
    pub deficit: DeficitRecord,
    pub settlement: Option<Settlement>,
}

/// The hub's edge replica state. Commits are atomic and durable when they return.
#[async_trait]
pub trait EdgeStore: Send + Sync + 'static {
    async fn load(&self) -> Result<Loaded>;
    /// Whether several hub processes share this store (the cluster): a node's sync state is
    /// read again from it when the node connects, since another hub node may have served it.
    fn shared(&self) -> bool {
        false
    }
    async fn on_hand(&self, location: &LocationId, sku: &Sku) -> Result<Option<OnHand>>;
    async fn rights(&self, key: &Scarce) -> Result<Option<Rights>>;
    async fn has_sale(&self, id: Ulid) -> Result<bool>;
    async fn has_deficit(&self, id: Ulid) -> Result<bool>;
    async fn has_conflict(&self, id: Ulid) -> Result<bool>;
    async fn command_seen(&self, id: Ulid) -> Result<bool>;
    /// Click-and-collect reports merged but not yet applied to their orders, oldest first.
    async fn pending_pickups(
        &self,
        limit: usize,
    ) -> Result<Vec<protocol::replication::PickupReport>>;
    /// Drops a report once its order has it.
    async fn pickup_applied(&self, id: Ulid) -> Result<()>;
    /// Commits a write in one transaction and flushes it; answers each node's last outbox
    /// sequence after it.
    async fn commit(&self, write: EdgeWrite) -> Result<BTreeMap<ReplicaId, u64>>;
    /// Drops a node's outbox entries up to `seq` (the node has them durably).
    async fn drop_outbox(&self, node: &ReplicaId, seq: u64) -> Result<()>;
    /// A node's outbox entries from `from_seq`, at least one if there is one, then as long as
    /// the items stay within `max_items` and `max_bytes`.
    async fn outbox(
        &self,
        node: &ReplicaId,
        from_seq: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboxEntry>>;
    /// The node's outbox length.
    async fn outbox_len(&self, node: &ReplicaId) -> Result<u64>;
    /// Every stock-on-hand row (to publish to the inventory view at start).
    async fn all_on_hand(&self) -> Result<Vec<OnHandRow>>;
    async fn location_on_hand(&self, location: &LocationId) -> Result<Vec<OnHandRow>>;
    async fn location_rights(&self, location: &LocationId) -> Result<Vec<RightsRow>>;
    /// Every coupon's redemption rights (`Scarce::Coupon` rows).
    async fn coupon_rights(&self) -> Result<Vec<RightsRow>>;
    /// Store sales newest first, at one location or everywhere, with when each was merged.
    async fn sales(&self, location: Option<&LocationId>, limit: usize) -> Result<Vec<MergedSale>>;
    /// Deficits at a location, newest first, with their settlements.
    async fn deficits(&self, location: &LocationId, limit: usize) -> Result<Vec<DeficitView>>;
    /// Conflicts raised by a node's sync (its own, or the hub's about it), newest first.
    async fn conflicts(&self, node: &ReplicaId, limit: usize) -> Result<Vec<ConflictRecord>>;
    /// A store sale merged here (if it is) and the store returns of it (or of an online order
    /// with this id) merged so far, oldest first.
    async fn sale_with_returns(
        &self,
        sale: Ulid,
    ) -> Result<(Option<SaleRecord>, Vec<protocol::replication::ReturnRecord>)> {
        let _ = sale;
        Ok((None, Vec::new()))
    }
}
