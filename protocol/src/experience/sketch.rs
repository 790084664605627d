//! Distinct counts that merge across days: exact up to [`EXACT_LIMIT`] members, a HyperLogLog
//! sketch beyond (2^12 registers, a standard error of about 1.6 %).
//!
//! A sketch depends only on the set of members inserted, never on their order or on how the
//! inserts were batched: the exact form holds the sorted member hashes, the dense form is the
//! HyperLogLog registers of that same set (a register is a maximum). So an incrementally
//! updated sketch equals one rebuilt from scratch, and the union of daily sketches counts a
//! subject seen on several days once.

use crate::event::Subject;
use serde::{Deserialize, Serialize};

/// Register index bits.
const P: u32 = 12;
const REGISTERS: usize = 1 << P;
/// Members kept exactly before the sketch turns dense (as many bytes as the registers).
pub const EXACT_LIMIT: usize = 512;

/// A mergeable distinct count of 64-bit member hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", content = "d", rename_all = "snake_case")]
pub enum DistinctSketch {
    /// The member hashes, sorted, no duplicates.
    Exact(Vec<u64>),
    /// HyperLogLog registers.
    Dense(Vec<u8>),
}

impl Default for DistinctSketch {
    fn default() -> Self {
        DistinctSketch::Exact(Vec::new())
    }
}

impl DistinctSketch {
    /// Adds a member; answers whether the sketch changed.
    pub fn insert(&mut self, hash: u64) -> bool {
        match self {
            DistinctSketch::Exact(members) => match members.binary_search(&hash) {
                Ok(_) => false,
                Err(at) => {
                    members.insert(at, hash);
                    if members.len() > EXACT_LIMIT {
                        *self = DistinctSketch::Dense(registers_of(members));
                    }
                    true
                }
            },
            DistinctSketch::Dense(registers) => set_register(registers, hash),
        }
    }

    /// Adds every member of `other`.
    pub fn merge(&mut self, other: &DistinctSketch) {
        match other {
            DistinctSketch::Exact(members) => {
                for h in members {
                    self.insert(*h);
                }
            }
            DistinctSketch::Dense(theirs) => {
                if let DistinctSketch::Exact(members) = self {
                    *self = DistinctSketch::Dense(registers_of(members));
                }
                if let DistinctSketch::Dense(mine) = self {
                    for (m, t) in mine.iter_mut().zip(theirs) {
                        *m = (*m).max(*t);
                    }
                }
            }
        }
    }

    /// The number of distinct members: exact, or the HyperLogLog estimate.
    pub fn count(&self) -> u64 {
        match self {
            DistinctSketch::Exact(members) => members.len() as u64,
            DistinctSketch::Dense(registers) => estimate(registers),
        }
    }

    /// Whether the count is an estimate.
    pub fn is_estimate(&self) -> bool {
        matches!(self, DistinctSketch::Dense(_))
    }
}

fn registers_of(members: &[u64]) -> Vec<u8> {
    let mut registers = vec![0u8; REGISTERS];
    for h in members {
        set_register(&mut registers, *h);
    }
    registers
}

fn set_register(registers: &mut [u8], hash: u64) -> bool {
    let index = (hash >> (64 - P)) as usize;
    // The remaining bits with a sentinel, so the rank is at most 64 - P + 1.
    let rest = (hash << P) | (1 << (P - 1));
    let rank = rest.leading_zeros() as u8 + 1;
    match registers.get_mut(index) {
        Some(r) if *r < rank => {
            *r = rank;
            true
        }
        _ => false,
    }
}

fn estimate(registers: &[u8]) -> u64 {
    let m = registers.len() as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = registers.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
    let raw = alpha * m * m / sum;
    let zeros = registers.iter().filter(|r| **r == 0).count();
    let value = if raw <= 2.5 * m && zeros > 0 {
        // Linear counting is the better estimate for small sets.
        m * (m / zeros as f64).ln()
    } else {
        raw
    };
    value.round() as u64
}

/// A well-mixed 64-bit hash of a subject (SplitMix64 finaliser over its id), stable across
/// builds and machines, so stored sketches stay valid.
pub fn subject_hash(subject: &Subject) -> u64 {
    let (tag, id) = match subject {
        Subject::Customer(c) => (1u64, c.0 .0),
        Subject::Anonymous(a) => (2u64, a.0 .0),
    };
    let hi = (id >> 64) as u64;
    let lo = id as u64;
    mix(mix(mix(tag) ^ hi) ^ lo)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CustomerId;

    fn hashes(n: u64) -> Vec<u64> {
        (0..n).map(|i| mix(i.wrapping_mul(7919))).collect()
    }

    #[test]
    fn small_sets_are_exact_and_large_ones_close() {
        let mut small = DistinctSketch::default();
        for h in hashes(300) {
            small.insert(h);
            small.insert(h);
        }
        assert_eq!(small.count(), 300);
        assert!(!small.is_estimate());
        let mut large = DistinctSketch::default();
        for h in hashes(100_000) {
            large.insert(h);
        }
        let error = (large.count() as f64 - 100_000.0).abs() / 100_000.0;
        assert!(error < 0.05, "estimate {} is off by {error}", large.count());
    }

    #[test]
    fn merging_equals_inserting_everything_in_one() {
        let all = hashes(2_000);
        let mut one = DistinctSketch::default();
        for h in &all {
            one.insert(*h);
        }
        let mut parts = DistinctSketch::default();
        for chunk in all.chunks(300).rev() {
            let mut part = DistinctSketch::default();
            for h in chunk {
                part.insert(*h);
            }
            parts.merge(&part);
        }
        assert_eq!(one, parts);
        let a = subject_hash(&Subject::Customer(CustomerId(ulid::Ulid(42))));
        assert_eq!(
            a,
            subject_hash(&Subject::Customer(CustomerId(ulid::Ulid(42))))
        );
    }
}
