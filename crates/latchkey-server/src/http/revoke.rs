//! `POST /oauth2/revoke` (RFC 7009): a client revokes one of its own tokens.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::app::AppState;
use crate::error::OAuthError;
use crate::http::access_log::{ClientTag, Outcome};
use crate::http::endpoint::{authenticate_client, receive};
use crate::http::introspect::active_claims;
use crate::protocol::access_token::{TokenShape, shape};

/// The revocation endpoint handler.
pub async fn revoke(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut client_tag = None;
    let response = match run(&state, request, &mut client_tag).await {
        Ok(outcome) => {
            // RFC 7009 §2.2: 200; the body is ignored by the client, so it is empty.
            let mut response = super::no_store_json(StatusCode::OK, "");
            response.headers_mut().remove(http::header::CONTENT_TYPE);
            response.extensions_mut().insert(Outcome(outcome));
            response
        }
        Err(err) => err.into_response(),
    };
    super::access_log::tag_client(response, client_tag)
}

async fn run(
    state: &AppState,
    request: Request,
    client_tag: &mut Option<ClientTag>,
) -> Result<&'static str, OAuthError> {
    let received = receive(request).await?;
    let caller = authenticate_client(state, &received, client_tag).await?;
    let token = received
        .params
        .token
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_request("the token parameter is required"))?;
    // `token_type_hint` is ignored: the token's shape tells its type, and RFC 7009 §2.2 says
    // an unknown hint is ignored too.
    //
    // RFC 7009 §2.2: an invalid token (unknown, malformed, expired, already revoked) is
    // answered with 200 — its revocation has already been achieved.
    let Some(claims) = active_claims(state, token).await? else {
        return Ok("not_active");
    };
    // RFC 7009 §2.1: the server "verifies whether the token was issued to the client making
    // the revocation request. If this validation fails, the request is refused". The token
    // stays active.
    if claims.client_id != caller.record.client_id {
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
    state
        .store
        .revoke_token(
            &claims.jti,
            &claims.client_id,
            claims.exp,
            opaque_hash.as_ref(),
        )
        .await?;
    state.cache.note_revoked(&claims.jti, claims.exp);
    Ok("revoked")
}
