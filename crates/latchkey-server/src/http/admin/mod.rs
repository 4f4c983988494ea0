//! The admin API, `/admin/v1`: JSON over HTTP for what `latchkey client ...` does, for
//! pipelines and tools. Callers authenticate with access tokens this server issued for the
//! admin audience (`service::admin_auth`); errors are RFC 9457 problems; a client's `ETag`
//! lets a change say which version it was made against (`If-Match`, 412 when it moved on).
//! Handlers here only read the request, call `service::admin` and render.

mod audit;
mod clients;
mod keys;
pub mod openapi;
mod registration_tokens;
mod secrets;
mod usage;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;

use self::wire::Problem;
use super::AppState;
use crate::model::{Actor, ClientRecord};
use crate::service::admin::AdminError;
use crate::service::admin_auth::{Access, AdminAuthError, AdminCredentials, authorize_admin};
use crate::store::StoreError;
use crate::tls::TlsPeer;

/// Where the admin API lives, relative to the issuer.
pub const PREFIX: &str = "/admin/v1";

/// Request bodies over 64 KiB are refused with 413 (a JWK Set of the most keys a client may
/// register fits).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The admin API's routes, to be nested at [`PREFIX`].
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/clients", get(clients::list).post(clients::create))
        .route(
            "/clients/{id}",
            get(clients::show)
                .patch(clients::update)
                .delete(clients::delete),
        )
        .route(
            "/clients/{id}/keys",
            axum::routing::put(clients::replace_keys),
        )
        .route("/clients/{id}/disable", post(clients::disable))
        .route("/clients/{id}/enable", post(clients::enable))
        .route("/clients/{id}/revoke-tokens", post(clients::revoke_tokens))
        .route(
            "/clients/{id}/secrets",
            get(secrets::list).post(secrets::add),
        )
        .route("/clients/{id}/secrets/rotate", post(secrets::rotate))
        .route(
            "/clients/{id}/secrets/{secret_id}",
            axum::routing::delete(secrets::revoke),
        )
        .route("/keys", get(keys::list))
        .route("/keys/rotate", post(keys::rotate))
        .route("/audit", get(audit::list))
        .route("/usage", get(usage::list))
        .route("/usage/not-caching", get(usage::not_caching))
        .route(
            "/registration-tokens",
            get(registration_tokens::list).post(registration_tokens::create),
        )
        .route(
            "/registration-tokens/{token_id}",
            axum::routing::delete(registration_tokens::revoke),
        )
        .route("/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such admin resource", None) })
        // A known resource with another method: a problem too (axum adds `Allow`).
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this resource does not take that method",
                None,
            )
        })
        .layer(axum::middleware::from_fn(name_unconfirmed_servers))
}

/// The response header naming the servers that did not confirm a change in time (their ids,
/// `HOST/ADDRESS/ID`, comma-separated), so a caller of the API learns it as the CLI does.
pub const UNCONFIRMED_SERVERS: &str = "latchkey-unconfirmed-servers";

tokio::task_local! {
    /// The servers [`confirmed`] found behind, while a request runs.
    static UNCONFIRMED: std::cell::RefCell<Vec<String>>;
}

/// Runs the request with room for [`confirmed`] to note unconfirmed servers, and names them in
/// [`UNCONFIRMED_SERVERS`].
async fn name_unconfirmed_servers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (mut response, servers) = UNCONFIRMED
        .scope(std::cell::RefCell::new(Vec::new()), async {
            let response = next.run(request).await;
            (response, UNCONFIRMED.with(|servers| servers.take()))
        })
        .await;
    if !servers.is_empty()
        && let Ok(value) = axum::http::HeaderValue::try_from(servers.join(", "))
    {
        response.headers_mut().insert(UNCONFIRMED_SERVERS, value);
    }
    response
}

/// An admin request, read: its caller checked, its body (if any) in memory.
struct Admin {
    /// Who acts, for the audit trail.
    actor: Actor,
    headers: HeaderMap,
    body: Bytes,
}

impl Admin {
    /// Reads `request` and checks that its token allows `access`.
    async fn authorize(
        state: &AppState,
        request: Request,
        access: Access,
    ) -> Result<Admin, ApiError> {
        let (parts, body) = request.into_parts();
        let certificate = parts
            .extensions
            .get::<ConnectInfo<TlsPeer>>()
            .and_then(|peer| peer.0.certificates.clone());
        // The URL a DPoP proof must name: under the issuer's origin, or the admin listener's
        // configured one; never one the request itself names (a `Host` header).
        // The path as the client sent it: the router nested the admin API and took the prefix.
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.path(), |original| original.0.path());
        let url = match &state.admin_origin {
            Some(origin) => format!("{origin}{path}"),
            None => format!("{}{path}", origin(&state.services.issuer)),
        };
        let credentials = AdminCredentials {
            authorization: single(&parts.headers, "authorization")?,
            dpop: single(&parts.headers, "dpop")?,
            method: parts.method.as_str(),
            url: &url,
            certificate: certificate
                .as_ref()
                .and_then(|chain| chain.first())
                .map(AsRef::as_ref),
        };
        // RFC 9449 §7.1: a request made with the DPoP scheme is answered with a DPoP challenge.
        let dpop_scheme = credentials
            .authorization
            .is_some_and(|value| value.len() > 5 && value[..5].eq_ignore_ascii_case(b"DPoP "));
        let caller = authorize_admin(&state.services, &credentials, access)
            .await
            .map_err(|err| ApiError::refused(err, dpop_scheme))?;
        let body = axum::body::to_bytes(Body::new(body), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than 64 KiB",
                    None,
                )
            })?;
        Ok(Admin {
            actor: Actor::Admin(caller.client_id),
            headers: parts.headers,
            body,
        })
    }

    /// The body as JSON of type `T`: 400 naming the field at fault otherwise.
    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if !self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
            })
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as application/json",
                None,
            ));
        }
        let invalid = |err: serde_json::Error| {
            let detail = err.to_string();
            let field = field_of(&detail);
            ApiError::new(StatusCode::BAD_REQUEST, detail.clone(), field)
        };
        // An object only: serde would also read a struct from an array of its fields.
        let value: serde_json::Value = serde_json::from_slice(&self.body).map_err(invalid)?;
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object",
                None,
            ));
        }
        serde_json::from_value(value).map_err(invalid)
    }

    /// The `If-Match` header, if one.
    fn if_match(&self) -> Option<&str> {
        self.headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
    }
}

/// The value of a change, once made; servers that did not confirm it in time are named in the
/// log and in the [`UNCONFIRMED_SERVERS`] header (the API's answer is the change's, which was
/// made).
fn confirmed<T>(applied: crate::service::admin::Applied<T>) -> T {
    if !applied.unconfirmed_servers.is_empty() {
        tracing::warn!(
            servers = ?applied.unconfirmed_servers,
            "servers did not confirm an admin change in time; they may use the old record until \
             they next reach the database"
        );
        let _ = UNCONFIRMED.try_with(|servers| {
            servers
                .borrow_mut()
                .extend(applied.unconfirmed_servers.iter().cloned());
        });
    }
    applied.value
}

/// An admin may not disable, delete or revoke the tokens or secrets of the client it is acting
/// as: that would end its own access in the middle of its work (409). Another admin, or the
/// CLI, can.
fn refuse_lockout(request: &Admin, id: &str, locks_out: bool) -> Result<(), ApiError> {
    if locks_out && request.actor.id() == id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "an admin client may not disable, delete, revoke the tokens of or take the admin \
             scope or audience from itself; use \
             another admin client or the CLI",
            None,
        ));
    }
    Ok(())
}

/// A query string, strictly: only the `allowed` parameters, each at most once (400 naming the
/// parameter otherwise).
fn query_params(
    query: Option<&str>,
    allowed: &[&str],
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let pairs =
        crate::form::parse(query.unwrap_or("").as_bytes(), allowed.len() + 1).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "the query is not valid application/x-www-form-urlencoded, or has too many \
                 parameters",
                None,
            )
        })?;
    let mut params = std::collections::HashMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::field(
                &name,
                format!("unknown parameter {name:?}"),
            ));
        }
        if params.contains_key(&name) {
            return Err(ApiError::field(&name, format!("{name} appears twice")));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// The number parameter `name` of a query, taken out of `params`: 400 naming it unless it is
/// from `min` to `max`.
fn number_param(
    params: &mut std::collections::HashMap<String, String>,
    name: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ApiError> {
    params
        .remove(name)
        .map(|value| {
            value
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::field(name, format!("{name} must be a number from {min} to {max}"))
                })
        })
        .transpose()
}

/// The id parameter `name` (a client id, or a key id): 400 naming it unless it is one the
/// server could hold (1 to 128 unreserved characters), so that nothing else reaches the
/// database.
fn id_param(
    params: &mut std::collections::HashMap<String, String>,
    name: &str,
) -> Result<Option<String>, ApiError> {
    params
        .remove(name)
        .map(|value| {
            if crate::protocol::syntax::is_client_id(&value) {
                Ok(value)
            } else {
                Err(ApiError::field(
                    name,
                    format!("{name} must be 1 to 128 letters, digits, '-', '.', '_' or '~'"),
                ))
            }
        })
        .transpose()
}

/// The `limit` of a page: 1 to 1,000.
fn limit_param(
    params: &mut std::collections::HashMap<String, String>,
) -> Result<Option<u32>, ApiError> {
    Ok(number_param(params, "limit", 1, 1000)?.and_then(|n| u32::try_from(n).ok()))
}

/// The one header of `name`; a repeated one is a 400.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a [u8]>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a header that may appear once appears more than once",
            None,
        ));
    }
    Ok(first.map(HeaderValue::as_bytes))
}

/// `scheme://host[:port]` of the issuer: what a DPoP proof's `htu` starts with.
fn origin(issuer: &str) -> &str {
    let after_scheme = issuer.find("://").map_or(0, |i| i + 3);
    match issuer[after_scheme..].find('/') {
        Some(slash) => &issuer[..after_scheme + slash],
        None => issuer,
    }
}

/// The field serde names in an error message (`unknown field `x``, `missing field `x``).
fn field_of(detail: &str) -> Option<&str> {
    let start = detail.find('`')? + 1;
    let len = detail[start..].find('`')?;
    Some(&detail[start..start + len])
}

/// The one error type of the admin API: an RFC 9457 problem, with the challenge of a refused
/// token or the `Retry-After` of an unavailable database.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    field: Option<String>,
    /// `WWW-Authenticate`, for 401 and 403 (RFC 6750 §3).
    challenge: Option<String>,
    /// `Retry-After: 1`, for 503.
    retry: bool,
}

impl ApiError {
    /// A problem of `status`, naming `field` when one is at fault.
    fn new(status: StatusCode, detail: impl Into<String>, field: Option<&str>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            field: field.map(str::to_owned),
            challenge: None,
            retry: false,
        }
    }

    /// 400 for `field`.
    fn field(field: &str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, detail, Some(field))
    }

    /// 503 with `Retry-After`.
    fn unavailable(detail: &str) -> Self {
        ApiError {
            retry: true,
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail, None)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").into(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(value) = self.challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if self.retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl ApiError {
    /// A refused token: 401 with the RFC 6750 §3 challenge (RFC 9449 §7.1's `DPoP` one, with
    /// the algorithms proofs may use, when the request used that scheme), 403 for the scope,
    /// 503.
    fn refused(err: AdminAuthError, dpop_scheme: bool) -> Self {
        let scheme = if dpop_scheme {
            let algs: Vec<&str> = latchkey_proto::SigningAlg::ALL
                .iter()
                .map(|alg| alg.as_str())
                .collect();
            format!(r#"DPoP realm="latchkey admin", algs="{}""#, algs.join(" "))
        } else {
            r#"Bearer realm="latchkey admin""#.to_owned()
        };
        let (status, challenge, detail) = match err {
            AdminAuthError::Missing => (
                StatusCode::UNAUTHORIZED,
                scheme.clone(),
                "an access token for the admin API is required (aud urn:latchkey:admin)",
            ),
            AdminAuthError::InvalidToken(why) => (
                StatusCode::UNAUTHORIZED,
                format!(r#"{scheme}, error="invalid_token", error_description="{why}""#),
                why,
            ),
            AdminAuthError::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                format!(r#"{scheme}, error="insufficient_scope", scope="{scope}""#),
                "the token's scope does not allow this operation",
            ),
            AdminAuthError::Unavailable => {
                return ApiError::unavailable("the database is unavailable; try again");
            }
        };
        ApiError {
            challenge: Some(challenge),
            ..ApiError::new(status, detail, None)
        }
    }
}

/// A failed admin operation.
impl From<AdminError> for ApiError {
    fn from(err: AdminError) -> Self {
        match err {
            // An operator may learn what a host resolves to.
            AdminError::Invalid(detail) | AdminError::HostAddress(detail) => {
                ApiError::new(StatusCode::BAD_REQUEST, detail, None)
            }
            AdminError::Field { field, message } => ApiError::field(field, message),
            AdminError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no client with id {id:?}"),
                None,
            ),
            AdminError::Store(StoreError::Precondition(_)) => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "the client changed since that ETag; read it again and retry",
                None,
            ),
            AdminError::Store(StoreError::Conflict(detail)) => {
                ApiError::new(StatusCode::CONFLICT, detail, None)
            }
            AdminError::Store(err) => {
                tracing::warn!(error = %err, "storage error on the admin API");
                ApiError::unavailable("the database is unavailable; try again")
            }
            AdminError::Key(err) => {
                tracing::error!(error = %err, "key error on the admin API");
                ApiError::unavailable("a signing key could not be used")
            }
        }
    }
}

/// The strong `ETag` of a client: its version (which every change moves on, so a change made
/// against it is held to it in the store) and a hash of its JSON and token epoch (so that a
/// client deleted and made again under the same id, at the same version, is told apart).
fn etag(client: &ClientRecord) -> String {
    let json = serde_json::to_vec(&wire::Client::from(client)).unwrap_or_default();
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(&json);
    context.update(&client.token_epoch.to_be_bytes());
    let digest = context.finish();
    format!(
        "\"{}.{}\"",
        client.version,
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])
    )
}

/// 200 (or `status`) with a JSON body and, when given, its `ETag`.
fn json_response(status: StatusCode, json: Vec<u8>, tag: Option<String>) -> Response {
    let mut response = (status, json).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(value) = tag.and_then(|t| HeaderValue::try_from(t).ok()) {
        headers.insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_the_issuer_without_its_path() {
        assert_eq!(origin("https://id.example/auth"), "https://id.example");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(
            field_of("unknown field `colour`, expected one of"),
            Some("colour")
        );
        assert_eq!(field_of("EOF while parsing"), None);
    }
}
