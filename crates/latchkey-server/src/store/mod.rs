//! The storage contract: the handful of operations the server and the admin CLI need.
//!
//! No code outside this module knows SQL. One implementation serves both databases: SQLite
//! for one server with an embedded database file, PostgreSQL for several servers sharing one
//! database. [`connect`] is the only place that chooses a backend by URL.
//!
//! - `sql.rs`: [`Store`] itself, every statement written once with `$N` parameters (multi-row
//!   inserts take their placeholders from `dialect.rs`).
//! - `rows.rs`: records and rows both ways: the column lists, the statements that write a
//!   record, the decoding of rows.
//! - `dialect.rs`: each place where the SQL of the two databases differs, both sides together.
//! - `db.rs`: the two sqlx drivers behind one interface (pools, transactions, statements and
//!   their arguments, rows), and the retry of aborted transactions.
//! - `migrations.rs`: each database's schema migrations, and applying them.
//! - `sqlite.rs`, `postgres.rs`: opening each database, and reading its errors by kind.
//! - `jti_batch.rs`: group commit of client assertion ids.

mod db;
mod dialect;
mod jti_batch;
mod migrations;
mod postgres;
mod rows;
mod sql;
mod sqlite;

pub use db::{ERROR_KINDS, database_errors};

use std::sync::Arc;

use async_trait::async_trait;
use latchkey_proto::SigningAlg;

use crate::model::{
    AuditEntry, AuditEvent, ClientRecord, ClientUpdate, OpaqueTokenRecord, Registration,
    RegistrationToken, Revocation, SecretInfo, SecretRecord, TokenSource, UsageCount,
};
use crate::secret::SecretHash;

/// Why a storage operation failed, by kind rather than by message.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// A change made against a version of a record that is no longer the current one.
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Other(String),
}

/// Where the shared state stands: servers compare it with what they hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPoint {
    /// Moves with every change to clients, secrets or signing keys.
    pub generation: i64,
    /// The newest deny-list position.
    pub revocation_seq: i64,
}

/// What one transaction changed, as the change feed records it
/// (migrations/sqlite/0008_change_feed.sql).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// One client was created, changed (its record or its secrets) or deleted.
    Client(String),
    /// The signing keys changed.
    Keys,
    /// Clients were added in bulk (an import): servers forget the ids they remembered as
    /// unknown. (New clients cannot be in anyone's cache of known records.)
    NewClients,
}

impl Change {
    /// The stored `kind` and `client_id` columns.
    fn columns(&self) -> (&'static str, Option<&str>) {
        match self {
            Change::Client(client_id) => ("client", Some(client_id)),
            Change::Keys => ("keys", None),
            Change::NewClients => ("clients", None),
        }
    }

    /// The change from its stored columns.
    fn from_columns(kind: &str, client_id: Option<String>) -> Result<Self, StoreError> {
        match (kind, client_id) {
            ("client", Some(client_id)) => Ok(Change::Client(client_id)),
            ("keys", None) => Ok(Change::Keys),
            ("clients", None) => Ok(Change::NewClients),
            (kind, _) => Err(StoreError::Corrupt(format!("change feed entry {kind:?}"))),
        }
    }
}

/// One row of the change feed: the change, and the generation it moved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// The generation this change moved to; entries are numbered without gaps.
    pub generation: i64,
    /// What changed.
    pub change: Change,
}

/// How many change-feed entries the database keeps behind the newest one. A server further
/// behind than this (it lost the database for a long time) finds a gap and drops every cached
/// client instead.
pub const FEED_RETAINED: i64 = 100_000;

/// How many expired rows one janitor pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Expired opaque tokens.
    pub opaque_tokens: u64,
    /// Deny-list entries whose token has expired.
    pub revocations: u64,
    /// Used client assertion ids whose assertion has expired.
    pub assertion_jtis: u64,
    /// Change-feed entries more than [`FEED_RETAINED`] generations old.
    pub changes: u64,
    /// Audit events older than the retention.
    pub audit_events: u64,
    /// Expired initial access tokens.
    pub registration_tokens: u64,
    /// Usage counts older than the retention.
    pub usage_counts: u64,
    /// Per-address token counts (for the not-caching flag) older than the retention.
    pub token_sources: u64,
}

/// How long per-address token counts (the not-caching flag's) are kept at most: 7 days. They
/// hold a row per client, address and hour, far more than the usage's per-minute totals, and
/// only the last day is looked at.
pub const SOURCES_RETAINED: i64 = 7 * 24 * 3600;

/// Which usage counts to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only minutes at or after this time.
    pub since: i64,
    /// One client's counts, minute by minute; `None` for every client's totals since `since`
    /// (each total filed under `since`), the most active clients first.
    pub client: Option<String>,
    /// At most this many clients (for totals) or periods (for one client, the latest).
    pub limit: u32,
    /// For one client: the length of each period, in seconds (a multiple of 60; 60 gives
    /// minutes, 3600 hours). Periods start at multiples of it since the Unix epoch.
    pub step: i64,
}

/// Which audit events to read: one page, by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events at or after this time.
    pub since: i64,
    /// Only events about this client or key.
    pub target: Option<String>,
    /// Only events after this position (`0` for the first page).
    pub after_seq: i64,
    /// At most this many.
    pub limit: u32,
}

/// What a key rotation needs: checked and applied in one transaction.
#[derive(Debug, Clone)]
pub struct RotationPlan {
    /// The algorithm whose keys rotate.
    pub alg: SigningAlg,
    /// The time of the rotation.
    pub now: i64,
    /// The next key must have been created at or before this time (published long enough).
    pub next_created_by: i64,
    /// Rotate only if the current key was activated at or before this time (automatic
    /// rotation); `None` rotates regardless.
    pub only_if_current_activated_by: Option<i64>,
    /// The key that becomes the new next key.
    pub new_next: StoredKey,
}

/// The result of [`Store::rotate_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// Rotated: the old current key is retired, the next key signs, a new next key exists.
    Rotated {
        /// The key that was current and is now retired.
        retired: String,
        /// The key that signs now.
        current: String,
        /// The new next key.
        next: String,
    },
    /// The next key has not been published long enough; it was created at this time.
    NextTooNew {
        /// Creation time of the next key.
        created_at: i64,
    },
    /// There is no next (or no current) key for the algorithm.
    NoKeys,
    /// `only_if_current_activated_by` was set and the current key is younger.
    NotDue,
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

/// Lifecycle of a signing key (docs/CONFORMANCE.md, "Signing keys and rotation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Signing new tokens.
    Current,
    /// Published for verification only.
    Retired,
    /// No longer published; the private key is erased.
    Removed,
}

impl KeyState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
            KeyState::Removed => "removed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "next" => Ok(KeyState::Next),
            "current" => Ok(KeyState::Current),
            "retired" => Ok(KeyState::Retired),
            "removed" => Ok(KeyState::Removed),
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
    /// PKCS#8 DER of the private key, or that sealed with a key-encryption key; empty once
    /// removed.
    pub private_key: Vec<u8>,
    /// `None` when `private_key` is in the clear, else the marker of the KEK that sealed it.
    pub encryption: Option<String>,
    /// The public JWK, as JSON.
    pub public_jwk: String,
    /// Creation (= publication) time.
    pub created_at: i64,
    /// When it began signing.
    pub activated_at: Option<i64>,
    /// When it stopped signing.
    pub retired_at: Option<i64>,
    /// When it was removed from the JWK Set.
    pub removed_at: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("private_key", &"<redacted>")
            .field("encryption", &self.encryption)
            .field("created_at", &self.created_at)
            .field("activated_at", &self.activated_at)
            .field("retired_at", &self.retired_at)
            .field("removed_at", &self.removed_at)
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
    async fn create_client(
        &self,
        audit: &AuditEntry,
        client: &ClientRecord,
    ) -> Result<(), StoreError>;

    /// Inserts many clients and their secrets in one transaction, with one change-feed entry
    /// for them all: all of them or, on an error, none.
    async fn create_clients(
        &self,
        audit: &AuditEntry,
        clients: &[ClientRecord],
    ) -> Result<(), StoreError>;

    /// Up to `limit` clients whose id sorts after `after` (`""` for the first page), ordered
    /// by id: one page of an export or a listing, one indexed range read whatever the total.
    async fn clients_after(&self, after: &str, limit: u32)
    -> Result<Vec<ClientRecord>, StoreError>;

    /// One client with its unrevoked secrets, in one round trip.
    async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;

    /// Every client, ordered by creation.
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;

    /// Applies `update` and returns the client as it is now, or `None` if there is none. With
    /// `update.expected_version`, only a client still at that version changes; another is a
    /// [`StoreError::Precondition`], decided by the update statement itself.
    async fn update_client(
        &self,
        audit: &AuditEntry,
        client_id: &str,
        update: &ClientUpdate,
        now: i64,
    ) -> Result<Option<ClientRecord>, StoreError>;

    /// Atomically adds `secret` to a client that holds fewer than `max_live` live (unrevoked,
    /// unexpired at `now`) secrets, and makes every other live secret expire at
    /// `expire_others_at` at the latest (the overlap window of a rotation).
    async fn add_secret(
        &self,
        audit: &AuditEntry,
        client_id: &str,
        secret: &SecretRecord,
        expire_others_at: Option<i64>,
        max_live: usize,
        now: i64,
    ) -> Result<SecretAdded, StoreError>;

    /// Deletes a client and its secrets; `false` if there was none. With `expected_version`,
    /// only a client still at that version (else [`StoreError::Precondition`]).
    async fn delete_client(
        &self,
        audit: &AuditEntry,
        client_id: &str,
        expected_version: Option<i64>,
    ) -> Result<bool, StoreError>;

    /// Where the shared state stands now, in one round trip.
    async fn sync_point(&self) -> Result<SyncPoint, StoreError>;

    /// The change-feed entries after `generation`, oldest first, at most `limit` of them. The
    /// first one is numbered `generation + 1` unless the entries between have been purged.
    async fn changes_since(
        &self,
        generation: i64,
        limit: u32,
    ) -> Result<Vec<FeedEntry>, StoreError>;

    /// Records that the server `server_id` has dropped every cached client and key record
    /// older than `generation` (registering the server if it is new).
    async fn acknowledge_generation(
        &self,
        server_id: &str,
        generation: i64,
    ) -> Result<(), StoreError>;

    /// The servers that have not acknowledged `generation` yet.
    async fn servers_behind(&self, generation: i64) -> Result<Vec<String>, StoreError>;

    /// Forgets a server (it stopped, or did not answer in time; a live one registers again).
    async fn forget_server(&self, server_id: &str) -> Result<(), StoreError>;

    /// A client's secrets that are not revoked, for display.
    async fn list_secrets(&self, client_id: &str) -> Result<Option<Vec<SecretInfo>>, StoreError>;

    /// Revokes one secret of a client; `false` if there is no such live secret.
    async fn revoke_secret(
        &self,
        audit: &AuditEntry,
        client_id: &str,
        secret_id: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Writes when secrets were last used (`(secret_id, time)`); never moves a time back.
    async fn record_secret_use(&self, uses: &[(String, i64)]) -> Result<(), StoreError>;

    /// Stores a newly issued opaque token.
    async fn insert_opaque_token(&self, token: &OpaqueTokenRecord) -> Result<(), StoreError>;

    /// The opaque token with this hash, if it exists (expired ones included until purged).
    async fn find_opaque_token(
        &self,
        token_hash: &SecretHash,
    ) -> Result<Option<OpaqueTokenRecord>, StoreError>;

    /// Revokes a token in one transaction: puts `jti` on the deny list until `expires_at` and,
    /// for an opaque token, deletes its record. Revoking twice is not an error.
    async fn revoke_token(
        &self,
        jti: &str,
        client_id: &str,
        expires_at: i64,
        opaque_hash: Option<&SecretHash>,
    ) -> Result<(), StoreError>;

    /// Deny-list entries after position `seq`, in order.
    async fn revocations_since(&self, seq: i64) -> Result<Vec<Revocation>, StoreError>;

    /// Whether `jti` is on the deny list (for servers whose in-memory copy is stale).
    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError>;

    /// Records that `client_id` authenticated with the client assertion `jti` (RFC 7523 §3
    /// item 7), remembered until `expires_at`. `true` the first time; `false` for a replay.
    /// A uniqueness constraint decides, so of two concurrent uses exactly one gets `true`.
    /// An entry whose `expires_at` is at or before `now` no longer counts.
    async fn use_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Deletes opaque tokens, deny-list entries, used assertion ids and initial access tokens
    /// that expired before `now`, change-feed entries more than [`FEED_RETAINED`] generations
    /// old, audit events from before `audit_before`, usage counts of minutes that started
    /// before `usage_before`, and token sources of hours that started before `usage_before` or
    /// [`SOURCES_RETAINED`] before `now`, whichever is later.
    async fn purge_expired(
        &self,
        now: i64,
        audit_before: i64,
        usage_before: i64,
    ) -> Result<Purged, StoreError>;

    /// Adds `counts` (per client, minute and kind) and `sources` (tokens per client, address and
    /// hour, with the allowance the caller applies now) to the stored ones, in one transaction.
    /// Returns each source row as it stands after the addition (the cluster's total).
    async fn record_usage(
        &self,
        counts: &[UsageCount],
        sources: &[TokenSource],
    ) -> Result<Vec<TokenSource>, StoreError>;

    /// Usage counts matching `query`.
    async fn usage_counts(&self, query: &UsageQuery) -> Result<Vec<UsageCount>, StoreError>;

    /// The addresses at which clients got more tokens than allowed in an hour (not caching),
    /// in hours starting at or after the hour of `query.since`, newest hour first and the
    /// most tokens first; only `query.client`'s when set; at most `query.limit`.
    async fn not_caching(&self, query: &UsageQuery) -> Result<Vec<TokenSource>, StoreError>;

    /// Audit events matching `query`, oldest first.
    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// Appends an audit event that changes nothing else (a client that passed its quota in
    /// monitor mode).
    async fn record_event(&self, audit: &AuditEntry) -> Result<(), StoreError>;

    /// Takes up to `want` tokens of the quota `limit` of `client_id` in the window that starts
    /// at `window_start`, shared by every server; returns how many it got (0: used up).
    async fn take_quota(
        &self,
        client_id: &str,
        window_start: i64,
        limit: i64,
        want: i64,
    ) -> Result<i64, StoreError>;

    /// Gives `us` microseconds' worth of tokens back to the token bucket of `client_id` (a
    /// lease it no longer holds).
    async fn return_rate(&self, client_id: &str, us: i64) -> Result<(), StoreError>;

    /// Takes up to `want` tokens from the token bucket of `client_id` (`count` per
    /// `period_us`, a burst of `count`) at `now_us` (microseconds), shared by every server;
    /// returns how many it got and, when none, the microseconds until one is free.
    async fn take_rate(
        &self,
        client_id: &str,
        count: i64,
        period_us: i64,
        now_us: i64,
        want: i64,
    ) -> Result<(i64, i64), StoreError>;

    /// Stores a new initial access token, with its audit entry.
    async fn create_registration_token(
        &self,
        audit: &AuditEntry,
        token: &RegistrationToken,
    ) -> Result<(), StoreError>;

    /// The initial access tokens not yet purged (expired ones until the janitor passes),
    /// ordered by creation.
    async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>, StoreError>;

    /// Deletes an initial access token; `false` if there is none. Clients it registered stay.
    async fn revoke_registration_token(
        &self,
        audit: &AuditEntry,
        token_id: &str,
    ) -> Result<bool, StoreError>;

    /// The initial access token with this hash, if one.
    async fn find_registration_token(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<RegistrationToken>, StoreError>;

    /// Registers `client` (RFC 7591) with the initial access token `registration.token_id`, in
    /// one transaction: counts one use of the token if at `now` it is unexpired and under its
    /// limit, then stores the client and its registration. `false`, with nothing stored, when
    /// the token is no longer usable (of two registrations racing for its last use, one wins).
    async fn register_client(
        &self,
        audit: &AuditEntry,
        client: &ClientRecord,
        registration: &Registration,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// The registration whose registration access token has this hash, if one.
    async fn find_registration(
        &self,
        access_hash: &SecretHash,
    ) -> Result<Option<Registration>, StoreError>;

    /// Every client registration, ordered by client id (what `migrate-data` copies).
    async fn registrations(&self) -> Result<Vec<Registration>, StoreError>;

    /// Stores, as it was, the registration of a client already stored (`migrate-data`); its
    /// initial access token is not counted again.
    async fn import_registration(&self, registration: &Registration) -> Result<(), StoreError>;

    /// Every signing key, removed ones included, ordered by creation.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Atomically: if there is no key for `key.alg` in `key.state` (current or next), stores
    /// `key`. Returns the key in that state either way, so that several servers starting at
    /// once agree on one (docs/CONFORMANCE.md, "Signing keys and rotation").
    async fn insert_key_if_none(
        &self,
        audit: &AuditEntry,
        key: &StoredKey,
    ) -> Result<StoredKey, StoreError>;

    /// Rotates the keys of one algorithm if the plan's conditions hold, in one transaction.
    async fn rotate_keys(
        &self,
        audit: &AuditEntry,
        plan: &RotationPlan,
    ) -> Result<RotationOutcome, StoreError>;

    /// Removes retired keys that were retired at or before `retired_by`: erases their private
    /// key and stops publishing them. Returns their ids.
    async fn remove_retired_keys(
        &self,
        audit: &AuditEntry,
        retired_by: i64,
        now: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// Stores a key exactly as given, in any state (for moving data to another database).
    /// A key with the same kid, or a second current or next key, is a `Conflict`.
    async fn import_key(&self, audit: &AuditEntry, key: &StoredKey) -> Result<(), StoreError>;

    /// Replaces a key's stored private key (to seal a clear key with a KEK).
    async fn reseal_key(
        &self,
        audit: &AuditEntry,
        kid: &str,
        private_key: &[u8],
        encryption: &str,
    ) -> Result<(), StoreError>;
}

/// Opens the database named by `url`, creating and migrating it if needed.
///
/// `sqlite://path` (or `sqlite:path`) opens an embedded database file, created with mode 0600.
/// `postgres://` (or `postgresql://`) connects to a PostgreSQL database, which must exist.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::open(url).await?))
    } else {
        Err(StoreError::Other(format!(
            "unsupported database URL scheme in {:?}: expected sqlite:// or postgres://",
            url.split(':').next().unwrap_or("")
        )))
    }
}
