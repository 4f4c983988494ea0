//! The client-credentials grant (RFC 6749 §4.4): which scope and audience a client gets, and
//! the claims of the access token (RFC 9068 §2.2).

use latchkey_proto::{AccessTokenClaims, Audience, Confirmation, GrantType, TokenType};

use crate::error::OAuthError;
use crate::model::ClientRecord;
use crate::protocol::mutual_tls::certificate_thumbprint;
use crate::protocol::syntax::{is_resource_uri, parse_scope};

/// What the client is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Granted scope tokens (possibly none).
    pub scope: Vec<String>,
    /// The audiences; never empty (RFC 9068 §3 requires `aud`).
    pub audience: Vec<String>,
    /// Token lifetime in seconds.
    pub ttl_seconds: i64,
}

/// RFC 6749 §4.4.2: `grant_type` is required and compared exactly (case-sensitive).
pub fn check_grant_type(grant_type: Option<&str>) -> Result<(), OAuthError> {
    match grant_type {
        None => Err(OAuthError::invalid_request("grant_type is required")),
        Some(g) if g == GrantType::ClientCredentials.as_str() => Ok(()),
        Some(_) => Err(OAuthError::unsupported_grant_type()),
    }
}

/// What a token is bound to, and so its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The `cnf` claim: the DPoP key and/or the client certificate; `None` when unbound.
    pub cnf: Option<Confirmation>,
    /// `DPoP` for a DPoP-bound token, else `Bearer`.
    pub token_type: TokenType,
}

/// Binds a token to the key of a verified DPoP proof (RFC 9449 §6.1; its thumbprint
/// `dpop_jkt`) and, for a client that authenticated with its certificate (DER), to that
/// certificate (RFC 8705 §3.1). A DPoP-bound token is of type DPoP (RFC 9449 §5); a
/// certificate-bound one stays Bearer (RFC 8705 §3).
pub fn bind(
    client: &ClientRecord,
    dpop_jkt: Option<String>,
    certificate: Option<&[u8]>,
) -> Binding {
    let certificate_x5t = certificate
        .filter(|_| client.auth_method().is_mutual_tls())
        .map(certificate_thumbprint);
    let token_type = if dpop_jkt.is_some() {
        TokenType::DPoP
    } else {
        TokenType::Bearer
    };
    let cnf = (dpop_jkt.is_some() || certificate_x5t.is_some()).then_some(Confirmation {
        jkt: dpop_jkt,
        x5t_s256: certificate_x5t,
    });
    Binding { cnf, token_type }
}

/// Decides the grant for an authenticated client.
pub fn decide(
    client: &ClientRecord,
    scope: Option<&str>,
    resources: &[String],
) -> Result<Grant, OAuthError> {
    // RFC 6749 §5.2: a client not registered for this grant gets `unauthorized_client`.
    if !client.grant_types.contains(&GrantType::ClientCredentials) {
        return Err(OAuthError::unauthorized_client(
            "this client is not registered for the client_credentials grant",
        ));
    }

    Ok(Grant {
        scope: granted_scope(client, scope)?,
        audience: granted_audience(client, resources)?,
        ttl_seconds: client.token_ttl_seconds,
    })
}

/// RFC 6749 §3.3: no `scope` means the client's registered (default) scope. A requested token
/// the client is not registered for is refused with `invalid_scope` rather than silently
/// dropped, so a misconfigured client finds out at once.
fn granted_scope(
    client: &ClientRecord,
    requested: Option<&str>,
) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(client.scope.clone());
    };
    let tokens = parse_scope(requested).ok_or_else(|| {
        OAuthError::invalid_scope(
            "scope must be at most 64 scope tokens separated by single spaces",
        )
    })?;
    tokens
        .into_iter()
        .map(|token| {
            if client.scope.iter().any(|allowed| allowed == token) {
                Ok(token.to_owned())
            } else {
                Err(OAuthError::invalid_scope(format!(
                    "scope {token} is not allowed for this client"
                )))
            }
        })
        .collect()
}

/// RFC 8707 §2: each `resource` must be an absolute URI without fragment and one the client
/// may address; otherwise `invalid_target`. None requested means the registered audience.
fn granted_audience(
    client: &ClientRecord,
    resources: &[String],
) -> Result<Vec<String>, OAuthError> {
    if resources.is_empty() {
        if client.audience.is_empty() {
            return Err(OAuthError::invalid_target(
                "no resource was requested and the client has no registered audience",
            ));
        }
        return Ok(client.audience.clone());
    }
    let mut audience: Vec<String> = Vec::with_capacity(resources.len());
    for resource in resources {
        if !is_resource_uri(resource) {
            return Err(OAuthError::invalid_target(
                "resource must be an absolute URI without a fragment",
            ));
        }
        if !client.audience.iter().any(|allowed| allowed == resource) {
            return Err(OAuthError::invalid_target(
                "a requested resource is not allowed for this client",
            ));
        }
        if !audience.contains(resource) {
            audience.push(resource.clone());
        }
    }
    Ok(audience)
}

/// RFC 9068 §2.2 claims for a client acting on its own behalf: `sub` = `client_id`. `jti`
/// comes from the caller (128+ random bits, see `secret::new_jti`), like `now`.
pub fn access_token_claims(
    issuer: &str,
    client: &ClientRecord,
    grant: &Grant,
    now: i64,
    jti: String,
) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: issuer.to_owned(),
        sub: client.client_id.clone(),
        client_id: client.client_id.clone(),
        aud: Audience::from_list(grant.audience.clone()),
        iat: now,
        exp: now.saturating_add(grant.ttl_seconds),
        nbf: None,
        jti,
        scope: (!grant.scope.is_empty()).then(|| grant.scope.join(" ")),
        epoch: client.token_epoch,
        cnf: None,
    }
}

/// The `expires_in` of a token response: the grant's lifetime, never negative.
pub fn expires_in(grant: &Grant) -> u64 {
    u64::try_from(grant.ttl_seconds).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Credential, SecretMethod, TlsSubject};

    fn client(credential: Credential) -> ClientRecord {
        ClientRecord::new("c".into(), "c".into(), credential, 0)
    }

    #[test]
    fn tokens_are_bound_to_a_dpop_key_and_a_client_certificate() {
        let secret = client(Credential::Secret(SecretMethod::Basic));
        let mtls = client(Credential::TlsSubject(TlsSubject::SanDns("svc".into())));
        let certificate = b"certificate".as_slice();
        let x5t = certificate_thumbprint(certificate);
        let jkt = || Some("thumbprint".to_owned());

        let unbound = bind(&secret, None, None);
        assert_eq!((unbound.cnf, unbound.token_type), (None, TokenType::Bearer));
        // RFC 9449 §5: a DPoP-bound token is of type DPoP.
        let dpop = bind(&secret, jkt(), None);
        assert_eq!(dpop.token_type, TokenType::DPoP);
        assert_eq!(dpop.cnf.unwrap().jkt, jkt());
        // RFC 8705 §3: only a client that authenticated with its certificate gets a token
        // bound to it; a secret client's TLS certificate binds nothing.
        assert_eq!(bind(&secret, None, Some(certificate)).cnf, None);
        let bound = bind(&mtls, None, Some(certificate));
        assert_eq!(bound.token_type, TokenType::Bearer);
        assert_eq!(bound.cnf.unwrap().x5t_s256, Some(x5t.clone()));
        let both = bind(&mtls, jkt(), Some(certificate));
        assert_eq!(both.token_type, TokenType::DPoP);
        assert_eq!(
            both.cnf,
            Some(Confirmation {
                jkt: jkt(),
                x5t_s256: Some(x5t)
            })
        );
    }

    #[test]
    fn the_grant_type_is_required_and_exact() {
        assert!(check_grant_type(Some("client_credentials")).is_ok());
        for (given, code) in [
            (None, "invalid_request"),
            (Some("Client_Credentials"), "unsupported_grant_type"),
            (Some("password"), "unsupported_grant_type"),
        ] {
            let err = check_grant_type(given).unwrap_err();
            assert_eq!(err.code.as_str(), code, "{given:?}");
        }
    }
}
