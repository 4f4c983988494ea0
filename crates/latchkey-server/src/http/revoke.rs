//! `POST /oauth2/revoke` (RFC 7009): transport checks and a strict parse, the use case
//! (`service::revoke`), and the response.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::http::AppState;
use crate::http::access_log::{ClientTag, Outcome};
use crate::http::endpoint::receive;
use crate::service::{Revoked, revoke as revoke_token};

/// The revocation endpoint handler.
pub async fn revoke(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut log_as = None;
    let revoked = match receive(request, &state.trusted_proxies).await {
        Ok(request) => revoke_token(&state.services, &request, &mut log_as).await,
        Err(err) => Err(err),
    };
    let response = match revoked {
        Ok(revoked) => {
            // RFC 7009 §2.2: 200; the body is ignored by the client, so it is empty.
            let mut response = super::no_store_json(StatusCode::OK, "");
            response.headers_mut().remove(http::header::CONTENT_TYPE);
            response.extensions_mut().insert(Outcome(match revoked {
                Revoked::Revoked => "revoked",
                Revoked::NotActive => "not_active",
            }));
            response
        }
        Err(err) => err.into_response(),
    };
    super::access_log::tag_client(response, log_as.map(ClientTag))
}
