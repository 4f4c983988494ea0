//! A token cache in Redis, shared by every process of a service (cargo feature `redis`).

use std::sync::Arc;

use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;

use super::{CacheKey, StoreError, StoredToken, TokenStore};
use crate::clock::{Clock, SystemClock, to_millis};

/// Tokens in Redis under `<prefix><cache key>`, each with a time-to-live that ends when the
/// token expires, so Redis drops them itself.
///
/// Anyone who can read the Redis database can read the tokens, and anyone who can write it can
/// hand the service a token of their choosing (the key names are not secret). Use a Redis that
/// only the service's processes reach, with authentication (`redis://:password@host/`) and,
/// across machines, TLS (`rediss://`).
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    clock: Arc<dyn Clock>,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:6379/0`); the connection reconnects by itself.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(RedisStore {
            connection,
            prefix: "latchkey:token:".to_owned(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Keys start with `prefix` instead of `latchkey:token:`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Uses `clock` to compute time-to-live (for tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenStore for RedisStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<StoredToken>, StoreError> {
        let mut connection = self.connection.clone();
        let value: Option<Vec<u8>> = connection.get(self.key(key)).await?;
        Ok(match value {
            Some(bytes) => Some(serde_json::from_slice(&bytes)?),
            None => None,
        })
    }

    async fn save(&self, key: &CacheKey, token: &StoredToken) -> Result<(), StoreError> {
        let now = to_millis(self.clock.now());
        let ttl = token.expires_at.saturating_sub(now);
        if ttl == 0 {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let options = redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl));
        let () = connection
            .set_options(self.key(key), serde_json::to_vec(token)?, options)
            .await?;
        Ok(())
    }

    async fn remove(&self, key: &CacheKey, access_token: &str) -> Result<(), StoreError> {
        // Read, compare, delete: a token stored between the read and the delete is lost, which
        // costs one extra token request and nothing else.
        if let Some(stored) = self.load(key).await?
            && stored.access_token == access_token
        {
            let mut connection = self.connection.clone();
            let _: u64 = connection.del(self.key(key)).await?;
        }
        Ok(())
    }
}
