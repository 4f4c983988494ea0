//! Who may call the admin API: holders of access tokens this server issued for the admin
//! audience with an admin scope. There is no admin password: an admin is a client
//! (`latchkey client create --admin`), and its tokens are checked like any resource server
//! checks ours, bound ones included (RFC 6750, RFC 9449 §7, RFC 8705 §3).

use latchkey_jose::dpop::{PROOF_MAX_AGE_SECONDS, ProofCheck, verify_proof};
use latchkey_proto::{AccessTokenClaims, Audience};

use super::{Services, active_claims};
use crate::protocol::mutual_tls::certificate_thumbprint;

pub use crate::model::{ADMIN_AUDIENCE, ADMIN_READ_SCOPE, ADMIN_SCOPE};

/// What an admin request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading: `latchkey:admin:read` or `latchkey:admin`.
    Read,
    /// Changing: `latchkey:admin`.
    Write,
}

/// An admin request's credentials, as the HTTP layer found them.
#[derive(Debug, Clone, Copy)]
pub struct AdminCredentials<'a> {
    /// The `Authorization` header, if one.
    pub authorization: Option<&'a [u8]>,
    /// The `DPoP` header, if one.
    pub dpop: Option<&'a [u8]>,
    /// The request's method, for a DPoP proof's `htm`.
    pub method: &'a str,
    /// The request's URL (the issuer's origin and the path), for a DPoP proof's `htu`.
    pub url: &'a str,
    /// The client certificate of the connection (DER), when this server terminates TLS.
    pub certificate: Option<&'a [u8]>,
}

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAuthError {
    /// No token (RFC 6750 §3.1: 401 with a bare `WWW-Authenticate` challenge).
    Missing,
    /// A token that is not an active admin token of this server, or whose binding the request
    /// does not prove (401 `invalid_token`).
    InvalidToken(&'static str),
    /// An active admin token without the scope the operation needs (403
    /// `insufficient_scope`).
    InsufficientScope(&'static str),
    /// The database could not answer (503).
    Unavailable,
}

/// The admin client a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCaller {
    /// Its client id: the actor of its changes in the audit trail.
    pub client_id: String,
    /// Whether it may change things.
    pub may_write: bool,
}

/// Checks an admin request's token for `needed` access.
pub async fn authorize_admin(
    services: &Services,
    credentials: &AdminCredentials<'_>,
    needed: Access,
) -> Result<AdminCaller, AdminAuthError> {
    let (scheme, token) = credentials
        .authorization
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.split_once(' '))
        .ok_or(AdminAuthError::Missing)?;
    let dpop_scheme = if scheme.eq_ignore_ascii_case("Bearer") {
        false
    } else if scheme.eq_ignore_ascii_case("DPoP") {
        true
    } else {
        return Err(AdminAuthError::Missing);
    };
    let token = token.trim();
    let claims = match active_claims(services, token).await {
        Ok(Some(claims)) => claims,
        Ok(None) => return Err(AdminAuthError::InvalidToken("the token is not active")),
        Err(_) => return Err(AdminAuthError::Unavailable),
    };
    // For the admin API alone: a token that other services also accept could be replayed
    // here by any of them.
    let admin_only = match &claims.aud {
        Audience::One(aud) => aud == ADMIN_AUDIENCE,
        Audience::Many(list) => !list.is_empty() && list.iter().all(|aud| aud == ADMIN_AUDIENCE),
    };
    if !admin_only {
        return Err(AdminAuthError::InvalidToken(
            "the token is not for the admin API alone (aud urn:latchkey:admin)",
        ));
    }
    check_binding(services, credentials, &claims, token, dpop_scheme).await?;
    let scopes: Vec<&str> = claims.scope.as_deref().unwrap_or("").split(' ').collect();
    let may_write = scopes.contains(&ADMIN_SCOPE);
    let may_read = may_write || scopes.contains(&ADMIN_READ_SCOPE);
    match needed {
        Access::Read if !may_read => Err(AdminAuthError::InsufficientScope(ADMIN_READ_SCOPE)),
        Access::Write if !may_write => Err(AdminAuthError::InsufficientScope(ADMIN_SCOPE)),
        _ => Ok(AdminCaller {
            client_id: claims.client_id,
            may_write,
        }),
    }
}

/// A bound token is never taken as a bearer token: a DPoP-bound one needs the DPoP scheme
/// and a fresh proof of its key for this request, used once (RFC 9449 §7.1, §11.1); a
/// certificate-bound one needs the same certificate on this connection (RFC 8705 §3).
async fn check_binding(
    services: &Services,
    credentials: &AdminCredentials<'_>,
    claims: &AccessTokenClaims,
    token: &str,
    dpop_scheme: bool,
) -> Result<(), AdminAuthError> {
    let jkt = claims.cnf.as_ref().and_then(|cnf| cnf.jkt.as_deref());
    let x5t = claims.cnf.as_ref().and_then(|cnf| cnf.x5t_s256.as_deref());
    if let Some(x5t) = x5t
        && credentials
            .certificate
            .map(certificate_thumbprint)
            .as_deref()
            != Some(x5t)
    {
        return Err(AdminAuthError::InvalidToken(
            "the token is bound to a certificate this connection did not present",
        ));
    }
    match (jkt, dpop_scheme) {
        (None, false) => Ok(()),
        (None, true) => Err(AdminAuthError::InvalidToken(
            "the DPoP scheme is for DPoP-bound tokens",
        )),
        (Some(_), false) => Err(AdminAuthError::InvalidToken(
            "a DPoP-bound token needs the DPoP scheme and a proof",
        )),
        (Some(jkt), true) => {
            let proof = credentials
                .dpop
                .and_then(|proof| std::str::from_utf8(proof).ok())
                .ok_or(AdminAuthError::InvalidToken("a DPoP proof is required"))?;
            let now = services.clock.unix_seconds();
            let check = ProofCheck {
                method: credentials.method,
                url: credentials.url,
                now,
                access_token: Some(token),
                nonce: None,
                max_age_seconds: PROOF_MAX_AGE_SECONDS,
            };
            let verified = verify_proof(proof, &check).map_err(|err| {
                tracing::info!(error = %err, "admin API DPoP proof refused");
                AdminAuthError::InvalidToken("the DPoP proof is not valid")
            })?;
            if verified.jkt != jkt {
                return Err(AdminAuthError::InvalidToken(
                    "the DPoP proof is not signed by the token's key",
                ));
            }
            let first_use = services
                .store
                .use_assertion_jti(
                    &format!("dpop:{}", verified.jkt),
                    &verified.jti,
                    verified.remember_until,
                    now,
                )
                .await
                .map_err(|_| AdminAuthError::Unavailable)?;
            if first_use {
                Ok(())
            } else {
                Err(AdminAuthError::InvalidToken(
                    "the DPoP proof was used before",
                ))
            }
        }
    }
}
