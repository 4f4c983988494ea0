//! The DPoP replay cache (RFC 9449 §11.1): every proof id accepted is remembered until the
//! proof is too old to be accepted anyway. Memory is bounded, and so is each key's share of
//! it, so one key flooding proofs cannot fill the memory. (The quota is per key, not per
//! client: a client holding tokens bound to several keys can still fill the shard its keys
//! fall in, and then that shard refuses new ids, fail closed, with 503.)
//!
//! All ids of one key (`cnf.jkt`) live in one shard, chosen with a keyed hash (per-process
//! random keys), so which keys share a shard cannot be known or steered from outside. Each
//! shard keeps its ids in a set for the replay check and in a queue ordered by deadline, so
//! inserting and forgetting are O(1): no work is proportional to the number of ids held.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use crate::cache::token_hash;

const SHARDS: usize = 16;

/// Remembered DPoP proof ids, with a quota per key.
pub(crate) struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
    /// Picks a key's shard. `RandomState` draws its SipHash keys at random per process.
    hasher: RandomState,
    per_shard: usize,
    per_key: usize,
}

/// Why a proof id was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Already recorded and still live: a replay.
    Replay,
    /// This key holds its whole quota of live ids: its proofs are refused until some expire
    /// (fail closed for this key only).
    KeyQuota,
    /// The key's shard is full of live ids (of many keys): refused, as forgetting an id
    /// early would let its replay through.
    Full,
}

#[derive(Default)]
struct Shard {
    /// Live proof ids (SHA-256 of key and `jti`).
    seen: HashSet<[u8; 32]>,
    /// The same ids in deadline order, earliest first.
    queue: VecDeque<Entry>,
    /// How many live ids each key holds; a key without any has no entry.
    held: HashMap<Arc<str>, usize>,
}

struct Entry {
    until: i64,
    id: [u8; 32],
    key: Arc<str>,
}

impl ReplayCache {
    /// Room for about `capacity` ids in all, at most `per_key` of them for one key (clamped
    /// to 1 ..= one shard's share of `capacity`).
    pub(crate) fn new(capacity: usize, per_key: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        ReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            per_shard,
            per_key: per_key.clamp(1, per_shard),
        }
    }

    /// Records the proof `jti` of the key with thumbprint `key` until `until` (a Unix time),
    /// unless it is a replay or there is no room for it.
    pub(crate) fn remember(
        &self,
        key: &str,
        jti: &str,
        until: i64,
        now: i64,
    ) -> Result<(), Refused> {
        let id = token_hash(&format!("{key} {jti}"));
        // Truncating the 64-bit hash is fine: only its spread over 16 shards matters.
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        shard.forget_expired(now);
        if shard.seen.contains(&id) {
            return Err(Refused::Replay);
        }
        if until <= now {
            // Too old to be accepted again: nothing to remember.
            return Ok(());
        }
        let key = match shard.held.get_key_value(key) {
            Some((_, &held)) if held >= self.per_key => return Err(Refused::KeyQuota),
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(key),
        };
        if shard.queue.len() >= self.per_shard {
            return Err(Refused::Full);
        }
        // The queue stays in deadline order because an id is kept until its own deadline or
        // the latest one before it, whichever is later: remembering longer is always safe.
        let until = shard
            .queue
            .back()
            .map_or(until, |last| until.max(last.until));
        shard.seen.insert(id);
        *shard.held.entry(Arc::clone(&key)).or_insert(0) += 1;
        shard.queue.push_back(Entry { until, id, key });
        Ok(())
    }
}

impl Shard {
    /// Drops the ids whose deadline has passed, from the front of the queue: O(1) per id.
    fn forget_expired(&mut self, now: i64) {
        while self.queue.front().is_some_and(|entry| entry.until <= now) {
            let Some(entry) = self.queue.pop_front() else {
                break;
            };
            self.seen.remove(&entry.id);
            if let Some(held) = self.held.get_mut(&entry.key) {
                *held -= 1;
                if *held == 0 {
                    self.held.remove(&entry.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_shard_refuses_until_ids_expire() {
        // 16 shards of 2: a key's shard holds two ids, so a second key in the same shard
        // finds it full. Keys are placed at random, so look for two that share a shard.
        let cache = ReplayCache::new(32, 2);
        let shard_of = |key: &str| cache.hasher.hash_one(key) as usize % SHARDS;
        let first = "key-0".to_owned();
        let second = (1..)
            .map(|i| format!("key-{i}"))
            .find(|k| shard_of(k) == shard_of(&first))
            .unwrap();
        assert_eq!(cache.remember(&first, "a", 100, 0), Ok(()));
        assert_eq!(cache.remember(&first, "a", 100, 0), Err(Refused::Replay));
        assert_eq!(cache.remember(&second, "b", 50, 1), Ok(()));
        assert_eq!(cache.remember(&second, "c", 50, 2), Err(Refused::Full));
        // The second id is kept until 100 too (deadline order), never less than its own.
        assert_eq!(cache.remember(&second, "b", 150, 99), Err(Refused::Replay));
        assert_eq!(cache.remember(&first, "a", 200, 100), Ok(()));
        assert_eq!(cache.remember(&second, "b", 200, 100), Ok(()));
        let shard = cache.shards[shard_of(&first)].lock().unwrap();
        assert_eq!(
            (shard.seen.len(), shard.queue.len(), shard.held.len()),
            (2, 2, 2)
        );
    }
}
