//! Where the client reads the time: the shared [`Clock`] (latchkey-common), so tests move
//! time instead of sleeping; and conversions the client's stores use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use latchkey_common::clock::{Clock, ManualClock, SystemClock};

/// Milliseconds since the Unix epoch; times before it read as 0.
pub(crate) fn to_millis(time: SystemTime) -> u64 {
    latchkey_common::clock::unix_millis(time)
}

/// The inverse of [`to_millis`].
pub(crate) fn from_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

/// Whole seconds since the Unix epoch (0 for a clock before it).
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
