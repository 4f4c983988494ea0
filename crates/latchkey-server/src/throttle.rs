//! Brute-force throttling without lockout: failed client authentications are limited per
//! (client id, source address) and per source address. Past either limit the token,
//! introspection and revocation endpoints answer `429` with `Retry-After` before looking at the
//! credentials, so guessing stops costing the server a hash and stops being answered. A client
//! is never locked out as a whole: the same client from another address is not affected.
//!
//! Each limit is a token bucket in its GCRA form (one timestamp per key): a rate `N/min` admits
//! a burst of N failures, then one more every minute / N. Keys are hashed with a per-process
//! random key (no attacker can aim collisions) and kept in bounded caches, so a flood of random
//! ids and addresses costs a fixed amount of memory; an evicted key starts again with a full
//! burst, and an address that keeps failing stays in the cache because it keeps being used.
//! IPv6 addresses count by their /64: one host usually holds a whole /64.
//!
//! Written here rather than with `governor`: its keyed limiters keep every key in an unbounded
//! map, and it cannot say whether a key is over its limit without spending a cell, which the
//! check before authentication needs.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A rate: at most `count` events in a burst, refilled at `count` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per period (and the burst).
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/min`, `N/hour` or `N/day` (N from 1).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected N/min, N/hour, N/day or N/s"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{text:?}: the count must be a whole number from 1"))?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            other => return Err(format!("{other:?}: the period must be s, min, hour or day")),
        };
        Ok(Rate {
            count,
            period: Duration::from_secs(seconds),
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "hour",
            86_400 => "day",
            other => return write!(f, "{}/{other}s", self.count),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// The default per client id and address: 10 failures, then one every 6 seconds.
pub const DEFAULT_PER_CLIENT_ADDRESS: Rate = Rate {
    count: 10,
    period: Duration::from_secs(60),
};

/// The default per address: 100 failures, then one every 0.6 seconds.
pub const DEFAULT_PER_ADDRESS: Rate = Rate {
    count: 100,
    period: Duration::from_secs(60),
};

/// How many keys each limit remembers by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One limit: a timestamp per key (the GCRA "theoretical arrival time", in milliseconds).
struct Limit {
    /// Milliseconds one event adds.
    interval: u64,
    /// How far ahead of now the arrival time may run: the burst less one event.
    tolerance: u64,
    states: quick_cache::sync::Cache<u64, Arc<AtomicU64>>,
}

impl Limit {
    fn new(rate: Rate, capacity: usize) -> Self {
        let period = u64::try_from(rate.period.as_millis()).unwrap_or(u64::MAX);
        let interval = (period / u64::from(rate.count)).max(1);
        Limit {
            interval,
            tolerance: interval * u64::from(rate.count - 1),
            states: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// How long until `key` may fail again; `None` when it may now.
    fn wait(&self, key: u64, now: u64) -> Option<u64> {
        let arrival = self.states.get(&key)?.load(Ordering::Acquire);
        let allowed_at = arrival.saturating_sub(self.tolerance);
        (allowed_at > now).then(|| allowed_at - now)
    }

    /// Records a failure of `key` at `now`.
    fn fail(&self, key: u64, now: u64) {
        let state = match self
            .states
            .get_or_insert_with(&key, || Ok::<_, ()>(Arc::new(AtomicU64::new(0))))
        {
            Ok(state) => state,
            Err(()) => return,
        };
        let _ = state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |arrival| {
            Some(arrival.max(now).saturating_add(self.interval))
        });
    }
}

/// The server's throttle of failed client authentications.
pub struct Throttle {
    per_client_address: Option<Limit>,
    per_address: Option<Limit>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").finish_non_exhaustive()
    }
}

impl Throttle {
    /// Limits of `per_client_address` and `per_address` failures (`None`: no such limit),
    /// each remembering at most `capacity` keys.
    pub fn new(
        per_client_address: Option<Rate>,
        per_address: Option<Rate>,
        capacity: usize,
    ) -> Self {
        Throttle {
            per_client_address: per_client_address.map(|rate| Limit::new(rate, capacity)),
            per_address: per_address.map(|rate| Limit::new(rate, capacity)),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// How long `client_id` at `source` must wait before its credentials are looked at again
    /// (rounded up to whole seconds, for `Retry-After`); `None` when they are looked at now.
    pub fn wait(&self, client_id: &str, source: IpAddr, now_ms: u64) -> Option<u64> {
        if self.per_address.is_none() && self.per_client_address.is_none() {
            return None;
        }
        let (pair, address) = self.keys(client_id, source);
        let by_address = self
            .per_address
            .as_ref()
            .and_then(|l| l.wait(address, now_ms));
        let by_pair = self
            .per_client_address
            .as_ref()
            .and_then(|l| l.wait(pair, now_ms));
        Some(by_address.max(by_pair)?.div_ceil(1000))
    }

    /// Records that `client_id` at `source` failed to authenticate.
    pub fn failed(&self, client_id: &str, source: IpAddr, now_ms: u64) {
        if self.per_address.is_none() && self.per_client_address.is_none() {
            return;
        }
        let (pair, address) = self.keys(client_id, source);
        if let Some(limit) = &self.per_client_address {
            limit.fail(pair, now_ms);
        }
        if let Some(limit) = &self.per_address {
            limit.fail(address, now_ms);
        }
    }

    /// The keys of the pair and of the address (an IPv6 address by its /64).
    fn keys(&self, client_id: &str, source: IpAddr) -> (u64, u64) {
        let address: (u8, u128) = match source.to_canonical() {
            IpAddr::V4(v4) => (4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => (6, u128::from(v6) >> 64),
        };
        (
            self.hasher.hash_one((address, client_id)),
            self.hasher.hash_one(address),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(Rate::parse("3/min").ok(), Rate::parse("5/min").ok(), 1000)
    }

    #[test]
    fn a_pair_is_throttled_after_its_burst_and_refills_over_the_period() {
        let throttle = throttle();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.wait("c", a, 1_000), None);
            throttle.failed("c", a, 1_000);
        }
        // Three failures in a burst: the fourth attempt waits one interval (20 s).
        assert_eq!(throttle.wait("c", a, 1_000), Some(20));
        assert_eq!(throttle.wait("c", a, 20_999), Some(1));
        assert_eq!(throttle.wait("c", a, 21_000), None);
        // Another client at the same address, and the same client elsewhere, are not held.
        assert_eq!(throttle.wait("d", a, 1_000), None);
        assert_eq!(throttle.wait("c", "10.0.0.2".parse().unwrap(), 1_000), None);
    }

    #[test]
    fn an_address_is_throttled_whatever_ids_it_tries() {
        let throttle = throttle();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        for i in 0..5 {
            throttle.failed(&format!("id-{i}"), a, 0);
        }
        assert_eq!(throttle.wait("fresh", a, 0), Some(12));
        // The same /64 is the same address; the next /64 is not.
        assert_eq!(
            throttle.wait("fresh", "2001:db8::ffff".parse().unwrap(), 0),
            Some(12)
        );
        assert_eq!(
            throttle.wait("fresh", "2001:db8:0:1::1".parse().unwrap(), 0),
            None
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_random_ids() {
        let throttle = Throttle::new(
            Some(DEFAULT_PER_CLIENT_ADDRESS),
            Some(DEFAULT_PER_ADDRESS),
            1000,
        );
        for i in 0..100_000u32 {
            let address = IpAddr::from(i.to_be_bytes());
            throttle.failed(&format!("random-{i}"), address, 0);
        }
        for limit in [&throttle.per_client_address, &throttle.per_address] {
            assert!(limit.as_ref().unwrap().states.len() <= 1000);
        }
    }

    #[test]
    fn without_limits_nothing_is_held() {
        let throttle = Throttle::new(None, None, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..1000 {
            throttle.failed("c", a, 0);
        }
        assert_eq!(throttle.wait("c", a, 0), None);
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(Rate::parse("10/min").unwrap(), DEFAULT_PER_CLIENT_ADDRESS);
        assert_eq!(Rate::parse("100/min").unwrap().to_string(), "100/min");
        assert_eq!(
            Rate::parse("5/hour").unwrap().period,
            Duration::from_secs(3600)
        );
        for bad in ["0/min", "x/min", "10", "10/week", "-1/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }
}
