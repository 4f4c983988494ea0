//! Retrying requests to the authorization server: exponential backoff with jitter, honouring
//! `Retry-After`, within a deadline.

use std::future::Future;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;
use tokio::time::Instant;

use crate::error::Error;

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

/// What one attempt came to.
pub(crate) enum Attempt<T> {
    /// Success.
    Done(T),
    /// A failure that another attempt cannot fix.
    Fatal(Error),
    /// A failure worth retrying, after `retry_after` when the server named a time.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1), for `random` uniform in [0, 1).
    pub(crate) fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        let full = self
            .initial_backoff
            .saturating_mul(doubling)
            .min(self.max_backoff);
        full / 2 + (full / 2).mul_f64(random.clamp(0.0, 1.0))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the deadline leaves no room for
    /// another try. `attempt` gets the time it may take.
    pub(crate) async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = self.attempt_timeout.min(left).max(Duration::from_millis(1));
            let (reason, retry_after) = match attempt(timeout).await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fatal(error) => return Err(error),
                Attempt::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            // RFC 9110 §10.2.3: wait at least as long as the server asks; `Retry-After: 0`
            // does not turn the backoff off.
            let backoff = self.backoff(attempts, fastrand::f64());
            let wait = retry_after.map_or(backoff, |after| after.max(backoff));
            if Instant::now()
                .checked_add(wait)
                .is_none_or(|resume| resume >= deadline)
            {
                let last = match retry_after {
                    Some(after) => format!("{reason} (the server asked to retry after {after:?})"),
                    None => reason,
                };
                return Err(Error::Unavailable {
                    attempts,
                    elapsed: started.elapsed(),
                    last,
                });
            }
            tracing::debug!(attempt = attempts, ?wait, %reason, "token request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// RFC 9110 §10.2.3: `Retry-After` is either a number of seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
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
