//! A registered client, its secrets, and the changes an operator makes to it.

use latchkey_proto::{ClientAuthMethod, GrantType, TokenFormat};

use super::{Credential, QuotaMode, Rate};
use crate::secret::SecretHash;

/// Shortest token lifetime a client may have (seconds).
pub const MIN_TOKEN_TTL: i64 = 10;
/// Longest token lifetime a client may have (seconds): a day.
pub const MAX_TOKEN_TTL: i64 = 24 * 60 * 60;
/// The default token lifetime (seconds): 15 minutes.
pub const DEFAULT_TOKEN_TTL: i64 = 15 * 60;

/// The audience (`aud`) of tokens for the admin API: only an operator (`client create
/// --admin`, or an admin) gives a client this audience; dynamic registration never does.
pub const ADMIN_AUDIENCE: &str = "urn:latchkey:admin";
/// The scope that allows every admin operation.
pub const ADMIN_SCOPE: &str = "latchkey:admin";
/// The scope that allows reading only.
pub const ADMIN_READ_SCOPE: &str = "latchkey:admin:read";

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
    /// What authenticates it, which also fixes its one authentication method.
    pub credential: Credential,
    /// Disabled clients fail authentication.
    pub enabled: bool,
    /// May call the introspection endpoint (RFC 7662 §2.1).
    pub can_introspect: bool,
    /// JWT or opaque access tokens.
    pub token_format: TokenFormat,
    /// A request like the last one (same scope, audience and binding) gets the last token back
    /// while it has more than half its lifetime left, instead of a new one.
    pub reuse_tokens: bool,
    /// At most this many tokens in a burst, refilled over the period (a token bucket).
    pub token_rate: Option<Rate>,
    /// At most this many tokens per fixed window of the period (UTC).
    pub token_quota: Option<Rate>,
    /// Whether passing the rate or quota refuses the request or only reports it.
    pub quota_mode: QuotaMode,
    /// Tokens carry the epoch of their client at issue; tokens of an older epoch are revoked.
    pub token_epoch: i64,
    /// Moves on with every change to the client's record (not its secrets): a change can be
    /// made only if the client is still at the version it was decided on
    /// ([`ClientUpdate::expected_version`]).
    pub version: i64,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Secrets that are not revoked (expired ones included; authentication checks expiry).
    /// Only a [`Credential::Secret`] client has any, and only such a client is authenticated
    /// by them.
    pub secrets: Vec<SecretRecord>,
}

impl ClientRecord {
    /// A new client at `now`, with the defaults of `client create`: enabled, the
    /// client-credentials grant, the default token lifetime, JWT tokens, no scope, no
    /// audience, no secret yet. The one place a record is built field by field: callers
    /// change what they need with `..ClientRecord::new(..)`, so a new field is added here.
    pub fn new(client_id: String, name: String, credential: Credential, now: i64) -> Self {
        ClientRecord {
            client_id,
            name,
            scope: Vec::new(),
            audience: Vec::new(),
            grant_types: vec![GrantType::ClientCredentials],
            token_ttl_seconds: DEFAULT_TOKEN_TTL,
            credential,
            enabled: true,
            can_introspect: false,
            token_format: TokenFormat::Jwt,
            reuse_tokens: false,
            token_rate: None,
            token_quota: None,
            quota_mode: QuotaMode::Enforce,
            token_epoch: 0,
            version: 0,
            created_at: now,
            updated_at: now,
            secrets: Vec::new(),
        }
    }

    /// The one authentication method the client must use.
    pub const fn auth_method(&self) -> ClientAuthMethod {
        self.credential.auth_method()
    }
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

/// A secret as `client secret list` shows it: never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// Identifier of the secret.
    pub secret_id: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Last successful authentication, as last written from a server's memory.
    pub last_used_at: Option<i64>,
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
    /// Allow or forbid introspection.
    pub can_introspect: Option<bool>,
    /// New token format (for tokens issued from now on).
    pub token_format: Option<TokenFormat>,
    /// Hand out the last token again while it has more than half its lifetime left.
    pub reuse_tokens: Option<bool>,
    /// A new token rate (`Some(None)` removes it).
    pub token_rate: Option<Option<Rate>>,
    /// A new token quota (`Some(None)` removes it).
    pub token_quota: Option<Option<Rate>>,
    /// A new quota mode.
    pub quota_mode: Option<QuotaMode>,
    /// Revoke every token the client holds: moves `token_epoch` on and deletes the client's
    /// opaque tokens, in one transaction.
    pub revoke_tokens: bool,
    /// Replace what authenticates a client without a secret (key or certificate rotation, or
    /// where its keys come from); its authentication method stays the same.
    pub credential: Option<Credential>,
    /// Apply the change only if the client is still at this version (else nothing changes,
    /// and the store answers `StoreError::Precondition`).
    pub expected_version: Option<i64>,
}
