//! Client authentication (RFC 6749 §2.3, RFC 7523 §2.2, RFC 8705 §2) for every OAuth
//! endpoint: finds the claimed client, gathers what its credential needs (registered or
//! fetched keys, the client CA, the replay state of assertion ids) and lets
//! `protocol::client_auth` decide.

use std::sync::Arc;

use http::HeaderValue;
use latchkey_common::Jwks;
use latchkey_jose::VerifyingKey;
use latchkey_proto::ErrorCode;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::{ClientRequest, Services};
use crate::cache::KnownClient;
use crate::error::OAuthError;
use crate::protocol::client_assertion::AssertionPolicy;
use crate::protocol::client_auth::{
    Presented, PresentedAssertion, PresentedCertificate, authenticate, authenticate_assertion,
    authenticate_certificate, authenticate_federated, presented_credentials,
};
use crate::secret::{id_tag, unknown_id_tag};
use crate::usage::Event;

/// Authenticates the client (RFC 6749 §2.3, RFC 7523 §2.2) and returns it. Tags the response
/// with the claimed client id for the access log, and notes which secret was used.
pub async fn authenticate_client(
    services: &Services,
    request: &ClientRequest,
    log_as: &mut Option<String>,
) -> Result<Arc<KnownClient>, OAuthError> {
    let presented = presented_credentials(
        request.authorization.as_ref().map(HeaderValue::as_bytes),
        &request.params,
    )?;
    let claimed_id = presented.client_id();
    // Every attempt spends one from this address's limits (for this id, and for any) before
    // its credentials are looked at; past a limit the answer is 429 until it refills. An
    // attempt that does not fail as invalid_client is given back below.
    let now_ms = unix_millis(services.clock.as_ref());
    let attempt = match request.source {
        Some(source) => match services.throttle.admit(claimed_id, source, now_ms) {
            Ok(attempt) => Some(attempt),
            Err(wait) => {
                // Not looked up: logged by the tag of its id, known or not.
                *log_as = Some(id_tag("throttled:", claimed_id));
                services.metrics.throttled();
                return Err(OAuthError::throttled(wait));
            }
        },
        None => None,
    };
    let checked = check(services, request, &presented, claimed_id, log_as).await;
    let failed = matches!(&checked, Err(err) if err.code == ErrorCode::InvalidClient);
    if let Some(attempt) = attempt
        && !failed
    {
        services.throttle.succeeded(attempt);
    }
    checked
}

/// Looks up the claimed client and verifies what was presented.
async fn check(
    services: &Services,
    request: &ClientRequest,
    presented: &Presented,
    claimed_id: &str,
    log_as: &mut Option<String>,
) -> Result<Arc<KnownClient>, OAuthError> {
    // A claimed id that cannot be one of ours is not looked up, but still costs a hash compare.
    let client = if crate::protocol::syntax::is_client_id(claimed_id) {
        services
            .cache
            .client(services.store.as_ref(), claimed_id)
            .await?
    } else {
        None
    };
    // The access log names a known client; an unknown id (maybe a secret in the wrong field)
    // only by a short hash.
    *log_as = Some(match &client {
        Some(known) => known.record.client_id.clone(),
        None => unknown_id_tag(claimed_id),
    });
    let verified = verify(services, request, presented, client.as_deref()).await;
    // A known client's failed authentications are counted (unknown ids are not: anyone can
    // make up any number of them).
    if let (Err(err), Some(known)) = (&verified, &client) {
        services.usage.count(&known.usage, Event::Denied(err.code));
    }
    verified?;
    client.ok_or_else(OAuthError::invalid_client)
}

/// Checks the presented credentials against the client's (`None`: unknown id, which fails as
/// a wrong secret does).
async fn verify(
    services: &Services,
    request: &ClientRequest,
    presented: &Presented,
    client: Option<&KnownClient>,
) -> Result<(), OAuthError> {
    let now = services.clock.unix_seconds();
    match presented {
        Presented::Secret(secret) => {
            let secret_id = authenticate(secret, client.map(|c| &c.record), now)?;
            services.cache.note_secret_use(secret_id, now);
        }
        Presented::Assertion(assertion) => {
            authenticate_by_assertion(services, assertion, client, now).await?;
        }
        Presented::ClientId(_) => {
            let certificate = request.certificates.as_ref().and_then(|chain| {
                let (leaf, intermediates) = chain.split_first()?;
                Some(PresentedCertificate {
                    leaf: leaf.as_ref(),
                    chain_is_trusted: || chain_is_trusted(services, leaf, intermediates, now),
                })
            });
            let registered = client.map_or(&[][..], |c| &c.certificates);
            authenticate_certificate(client.map(|c| &c.record), registered, certificate)?;
        }
    }
    Ok(())
}

/// RFC 8705 §2.1: whether a client certificate chain leads to one of the `--client-ca` roots,
/// valid at `now` (the server's clock) and for client authentication.
fn chain_is_trusted(
    services: &Services,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: i64,
) -> bool {
    let Some(verifier) = services.client_ca.as_ref() else {
        return false;
    };
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    match verifier.verify_client_cert(leaf, intermediates, now) {
        Ok(_) => true,
        Err(error) => {
            tracing::info!(%error, "client certificate chain refused");
            false
        }
    }
}

/// RFC 7523 §2.2 client authentication: by a `private_key_jwt` assertion signed with the
/// client's registered or published keys (then used once), or by a workload identity token
/// from the client's trusted issuer (federated identity, reused while valid).
async fn authenticate_by_assertion(
    services: &Services,
    assertion: &PresentedAssertion,
    client: Option<&KnownClient>,
    now: i64,
) -> Result<(), OAuthError> {
    let record = client.map(|c| &c.record);
    if let Some(federation) = record.and_then(|r| r.credential.federation()) {
        let Some(jwks) = services.remote_keys.for_issuer(&federation.issuer).await else {
            tracing::warn!(issuer = %federation.issuer, "no keys for a trusted issuer");
            return Err(OAuthError::temporarily_unavailable());
        };
        let keys = keys_for(&jwks, assertion).await?;
        return authenticate_federated(assertion, record, &keys, &services.issuer, now);
    }
    let policy = AssertionPolicy {
        issuer: &services.issuer,
        compatible_audience: services.compatible_assertion_audience.as_deref(),
    };
    let verified = match record.and_then(|r| r.credential.jwks_uri()) {
        Some(uri) => {
            let Some(jwks) = services.remote_keys.for_uri(uri) else {
                tracing::warn!(%uri, "a client's jwks_uri is not one this server may fetch");
                return Err(OAuthError::invalid_client());
            };
            let keys = keys_for(&jwks, assertion).await?;
            authenticate_assertion(assertion, record, &keys, &policy, now)?
        }
        None => {
            let keys = client.map_or(&[][..], |c| &c.assertion_keys);
            authenticate_assertion(assertion, record, keys, &policy, now)?
        }
    };
    // RFC 7523 §3 item 7: each assertion is used once. The database decides, so two replicas
    // never both accept it; if it cannot answer, fail closed (503).
    let first_use = services
        .store
        .use_assertion_jti(
            &assertion.client_id,
            &verified.jti,
            verified.expires_at,
            now,
        )
        .await?;
    if !first_use {
        tracing::info!(client_id = %assertion.client_id, "client assertion replayed");
        return Err(OAuthError::invalid_client());
    }
    Ok(())
}

/// The keys of a fetched JWK Set (a client's `jwks_uri`, a trusted issuer's) that may have
/// signed `assertion`: the one its `kid` names (fetched again, at most every 30 s, when it is
/// unknown), or every key. No key set could ever be fetched: 503, since nothing can be
/// verified (fail closed).
async fn keys_for(
    jwks: &Arc<Jwks>,
    assertion: &PresentedAssertion,
) -> Result<Vec<Arc<VerifyingKey>>, OAuthError> {
    let unavailable = || {
        tracing::warn!("no keys could be fetched from a JWK Set URL");
        OAuthError::temporarily_unavailable()
    };
    match assertion.kid() {
        Some(kid) => match jwks.key(&kid).await {
            Ok(key) => Ok(key.into_iter().collect()),
            Err(()) => Err(unavailable()),
        },
        None => {
            if jwks.current().is_none() {
                jwks.prime().await;
            }
            jwks.refresh_if_stale();
            let set = jwks.current().ok_or_else(unavailable)?;
            Ok(set.keys().cloned().collect())
        }
    }
}

/// The clock's time in milliseconds since the Unix epoch.
fn unix_millis(clock: &dyn crate::clock::Clock) -> u64 {
    clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
