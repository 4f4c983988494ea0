//! The one way latchkey reads the wall clock, so tests can move time instead of sleeping: the
//! shared [`Clock`] of latchkey-common (the server counts in its `unix_seconds`), and a
//! [`ManualClock`] that tests set in whole seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use latchkey_common::{Clock, SystemClock};

/// A clock that only moves when told to, in whole seconds: for tests and simulations. Clones
/// share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `now` seconds since the epoch.
    pub fn new(now: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now)))
    }

    /// Moves the clock forward (or back, with a negative value) by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Sets the clock to `now`.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        let seconds = self.0.load(Ordering::SeqCst);
        UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }

    fn unix_seconds(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
