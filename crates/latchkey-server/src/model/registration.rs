//! Dynamic client registration (RFC 7591/7592): the initial access tokens an operator hands
//! out, and what is kept about a client registered with one.

use crate::secret::SecretHash;

/// An initial access token (RFC 7591 §3): lets its holder register clients at
/// `/oauth2/register`. Only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    /// Identifier (not the token), shown by `registration-token list` and in the audit trail.
    pub token_id: String,
    /// SHA-256 of the token.
    pub hash: SecretHash,
    /// Creation time.
    pub created_at: i64,
    /// After this time it registers nothing.
    pub expires_at: i64,
    /// How many clients it may register; `None` for no limit.
    pub max_uses: Option<i64>,
    /// How many it has registered.
    pub uses: i64,
    /// The scope tokens a registration may ask for; `None` for any.
    pub scope_limit: Option<Vec<String>>,
    /// The audiences a registration may ask for; `None` for any.
    pub audience_limit: Option<Vec<String>>,
}

impl RegistrationToken {
    /// Whether it may register one more client at `now`.
    pub fn usable(&self, now: i64) -> bool {
        now < self.expires_at && self.max_uses.is_none_or(|max| self.uses < max)
    }
}

/// What is kept about a client registered through `/oauth2/register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The client.
    pub client_id: String,
    /// SHA-256 of its registration access token (RFC 7592 §1).
    pub access_hash: SecretHash,
    /// The initial access token it was registered with (the actor of its audit entries).
    pub token_id: String,
    /// That token's scope limit, which also bounds the client's later updates.
    pub scope_limit: Option<Vec<String>>,
    /// That token's audience limit, likewise.
    pub audience_limit: Option<Vec<String>>,
}
