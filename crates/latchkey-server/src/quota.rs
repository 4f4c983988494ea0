//! Token rates and quotas per client (`client update --token-rate 100/min --token-quota
//! 10000/day --quota-mode enforce|monitor`).
//!
//! A rate is a token bucket: a burst of N tokens, refilled at N per period. A quota is N
//! tokens per fixed period, aligned to UTC (a day starts at midnight UTC). Both are counted in
//! the database (`quota_windows`), shared by every server and kept across restarts; a server
//! takes tokens from them in leases (1 for small limits; growing for a busy client up to a
//! twentieth of the limit, [`next_lease`]) and hands them out from memory, so a busy client
//! costs about one database write a second, not one per token.
//! A limit is never passed: a token is only handed out from a lease the database granted.
//! A quota lease that a window's end or a server's stop leaves unused is lost, so with S
//! servers a client may get up to (S − 1) twentieths of its quota fewer. A rate lease is
//! held at most as long as the bucket takes to refill it and what is left of it then goes
//! back; a burst may be one lease larger than the rate's (at most a twentieth).

use crate::error::OAuthError;
use crate::model::{ClientRecord, Rate};
use crate::store::{Store, StoreError};

/// What a server holds of a client's limits, on the client's cached record. A token from a
/// lease held is taken under a short lock, without waiting; fetching a lease from the database
/// is done by one request at a time, the others waiting for it.
#[derive(Debug, Default)]
pub struct Leases {
    held: std::sync::Mutex<Held>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Clone)]
struct Held {
    /// Rate tokens leased and not yet handed out, when they were leased (ms), and the size
    /// of the last lease.
    rate_left: i64,
    rate_leased_at: i64,
    rate_lease: i64,
    /// Quota tokens leased in `quota_window` and not yet handed out, when, and the size of
    /// the last lease.
    quota_left: i64,
    quota_window: i64,
    quota_leased_at: i64,
    quota_lease: i64,
    /// A limit passed, until when (ms): requests until then are answered from memory.
    passed: Option<(Overrun, i64)>,
    /// Until when (ms) an overrun has been reported.
    reported_until: i64,
}

/// Which limit a request passed, and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overrun {
    /// `rate` or `quota`.
    pub limit: &'static str,
    /// The limit.
    pub rate: Rate,
    /// Seconds until a token is free again (rounded up, for `Retry-After`).
    pub retry_after: u64,
    /// Milliseconds until a token is free again.
    pub wait_ms: i64,
    /// The `RateLimit-Policy` header: every limit the client has.
    pub policy: String,
    /// The `RateLimit` header: the limit passed, none left, and when it resets.
    pub state: String,
}

impl Overrun {
    /// The 429 for an enforced limit.
    pub fn refusal(&self) -> OAuthError {
        OAuthError::quota_exceeded(
            format!(
                "the client passed its token {} of {}; retry later",
                self.limit, self.rate
            ),
            self.retry_after,
            self.policy.clone(),
            self.state.clone(),
        )
    }
}

/// How many tokens a first lease takes: 1 for limits up to 20, then a twentieth, at most 100.
pub fn lease_size(limit: u32) -> i64 {
    i64::from((limit / 20).clamp(1, 100))
}

/// The size of the next lease: the first is [`lease_size`]; one used up within a second of
/// being taken doubles the next (a busy client costs about one database write a second), up
/// to a twentieth of the limit; one that lasted over ten seconds halves it. `latchkey gate`'s
/// request quotas take leases from Redis by the same rule.
pub fn next_lease(last: i64, limit: u32, held_for_ms: i64) -> i64 {
    let first = lease_size(limit);
    let most = i64::from((limit / 20).max(1));
    if last == 0 {
        first
    } else if held_for_ms < 1_000 {
        (last * 2).min(most).max(first)
    } else if held_for_ms > 10_000 {
        (last / 2).max(first)
    } else {
        last
    }
}

/// Takes one token of `client`'s rate and quota at `now_ms`: `None` when it is within both,
/// else the limit it passed (nothing is taken then).
pub async fn take(
    store: &dyn Store,
    leases: &Leases,
    client: &ClientRecord,
    now_ms: i64,
) -> Result<Option<Overrun>, StoreError> {
    if let Some(answer) = take_from(&mut lock(leases), client, now_ms) {
        return Ok(answer);
    }
    let _fetching = leases.fetching.lock().await;
    // Another request may have fetched meanwhile. If not, nothing else changes what is held
    // until this one writes it back: every other request finds it as wanting as this one did
    // and waits for the lock above.
    let mut held = {
        let mut held = lock(leases);
        if let Some(answer) = take_from(&mut held, client, now_ms) {
            return Ok(answer);
        }
        held.clone()
    };
    let passed = take_held(store, &mut held, client, now_ms).await?;
    if let Some(passed) = &passed {
        // Remembered to the millisecond the limit frees up, not the rounded Retry-After.
        held.passed = Some((passed.clone(), now_ms.saturating_add(passed.wait_ms)));
    }
    *lock(leases) = held;
    Ok(passed)
}

fn lock(leases: &Leases) -> std::sync::MutexGuard<'_, Held> {
    leases.held.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the server can answer from what it holds, under its lock: a limit passed a moment ago
/// (`Some(Some(..))`), or a token from the leases, taken (`Some(None)`); `None` when a lease
/// must be fetched first.
fn take_from(held: &mut Held, client: &ClientRecord, now_ms: i64) -> Option<Option<Overrun>> {
    if let Some((passed, until)) = &held.passed
        && now_ms < *until
    {
        let mut passed = passed.clone();
        passed.wait_ms = until - now_ms;
        passed.retry_after = u64::try_from(passed.wait_ms)
            .unwrap_or(0)
            .div_ceil(1000)
            .max(1);
        passed.state = format!("\"{}\";r=0;t={}", passed.limit, passed.retry_after);
        return Some(Some(passed));
    }
    if let Some(rate) = client.token_rate {
        let interval_us = (millis(rate).saturating_mul(1000) / i64::from(rate.count.max(1))).max(1);
        let stale = (now_ms - held.rate_leased_at) * 1000 > held.rate_lease * interval_us;
        if held.rate_left == 0 || stale {
            return None;
        }
    }
    if let Some(quota) = client.token_quota {
        let period = (millis(quota) / 1000).max(1);
        let now = now_ms / 1000;
        if held.quota_left == 0 || held.quota_window != now - now.rem_euclid(period) {
            return None;
        }
    }
    if client.token_rate.is_some() {
        held.rate_left -= 1;
    }
    if client.token_quota.is_some() {
        held.quota_left -= 1;
    }
    Some(None)
}

/// How often an overrun is reported (logged and audited) at most, per client and server.
const REPORT_EVERY_MS: i64 = 3_600_000;

/// Whether an overrun at `now_ms` should be reported (logged and audited): at most once an
/// hour per client on this server, however often the limit is passed.
pub fn first_report(leases: &Leases, now_ms: i64) -> bool {
    let mut held = lock(leases);
    if now_ms < held.reported_until {
        return false;
    }
    held.reported_until = now_ms.saturating_add(REPORT_EVERY_MS);
    true
}

async fn take_held(
    store: &dyn Store,
    held: &mut Held,
    client: &ClientRecord,
    now_ms: i64,
) -> Result<Option<Overrun>, StoreError> {
    if let Some(rate) = client.token_rate {
        // Microseconds: a rate of a million a second has a one-microsecond interval.
        let period_us = millis(rate).saturating_mul(1000);
        let interval_us = (period_us / i64::from(rate.count.max(1))).max(1);
        let now_us = now_ms.saturating_mul(1000);
        // A lease is held at most as long as the bucket takes to refill it, then what is left
        // of it goes back: tokens held on top of a refilled bucket would make a burst larger
        // than the rate's.
        if held.rate_left > 0
            && (now_ms - held.rate_leased_at) * 1000 > held.rate_lease * interval_us
        {
            store
                .return_rate(&client.client_id, held.rate_left * interval_us)
                .await?;
            held.rate_left = 0;
        }
        if held.rate_left == 0 {
            let lease = next_lease(held.rate_lease, rate.count, now_ms - held.rate_leased_at);
            let (granted, wait_us) = store
                .take_rate(
                    &client.client_id,
                    i64::from(rate.count),
                    period_us,
                    now_us,
                    lease,
                )
                .await?;
            if granted == 0 {
                return Ok(Some(overrun(client, "rate", rate, (wait_us + 999) / 1000)));
            }
            held.rate_left = granted;
            held.rate_leased_at = now_ms;
            held.rate_lease = lease;
        }
    }
    if let Some(quota) = client.token_quota {
        let period = millis(quota) / 1000;
        let now = now_ms / 1000;
        let window = now - now.rem_euclid(period.max(1));
        if held.quota_window != window {
            held.quota_window = window;
            held.quota_left = 0;
        }
        if held.quota_left == 0 {
            let lease = next_lease(held.quota_lease, quota.count, now_ms - held.quota_leased_at);
            let granted = store
                .take_quota(&client.client_id, window, i64::from(quota.count), lease)
                .await?;
            if granted == 0 {
                let wait_ms = (window + period) * 1000 - now_ms;
                return Ok(Some(overrun(client, "quota", quota, wait_ms)));
            }
            held.quota_left = granted;
            held.quota_leased_at = now_ms;
            held.quota_lease = lease;
        }
        held.quota_left -= 1;
    }
    if client.token_rate.is_some() {
        held.rate_left -= 1;
    }
    Ok(None)
}

fn millis(rate: Rate) -> i64 {
    i64::try_from(rate.period.as_millis()).unwrap_or(i64::MAX)
}

/// The overrun of `limit` and its headers (draft-ietf-httpapi-ratelimit-headers):
/// `RateLimit-Policy: "rate";q=100;w=60, "quota";q=10000;w=86400` and
/// `RateLimit: "quota";r=0;t=3600`.
fn overrun(client: &ClientRecord, limit: &'static str, rate: Rate, wait_ms: i64) -> Overrun {
    let retry_after = u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1);
    let policies: Vec<String> = [("rate", client.token_rate), ("quota", client.token_quota)]
        .into_iter()
        .filter_map(|(name, rate)| {
            let rate = rate?;
            Some(format!(
                "\"{name}\";q={};w={}",
                rate.count,
                rate.period.as_secs()
            ))
        })
        .collect();
    Overrun {
        limit,
        rate,
        retry_after,
        wait_ms: wait_ms.max(1),
        policy: policies.join(", "),
        state: format!("\"{limit}\";r=0;t={retry_after}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_small_for_small_limits_and_grow_for_busy_clients() {
        assert_eq!(lease_size(5), 1);
        assert_eq!(lease_size(100), 5);
        assert_eq!(lease_size(10_000), 100);
        assert_eq!(next_lease(0, 10_000, 0), 100);
        assert_eq!(next_lease(100, 10_000, 200), 200, "used up fast: doubles");
        assert_eq!(next_lease(400, 10_000, 200), 500, "at most a twentieth");
        assert_eq!(next_lease(400, 10_000, 20_000), 200, "slow: halves");
        assert_eq!(next_lease(1, 5, 10), 1, "small limits stay exact");
    }
}
