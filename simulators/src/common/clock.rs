//! The accelerated clock of the OMS and logistics simulators: simulated time runs with real
//! time and jumps forward on `POST /_sim/advance`, so tests move an order or a parcel through
//! its lifecycle without waiting. Lifecycle steps are scheduled in simulated milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct SimClock {
    started: Instant,
    /// Milliseconds added by `advance`.
    offset_ms: AtomicU64,
}

impl SimClock {
    pub(crate) fn new() -> SimClock {
        SimClock {
            started: Instant::now(),
            offset_ms: AtomicU64::new(0),
        }
    }

    /// Simulated milliseconds since the simulator started.
    pub(crate) fn now_ms(&self) -> u64 {
        let real = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        real.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Simulated Unix seconds: the wall clock plus what `advance` added.
    pub(crate) fn unix(&self) -> i64 {
        let offset = i64::try_from(self.offset_ms.load(Ordering::Relaxed) / 1000).unwrap_or(0);
        super::unix_now().saturating_add(offset)
    }

    pub(crate) fn advance(&self, seconds: u64) {
        self.offset_ms
            .fetch_add(seconds.saturating_mul(1000), Ordering::Relaxed);
    }
}

/// The interval at which a simulator moves its lifecycles along: a tenth of a lifecycle step,
/// between 10 ms and 500 ms; a late tick is delayed, not bunched.
pub(crate) fn ticks(step: std::time::Duration) -> tokio::time::Interval {
    use std::time::Duration;
    let mut tick = tokio::time::interval(
        (step / 10).clamp(Duration::from_millis(10), Duration::from_millis(500)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_both_clocks() {
        let clock = SimClock::new();
        let (ms, unix) = (clock.now_ms(), clock.unix());
        clock.advance(60);
        assert!(clock.now_ms() >= ms + 60_000);
        assert!(clock.unix() >= unix + 60);
    }
}
