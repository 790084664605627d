//! A grow-only map of immutable records (sales, orders made in a store, deficits, settlements,
//! conflicts): merge is the union, and a record with the same id is the same record, because ids
//! are ULIDs made once, by the replica that made the record. So a resync never duplicates one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GrowMap<K: Ord, V>(BTreeMap<K, V>);

impl<K: Ord, V> Default for GrowMap<K, V> {
    fn default() -> Self {
        GrowMap(BTreeMap::new())
    }
}

impl<K: Ord + Clone, V: Clone> GrowMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record; returns `false` (and keeps the first) if the id was already there.
    pub fn insert(&mut self, key: K, value: V) -> bool {
        match self.0.entry(key) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(value);
                true
            }
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.0.get(key)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.0.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter()
    }

    /// Union; returns the records that were new here.
    pub fn merge(&mut self, other: &GrowMap<K, V>) -> Vec<K> {
        let mut added = Vec::new();
        for (k, v) in &other.0 {
            if self.insert(k.clone(), v.clone()) {
                added.push(k.clone());
            }
        }
        added
    }
}
