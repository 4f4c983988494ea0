//! RFC 8414 metadata and the JWK Set (RFC 7517), both serialised once and served from memory.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use crate::http::AppState;

/// `GET /.well-known/oauth-authorization-server` (and `openid-configuration`).
pub async fn metadata(State(state): State<Arc<AppState>>) -> Response {
    super::cacheable_json(state.metadata_json.clone(), state.metadata_max_age)
}

/// `GET /jwks`: public keys only. `Cache-Control: max-age` bounds how stale a verifier's copy
/// may be, which the key rotation timing relies on (docs/CONFORMANCE.md, "Signing keys and
/// rotation").
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let body = state.services.jwks_json();
    super::cacheable_json(body, state.jwks_max_age)
}
