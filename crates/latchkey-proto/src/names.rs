//! Registered names that travel on the wire: grant types, client authentication methods and
//! JWS algorithms. Each parses case-sensitively, as the RFCs require.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name that is not one of the values this version of latchkey knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName(pub String);

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown value {:?}", self.0)
    }
}

impl std::error::Error for UnknownName {}

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The registered name, exactly as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(UnknownName(other.to_owned())),
                }
            }
        }
    };
}

wire_enum! {
    /// An OAuth 2.0 grant type (RFC 6749 §4). latchkey issues tokens for machines only.
    GrantType {
        /// RFC 6749 §4.4: the client acts on its own behalf.
        ClientCredentials = "client_credentials",
    }
}

wire_enum! {
    /// How a client authenticates at the token endpoint (RFC 6749 §2.3, RFC 7591 §2).
    ClientAuthMethod {
        /// RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded client id and secret.
        ClientSecretBasic = "client_secret_basic",
        /// RFC 6749 §2.3.1: `client_id` and `client_secret` in the request body.
        ClientSecretPost = "client_secret_post",
        /// RFC 7523 §2.2 and OIDC Core §9: a JWT signed with a key the client registered,
        /// sent as `client_assertion`. No secret is shared.
        PrivateKeyJwt = "private_key_jwt",
        /// RFC 8705 §2.1: mutual TLS with a certificate from a trusted CA whose subject DN or
        /// subject alternative name is the one registered for the client.
        TlsClientAuth = "tls_client_auth",
        /// RFC 8705 §2.2: mutual TLS with a certificate the client registered itself (in the
        /// `x5c` of a key in its JWK Set); no CA is involved.
        SelfSignedTlsClientAuth = "self_signed_tls_client_auth",
    }
}

impl ClientAuthMethod {
    /// Whether the client authenticates with a shared secret (RFC 6749 §2.3.1).
    pub const fn uses_secret(self) -> bool {
        matches!(
            self,
            ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost
        )
    }

    /// Whether the client authenticates with a TLS client certificate (RFC 8705 §2).
    pub const fn is_mutual_tls(self) -> bool {
        matches!(
            self,
            ClientAuthMethod::TlsClientAuth | ClientAuthMethod::SelfSignedTlsClientAuth
        )
    }
}

wire_enum! {
    /// The format of the access tokens a client gets.
    TokenFormat {
        /// A signed JWT (RFC 9068) that resource servers verify offline.
        Jwt = "jwt",
        /// A random reference token (RFC 6819 §3.1), validated by introspection (RFC 7662).
        Opaque = "opaque",
    }
}

wire_enum! {
    /// A JWS algorithm latchkey signs access tokens with (RFC 7518 §3.1, RFC 8037).
    SigningAlg {
        /// ECDSA with P-256 and SHA-256: the default.
        Es256 = "ES256",
        /// Ed25519.
        EdDsa = "EdDSA",
        /// RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key.
        Rs256 = "RS256",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_case_sensitively() {
        assert_eq!(
            "client_credentials".parse(),
            Ok(GrantType::ClientCredentials)
        );
        assert!("Client_Credentials".parse::<GrantType>().is_err());
        assert_eq!("EdDSA".parse(), Ok(SigningAlg::EdDsa));
        assert!("es256".parse::<SigningAlg>().is_err());
        assert_eq!(
            serde_json::to_string(&ClientAuthMethod::ClientSecretPost).unwrap(),
            "\"client_secret_post\""
        );
    }
}
