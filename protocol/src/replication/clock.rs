//! A hybrid logical clock (HLC): physical milliseconds, a counter and the replica, so stamps are
//! unique, grow on every replica, and order writes even when a node's wall clock is wrong. A node
//! learns the hub's time at each handshake and stamps with its corrected time.

use super::ReplicaId;
use serde::{Deserialize, Serialize};

/// One stamp. Ordered by (milliseconds, counter, replica), so two stamps are never equal unless
/// they are the same stamp.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    pub ms: u64,
    pub c: u32,
    pub r: ReplicaId,
}

/// The clock of one replica.
#[derive(Debug, Clone)]
pub struct HybridClock {
    replica: ReplicaId,
    last_ms: u64,
    counter: u32,
    /// Correction added to the local wall clock (learnt from the hub), in milliseconds.
    offset_ms: i64,
}

impl HybridClock {
    pub fn new(replica: ReplicaId) -> HybridClock {
        HybridClock {
            replica,
            last_ms: 0,
            counter: 0,
            offset_ms: 0,
        }
    }

    /// The correction in use: hub time minus local time, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Learns the hub's time: `local_ms` is this replica's wall clock when `hub_ms` was read.
    /// Returns the skew (hub minus local), which the operator sees when it is large.
    pub fn learn(&mut self, local_ms: u64, hub_ms: u64) -> i64 {
        let skew =
            i64::try_from(hub_ms).unwrap_or(i64::MAX) - i64::try_from(local_ms).unwrap_or(i64::MAX);
        self.offset_ms = skew;
        skew
    }

    /// A new stamp, greater than every stamp this clock made or observed before.
    pub fn now(&mut self, local_ms: u64) -> Hlc {
        let corrected = local_ms.saturating_add_signed(self.offset_ms);
        if corrected > self.last_ms {
            self.last_ms = corrected;
            self.counter = 0;
        } else {
            self.counter = self.counter.saturating_add(1);
        }
        Hlc {
            ms: self.last_ms,
            c: self.counter,
            r: self.replica.clone(),
        }
    }

    /// Takes in a stamp seen from another replica, so later local stamps are greater.
    pub fn observe(&mut self, seen: &Hlc) {
        if seen.ms > self.last_ms {
            self.last_ms = seen.ms;
            self.counter = seen.c;
        } else if seen.ms == self.last_ms {
            self.counter = self.counter.max(seen.c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_grow_even_when_the_wall_clock_goes_back() {
        let mut clock = HybridClock::new(ReplicaId::hub());
        let a = clock.now(1_000);
        let b = clock.now(900);
        let c = clock.now(1_000);
        assert!(a < b && b < c);
    }

    #[test]
    fn a_node_stamps_with_the_hubs_time_once_learnt() {
        let mut clock = HybridClock::new(ReplicaId("berlin".into()));
        // The node's clock is an hour behind.
        assert_eq!(clock.learn(1_000_000, 4_600_000), 3_600_000);
        assert_eq!(clock.now(1_000_100).ms, 4_600_100);
    }

    #[test]
    fn observed_stamps_are_passed() {
        let mut clock = HybridClock::new(ReplicaId("a".into()));
        let seen = Hlc {
            ms: 5_000,
            c: 7,
            r: ReplicaId("b".into()),
        };
        clock.observe(&seen);
        assert!(clock.now(10) > seen);
    }
}
