//! The retry policy: which failures are worth another attempt, and how long to wait before
//! it (exponential backoff with equal jitter, at least what `Retry-After` asks, within a
//! deadline). Pure: the loop that sends, sleeps and gives up belongs to the caller
//! (latchkey-client's `retry::run`).

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};

/// How hard to try before giving up.
///
/// Network errors, HTTP 408, 429 and 5xx are retried: after `initial_backoff`, then twice as
/// long each time up to `max_backoff`, each wait drawn between half and all of that ("equal
/// jitter"). When the server sends `Retry-After`, the wait is at least that long. When the
/// next attempt would start after `deadline`, the last failure is returned. 4xx answers with
/// an OAuth error are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Give up when the next attempt would start later than this after the first (default 30 s).
    pub deadline: Duration,
    /// The first backoff (default 200 ms).
    pub initial_backoff: Duration,
    /// The longest backoff the policy chooses itself (default 10 s); a longer `Retry-After` is
    /// still honoured when it fits in the deadline.
    pub max_backoff: Duration,
    /// The longest a single request may take (default 10 s).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1), for `random` uniform in [0, 1):
    /// between half and all of the [`exponential_backoff`] ("equal jitter").
    pub fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let full = exponential_backoff(attempt, self.initial_backoff, self.max_backoff);
        full / 2 + (full / 2).mul_f64(random.clamp(0.0, 1.0))
    }

    /// How long the next attempt may take when `left` remains before the deadline: at most
    /// `attempt_timeout`, never nothing.
    pub fn attempt_timeout(&self, left: Duration) -> Duration {
        self.attempt_timeout.min(left).max(Duration::from_millis(1))
    }

    /// The wait before attempt `attempt + 1`, after attempt `attempt` failed in a way worth
    /// retrying and `left` remains before the deadline: the [`backoff`](Self::backoff), or
    /// what the server asked in `Retry-After` when that is longer (RFC 9110 §10.2.3: at least
    /// as long as it asks; `Retry-After: 0` does not turn the backoff off). `None` when the
    /// next attempt would not start before the deadline: give up.
    pub fn next_wait(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        random: f64,
        left: Duration,
    ) -> Option<Duration> {
        let backoff = self.backoff(attempt, random);
        let wait = retry_after.map_or(backoff, |after| after.max(backoff));
        (wait < left).then_some(wait)
    }
}

/// `initial`, doubled for each attempt after the first (`attempt` ≥ 1), at most `max`. No
/// jitter: [`RetryPolicy::backoff`] adds it; a caller with a single task per target (the
/// server's issuer discovery) uses this as it is.
pub fn exponential_backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    initial.saturating_mul(doubling).min(max)
}

/// Statuses worth another attempt: 408, 429 and every 5xx. Any other answer (a 4xx OAuth
/// error above all) is the server's verdict and would come again.
pub fn retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// RFC 9110 §10.2.3: `Retry-After` is either a number of seconds or an HTTP date (one in the
/// past reads as no wait).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(policy.backoff(1, 0.999_999_9).as_millis(), 199);
        assert_eq!(policy.backoff(3, 0.0), Duration::from_millis(400));
        assert_eq!(policy.backoff(40, 0.0), Duration::from_secs(5));
        assert_eq!(policy.backoff(u32::MAX, 0.5), Duration::from_millis(7500));
    }

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let (second, five_minutes) = (Duration::from_secs(1), Duration::from_secs(300));
        let waits: Vec<u64> = (1..=11)
            .map(|attempt| exponential_backoff(attempt, second, five_minutes).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(exponential_backoff(0, second, five_minutes), second);
        assert_eq!(
            exponential_backoff(u32::MAX, second, five_minutes),
            five_minutes
        );
    }

    #[test]
    fn the_wait_honours_retry_after_and_the_deadline() {
        let policy = RetryPolicy::default();
        let plenty = Duration::from_secs(30);
        // The backoff alone, or Retry-After when it is longer; never less than the backoff.
        assert_eq!(
            policy.next_wait(1, None, 0.0, plenty),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            policy.next_wait(1, Some(Duration::from_secs(3)), 0.0, plenty),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            policy.next_wait(1, Some(Duration::ZERO), 0.0, plenty),
            Some(Duration::from_millis(100))
        );
        // A wait that reaches the deadline is not waited.
        assert_eq!(
            policy.next_wait(1, Some(Duration::from_secs(30)), 0.0, plenty),
            None
        );
        assert_eq!(policy.next_wait(1, None, 0.0, Duration::ZERO), None);
        // Each attempt gets the time left, at most attempt_timeout, never nothing.
        assert_eq!(policy.attempt_timeout(plenty), Duration::from_secs(10));
        assert_eq!(
            policy.attempt_timeout(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.attempt_timeout(Duration::ZERO),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn only_timeouts_throttling_and_server_errors_are_retried() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [200, 301, 400, 401, 403, 404] {
            assert!(
                !retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        headers.insert(RETRY_AFTER, HeaderValue::try_from(later).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        headers.insert(RETRY_AFTER, HeaderValue::try_from(past).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }
}
