//! Where the back office keeps its records: a narrow key-value trait ([`BackofficeStore`]) so a
//! cluster backend can implement it later, and its implementation on a keyspace tree of its own
//! (`backoffice`, in the hub's [`Keyspace`]).
//!
//! Keys are `{space}/{rest}` with ULIDs as 16 big-endian bytes (so key order is time order) and
//! numbers as 8 big-endian bytes. Values are encoded by `protocol::codec`. Every change is one
//! [`Batch`], applied atomically and flushed before it is acknowledged.

use crate::storage::kv::{Keyspace, Tree};
use crate::storage::{Result, StorageError};
use protocol::{codec, Stored};
use std::sync::Arc;

/// A key-value store with prefix scans and atomic, durable batches.
pub trait BackofficeStore: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Entries whose key starts with `prefix`, in key order, starting after `after` (a full
    /// key) when given, at most `limit`.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Applies every write of the batch or none, durably (it may block on disk).
    fn commit(&self, batch: Batch) -> Result<()>;
}

/// Writes applied together: a key and its new value, or `None` to remove it.
#[derive(Debug, Default)]
pub struct Batch {
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn put<T: Stored>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        self.writes.push((key, Some(codec::encode(value)?)));
        Ok(())
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// A key `{space}/` followed by the parts, separated by NUL bytes.
pub fn key(space: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = space.as_bytes().to_vec();
    k.push(b'/');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(part);
    }
    k
}

/// The prefix of every key `{space}/{first}\0…`.
pub fn prefix(space: &str, first: &[u8]) -> Vec<u8> {
    let mut k = key(space, &[first]);
    k.push(0);
    k
}

/// Reads and decodes one record.
pub fn get<T: Stored>(store: &dyn BackofficeStore, key: &[u8]) -> Result<Option<T>> {
    store
        .get(key)?
        .map(|v| codec::decode::<T>(&v).map_err(StorageError::from))
        .transpose()
}

/// Reads and decodes every record under a prefix.
pub fn scan_all<T: Stored>(store: &dyn BackofficeStore, prefix: &[u8]) -> Result<Vec<T>> {
    store
        .scan(prefix, None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| codec::decode::<T>(&v).map_err(StorageError::from))
        .collect()
}

pub fn read_u64(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes)
}

/// The back office's tree (`backoffice`) in the hub's keyspace.
pub struct KvBackofficeStore {
    tree: Tree,
}

impl KvBackofficeStore {
    pub fn open(keyspace: &Keyspace) -> Result<Arc<KvBackofficeStore>> {
        let tree = keyspace.open_tree("backoffice")?;
        Ok(Arc::new(KvBackofficeStore { tree }))
    }
}

impl BackofficeStore for KvBackofficeStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.tree.get(key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let entries = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0);
                self.tree.range(start..)
            }
            None => self.tree.scan_prefix(prefix),
        };
        entries
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .collect()
    }

    fn commit(&self, batch: Batch) -> Result<()> {
        let mut b = crate::storage::kv::Batch::default();
        for (k, v) in batch.writes {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.tree.apply_batch(b)?;
        self.tree.flush()
    }
}

/// The store in memory, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryStore {
    map: std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
}

#[cfg(test)]
impl BackofficeStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let map = self.map.lock().map_err(|_| StorageError::Closed)?;
        Ok(map.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.map.lock().map_err(|_| StorageError::Closed)?;
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, batch: Batch) -> Result<()> {
        let mut map = self.map.lock().map_err(|_| StorageError::Closed)?;
        for (k, v) in batch.writes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }
}
