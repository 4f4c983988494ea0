//! `POST /oauth2/token` (RFC 6749 §3.2, §4.4): a pipeline of small named steps —
//! transport checks and strict parse → grant type → authenticate → policy → issue → respond.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use latchkey_jose::dpop::{PROOF_MAX_AGE_SECONDS, ProofCheck, VerifiedProof, verify_proof};
use latchkey_proto::{Confirmation, GrantType, TokenFormat, TokenResponse, TokenType};

use crate::app::AppState;
use crate::error::OAuthError;
use crate::http::access_log::{ClientTag, Outcome};
use crate::http::endpoint::{authenticate_client, receive};
use crate::model::OpaqueTokenRecord;
use crate::protocol::client_credentials::{access_token_claims, decide};
use crate::protocol::mutual_tls::certificate_thumbprint;
use crate::secret::{new_jti, new_opaque_token};

/// The token endpoint handler.
pub async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut client_tag = None;
    let response = match issue(&state, request, &mut client_tag).await {
        Ok(token) => {
            let mut response = issued(&token);
            // RFC 9449 §8.2: a fresh nonce with every DPoP token, so the client's next proof
            // has one before the current one expires.
            if state.dpop_nonce
                && token.token_type == TokenType::DPoP
                && let Ok(nonce) = http::HeaderValue::try_from(current_nonce(&state))
            {
                response.headers_mut().insert("dpop-nonce", nonce);
            }
            response
        }
        Err(err) => err.into_response(),
    };
    super::access_log::tag_client(response, client_tag)
}

/// The DPoP nonce of this moment (RFC 9449 §8), made with the current signing key.
fn current_nonce(state: &AppState) -> String {
    state
        .cache
        .key_ring()
        .signing_key()
        .nonce_key()
        .issue(state.clock.unix_seconds())
}

async fn issue(
    state: &AppState,
    request: Request,
    client_tag: &mut Option<ClientTag>,
) -> Result<TokenResponse, OAuthError> {
    let received = receive(request).await?;
    check_grant_type(received.params.grant_type.as_deref())?;
    // The DPoP proof and its nonce are checked before the client authenticates: a client told
    // to use a nonce sends the same request again, and its assertion must not be used up yet.
    let proof = match &received.dpop {
        Some(proof) => Some(check_dpop_proof(state, proof)?),
        None => None,
    };
    let client = authenticate_client(state, &received, client_tag).await?;
    let client = &client.record;
    let dpop_jkt = match proof {
        Some(proof) => Some(use_dpop_proof(state, proof).await?),
        None => None,
    };
    // RFC 8705 §3: a client that authenticated with its certificate gets tokens bound to it.
    let certificate_x5t = client
        .auth_method()
        .is_mutual_tls()
        .then(|| received.certificate().map(certificate_thumbprint))
        .flatten();
    // Read after the lookup, so `iat` is the moment of issue even if the lookup waited.
    let now = state.clock.unix_seconds();
    let params = &received.params;
    let grant = decide(client, params.scope.as_deref(), &params.resources)?;
    let mut claims = access_token_claims(&state.issuer, client, &grant, now, new_jti());
    // RFC 9449 §6.1, RFC 8705 §3.1: a bound token names its key or certificate.
    if dpop_jkt.is_some() || certificate_x5t.is_some() {
        claims.cnf = Some(Confirmation {
            jkt: dpop_jkt,
            x5t_s256: certificate_x5t,
        });
    }
    // RFC 9449 §5: DPoP-bound tokens are of type DPoP; certificate-bound ones stay Bearer
    // (RFC 8705 §3).
    let token_type = if claims.cnf.as_ref().is_some_and(|c| c.jkt.is_some()) {
        TokenType::DPoP
    } else {
        TokenType::Bearer
    };
    let access_token = match client.token_format {
        TokenFormat::Jwt => state
            .cache
            .key_ring()
            .signing_key()
            .sign_jwt(&claims)
            .map_err(|err| {
                // No key, no token — never an unsigned or ephemeral one (docs/CONFORMANCE.md,
                // "Signing keys and rotation").
                tracing::error!(error = %err, "signing failed");
                OAuthError::temporarily_unavailable()
            })?,
        TokenFormat::Opaque => {
            // ≥ 256 random bits, and only the hash is stored (RFC 6819 §4.3.2;
            // docs/CONFORMANCE.md, "Opaque tokens").
            let (token, token_hash) = new_opaque_token();
            let record = OpaqueTokenRecord {
                token_hash,
                jti: claims.jti.clone(),
                client_id: claims.client_id.clone(),
                scope: grant.scope.clone(),
                audience: grant.audience.clone(),
                issued_at: claims.iat,
                expires_at: claims.exp,
                epoch: claims.epoch,
                cnf: claims.cnf.clone(),
            };
            state.store.insert_opaque_token(&record).await?;
            token
        }
    };
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in: Some(u64::try_from(grant.ttl_seconds).unwrap_or(0)),
        scope: claims.scope,
    })
}

/// RFC 9449 §4.3 and §8: checks the request's DPoP proof, and its nonce when the server
/// requires one. Nothing is recorded yet.
fn check_dpop_proof(
    state: &AppState,
    proof: &http::HeaderValue,
) -> Result<VerifiedProof, OAuthError> {
    let proof = proof
        .to_str()
        .map_err(|_| OAuthError::invalid_dpop_proof("the DPoP header is not a JWT"))?;
    let now = state.clock.unix_seconds();
    let check = ProofCheck {
        method: "POST",
        url: &state.token_endpoint,
        now,
        access_token: None,
        nonce: None,
        max_age_seconds: PROOF_MAX_AGE_SECONDS,
    };
    let verified = verify_proof(proof, &check)
        .map_err(|err| OAuthError::invalid_dpop_proof(err.to_string()))?;
    // §8, §4.3 item 10: with nonces required, the proof must carry one this server (or a
    // replica with the same signing key) made lately; else the client gets a fresh one.
    if state.dpop_nonce {
        let key_ring = state.cache.key_ring();
        let nonce_key = key_ring.signing_key().nonce_key();
        if !verified
            .nonce
            .as_deref()
            .is_some_and(|nonce| nonce_key.accepts(nonce, now))
        {
            return Err(OAuthError::use_dpop_nonce(nonce_key.issue(now)));
        }
    }
    Ok(verified)
}

/// RFC 9449 §11.1: records a checked proof's `jti` and returns the thumbprint of its key, to
/// bind the token to.
async fn use_dpop_proof(state: &AppState, verified: VerifiedProof) -> Result<String, OAuthError> {
    let now = state.clock.unix_seconds();
    // §11.1: a proof is used once. Recorded like assertion ids, per key, until the proof is
    // too old to be accepted anyway.
    let first_use = state
        .store
        .use_assertion_jti(
            &format!("dpop:{}", verified.jkt),
            &verified.jti,
            verified.remember_until,
            now,
        )
        .await?;
    if !first_use {
        return Err(OAuthError::invalid_dpop_proof(
            "the DPoP proof was used before",
        ));
    }
    Ok(verified.jkt)
}

/// RFC 6749 §4.4.2: `grant_type` is required and compared exactly (case-sensitive).
fn check_grant_type(grant_type: Option<&str>) -> Result<(), OAuthError> {
    match grant_type {
        None => Err(OAuthError::invalid_request("grant_type is required")),
        Some(g) if g == GrantType::ClientCredentials.as_str() => Ok(()),
        Some(_) => Err(OAuthError::unsupported_grant_type()),
    }
}

/// RFC 6749 §5.1: 200 with `Cache-Control: no-store` and `Pragma: no-cache`.
fn issued(token: &TokenResponse) -> Response {
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
