//! RFC 6750 §3 error responses: the one place a guard decision becomes an HTTP (or gRPC)
//! response.

use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::verify::Invalid;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// RFC 6750 §3.1: no token was sent, so the challenge carries no error code.
    #[error("no access token")]
    MissingToken,
    /// RFC 6750 §3.1 `invalid_request`: several tokens, several `Authorization` headers, a
    /// token in the query string, a malformed header.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// RFC 6750 §3.1 `invalid_token`: expired, revoked, malformed, not for this resource...
    #[error("invalid token: {0}")]
    InvalidToken(Invalid),
    /// RFC 6750 §3.1 `insufficient_scope`, naming the scope needed.
    #[error("insufficient scope: {0} is required")]
    InsufficientScope(String),
    /// The guard cannot decide now: it has no keys to verify with (the JWKS could never be
    /// fetched), the introspection endpoint gave no clear answer, too many introspections are
    /// in flight and waiting already, or the DPoP replay cache is full. The token may be fine,
    /// but it is not accepted unverified: 503 with `Retry-After` (gRPC `UNAVAILABLE`).
    #[error("token verification is unavailable")]
    Unavailable,
    /// RFC 9449 §7.1: a token sent with the DPoP scheme is not valid (the challenge uses the
    /// DPoP scheme).
    #[error("invalid DPoP token: {0}")]
    InvalidDpopToken(Invalid),
    /// RFC 9449 §7.1 `invalid_dpop_proof`: the proof is missing, doubled, invalid, replayed,
    /// or made with another key than the token's.
    #[error("invalid DPoP proof: {0}")]
    InvalidDpopProof(String),
}

/// The algorithms DPoP proofs may use here (RFC 9449 §7.1 `algs`).
const DPOP_ALGS: &str = "ES256 EdDSA RS256";

impl Rejection {
    /// The HTTP status (RFC 6750 §3.1).
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::MissingToken
            | Rejection::InvalidToken(_)
            | Rejection::InvalidDpopToken(_)
            | Rejection::InvalidDpopProof(_) => StatusCode::UNAUTHORIZED,
            Rejection::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3).
    pub fn challenge(&self, realm: &str) -> String {
        let realm = quote(realm);
        match self {
            Rejection::MissingToken | Rejection::Unavailable => format!("Bearer realm={realm}"),
            Rejection::InvalidRequest(why) => format!(
                "Bearer realm={realm}, error=\"invalid_request\", error_description={}",
                quote(why)
            ),
            Rejection::InvalidToken(why) => format!(
                "Bearer realm={realm}, error=\"invalid_token\", error_description={}",
                quote(&why.to_string())
            ),
            Rejection::InsufficientScope(scope) => format!(
                "Bearer realm={realm}, error=\"insufficient_scope\", scope={}",
                quote(scope)
            ),
            Rejection::InvalidDpopToken(why) => format!(
                "DPoP realm={realm}, error=\"invalid_token\", error_description={}, algs=\"{DPOP_ALGS}\"",
                quote(&why.to_string())
            ),
            Rejection::InvalidDpopProof(why) => format!(
                "DPoP realm={realm}, error=\"invalid_dpop_proof\", error_description={}, algs=\"{DPOP_ALGS}\"",
                quote(why)
            ),
        }
    }

    /// The response, with an empty body. For a gRPC request (`content-type:
    /// application/grpc...`) it is a trailers-only gRPC error (HTTP 200 with `grpc-status`),
    /// which is what gRPC clients understand; the challenge is sent either way.
    pub fn into_response<B: Default>(self, realm: &str, grpc: bool) -> Response<B> {
        let mut response = Response::new(B::default());
        if !grpc {
            *response.status_mut() = self.status();
        }
        let headers = response.headers_mut();
        if let Ok(challenge) = HeaderValue::try_from(self.challenge(realm)) {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if self == Rejection::MissingToken {
            // RFC 9449 §7.1: say that DPoP is accepted too, and with which algorithms.
            if let Ok(dpop) =
                HeaderValue::try_from(format!("DPoP realm={}, algs=\"{DPOP_ALGS}\"", quote(realm)))
            {
                headers.append(WWW_AUTHENTICATE, dpop);
            }
        }
        if grpc {
            // gRPC status codes: UNAUTHENTICATED 16, PERMISSION_DENIED 7, INVALID_ARGUMENT 3,
            // UNAVAILABLE 14.
            let code = match self {
                Rejection::MissingToken
                | Rejection::InvalidToken(_)
                | Rejection::InvalidDpopToken(_)
                | Rejection::InvalidDpopProof(_) => "16",
                Rejection::InsufficientScope(_) => "7",
                Rejection::InvalidRequest(_) => "3",
                Rejection::Unavailable => "14",
            };
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from_static(code));
            if let Ok(message) = HeaderValue::try_from(percent_encode(&self.to_string())) {
                headers.insert("grpc-message", message);
            }
        } else if self == Rejection::Unavailable {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// An RFC 9110 quoted-string; descriptions are our own ASCII text.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// gRPC's `grpc-message` is percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc6750() {
        assert_eq!(
            Rejection::MissingToken.challenge("api"),
            r#"Bearer realm="api""#
        );
        assert_eq!(
            Rejection::InsufficientScope("a b".into()).challenge("api"),
            r#"Bearer realm="api", error="insufficient_scope", scope="a b""#
        );
        assert_eq!(
            Rejection::InvalidToken(Invalid::Expired).challenge("a\"b"),
            r#"Bearer realm="a\"b", error="invalid_token", error_description="the token has expired""#
        );
    }
}
