//! One client-credentials token request (RFC 6749 §4.4.2) and how its response is read
//! (§5.1, §5.2).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use latchkey_common::body::{BodyError, read_capped};
use latchkey_common::retry::{retry_after, retryable};
use latchkey_jose::PrivateKey;
use latchkey_proto::{ClientAuthMethod, ErrorCode, ErrorResponse, TokenResponse, params};
use url::Url;
use url::form_urlencoded::{Serializer, byte_serialize};

use crate::error::{Error, Rejection};
use crate::retry::Attempt;
use crate::secret::ClientSecret;

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The largest token endpoint response body read (a token response is a few KiB at most).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How the client proves who it is.
#[derive(Clone)]
pub(crate) enum Credential {
    /// A shared secret, sent as `method` says (`client_secret_basic` or `_post`).
    Secret(ClientSecret, ClientAuthMethod),
    /// `private_key_jwt` (RFC 7523 §2.2): a fresh assertion signed with `key` for each
    /// request, addressed to `audience` (the issuer, draft-ietf-oauth-rfc7523bis §5).
    PrivateKey {
        key: Arc<PrivateKey>,
        audience: String,
    },
    /// Mutual TLS (RFC 8705 §2): the HTTP client presents the certificate, the request names
    /// the client alone. `method` is `tls_client_auth` or `self_signed_tls_client_auth`;
    /// `fingerprint` is the leaf certificate's SHA-256 thumbprint (tokens are bound to it).
    Certificate {
        method: ClientAuthMethod,
        fingerprint: String,
    },
}

impl Credential {
    pub(crate) fn method(&self) -> ClientAuthMethod {
        match self {
            Credential::Secret(_, method) => *method,
            Credential::PrivateKey { .. } => ClientAuthMethod::PrivateKeyJwt,
            Credential::Certificate { method, .. } => *method,
        }
    }

    /// What identifies the credential in a cache key: the secret, or the key's thumbprint
    /// and id with the assertion audience.
    pub(crate) fn fingerprint(&self) -> String {
        match self {
            Credential::Secret(secret, _) => secret.expose().to_owned(),
            Credential::PrivateKey { key, audience } => {
                let thumbprint = latchkey_jose::thumbprint(key.public_jwk()).unwrap_or_default();
                format!("jwk {thumbprint} {} {audience}", key.kid())
            }
            Credential::Certificate { fingerprint, .. } => format!("x509 {fingerprint}"),
        }
    }
}

/// An assertion lives this long: long enough for one request and its retries to arrive,
/// short enough that a captured one is useless soon (the server allows at most 5 minutes).
const ASSERTION_LIFETIME_SECONDS: u64 = 60;

/// A token request, encoded once when the client is built and sent as often as needed.
pub(crate) struct TokenRequest {
    endpoint: Url,
    /// `Basic ...` for client_secret_basic, marked sensitive.
    authorization: Option<HeaderValue>,
    /// The form body; with client_secret_post it holds the secret, hence the wrapper. With
    /// private_key_jwt, the assertion is appended per request.
    body: ClientSecret,
    /// For private_key_jwt: the signing key, client id and audience.
    assertion: Option<(Arc<PrivateKey>, String, String)>,
    /// The DPoP key: each attempt carries a fresh proof (RFC 9449 §5).
    dpop: Option<Arc<PrivateKey>>,
    /// The last nonce the server sent in `DPoP-Nonce` (RFC 9449 §8), for the next proof.
    dpop_nonce: std::sync::Mutex<Option<String>>,
}

impl TokenRequest {
    pub(crate) fn new(
        endpoint: Url,
        credential: &Credential,
        client_id: &str,
        scope: &[String],
        audience: &[String],
        dpop: Option<Arc<PrivateKey>>,
    ) -> Result<Self, Error> {
        let mut form = Serializer::new(String::new());
        form.append_pair(params::GRANT_TYPE, "client_credentials");
        if !scope.is_empty() {
            // RFC 6749 §3.3: space-delimited scope tokens.
            form.append_pair(params::SCOPE, &scope.join(" "));
        }
        for resource in audience {
            // RFC 8707 §2: one `resource` parameter per audience.
            form.append_pair(params::RESOURCE, resource);
        }
        let mut assertion = None;
        let authorization = match credential {
            Credential::Secret(secret, ClientAuthMethod::ClientSecretPost) => {
                form.append_pair(params::CLIENT_ID, client_id);
                form.append_pair(params::CLIENT_SECRET, secret.expose());
                None
            }
            Credential::Secret(secret, _) => {
                // RFC 6749 §2.3.1: form-urlencode id and secret before joining and encoding;
                // many clients skip this and break on secrets with `:` or `%`.
                let pair = format!(
                    "{}:{}",
                    byte_serialize(client_id.as_bytes()).collect::<String>(),
                    byte_serialize(secret.expose().as_bytes()).collect::<String>()
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                    .map_err(|_| Error::Config("the client id cannot be sent".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            Credential::PrivateKey { key, audience } => {
                // RFC 7521 §4.2: client_id is optional next to an assertion; sent so the
                // server finds the client without reading the assertion first.
                form.append_pair(params::CLIENT_ID, client_id);
                form.append_pair(params::CLIENT_ASSERTION_TYPE, ASSERTION_TYPE);
                assertion = Some((Arc::clone(key), client_id.to_owned(), audience.clone()));
                None
            }
            Credential::Certificate { .. } => {
                // RFC 8705 §2: the certificate authenticates; client_id says who.
                form.append_pair(params::CLIENT_ID, client_id);
                None
            }
        };
        Ok(TokenRequest {
            endpoint,
            authorization,
            body: ClientSecret::new(form.finish()),
            assertion,
            dpop,
            dpop_nonce: std::sync::Mutex::new(None),
        })
    }

    /// The body of one attempt: with private_key_jwt, a new assertion each time, since the
    /// server accepts each `jti` once (RFC 7523 §3 item 7).
    fn body_at(&self, now: SystemTime) -> Result<String, Error> {
        let Some((key, client_id, audience)) = &self.assertion else {
            return Ok(self.body.expose().to_owned());
        };
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::Config("the clock is before 1970".into()))?
            .as_secs();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| Error::Config("no randomness".into()))?;
        // RFC 7523 §3: iss and sub are the client id, aud the issuer, exp required; typ
        // per draft-ietf-oauth-rfc7523bis §4.
        let header = serde_json::json!({
            "alg": key.alg().as_str(),
            "kid": key.kid(),
            "typ": "client-authentication+jwt",
        });
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECONDS,
            "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
        });
        let assertion = key
            .sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
            .map_err(|e| Error::Config(format!("cannot sign the client assertion: {e}")))?;
        let mut body = Serializer::for_suffix(self.body.expose().to_owned(), 0);
        body.append_pair(params::CLIENT_ASSERTION, &assertion);
        Ok(body.finish())
    }

    pub(crate) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Sends the request and classifies the answer. With DPoP, a server that wants a nonce
    /// answers `use_dpop_nonce` with one (RFC 9449 §8): the request goes again at once with
    /// it, as part of the same attempt.
    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        now: SystemTime,
    ) -> Attempt<TokenResponse> {
        let first = self.send_once(http, timeout, now).await;
        let wants_nonce = matches!(
            &first,
            Attempt::Fatal(Error::Rejected(Rejection {
                code: Some(ErrorCode::UseDpopNonce),
                ..
            }))
        );
        if self.dpop.is_some() && wants_nonce && self.nonce().is_some() {
            return self.send_once(http, timeout, now).await;
        }
        first
    }

    fn nonce(&self) -> Option<String> {
        self.dpop_nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sends the request once and classifies the answer.
    async fn send_once(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        now: SystemTime,
    ) -> Attempt<TokenResponse> {
        let mut request = http
            .post(self.endpoint.clone())
            .timeout(timeout)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(match self.body_at(now) {
                Ok(body) => body,
                Err(error) => return Attempt::Fatal(error),
            });
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if let Some(key) = &self.dpop {
            let iat = crate::clock::unix_seconds(now);
            match latchkey_jose::dpop::make_proof(
                key,
                "POST",
                self.endpoint.as_str(),
                iat,
                None,
                self.nonce().as_deref(),
            ) {
                Ok(proof) => request = request.header("DPoP", proof),
                Err(error) => {
                    return Attempt::Fatal(Error::Config(format!(
                        "cannot make a DPoP proof: {error}"
                    )));
                }
            }
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return network_failure(&error),
        };
        if response.url() != &self.endpoint {
            // Only an HTTP client given to the builder follows redirects; ours does not.
            return Attempt::Fatal(Error::Config(
                "the token endpoint redirected and the HTTP client followed: give the builder \
                 a client with redirects turned off, so credentials are never re-sent"
                    .into(),
            ));
        }
        let status = response.status();
        let headers = response.headers().clone();
        // RFC 9449 §8.2: the server may send a (new) nonce with any answer.
        if self.dpop.is_some()
            && let Some(nonce) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok())
            && !nonce.is_empty()
            && nonce.len() <= 1024
        {
            *self
                .dpop_nonce
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(nonce.to_owned());
        }
        match read_capped(response, MAX_RESPONSE_BYTES).await {
            Ok(body) => classify(status, &headers, &body, now),
            // A huge error page from an overloaded server is still worth a retry.
            Err(BodyError::TooLarge { .. }) if retryable(status) => {
                classify(status, &headers, b"", now)
            }
            Err(BodyError::TooLarge { .. }) => Attempt::Fatal(Error::InvalidResponse(format!(
                "HTTP {} with a body larger than {MAX_RESPONSE_BYTES} bytes",
                status.as_u16()
            ))),
            Err(BodyError::Network(error)) => network_failure(&error),
        }
    }
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

/// A request that never got an HTTP answer. Every such failure is retried: connection refused,
/// reset, timed out. The text comes from reqwest, which never prints the request body.
pub(crate) fn network_failure<T>(error: &reqwest::Error) -> Attempt<T> {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    Attempt::Retry {
        reason,
        retry_after: None,
    }
}

/// Server-sent text made safe to print: RFC 6749 §5.2 allows only %x20-21 / %x23-5B /
/// %x5D-7E in `error` and `error_description`, so anything else (control characters that
/// could forge log lines or drive a terminal) becomes `?`, and the length is capped.
pub(crate) fn printable(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    let allowed = |c: char| matches!(c, '\x20'..='\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E');
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .map(|c| if allowed(c) { c } else { '?' })
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// Reads a token endpoint answer: a token (RFC 6749 §5.1), a verdict not worth retrying
/// (§5.2), or a failure worth retrying (408, 429, 5xx: latchkey-common's `retryable`).
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Attempt<TokenResponse> {
    if status == StatusCode::OK {
        return match serde_json::from_slice::<TokenResponse>(body) {
            Ok(token) => Attempt::Done(token),
            Err(error) => Attempt::Fatal(Error::InvalidResponse(format!(
                "HTTP 200 without a valid RFC 6749 §5.1 token response: {error}"
            ))),
        };
    }
    let oauth_error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| Some((printable(value.get("error")?.as_str()?), value)));
    if retryable(status) {
        let reason = match &oauth_error {
            Some((error, _)) => format!("HTTP {} {error}", status.as_u16()),
            None => format!("HTTP {}", status.as_u16()),
        };
        return Attempt::Retry {
            reason,
            retry_after: retry_after(headers, now),
        };
    }
    match oauth_error {
        Some((error, value)) => {
            let parsed = serde_json::from_value::<ErrorResponse>(value.clone()).ok();
            let description = value
                .get("error_description")
                .and_then(|d| d.as_str())
                .map(printable);
            let code: Option<ErrorCode> = parsed.map(|p| p.error);
            Attempt::Fatal(Error::Rejected(Rejection {
                status: status.as_u16(),
                error,
                code,
                description,
            }))
        }
        None => Attempt::Fatal(Error::InvalidResponse(format!(
            "HTTP {} without an RFC 6749 §5.2 error body",
            status.as_u16()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn outcome(status: u16, headers: &[(&str, &str)], body: &str) -> Attempt<TokenResponse> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::try_from(*name).unwrap(),
                HeaderValue::try_from(*value).unwrap(),
            );
        }
        classify(
            StatusCode::from_u16(status).unwrap(),
            &map,
            body.as_bytes(),
            UNIX_EPOCH,
        )
    }

    #[test]
    fn responses_are_classified() {
        let ok = r#"{"access_token":"t","token_type":"bearer"}"#;
        assert!(matches!(outcome(200, &[], ok), Attempt::Done(t) if t.expires_in.is_none()));
        assert!(matches!(
            outcome(200, &[], "<html>"),
            Attempt::Fatal(Error::InvalidResponse(_))
        ));
        let rejected = outcome(401, &[], r#"{"error":"invalid_client"}"#);
        assert!(matches!(
            rejected,
            Attempt::Fatal(Error::Rejected(Rejection {
                status: 401,
                code: Some(ErrorCode::InvalidClient),
                ..
            }))
        ));
        // An error code another server made up is still a rejection, with the code as sent.
        let odd = outcome(
            400,
            &[],
            r#"{"error":"consent_required","error_description":"x"}"#,
        );
        assert!(matches!(
            odd,
            Attempt::Fatal(Error::Rejected(Rejection { code: None, .. }))
        ));
        assert!(matches!(
            outcome(404, &[], "not found"),
            Attempt::Fatal(Error::InvalidResponse(_))
        ));
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(
                outcome(status, &[], ""),
                Attempt::Retry {
                    retry_after: None,
                    ..
                }
            ));
        }
        assert!(matches!(
            outcome(503, &[("retry-after", "3")], r#"{"error":"temporarily_unavailable"}"#),
            Attempt::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }

    #[test]
    fn basic_credentials_are_form_urlencoded_first() {
        let request = TokenRequest::new(
            Url::parse("https://as.example/token").unwrap(),
            &Credential::Secret(
                ClientSecret::new("p%s s"),
                ClientAuthMethod::ClientSecretBasic,
            ),
            "id:1",
            &["a".into(), "b".into()],
            &["https://api.example/".into()],
            None,
        )
        .unwrap();
        let header = request.authorization.as_ref().unwrap().to_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"id%3A1:p%25s+s");
        assert_eq!(
            request.body.expose(),
            "grant_type=client_credentials&scope=a+b&resource=https%3A%2F%2Fapi.example%2F"
        );
        let debug = format!("{request:?}");
        assert!(
            !debug.contains("p%25s") && !debug.contains(header),
            "{debug}"
        );
    }

    #[test]
    fn server_text_is_made_printable() {
        assert_eq!(
            printable("bad\n\u{1b}[31mred \"q\" \\ é"),
            "bad??[31mred ?q? ? ?"
        );
        assert_eq!(printable(&"x".repeat(400)).len(), 303);
    }

    #[test]
    fn each_body_carries_a_new_typed_assertion_for_the_issuer() {
        let key = Arc::new(
            PrivateKey::generate(latchkey_proto::SigningAlg::Es256)
                .unwrap()
                .0,
        );
        let request = TokenRequest::new(
            Url::parse("https://as.example/oauth2/token").unwrap(),
            &Credential::PrivateKey {
                key: Arc::clone(&key),
                audience: "https://as.example".into(),
            },
            "c1",
            &["read".into()],
            &[],
            None,
        )
        .unwrap();
        assert!(request.authorization.is_none());
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let decode = |part: &str| -> serde_json::Value {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        };
        let mut jtis = Vec::new();
        for _ in 0..2 {
            let body = request.body_at(now).unwrap();
            let pairs: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
            assert_eq!(pairs["client_assertion_type"], ASSERTION_TYPE);
            assert_eq!(pairs["client_id"], "c1");
            assert_eq!(pairs["scope"], "read");
            let parts: Vec<&str> = pairs["client_assertion"].split('.').collect();
            let header = decode(parts[0]);
            assert_eq!(header["typ"], "client-authentication+jwt");
            assert_eq!(header["alg"], "ES256");
            assert_eq!(header["kid"], key.kid());
            let claims = decode(parts[1]);
            assert_eq!(claims["iss"], "c1");
            assert_eq!(claims["sub"], "c1");
            assert_eq!(claims["aud"], "https://as.example");
            assert_eq!(claims["iat"], 1_767_225_600);
            assert_eq!(claims["exp"], 1_767_225_660);
            jtis.push(claims["jti"].as_str().unwrap().to_owned());
        }
        assert_ne!(jtis[0], jtis[1]);
        assert!(!format!("{request:?}").contains("BEGIN"));
    }
}
