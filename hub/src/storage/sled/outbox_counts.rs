//! Pending and dead outbox messages per destination, counted by the writer as it commits, so
//! `/metrics`, `/ops/outbox` and the ops page read the backlog without scanning it.
//!
//! The counts start from one scan when the storage opens. The writer thread is the only writer
//! of the outbox keys: for each key a group touches it notes whether the key existed before the
//! group's batch and after it, and adds the difference.

use super::io;
use crate::storage::Result;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// The spaces counted, as they start keys (`outbox/<destination>\0<id>`).
pub(super) const PENDING: &str = "outbox";
pub(super) const DEAD: &str = "outdead";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub pending: u64,
    pub dead: u64,
}

/// The counts, read by anyone, written by the storage writer only.
#[derive(Default)]
pub(crate) struct OutboxCounts {
    counts: RwLock<BTreeMap<String, Counts>>,
}

/// The space and destination of an outbox key.
fn parse(key: &[u8]) -> Option<(bool, &[u8])> {
    let (dead, rest) = if let Some(rest) = key.strip_prefix(b"outbox/") {
        (false, rest)
    } else {
        (true, key.strip_prefix(b"outdead/")?)
    };
    let end = rest.iter().position(|b| *b == 0)?;
    Some((dead, &rest[..end]))
}

impl OutboxCounts {
    /// Counts what `tree` holds now (once, at open).
    pub(super) fn scan(tree: &sled::Tree) -> Result<OutboxCounts> {
        let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
        for space in [PENDING, DEAD] {
            for kv in tree.scan_prefix(format!("{space}/").as_bytes()) {
                let (k, _) = kv.map_err(io)?;
                if let Some((dead, destination)) = parse(&k) {
                    let c = counts
                        .entry(String::from_utf8_lossy(destination).into_owned())
                        .or_default();
                    if dead {
                        c.dead += 1;
                    } else {
                        c.pending += 1;
                    }
                }
            }
        }
        Ok(OutboxCounts {
            counts: RwLock::new(counts),
        })
    }

    /// Every destination's counts.
    pub(crate) fn all(&self) -> BTreeMap<String, Counts> {
        self.counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn add(&self, changes: BTreeMap<(String, bool), i64>) {
        if changes.values().all(|d| *d == 0) {
            return;
        }
        let mut counts = self.counts.write().unwrap_or_else(|e| e.into_inner());
        for ((destination, dead), delta) in changes {
            let c = counts.entry(destination).or_default();
            let n = if dead { &mut c.dead } else { &mut c.pending };
            *n = n.saturating_add_signed(delta);
        }
        counts.retain(|_, c| *c != Counts::default());
    }
}

/// The outbox keys one group commit touches, with whether each existed before the batch.
#[derive(Default)]
pub(super) struct Touched {
    before: HashMap<Vec<u8>, bool>,
}

impl Touched {
    /// Notes `key` if it is an outbox key (the first time it is seen in the group). A key
    /// whose read fails is left out: its count stays as it was rather than going wrong.
    pub(super) fn note(&mut self, tree: &sled::Tree, key: &[u8]) {
        if parse(key).is_some() && !self.before.contains_key(key) {
            if let Ok(existed) = tree.contains_key(key) {
                self.before.insert(key.to_vec(), existed);
            }
        }
    }

    /// After the batch is applied: moves the counts by what changed.
    pub(super) fn settle(self, tree: &sled::Tree, counts: &OutboxCounts) {
        let mut changes: BTreeMap<(String, bool), i64> = BTreeMap::new();
        for (key, existed) in self.before {
            // A read that fails leaves the key as it was counted: no change is better than a
            // wrong one.
            let exists = tree.contains_key(&key).unwrap_or(existed);
            if let (Some((dead, destination)), true) = (parse(&key), exists != existed) {
                let delta = if exists { 1 } else { -1 };
                *changes
                    .entry((String::from_utf8_lossy(destination).into_owned(), dead))
                    .or_default() += delta;
            }
        }
        counts.add(changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (&'static [u8], Option<(bool, &'static [u8])>);

    #[test]
    fn outbox_keys_name_their_space_and_destination() {
        let cases: [Case; 5] = [
            (b"outbox/oms\0abc", Some((false, b"oms"))),
            (b"outdead/email\0x", Some((true, b"email"))),
            (b"outbox/no-end", None),
            (b"okey/oms\0x", None),
            (b"basket/x", None),
        ];
        for (key, expected) in cases {
            assert_eq!(parse(key), expected, "{key:?}");
        }
    }
}
