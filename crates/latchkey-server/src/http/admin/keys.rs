//! `/admin/v1/keys`: the signing keys, never a private key.

use std::str::FromStr as _;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use latchkey_proto::SigningAlg;

use super::wire::{RotateKeys, Rotated, SigningKey};
use super::{Admin, ApiError, confirmed, json_response};
use crate::http::AppState;
use crate::service::admin;
use crate::service::admin_auth::Access;

/// List the signing keys with their state and times.
#[utoipa::path(get, path = "/admin/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "The keys, oldest first", body = Vec<SigningKey>),
        super::wire::Refusals,
    ),
    security(("admin_token" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    Admin::authorize(&state, request, Access::Read).await?;
    let keys = admin::list_keys(state.services.store.as_ref()).await?;
    let keys: Vec<SigningKey> = keys.iter().map(SigningKey::from).collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&keys).unwrap_or_default(),
        None,
    ))
}

/// Rotate: the next key signs, the current one retires, a new next key is published. Refused
/// (400) until the next key has been published for one JWKS max-age.
#[utoipa::path(post, path = "/admin/v1/keys/rotate", tag = "keys", request_body = RotateKeys,
    responses(
        (status = 200, description = "What rotated", body = Vec<Rotated>),
        super::wire::Refusals,
        super::wire::BadInput,
        super::wire::BodyRefusals,
    ),
    security(("admin_token" = [])))]
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let body: RotateKeys = request.json()?;
    let alg = body
        .alg
        .as_deref()
        .map(SigningAlg::from_str)
        .transpose()
        .map_err(|_| ApiError::field("alg", "alg must be ES256, EdDSA or RS256"))?;
    let services = &state.services;
    let applied = admin::rotate_keys(
        services.store.as_ref(),
        services.clock.as_ref(),
        &request.actor,
        services.cache.key_source(),
        alg,
    )
    .await?;
    let rotated: Vec<Rotated> = confirmed(applied).iter().map(Rotated::from).collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&rotated).unwrap_or_default(),
        None,
    ))
}
