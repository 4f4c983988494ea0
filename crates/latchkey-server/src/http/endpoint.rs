//! What every OAuth endpoint (token, introspection, revocation) does before its own work:
//! transport checks, a strict parse of the form body, and client authentication.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::app::AppState;
use crate::cache::KnownClient;
use crate::error::OAuthError;
use crate::form::{self, FormError};
use crate::http::access_log::ClientTag;
use crate::protocol::client_assertion::AssertionPolicy;
use crate::protocol::client_auth::{
    Presented, PresentedAssertion, PresentedCertificate, authenticate, authenticate_assertion,
    authenticate_certificate, authenticate_federated, presented_credentials,
};
use crate::protocol::request::{MAX_PARAMETERS, RequestParams};
use crate::secret::unknown_id_tag;
use crate::tls::TlsPeer;
use latchkey_common::Jwks;
use latchkey_jose::VerifyingKey;
use rustls_pki_types::{CertificateDer, UnixTime};

/// Bodies over 16 KiB are refused with 413 before parsing (docs/CONFORMANCE.md, "Request
/// limits and transport").
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A request that passed the transport checks and parsed strictly.
pub struct Received {
    /// The single `Authorization` header, if any.
    pub authorization: Option<HeaderValue>,
    /// The single `DPoP` proof header, if any (RFC 9449 §4.1).
    pub dpop: Option<HeaderValue>,
    /// The form parameters.
    pub params: RequestParams,
    /// The certificate chain the client presented in the TLS handshake (leaf first), when
    /// this server terminates TLS and the client sent one.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Received {
    /// The client certificate (DER) of the connection, if any.
    pub fn certificate(&self) -> Option<&[u8]> {
        self.certificates
            .as_ref()
            .and_then(|chain| chain.first())
            .map(AsRef::as_ref)
    }
}

/// Only POST, no parameters in the URI, a form body of at most 16 KiB, no repeated parameters
/// (RFC 6749 §2.3.1, §3.2; docs/CONFORMANCE.md, "Request limits and transport"); at most one
/// `Authorization` header (RFC 6749 §2.3).
pub async fn receive(request: Request) -> Result<Received, OAuthError> {
    let (parts, body) = request.into_parts();
    check_transport(&parts.method, parts.uri.query(), &parts.headers)?;
    let authorization = single_authorization(&parts.headers)?;
    // RFC 9449 §4.3 item 1: at most one DPoP header.
    let mut proofs = parts.headers.get_all("dpop").iter();
    let dpop = proofs.next().cloned();
    if proofs.next().is_some() {
        return Err(OAuthError::invalid_dpop_proof("more than one DPoP header"));
    }
    let certificates = parts
        .extensions
        .get::<ConnectInfo<TlsPeer>>()
        .and_then(|peer| peer.0.certificates.clone());
    let body = read_body(&parts.headers, body).await?;
    let params = parse(&body)?;
    Ok(Received {
        authorization,
        dpop,
        params,
        certificates,
    })
}

/// Authenticates the client (RFC 6749 §2.3, RFC 7523 §2.2) and returns it. Tags the response
/// with the claimed client id for the access log, and notes which secret was used.
pub async fn authenticate_client(
    state: &AppState,
    received: &Received,
    client_tag: &mut Option<ClientTag>,
) -> Result<Arc<KnownClient>, OAuthError> {
    let presented = presented_credentials(
        received.authorization.as_ref().map(HeaderValue::as_bytes),
        &received.params,
    )?;
    let claimed_id = presented.client_id();
    // A claimed id that cannot be one of ours is not looked up, but still costs a hash compare.
    let client = if crate::protocol::syntax::is_client_id(claimed_id) {
        state.cache.client(state.store.as_ref(), claimed_id).await?
    } else {
        None
    };
    // The access log names a known client; an unknown id (maybe a secret in the wrong field)
    // only by a short hash.
    *client_tag = Some(ClientTag(match &client {
        Some(known) => known.record.client_id.clone(),
        None => unknown_id_tag(claimed_id),
    }));
    let now = state.clock.unix_seconds();
    match &presented {
        Presented::Secret(secret) => {
            let secret_id = authenticate(secret, client.as_deref().map(|c| &c.record), now)?;
            state.cache.note_secret_use(secret_id, now);
        }
        Presented::Assertion(assertion) => {
            authenticate_by_assertion(state, assertion, client.as_deref(), now).await?;
        }
        Presented::ClientId(_) => {
            let certificate = received.certificates.as_ref().and_then(|chain| {
                let (leaf, intermediates) = chain.split_first()?;
                Some(PresentedCertificate {
                    leaf: leaf.as_ref(),
                    chain_is_trusted: || chain_is_trusted(state, leaf, intermediates, now),
                })
            });
            let registered = client.as_deref().map_or(&[][..], |c| &c.certificates);
            authenticate_certificate(
                client.as_deref().map(|c| &c.record),
                registered,
                certificate,
            )?;
        }
    }
    client.ok_or_else(OAuthError::invalid_client)
}

/// RFC 8705 §2.1: whether a client certificate chain leads to one of the `--client-ca` roots,
/// valid at `now` (the server's clock) and for client authentication.
fn chain_is_trusted(
    state: &AppState,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: i64,
) -> bool {
    let Some(verifier) = state.tls.as_ref().and_then(|tls| tls.client_ca.as_ref()) else {
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
    state: &AppState,
    assertion: &PresentedAssertion,
    client: Option<&KnownClient>,
    now: i64,
) -> Result<(), OAuthError> {
    let record = client.map(|c| &c.record);
    if let Some(federation) = record.and_then(|r| r.credential.federation()) {
        let Some(jwks) = state.remote_keys.for_issuer(&federation.issuer).await else {
            tracing::warn!(issuer = %federation.issuer, "no keys for a trusted issuer");
            return Err(OAuthError::temporarily_unavailable());
        };
        let keys = keys_for(&jwks, assertion).await?;
        return authenticate_federated(assertion, record, &keys, &state.issuer, now);
    }
    let policy = AssertionPolicy {
        issuer: &state.issuer,
        compatible_audience: state.compatible_assertion_audience.as_deref(),
    };
    let verified = match record.and_then(|r| r.credential.jwks_uri()) {
        Some(uri) => {
            let Some(jwks) = state.remote_keys.for_uri(uri) else {
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
    let first_use = state
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

fn check_transport(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), OAuthError> {
    // RFC 6749 §3.2, RFC 7662 §2.1, RFC 7009 §2.1: these endpoints take POST.
    if method != Method::POST {
        return Err(OAuthError::invalid_request_with_status(
            StatusCode::METHOD_NOT_ALLOWED,
            "this endpoint accepts POST only",
        ));
    }
    // RFC 6749 §2.3.1: credentials "MUST NOT be included in the request URI". Our endpoint
    // URIs have no query of their own, so any query is refused (and never logged).
    if query.is_some() {
        return Err(OAuthError::invalid_request(
            "parameters must be sent in the request body, not the URI",
        ));
    }
    // RFC 6749 §4.4.2: the body is application/x-www-form-urlencoded.
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|media| media.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    Ok(())
}

/// Two Authorization headers are `invalid_request` (RFC 6749 §2.3: one authentication method
/// per request).
fn single_authorization(headers: &HeaderMap) -> Result<Option<HeaderValue>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    Ok(first.cloned())
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, OAuthError> {
    let too_large = || {
        OAuthError::invalid_request_with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than 16 KiB",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // The limit also bounds chunked bodies that declare no length.
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|err| {
            if err.into_inner().is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                OAuthError::invalid_request("the request body could not be read")
            }
        })
}

fn parse(body: &[u8]) -> Result<RequestParams, OAuthError> {
    let pairs = form::parse(body, MAX_PARAMETERS).map_err(|err| match err {
        FormError::Malformed => OAuthError::invalid_request(
            "the body is not valid application/x-www-form-urlencoded UTF-8",
        ),
        FormError::TooManyParameters => OAuthError::invalid_request("too many parameters"),
    })?;
    RequestParams::from_pairs(pairs)
}
