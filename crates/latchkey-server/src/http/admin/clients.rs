//! `/admin/v1/clients`: register, list, show, change and delete clients.

use std::str::FromStr as _;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse as _, Response};
use http::{HeaderValue, StatusCode, header};
use latchkey_proto::{ClientAuthMethod, GrantType, TokenFormat};
use serde::Deserialize;

use super::wire::{Client, ClientPage, ClientPatch, CreatedClient, KeyFields, NewClient};
use super::{
    Admin, ApiError, PREFIX, confirmed, etag, json_response, limit_param, query_params,
    refuse_lockout,
};
use crate::http::AppState;
use crate::model::{
    ADMIN_AUDIENCE, ADMIN_SCOPE, ClientRecord, ClientUpdate, DEFAULT_TOKEN_TTL, QuotaMode, Rate,
    TokenLimits,
};
use crate::service::admin::{self, ClientKeys};
use crate::service::admin_auth::Access;

/// `GET /clients` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The `next` of the previous page.
    after: Option<String>,
    /// At most this many clients (1 to 1,000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only clients whose name contains this, ignoring case.
    name: Option<String>,
}

/// The query of `GET /clients`.
fn list_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    let mut params = query_params(query, &["after", "limit", "name"])?;
    let limit = limit_param(&mut params)?;
    Ok(ListParams {
        after: params.remove("after"),
        limit,
        name: params.remove("name"),
    })
}

/// The client's JSON and the response for it, with its `ETag`.
fn client_response(status: StatusCode, client: &ClientRecord) -> Response {
    let json = serde_json::to_vec(&Client::from(client)).unwrap_or_default();
    json_response(status, json, Some(etag(client)))
}

/// List clients, by id, a page at a time.
#[utoipa::path(get, path = "/admin/v1/clients", tag = "clients", params(ListParams),
    responses(
        (status = 200, description = "A page of clients", body = ClientPage),
        super::wire::Refusals,
        super::wire::BadInput,
    ),
    security(("admin_token" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let query = request.uri().query().map(str::to_owned);
    Admin::authorize(&state, request, Access::Read).await?;
    let params = list_params(query.as_deref())?;
    let services = &state.services;
    let (clients, next) = admin::list_clients_page(
        services.store.as_ref(),
        params.after.as_deref().unwrap_or(""),
        params.limit.unwrap_or(100),
        params.name.as_deref(),
    )
    .await?;
    let page = ClientPage {
        items: clients.iter().map(Client::from).collect(),
        next,
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&page).unwrap_or_default(),
        None,
    ))
}

/// Register a client. A client that uses a secret gets one, shown in this response only.
#[utoipa::path(post, path = "/admin/v1/clients", tag = "clients", request_body = NewClient,
    responses(
        (status = 201, description = "Registered", body = CreatedClient,
            headers(("Location" = String, description = "The client's URL"), ("ETag" = String))),
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
    let new: NewClient = request.json()?;
    let auth_method =
        ClientAuthMethod::from_str(new.auth_method.as_deref().unwrap_or("client_secret_basic"))
            .map_err(|_| {
                ApiError::field(
                    "auth_method",
                    "auth_method must be client_secret_basic, client_secret_post, \
                     private_key_jwt, tls_client_auth or self_signed_tls_client_auth",
                )
            })?;
    let Ok(token_format) = TokenFormat::from_str(new.token_format.as_deref().unwrap_or("jwt"))
    else {
        return Err(ApiError::field(
            "token_format",
            "token_format must be jwt or opaque",
        ));
    };
    let grant_types = new
        .grant_types
        .as_deref()
        .unwrap_or("client_credentials")
        .split(' ')
        .filter(|g| !g.is_empty())
        .map(GrantType::from_str)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            ApiError::field("grant_types", "grant_types may only be client_credentials")
        })?;
    if new.federated_issuer.is_none()
        && (new.federated_subject.is_some()
            || new.federated_audience.is_some()
            || new.federated_max_token_age_seconds.is_some())
    {
        return Err(ApiError::field(
            "federated_issuer",
            "the federated_* members need federated_issuer",
        ));
    }
    let limits = TokenLimits {
        rate: rate_field("token_rate", new.token_rate.as_deref())?.flatten(),
        quota: rate_field("token_quota", new.token_quota.as_deref())?.flatten(),
        mode: mode_field(new.quota_mode.as_deref())?.unwrap_or_default(),
    };
    let services = &state.services;
    let store = services.store.as_ref();
    let clock = services.clock.as_ref();
    let fields = new.key_fields();
    let material = key_material(&fields)?;
    let keys = key_source(&fields, &material, services.remote_keys.allows_private())?;
    let registration = admin::NewClient {
        name: new.name.clone(),
        scope: vec![new.scope.clone()],
        audience: new.audience.clone(),
        token_ttl_seconds: new.token_ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL),
        auth_method,
        grant_types,
        can_introspect: new.can_introspect,
        token_format,
        reuse_tokens: new.reuse_tokens,
        limits,
    };
    let created = match keys {
        None => admin::create_client(store, clock, &request.actor, registration)
            .await
            .map(|applied| {
                let (client, secret) = confirmed(applied);
                (client, Some(secret))
            }),
        Some(keys) => admin::create_key_client(store, clock, &request.actor, registration, keys)
            .await
            .map(|applied| (confirmed(applied), None)),
    };
    let (client, secret) = match created {
        Ok(created) => created,
        Err(err) => return Err(err.into()),
    };
    let wire = Client::from(&client);
    let tag = etag(&client);
    let body = CreatedClient {
        client: wire,
        client_secret: secret.map(|s| s.expose().to_owned()),
    };
    let mut response = json_response(
        StatusCode::CREATED,
        serde_json::to_vec(&body).unwrap_or_default(),
        None,
    );
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::try_from(format!("{PREFIX}/clients/{}", client.client_id)) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(tag) = HeaderValue::try_from(tag) {
        headers.insert(header::ETAG, tag);
    }
    Ok(response)
}

/// The owned parts of a request's key source (a JWK Set as text, certificates as DER), read
/// before they are borrowed as a [`ClientKeys`].
struct KeyMaterial {
    jwks: Option<String>,
    certificates: Option<Vec<Vec<u8>>>,
}

fn key_material(fields: &KeyFields<'_>) -> Result<KeyMaterial, ApiError> {
    // The shape is checked here, before any precondition: bad input is a 400 whatever
    // `If-Match` says.
    if fields.jwks.is_some_and(|jwks| !jwks.is_object()) {
        return Err(ApiError::field(
            "jwks",
            "jwks must be a JWK Set: an object with \"keys\"",
        ));
    }
    let certificates = fields
        .certificates_pem
        .map(|pem| admin::certificates_from_pem(pem.as_bytes()))
        .transpose()
        .map_err(|e| ApiError::field("certificates_pem", e.to_string()))?;
    Ok(KeyMaterial {
        jwks: fields.jwks.map(serde_json::Value::to_string),
        certificates,
    })
}

/// The one key source a request names, if any: two are a 400 naming the second.
fn key_source<'a>(
    fields: &KeyFields<'a>,
    material: &'a KeyMaterial,
    allow_private: bool,
) -> Result<Option<ClientKeys<'a>>, ApiError> {
    let mut given: Vec<(&'static str, ClientKeys<'a>)> = Vec::new();
    if let Some(jwks) = &material.jwks {
        given.push(("jwks", ClientKeys::Jwks(jwks)));
    }
    if let Some(uri) = fields.jwks_uri {
        given.push(("jwks_uri", ClientKeys::JwksUri { uri, allow_private }));
    }
    if let Some(certificates) = &material.certificates {
        given.push(("certificates_pem", ClientKeys::Certificates(certificates)));
    }
    for (kind, value) in fields.tls {
        if let Some(value) = value {
            given.push((kind, ClientKeys::TlsSubject { kind, value }));
        }
    }
    if let Some(federated) = fields.federated {
        let Some(subject) = federated.subject else {
            return Err(ApiError::field(
                "federated_subject",
                "a federated client needs federated_subject",
            ));
        };
        given.push((
            "federated_issuer",
            ClientKeys::Federated {
                issuer: federated.issuer,
                subject,
                audience: federated.audience,
                max_token_age: federated.max_token_age,
                allow_private,
            },
        ));
    }
    if given.len() > 1 {
        let names: Vec<&str> = given.iter().map(|(name, _)| *name).collect();
        return Err(ApiError::field(
            given[1].0,
            format!("give one of {}, not several", names.join(", ")),
        ));
    }
    Ok(given.pop().map(|(_, keys)| keys))
}

/// Replace what authenticates a client without a secret: its JWK Set or `jwks_uri`
/// (`private_key_jwt`), its certificates (`self_signed_tls_client_auth`) or its certificate
/// subject (`tls_client_auth`). Key rotation: the new ones work at once, the old ones no more.
#[utoipa::path(put, path = "/admin/v1/clients/{id}/keys", tag = "clients", request_body = super::wire::ClientKeys,
    params(("id" = String, Path, description = "The client id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change was made against")),
    responses(
        (status = 200, description = "The client with its new keys", body = Client, headers(("ETag" = String))),
        super::wire::Refusals,
        super::wire::BadInput,
        super::wire::BodyRefusals,
        super::wire::NotFound,
        super::wire::PreconditionFailed,
    ),
    security(("admin_token" = [])))]
pub async fn replace_keys(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let body: super::wire::ClientKeys = request.json()?;
    let fields = body.key_fields();
    let material = key_material(&fields)?;
    let allow_private = state.services.remote_keys.allows_private();
    let Some(keys) = key_source(&fields, &material, allow_private)? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "give the new jwks, jwks_uri, certificates_pem or tls_client_auth_* subject",
            None,
        ));
    };
    change(
        &state,
        &request,
        &id,
        false,
        |store, clock, actor, expected| {
            Box::pin(admin::replace_client_keys(
                store, clock, actor, &id, keys, expected,
            ))
        },
    )
    .await
}

/// Show one client.
#[utoipa::path(get, path = "/admin/v1/clients/{id}", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 200, description = "The client", body = Client, headers(("ETag" = String))),
        super::wire::Refusals,
        super::wire::NotFound,
    ),
    security(("admin_token" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    Admin::authorize(&state, request, Access::Read).await?;
    let client = admin::show_client(state.services.store.as_ref(), &id).await?;
    Ok(client_response(StatusCode::OK, &client))
}

/// Change a client. With `If-Match`, only if it is still the version of that `ETag` (else
/// 412, and nothing changes).
#[utoipa::path(patch, path = "/admin/v1/clients/{id}", tag = "clients", request_body = ClientPatch,
    params(("id" = String, Path, description = "The client id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change was made against")),
    responses(
        (status = 200, description = "The client as changed", body = Client, headers(("ETag" = String))),
        super::wire::Refusals,
        super::wire::BadInput,
        super::wire::BodyRefusals,
        super::wire::NotFound,
        super::wire::Lockout,
        super::wire::PreconditionFailed,
    ),
    security(("admin_token" = [])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let patch: ClientPatch = request.json()?;
    let token_format = match patch.token_format.as_deref().map(TokenFormat::from_str) {
        None => None,
        Some(Ok(format)) => Some(format),
        Some(Err(_)) => {
            return Err(ApiError::field(
                "token_format",
                "token_format must be jwt or opaque",
            ));
        }
    };
    let update = ClientUpdate {
        name: patch.name,
        scope: patch.scope.map(|s| vec![s]),
        audience: patch.audience,
        token_ttl_seconds: patch.token_ttl_seconds,
        enabled: patch.enabled,
        can_introspect: patch.can_introspect,
        token_format,
        reuse_tokens: patch.reuse_tokens,
        token_rate: rate_field("token_rate", patch.token_rate.as_deref())?,
        token_quota: rate_field("token_quota", patch.token_quota.as_deref())?,
        quota_mode: mode_field(patch.quota_mode.as_deref())?,
        ..ClientUpdate::default()
    };
    // Bad input is a 400 whatever the preconditions say.
    let update = admin::checked_update(update)?;
    // Disabling itself, or taking the admin scope or audience away from itself, would end the
    // caller's access in the middle of its work.
    let locks_out = update.enabled == Some(false)
        // (Only a writing admin gets here: keeping latchkey:admin:read alone would too.)
        || update
            .scope
            .as_ref()
            .is_some_and(|scope| !scope.iter().any(|s| s == ADMIN_SCOPE))
        || update
            .audience
            .as_ref()
            .is_some_and(|audience| !audience.iter().any(|a| a == ADMIN_AUDIENCE));
    apply(&state, &request, &id, locks_out, update).await
}

/// Disable a client: it fails authentication, and every token it holds is revoked.
#[utoipa::path(post, path = "/admin/v1/clients/{id}/disable", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 200, description = "The client", body = Client),
        super::wire::Refusals,
        super::wire::NotFound,
        super::wire::Lockout,
        super::wire::PreconditionFailed,
    ),
    security(("admin_token" = [])))]
pub async fn disable(
    state: State<Arc<AppState>>,
    id: Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    set_enabled(state, id, request, false).await
}

/// Enable a client again.
#[utoipa::path(post, path = "/admin/v1/clients/{id}/enable", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 200, description = "The client", body = Client),
        super::wire::Refusals,
        super::wire::NotFound,
        super::wire::PreconditionFailed,
    ),
    security(("admin_token" = [])))]
pub async fn enable(
    state: State<Arc<AppState>>,
    id: Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    set_enabled(state, id, request, true).await
}

async fn set_enabled(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
    enabled: bool,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let update = ClientUpdate {
        enabled: Some(enabled),
        ..ClientUpdate::default()
    };
    apply(&state, &request, &id, !enabled, update).await
}

/// Revoke every token the client holds now; its next token request gets a new one.
#[utoipa::path(post, path = "/admin/v1/clients/{id}/revoke-tokens", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 200, description = "The client", body = Client),
        super::wire::Refusals,
        super::wire::NotFound,
        super::wire::Lockout,
        super::wire::PreconditionFailed,
    ),
    security(("admin_token" = [])))]
pub async fn revoke_tokens(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let update = ClientUpdate {
        revoke_tokens: true,
        ..ClientUpdate::default()
    };
    apply(&state, &request, &id, true, update).await
}

/// Delete a client and its secrets; its tokens stop working.
#[utoipa::path(delete, path = "/admin/v1/clients/{id}", tag = "clients",
    params(("id" = String, Path, description = "The client id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion was decided on")),
    responses(
        (status = 204, description = "Deleted"),
        super::wire::Refusals,
        super::wire::NotFound,
        super::wire::Lockout,
        super::wire::PreconditionFailed,
    ),
    security(("admin_token" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = Admin::authorize(&state, request, Access::Write).await?;
    let services = &state.services;
    refuse_lockout(&request, &id, true)?;
    let expected = check_if_match(&state, &request, &id).await?;
    confirmed(
        admin::delete_client(
            services.store.as_ref(),
            services.clock.as_ref(),
            &request.actor,
            &id,
            expected,
        )
        .await?,
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Applies `update` to client `id` as [`change`] does, held to the version `If-Match` named.
async fn apply(
    state: &AppState,
    request: &Admin,
    id: &str,
    locks_out: bool,
    update: ClientUpdate,
) -> Result<Response, ApiError> {
    change(
        state,
        request,
        id,
        locks_out,
        |store, clock, actor, expected| {
            let update = ClientUpdate {
                expected_version: expected,
                ..update
            };
            Box::pin(admin::update_client(store, clock, actor, id, update))
        },
    )
    .await
}

/// The boxed future of a change to one client.
type ChangeFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<admin::Applied<ClientRecord>, admin::AdminError>>
            + Send
            + 'a,
    >,
>;

/// Runs a change to client `id` after checking `If-Match`, and answers with the client.
/// `locks_out`: the change would cut its caller off when made to the caller's own client.
/// `run` gets the version `If-Match` named, which the store holds the change to: a change
/// made by someone else between the check and the change makes it fail with 412 too.
async fn change<'a>(
    state: &'a AppState,
    request: &'a Admin,
    id: &str,
    locks_out: bool,
    run: impl FnOnce(
        &'a dyn crate::store::Store,
        &'a dyn crate::clock::Clock,
        &'a crate::model::Actor,
        Option<i64>,
    ) -> ChangeFuture<'a>,
) -> Result<Response, ApiError> {
    refuse_lockout(request, id, locks_out)?;
    let expected = check_if_match(state, request, id).await?;
    let services = &state.services;
    let applied = run(
        services.store.as_ref(),
        services.clock.as_ref(),
        &request.actor,
        expected,
    )
    .await?;
    Ok(client_response(StatusCode::OK, &confirmed(applied)))
}

/// With `If-Match`, the client must still be the version of that `ETag` (RFC 9110 §13.1.1):
/// 412 otherwise. `*` matches any existing client. Returns the version the change must then
/// be made to (none for `*` or without `If-Match`).
async fn check_if_match(
    state: &AppState,
    request: &Admin,
    id: &str,
) -> Result<Option<i64>, ApiError> {
    let Some(wanted) = request.if_match() else {
        return Ok(None);
    };
    let client = admin::show_client(state.services.store.as_ref(), id).await?;
    if wanted.trim() == "*" {
        return Ok(None);
    }
    let current = etag(&client);
    if wanted.split(',').any(|tag| tag.trim() == current) {
        Ok(Some(client.version))
    } else {
        Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "the client changed since that ETag; read it again and retry",
            None,
        ))
    }
}

/// A rate member: `N/min` and the like, or `off` (`Some(None)`); absent is `None`.
fn rate_field(name: &str, value: Option<&str>) -> Result<Option<Option<Rate>>, ApiError> {
    match value {
        None => Ok(None),
        Some("off") => Ok(Some(None)),
        Some(text) => Rate::parse(text)
            .map(|rate| Some(Some(rate)))
            .map_err(|why| ApiError::field(name, format!("{name}: {why}"))),
    }
}

/// The `quota_mode` member: `enforce` or `monitor`.
fn mode_field(value: Option<&str>) -> Result<Option<QuotaMode>, ApiError> {
    value
        .map(|mode| QuotaMode::parse(mode).map_err(|why| ApiError::field("quota_mode", why)))
        .transpose()
}
