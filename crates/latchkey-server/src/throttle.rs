//! Brute-force throttling without lockout: failed client authentications are limited per
//! (client id, source address) and per source address. Past either limit the token,
//! introspection and revocation endpoints answer `429` with `Retry-After` before looking at the
//! credentials, so guessing stops costing the server a hash and stops being answered. A client
//! is never locked out as a whole: the same client from another address is not affected.
//!
//! Each limit is a token bucket in its GCRA form (one timestamp per key): a rate `N/min` admits
//! a burst of N failures, then one more every minute / N. Every attempt spends one before its
//! credentials are looked at (atomically, so parallel requests get no more than the burst),
//! and one that did not fail gives it back. Keys are hashed with a per-process
//! random key (no attacker can aim collisions) and kept in bounded caches, so a flood of random
//! ids and addresses costs a fixed amount of memory; an evicted key starts again with a full
//! burst, and an address that keeps failing stays in the cache because it keeps being used.
//! IPv6 addresses count by their /64: one host usually holds a whole /64.
//!
//! Written here rather than with `governor`: its keyed limiters keep every key in an unbounded
//! map, and it cannot give a cell back, which an attempt that did not fail needs.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::model::Rate;

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
        let count = u64::from(rate.count.max(1));
        let period = u64::try_from(rate.period.as_millis()).unwrap_or(u64::MAX);
        let interval = (period / count).max(1);
        Limit {
            interval,
            tolerance: interval * (count - 1),
            states: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// Spends one attempt of `key` at `now`: `Ok` when the bucket had one, else how many
    /// milliseconds until it has. Atomic, so of many requests at once no more than the burst
    /// get through.
    fn take(&self, key: u64, now: u64) -> Result<Option<Arc<AtomicU64>>, u64> {
        let Ok(state) = self
            .states
            .get_or_insert_with(&key, || Ok::<_, ()>(Arc::new(AtomicU64::new(0))))
        else {
            return Ok(None);
        };
        let spent = state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |arrival| {
            let base = arrival.max(now);
            (base.saturating_sub(self.tolerance) <= now).then(|| base.saturating_add(self.interval))
        });
        match spent {
            Ok(_) => Ok(Some(state)),
            Err(arrival) => Err(arrival
                .max(now)
                .saturating_sub(self.tolerance)
                .saturating_sub(now)),
        }
    }

    /// Gives back an attempt spent by [`Limit::take`] (it did not fail), on the state it was
    /// taken from (no second lookup).
    fn give_back(&self, state: Option<Arc<AtomicU64>>) {
        if let Some(state) = state {
            let _ = state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |arrival| {
                Some(arrival.saturating_sub(self.interval))
            });
        }
    }
}

/// An attempt admitted by [`Throttle::admit`]: it counts as a failure unless given back with
/// [`Throttle::succeeded`].
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    pair: Option<Arc<AtomicU64>>,
    address: Option<Arc<AtomicU64>>,
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

    /// Admits an attempt of `client_id` at `source` at `now_ms`, spending one from each limit
    /// (see [`Attempt`]); or says how long it must wait, in whole seconds for `Retry-After`,
    /// before its credentials are looked at again.
    pub fn admit(&self, client_id: &str, source: IpAddr, now_ms: u64) -> Result<Attempt, u64> {
        if self.per_address.is_none() && self.per_client_address.is_none() {
            return Ok(Attempt {
                pair: None,
                address: None,
            });
        }
        let (pair_key, address_key) = self.keys(client_id, source);
        let pair = match &self.per_client_address {
            Some(limit) => limit
                .take(pair_key, now_ms)
                .map_err(|ms| ms.div_ceil(1000))?,
            None => None,
        };
        let address = match &self.per_address {
            Some(limit) => match limit.take(address_key, now_ms) {
                Ok(state) => state,
                Err(ms) => {
                    if let Some(limit) = &self.per_client_address {
                        limit.give_back(pair);
                    }
                    return Err(ms.div_ceil(1000));
                }
            },
            None => None,
        };
        Ok(Attempt { pair, address })
    }

    /// Gives the attempt back: it did not fail (the client authenticated, or the request was
    /// refused for another reason than its credentials).
    pub fn succeeded(&self, attempt: Attempt) {
        if let Some(limit) = &self.per_client_address {
            limit.give_back(attempt.pair);
        }
        if let Some(limit) = &self.per_address {
            limit.give_back(attempt.address);
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

    /// Whether an attempt is admitted now; one admitted is a failure (kept spent).
    fn fails(throttle: &Throttle, id: &str, address: IpAddr, now: u64) -> Result<(), u64> {
        throttle.admit(id, address, now).map(drop)
    }

    #[test]
    fn a_pair_is_throttled_after_its_burst_and_refills_over_the_period() {
        let throttle = throttle();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        // A success gives its attempt back: it never adds to the limit.
        for _ in 0..20 {
            let attempt = throttle.admit("c", a, 1_000).unwrap();
            throttle.succeeded(attempt);
        }
        for _ in 0..3 {
            assert_eq!(fails(&throttle, "c", a, 1_000), Ok(()));
        }
        // Three failures in a burst: the fourth attempt waits one interval (20 s).
        assert_eq!(fails(&throttle, "c", a, 1_000), Err(20));
        assert_eq!(fails(&throttle, "c", a, 20_999), Err(1));
        assert_eq!(fails(&throttle, "c", a, 21_000), Ok(()));
        // Another client at the same address, and the same client elsewhere, are not held.
        assert_eq!(fails(&throttle, "d", a, 1_000), Ok(()));
        assert_eq!(
            fails(&throttle, "c", "10.0.0.2".parse().unwrap(), 1_000),
            Ok(())
        );
    }

    #[test]
    fn parallel_attempts_get_no_more_than_the_burst() {
        let throttle = Throttle::new(Rate::parse("10/min").ok(), None, 1000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        if throttle.admit("c", a, 0).is_ok() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn a_zero_rate_admits_one_and_does_not_panic() {
        let throttle = Throttle::new(
            Some(Rate {
                count: 0,
                period: Duration::from_secs(60),
            }),
            None,
            10,
        );
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(fails(&throttle, "c", a, 0).is_ok());
        assert!(fails(&throttle, "c", a, 0).is_err());
    }

    #[test]
    fn an_address_is_throttled_whatever_ids_it_tries() {
        let throttle = throttle();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        for i in 0..5 {
            assert!(fails(&throttle, &format!("id-{i}"), a, 0).is_ok());
        }
        assert_eq!(fails(&throttle, "fresh", a, 0), Err(12));
        // The same /64 is the same address; the next /64 is not.
        let same = "2001:db8::ffff".parse().unwrap();
        assert_eq!(fails(&throttle, "fresh", same, 0), Err(12));
        let next = "2001:db8:0:1::1".parse().unwrap();
        assert!(fails(&throttle, "fresh", next, 0).is_ok());
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
            let _ = throttle.admit(&format!("random-{i}"), address, 0);
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
            assert!(fails(&throttle, "c", a, 0).is_ok());
        }
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
