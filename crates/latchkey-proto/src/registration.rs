//! Dynamic client registration (RFC 7591 §2, §3.2.1; RFC 7592 §3): the client metadata a
//! registration sends, and the client information the server answers with.

use serde::{Deserialize, Serialize};

/// Client metadata (RFC 7591 §2). Members a server does not understand are ignored (§2), so
/// they are not kept here; an absent member is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientMetadata {
    /// A name for people to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The scope tokens the client may request, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The grant types it will use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Vec<String>>,
    /// The response types it will use (none, for `client_credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_types: Option<Vec<String>>,
    /// Redirection URIs (none, for `client_credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uris: Option<Vec<String>>,
    /// How it authenticates at the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
    /// Its public keys, as a JWK Set (`private_key_jwt`, `self_signed_tls_client_auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Where its public keys are published (`private_key_jwt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// RFC 8705 §2.1.2: the subject DN of its certificate (`tls_client_auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    /// RFC 8705 §2.1.2: a dNSName SAN of its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_dns: Option<String>,
    /// RFC 8705 §2.1.2: a URI SAN of its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_uri: Option<String>,
    /// RFC 8705 §2.1.2: an IP address SAN of its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_ip: Option<String>,
    /// RFC 8705 §2.1.2: an rfc822Name SAN of its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_email: Option<String>,
    /// latchkey's extension: the audiences (absolute resource URIs) its tokens are for, the
    /// first use of which needs no `resource` parameter (RFC 8707).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Vec<String>>,
}

/// A registration request (RFC 7591 §3.1), or an update (RFC 7592 §2.2), which also names the
/// client and may repeat its secret. Members a client may not send (§2.2: the registration
/// access token and URI, the issue and expiry times) are read so they can be refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistrationRequest {
    /// RFC 7592 §2.2: the client being updated (an update must send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// RFC 7592 §2.2: if sent, it must be the client's current secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Must not be sent (RFC 7592 §2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<serde_json::Value>,
    /// Must not be sent (RFC 7592 §2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_client_uri: Option<serde_json::Value>,
    /// Must not be sent (RFC 7592 §2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_issued_at: Option<serde_json::Value>,
    /// Must not be sent (RFC 7592 §2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<serde_json::Value>,
    /// The metadata.
    #[serde(flatten)]
    pub metadata: ClientMetadata,
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3): the client's identifier
/// and credentials, and every metadata value as registered (which may differ from the
/// request's: the server fills in defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInformation {
    /// The client identifier.
    pub client_id: String,
    /// Its secret: only in the answer to the registration itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// When the identifier was issued (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_issued_at: Option<i64>,
    /// When the secret expires (Unix seconds), `0` for never: present whenever the client
    /// uses a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    /// The token for the client configuration endpoint (RFC 7592 §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<String>,
    /// The client configuration endpoint (RFC 7592 §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_client_uri: Option<String>,
    /// The registered metadata.
    #[serde(flatten)]
    pub metadata: ClientMetadata,
}
