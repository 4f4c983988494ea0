//! The claims of a JWT access token (RFC 9068 §2.2).

use serde::{Deserialize, Serialize};

/// The `aud` claim: one audience as a string, several as an array (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Builds the claim from a list: one value becomes a string, more become an array.
    pub fn from_list(mut list: Vec<String>) -> Self {
        if list.len() == 1 {
            Audience::One(list.remove(0))
        } else {
            Audience::Many(list)
        }
    }

    /// Whether `resource` is one of the audiences.
    pub fn contains(&self, resource: &str) -> bool {
        match self {
            Audience::One(a) => a == resource,
            Audience::Many(list) => list.iter().any(|a| a == resource),
        }
    }
}

/// The payload of a JWT access token (RFC 9068 §2.2): `sub` equals `client_id` because the
/// client acts on its own behalf (RFC 9068 §2.2, client-credentials case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// The issuer identifier of the authorization server.
    pub iss: String,
    /// The subject: the client itself.
    pub sub: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The resource server(s) the token is for.
    pub aud: Audience,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not before, seconds since the Unix epoch (RFC 7519 §4.1.5). latchkey does not send it;
    /// verifiers honour it when another issuer does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// A unique identifier with at least 128 random bits.
    pub jti: String,
    /// Space-separated granted scopes; absent when none were granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A private claim (RFC 7519 §4.3) for the issuing server only: the client's token epoch
    /// at issue. The server moves a client's epoch on to revoke every token it holds, so
    /// introspection treats tokens of an older epoch as revoked. Absent while it is 0; other
    /// verifiers ignore it.
    #[serde(rename = "lk_epoch", default, skip_serializing_if = "is_zero")]
    pub epoch: i64,
    /// The key or certificate the token is bound to (RFC 7800 `cnf`): only its holder may
    /// use it. Absent for bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// A confirmation claim (RFC 7800 §3.1) binding a token to a proof-of-possession key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 9449 §6.1: the RFC 7638 SHA-256 thumbprint of the DPoP public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// RFC 8705 §3.1: the SHA-256 thumbprint of the client's X.509 certificate (DER).
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
