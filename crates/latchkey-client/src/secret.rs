//! Credentials in memory: the client secret and the access tokens it buys. Neither ever
//! appears in `Debug` output, and neither implements `Display`.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;
use latchkey_proto::TokenType;

/// A client secret. Its `Debug` output is redacted and it has no `Display`, so it cannot end up
/// in a log line by accident; [`ClientSecret::expose`] is the one way to read it.
#[derive(Clone)]
pub struct ClientSecret(Arc<str>);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        ClientSecret(Arc::from(secret.into()))
    }

    /// The secret itself, for sending it to the token endpoint.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for ClientSecret {
    fn from(secret: String) -> Self {
        ClientSecret::new(secret)
    }
}

impl From<&str> for ClientSecret {
    fn from(secret: &str) -> Self {
        ClientSecret::new(secret)
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// An access token with what the client knows about it. Cloning is cheap (one reference
/// count). `Debug` shows the expiry and scope, never the token.
#[derive(Clone)]
pub struct AccessToken(Arc<TokenInner>);

struct TokenInner {
    value: Box<str>,
    /// `Bearer <token>`, built once and marked sensitive so HTTP stacks do not log it.
    authorization: HeaderValue,
    token_type: TokenType,
    scope: Option<String>,
    received_at: SystemTime,
    expires_at: SystemTime,
}

impl AccessToken {
    /// Wraps a token. Fails when the token cannot travel in an `Authorization` header (RFC 6750
    /// §2.1 allows only visible ASCII).
    pub(crate) fn new(
        value: String,
        token_type: TokenType,
        scope: Option<String>,
        received_at: SystemTime,
        expires_at: SystemTime,
    ) -> Option<Self> {
        if value.is_empty() || value.bytes().any(|b| !b.is_ascii_graphic()) {
            return None;
        }
        // RFC 9449 §7.1: a DPoP-bound token goes with the DPoP scheme.
        let scheme = match token_type {
            TokenType::Bearer => "Bearer",
            TokenType::DPoP => "DPoP",
        };
        let mut authorization = HeaderValue::try_from(format!("{scheme} {value}")).ok()?;
        authorization.set_sensitive(true);
        Some(AccessToken(Arc::new(TokenInner {
            value: value.into_boxed_str(),
            authorization,
            token_type,
            scope,
            received_at,
            expires_at,
        })))
    }

    /// The token itself, to send to a resource server.
    pub fn secret(&self) -> &str {
        &self.0.value
    }

    /// The `Authorization` header value (`Bearer ...`, or `DPoP ...` for a DPoP-bound
    /// token, which also needs a proof per request: [`ClientCredentials::dpop_proof`](crate::ClientCredentials::dpop_proof)),
    /// marked sensitive.
    pub fn authorization(&self) -> HeaderValue {
        self.0.authorization.clone()
    }

    /// The token type the server issued: `DPoP` when the client has a DPoP key and the server
    /// bound the token to it, else `Bearer`.
    pub fn token_type(&self) -> TokenType {
        self.0.token_type
    }

    /// The scope the server granted, when it said (RFC 6749 §5.1).
    pub fn scope(&self) -> Option<&str> {
        self.0.scope.as_deref()
    }

    /// When the client received the token.
    pub fn received_at(&self) -> SystemTime {
        self.0.received_at
    }

    /// When the token expires: receipt time plus `expires_in` (the client never decodes the
    /// token, RFC 9068 §6).
    pub fn expires_at(&self) -> SystemTime {
        self.0.expires_at
    }

    /// Whether `other` is the same token.
    pub(crate) fn same_as(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.value == other.0.value
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("token_type", &self.0.token_type)
            .field("scope", &self.0.scope)
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}
