//! `POST /oauth2/introspect` (RFC 7662): tells an authorised client whether a token is active
//! and what it carries.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use latchkey_proto::{AccessTokenClaims, IntrospectionResponse};

use crate::app::AppState;
use crate::error::OAuthError;
use crate::http::access_log::{ClientTag, Outcome};
use crate::http::endpoint::{authenticate_client, receive};
use crate::protocol::access_token::{TokenShape, shape, verify_jwt};
use crate::protocol::introspection::{active_response, is_active, opaque_claims};

/// The introspection endpoint handler.
pub async fn introspect(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut client_tag = None;
    let response = match answer(&state, request, &mut client_tag).await {
        Ok(answer) => respond(&answer),
        Err(err) => err.into_response(),
    };
    super::access_log::tag_client(response, client_tag)
}

async fn answer(
    state: &AppState,
    request: Request,
    client_tag: &mut Option<ClientTag>,
) -> Result<IntrospectionResponse, OAuthError> {
    let received = receive(request).await?;
    // RFC 7662 §2.1: the caller authenticates, and must be allowed to introspect (§4: "the
    // authorization server MUST determine whether the resource server is allowed").
    let caller = authenticate_client(state, &received, client_tag).await?;
    if !caller.record.can_introspect {
        return Err(OAuthError::forbidden(
            "this client may not introspect tokens; an operator can allow it with `latchkey client update ID --can-introspect`",
        ));
    }
    let token = received
        .params
        .token
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_request("the token parameter is required"))?;
    Ok(match active_claims(state, token).await? {
        Some(claims) => active_response(claims),
        None => IntrospectionResponse::inactive(),
    })
}

/// The claims of `token` if it is an active token of this server; `None` for anything else —
/// unknown, malformed, expired, revoked, or signed by a key that is no longer published.
/// Storage trouble is an error (503), never an answer (docs/CONFORMANCE.md, "Storage
/// failures").
pub async fn active_claims(
    state: &AppState,
    token: &str,
) -> Result<Option<AccessTokenClaims>, OAuthError> {
    let claims = match shape(token) {
        TokenShape::Jwt(jwt) => verify_jwt(&state.cache.key_ring(), &state.issuer, jwt),
        TokenShape::Opaque(hash) => state
            .store
            .find_opaque_token(&hash)
            .await?
            .map(|record| opaque_claims(&state.issuer, &record)),
        TokenShape::Unknown => None,
    };
    let Some(claims) = claims else {
        return Ok(None);
    };
    let now = state.clock.unix_seconds();
    if now >= claims.exp {
        return Ok(None);
    }
    let store = state.store.as_ref();
    let revoked = state.cache.is_revoked(store, &claims.jti).await?;
    let client = state.cache.client(store, &claims.client_id).await?;
    Ok(is_active(&claims, client.as_deref().map(|c| &c.record), revoked, now).then_some(claims))
}

/// RFC 7662 §2.2: 200 with a JSON object; never cached.
fn respond(answer: &IntrospectionResponse) -> Response {
    match serde_json::to_vec(answer) {
        Ok(json) => {
            let mut response = super::no_store_json(StatusCode::OK, json);
            response.extensions_mut().insert(Outcome(if answer.active {
                "active"
            } else {
                "inactive"
            }));
            response
        }
        Err(_) => OAuthError::temporarily_unavailable().into_response(),
    }
}
