//! An ordered key-value **keyspace** of named trees: the common ground of what the hub's modules
//! (automation, back office, edge replication, experience, experiments, ERP import,
//! personalization) do with their own data, on either backend.
//!
//! - [`Keyspace::sled`] wraps a `sled::Db`: a [`Tree`] is the sled tree of that name, keys and
//!   values are stored byte for byte as before, so an existing data directory opens unchanged.
//! - [`Keyspace::postgres`] keeps every tree in one table `kv(tree, key, value)`
//!   (`hub/migrations`), for hub nodes sharing a database (`storage = "cluster"`).
//!
//! Keys order lexicographically by their bytes on both backends (sled's order, and PostgreSQL's
//! `bytea` order). Values are opaque bytes: modules encode them with `protocol::codec` as before.
//!
//! The API is synchronous, like sled's: the modules call it from actors, blocking threads and
//! tasks alike. The PostgreSQL backend runs its queries on a runtime of its own and waits for
//! the answer on a channel, so it works from any thread (never `Handle::block_on`).
//!
//! **Durability.** sled writes are durable after [`Tree::flush`] / [`Keyspace::flush`] (as
//! before); PostgreSQL writes are durable when the call returns, and flushing does nothing.
//!
//! **Transactions** ([`Keyspace::transaction`]) read and write several trees atomically: the
//! closure may run more than once (on a conflict), so it must have no side effects besides its
//! reads and writes through the [`Tx`]; it aborts by returning [`Abort::Abort`], and then nothing
//! it wrote is kept. Writes outside a transaction (insert, remove, batches, compare-and-swap)
//! are atomic with respect to transactions.

#[cfg(test)]
pub(crate) mod conformance;
pub mod postgres;
mod sled_kv;

use super::{Result, StorageError};
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// A key and its value, as stored.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The trees of one hub deployment.
#[derive(Clone)]
pub struct Keyspace {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sled(sled::Db),
    Pg(Arc<postgres::PgKv>),
}

/// One named tree of ordered keys.
#[derive(Clone)]
pub struct Tree {
    name: Arc<str>,
    backend: TreeBackend,
}

#[derive(Clone)]
enum TreeBackend {
    Sled(sled::Tree),
    Pg(Arc<postgres::PgKv>),
}

/// Writes to one tree applied atomically: the last write of a key wins.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes in key order: a value, or `None` for a removal.
    pub fn writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.writes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }
}

/// A compare-and-swap found another value than the one expected (and wrote nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasMismatch {
    /// The value found.
    pub current: Option<Vec<u8>>,
}

/// Why a transaction's read or write failed: the transaction is retried on a conflict; a
/// storage error ends it. Pass it on with `?` (it converts into [`Abort`]).
#[derive(Debug, Clone)]
pub enum TxFault {
    Conflict,
    Storage(StorageError),
}

/// How a transaction's closure stops without committing.
#[derive(Debug, Clone)]
pub enum Abort<E> {
    /// The caller's own reason: nothing is written, and [`Keyspace::transaction`] answers
    /// [`TxError::Abort`].
    Abort(E),
    /// A read or write of the transaction failed.
    Fault(TxFault),
}

impl<E> From<TxFault> for Abort<E> {
    fn from(f: TxFault) -> Self {
        Abort::Fault(f)
    }
}

/// A storage error met inside a transaction (e.g. a value that does not decode) ends it.
impl<E> From<StorageError> for Abort<E> {
    fn from(e: StorageError) -> Self {
        Abort::Fault(TxFault::Storage(e))
    }
}

/// What a transaction answers when it did not commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxError<E> {
    #[error("transaction aborted")]
    Abort(E),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The reads and writes of one transaction, on the trees it was started with.
pub struct Tx<'a> {
    inner: TxInner<'a>,
}

enum TxInner<'a> {
    Sled {
        names: &'a [Arc<str>],
        trees: &'a [sled::transaction::TransactionalTree],
    },
    Pg(&'a postgres::PgTx),
}

impl Tx<'_> {
    pub fn get(
        &self,
        tree: &Tree,
        key: impl AsRef<[u8]>,
    ) -> std::result::Result<Option<Vec<u8>>, TxFault> {
        match &self.inner {
            TxInner::Sled { names, trees } => sled_kv::tx_tree(names, trees, tree)?
                .get(key.as_ref())
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(sled_kv::tx_fault),
            TxInner::Pg(tx) => tx.get(&tree.name, key.as_ref()),
        }
    }

    pub fn insert(
        &self,
        tree: &Tree,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> std::result::Result<(), TxFault> {
        self.write(tree, key.as_ref(), Some(value.as_ref()))
    }

    pub fn remove(&self, tree: &Tree, key: impl AsRef<[u8]>) -> std::result::Result<(), TxFault> {
        self.write(tree, key.as_ref(), None)
    }

    /// Applies a batch of writes to one tree inside the transaction.
    pub fn apply_batch(&self, tree: &Tree, batch: &Batch) -> std::result::Result<(), TxFault> {
        for (k, v) in batch.writes() {
            self.write(tree, k, v)?;
        }
        Ok(())
    }

    fn write(
        &self,
        tree: &Tree,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> std::result::Result<(), TxFault> {
        match &self.inner {
            TxInner::Sled { names, trees } => {
                let t = sled_kv::tx_tree(names, trees, tree)?;
                match value {
                    Some(v) => t.insert(key, v).map(|_| ()),
                    None => t.remove(key).map(|_| ()),
                }
                .map_err(sled_kv::tx_fault)
            }
            TxInner::Pg(tx) => tx.write(&tree.name, key, value),
        }
    }
}

impl Keyspace {
    /// The trees of a sled database (the embedded default).
    pub fn sled(db: sled::Db) -> Keyspace {
        Keyspace {
            backend: Backend::Sled(db),
        }
    }

    /// Connects to PostgreSQL (runs the migrations that have not run yet), on a runtime of the
    /// keyspace's own; `pool_size` bounds its connections.
    pub async fn postgres(
        options: sqlx::postgres::PgConnectOptions,
        pool_size: u32,
    ) -> Result<Keyspace> {
        Ok(Keyspace {
            backend: Backend::Pg(postgres::PgKv::connect(options, pool_size).await?),
        })
    }

    /// The tree called `name` (created on first write).
    pub fn open_tree(&self, name: &str) -> Result<Tree> {
        let backend = match &self.backend {
            Backend::Sled(db) => TreeBackend::Sled(db.open_tree(name).map_err(sled_kv::io)?),
            Backend::Pg(kv) => TreeBackend::Pg(kv.clone()),
        };
        Ok(Tree {
            name: name.into(),
            backend,
        })
    }

    /// Runs `f` as one atomic transaction over `trees` (all of this keyspace), retried on
    /// conflict, see the module's documentation. Durable after a flush on sled.
    pub fn transaction<T, E, F>(&self, trees: &[&Tree], f: F) -> std::result::Result<T, TxError<E>>
    where
        F: Fn(&Tx<'_>) -> std::result::Result<T, Abort<E>>,
    {
        match &self.backend {
            Backend::Sled(_) => sled_kv::transaction(trees, f),
            Backend::Pg(kv) => kv.transaction(f),
        }
    }

    /// Makes every write so far durable (sled; PostgreSQL's are already).
    pub fn flush(&self) -> Result<()> {
        match &self.backend {
            Backend::Sled(db) => db.flush().map(|_| ()).map_err(sled_kv::io),
            Backend::Pg(_) => Ok(()),
        }
    }

    /// [`Keyspace::flush`] for async code (sled flushes on its own threads).
    pub async fn flush_async(&self) -> Result<()> {
        match &self.backend {
            Backend::Sled(db) => db.flush_async().await.map(|_| ()).map_err(sled_kv::io),
            Backend::Pg(_) => Ok(()),
        }
    }

    /// Whether this keyspace is in PostgreSQL (shared by several hub nodes).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Pg(_))
    }

    /// Closes the PostgreSQL connections (on shutdown); later calls fail with `Closed`.
    pub async fn close(&self) {
        if let Backend::Pg(kv) = &self.backend {
            kv.close().await;
        }
    }
}

impl Tree {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        match &self.backend {
            TreeBackend::Sled(t) => t
                .get(key.as_ref())
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(sled_kv::io),
            TreeBackend::Pg(kv) => kv.get(&self.name, key.as_ref()),
        }
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let mut b = Batch::default();
        b.insert(key.as_ref(), value.as_ref());
        self.apply_batch(b)
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let mut b = Batch::default();
        b.remove(key.as_ref());
        self.apply_batch(b)
    }

    /// Applies every write of `batch` or none.
    pub fn apply_batch(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.backend {
            TreeBackend::Sled(t) => {
                let mut b = sled::Batch::default();
                for (k, v) in batch.writes {
                    match v {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    }
                }
                t.apply_batch(b).map_err(sled_kv::io)
            }
            TreeBackend::Pg(kv) => kv.apply_batch(&self.name, &batch),
        }
    }

    /// Writes `new` (a value, or `None` to remove) if the key holds `expected` (`None`: absent);
    /// otherwise writes nothing and answers what it found.
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<std::result::Result<(), CasMismatch>> {
        match &self.backend {
            TreeBackend::Sled(t) => match t
                .compare_and_swap(key.as_ref(), expected, new)
                .map_err(sled_kv::io)?
            {
                Ok(()) => Ok(Ok(())),
                Err(e) => Ok(Err(CasMismatch {
                    current: e.current.map(|v| v.to_vec()),
                })),
            },
            TreeBackend::Pg(kv) => kv.compare_and_swap(&self.name, key.as_ref(), expected, new),
        }
    }

    /// Every entry in key order.
    pub fn iter(&self) -> Iter {
        self.range::<Vec<u8>, _>(..)
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let prefix = prefix.as_ref().to_vec();
        let upper = match prefix_successor(&prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        self.bounded(Bound::Included(prefix), upper)
    }

    /// The entries whose key is in `range`, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let own = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.bounded(own(range.start_bound()), own(range.end_bound()))
    }

    fn bounded(&self, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> Iter {
        let inner = match &self.backend {
            TreeBackend::Sled(t) => IterInner::Sled {
                iter: t.range::<Vec<u8>, _>((lower, upper)),
                rev: false,
            },
            TreeBackend::Pg(kv) => IterInner::Pg(postgres::PgIter::new(
                kv.clone(),
                self.name.clone(),
                lower,
                upper,
            )),
        };
        Iter { inner }
    }

    /// Makes this tree's writes durable (sled; PostgreSQL's are already).
    pub fn flush(&self) -> Result<()> {
        match &self.backend {
            TreeBackend::Sled(t) => t.flush().map(|_| ()).map_err(sled_kv::io),
            TreeBackend::Pg(_) => Ok(()),
        }
    }

    /// [`Tree::flush`] for async code.
    pub async fn flush_async(&self) -> Result<()> {
        match &self.backend {
            TreeBackend::Sled(t) => t.flush_async().await.map(|_| ()).map_err(sled_kv::io),
            TreeBackend::Pg(_) => Ok(()),
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: there is none).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Entries of a scan, in key order (or reversed with [`Iter::rev`]). On PostgreSQL it reads
/// page by page, so a scan stopped early reads little.
pub struct Iter {
    inner: IterInner,
}

enum IterInner {
    Sled { iter: sled::Iter, rev: bool },
    Pg(postgres::PgIter),
}

impl Iter {
    /// The same entries, largest key first.
    pub fn rev(self) -> Iter {
        let inner = match self.inner {
            IterInner::Sled { iter, rev } => IterInner::Sled { iter, rev: !rev },
            IterInner::Pg(p) => IterInner::Pg(p.reversed()),
        };
        Iter { inner }
    }
}

impl Iterator for Iter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            IterInner::Sled { iter, rev } => {
                let next = if *rev { iter.next_back() } else { iter.next() };
                next.map(|r| {
                    r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .map_err(sled_kv::io)
                })
            }
            IterInner::Pg(p) => p.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn the_prefix_successor_bounds_a_prefix_scan() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
