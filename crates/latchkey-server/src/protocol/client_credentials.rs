//! The client-credentials grant (RFC 6749 §4.4): which scope and audience a client gets, and
//! the claims of the access token (RFC 9068 §2.2).

use latchkey_proto::{AccessTokenClaims, Audience, GrantType};

use crate::error::OAuthError;
use crate::model::ClientRecord;
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
