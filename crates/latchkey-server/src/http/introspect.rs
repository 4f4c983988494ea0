//! `POST /oauth2/introspect` (RFC 7662): transport checks and a strict parse, the use case
//! (`service::introspect`), and the response.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use latchkey_proto::IntrospectionResponse;

use crate::error::OAuthError;
use crate::http::AppState;
use crate::http::access_log::{ClientTag, Outcome};
use crate::http::endpoint::receive;
use crate::service::introspect as introspect_token;

/// The introspection endpoint handler.
pub async fn introspect(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut log_as = None;
    let answer = match receive(request, &state.trusted_proxies).await {
        Ok(request) => introspect_token(&state.services, &request, &mut log_as).await,
        Err(err) => Err(err),
    };
    let response = match answer {
        Ok(answer) => respond(&answer),
        Err(err) => err.into_response(),
    };
    super::access_log::tag_client(response, log_as.map(ClientTag))
}

/// RFC 7662 §2.2: 200 with a JSON object; never cached.
fn respond(answer: &IntrospectionResponse) -> Response {
    match serde_json::to_vec(answer) {
        Ok(json) => {
            let mut response = super::no_store_json(StatusCode::OK, json);
            response.extensions_mut().insert(Outcome(if answer.active {
                "active"
            } else {
                "inactive"
            }));
            response
        }
        Err(_) => OAuthError::temporarily_unavailable().into_response(),
    }
}
