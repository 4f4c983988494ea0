//! RFC 6749 §5.2 error responses, shared by the token, introspection, revocation and
//! registration endpoints.

use serde::{Deserialize, Serialize};

/// An error code from RFC 6749 §5.2 or one of the RFCs that extend its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is missing a parameter, repeats one, or is otherwise malformed.
    InvalidRequest,
    /// Client authentication failed (always HTTP 401).
    InvalidClient,
    /// The grant is invalid (not used by the client-credentials grant itself).
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The grant type is not supported by this server.
    UnsupportedGrantType,
    /// The requested scope is invalid, unknown, malformed or not allowed for the client.
    InvalidScope,
    /// RFC 8707 §2: the requested resource is invalid or not allowed for the client.
    InvalidTarget,
    /// RFC 7009 §2.2.1: the server does not support revoking this token type.
    UnsupportedTokenType,
    /// The server cannot handle the request now (storage or signing key unavailable).
    TemporarilyUnavailable,
    /// An unexpected condition on the server; the body says nothing more.
    ServerError,
    /// RFC 9449 §5: the DPoP proof is invalid.
    InvalidDpopProof,
    /// RFC 9449 §8: the server requires a nonce in the DPoP proof (it sends one).
    UseDpopNonce,
    /// RFC 7591 §3.2.2: a client metadata value is invalid.
    InvalidClientMetadata,
    /// RFC 7591 §3.2.2: a redirection URI is invalid (latchkey's clients have none).
    InvalidRedirectUri,
    /// RFC 6750 §3.1: the bearer token (an initial or registration access token) is missing,
    /// expired, revoked or unknown (always HTTP 401).
    InvalidToken,
}

impl ErrorCode {
    /// The code as it appears in the `error` member.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidToken => "invalid_token",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of an RFC 6749 §5.2 error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error code.
    pub error: ErrorCode,
    /// Human-readable text for the developer of the client; never contains secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// A page about the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
}
