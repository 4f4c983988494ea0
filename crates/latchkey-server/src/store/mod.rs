//! The storage contract: the handful of operations the server and the admin CLI need.
//!
//! No code outside this module knows SQL. Each backend is one module implementing [`Store`];
//! [`connect`] is the only place that chooses a backend by URL.

mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use latchkey_proto::{ClientAuthMethod, GrantType, SigningAlg};

use crate::secret::SecretHash;

pub use sqlite::SqliteStore;

/// Why a storage operation failed, by kind rather than by message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy: retry later (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The schema in the database is newer than this binary knows, or is damaged.
    #[error("database schema: {0}")]
    Schema(String),
    /// Stored data could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Other(String),
}

/// A registered client, with its secrets (hashes only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// Server-generated identifier.
    pub client_id: String,
    /// Operator-chosen label.
    pub name: String,
    /// The scope tokens the client may request; also its default scope.
    pub scope: Vec<String>,
    /// The resources (audiences) the client may request; also its default audience.
    pub audience: Vec<String>,
    /// Grants the client is registered for.
    pub grant_types: Vec<GrantType>,
    /// Lifetime of the access tokens it gets.
    pub token_ttl_seconds: i64,
    /// The one authentication method it must use.
    pub auth_method: ClientAuthMethod,
    /// Disabled clients fail authentication.
    pub enabled: bool,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Secrets that are not revoked (expired ones included; authentication checks expiry).
    pub secrets: Vec<SecretRecord>,
}

/// One stored client secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Identifier of this secret (not the secret).
    pub secret_id: String,
    /// SHA-256 of the secret.
    pub hash: SecretHash,
    /// Creation time.
    pub created_at: i64,
    /// After this time the secret no longer authenticates.
    pub expires_at: Option<i64>,
}

/// Changes to a client; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ClientUpdate {
    /// New name.
    pub name: Option<String>,
    /// New scope list.
    pub scope: Option<Vec<String>>,
    /// New audience list.
    pub audience: Option<Vec<String>>,
    /// New token lifetime.
    pub token_ttl_seconds: Option<i64>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// The outcome of [`Store::add_secret`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretAdded {
    /// The secret was added.
    Added,
    /// No client with that id.
    NoSuchClient,
    /// The client already holds the maximum number of live secrets.
    TooMany,
}

/// Lifecycle of a signing key (checklist H).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Signing new tokens.
    Current,
    /// Published for verification only.
    Retired,
}

impl KeyState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "next" => Ok(KeyState::Next),
            "current" => Ok(KeyState::Current),
            "retired" => Ok(KeyState::Retired),
            other => Err(StoreError::Corrupt(format!("unknown key state {other:?}"))),
        }
    }
}

/// A signing key as stored: PKCS#8 private key and its public JWK.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// Algorithm the key signs with.
    pub alg: SigningAlg,
    /// Lifecycle state.
    pub state: KeyState,
    /// PKCS#8 DER of the private key.
    pub private_key: Vec<u8>,
    /// The public JWK, as JSON.
    pub public_jwk: String,
    /// Creation time.
    pub created_at: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("private_key", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// The storage contract. Implementations must be safe to share between many tasks and, for
/// server databases, between many processes.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Succeeds when the database answers and its schema is the one this binary expects.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Inserts a client and its first secret.
    async fn create_client(&self, client: &ClientRecord) -> Result<(), StoreError>;

    /// One client with its unrevoked secrets, in one round trip.
    async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;

    /// Every client, ordered by creation.
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;

    /// Applies `update` and returns the client as it is now, or `None` if there is none.
    async fn update_client(
        &self,
        client_id: &str,
        update: &ClientUpdate,
        now: i64,
    ) -> Result<Option<ClientRecord>, StoreError>;

    /// Atomically adds `secret` to a client that holds fewer than `max_live` live (unrevoked,
    /// unexpired at `now`) secrets, and makes every other live secret expire at
    /// `expire_others_at` at the latest (the overlap window of a rotation).
    async fn add_secret(
        &self,
        client_id: &str,
        secret: &SecretRecord,
        expire_others_at: Option<i64>,
        max_live: usize,
        now: i64,
    ) -> Result<SecretAdded, StoreError>;

    /// Deletes a client and its secrets; `false` if there was none.
    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError>;

    /// A counter that every change to clients or secrets increases in the same transaction.
    async fn client_generation(&self) -> Result<i64, StoreError>;

    /// Records that the server `server_id` has dropped every cached client record older than
    /// `generation` (registering the server if it is new).
    async fn acknowledge_generation(
        &self,
        server_id: &str,
        generation: i64,
    ) -> Result<(), StoreError>;

    /// The servers that have not acknowledged `generation` yet.
    async fn servers_behind(&self, generation: i64) -> Result<Vec<String>, StoreError>;

    /// Forgets a server (it stopped, or did not answer in time; a live one registers again).
    async fn forget_server(&self, server_id: &str) -> Result<(), StoreError>;

    /// Every signing key that is still published (next, current, retired).
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Atomically: if there is no current key for `key.alg`, stores `key` as current. Returns
    /// the current key for that algorithm either way, so that several servers starting at once
    /// agree on one key (checklist H).
    async fn insert_current_key_if_none(&self, key: &StoredKey) -> Result<StoredKey, StoreError>;
}

/// Opens the database named by `url`, creating and migrating it if needed.
///
/// `sqlite://path` (or `sqlite:path`) opens an embedded database file, created with mode 0600.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Err(StoreError::Other(
            "PostgreSQL support is not built into this version yet; use a sqlite:// URL".into(),
        ))
    } else {
        Err(StoreError::Other(format!(
            "unsupported database URL scheme in {:?}: expected sqlite://",
            url.split(':').next().unwrap_or("")
        )))
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_grants(s: &str) -> Result<Vec<GrantType>, StoreError> {
    split_list(s)
        .iter()
        .map(|g| {
            g.parse()
                .map_err(|e| StoreError::Corrupt(format!("grant type: {e}")))
        })
        .collect()
}

fn join_grants(grants: &[GrantType]) -> String {
    grants
        .iter()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
