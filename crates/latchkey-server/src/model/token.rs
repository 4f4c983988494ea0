//! Issued tokens as the server keeps them: opaque tokens and the deny list.

use latchkey_proto::Confirmation;

use crate::secret::SecretHash;

/// An opaque access token as stored: its hash and what introspection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueTokenRecord {
    /// SHA-256 of the token; the token itself is never stored (RFC 6819 §5.1.4.1.3).
    pub token_hash: SecretHash,
    /// The token's unique identifier.
    pub jti: String,
    /// The client it was issued to.
    pub client_id: String,
    /// Granted scope tokens.
    pub scope: Vec<String>,
    /// Audiences.
    pub audience: Vec<String>,
    /// Issue time.
    pub issued_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// The client's token epoch at issue.
    pub epoch: i64,
    /// The key or certificate the token is bound to (RFC 9449 §6, RFC 8705 §3), if any.
    pub cnf: Option<Confirmation>,
}

/// A deny-list entry: a revoked token id, kept until the token would have expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Position in the deny list; only grows.
    pub seq: i64,
    /// The revoked token's `jti`.
    pub jti: String,
    /// The revoked token's expiry.
    pub expires_at: i64,
}
