//! Client authentication (RFC 6749 §2.3): which credentials a request presents — a shared
//! secret (§2.3.1) or a `private_key_jwt` assertion (RFC 7523 §2.2) — and whether they match
//! the stored client.

use base64::Engine as _;
use base64::engine::general_purpose::GeneralPurpose;
use base64::engine::{DecodePaddingMode, GeneralPurposeConfig};
use latchkey_jose::VerifyingKey;
use latchkey_proto::ClientAuthMethod;

use crate::error::OAuthError;
use crate::form::decode_component;
use crate::model::{ClientRecord, Credential};
use crate::protocol::client_assertion::{
    ASSERTION_TYPE, AssertionPolicy, DEFAULT_FEDERATED_MAX_TOKEN_AGE, FederatedPolicy,
    VerifiedAssertion, unverified_kid, unverified_subject, verify_assertion,
    verify_federated_assertion,
};
use crate::protocol::mutual_tls::subject_matches;
use crate::protocol::request::RequestParams;
use crate::secret::SecretHash;

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

/// A client assertion (RFC 7521 §4.2) and the client it claims to come from.
pub struct PresentedAssertion {
    /// The body's `client_id`, or else the assertion's (still unverified) `sub`: only used to
    /// find the client whose keys must verify it.
    pub client_id: String,
    assertion: String,
}

impl PresentedAssertion {
    /// The (unverified) `kid` of the assertion's header, to choose a key to fetch.
    pub fn kid(&self) -> Option<String> {
        unverified_kid(&self.assertion)
    }
}

impl std::fmt::Debug for PresentedAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedAssertion")
            .field("client_id", &self.client_id)
            .field("assertion", &"<redacted>")
            .finish()
    }
}

/// The credentials of one request: a secret, an assertion, or a `client_id` alone.
#[derive(Debug)]
pub enum Presented {
    /// `client_secret_basic` or `client_secret_post`.
    Secret(PresentedSecret),
    /// `private_key_jwt`.
    Assertion(PresentedAssertion),
    /// A `client_id` and nothing else: only mutual TLS can authenticate it, with the
    /// connection's certificate (RFC 8705 §2: "the client_id parameter [...] MUST be
    /// included").
    ClientId(String),
}

impl Presented {
    /// The client the request claims to come from.
    pub fn client_id(&self) -> &str {
        match self {
            Presented::Secret(s) => &s.client_id,
            Presented::Assertion(a) => &a.client_id,
            Presented::ClientId(client_id) => client_id,
        }
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
) -> Result<Presented, OAuthError> {
    if let Some(header) = authorization {
        if request.client_secret.is_some() || request.has_assertion() {
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
        return Ok(Presented::Secret(PresentedSecret {
            client_id,
            secret,
            method: ClientAuthMethod::ClientSecretBasic,
        }));
    }
    if request.has_assertion() {
        if request.client_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "the client used more than one authentication method",
            ));
        }
        return presented_assertion(request).map(Presented::Assertion);
    }
    match (&request.client_id, &request.client_secret) {
        (Some(client_id), Some(secret)) => Ok(Presented::Secret(PresentedSecret {
            client_id: client_id.clone(),
            secret: secret.clone(),
            method: ClientAuthMethod::ClientSecretPost,
        })),
        // A client_id alone: mutual TLS, or nothing (then invalid_client, RFC 6749 §4.4.2).
        (Some(client_id), None) => Ok(Presented::ClientId(client_id.clone())),
        // No credentials: a confidential client must authenticate (RFC 6749 §4.4.2).
        _ => Err(OAuthError::invalid_client()),
    }
}

/// A client certificate presented on the connection: the leaf (DER), and whether its chain
/// leads to a `--client-ca` root (checked lazily: only `tls_client_auth` asks).
pub struct PresentedCertificate<'a, F: FnOnce() -> bool> {
    /// The certificate (DER) whose private key the TLS handshake proved the peer holds.
    pub leaf: &'a [u8],
    /// Checks the chain against the configured CA roots; `false` without roots.
    pub chain_is_trusted: F,
}

/// RFC 8705 §2: decides whether the connection's certificate (`None` when the request came
/// without one) authenticates as `client`, registered for `tls_client_auth` with the subject
/// its CA-issued certificate carries (§2.1), or for `self_signed_tls_client_auth` with its
/// own certificates `registered` (§2.2). Every failure is `invalid_client`; the reason goes
/// to the operator's log only.
pub fn authenticate_certificate<F: FnOnce() -> bool>(
    client: Option<&ClientRecord>,
    registered: &[Vec<u8>],
    certificate: Option<PresentedCertificate<'_, F>>,
) -> Result<(), OAuthError> {
    let client = client
        .filter(|c| c.enabled && c.auth_method().is_mutual_tls())
        .ok_or_else(OAuthError::invalid_client)?;
    let refuse = |reason: &str| {
        tracing::info!(client_id = %client.client_id, reason, "client certificate refused");
        OAuthError::invalid_client()
    };
    let Some(certificate) = certificate else {
        return Err(refuse("the request came without a client certificate"));
    };
    match &client.credential {
        Credential::TlsSubject(subject) => {
            if !(certificate.chain_is_trusted)() {
                return Err(refuse(
                    "the certificate is not issued by a trusted client CA",
                ));
            }
            if !subject_matches(subject, certificate.leaf) {
                return Err(refuse(
                    "the certificate does not carry the registered subject",
                ));
            }
            Ok(())
        }
        _ => {
            if registered.iter().any(|c| c.as_slice() == certificate.leaf) {
                Ok(())
            } else {
                Err(refuse("the certificate is not one the client registered"))
            }
        }
    }
}

/// RFC 7521 §4.2: `client_assertion` and `client_assertion_type` go together; RFC 7523 §2.2
/// fixes the type. `client_id` is optional (RFC 7521 §4.2); without it the assertion's `sub`
/// names the client, and verification then checks that the client's own keys signed it.
fn presented_assertion(request: &RequestParams) -> Result<PresentedAssertion, OAuthError> {
    let (Some(assertion), Some(assertion_type)) =
        (&request.client_assertion, &request.client_assertion_type)
    else {
        return Err(OAuthError::invalid_request(
            "client_assertion and client_assertion_type must be sent together",
        ));
    };
    if assertion_type != ASSERTION_TYPE {
        return Err(OAuthError::invalid_client());
    }
    let client_id = match &request.client_id {
        Some(client_id) => client_id.clone(),
        None => unverified_subject(assertion).ok_or_else(OAuthError::invalid_client)?,
    };
    Ok(PresentedAssertion {
        client_id,
        assertion: assertion.clone(),
    })
}

/// Decides whether `presented` authenticates as `client` (`None` when no such client exists),
/// a client registered for `private_key_jwt` whose registered keys are `keys`. On success
/// returns the assertion's id and expiry, for the caller's single-use check (RFC 7523 §3
/// item 7), which must pass too.
pub fn authenticate_assertion<K: std::borrow::Borrow<VerifyingKey>>(
    presented: &PresentedAssertion,
    client: Option<&ClientRecord>,
    keys: &[K],
    policy: &AssertionPolicy<'_>,
    now: i64,
) -> Result<VerifiedAssertion, OAuthError> {
    let client = client
        .filter(|c| c.enabled && c.auth_method() == ClientAuthMethod::PrivateKeyJwt)
        .ok_or_else(OAuthError::invalid_client)?;
    verify_assertion(&presented.assertion, &client.client_id, keys, policy, now).map_err(|err| {
        // RFC 7521 §4.2.1: every invalid assertion is invalid_client; the reason is for the
        // operator's log only.
        tracing::info!(client_id = %client.client_id, reason = %err, "client assertion refused");
        OAuthError::invalid_client()
    })
}

/// Decides whether `presented`, a workload identity token, authenticates as `client`, a
/// client registered for federated identity, given its trusted issuer's `keys` and the
/// audience its tokens must carry (`audience`, this server's issuer by default).
pub fn authenticate_federated<K: std::borrow::Borrow<VerifyingKey>>(
    presented: &PresentedAssertion,
    client: Option<&ClientRecord>,
    keys: &[K],
    default_audience: &str,
    now: i64,
) -> Result<(), OAuthError> {
    let (client, federation) = client
        .filter(|c| c.enabled)
        .and_then(|c| match &c.credential {
            Credential::Federation(federation) => Some((c, federation)),
            _ => None,
        })
        .ok_or_else(OAuthError::invalid_client)?;
    let policy = FederatedPolicy {
        issuer: &federation.issuer,
        subject: &federation.subject,
        audience: federation.audience.as_deref().unwrap_or(default_audience),
        max_token_age: federation
            .max_token_age
            .unwrap_or(DEFAULT_FEDERATED_MAX_TOKEN_AGE),
    };
    verify_federated_assertion(&presented.assertion, keys, &policy, now).map_err(|err| {
        tracing::info!(client_id = %client.client_id, reason = %err, "workload identity token refused");
        OAuthError::invalid_client()
    })
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
            if client.enabled && client.auth_method() == presented.method =>
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
        // A test vector for RFC 6749 §2.3.1: id and secret form-urlencoded, then base64.
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
