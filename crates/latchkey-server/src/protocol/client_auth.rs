//! Client authentication with a shared secret (RFC 6749 §2.3.1): which credentials a request
//! presents, and whether they match the stored client.

use base64::Engine as _;
use base64::engine::general_purpose::GeneralPurpose;
use base64::engine::{DecodePaddingMode, GeneralPurposeConfig};
use latchkey_proto::ClientAuthMethod;

use crate::error::OAuthError;
use crate::form::decode_component;
use crate::protocol::request::RequestParams;
use crate::secret::SecretHash;
use crate::store::ClientRecord;

/// Standard base64, accepting input with or without padding.
const BASIC_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Credentials a request presents: who it claims to be, its secret, and how it sent them.
pub struct PresentedSecret {
    /// The claimed client id.
    pub client_id: String,
    secret: String,
    /// Where the secret came from.
    pub method: ClientAuthMethod,
}

impl std::fmt::Debug for PresentedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedSecret")
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .field("method", &self.method)
            .finish()
    }
}

/// What the request presents. `authorization` is the single `Authorization` header, if any
/// (the caller has already refused two of them).
///
/// RFC 6749 §2.3: "The client MUST NOT use more than one authentication method in each
/// request" — Basic together with a body secret or an assertion is `invalid_request`, and so
/// is a body `client_id` that differs from the Basic user.
pub fn presented_credentials(
    authorization: Option<&[u8]>,
    request: &RequestParams,
) -> Result<PresentedSecret, OAuthError> {
    if let Some(header) = authorization {
        if request.client_secret.is_some() || request.has_assertion {
            return Err(OAuthError::invalid_request(
                "the client used more than one authentication method",
            ));
        }
        let (client_id, secret) = parse_basic(header).ok_or_else(OAuthError::invalid_client)?;
        if request
            .client_id
            .as_deref()
            .is_some_and(|body_id| body_id != client_id)
        {
            return Err(OAuthError::invalid_request(
                "client_id in the body differs from the Authorization header",
            ));
        }
        return Ok(PresentedSecret {
            client_id,
            secret,
            method: ClientAuthMethod::ClientSecretBasic,
        });
    }
    if request.has_assertion {
        if request.client_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "the client used more than one authentication method",
            ));
        }
        // Assertion-based authentication (RFC 7523) is not enabled for any client here.
        return Err(OAuthError::invalid_client());
    }
    match (&request.client_id, &request.client_secret) {
        (Some(client_id), Some(secret)) => Ok(PresentedSecret {
            client_id: client_id.clone(),
            secret: secret.clone(),
            method: ClientAuthMethod::ClientSecretPost,
        }),
        // No credentials, or a client_id alone: a confidential client must authenticate
        // (RFC 6749 §4.4.2).
        _ => Err(OAuthError::invalid_client()),
    }
}

/// RFC 6749 §2.3.1: the client id and secret are form-urlencoded, joined by `:` and base64
/// encoded (RFC 7617). Anything malformed is `None`.
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, credentials) = header.split_once(' ')?;
    // RFC 9110 §11.1: the scheme name is case-insensitive.
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASIC_B64.decode(credentials.trim_matches(' ')).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let client_id = decode_component(&decoded[..colon])?;
    let secret = decode_component(&decoded[colon + 1..])?;
    if client_id.is_empty() || secret.is_empty() {
        return None;
    }
    Some((client_id, secret))
}

/// Compared against when the client does not exist, so an unknown client costs what a wrong
/// secret costs.
const DUMMY_HASH: SecretHash = SecretHash([0x5a; 32]);

/// Decides whether `presented` authenticates as `client` (`None` when no such client exists),
/// and returns the id of the secret that matched.
///
/// Every failure — unknown client, wrong, expired or revoked secret, disabled client, or a
/// method the client is not registered for — is the same `invalid_client`, after the same work.
pub fn authenticate<'c>(
    presented: &PresentedSecret,
    client: Option<&'c ClientRecord>,
    now: i64,
) -> Result<&'c str, OAuthError> {
    let hash = SecretHash::of(presented.secret.as_bytes());
    let mut matched = None;
    match client {
        Some(client) if !client.secrets.is_empty() => {
            // Every secret is compared, so the time does not tell which one matched.
            for stored in &client.secrets {
                let live = stored.expires_at.is_none_or(|expires| now < expires);
                if stored.hash.matches(&hash) & live {
                    matched = Some(stored.secret_id.as_str());
                }
            }
        }
        _ => {
            let _ = DUMMY_HASH.matches(&hash);
        }
    }
    match (client, matched) {
        (Some(client), Some(secret_id))
            if client.enabled && client.auth_method == presented.method =>
        {
            Ok(secret_id)
        }
        _ => Err(OAuthError::invalid_client()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_urlencoded_first() {
        // The checklist C test vector (RFC 6749 §2.3.1).
        let header = b"Basic MVBwRyUyRlErMTp6JTJGdFo5VndGWnFBcG1JUSUyQlpIMUk1cExrJTJGdUI0dWQlM0FYMiUyRjhiTCUyQndmRlR0MXJGdyUzRA==";
        assert_eq!(
            parse_basic(header),
            Some((
                "1PpG/Q 1".into(),
                "z/tZ9VwFZqApmIQ+ZH1I5pLk/uB4ud:X2/8bL+wfFTt1rFw=".into()
            ))
        );
        for bad in [
            &b"Basic"[..],
            b"Basic !!!",
            b"Basic Zm9v",
            b"Basic OnNlY3JldA==",
            b"Bearer abc",
            b"Basic \xff",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }
}
