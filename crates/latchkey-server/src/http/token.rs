//! `POST /oauth2/token` (RFC 6749 §3.2, §4.4): a pipeline of small named steps —
//! transport checks → strict parse → grant type → authenticate → policy → issue → respond.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use latchkey_proto::{GrantType, TokenResponse, TokenType};

use crate::app::AppState;
use crate::error::OAuthError;
use crate::form::{self, FormError};
use crate::http::access_log::{ClientTag, Outcome};
use crate::protocol::client_auth::{authenticate, presented_credentials};
use crate::protocol::client_credentials::{access_token_claims, decide};
use crate::protocol::token_request::{MAX_PARAMETERS, TokenRequest};
use crate::secret::new_jti;

/// Checklist A: bodies over 16 KiB are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The token endpoint handler.
pub async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut client_tag = None;
    let mut response = match issue(&state, request, &mut client_tag).await {
        Ok(token) => issued(&token),
        Err(err) => err.into_response(),
    };
    if let Some(tag) = client_tag {
        response.extensions_mut().insert(tag);
    }
    response
}

async fn issue(
    state: &AppState,
    request: Request,
    client_tag: &mut Option<ClientTag>,
) -> Result<TokenResponse, OAuthError> {
    let (parts, body) = request.into_parts();
    check_transport(&parts.method, parts.uri.query(), &parts.headers)?;
    let authorization = single_authorization(&parts.headers)?;
    let body = read_body(&parts.headers, body).await?;
    let request = parse(&body)?;
    check_grant_type(request.grant_type.as_deref())?;

    let presented = presented_credentials(authorization, &request)?;
    let claimed = plausible_client_id(&presented.client_id);
    if claimed {
        *client_tag = Some(ClientTag(presented.client_id.clone()));
    }
    // A claimed id that cannot be one of ours is not looked up, but still costs a hash compare.
    let record = if claimed {
        state
            .clients
            .get(state.store.as_ref(), &presented.client_id)
            .await?
    } else {
        None
    };
    // Read after the lookup, so `iat` is the moment of issue even if the lookup waited.
    let now = state.clock.now();
    let client = authenticate(&presented, record.as_deref(), now)?;

    let grant = decide(client, request.scope.as_deref(), &request.resources)?;
    let claims = access_token_claims(&state.issuer, client, &grant, now, new_jti());
    let access_token = state.signing_key().sign_jwt(&claims).map_err(|err| {
        // Checklist H: no key, no token — never an unsigned or ephemeral one.
        tracing::error!(error = %err, "signing failed");
        OAuthError::temporarily_unavailable()
    })?;
    Ok(TokenResponse {
        access_token,
        token_type: TokenType::Bearer,
        expires_in: u64::try_from(grant.ttl_seconds).unwrap_or(0),
        scope: claims.scope,
    })
}

/// Checklist A: only POST, no parameters in the URI, and a form body.
fn check_transport(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), OAuthError> {
    // RFC 6749 §3.2: "The client MUST use the HTTP POST method".
    if method != Method::POST {
        return Err(OAuthError::invalid_request_with_status(
            StatusCode::METHOD_NOT_ALLOWED,
            "the token endpoint accepts POST only",
        ));
    }
    // RFC 6749 §2.3.1: credentials "MUST NOT be included in the request URI". Our endpoint URI
    // has no query of its own, so any query is refused (and never logged).
    if query.is_some() {
        return Err(OAuthError::invalid_request(
            "parameters must be sent in the request body, not the URI",
        ));
    }
    // RFC 6749 §4.4.2: the body is application/x-www-form-urlencoded.
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|media| media.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    Ok(())
}

/// Checklist C: two Authorization headers are `invalid_request`.
fn single_authorization(headers: &HeaderMap) -> Result<Option<&[u8]>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    Ok(first.map(|v| v.as_bytes()))
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, OAuthError> {
    let too_large = || {
        OAuthError::invalid_request_with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than 16 KiB",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // The limit also bounds chunked bodies that declare no length.
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|err| {
            if err.into_inner().is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                OAuthError::invalid_request("the request body could not be read")
            }
        })
}

fn parse(body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let pairs = form::parse(body, MAX_PARAMETERS).map_err(|err| match err {
        FormError::Malformed => OAuthError::invalid_request(
            "the body is not valid application/x-www-form-urlencoded UTF-8",
        ),
        FormError::TooManyParameters => OAuthError::invalid_request("too many parameters"),
    })?;
    TokenRequest::from_pairs(pairs)
}

/// RFC 6749 §4.4.2: `grant_type` is required and compared exactly (case-sensitive).
fn check_grant_type(grant_type: Option<&str>) -> Result<(), OAuthError> {
    match grant_type {
        None => Err(OAuthError::invalid_request("grant_type is required")),
        Some(g) if g == GrantType::ClientCredentials.as_str() => Ok(()),
        Some(_) => Err(OAuthError::unsupported_grant_type()),
    }
}

/// Client ids we generate are short and unreserved; anything else is not looked up or logged.
fn plausible_client_id(id: &str) -> bool {
    id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// RFC 6749 §5.1: 200 with `Cache-Control: no-store` and `Pragma: no-cache`.
fn issued(token: &TokenResponse) -> Response {
    match serde_json::to_vec(token) {
        Ok(json) => {
            let mut response = super::no_store_json(StatusCode::OK, json);
            response.extensions_mut().insert(Outcome("issued"));
            response
        }
        Err(_) => OAuthError::temporarily_unavailable().into_response(),
    }
}
