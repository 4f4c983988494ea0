//! The token endpoint's successful response (RFC 6749 §5.1) and request parameter names.

use serde::{Deserialize, Serialize};

/// Parameter names of a token request (RFC 6749 §4.4.2, §2.3.1; RFC 8707 §2).
pub mod params {
    /// `grant_type`.
    pub const GRANT_TYPE: &str = "grant_type";
    /// `scope`: space-separated scope tokens.
    pub const SCOPE: &str = "scope";
    /// `resource`: an absolute URI of the API the token is for; may repeat.
    pub const RESOURCE: &str = "resource";
    /// `client_id`.
    pub const CLIENT_ID: &str = "client_id";
    /// `client_secret`.
    pub const CLIENT_SECRET: &str = "client_secret";
    /// `client_assertion` (RFC 7521 §4.2).
    pub const CLIENT_ASSERTION: &str = "client_assertion";
    /// `client_assertion_type` (RFC 7521 §4.2).
    pub const CLIENT_ASSERTION_TYPE: &str = "client_assertion_type";
    /// `token`: the token to introspect (RFC 7662 §2.1) or revoke (RFC 7009 §2.1).
    pub const TOKEN: &str = "token";
    /// `token_type_hint` (RFC 7662 §2.1, RFC 7009 §2.1).
    pub const TOKEN_TYPE_HINT: &str = "token_type_hint";
}

/// How the access token is to be presented to a resource server.
///
/// RFC 6749 §5.1: the value is case insensitive, so `bearer` from another server reads as
/// [`TokenType::Bearer`]; latchkey always writes the registered spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TokenType {
    /// RFC 6750 bearer token.
    Bearer,
    /// RFC 9449 DPoP-bound token.
    DPoP,
}

impl<'de> Deserialize<'de> for TokenType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if name.eq_ignore_ascii_case("Bearer") {
            Ok(TokenType::Bearer)
        } else if name.eq_ignore_ascii_case("DPoP") {
            Ok(TokenType::DPoP)
        } else {
            Err(serde::de::Error::unknown_variant(
                &name,
                &["Bearer", "DPoP"],
            ))
        }
    }
}

/// A successful access token response (RFC 6749 §5.1). Never carries a refresh token for the
/// client-credentials grant (RFC 6749 §4.4.3).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token: a JWT (RFC 9068) or an opaque string.
    pub access_token: String,
    /// `Bearer` or `DPoP`.
    pub token_type: TokenType,
    /// Lifetime in seconds from the moment of issue. RFC 6749 §5.1 only RECOMMENDS it, so a
    /// response from another server may lack it; latchkey always sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// The granted scope, space-separated; absent when no scope was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: it never appears in Debug output.
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let r = TokenResponse {
            access_token: "secret-token-value".into(),
            token_type: TokenType::Bearer,
            expires_in: Some(5),
            scope: None,
        };
        assert!(!format!("{r:?}").contains("secret-token-value"));
    }

    #[test]
    fn token_type_is_case_insensitive_and_expires_in_optional() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"t","token_type":"bearer"}"#).unwrap();
        assert_eq!(r.token_type, TokenType::Bearer);
        assert_eq!(r.expires_in, None);
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"t","token_type":"dpop","expires_in":9}"#)
                .unwrap();
        assert_eq!(r.token_type, TokenType::DPoP);
        assert!(
            serde_json::from_str::<TokenResponse>(r#"{"access_token":"t","token_type":"mac"}"#)
                .is_err()
        );
        assert_eq!(
            serde_json::to_string(&TokenType::DPoP).unwrap(),
            r#""DPoP""#
        );
    }
}
