//! Introspection (RFC 7662) and revocation (RFC 7009): both authenticate the caller, then ask
//! whether a token is active.

use latchkey_proto::{AccessTokenClaims, IntrospectionResponse};

use super::{ClientRequest, Services, authenticate_client, usage_event};
use crate::error::OAuthError;
use crate::protocol::access_token::{TokenShape, shape, verify_jwt};
use crate::protocol::introspection::{active_response, is_active, opaque_claims};
use crate::usage::Event;

/// RFC 7662 §2: what an authorised caller learns about the request's `token`. `log_as` is set
/// to the caller for the access log.
pub async fn introspect(
    services: &Services,
    request: &ClientRequest,
    log_as: &mut Option<String>,
) -> Result<IntrospectionResponse, OAuthError> {
    // RFC 7662 §2.1: the caller authenticates, and must be allowed to introspect (§4: "the
    // authorization server MUST determine whether the resource server is allowed").
    let caller = authenticate_client(services, request, log_as).await?;
    let answered = async {
        if !caller.record.can_introspect {
            return Err(OAuthError::forbidden(
                "this client may not introspect tokens; an operator can allow it with `latchkey client update ID --can-introspect`",
            ));
        }
        let token = required_token(request)?;
        Ok(match active_claims(services, token).await? {
            Some(claims) => active_response(claims),
            None => IntrospectionResponse::inactive(),
        })
    }
    .await;
    services
        .usage
        .count(&caller.usage, usage_event(&answered, Event::Introspection));
    answered
}

/// What a revocation request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The token was active and is revoked now.
    Revoked,
    /// The token was not active (unknown, malformed, expired, already revoked): nothing to do.
    NotActive,
}

/// RFC 7009 §2: the caller revokes one of its own tokens. `log_as` is set to the caller.
pub async fn revoke(
    services: &Services,
    request: &ClientRequest,
    log_as: &mut Option<String>,
) -> Result<Revoked, OAuthError> {
    let caller = authenticate_client(services, request, log_as).await?;
    let revoked = revoke_for(services, request, &caller.record.client_id).await;
    services
        .usage
        .count(&caller.usage, usage_event(&revoked, Event::Revocation));
    revoked
}

/// Revokes the request's token if it is one of `caller`'s.
async fn revoke_for(
    services: &Services,
    request: &ClientRequest,
    caller: &str,
) -> Result<Revoked, OAuthError> {
    let token = required_token(request)?;
    // `token_type_hint` is ignored: the token's shape tells its type, and RFC 7009 §2.2 says
    // an unknown hint is ignored too.
    //
    // RFC 7009 §2.2: an invalid token (unknown, malformed, expired, already revoked) is
    // answered with 200 — its revocation has already been achieved.
    let Some(claims) = active_claims(services, token).await? else {
        return Ok(Revoked::NotActive);
    };
    // RFC 7009 §2.1: the server "verifies whether the token was issued to the client making
    // the revocation request. If this validation fails, the request is refused". The token
    // stays active.
    if claims.client_id != caller {
        return Err(OAuthError::unauthorized_client(
            "the token was not issued to this client",
        ));
    }
    let opaque_hash = match shape(token) {
        TokenShape::Opaque(hash) => Some(hash),
        _ => None,
    };
    // Stored first: if storage fails the answer is 503 and the token really stays active
    // (RFC 7009 §2.2.1). Then this server applies it at once; the others at their next poll.
    services
        .store
        .revoke_token(
            &claims.jti,
            &claims.client_id,
            claims.exp,
            opaque_hash.as_ref(),
        )
        .await?;
    services.cache.note_revoked(&claims.jti, claims.exp);
    Ok(Revoked::Revoked)
}

/// The `token` parameter both endpoints require.
fn required_token(request: &ClientRequest) -> Result<&str, OAuthError> {
    request
        .params
        .token
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_request("the token parameter is required"))
}

/// The claims of `token` if it is an active token of this server; `None` for anything else —
/// unknown, malformed, expired, revoked, or signed by a key that is no longer published.
/// Storage trouble is an error (503), never an answer (docs/CONFORMANCE.md, "Storage
/// failures").
pub async fn active_claims(
    services: &Services,
    token: &str,
) -> Result<Option<AccessTokenClaims>, OAuthError> {
    let claims = match shape(token) {
        TokenShape::Jwt(jwt) => {
            verify_jwt(services.cache.key_ring().as_ref(), &services.issuer, jwt)
        }
        TokenShape::Opaque(hash) => services
            .store
            .find_opaque_token(&hash)
            .await?
            .map(|record| opaque_claims(&services.issuer, &record)),
        TokenShape::Unknown => None,
    };
    let Some(claims) = claims else {
        return Ok(None);
    };
    let now = services.clock.unix_seconds();
    if now >= claims.exp {
        return Ok(None);
    }
    let store = services.store.as_ref();
    let revoked = services.cache.is_revoked(store, &claims.jti).await?;
    let client = services.cache.client(store, &claims.client_id).await?;
    Ok(is_active(&claims, client.as_deref().map(|c| &c.record), revoked, now).then_some(claims))
}
