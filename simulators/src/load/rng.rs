//! A small, fast pseudo-random generator (SplitMix64) for choosing what a simulated client does
//! next. Not for anything secret.

use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: one `u64` of state, good enough statistics for picking products and quantities.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded from the clock and `stream`, so concurrent clients differ.
    pub fn for_stream(stream: u64) -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng::new(nanos ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u32, high: u32) -> u32 {
        low + self.below((high.saturating_sub(low) + 1) as usize) as u32
    }

    /// An element of `items`, or `None` when it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_range_and_is_deterministic_for_a_seed() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.between(1, 3);
            assert!((1..=3).contains(&x));
            assert_eq!(x, b.between(1, 3));
            assert!(a.below(5) < 5);
            b.below(5);
        }
        assert_eq!(a.below(0), 0);
        assert!(a.pick::<u8>(&[]).is_none());
        assert_eq!(a.pick(&[9]), Some(&9));
    }

    #[test]
    fn every_value_of_a_small_range_comes_up() {
        let mut rng = Rng::new(42);
        let mut seen = [false; 3];
        for _ in 0..100 {
            seen[(rng.between(1, 3) - 1) as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
