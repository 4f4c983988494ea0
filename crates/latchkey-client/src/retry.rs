//! Retrying requests to the authorization server: the loop that sends, sleeps and gives up.
//! What to retry and how long to wait is latchkey-common's [`RetryPolicy`] (equal-jitter
//! exponential backoff, `Retry-After`, the deadline), shared with the guard.

use std::future::Future;
use std::time::Duration;

use latchkey_common::RetryPolicy;
use tokio::time::Instant;

use crate::error::Error;

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

/// Runs `attempt` until it succeeds, fails for good, or `policy`'s deadline leaves no room for
/// another try. `attempt` gets the time it may take.
pub(crate) async fn run<T, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, Error>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let started = Instant::now();
    let deadline = started + policy.deadline;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let (reason, retry_after) = match attempt(policy.attempt_timeout(left)).await {
            Attempt::Done(value) => return Ok(value),
            Attempt::Fatal(error) => return Err(error),
            Attempt::Retry {
                reason,
                retry_after,
            } => (reason, retry_after),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(wait) = policy.next_wait(attempts, retry_after, fastrand::f64(), left) else {
            let last = match retry_after {
                Some(after) => format!("{reason} (the server asked to retry after {after:?})"),
                None => reason,
            };
            return Err(Error::Unavailable {
                attempts,
                elapsed: started.elapsed(),
                last,
            });
        };
        tracing::debug!(attempt = attempts, ?wait, %reason, "token request failed; retrying");
        tokio::time::sleep(wait).await;
    }
}
