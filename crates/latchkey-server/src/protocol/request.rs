//! The parameters of a request to an OAuth endpoint (token, introspection, revocation), taken
//! strictly from decoded form pairs (RFC 6749 §3.2).

use latchkey_proto::params;

use crate::error::OAuthError;
use crate::form::{self, FormError};

/// The parameters latchkey reads. Unknown parameters are ignored (RFC 6749 §3.2); an empty
/// value counts as omitted.
#[derive(Default)]
pub struct RequestParams {
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `resource`, which RFC 8707 §2 allows to repeat.
    pub resources: Vec<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `client_secret`.
    pub client_secret: Option<String>,
    /// `client_assertion` (RFC 7521 §4.2): a credential, kept out of `Debug`.
    pub client_assertion: Option<String>,
    /// `client_assertion_type` (RFC 7521 §4.2).
    pub client_assertion_type: Option<String>,
    /// `token`: what to introspect or revoke.
    pub token: Option<String>,
    /// `token_type_hint`: read and ignored, since the token's shape tells its type
    /// (RFC 7662 §2.1, RFC 7009 §2.1 allow that).
    pub token_type_hint: Option<String>,
}

impl std::fmt::Debug for RequestParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestParams")
            .field("grant_type", &self.grant_type)
            .field("scope", &self.scope)
            .field("resources", &self.resources)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "client_assertion",
                &self.client_assertion.as_ref().map(|_| "<redacted>"),
            )
            .field("client_assertion_type", &self.client_assertion_type)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_type_hint", &self.token_type_hint)
            .finish()
    }
}

/// Requests with more parameters than this are refused before any further work, so a request
/// with thousands of parameters costs linear time (docs/CONFORMANCE.md, "Request limits and
/// transport").
pub const MAX_PARAMETERS: usize = 64;

impl RequestParams {
    /// Whether either assertion parameter was sent.
    pub fn has_assertion(&self) -> bool {
        self.client_assertion.is_some() || self.client_assertion_type.is_some()
    }

    /// Reads a request body as the OAuth endpoints do: strict
    /// `application/x-www-form-urlencoded` UTF-8 ([`form::parse`]) with at most
    /// [`MAX_PARAMETERS`] pairs, then [`RequestParams::from_pairs`]. Any failure is
    /// `invalid_request`. The body's size is the caller's to cap (`http/endpoint.rs`: 16 KiB).
    pub fn from_form(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs = form::parse(body, MAX_PARAMETERS).map_err(|err| match err {
            FormError::Malformed => OAuthError::invalid_request(
                "the body is not valid application/x-www-form-urlencoded UTF-8",
            ),
            FormError::TooManyParameters => OAuthError::invalid_request("too many parameters"),
        })?;
        Self::from_pairs(pairs)
    }

    /// Reads the pairs. RFC 6749 §3.2: "Request and response parameters MUST NOT be included
    /// more than once" — any repeat, even with the same value, is `invalid_request`, except
    /// `resource` (RFC 8707 §2).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        if pairs.len() > MAX_PARAMETERS {
            return Err(OAuthError::invalid_request("too many parameters"));
        }
        for (i, (name, _)) in pairs.iter().enumerate() {
            if name != params::RESOURCE && pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(OAuthError::invalid_request(match known_name(name) {
                    Some(known) => format!("parameter {known} is repeated"),
                    None => "a parameter is repeated".to_owned(),
                }));
            }
        }
        let mut request = RequestParams::default();
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                params::GRANT_TYPE => request.grant_type = Some(value),
                params::SCOPE => request.scope = Some(value),
                params::RESOURCE => request.resources.push(value),
                params::CLIENT_ID => request.client_id = Some(value),
                params::CLIENT_SECRET => request.client_secret = Some(value),
                params::CLIENT_ASSERTION => request.client_assertion = Some(value),
                params::CLIENT_ASSERTION_TYPE => request.client_assertion_type = Some(value),
                params::TOKEN => request.token = Some(value),
                params::TOKEN_TYPE_HINT => request.token_type_hint = Some(value),
                _ => {}
            }
        }
        Ok(request)
    }
}

fn known_name(name: &str) -> Option<&'static str> {
    [
        params::GRANT_TYPE,
        params::SCOPE,
        params::CLIENT_ID,
        params::CLIENT_SECRET,
        params::CLIENT_ASSERTION,
        params::CLIENT_ASSERTION_TYPE,
        params::TOKEN,
        params::TOKEN_TYPE_HINT,
    ]
    .into_iter()
    .find(|known| *known == name)
}
