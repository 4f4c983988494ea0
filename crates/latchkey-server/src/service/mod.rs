//! The service layer: one function per use case (issue a token, introspect, revoke, and the
//! admin operations in [`admin`]). Each gathers its inputs (client records, keys, replay
//! state) from the cache, the store and remote key sets, calls a pure decision in
//! `protocol/`, and records the effects. HTTP handlers call these and only render; the CLI
//! (and, later, the admin API) calls [`admin`].

pub mod admin;
pub mod admin_auth;
mod authenticate;
mod introspect;
pub mod registration;
mod token;

use std::sync::Arc;

use http::HeaderValue;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;

pub use authenticate::authenticate_client;
pub use introspect::{Revoked, active_claims, introspect, revoke};
pub use token::{current_nonce, issue_token};

use crate::cache::Cache;
use crate::clock::Clock;
use crate::error::OAuthError;
use crate::protocol::request::RequestParams;
use crate::remote_keys::RemoteKeys;
use crate::store::{Store, StoreError};

/// What the OAuth use cases work with: shared state and the server's settings.
pub struct Services {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Clients, keys and the deny list in memory, following the database.
    pub cache: Arc<Cache>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The issuer identifier, exactly as it appears in `iss`.
    pub issuer: String,
    /// The token endpoint URL: the `htu` of DPoP proofs sent to it.
    pub token_endpoint: String,
    /// The token endpoint URL when it is accepted as an assertion audience (compatibility).
    pub compatible_assertion_audience: Option<String>,
    /// The JWK Sets clients publish at their `jwks_uri`, and trusted issuers'.
    pub remote_keys: RemoteKeys,
    /// Checks a client's certificate chain against the `--client-ca` roots; `None` without
    /// them.
    pub client_ca: Option<Arc<dyn ClientCertVerifier>>,
    /// DPoP proofs at the token endpoint need a nonce this server made (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Counts what each client does (`crate::usage`).
    pub usage: Arc<crate::usage::Usage>,
    /// Prometheus metrics (`crate::metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Failed client authentications per client and address, and per address
    /// (`crate::throttle`).
    pub throttle: crate::throttle::Throttle,
}

impl Services {
    /// Readiness: the database answers, with the schema this binary expects.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ready().await
    }

    /// The published JWK Set, serialised once per key change.
    pub fn jwks_json(&self) -> bytes::Bytes {
        self.cache.key_ring().jwks_json().clone()
    }
}

/// A request to an OAuth endpoint (token, introspection, revocation) as the HTTP layer hands
/// it over: checked for transport rules and parsed strictly, nothing decided yet.
pub struct ClientRequest {
    /// The single `Authorization` header, if any.
    pub authorization: Option<HeaderValue>,
    /// The single `DPoP` proof header, if any (RFC 9449 §4.1).
    pub dpop: Option<HeaderValue>,
    /// The form parameters.
    pub params: RequestParams,
    /// The certificate chain the client presented in the TLS handshake (leaf first), when
    /// this server terminates TLS and the client sent one.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The address the request came from: the connection's peer, or the client a trusted
    /// proxy names in `X-Forwarded-For` (`--trusted-proxy`). For brute-force throttling and
    /// the not-caching flag.
    pub source: Option<std::net::IpAddr>,
}

impl ClientRequest {
    /// The client certificate (DER) of the connection, if any.
    pub fn certificate(&self) -> Option<&[u8]> {
        self.certificates
            .as_ref()
            .and_then(|chain| chain.first())
            .map(AsRef::as_ref)
    }
}

/// What a client's request counts as in its usage: `success` when it succeeded, else the
/// refusal's error code (server trouble is not counted: `usage` ignores those codes).
fn usage_event<T>(
    result: &Result<T, OAuthError>,
    success: crate::usage::Event,
) -> crate::usage::Event {
    match result {
        Ok(_) => success,
        Err(err) => crate::usage::Event::Denied(err.code),
    }
}

impl From<StoreError> for OAuthError {
    /// Storage trouble is 503, never 401 (docs/CONFORMANCE.md, "Storage failures").
    fn from(err: StoreError) -> Self {
        tracing::warn!(error = %err, "storage error on an OAuth endpoint");
        OAuthError::temporarily_unavailable()
    }
}
