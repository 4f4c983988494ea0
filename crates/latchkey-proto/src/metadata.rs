//! OAuth 2.0 Authorization Server Metadata (RFC 8414 §2).

use serde::{Deserialize, Serialize};

/// The discovery document served at `/.well-known/oauth-authorization-server`.
///
/// latchkey always fills every member. Lists are read as empty when absent, so the client
/// library can read other servers' documents (some leave out even `response_types_supported`,
/// which §2 makes REQUIRED). An empty list is read as "not said": the client then applies the
/// RFC's default where that matters (`client_secret_basic` for the authentication methods).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationServerMetadata {
    /// The issuer identifier; equals the `iss` of every token.
    pub issuer: String,
    /// The token endpoint URL.
    pub token_endpoint: String,
    /// Where the public signing keys are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Grant types the server supports; empty when the document does not say.
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    /// Client authentication methods at the token endpoint; empty when the document does not
    /// say, which RFC 8414 §2 reads as `client_secret_basic`.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9449 §5.1: the JWS algorithms accepted for DPoP proofs; absent when the server
    /// does not take DPoP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// JWS algorithms accepted for `private_key_jwt` assertions at the token endpoint
    /// (RFC 8414 §2); absent when the server does not take assertions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// RFC 8705 §3.3: the server issues certificate-bound access tokens to clients that
    /// authenticate with mutual TLS; absent when the server does not terminate TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_certificate_bound_access_tokens: Option<bool>,
    /// Response types: empty, since there is no authorization endpoint (RFC 8414 §2).
    #[serde(default)]
    pub response_types_supported: Vec<String>,
    /// The RFC 7662 introspection endpoint, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    /// Client authentication methods at the introspection endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// JWS algorithms accepted for assertions at the introspection endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// The RFC 7009 revocation endpoint, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// Client authentication methods at the revocation endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// JWS algorithms accepted for assertions at the revocation endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// The RFC 7591 dynamic client registration endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
}
