//! The one error type of the client library.

use std::fmt;
use std::time::Duration;

use latchkey_proto::ErrorCode;

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given something unusable (a missing client id, an `http://` issuer that
    /// is not on loopback, a malformed scope). Nothing was sent.
    #[error("latchkey-client configuration: {0}")]
    Config(String),
    /// The authorization server refused the request (HTTP 4xx with an RFC 6749 §5.2 error).
    /// Retrying the same request cannot help, so it was not retried: this is a configuration
    /// problem (wrong secret, a scope the client may not have, ...).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The discovery document was missing, malformed, or named a different issuer
    /// (RFC 8414 §3.3).
    #[error("authorization server discovery: {0}")]
    Discovery(String),
    /// The server could not be reached, or kept answering 5xx or 429, until the retry deadline.
    #[error("token endpoint unavailable after {attempts} attempt(s) over {elapsed:?}: {last}")]
    Unavailable {
        /// Requests made.
        attempts: u32,
        /// Time spent, including backoff.
        elapsed: Duration,
        /// What went wrong the last time.
        last: String,
    },
    /// A response that breaks RFC 6749 §5.1 or §5.2 (not JSON, no token, an unexpected status).
    #[error("unexpected response from the authorization server: {0}")]
    InvalidResponse(String),
}

impl Error {
    /// True when the error comes from configuration (the builder's input, or the server's
    /// verdict on the client's credentials, scope or audience) rather than from the network.
    pub fn is_configuration(&self) -> bool {
        matches!(self, Error::Config(_) | Error::Rejected(_))
    }
}

/// An RFC 6749 §5.2 error response from the token endpoint.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Rejection {
    /// The HTTP status.
    pub status: u16,
    /// The `error` member as sent.
    pub error: String,
    /// `error` as a known code, when it is one.
    pub code: Option<ErrorCode>,
    /// The `error_description` member, when present.
    pub description: Option<String>,
}

impl Rejection {
    /// What a user should check, for the codes that have an obvious cause.
    fn hint(&self) -> Option<&'static str> {
        Some(match self.code? {
            ErrorCode::InvalidClient => {
                "check the client id, the secret and the authentication method (basic or post)"
            }
            ErrorCode::InvalidScope => "the client may not request this scope",
            ErrorCode::InvalidTarget => "the client may not request this audience (resource)",
            ErrorCode::UnauthorizedClient => "the client may not use the client_credentials grant",
            ErrorCode::UnsupportedGrantType => "the server does not offer client_credentials",
            _ => return None,
        })
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the authorization server rejected the token request: {} (HTTP {})",
            self.error, self.status
        )?;
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        if let Some(hint) = self.hint() {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}
