//! The OpenAPI 3.1 document of the admin API, generated from the handlers' annotations and the
//! wire types (utoipa), served at `/admin/v1/openapi.json` without authentication.

use axum::response::Response;
use http::StatusCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, clients, json_response, keys, registration_tokens, secrets, usage, wire};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "latchkey admin API",
        description = "Manage clients over HTTP. Authenticate with an access token of this \
                       server for the audience urn:latchkey:admin with the scope latchkey:admin \
                       (or latchkey:admin:read for reads); errors are RFC 9457 problems.",
    ),
    paths(
        clients::list,
        clients::create,
        clients::show,
        clients::update,
        clients::delete,
        clients::disable,
        clients::enable,
        clients::revoke_tokens,
        clients::replace_keys,
        secrets::list,
        secrets::add,
        secrets::rotate,
        secrets::revoke,
        keys::list,
        keys::rotate,
        audit::list,
        registration_tokens::list,
        registration_tokens::create,
        registration_tokens::revoke,
        usage::list,
        usage::not_caching,
    ),
    components(schemas(
        wire::Client,
        wire::CreatedClient,
        wire::NewClient,
        wire::ClientPatch,
        wire::ClientKeys,
        wire::ClientPage,
        wire::Problem,
        wire::Secret,
        wire::NewSecret,
        wire::AddSecret,
        wire::RotateSecret,
        wire::SigningKey,
        wire::RotateKeys,
        wire::Rotated,
        wire::AuditEvent,
        wire::AuditPage,
        wire::RegistrationToken,
        wire::CreatedRegistrationToken,
        wire::NewRegistrationToken,
        wire::UsageRow,
        wire::NotCachingRow,
    )),
    modifiers(&AdminToken),
    tags(
        (name = "clients", description = "Registered clients"),
        (name = "secrets", description = "A client's secrets, by id; a new one is shown once"),
        (name = "keys", description = "The keys that sign access tokens"),
        (name = "audit", description = "Who changed what"),
        (name = "usage", description = "What each client did, per minute"),
        (name = "registration", description = "Initial access tokens for dynamic client registration (RFC 7591)"),
    ),
)]
pub struct AdminApi;

/// The `admin_token` security scheme: a bearer token.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /admin/v1/openapi.json`: built once, on first request.
pub async fn document() -> Response {
    static DOCUMENT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let json = DOCUMENT.get_or_init(|| {
        AdminApi::openapi()
            .to_json()
            .unwrap_or_default()
            .into_bytes()
    });
    json_response(StatusCode::OK, json.clone(), None)
}
