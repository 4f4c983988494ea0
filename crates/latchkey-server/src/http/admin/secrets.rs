//! `/admin/v1/clients/{id}/secrets`: a client's secrets, by id only.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;

use super::wire::{AddSecret, NewSecret, RotateSecret, Secret};
use super::{Admin, ApiError, confirmed, json_response, refuse_lockout};
use crate::http::AppState;
use crate::service::admin;
use crate::service::admin_auth::Access;

/// How long a client's other secrets keep working after a rotation, by default: a day.
const DEFAULT_OVERLAP_SECONDS: i64 = 24 * 3600;

/// List a client's live secrets (ids and times; never a secret).
#[utoipa::path(get, path = "/admin/v1/clients/{id}/secrets", tag = "secrets",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 200, description = "Its secrets", body = Vec<Secret>),
        super::wire::Refusals,
        super::wire::NotFound,
    ),
    security(("admin_token" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    Admin::authorize(&state, request, Access::Read).await?;
    let secrets = admin::list_secrets(state.services.store.as_ref(), &id).await?;
    let secrets: Vec<Secret> = secrets.iter().map(Secret::from).collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&secrets).unwrap_or_default(),
        None,
    ))
}

/// Add a secret; the client's other secrets keep working. The secret is in this response only.
#[utoipa::path(post, path = "/admin/v1/clients/{id}/secrets", tag = "secrets", request_body = AddSecret,
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 201, description = "The new secret", body = NewSecret),
        super::wire::Refusals,
        super::wire::BadInput,
        super::wire::BodyRefusals,
        super::wire::NotFound,
    ),
    security(("admin_token" = [])))]
pub async fn add(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let body: AddSecret = request.json()?;
    let services = &state.services;
    let now = services.clock.unix_seconds();
    let applied = admin::add_secret(
        services.store.as_ref(),
        services.clock.as_ref(),
        &request.actor,
        &id,
        body.expires_in_seconds,
    )
    .await
    .map_err(|err| field_error(err, "expires_in_seconds"))?;
    let expires_at = body.expires_in_seconds.map(|s| now.saturating_add(s));
    Ok(new_secret(&id, confirmed(applied), expires_at))
}

/// Rotate: add a secret, and let every other one work for `overlap_seconds` more. The secret is
/// in this response only.
#[utoipa::path(post, path = "/admin/v1/clients/{id}/secrets/rotate", tag = "secrets", request_body = RotateSecret,
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 201, description = "The new secret", body = NewSecret),
        super::wire::Refusals,
        super::wire::BadInput,
        super::wire::BodyRefusals,
        super::wire::NotFound,
        super::wire::Lockout,
    ),
    security(("admin_token" = [])))]
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let body: RotateSecret = request.json()?;
    refuse_lockout(&request, &id, true)?;
    let services = &state.services;
    let applied = admin::rotate_secret(
        services.store.as_ref(),
        services.clock.as_ref(),
        &request.actor,
        &id,
        body.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS),
    )
    .await
    .map_err(|err| field_error(err, "overlap_seconds"))?;
    Ok(new_secret(&id, confirmed(applied), None))
}

/// Revoke one secret at once; it then fails like a wrong one.
#[utoipa::path(delete, path = "/admin/v1/clients/{id}/secrets/{secret_id}", tag = "secrets",
    params(("id" = String, Path, description = "The client id"),
        ("secret_id" = String, Path, description = "The secret's id")),
    responses(
        (status = 204, description = "Revoked"),
        super::wire::Refusals,
        super::wire::NotFound,
        super::wire::Lockout,
    ),
    security(("admin_token" = [])))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Path((id, secret_id)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    refuse_lockout(&request, &id, true)?;
    let services = &state.services;
    let revoked = admin::revoke_secret(
        services.store.as_ref(),
        services.clock.as_ref(),
        &request.actor,
        &id,
        &secret_id,
    )
    .await
    .map_err(|err| match err {
        admin::AdminError::Invalid(detail) => ApiError::new(StatusCode::NOT_FOUND, detail, None),
        other => other.into(),
    })?;
    confirmed(revoked);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A refusal of the request's one field names it.
fn field_error(err: admin::AdminError, field: &str) -> ApiError {
    match err {
        admin::AdminError::Invalid(detail) => ApiError::field(field, detail),
        other => other.into(),
    }
}

/// 201 with the new secret.
fn new_secret(
    client_id: &str,
    (secret_id, secret): (String, crate::secret::ClientSecret),
    expires_at: Option<i64>,
) -> Response {
    let body = NewSecret::new(client_id, secret_id, &secret, expires_at);
    json_response(
        StatusCode::CREATED,
        serde_json::to_vec(&body).unwrap_or_default(),
        None,
    )
}
