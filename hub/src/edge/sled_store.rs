//! [`EdgeStore`] on the hub's sled database: one tree of its own (`edge`, key prefixes below),
//! written in one transaction together with the event log's tree, then flushed.
//!
//! Keys: `have/{node}`, `next/{node}` (u64 big-endian), `out/{node}\0{seq}`, `meta/{node}`,
//! `retired/{node}`, `onhand/{location}\0{sku}`, `rights/s{location}\0{sku}` or
//! `rights/c{code}`, `sale/{id}`, `saleloc/{location}\0{id}` (value: when the hub first stored
//! the sale, Unix ms u64 big-endian; empty for sales stored before it was kept), `deficit/{id}`,
//! `deficitloc/{location}\0{id}`, `settle/{deficit}`, `conflict/{id}`,
//! `conflictnode/{node}\0{id}`, `cmdseen/{id}`, `pickup/{id}` (a click-and-collect report not yet
//! applied to its order), `catalog`, `catchange/{version}` (u64
//! big-endian: the kept change that led to that catalog version). Ids are ULIDs, big-endian, so
//! key order is time order.

use super::store::{
    CatalogChange, CatalogVersion, DeficitView, EdgeStore, EdgeWrite, Loaded, MergedSale, NodeMeta,
    OnHandRow, OutboxEntry, RetiredRecord, RightsRow, StoredConflict, StoredDeficit,
    StoredPickupReport, StoredSale, StoredSettlement,
};
use crate::storage::sled::{EventSequencer, SledStorage};
use crate::storage::{Result, StorageError};
use async_trait::async_trait;
use protocol::replication::sync::{item_size, Scarce};
use protocol::replication::{ConflictRecord, OnHand, ReplicaId, Rights};
use protocol::{codec, LocationId, Sku, Stored};
use sled::Transactional;
use std::collections::BTreeMap;
use std::sync::Arc;
use ulid::Ulid;

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(e.to_string())
}

pub(super) fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.push(b'/');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(part);
    }
    k
}

pub(super) fn id_bytes(id: Ulid) -> [u8; 16] {
    id.0.to_be_bytes()
}

pub(super) fn on_hand_key(location: &LocationId, sku: &Sku) -> Vec<u8> {
    key("onhand", &[location.0.as_bytes(), sku.as_str().as_bytes()])
}

pub(super) fn rights_key(scarce: &Scarce) -> Vec<u8> {
    match scarce {
        Scarce::Stock { sku, location } => {
            let mut first = b"s".to_vec();
            first.extend_from_slice(location.0.as_bytes());
            key("rights", &[&first, sku.as_str().as_bytes()])
        }
        Scarce::Coupon { code } => {
            let mut first = b"c".to_vec();
            first.extend_from_slice(code.as_bytes());
            key("rights", &[&first])
        }
    }
}

pub(super) fn location_rights_prefix(location: &LocationId) -> Vec<u8> {
    let mut k = key("rights", &[]);
    k.push(b's');
    k.extend_from_slice(location.0.as_bytes());
    k.push(0);
    k
}

pub(super) fn outbox_key(node: &ReplicaId, seq: u64) -> Vec<u8> {
    key("out", &[node.as_str().as_bytes(), &seq.to_be_bytes()])
}

pub(super) fn outbox_prefix(node: &ReplicaId) -> Vec<u8> {
    let mut k = key("out", &[node.as_str().as_bytes()]);
    k.push(0);
    k
}

pub(super) fn node_key(prefix: &str, node: &ReplicaId) -> Vec<u8> {
    key(prefix, &[node.as_str().as_bytes()])
}

pub(super) fn read_u64(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map_or(0, u64::from_be_bytes)
}

/// A write ready to commit: the edge tree's batch, the event log's entries, and each node's last
/// outbox sequence after it. Records already stored (a sale, a deficit, a conflict by id) are
/// left out.
pub(super) struct Staged {
    pub(super) batch: crate::storage::kv::Batch,
    pub(super) last: BTreeMap<ReplicaId, u64>,
}

/// The edge state in the hub's sled database.
pub struct SledEdgeStore {
    db: sled::Db,
    tree: sled::Tree,
    /// The same tree through the keyspace, for what this store shares with
    /// [`super::returns::Returns`].
    kv: crate::storage::kv::Tree,
    events: sled::Tree,
    sequencer: EventSequencer,
}

impl SledEdgeStore {
    /// Opens the `edge` tree on the hub's database.
    pub fn open(storage: &SledStorage) -> Result<Arc<SledEdgeStore>> {
        let (db, tree, events) = storage.module_trees("edge")?;
        Ok(Arc::new(SledEdgeStore {
            db,
            tree,
            kv: storage.keyspace().open_tree("edge")?,
            events,
            sequencer: storage.event_sequencer(),
        }))
    }

    fn get<T: Stored>(&self, k: &[u8]) -> Result<Option<T>> {
        self.tree
            .get(k)
            .map_err(io)?
            .map(|v| codec::decode::<T>(&v))
            .transpose()
            .map_err(StorageError::from)
    }

    fn contains(&self, k: &[u8]) -> Result<bool> {
        self.tree.contains_key(k).map_err(io)
    }

    /// Runs blocking sled work (scans, the transaction and its flush) off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&SledEdgeStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = SledEdgeStore {
            db: self.db.clone(),
            tree: self.tree.clone(),
            kv: self.kv.clone(),
            events: self.events.clone(),
            sequencer: self.sequencer.clone(),
        };
        tokio::task::spawn_blocking(move || work(&this))
            .await
            .map_err(io)?
    }

    fn scan<T: Stored>(&self, prefix: &[u8], newest_first: bool, limit: usize) -> Result<Vec<T>> {
        let scan = self.tree.scan_prefix(prefix);
        let items: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if newest_first {
                Box::new(scan.rev())
            } else {
                Box::new(scan)
            };
        items
            .take(limit)
            .map(|kv| {
                kv.map_err(io)
                    .and_then(|(_, v)| codec::decode::<T>(&v).map_err(StorageError::from))
            })
            .collect()
    }

    /// Follows an index whose keys end in a 16-byte id to the records under `entity`.
    fn follow<T: Stored>(
        &self,
        index: &[u8],
        entity: &str,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<T>> {
        let scan = self.tree.scan_prefix(index);
        let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if newest_first
        {
            Box::new(scan.rev())
        } else {
            Box::new(scan)
        };
        let mut out = Vec::new();
        for kv in keys.take(limit) {
            let (k, _) = kv.map_err(io)?;
            let id = &k[k.len().saturating_sub(16)..];
            if let Some(v) = self.get::<T>(&key(entity, &[id]))? {
                out.push(v);
            }
        }
        Ok(out)
    }

    fn load_blocking(&self) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        for (prefix, what) in [("have", 0), ("next", 1), ("meta", 2), ("retired", 3)] {
            let p = key(prefix, &[]);
            for kv in self.tree.scan_prefix(&p) {
                let (k, v) = kv.map_err(io)?;
                let node = ReplicaId(String::from_utf8_lossy(&k[p.len()..]).into_owned());
                let state = loaded.nodes.entry(node).or_default();
                match what {
                    0 => state.have = read_u64(&v),
                    1 => state.outbox_last = read_u64(&v),
                    2 => state.meta = codec::decode::<NodeMeta>(&v)?,
                    _ => state.retired = Some(codec::decode::<RetiredRecord>(&v)?),
                }
            }
        }
        for (node, state) in loaded.nodes.iter_mut() {
            state.outbox_len = self.count(&outbox_prefix(node))?;
        }
        loaded.catalog = self.get::<CatalogVersion>(&key("catalog", &[]))?;
        for kv in self.tree.scan_prefix(key("catchange", &[])) {
            let (_, v) = kv.map_err(io)?;
            // A change is only an optimisation (nodes behind it get the whole catalog).
            match codec::decode::<CatalogChange>(&v) {
                Ok(change) => loaded.catalog_changes.push(change),
                Err(e) => {
                    tracing::warn!(error = %e, "a kept catalog change is unreadable; left out")
                }
            }
        }
        Ok(loaded)
    }

    fn count(&self, prefix: &[u8]) -> Result<u64> {
        let mut n = 0;
        for kv in self.tree.scan_prefix(prefix) {
            kv.map_err(io)?;
            n += 1;
        }
        Ok(n)
    }

    fn commit_blocking(&self, write: &EdgeWrite) -> Result<BTreeMap<ReplicaId, u64>> {
        let Staged {
            batch: staged,
            last,
        } = stage(write, &|k: &[u8]| {
            self.tree.get(k).map(|v| v.map(|v| v.to_vec())).map_err(io)
        })?;
        let mut batch = sled::Batch::default();
        for (k, v) in staged.writes() {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        // The events take their place in the log's append order inside the transaction.
        let mut order = self.sequencer.lock();
        let numbers = order.number(&self.events, &write.events)?;
        let applied = (&self.tree, &self.events)
            .transaction(|(tree, log)| {
                tree.apply_batch(&batch)?;
                for (k, v) in &numbers {
                    log.insert(k.as_slice(), v.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<StorageError>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => io(e),
            });
        if let Err(e) = applied {
            order.undo();
            return Err(e);
        }
        let appended = order.last();
        drop(order);
        self.db.flush().map_err(io)?;
        self.sequencer.published(appended);
        Ok(last)
    }
}

/// Reads a key of the edge tree for [`stage`].
pub(super) type Getter<'a, E> = dyn Fn(&[u8]) -> std::result::Result<Option<Vec<u8>>, E> + 'a;

/// Stages `write` against the tree as `get` reads it (directly, or inside a keyspace
/// transaction): records already stored are left out, outbox sequences continue from each node's
/// stored `next`.
pub(super) fn stage<E: From<StorageError>>(
    write: &EdgeWrite,
    get: &Getter<'_, E>,
) -> std::result::Result<Staged, E> {
    let contains = |k: &[u8]| get(k).map(|v| v.is_some());
    let enc = |e: protocol::codec::CodecError| E::from(StorageError::from(e));

    let mut batch = crate::storage::kv::Batch::default();
    let at_ms = super::unix_ms(time::OffsetDateTime::now_utc());
    for row in &write.on_hand {
        batch.insert(
            on_hand_key(&row.location, &row.sku),
            codec::encode(row).map_err(enc)?,
        );
    }
    for row in &write.rights {
        batch.insert(rights_key(&row.key), codec::encode(row).map_err(enc)?);
    }
    for sale in &write.sales {
        let id = id_bytes(sale.id);
        let k = key("sale", &[&id]);
        if contains(&k)? {
            continue;
        }
        batch.insert(k, codec::encode(&StoredSale(sale.clone())).map_err(enc)?);
        batch.insert(
            key("saleloc", &[sale.location.0.as_bytes(), &id]),
            at_ms.to_be_bytes().to_vec(),
        );
        batch.insert(super::returns::sale_number_key(&sale.number), id.to_vec());
    }
    for r in &write.returns {
        if !contains(&super::returns::return_key(r.id))? {
            super::returns::stage(&mut batch, r).map_err(E::from)?;
        }
    }
    for d in &write.deficits {
        let id = id_bytes(d.id);
        let k = key("deficit", &[&id]);
        if contains(&k)? {
            continue;
        }
        batch.insert(k, codec::encode(&StoredDeficit(d.clone())).map_err(enc)?);
        batch.insert(
            key("deficitloc", &[d.location.0.as_bytes(), &id]),
            Vec::new(),
        );
    }
    for s in &write.settlements {
        batch.insert(
            key("settle", &[&id_bytes(s.deficit)]),
            codec::encode(&StoredSettlement(s.clone())).map_err(enc)?,
        );
    }
    for (node, c) in &write.conflicts {
        let id = id_bytes(c.id);
        let k = key("conflict", &[&id]);
        if contains(&k)? {
            continue;
        }
        batch.insert(k, codec::encode(&StoredConflict(c.clone())).map_err(enc)?);
        batch.insert(
            key("conflictnode", &[node.as_str().as_bytes(), &id]),
            Vec::new(),
        );
    }
    for id in &write.commands_seen {
        batch.insert(key("cmdseen", &[&id_bytes(*id)]), Vec::new());
    }
    for report in &write.pickups {
        batch.insert(
            key("pickup", &[&id_bytes(report.id)]),
            codec::encode(&StoredPickupReport(report.clone())).map_err(enc)?,
        );
    }
    for r in &write.retired {
        batch.insert(
            node_key("retired", &r.replica),
            codec::encode(r).map_err(enc)?,
        );
    }
    if let Some((node, seq)) = &write.have {
        batch.insert(node_key("have", node), seq.to_be_bytes().to_vec());
    }
    for (node, meta) in &write.meta {
        batch.insert(node_key("meta", node), codec::encode(meta).map_err(enc)?);
    }
    let mut last: BTreeMap<ReplicaId, u64> = BTreeMap::new();
    let current =
        |node: &ReplicaId, last: &mut BTreeMap<ReplicaId, u64>| -> std::result::Result<u64, E> {
            if let Some(n) = last.get(node) {
                return Ok(*n);
            }
            let n = get(&node_key("next", node))?.map_or(0, |v| read_u64(&v));
            last.insert(node.clone(), n);
            Ok(n)
        };
    for (node, floor) in &write.outbox_floor {
        let n = current(node, &mut last)?;
        last.insert(node.clone(), n.max(*floor));
    }
    for (node, items) in &write.outbox {
        let seq = current(node, &mut last)? + 1;
        last.insert(node.clone(), seq);
        let entry = OutboxEntry {
            seq,
            items: items.clone(),
            at_ms,
        };
        batch.insert(outbox_key(node, seq), codec::encode(&entry).map_err(enc)?);
    }
    for (node, n) in &last {
        batch.insert(node_key("next", node), n.to_be_bytes().to_vec());
    }
    if let Some(c) = &write.catalog {
        batch.insert(key("catalog", &[]), codec::encode(c).map_err(enc)?);
    }
    for to in &write.catalog_changes_dropped {
        batch.remove(key("catchange", &[&to.to_be_bytes()]));
    }
    if let Some(c) = &write.catalog_change {
        batch.insert(
            key("catchange", &[&c.to.to_be_bytes()]),
            codec::encode(c).map_err(enc)?,
        );
    }
    Ok(Staged { batch, last })
}

#[async_trait]
impl EdgeStore for SledEdgeStore {
    async fn load(&self) -> Result<Loaded> {
        self.blocking(|s| s.load_blocking()).await
    }

    async fn on_hand(&self, location: &LocationId, sku: &Sku) -> Result<Option<OnHand>> {
        Ok(self
            .get::<OnHandRow>(&on_hand_key(location, sku))?
            .map(|r| r.state))
    }

    async fn rights(&self, scarce: &Scarce) -> Result<Option<Rights>> {
        Ok(self.get::<RightsRow>(&rights_key(scarce))?.map(|r| r.state))
    }

    async fn sale_with_returns(
        &self,
        sale: Ulid,
    ) -> Result<(
        Option<protocol::replication::SaleRecord>,
        Vec<protocol::replication::ReturnRecord>,
    )> {
        self.blocking(move |s| {
            Ok((
                super::returns::sale_in(&s.kv, sale)?,
                super::returns::returns_in(&s.kv, sale)?,
            ))
        })
        .await
    }

    async fn has_sale(&self, id: Ulid) -> Result<bool> {
        self.contains(&key("sale", &[&id_bytes(id)]))
    }

    async fn has_deficit(&self, id: Ulid) -> Result<bool> {
        self.contains(&key("deficit", &[&id_bytes(id)]))
    }

    async fn has_conflict(&self, id: Ulid) -> Result<bool> {
        self.contains(&key("conflict", &[&id_bytes(id)]))
    }

    async fn command_seen(&self, id: Ulid) -> Result<bool> {
        self.contains(&key("cmdseen", &[&id_bytes(id)]))
    }

    async fn pending_pickups(
        &self,
        limit: usize,
    ) -> Result<Vec<protocol::replication::PickupReport>> {
        self.blocking(move |s| {
            let stored: Vec<StoredPickupReport> = s.scan(&key("pickup", &[]), false, limit)?;
            Ok(stored.into_iter().map(|r| r.0).collect())
        })
        .await
    }

    async fn pickup_applied(&self, id: Ulid) -> Result<()> {
        self.tree
            .remove(key("pickup", &[&id_bytes(id)]))
            .map_err(io)?;
        // Not flushed: lost in a crash, the report is only applied again, which changes nothing.
        Ok(())
    }

    async fn commit(&self, write: EdgeWrite) -> Result<BTreeMap<ReplicaId, u64>> {
        self.blocking(move |s| s.commit_blocking(&write)).await
    }

    async fn drop_outbox(&self, node: &ReplicaId, seq: u64) -> Result<()> {
        let node = node.clone();
        self.blocking(move |s| {
            let start = outbox_prefix(&node);
            let end = outbox_key(&node, seq.saturating_add(1));
            let mut batch = sled::Batch::default();
            for kv in s.tree.range(start..end) {
                let (k, _) = kv.map_err(io)?;
                batch.remove(k);
            }
            s.tree.apply_batch(batch).map_err(io)
        })
        .await
    }

    async fn outbox(
        &self,
        node: &ReplicaId,
        from_seq: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboxEntry>> {
        let node = node.clone();
        self.blocking(move |s| {
            let start = outbox_key(&node, from_seq);
            let end = outbox_key(&node, u64::MAX);
            let (mut items, mut bytes) = (0usize, 0usize);
            let mut out = Vec::new();
            for kv in s.tree.range(start..end) {
                let (_, v) = kv.map_err(io)?;
                let entry: OutboxEntry = codec::decode(&v)?;
                let n = entry.items.len();
                let size: usize = entry.items.iter().map(item_size).sum();
                if !out.is_empty() && (items + n > max_items || bytes + size > max_bytes) {
                    break;
                }
                items += n;
                bytes = bytes.saturating_add(size);
                out.push(entry);
            }
            Ok(out)
        })
        .await
    }

    async fn outbox_len(&self, node: &ReplicaId) -> Result<u64> {
        let prefix = outbox_prefix(node);
        self.blocking(move |s| s.count(&prefix)).await
    }

    async fn all_on_hand(&self) -> Result<Vec<OnHandRow>> {
        self.blocking(|s| s.scan(&key("onhand", &[]), false, usize::MAX))
            .await
    }

    async fn location_on_hand(&self, location: &LocationId) -> Result<Vec<OnHandRow>> {
        let mut prefix = key("onhand", &[location.0.as_bytes()]);
        prefix.push(0);
        self.blocking(move |s| s.scan(&prefix, false, usize::MAX))
            .await
    }

    async fn location_rights(&self, location: &LocationId) -> Result<Vec<RightsRow>> {
        let prefix = location_rights_prefix(location);
        self.blocking(move |s| s.scan(&prefix, false, usize::MAX))
            .await
    }

    async fn coupon_rights(&self) -> Result<Vec<RightsRow>> {
        let mut prefix = key("rights", &[]);
        prefix.push(b'c');
        self.blocking(move |s| s.scan(&prefix, false, usize::MAX))
            .await
    }

    async fn sales(&self, location: Option<&LocationId>, limit: usize) -> Result<Vec<MergedSale>> {
        let location = location.cloned();
        self.blocking(move |s| {
            let sales: Vec<StoredSale> = match location {
                Some(l) => {
                    let mut index = key("saleloc", &[l.0.as_bytes()]);
                    index.push(0);
                    s.follow(&index, "sale", true, limit)?
                }
                None => s.scan(&key("sale", &[]), true, limit)?,
            };
            sales
                .into_iter()
                .map(|StoredSale(sale)| {
                    let index = key("saleloc", &[sale.location.0.as_bytes(), &id_bytes(sale.id)]);
                    let merged_at_ms = s
                        .tree
                        .get(index)
                        .map_err(io)?
                        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                        .map(u64::from_be_bytes);
                    Ok(MergedSale { sale, merged_at_ms })
                })
                .collect()
        })
        .await
    }

    async fn deficits(&self, location: &LocationId, limit: usize) -> Result<Vec<DeficitView>> {
        let mut index = key("deficitloc", &[location.0.as_bytes()]);
        index.push(0);
        self.blocking(move |s| {
            let deficits: Vec<StoredDeficit> = s.follow(&index, "deficit", true, limit)?;
            deficits
                .into_iter()
                .map(|d| {
                    let settlement = s
                        .get::<StoredSettlement>(&key("settle", &[&id_bytes(d.0.id)]))?
                        .map(|s| s.0);
                    Ok(DeficitView {
                        deficit: d.0,
                        settlement,
                    })
                })
                .collect()
        })
        .await
    }

    async fn conflicts(&self, node: &ReplicaId, limit: usize) -> Result<Vec<ConflictRecord>> {
        let mut index = key("conflictnode", &[node.as_str().as_bytes()]);
        index.push(0);
        self.blocking(move |s| {
            let found: Vec<StoredConflict> = s.follow(&index, "conflict", true, limit)?;
            Ok(found.into_iter().map(|c| c.0).collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::replication::sync::Item;
    use protocol::replication::{Hlc, SaleRecord};
    use protocol::{Currency, Money};

    fn store() -> (tempfile::TempDir, Arc<SledEdgeStore>) {
        let dir = tempfile::tempdir().expect("dir");
        let storage = SledStorage::open(dir.path(), 4).expect("opens");
        let store = SledEdgeStore::open(&storage).expect("edge tree");
        (dir, store)
    }

    fn sale(location: &str) -> SaleRecord {
        SaleRecord {
            id: Ulid::new(),
            number: "B-1".into(),
            replica: ReplicaId("berlin".into()),
            location: LocationId(location.into()),
            at: Hlc {
                ms: 1,
                c: 0,
                r: ReplicaId("berlin".into()),
            },
            lines: Vec::new(),
            total: Money::new(100, Currency::EUR),
            taxes: Vec::new(),
            payments: Vec::new(),
            customer: None,
            clerk: None,
            promotions: Default::default(),
            coupons: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_sale_is_kept_once_and_outbox_sequences_grow() {
        let (_dir, store) = store();
        let node = ReplicaId("berlin".into());
        let s = sale("store-berlin");
        let write = EdgeWrite {
            sales: vec![s.clone()],
            have: Some((node.clone(), 3)),
            outbox: vec![
                (node.clone(), vec![Item::Unknown]),
                (node.clone(), vec![Item::Unknown, Item::Unknown]),
            ],
            ..EdgeWrite::default()
        };
        let last = store.commit(write.clone()).await.expect("commits");
        assert_eq!(last.get(&node), Some(&2));
        let last = store.commit(write).await.expect("commits again");
        assert_eq!(last.get(&node), Some(&4));
        let before = super::super::unix_ms(time::OffsetDateTime::now_utc());
        let sales = store
            .sales(Some(&LocationId("store-berlin".into())), 10)
            .await
            .expect("sales");
        assert_eq!(sales.len(), 1);
        assert_eq!(sales[0].sale, s);
        let merged = sales[0].merged_at_ms.expect("the merge time is kept");
        assert!(merged <= before, "stamped when first stored, not again");
        let everywhere = store.sales(None, 10).await.expect("sales");
        assert_eq!(everywhere, sales);
        assert!(store
            .sales(Some(&LocationId("store-paris".into())), 10)
            .await
            .expect("sales")
            .is_empty());

        let first = store.outbox(&node, 1, 2, 1 << 20).await.expect("reads");
        assert_eq!(
            first.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1],
            "2 items max: the second entry does not fit"
        );
        store.drop_outbox(&node, 2).await.expect("drops");
        let rest = store.outbox(&node, 1, 100, 1 << 20).await.expect("reads");
        assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);

        let loaded = store.load().await.expect("loads");
        let state = loaded.nodes.get(&node).expect("node state");
        assert_eq!((state.have, state.outbox_last, state.outbox_len), (3, 4, 2));
    }
}
