//! Batches of own outbox entries for the hub: whole entries, bounded by `MAX_BATCH_ITEMS` and
//! `MAX_BATCH_BYTES`, `OnHand`/`Rights` items coalesced per key (absolute states: the latest
//! counts).

use crate::storage::{on_hand_key, rights_key};
use protocol::replication::sync::{item_size, Item, MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
use std::collections::HashMap;

/// A batch of own outbox entries to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    pub from: u64,
    pub to: u64,
    pub items: Vec<Item>,
}

/// Builds a batch within the bounds, coalescing `OnHand` and `Rights` items per key.
#[derive(Default)]
pub(super) struct BatchBuilder {
    pub items: Vec<Item>,
    sizes: Vec<usize>,
    bytes: usize,
    /// Position of the state item per key.
    states: HashMap<Vec<u8>, usize>,
}

impl BatchBuilder {
    /// Adds a whole entry if it fits (or if it is the first: an entry always goes out). The
    /// items of one entry come from one change, so each state key appears in it at most once.
    pub fn try_add(&mut self, entry: Vec<Item>, first: bool) -> bool {
        let prepared: Vec<(Option<Vec<u8>>, usize, Item)> = entry
            .into_iter()
            .map(|item| (state_key(&item), item_size(&item), item))
            .collect();
        let mut count = self.items.len();
        let mut bytes = self.bytes;
        for (key, size, _) in &prepared {
            match key.as_ref().and_then(|k| self.states.get(k)) {
                Some(at) => bytes = bytes.saturating_sub(self.sizes[*at]).saturating_add(*size),
                None => {
                    count += 1;
                    bytes = bytes.saturating_add(*size);
                }
            }
        }
        if !first && (count > MAX_BATCH_ITEMS || bytes > MAX_BATCH_BYTES) {
            return false;
        }
        for (key, size, item) in prepared {
            match key.as_ref().and_then(|k| self.states.get(k)).copied() {
                Some(at) => {
                    self.items[at] = item;
                    self.sizes[at] = size;
                }
                None => {
                    if let Some(k) = key {
                        self.states.insert(k, self.items.len());
                    }
                    self.items.push(item);
                    self.sizes.push(size);
                }
            }
        }
        self.bytes = bytes;
        true
    }
}

/// The key of a state item (only the latest state per key matters).
fn state_key(item: &Item) -> Option<Vec<u8>> {
    match item {
        Item::OnHand { sku, location, .. } => Some(on_hand_key(location, sku)),
        Item::Rights { key, .. } => Some(rights_key(key)),
        _ => None,
    }
}
