//! Issuing an access token (RFC 6749 §4.4): the token endpoint's use case, top to bottom.

use latchkey_jose::dpop::{PROOF_MAX_AGE_SECONDS, ProofCheck, VerifiedProof, verify_proof};
use latchkey_proto::{TokenFormat, TokenResponse, TokenType};

use super::{ClientRequest, Services, authenticate_client};
use crate::cache::KnownClient;
use crate::error::OAuthError;
use crate::model::audit::action;
use crate::model::{Actor, AuditEntry, OpaqueTokenRecord, QuotaMode};
use crate::protocol::client_credentials::{
    access_token_claims, bind, check_grant_type, decide, expires_in,
};
use crate::reuse::{Reusable, ReuseKey};
use crate::secret::{new_jti, new_opaque_token};
use crate::usage::Event;

/// Issues a token for `request`, or says why not. `log_as` is set to the client id (or the
/// tag of an unknown one) once it is known, for the access log.
///
/// 1. the grant type; 2. the DPoP proof and its nonce, before the client authenticates (a
///    client told to use a nonce sends the same request again, and its assertion must not be
///    used up yet); 3. client authentication; 4. the proof is used once; 5. the grant and the
///    binding (pure decisions in `protocol::client_credentials`); 6. the token: a JWT signed
///    with the current key, or an opaque token stored by its hash. Each outcome is counted in
///    the client's usage (a token, or the refusal's error code).
///
/// `endpoint` is the token endpoint's URL as the client reached it, which a DPoP proof names.
pub async fn issue_token(
    services: &Services,
    request: &ClientRequest,
    endpoint: &str,
    log_as: &mut Option<String>,
) -> Result<TokenResponse, OAuthError> {
    check_grant_type(request.params.grant_type.as_deref())?;
    let proof = match &request.dpop {
        Some(proof) => Some(check_dpop_proof(services, proof, endpoint)?),
        None => None,
    };
    let known = authenticate_client(services, request, log_as).await?;
    let issued = issue_to(services, request, &known, proof).await;
    match &issued {
        // The lifetime of the client's tokens, not what is left of a reused one.
        Ok(_) => services.usage.count_token(
            &known.usage,
            request.source,
            u64::try_from(known.record.token_ttl_seconds).unwrap_or(0),
        ),
        Err(err) => services.usage.count(&known.usage, Event::Denied(err.code)),
    }
    issued
}

/// Steps 4 to 6 for an authenticated client: the proof used, the grant decided, the token made.
async fn issue_to(
    services: &Services,
    request: &ClientRequest,
    known: &KnownClient,
    proof: Option<VerifiedProof>,
) -> Result<TokenResponse, OAuthError> {
    let client = &known.record;
    let dpop_jkt = match proof {
        Some(proof) => Some(use_dpop_proof(services, proof).await?),
        None => None,
    };
    // Read after the lookup, so `iat` is the moment of issue even if the lookup waited.
    let now = services.clock.unix_seconds();
    let params = &request.params;
    let grant = decide(client, params.scope.as_deref(), &params.resources)?;
    let binding = bind(client, dpop_jkt, request.certificate());
    let key_ring = services.cache.key_ring();
    let signing_key = key_ring.signing_key();
    // --reuse-tokens: the last token for the same request while it has more than half its
    // lifetime left, signed by the current key and not revoked.
    let reuse =
        (client.reuse_tokens && client.token_format == TokenFormat::Jwt).then(|| ReuseKey {
            scope: grant.scope.clone(),
            audience: grant.audience.clone(),
            cnf: binding.cnf.clone(),
        });
    if let Some(key) = &reuse
        && let Some(kept) = known.reusable.find(key, now, signing_key.kid())
    {
        // The deny list itself, not this server's copy of it: a revocation on another server
        // reaches the copy only at the next poll.
        if !services.store.is_revoked(&kept.jti).await? {
            services.metrics.reused();
            return Ok(TokenResponse {
                access_token: kept.access_token,
                token_type: kept.token_type,
                expires_in: Some(u64::try_from(kept.expires_at - now).unwrap_or(0)),
                scope: kept.scope,
            });
        }
        known.reusable.forget(&kept.jti);
    }
    // A new token counts against the client's rate and quota (a reused one does not).
    if client.token_rate.is_some() || client.token_quota.is_some() {
        check_limits(services, known).await?;
    }
    let mut claims = access_token_claims(&services.issuer, client, &grant, now, new_jti());
    claims.cnf = binding.cnf;
    let access_token = match client.token_format {
        TokenFormat::Jwt => signing_key.sign_jwt(&claims).map_err(|err| {
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
            services.store.insert_opaque_token(&record).await?;
            token
        }
    };
    services
        .metrics
        .issued(signing_key.alg(), client.token_format);
    if let Some(key) = reuse {
        known.reusable.keep(Reusable {
            key,
            access_token: access_token.clone(),
            jti: claims.jti.clone(),
            kid: signing_key.kid().to_owned(),
            token_type: binding.token_type,
            scope: claims.scope.clone(),
            issued_at: claims.iat,
            expires_at: claims.exp,
        });
    }
    Ok(TokenResponse {
        access_token,
        token_type: binding.token_type,
        expires_in: Some(expires_in(&grant)),
        scope: claims.scope,
    })
}

/// The client's token rate and quota: past one, 429 in enforce mode; in monitor mode the
/// token is issued, and the overrun counted, and logged and audited at most once an hour.
async fn check_limits(services: &Services, known: &KnownClient) -> Result<(), OAuthError> {
    let client = &known.record;
    let now_ms = services
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let Some(passed) =
        crate::quota::take(services.store.as_ref(), &known.leases, client, now_ms).await?
    else {
        return Ok(());
    };
    services
        .metrics
        .quota_exceeded(passed.limit, client.quota_mode);
    if client.quota_mode == QuotaMode::Enforce {
        return Err(passed.refusal());
    }
    if crate::quota::first_report(&known.leases, now_ms) {
        tracing::warn!(
            client_id = %client.client_id,
            limit = passed.limit,
            policy = %passed.rate,
            "client {} passed its token {} of {} (monitor mode: tokens are still issued)",
            client.client_id,
            passed.limit,
            passed.rate,
        );
        let audit = AuditEntry {
            at: services.clock.unix_seconds(),
            actor: Actor::Server(services.cache.server_id().to_owned()),
            action: action::CLIENT_QUOTA_EXCEEDED,
            target: Some(client.client_id.clone()),
            changes: serde_json::json!({
                "limit": passed.limit,
                "policy": passed.rate.to_string(),
                "mode": client.quota_mode.as_str(),
            }),
        };
        if let Err(err) = services.store.record_event(&audit).await {
            tracing::warn!(error = %err, "the quota overrun could not be written to the audit trail");
        }
    }
    Ok(())
}

/// The DPoP nonce of this moment (RFC 9449 §8), made with the current signing key: sent with
/// every DPoP token when nonces are required, so the client's next proof has one.
pub fn current_nonce(services: &Services, token: &TokenResponse) -> Option<String> {
    (services.dpop_nonce && token.token_type == TokenType::DPoP).then(|| {
        services
            .cache
            .key_ring()
            .signing_key()
            .nonce_key()
            .issue(services.clock.unix_seconds())
    })
}

/// RFC 9449 §4.3 and §8: checks the request's DPoP proof, and its nonce when the server
/// requires one. Nothing is recorded yet.
fn check_dpop_proof(
    services: &Services,
    proof: &http::HeaderValue,
    endpoint: &str,
) -> Result<VerifiedProof, OAuthError> {
    let proof = proof
        .to_str()
        .map_err(|_| OAuthError::invalid_dpop_proof("the DPoP header is not a JWT"))?;
    let now = services.clock.unix_seconds();
    let check = ProofCheck {
        method: "POST",
        url: endpoint,
        now,
        access_token: None,
        nonce: None,
        max_age_seconds: PROOF_MAX_AGE_SECONDS,
    };
    let verified = verify_proof(proof, &check)
        .map_err(|err| OAuthError::invalid_dpop_proof(err.to_string()))?;
    // §8, §4.3 item 10: with nonces required, the proof must carry one this server (or a
    // replica with the same signing key) made lately; else the client gets a fresh one.
    if services.dpop_nonce {
        let key_ring = services.cache.key_ring();
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
async fn use_dpop_proof(
    services: &Services,
    verified: VerifiedProof,
) -> Result<String, OAuthError> {
    let now = services.clock.unix_seconds();
    // §11.1: a proof is used once. Recorded like assertion ids, per key, until the proof is
    // too old to be accepted anyway.
    let first_use = services
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
