//! [`EdgeStore`] on the modules' keyspace (`crate::storage::kv`): the edge sync state of hub
//! nodes sharing PostgreSQL (`storage = "cluster"`). The same tree (`edge`) and keys as
//! [`super::sled_store`].
//!
//! The event log is not in the keyspace, so a write's interaction events cannot commit in the
//! same transaction as its edge records. Instead they are queued in the `edge` tree, in that
//! transaction (`evq/{ms}\0{place}\0{event id}`: write order), appended to the event log after it commits, and only then
//! dropped from the queue:
//!
//! - a crash (or a failed append) between the commit and the append leaves them queued; the next
//!   commit, or the next start ([`KvEdgeStore::open`]), appends them — appends are idempotent by
//!   event id, so an event appended twice keeps its first sequence;
//! - several hub nodes may drain the queue at once for the same reason;
//! - so an acknowledged edge write's events reach the log at least once, and are stored once.

use super::sled_store::{
    id_bytes, key, location_rights_prefix, on_hand_key, outbox_key, outbox_prefix, read_u64,
    rights_key, stage, Staged,
};
use super::store::{
    CatalogChange, CatalogVersion, DeficitView, EdgeStore, EdgeWrite, Loaded, MergedSale, NodeMeta,
    OnHandRow, OutboxEntry, RetiredRecord, RightsRow, StoredConflict, StoredDeficit,
    StoredPickupReport, StoredSale, StoredSettlement,
};
use crate::storage::kv::{Abort, Batch, Keyspace, Tree, TxError};
use crate::storage::{EventLog, Result, StorageError};
use async_trait::async_trait;
use protocol::replication::sync::{item_size, Scarce};
use protocol::replication::{ConflictRecord, OnHand, ReplicaId, Rights};
use protocol::{codec, Event, LocationId, Sku, Stored};
use std::collections::BTreeMap;
use std::sync::Arc;
use ulid::Ulid;

/// The prefix of queued events (appended to the log after their transaction).
const QUEUE: &str = "evq";

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(e.to_string())
}

/// How many queued events one drain appends at most.
const DRAIN_BATCH: usize = 512;

/// The edge state in the keyspace, its events through the event log.
#[derive(Clone)]
pub struct KvEdgeStore {
    keyspace: Keyspace,
    tree: Tree,
    log: Arc<dyn EventLog>,
    /// Orders the writes of one process within a millisecond in the queue's keys.
    queued: Arc<std::sync::atomic::AtomicU32>,
}

impl KvEdgeStore {
    /// Opens the `edge` tree and appends the events a crash left queued.
    pub async fn open(keyspace: &Keyspace, log: Arc<dyn EventLog>) -> Result<Arc<KvEdgeStore>> {
        let store = KvEdgeStore {
            keyspace: keyspace.clone(),
            tree: keyspace.open_tree("edge")?,
            log,
            queued: Arc::new(std::sync::atomic::AtomicU32::new(0)),
        };
        store.drain().await?;
        Ok(Arc::new(store))
    }

    /// Runs blocking keyspace work (PostgreSQL's waits on a channel) off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&KvEdgeStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(&this))
            .await
            .map_err(io)?
    }

    fn get<T: Stored>(&self, k: &[u8]) -> Result<Option<T>> {
        self.tree
            .get(k)?
            .map(|v| codec::decode::<T>(&v))
            .transpose()
            .map_err(StorageError::from)
    }

    fn scan<T: Stored>(&self, prefix: &[u8], newest_first: bool, limit: usize) -> Result<Vec<T>> {
        let scan = self.tree.scan_prefix(prefix);
        let scan = if newest_first { scan.rev() } else { scan };
        scan.take(limit)
            .map(|kv| kv.and_then(|(_, v)| codec::decode::<T>(&v).map_err(StorageError::from)))
            .collect()
    }

    fn count(&self, prefix: &[u8]) -> Result<u64> {
        let mut n = 0;
        for kv in self.tree.scan_prefix(prefix) {
            kv?;
            n += 1;
        }
        Ok(n)
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
        let scan = if newest_first { scan.rev() } else { scan };
        let mut out = Vec::new();
        for kv in scan.take(limit) {
            let (k, _) = kv?;
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
                let (k, v) = kv?;
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
            let (_, v) = kv?;
            match codec::decode::<CatalogChange>(&v) {
                Ok(change) => loaded.catalog_changes.push(change),
                Err(e) => {
                    tracing::warn!(error = %e, "a kept catalog change is unreadable; left out")
                }
            }
        }
        Ok(loaded)
    }

    /// Commits the edge records and queues the events, in one keyspace transaction.
    fn commit_blocking(&self, write: &EdgeWrite) -> Result<BTreeMap<ReplicaId, u64>> {
        // Keyed by when they were queued and their place in the write, so a drain appends
        // them in the order they were written.
        let at_ms = super::unix_ms(time::OffsetDateTime::now_utc());
        let mut queued = Vec::with_capacity(write.events.len());
        for (i, event) in write.events.iter().enumerate() {
            let place = u32::try_from(i).unwrap_or(u32::MAX);
            let turn = self
                .queued
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            queued.push((
                key(
                    QUEUE,
                    &[
                        &at_ms.to_be_bytes(),
                        &turn.to_be_bytes(),
                        &place.to_be_bytes(),
                        &id_bytes(event.id.0),
                    ],
                ),
                codec::encode(event).map_err(StorageError::from)?,
            ));
        }
        let tree = &self.tree;
        let committed = self
            .keyspace
            .transaction(&[tree], |tx| {
                let get = |k: &[u8]| tx.get(tree, k).map_err(Abort::<StorageError>::from);
                let Staged { batch, last } = stage::<Abort<StorageError>>(write, &get)?;
                tx.apply_batch(tree, &batch)?;
                for (k, v) in &queued {
                    tx.insert(tree, k, v)?;
                }
                Ok(last)
            })
            .map_err(|e| match e {
                TxError::Abort(e) | TxError::Storage(e) => e,
            })?;
        self.keyspace.flush()?;
        Ok(committed)
    }

    /// Appends every queued event to the log, then drops them from the queue.
    async fn drain(&self) -> Result<()> {
        loop {
            let queued: Vec<(Vec<u8>, Event)> = self
                .blocking(|s| {
                    s.tree
                        .scan_prefix(key(QUEUE, &[]))
                        .take(DRAIN_BATCH)
                        .map(|kv| {
                            kv.and_then(|(k, v)| {
                                Ok((k, codec::decode::<Event>(&v).map_err(StorageError::from)?))
                            })
                        })
                        .collect()
                })
                .await?;
            if queued.is_empty() {
                return Ok(());
            }
            let full = queued.len() == DRAIN_BATCH;
            let (keys, events): (Vec<Vec<u8>>, Vec<Event>) = queued.into_iter().unzip();
            self.log.append(events.into()).await?;
            self.blocking(move |s| {
                let mut batch = Batch::default();
                for k in keys {
                    batch.remove(k);
                }
                s.tree.apply_batch(batch)?;
                s.keyspace.flush()
            })
            .await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// How many events wait to be appended (tests).
    pub async fn queued_events(&self) -> Result<u64> {
        self.blocking(|s| s.count(&key(QUEUE, &[]))).await
    }
}

#[async_trait]
impl EdgeStore for KvEdgeStore {
    fn shared(&self) -> bool {
        true
    }

    async fn load(&self) -> Result<Loaded> {
        self.blocking(|s| s.load_blocking()).await
    }

    async fn on_hand(&self, location: &LocationId, sku: &Sku) -> Result<Option<OnHand>> {
        let k = on_hand_key(location, sku);
        self.blocking(move |s| Ok(s.get::<OnHandRow>(&k)?.map(|r| r.state)))
            .await
    }

    async fn rights(&self, scarce: &Scarce) -> Result<Option<Rights>> {
        let k = rights_key(scarce);
        self.blocking(move |s| Ok(s.get::<RightsRow>(&k)?.map(|r| r.state)))
            .await
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
                super::returns::sale_in(&s.tree, sale)?,
                super::returns::returns_in(&s.tree, sale)?,
            ))
        })
        .await
    }

    async fn has_sale(&self, id: Ulid) -> Result<bool> {
        let k = key("sale", &[&id_bytes(id)]);
        self.blocking(move |s| s.tree.contains_key(k)).await
    }

    async fn has_deficit(&self, id: Ulid) -> Result<bool> {
        let k = key("deficit", &[&id_bytes(id)]);
        self.blocking(move |s| s.tree.contains_key(k)).await
    }

    async fn has_conflict(&self, id: Ulid) -> Result<bool> {
        let k = key("conflict", &[&id_bytes(id)]);
        self.blocking(move |s| s.tree.contains_key(k)).await
    }

    async fn command_seen(&self, id: Ulid) -> Result<bool> {
        let k = key("cmdseen", &[&id_bytes(id)]);
        self.blocking(move |s| s.tree.contains_key(k)).await
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
        let k = key("pickup", &[&id_bytes(id)]);
        self.blocking(move |s| s.tree.remove(k)).await
    }

    async fn commit(&self, write: EdgeWrite) -> Result<BTreeMap<ReplicaId, u64>> {
        let has_events = !write.events.is_empty();
        let last = self.blocking(move |s| s.commit_blocking(&write)).await?;
        if has_events {
            // The write is durable with its events queued: a failed append leaves them for
            // the next commit or start, so the write is not failed for it.
            if let Err(e) = self.drain().await {
                tracing::warn!(error = %e, "queued edge events not appended yet; retried later");
            }
        }
        Ok(last)
    }

    async fn drop_outbox(&self, node: &ReplicaId, seq: u64) -> Result<()> {
        let node = node.clone();
        self.blocking(move |s| {
            let start = outbox_prefix(&node);
            let end = outbox_key(&node, seq.saturating_add(1));
            let mut batch = Batch::default();
            for kv in s.tree.range(start..end) {
                let (k, _) = kv?;
                batch.remove(k);
            }
            s.tree.apply_batch(batch)
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
                let (_, v) = kv?;
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
                        .get(index)?
                        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
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

/// The store's semantics, on either keyspace backend: sled always, PostgreSQL with the
/// `cluster-tests` feature (a fresh schema each).
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::{Sequenced, StorageError};
    use protocol::replication::sync::Item;
    use protocol::replication::{Hlc, SaleRecord};
    use protocol::{Channel, Currency, EventKind, Money, Subject};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An event log whose next `fail` appends fail (a crash between commit and append).
    pub(crate) struct FlakyLog {
        pub(crate) inner: Arc<dyn EventLog>,
        pub(crate) fail: AtomicUsize,
    }

    #[async_trait]
    impl EventLog for FlakyLog {
        async fn append(&self, events: Arc<[Event]>) -> Result<()> {
            let failing = self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(StorageError::Io("injected append failure".into()));
            }
            self.inner.append(events).await
        }
        async fn timeline(
            &self,
            customer: protocol::CustomerId,
            limit: usize,
        ) -> Result<Vec<Event>> {
            self.inner.timeline(customer, limit).await
        }
        async fn read_sequenced(&self, after: u64, limit: usize) -> Result<Vec<Sequenced>> {
            self.inner.read_sequenced(after, limit).await
        }
        fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
            self.inner.appended()
        }
        async fn rewrite(
            &self,
            events: Vec<Sequenced>,
            forget: Option<protocol::CustomerId>,
        ) -> Result<()> {
            self.inner.rewrite(events, forget).await
        }
    }

    fn sale(location: &str) -> SaleRecord {
        SaleRecord {
            id: Ulid::new(),
            number: format!("B-{}", Ulid::new()),
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

    fn event() -> Event {
        Event::new(
            time::OffsetDateTime::now_utc(),
            Subject::Anonymous(protocol::AnonymousId::new()),
            Channel::Board,
            EventKind::PageView,
        )
    }

    async fn logged(log: &dyn EventLog) -> Vec<protocol::EventId> {
        log.read_sequenced(0, 1000)
            .await
            .expect("reads the log")
            .into_iter()
            .map(|s| s.event.id)
            .collect()
    }

    /// Sales kept once, outbox sequences continuing, the node state loaded back, events appended
    /// once each; events whose append failed stay queued and reach the log on the next commit
    /// or the next open, still once.
    pub(crate) async fn conformance(keyspace: Keyspace, log: Arc<dyn EventLog>) {
        let flaky = Arc::new(FlakyLog {
            inner: log.clone(),
            fail: AtomicUsize::new(0),
        });
        let store = KvEdgeStore::open(&keyspace, flaky.clone())
            .await
            .expect("opens");
        let node = ReplicaId("berlin".into());
        let s = sale("store-berlin");
        let (e1, e2) = (event(), event());
        let write = EdgeWrite {
            sales: vec![s.clone()],
            have: Some((node.clone(), 3)),
            outbox: vec![
                (node.clone(), vec![Item::Unknown]),
                (node.clone(), vec![Item::Unknown, Item::Unknown]),
            ],
            events: vec![e1.clone()],
            ..EdgeWrite::default()
        };
        let last = store.commit(write.clone()).await.expect("commits");
        assert_eq!(last.get(&node), Some(&2));
        assert_eq!(
            logged(&*log).await,
            vec![e1.id],
            "appended after the commit"
        );
        // The same write again (a node resending): the sale and the event are kept once.
        let last = store.commit(write).await.expect("commits again");
        assert_eq!(last.get(&node), Some(&4));
        assert_eq!(logged(&*log).await, vec![e1.id]);
        assert!(store.has_sale(s.id).await.expect("reads"));
        let sales = store
            .sales(Some(&LocationId("store-berlin".into())), 10)
            .await
            .expect("sales");
        assert_eq!(sales.len(), 1);
        assert_eq!(sales[0].sale, s);
        assert!(sales[0].merged_at_ms.is_some());
        let first = store.outbox(&node, 1, 2, 1 << 20).await.expect("reads");
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
        store.drop_outbox(&node, 2).await.expect("drops");
        let rest = store.outbox(&node, 1, 100, 1 << 20).await.expect("reads");
        assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
        let loaded = store.load().await.expect("loads");
        let state = loaded.nodes.get(&node).expect("node state");
        assert_eq!((state.have, state.outbox_last, state.outbox_len), (3, 4, 2));

        // The append fails after the commit: the write still commits, its event waits queued.
        flaky.fail.store(1, Ordering::SeqCst);
        let write = EdgeWrite {
            events: vec![e2.clone()],
            have: Some((node.clone(), 5)),
            ..EdgeWrite::default()
        };
        store.commit(write).await.expect("the write is durable");
        assert_eq!(store.queued_events().await.expect("counts"), 1);
        assert_eq!(logged(&*log).await, vec![e1.id]);
        // A restart appends it.
        let reopened = KvEdgeStore::open(&keyspace, log.clone())
            .await
            .expect("reopens");
        assert_eq!(reopened.queued_events().await.expect("counts"), 0);
        assert_eq!(logged(&*log).await, vec![e1.id, e2.id]);
        assert_eq!(
            reopened.load().await.expect("loads").nodes[&node].have,
            5,
            "the write committed"
        );

        // Failing again: the next commit's drain appends both, in order, once.
        flaky.fail.store(1, Ordering::SeqCst);
        let (e3, e4) = (event(), event());
        let one = EdgeWrite {
            events: vec![e3.clone()],
            ..EdgeWrite::default()
        };
        store.commit(one).await.expect("commits");
        let two = EdgeWrite {
            events: vec![e4.clone()],
            ..EdgeWrite::default()
        };
        store.commit(two).await.expect("commits");
        assert_eq!(store.queued_events().await.expect("counts"), 0);
        assert_eq!(logged(&*log).await, vec![e1.id, e2.id, e3.id, e4.id]);
    }

    #[tokio::test]
    async fn the_keyspace_edge_store_on_sled() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = crate::storage::sled::SledStorage::open(dir.path(), 4).expect("opens");
        conformance(storage.keyspace(), storage.clone()).await;
    }

    #[cfg(feature = "cluster-tests")]
    #[tokio::test]
    async fn the_keyspace_edge_store_on_postgres() {
        let (schema, options) = crate::storage::postgres::tests::fresh_schema().await;
        let outcome = tokio::spawn(async move {
            let pg = crate::storage::postgres::PgStorage::connect(options.clone(), 4)
                .await
                .expect("storage opens");
            let keyspace = Keyspace::postgres(options, 4)
                .await
                .expect("keyspace opens");
            conformance(keyspace.clone(), pg.clone()).await;
            keyspace.close().await;
            pg.close().await;
        })
        .await;
        crate::storage::postgres::tests::drop_schema(&schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
