//! Persistent, shared token caches: the [`TokenStore`] contract, the key tokens are stored
//! under, and the stored form of a token.
//!
//! A store lets a restarted process, or another process of the same service, reuse a token
//! that is still valid instead of asking the server again. The in-memory cache stays in front
//! of it: the store is read only when the memory cache has nothing usable, and written after
//! each fetch. A failing store is logged and bypassed; it never fails a `token()` call.

mod file;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::time::SystemTime;

use latchkey_proto::{ClientAuthMethod, TokenType};
use serde::{Deserialize, Serialize};

use crate::clock::{from_millis, to_millis};
use crate::secret::AccessToken;

pub use file::FileStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// The error a store reports; the client logs it and goes on without the store.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where tokens outlive one process.
///
/// Implementations must keep entries apart by [`CacheKey`], and may drop entries at any time
/// (it is a cache). The client checks validity itself and never uses an expired entry.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The token stored under `key`, if any.
    async fn load(&self, key: &CacheKey) -> Result<Option<StoredToken>, StoreError>;
    /// Stores `token` under `key`, replacing what was there.
    async fn save(&self, key: &CacheKey, token: &StoredToken) -> Result<(), StoreError>;
    /// Removes the entry under `key` if it still holds the token `access_token` (a resource
    /// server rejected it); a newer token stored meanwhile stays.
    async fn remove(&self, key: &CacheKey, access_token: &str) -> Result<(), StoreError>;
}

/// What a token is cached under: a SHA-256 over the token endpoint, client id, client secret,
/// authentication method, scope and audience, so that two configurations that could get
/// different tokens never share one (docs/CONFORMANCE.md, "Client library", and Duende's
/// CVE-2025-26620). With the secret in the key, a process holding a wrong or revoked secret
/// never gets a token from the store that it could not get from the server. Hex, 64
/// characters; neither the client id nor the secret can be read from it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    pub(crate) fn new(
        token_endpoint: &str,
        client_id: &str,
        secret: &str,
        method: ClientAuthMethod,
        scope: &[String],
        audience: &[String],
    ) -> Self {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            // Length-prefixed, so no two different field lists hash the same bytes.
            context.update(&(bytes.len() as u64).to_be_bytes());
            context.update(bytes);
        };
        field(b"latchkey-client token cache v1");
        field(token_endpoint.as_bytes());
        field(client_id.as_bytes());
        field(secret.as_bytes());
        field(method.as_str().as_bytes());
        field(scope.join(" ").as_bytes());
        field(audience.join(" ").as_bytes());
        let digest = context.finish();
        let hex = digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        CacheKey(hex)
    }

    /// The key as 64 hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.0)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token as a store keeps it: the token and the times the client needs to decide whether it
/// is still usable. Serialize it however the store likes (it is serde-ready); `Debug` redacts
/// the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    access_token: String,
    token_type: TokenType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// Milliseconds since the Unix epoch.
    received_at: u64,
    /// Milliseconds since the Unix epoch.
    expires_at: u64,
}

impl StoredToken {
    pub(crate) fn from_token(token: &AccessToken) -> Self {
        StoredToken {
            access_token: token.secret().to_owned(),
            token_type: token.token_type(),
            scope: token.scope().map(str::to_owned),
            received_at: to_millis(token.received_at()),
            expires_at: to_millis(token.expires_at()),
        }
    }

    /// Back into a token; `None` when the stored value is unusable.
    pub(crate) fn to_token(&self) -> Option<AccessToken> {
        AccessToken::new(
            self.access_token.clone(),
            self.token_type,
            self.scope.clone(),
            from_millis(self.received_at),
            from_millis(self.expires_at),
        )
    }

    /// The token itself.
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// When the token expires; a store may drop the entry from then on.
    pub fn expires_at(&self) -> SystemTime {
        from_millis(self.expires_at)
    }
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &"<redacted>")
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_part_of_the_key() {
        use ClientAuthMethod::{ClientSecretBasic as Basic, ClientSecretPost as Post};
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let base = CacheKey::new("e", "c", "s", Basic, &s(&["a"]), &s(&["u"]));
        let variants = [
            CacheKey::new("f", "c", "s", Basic, &s(&["a"]), &s(&["u"])),
            CacheKey::new("e", "d", "s", Basic, &s(&["a"]), &s(&["u"])),
            CacheKey::new("e", "c", "t", Basic, &s(&["a"]), &s(&["u"])),
            CacheKey::new("e", "c", "s", Post, &s(&["a"]), &s(&["u"])),
            CacheKey::new("e", "c", "s", Basic, &s(&["b"]), &s(&["u"])),
            CacheKey::new("e", "c", "s", Basic, &s(&["a"]), &s(&["v"])),
            CacheKey::new("e", "c", "s", Basic, &s(&[]), &s(&["a", "u"])),
        ];
        for other in variants {
            assert_ne!(base, other);
        }
        assert_eq!(base.as_str().len(), 64);
    }
}
