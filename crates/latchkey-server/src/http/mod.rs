//! The HTTP surface: one file per endpoint, the router, and the one place that renders errors.

pub mod access_log;
pub mod admin;
mod console;
mod discovery;
mod endpoint;
pub mod error;
mod health;
mod introspect;
mod register;
mod revoke;
mod token;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::{any, get};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::service::Services;
use crate::tls::Tls;

/// Paths of the endpoints, relative to the issuer.
pub mod paths {
    /// RFC 6749 §3.2 token endpoint.
    pub const TOKEN: &str = "/oauth2/token";
    /// RFC 7662 §2 introspection endpoint.
    pub const INTROSPECT: &str = "/oauth2/introspect";
    /// RFC 7009 §2 revocation endpoint.
    pub const REVOKE: &str = "/oauth2/revoke";
    /// RFC 7591 §3 registration endpoint; RFC 7592's client configuration endpoints are
    /// below it, one per client.
    pub const REGISTER: &str = "/oauth2/register";
    /// The JWK Set.
    pub const JWKS: &str = "/jwks";
    /// RFC 8414 §3 metadata.
    pub const METADATA: &str = "/.well-known/oauth-authorization-server";
    /// The same document where OpenID Connect clients look for it.
    pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
    /// Liveness.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness.
    pub const READYZ: &str = "/readyz";
}

/// Everything the request handlers share. Passed explicitly; there is no global state.
pub struct AppState {
    /// The use cases, and the state and settings they work with.
    pub services: Services,
    /// TLS, when this server terminates it.
    pub tls: Option<Tls>,
    /// The RFC 8414 document, serialised once.
    pub metadata_json: Bytes,
    /// `max-age` of the metadata.
    pub metadata_max_age: u32,
    /// `max-age` of the JWK Set.
    pub jwks_max_age: u32,
    /// Set when shutdown begins, so readiness turns false before connections drain.
    pub shutting_down: AtomicBool,
    /// With a listener of its own (`--admin-listen`), the origin the admin API is reached by
    /// (`--admin-url`, else the listener's address): what a DPoP proof's `htu` must name
    /// there. `None`: the admin API is on the main listener, under the issuer's origin.
    pub admin_origin: Option<String>,
    /// The token endpoint on that listener (`{admin_origin}/oauth2/token`): what a DPoP
    /// proof's `htu` must name there.
    pub admin_token_endpoint: Option<String>,
    /// Serve the web console (`/console/`) with the admin API.
    pub console: bool,
    /// Peers trusted to name the client's address in `X-Forwarded-For`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Builds the router for `state`.
///
/// When the issuer has a path (`https://host/auth`), the endpoints it advertises live under
/// that path, so they are served there — and at the root as well, for proxies that strip the
/// prefix. RFC 8414 §3.1 also puts the metadata at `/.well-known/oauth-authorization-server/auth`.
///
/// The admin API is served here too, unless `admin_apart` (it then has a listener of its own,
/// [`admin_router`]).
pub fn router(state: Arc<AppState>, issuer_path: &str, admin_apart: bool) -> Router {
    let mut endpoints: Router<Arc<AppState>> = Router::new()
        .route(paths::TOKEN, any(token::token))
        .route(paths::INTROSPECT, any(introspect::introspect))
        .route(paths::REVOKE, any(revoke::revoke))
        .route(paths::REGISTER, any(register::register))
        .route(
            &format!("{}/{{client_id}}", paths::REGISTER),
            any(register::configure),
        )
        .route(paths::METADATA, get(discovery::metadata))
        .route(paths::OPENID_CONFIGURATION, get(discovery::metadata))
        .route(paths::JWKS, get(discovery::jwks))
        .route(paths::HEALTHZ, get(health::alive))
        .route(paths::READYZ, get(health::ready));
    if !admin_apart {
        endpoints = endpoints.nest(admin::PREFIX, admin::routes());
        if state.console {
            endpoints = endpoints.merge(console::routes());
        }
    }
    let router = if issuer_path.is_empty() {
        endpoints
    } else {
        Router::new()
            .route(
                &format!("{}{issuer_path}", paths::METADATA),
                get(discovery::metadata),
            )
            .nest(issuer_path, endpoints.clone())
            .merge(endpoints)
    };
    router
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            access_log::log_requests,
        ))
        .with_state(state)
}

/// The router of the metrics listener (`--metrics-listen`): `GET /metrics`, the Prometheus
/// text format.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    let services = &state.services;
    let body = services.metrics.render(services.cache.stats());
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The router of an admin listener of its own (`--admin-listen`): the admin API, the
/// console, and the token endpoint for admin tokens only (where admin clients, and the
/// console, get their tokens without leaving that origin).
pub fn admin_router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .nest(admin::PREFIX, admin::routes())
        .route(paths::TOKEN, any(token::admin_token));
    if state.console {
        router = router.merge(console::routes());
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            access_log::log_requests,
        ))
        .with_state(state)
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// A JSON response that no cache may keep: RFC 6749 §5.1 for tokens, and latchkey's
/// convention for every OAuth error (docs/CONFORMANCE.md, "Request limits and transport").
fn no_store_json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
    headers.insert(header::CACHE_CONTROL, NO_STORE);
    headers.insert(header::PRAGMA, NO_CACHE);
    response
}

/// A public JSON document that caches may keep for `max_age` seconds.
fn cacheable_json(body: Bytes, max_age: u32) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
    if let Ok(value) = HeaderValue::try_from(format!("public, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}
