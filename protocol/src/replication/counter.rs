//! Stock on hand per (SKU, location): a PN-counter from `crdts` with one increment and one
//! decrement entry per replica that moves stock; merge is the pointwise max of the entries.
//!
//! A replica ships its own entries (absolute totals, see [`OnHand::entry`]), so applying the same
//! delta twice, or an older one after a newer one, changes nothing.

use super::ReplicaId;
use crdts::pncounter::{Dir, Op};
use crdts::{CmRDT, CvRDT, Dot, PNCounter};
use serde::{Deserialize, Serialize};

/// The physical units at one location, as every replica that moved them saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OnHand(PNCounter<ReplicaId>);

/// One replica's entries: everything it ever added (`p`) and removed (`n`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub p: u64,
    pub n: u64,
}

impl OnHand {
    pub fn new() -> OnHand {
        OnHand::default()
    }

    /// Units on hand: all additions minus all removals (negative only if more left than arrived,
    /// e.g. an over-sale that a count will correct).
    pub fn value(&self) -> i64 {
        i64::try_from(self.0.read()).unwrap_or(0)
    }

    /// `replica` adds `units` (a receipt, a count up, a restock); returns its new entry.
    pub fn add(&mut self, replica: &ReplicaId, units: u64) -> Entry {
        if units > 0 {
            let op = self.0.inc_many(replica.clone(), units);
            self.0.apply(op);
        }
        self.entry(replica)
    }

    /// `replica` removes `units` (a sale, damage, a count down); returns its new entry.
    pub fn remove(&mut self, replica: &ReplicaId, units: u64) -> Entry {
        if units > 0 {
            let op = self.0.dec_many(replica.clone(), units);
            self.0.apply(op);
        }
        self.entry(replica)
    }

    /// `replica`'s entries as they stand here.
    pub fn entry(&self, replica: &ReplicaId) -> Entry {
        // `inc_many(_, 0)` builds the op for the current total without changing anything.
        Entry {
            p: self.0.inc_many(replica.clone(), 0).dot.counter,
            n: self.0.dec_many(replica.clone(), 0).dot.counter,
        }
    }

    /// Merges `replica`'s entries as another replica shipped them.
    pub fn apply_entry(&mut self, replica: &ReplicaId, entry: Entry) {
        for (counter, dir) in [(entry.p, Dir::Pos), (entry.n, Dir::Neg)] {
            if counter > 0 {
                self.0.apply(Op {
                    dot: Dot::new(replica.clone(), counter),
                    dir,
                });
            }
        }
    }

    /// Merges another replica's whole view.
    pub fn merge(&mut self, other: &OnHand) {
        self.0.merge(other.0.clone());
    }
}
