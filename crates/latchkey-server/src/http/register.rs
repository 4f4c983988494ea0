//! `/oauth2/register` (RFC 7591 §3) and each client's configuration endpoint below it
//! (`/oauth2/register/{client_id}`, RFC 7592 §2): JSON in, the use case in
//! `service::registration`, the client information response out. Errors are OAuth error
//! bodies (`invalid_client_metadata`, `invalid_token` with a `Bearer` challenge, ...).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use latchkey_proto::{ClientInformation, RegistrationRequest};

use super::AppState;
use super::endpoint::read_body;
use crate::error::OAuthError;
use crate::model::ClientRecord;
use crate::service::registration;
use crate::tls::client_auth_methods;

/// Registration bodies over 64 KiB are refused with 413 (a JWK Set of the most keys a client
/// may register fits).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// `POST /oauth2/register`.
pub async fn register(State(state): State<Arc<AppState>>, request: Request) -> Response {
    respond(handle_register(&state, request).await, "POST")
}

/// `GET`, `PUT` or `DELETE /oauth2/register/{client_id}`.
pub async fn configure(
    State(state): State<Arc<AppState>>,
    Path(client_id): Path<String>,
    request: Request,
) -> Response {
    respond(
        handle_configure(&state, &client_id, request).await,
        "GET, PUT, DELETE",
    )
}

fn respond(result: Result<Response, OAuthError>, allow: &'static str) -> Response {
    match result {
        Ok(response) => response,
        Err(err) => {
            let method_not_allowed = err.status == StatusCode::METHOD_NOT_ALLOWED;
            let mut response = err.into_response();
            if method_not_allowed {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            response
        }
    }
}

async fn handle_register(state: &AppState, request: Request) -> Result<Response, OAuthError> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return Err(not_allowed());
    }
    refuse_query(&parts.uri)?;
    let authorization = single_authorization(&parts.headers)?;
    // The token first: without one, nothing is said about the metadata.
    let token = registration::initial_token(&state.services, authorization).await?;
    let metadata = json_body(&parts.headers, body).await?;
    let supported = client_auth_methods(state.tls.as_ref());
    let registered = registration::register(&state.services, &supported, &token, &metadata).await?;
    let mut information = information(state, &registered.client, &registered.access_token);
    information.client_secret = registered.secret.map(|s| s.expose().to_owned());
    Ok(render(StatusCode::CREATED, &information))
}

async fn handle_configure(
    state: &AppState,
    client_id: &str,
    request: Request,
) -> Result<Response, OAuthError> {
    let (parts, body) = request.into_parts();
    if !matches!(parts.method, Method::GET | Method::PUT | Method::DELETE) {
        return Err(not_allowed());
    }
    refuse_query(&parts.uri)?;
    let authorization = single_authorization(&parts.headers)?;
    let services = &state.services;
    let configured = registration::configured(services, client_id, authorization).await?;
    let client = match parts.method {
        Method::PUT => {
            let metadata = json_body(&parts.headers, body).await?;
            let supported = client_auth_methods(state.tls.as_ref());
            registration::update(services, &supported, configured, &metadata).await?
        }
        Method::DELETE => {
            registration::delete(services, configured).await?;
            // RFC 7592 §2.3: 204 with no body.
            let mut response = super::no_store_json(StatusCode::NO_CONTENT, "");
            response.headers_mut().remove(header::CONTENT_TYPE);
            return Ok(response);
        }
        _ => configured.client,
    };
    // The token the client just presented: RFC 7592 §3 makes it part of the answer, and only
    // its hash is stored.
    let token = bearer_token(authorization);
    Ok(render(StatusCode::OK, &information(state, &client, token)))
}

/// Like the other OAuth endpoints, these take no query: tokens and metadata in a URI end up
/// in logs.
fn refuse_query(uri: &http::Uri) -> Result<(), OAuthError> {
    if uri.query().is_some() {
        return Err(OAuthError::invalid_request(
            "this endpoint takes no query parameters",
        ));
    }
    Ok(())
}

fn not_allowed() -> OAuthError {
    OAuthError::invalid_request_with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method",
    )
}

/// The one `Authorization` header's value, if any; two are `invalid_request`.
fn single_authorization(headers: &HeaderMap) -> Result<Option<&[u8]>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    Ok(first.map(HeaderValue::as_bytes))
}

/// The token of a `Bearer` header that was already accepted.
fn bearer_token(authorization: Option<&[u8]>) -> &str {
    authorization
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split_once(' '))
        .map_or("", |(_, token)| token.trim())
}

/// The body as a JSON object of client metadata: 400 `invalid_client_metadata` saying what is
/// wrong otherwise (RFC 7591 §3.2.2), 415-like `invalid_request` for another media type.
async fn json_body(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<RegistrationRequest, OAuthError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(OAuthError::invalid_request_with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the client metadata as application/json (RFC 7591 section 3.1)",
        ));
    }
    let body = read_body(headers, body, MAX_BODY_BYTES).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| OAuthError::invalid_client_metadata(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(OAuthError::invalid_client_metadata(
            "the body must be a JSON object of client metadata",
        ));
    }
    serde_json::from_value(value).map_err(|e| OAuthError::invalid_client_metadata(e.to_string()))
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3) for `client`.
fn information(state: &AppState, client: &ClientRecord, access_token: &str) -> ClientInformation {
    let issuer = &state.services.issuer;
    ClientInformation {
        client_id: client.client_id.clone(),
        client_secret: None,
        client_id_issued_at: Some(client.created_at),
        // Secrets issued here do not expire (0, RFC 7591 §3.2.1); the member is present
        // whenever the client uses one.
        client_secret_expires_at: client.auth_method().uses_secret().then_some(0),
        registration_access_token: Some(access_token.to_owned()),
        registration_client_uri: Some(format!(
            "{issuer}{}/{}",
            super::paths::REGISTER,
            client.client_id
        )),
        metadata: registration::metadata(client),
    }
}

fn render(status: StatusCode, information: &ClientInformation) -> Response {
    match serde_json::to_vec(information) {
        Ok(json) => super::no_store_json(status, json),
        Err(_) => OAuthError::server_error().into_response(),
    }
}
