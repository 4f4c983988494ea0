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
use crate::protocol::client_credentials::{access_token_claims, decide};
use crate::protocol::mutual_tls::certificate_thumbprint;
use crate::secret::{new_jti, new_opaque_token};
use crate::store::OpaqueTokenRecord;

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
        .auth_method
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
    match serde_json::to_vec(token) {
        Ok(json) => {
            let mut response = super::no_store_json(StatusCode::OK, json);
            response.extensions_mut().insert(Outcome("issued"));
            response
        }
        Err(_) => OAuthError::temporarily_unavailable().into_response(),
    }
}
