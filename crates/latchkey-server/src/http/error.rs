//! The only place an [`OAuthError`] becomes an HTTP response (RFC 6749 §5.2).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use latchkey_proto::{ErrorCode, ErrorResponse};

use crate::error::OAuthError;

/// The realm of the `WWW-Authenticate` challenge on 401.
const BASIC_CHALLENGE: HeaderValue = HeaderValue::from_static("Basic realm=\"latchkey\"");
/// The challenge of a 401 `invalid_token` (RFC 6750 §3).
const BEARER_INVALID_TOKEN: HeaderValue =
    HeaderValue::from_static("Bearer realm=\"latchkey\", error=\"invalid_token\"");

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: self.code,
            // Descriptions of 5xx errors are fixed text; the details stay in the server log.
            error_description: Some(printable(self.description).into_owned()),
            error_uri: None,
        };
        let json =
            serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"error":"server_error"}"#.to_vec());
        let mut response = super::no_store_json(self.status, json);
        let headers = response.headers_mut();
        match self.status {
            // RFC 6749 §5.2 asks for the challenge when the client used the Authorization header;
            // RFC 9110 §15.5.2 asks for one on every 401, so every 401 carries it.
            // A bearer token (at the registration endpoint) is challenged as RFC 6750 §3 says.
            StatusCode::UNAUTHORIZED if self.code == ErrorCode::InvalidToken => {
                headers.insert(header::WWW_AUTHENTICATE, BEARER_INVALID_TOKEN);
            }
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, BASIC_CHALLENGE);
            }
            // RFC 9110 §15.5.6: a 405 lists the allowed methods. Every OAuth endpoint is POST.
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        if let Some(nonce) = self.dpop_nonce.and_then(|n| HeaderValue::try_from(n).ok()) {
            headers.insert("dpop-nonce", nonce);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(limits) = self.rate_limit {
            let (policy, state) = *limits;
            if let (Ok(policy), Ok(state)) =
                (HeaderValue::try_from(policy), HeaderValue::try_from(state))
            {
                headers.insert("ratelimit-policy", policy);
                headers.insert("ratelimit", state);
            }
        }
        // The access log reads the outcome from here.
        response
            .extensions_mut()
            .insert(super::access_log::Outcome(self.code.as_str()));
        response
    }
}

/// `error_description` in the characters RFC 6749 §5.2 allows (%x20-21 / %x23-5B / %x5D-7E):
/// a description that repeats a client's input (a metadata value) has `"` as `'`, a backslash
/// as `/`, and anything else outside that set as `?`. Fixed descriptions pass unchanged, unallocated.
fn printable(description: std::borrow::Cow<'static, str>) -> std::borrow::Cow<'static, str> {
    let allowed = |c: char| matches!(c, ' '..='!' | '#'..='[' | ']'..='~');
    if description.chars().all(allowed) {
        return description;
    }
    description
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if allowed(c) => c,
            _ => '?',
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn descriptions_keep_to_the_characters_rfc_6749_allows() {
        assert_eq!(printable("plain text, fine".into()), "plain text, fine");
        assert_eq!(
            printable("scope \"a\\b\"\tnot \u{e9}\u{202e}".into()),
            "scope 'a/b'?not ??"
        );
    }
}
