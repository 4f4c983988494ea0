//! The one error type of the OAuth endpoints (RFC 6749 §5.2). `http::error` is the only place
//! that turns it into a response.

use std::borrow::Cow;

use http::StatusCode;
use latchkey_proto::ErrorCode;

/// An OAuth error: the code, its HTTP status and a description safe to show the client.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// The RFC 6749 §5.2 code.
    pub code: ErrorCode,
    /// The HTTP status.
    pub status: StatusCode,
    /// Text for the client's developer. Never contains a secret or a token.
    pub description: Cow<'static, str>,
    /// Seconds for `Retry-After`, on 503 and 429.
    pub retry_after: Option<u32>,
    /// A fresh nonce for the `DPoP-Nonce` header (RFC 9449 §8), with `use_dpop_nonce`.
    pub dpop_nonce: Option<String>,
    /// The `RateLimit-Policy` and `RateLimit` header values (draft-ietf-httpapi-ratelimit-
    /// headers), with a 429 for a client past its token rate or quota.
    pub rate_limit: Option<Box<(String, String)>>,
}

impl OAuthError {
    fn new(code: ErrorCode, status: StatusCode, description: impl Into<Cow<'static, str>>) -> Self {
        OAuthError {
            code,
            status,
            description: description.into(),
            retry_after: None,
            dpop_nonce: None,
            rate_limit: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::InvalidRequest,
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// 401 `invalid_client`. RFC 6749 §5.2: one body for every failure, so an attacker learns
    /// nothing about which part (client id, secret, state of the client) was wrong.
    pub fn invalid_client() -> Self {
        Self::new(
            ErrorCode::InvalidClient,
            StatusCode::UNAUTHORIZED,
            "client authentication failed",
        )
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant_type() -> Self {
        Self::new(
            ErrorCode::UnsupportedGrantType,
            StatusCode::BAD_REQUEST,
            "only grant_type=client_credentials is supported",
        )
    }

    /// 400 `unauthorized_client`.
    pub fn unauthorized_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::UnauthorizedClient,
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// 400 `invalid_scope`.
    pub fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::InvalidScope,
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// 400 `invalid_target` (RFC 8707 §2).
    pub fn invalid_target(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::InvalidTarget,
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// 503 `temporarily_unavailable` with `Retry-After`.
    pub fn temporarily_unavailable() -> Self {
        OAuthError {
            retry_after: Some(1),
            ..Self::new(
                ErrorCode::TemporarilyUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "the server cannot handle the request now; retry later",
            )
        }
    }

    /// 429 `temporarily_unavailable` with `Retry-After`: too many failed authentications
    /// from this address (for this client, or for any). RFC 6749 has no code for a rate
    /// limit; `temporarily_unavailable` is the registered code that tells a client to come back
    /// later, and RFC 6585 §4 gives the status. The answer is the same whether the client
    /// exists or not.
    pub fn throttled(retry_after_seconds: u64) -> Self {
        OAuthError {
            retry_after: Some(u32::try_from(retry_after_seconds.max(1)).unwrap_or(u32::MAX)),
            ..Self::new(
                ErrorCode::TemporarilyUnavailable,
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed client authentications from this address; retry later",
            )
        }
    }

    /// 429 `temporarily_unavailable` with `Retry-After` and the RateLimit headers: the client
    /// passed its token rate or quota (`client update --token-rate/--token-quota`).
    pub fn quota_exceeded(
        description: String,
        retry_after_seconds: u64,
        policy: String,
        state: String,
    ) -> Self {
        OAuthError {
            retry_after: Some(u32::try_from(retry_after_seconds.max(1)).unwrap_or(u32::MAX)),
            rate_limit: Some(Box::new((policy, state))),
            ..Self::new(
                ErrorCode::TemporarilyUnavailable,
                StatusCode::TOO_MANY_REQUESTS,
                description,
            )
        }
    }

    /// 403 `unauthorized_client`: the authenticated client may not use this endpoint
    /// (introspection without the right to introspect).
    pub fn forbidden(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::UnauthorizedClient,
            StatusCode::FORBIDDEN,
            description,
        )
    }

    /// 400 `invalid_dpop_proof` (RFC 9449 §5).
    pub fn invalid_dpop_proof(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::InvalidDpopProof,
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// 400 `use_dpop_nonce` (RFC 9449 §8): the proof must carry `nonce`, the one sent back in
    /// the `DPoP-Nonce` header.
    pub fn use_dpop_nonce(nonce: String) -> Self {
        let mut error = Self::new(
            ErrorCode::UseDpopNonce,
            StatusCode::BAD_REQUEST,
            "the DPoP proof must carry the nonce in the DPoP-Nonce header",
        );
        error.dpop_nonce = Some(nonce);
        error
    }

    /// 400 `invalid_client_metadata` (RFC 7591 §3.2.2).
    pub fn invalid_client_metadata(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::InvalidClientMetadata,
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// 400 `invalid_redirect_uri` (RFC 7591 §3.2.2).
    pub fn invalid_redirect_uri(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::InvalidRedirectUri,
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// 401 `invalid_token` (RFC 6750 §3.1): a bearer token that is missing, unknown, expired
    /// or revoked; answered with a `Bearer` challenge.
    pub fn invalid_token(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::InvalidToken,
            StatusCode::UNAUTHORIZED,
            description,
        )
    }

    /// 500 `server_error`, with fixed text (the details go to the server log).
    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server failed; the details are in its log",
        )
    }

    /// A request error with another status (405, 413, 415-like cases), still `invalid_request`.
    pub fn invalid_request_with_status(
        status: StatusCode,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(ErrorCode::InvalidRequest, status, description)
    }
}
