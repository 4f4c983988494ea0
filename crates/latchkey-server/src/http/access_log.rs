//! One log line per OAuth request: endpoint, client, outcome, status and latency. It never
//! records a secret, an Authorization header, a token or the query string.

use std::time::Instant;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// The client a request authenticated as (or claimed to be, when it looks like a client id).
#[derive(Debug, Clone)]
pub struct ClientTag(pub String);

/// Marks `response` with the client it was for, if one was claimed.
pub fn tag_client(mut response: Response, client: Option<ClientTag>) -> Response {
    if let Some(tag) = client {
        response.extensions_mut().insert(tag);
    }
    response
}

/// `issued`, or the RFC 6749 §5.2 error code.
#[derive(Debug, Clone, Copy)]
pub struct Outcome(pub &'static str);

/// The target of access-log events: `latchkey serve` formats these lines on a fast path of its
/// own (`serve_cmd.rs`), byte for byte as tracing-subscriber's default format would.
pub const TARGET: &str = "latchkey::access";

/// Middleware recording every request's latency (and a token request's outcome) in the
/// metrics, and writing the access log line for responses that carry an [`Outcome`].
pub async fn log_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // The URI shares the request head's buffer, so keeping it costs a reference count where
    // copying the path out cost an allocation per request.
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let outcome = response.extensions().get::<Outcome>().map(|o| o.0);
    let token_outcome = outcome.filter(|_| uri.path().ends_with(super::paths::TOKEN));
    state
        .services
        .metrics
        .request(uri.path(), started.elapsed().as_secs_f64(), token_outcome);
    if let Some(outcome) = outcome {
        let client_id = response
            .extensions()
            .get::<ClientTag>()
            .map_or("-", |c| c.0.as_str());
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        log_line(
            uri.path(),
            client_id,
            outcome,
            response.status().as_u16(),
            latency_us,
        );
    }
    response
}

/// The access log line of one request.
pub fn log_line(path: &str, client_id: &str, outcome: &str, status: u16, latency_us: u64) {
    tracing::info!(
        target: TARGET,
        path = %path,
        client_id,
        outcome,
        status,
        latency_us,
    );
}
