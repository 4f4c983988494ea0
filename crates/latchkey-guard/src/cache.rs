//! Tokens already verified, keyed by the SHA-256 of the token, kept until they expire: a
//! client that reuses its token costs one hash and one map lookup per request instead of a
//! signature verification.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::caller::Caller;

const SHARDS: usize = 16;

/// A bounded map from token hash to the verified caller.
pub(crate) struct VerifiedCache {
    shards: Vec<RwLock<HashMap<[u8; 32], Caller>>>,
    per_shard: usize,
}

/// SHA-256 of the token: the map never holds tokens themselves.
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

impl VerifiedCache {
    /// A cache for about `capacity` tokens (0 turns it off).
    pub(crate) fn new(capacity: usize) -> Self {
        VerifiedCache {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, hash: &[u8; 32]) -> &RwLock<HashMap<[u8; 32], Caller>> {
        &self.shards[usize::from(hash[0]) % SHARDS]
    }

    pub(crate) fn get(&self, hash: &[u8; 32]) -> Option<Caller> {
        if self.per_shard == 0 {
            return None;
        }
        self.shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned()
    }

    /// Stores a verified caller; when the shard is full, expired entries go first, and if
    /// that is not enough the shard starts over.
    pub(crate) fn insert(&self, hash: [u8; 32], caller: Caller, now: i64) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self
            .shard(&hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard {
            shard.retain(|_, c| c.claims().exp > now);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(hash, caller);
    }

    pub(crate) fn remove(&self, hash: &[u8; 32]) {
        self.shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash);
    }
}
