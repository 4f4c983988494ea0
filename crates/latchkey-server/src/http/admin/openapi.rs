//! The OpenAPI 3.1 document of the admin API, generated from the handlers' annotations and the
//! wire types (utoipa), served at `/admin/v1/openapi.json` without authentication.

use axum::response::Response;
use http::StatusCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{clients, json_response, wire};

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
    ),
    components(schemas(
        wire::Client,
        wire::CreatedClient,
        wire::NewClient,
        wire::ClientPatch,
        wire::ClientPage,
        wire::Problem,
    )),
    modifiers(&AdminToken),
    tags((name = "clients", description = "Registered clients")),
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

/// `GET /admin/v1/openapi.json`.
pub async fn document() -> Response {
    let json = AdminApi::openapi().to_json().unwrap_or_default();
    json_response(StatusCode::OK, json.into_bytes(), false)
}
