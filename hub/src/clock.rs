//! Time, injected: actors ask a [`Clock`], so tests can move time forward without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to (for tests).
#[derive(Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock {
            nanos: Arc::new(AtomicI64::new((start.unix_timestamp_nanos()) as i64)),
        }
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.nanos.fetch_add(by.as_nanos() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.nanos.load(Ordering::SeqCst)))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}
