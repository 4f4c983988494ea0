//! Results of token checks, keyed by the SHA-256 of the token and kept until a deadline: a
//! client that reuses its token costs one hash and one map lookup per request instead of a
//! signature verification or an introspection call.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

const SHARDS: usize = 16;

/// One shard: token hash → (value, Unix time it is good until).
type Shard<V> = RwLock<HashMap<[u8; 32], (V, i64)>>;

/// A bounded map from token hash to a value that is good until a Unix time.
pub(crate) struct TokenCache<V> {
    shards: Vec<Shard<V>>,
    per_shard: usize,
}

/// SHA-256 of the token: the map never holds tokens themselves.
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

impl<V: Clone> TokenCache<V> {
    /// A cache for about `capacity` tokens (0 turns it off).
    pub(crate) fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, hash: &[u8; 32]) -> &Shard<V> {
        &self.shards[usize::from(hash[0]) % SHARDS]
    }

    /// The value, if stored and `now` is before its deadline.
    pub(crate) fn get(&self, hash: &[u8; 32], now: i64) -> Option<V> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (value, until) = shard.get(hash)?;
        (now < *until).then(|| value.clone())
    }

    /// Stores `value` until `until`; when the shard is full, entries past their deadline go
    /// first, and if that is not enough the shard starts over.
    pub(crate) fn insert(&self, hash: [u8; 32], value: V, until: i64, now: i64) {
        if self.per_shard == 0 || until <= now {
            return;
        }
        let mut shard = self
            .shard(&hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard {
            shard.retain(|_, (_, until)| *until > now);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(hash, (value, until));
    }

    pub(crate) fn remove(&self, hash: &[u8; 32]) {
        self.shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash);
    }
}
