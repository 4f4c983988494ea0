//! `POST /oauth2/token` (RFC 6749 §3.2, §4.4): transport checks and a strict parse
//! (`endpoint::receive`), the use case (`service::issue_token`), and the response.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use latchkey_proto::{TokenResponse, TokenType};

use crate::error::OAuthError;
use crate::http::AppState;
use crate::http::access_log::{ClientTag, Outcome};
use crate::http::endpoint::receive;
use crate::service::{current_nonce, issue_token};

/// The token endpoint handler.
pub async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    respond(&state, request, false).await
}

/// The token endpoint on an admin listener of its own (`--admin-listen`): admin tokens only,
/// asked for with `resource=urn:latchkey:admin`, so the operators' port issues nothing else.
pub async fn admin_token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    respond(&state, request, true).await
}

async fn respond(state: &AppState, request: Request, admin_only: bool) -> Response {
    let mut log_as = None;
    let issued = match receive(request, &state.trusted_proxies).await {
        Ok(request) if admin_only && request.params.resources != [crate::model::ADMIN_AUDIENCE] => {
            Err(OAuthError::invalid_target(
                "this listener issues admin tokens only: ask with resource=urn:latchkey:admin",
            ))
        }
        Ok(request) => {
            // A DPoP proof names the endpoint it was sent to (RFC 9449 §4.3): on the admin
            // listener, that listener's.
            let endpoint = match &state.admin_token_endpoint {
                Some(endpoint) if admin_only => endpoint,
                _ => &state.services.token_endpoint,
            };
            issue_token(&state.services, &request, endpoint, &mut log_as).await
        }
        Err(err) => Err(err),
    };
    let response = match issued {
        Ok(token) => {
            let mut response = issued_response(&token);
            // RFC 9449 §8.2: a fresh nonce with every DPoP token, so the client's next proof
            // has one before the current one expires.
            if let Some(nonce) = current_nonce(&state.services, &token)
                && let Ok(nonce) = http::HeaderValue::try_from(nonce)
            {
                response.headers_mut().insert("dpop-nonce", nonce);
            }
            response
        }
        Err(err) => err.into_response(),
    };
    super::access_log::tag_client(response, log_as.map(ClientTag))
}

/// RFC 6749 §5.1: 200 with `Cache-Control: no-store` and `Pragma: no-cache`.
fn issued_response(token: &TokenResponse) -> Response {
    match render(token) {
        Ok(json) => {
            let mut response = super::no_store_json(StatusCode::OK, json);
            response.extensions_mut().insert(Outcome("issued"));
            response
        }
        Err(_) => OAuthError::temporarily_unavailable().into_response(),
    }
}

/// The response body, byte for byte as `serde_json::to_vec(token)` writes it.
///
/// serde_json looks at each byte of a string for characters to escape and grows its buffer
/// as it goes; the access token is most of the body, and a JWT (base64url and dots), an
/// opaque token and a scope (RFC 6749 §3.3) never need escaping. So a string that needs none
/// is copied as it is into a buffer of the right size, and anything else is left to
/// serde_json (issue 15, item 7; tests below compare the two).
fn render(token: &TokenResponse) -> serde_json::Result<Vec<u8>> {
    use std::io::Write as _;
    let scope = token.scope.as_deref();
    if !(needs_no_escape(&token.access_token) && scope.is_none_or(needs_no_escape)) {
        return serde_json::to_vec(token);
    }
    let token_type = match token.token_type {
        TokenType::Bearer => "Bearer",
        TokenType::DPoP => "DPoP",
    };
    let mut json = Vec::with_capacity(token.access_token.len() + scope.map_or(0, str::len) + 96);
    json.extend_from_slice(br#"{"access_token":""#);
    json.extend_from_slice(token.access_token.as_bytes());
    json.extend_from_slice(br#"","token_type":""#);
    json.extend_from_slice(token_type.as_bytes());
    json.push(b'"');
    if let Some(expires_in) = token.expires_in {
        json.extend_from_slice(br#","expires_in":"#);
        // Writing to a Vec cannot fail.
        let _ = write!(json, "{expires_in}");
    }
    if let Some(scope) = scope {
        json.extend_from_slice(br#","scope":""#);
        json.extend_from_slice(scope.as_bytes());
        json.push(b'"');
    }
    json.push(b'}');
    Ok(json)
}

/// Whether serde_json writes `text` unchanged inside quotes: no `"`, no `\\`, no control
/// character below U+0020 (JSON escapes nothing else). Looks at 16 bytes at a time without
/// branching, which the compiler turns into vector instructions.
fn needs_no_escape(text: &str) -> bool {
    let escaped = |b: u8| u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\');
    let chunks = text.as_bytes().chunks_exact(16);
    let rest = chunks.remainder();
    chunks
        .into_iter()
        .all(|chunk| chunk.iter().fold(0, |any, &b| any | escaped(b)) == 0)
        && rest.iter().all(|&b| escaped(b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_body_is_what_serde_json_writes() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";
        let tokens = [
            jwt,
            "lkat_abc-DEF_123",
            "",
            "a\"b",
            "back\\slash",
            "tab\there",
            "é ü ∑ 🦀",
        ];
        let scopes = [
            None,
            Some("read"),
            Some("read write:all"),
            Some(""),
            Some("a\"b"),
        ];
        for access_token in tokens {
            for scope in scopes {
                for token_type in [TokenType::Bearer, TokenType::DPoP] {
                    for expires_in in [None, Some(0), Some(900), Some(u64::MAX)] {
                        let token = TokenResponse {
                            access_token: access_token.to_owned(),
                            token_type,
                            expires_in,
                            scope: scope.map(str::to_owned),
                        };
                        assert_eq!(
                            String::from_utf8(render(&token).unwrap()).unwrap(),
                            serde_json::to_string(&token).unwrap(),
                            "{token:?} {access_token:?}"
                        );
                    }
                }
            }
        }
        let long = "x".repeat(1000) + "\u{1}" + &"y".repeat(17);
        assert!(!needs_no_escape(&long));
        assert!(needs_no_escape(&"x".repeat(1000)));
        for at in 0..40 {
            let mut text = "z".repeat(40);
            text.replace_range(at..=at, "\"");
            assert!(!needs_no_escape(&text), "{at}");
        }
    }
}
