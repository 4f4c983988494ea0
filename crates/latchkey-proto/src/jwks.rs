//! JSON Web Key Sets (RFC 7517) holding public keys only.

use serde::{Deserialize, Serialize};

/// A public JSON Web Key. Private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) do not exist
/// on this type, so they cannot be published by mistake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC`, `OKP` or `RSA`.
    pub kty: String,
    /// Key id: the RFC 7638 thumbprint of the key.
    pub kid: String,
    /// Public key use: always `sig` here.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The one algorithm this key is used with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Curve (`P-256`, `Ed25519`) for EC and OKP keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// X coordinate (EC) or public key (OKP), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Y coordinate (EC), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// RFC 7517 §4.7: the key's X.509 certificate chain (standard base64 DER, leaf first). A
    /// `self_signed_tls_client_auth` client registers its certificates here (RFC 8705 §2.2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

/// A JWK Set document, as served at `jwks_uri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}
