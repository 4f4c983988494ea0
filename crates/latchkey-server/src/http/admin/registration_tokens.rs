//! `/admin/v1/registration-tokens`: the initial access tokens of dynamic client registration
//! (RFC 7591 §3), as `latchkey registration-token` makes, lists and revokes them.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;

use super::wire::{CreatedRegistrationToken, NewRegistrationToken, RegistrationToken};
use super::{Admin, ApiError, json_response};
use crate::http::AppState;
use crate::service::admin::registration_tokens::{self, DEFAULT_LIFETIME_SECONDS};
use crate::service::admin_auth::Access;

/// List the initial access tokens (never the tokens), expired ones included until the janitor
/// removes them.
#[utoipa::path(get, path = "/admin/v1/registration-tokens", tag = "registration",
    responses(
        (status = 200, description = "The tokens, oldest first", body = Vec<RegistrationToken>),
        super::wire::Refusals,
    ),
    security(("admin_token" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    Admin::authorize(&state, request, Access::Read).await?;
    let tokens = registration_tokens::list(state.services.store.as_ref()).await?;
    let tokens: Vec<RegistrationToken> = tokens.iter().map(RegistrationToken::from).collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&tokens).unwrap_or_default(),
        None,
    ))
}

/// Make an initial access token; the token is in this response only.
#[utoipa::path(post, path = "/admin/v1/registration-tokens", tag = "registration",
    request_body = NewRegistrationToken,
    responses(
        (status = 201, description = "Made", body = CreatedRegistrationToken),
        super::wire::Refusals,
        super::wire::BadInput,
        super::wire::BodyRefusals,
    ),
    security(("admin_token" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let body: NewRegistrationToken = request.json()?;
    let services = &state.services;
    let new = registration_tokens::NewRegistrationToken {
        expires_in: body.expires_in_seconds.unwrap_or(DEFAULT_LIFETIME_SECONDS),
        max_uses: body.max_uses,
        scope_limit: body.scope_limit,
        audience_limit: body.audience_limit,
    };
    let (token, secret) = registration_tokens::create(
        services.store.as_ref(),
        services.clock.as_ref(),
        &request.actor,
        new,
    )
    .await?;
    let created = CreatedRegistrationToken {
        token: RegistrationToken::from(&token),
        registration_token: secret,
    };
    Ok(json_response(
        StatusCode::CREATED,
        serde_json::to_vec(&created).unwrap_or_default(),
        None,
    ))
}

/// Revoke an initial access token: it registers nothing more (the clients it registered stay).
#[utoipa::path(delete, path = "/admin/v1/registration-tokens/{token_id}", tag = "registration",
    params(("token_id" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        super::wire::Refusals,
        super::wire::NotFound,
    ),
    security(("admin_token" = [])))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Path(token_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let services = &state.services;
    registration_tokens::revoke(
        services.store.as_ref(),
        services.clock.as_ref(),
        &request.actor,
        &token_id,
    )
    .await
    .map_err(|err| match err {
        crate::service::admin::AdminError::Field { message, .. } => {
            ApiError::new(StatusCode::NOT_FOUND, message, None)
        }
        err => err.into(),
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
