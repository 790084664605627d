//! Sell rights: a bounded counter (escrow), after AntidoteDB's (Balegas et al., SRDS 2015).
//!
//! State: a rights matrix `R[i][j]` (rights replica `i` handed to `j`; `R[i][i]` is what `i`
//! created) and a vector `U[i]` (rights `i` consumed). Row `R[i]` and `U[i]` are written only by
//! replica `i`, so every entry only grows and merge is the pointwise max. A replica consumes or
//! hands on only rights it holds, so, however replicas interleave and merge, the total consumed
//! never exceeds the total created and no replica's own view of its rights goes below zero.
//!
//! Retirement (a rebuilt node's old id) is written by the hub alone: `W[i]` records the rights
//! the retired replica still held, which are written off the value.
//!
//! The same type counts a limited coupon's redemptions: the "rights" are redemptions left.

use super::ReplicaId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The rights to one scarce thing (a SKU at a location, or a coupon's redemptions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    /// `R[i][j]`, keyed `i` then `j`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub r: BTreeMap<ReplicaId, BTreeMap<ReplicaId, u64>>,
    /// `U[i]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub u: BTreeMap<ReplicaId, u64>,
    /// `W[i]`: rights of a retired replica written off (hub-written).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub w: BTreeMap<ReplicaId, u64>,
}

/// Why rights could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RightsError {
    #[error("{wanted} rights wanted, {held} held")]
    Insufficient { held: u64, wanted: u64 },
}

impl Rights {
    pub fn new() -> Rights {
        Rights::default()
    }

    fn get(&self, from: &ReplicaId, to: &ReplicaId) -> u64 {
        self.r
            .get(from)
            .and_then(|row| row.get(to))
            .copied()
            .unwrap_or(0)
    }

    fn slot(&mut self, from: &ReplicaId, to: &ReplicaId) -> &mut u64 {
        self.r
            .entry(from.clone())
            .or_default()
            .entry(to.clone())
            .or_insert(0)
    }

    /// Rights replica `i` holds, as this replica's state sees it: created plus received minus
    /// handed on minus consumed. Computed by `i` from its own state this is never negative;
    /// another replica's partial view may be, until merged.
    pub fn held_signed(&self, i: &ReplicaId) -> i128 {
        let created = i128::from(self.get(i, i));
        let received: i128 = self
            .r
            .iter()
            .filter(|(from, _)| *from != i)
            .map(|(_, row)| i128::from(row.get(i).copied().unwrap_or(0)))
            .sum();
        let given: i128 = self
            .r
            .get(i)
            .map(|row| {
                row.iter()
                    .filter(|(to, _)| *to != i)
                    .map(|(_, n)| i128::from(*n))
                    .sum()
            })
            .unwrap_or(0);
        let consumed = i128::from(self.u.get(i).copied().unwrap_or(0));
        created + received - given - consumed
    }

    /// Rights `i` holds (0 when a partial view would say less).
    pub fn held(&self, i: &ReplicaId) -> u64 {
        u64::try_from(self.held_signed(i).max(0)).unwrap_or(u64::MAX)
    }

    /// Everything created, on every replica.
    pub fn created(&self) -> u64 {
        self.r
            .iter()
            .map(|(i, row)| row.get(i).copied().unwrap_or(0))
            .fold(0u64, u64::saturating_add)
    }

    /// Everything consumed, on every replica.
    pub fn consumed(&self) -> u64 {
        self.u.values().copied().fold(0u64, u64::saturating_add)
    }

    /// Units still sellable anywhere: created − consumed − written off.
    pub fn value(&self) -> i128 {
        i128::from(self.created())
            - i128::from(self.consumed())
            - self.w.values().map(|n| i128::from(*n)).sum::<i128>()
    }

    /// `at` creates `units` rights (it owns the location and stock arrived).
    pub fn create(&mut self, at: &ReplicaId, units: u64) {
        let slot = self.slot(at, at);
        *slot = slot.saturating_add(units);
    }

    /// `at` consumes `units` of the rights it holds (a sale, or stock leaving without one).
    pub fn consume(&mut self, at: &ReplicaId, units: u64) -> Result<(), RightsError> {
        let held = self.held(at);
        if held < units {
            return Err(RightsError::Insufficient {
                held,
                wanted: units,
            });
        }
        let used = self.u.entry(at.clone()).or_insert(0);
        *used = used.saturating_add(units);
        Ok(())
    }

    /// Consumes what `at` holds up to `units`; returns how many were consumed.
    pub fn consume_up_to(&mut self, at: &ReplicaId, units: u64) -> u64 {
        let n = units.min(self.held(at));
        if n > 0 {
            *self.u.entry(at.clone()).or_insert(0) += n;
        }
        n
    }

    /// `from` hands `units` of its rights to `to`, who can use them once the merged state arrives.
    pub fn transfer(
        &mut self,
        from: &ReplicaId,
        to: &ReplicaId,
        units: u64,
    ) -> Result<(), RightsError> {
        let held = self.held(from);
        if held < units {
            return Err(RightsError::Insufficient {
                held,
                wanted: units,
            });
        }
        if from != to {
            let slot = self.slot(from, to);
            *slot = slot.saturating_add(units);
        }
        Ok(())
    }

    /// Net rights `from` has handed to the others: given minus given back (never below 0).
    /// For a coupon this is what the hub has sent to the stores, used there or not.
    pub fn given_away(&self, from: &ReplicaId) -> u64 {
        let given: i128 = self
            .r
            .get(from)
            .map(|row| {
                row.iter()
                    .filter(|(to, _)| *to != from)
                    .map(|(_, n)| i128::from(*n))
                    .sum()
            })
            .unwrap_or(0);
        let back: i128 = self
            .r
            .iter()
            .filter(|(i, _)| *i != from)
            .map(|(_, row)| i128::from(row.get(from).copied().unwrap_or(0)))
            .sum();
        u64::try_from((given - back).max(0)).unwrap_or(u64::MAX)
    }

    /// The creator `at` aligns what it has made available, created minus its own consumption
    /// (`R[at][at] − U[at]`), with `target`: it creates the difference when below, and consumes
    /// it from the rights it holds when above. Entries only grow, so a figure that goes down and
    /// up again (an online order redeemed, then cancelled) is a consumption, then a creation.
    /// Returns what it could not consume because it no longer holds it (handed on).
    pub fn align_own(&mut self, at: &ReplicaId, target: u64) -> u64 {
        let current =
            i128::from(self.get(at, at)) - i128::from(self.u.get(at).copied().unwrap_or(0));
        let target = i128::from(target);
        if target > current {
            self.create(at, u64::try_from(target - current).unwrap_or(u64::MAX));
            0
        } else {
            let excess = u64::try_from(current - target).unwrap_or(u64::MAX);
            excess - self.consume_up_to(at, excess)
        }
    }

    /// The hub writes off the rights `retired` holds now (its id is being retired). Written by the
    /// hub alone; a second call keeps the larger figure.
    pub fn retire(&mut self, retired: &ReplicaId) {
        let held = self.held(retired);
        let slot = self.w.entry(retired.clone()).or_insert(0);
        *slot = (*slot).max(held);
    }

    /// The part of this state replica `i` writes: its row of `R`, `U[i]` and (for the hub) `W`.
    /// This is the delta `i` ships after a change.
    pub fn row(&self, i: &ReplicaId) -> Rights {
        let mut out = Rights::new();
        if let Some(row) = self.r.get(i) {
            out.r.insert(i.clone(), row.clone());
        }
        if let Some(u) = self.u.get(i) {
            out.u.insert(i.clone(), *u);
        }
        if i.is_hub() {
            out.w = self.w.clone();
        }
        out
    }

    /// Pointwise max.
    pub fn merge(&mut self, other: &Rights) {
        for (from, row) in &other.r {
            for (to, n) in row {
                let slot = self.slot(from, to);
                *slot = (*slot).max(*n);
            }
        }
        for (map, theirs) in [(&mut self.u, &other.u), (&mut self.w, &other.w)] {
            for (i, n) in theirs {
                let slot = map.entry(i.clone()).or_insert(0);
                *slot = (*slot).max(*n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ReplicaId {
        ReplicaId(s.to_string())
    }

    #[test]
    fn the_node_grants_the_hub_and_each_sells_only_what_it_holds() {
        let (hub, node) = (ReplicaId::hub(), id("berlin"));
        let mut at_node = Rights::new();
        at_node.create(&node, 10);
        at_node.transfer(&node, &hub, 6).expect("held");
        assert_eq!(at_node.held(&node), 4);
        let mut at_hub = Rights::new();
        at_hub.merge(&at_node.row(&node));
        assert_eq!(at_hub.held(&hub), 6);
        // Cut off: the node sells its 4, the hub promises its 6; neither can do more.
        at_node.consume(&node, 4).expect("held");
        assert!(at_node.consume(&node, 1).is_err());
        at_hub.consume(&hub, 6).expect("held");
        assert_eq!(
            at_hub.consume(&hub, 1),
            Err(RightsError::Insufficient { held: 0, wanted: 1 })
        );
        at_hub.merge(&at_node.row(&node));
        at_node.merge(&at_hub.row(&hub));
        assert_eq!(at_hub, at_node);
        assert_eq!(at_hub.value(), 0);
    }

    #[test]
    fn retiring_a_replica_writes_off_what_it_held() {
        let (hub, old) = (ReplicaId::hub(), id("berlin"));
        let mut state = Rights::new();
        state.create(&old, 5);
        state.transfer(&old, &hub, 2).expect("held");
        state.retire(&old);
        assert_eq!(state.value(), 2, "only the hub's 2 are still sellable");
        assert_eq!(state.row(&hub).w.get(&old), Some(&3));
    }
}
