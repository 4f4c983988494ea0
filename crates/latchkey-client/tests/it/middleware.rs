//! RFC 6750 §3.1: a resource server's 401 `invalid_token` evicts the token; the reqwest
//! middleware retries once with a new token, the tower layer makes the next call use one.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use latchkey_client::{BearerLayer, BearerMiddleware};
use tower::{Layer as _, Service as _};

use crate::helpers::{Stack, spawn_stack};

/// `(authorization header, body)` of each request the API received.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An API that records the bearer token of each request and rejects the first `reject`
/// requests with 401 `invalid_token`, or, under `/grpc`, the way a gRPC server does: HTTP 200
/// with `grpc-status: 16` (UNAUTHENTICATED) in a trailers-only response.
#[derive(Clone)]
struct Api {
    url: String,
    seen: Seen,
}

async fn spawn_api(reject: usize) -> Api {
    let seen = Seen::default();
    let router = axum::Router::new()
        .fallback(api)
        .with_state((Arc::clone(&seen), reject));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Api { url, seen }
}

async fn api(
    State((seen, reject)): State<(Seen, usize)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let token = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let count = {
        let mut seen = seen.lock().unwrap();
        seen.push((token, String::from_utf8(body.to_vec()).unwrap()));
        seen.len()
    };
    if count <= reject && uri.path().starts_with("/grpc") {
        let grpc = [("content-type", "application/grpc"), ("grpc-status", "16")];
        (StatusCode::OK, grpc, "").into_response()
    } else if count <= reject {
        let challenge = r#"Bearer realm="api", error="invalid_token", error_description="revoked""#;
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", challenge)],
            "",
        )
            .into_response()
    } else {
        (StatusCode::OK, "invoices").into_response()
    }
}

impl Api {
    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn reqwest_middleware_retries_once_with_a_fresh_token_after_invalid_token() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack.builder(&client).build().await.unwrap();
    let api = spawn_api(1).await;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerMiddleware::new(tokens.clone()))
        .build();

    let response = http
        .post(format!("{}/invoices", api.url))
        .body("replayable body")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "invoices");
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "exactly one retry");
    assert!(seen[0].0.starts_with("Bearer ey"));
    assert_ne!(seen[0].0, seen[1].0, "the retry carries a new token");
    assert_eq!(seen[1].1, "replayable body");
    assert_eq!(stack.relay.token_requests(), 2);
    assert_eq!(
        format!("Bearer {}", tokens.token().await.unwrap().secret()),
        seen[1].0,
        "the new token is the cached one"
    );

    // A further request reuses the cached token.
    http.get(format!("{}/invoices", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stack.relay.token_requests(), 2);
}

#[tokio::test]
async fn reqwest_middleware_retries_only_once() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack.builder(&client).build().await.unwrap();
    let api = spawn_api(usize::MAX).await;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerMiddleware::new(tokens))
        .build();
    let response = http.get(&api.url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.seen().len(), 2);
    assert_eq!(stack.relay.token_requests(), 2);

    // A request that brings its own Authorization header is left alone.
    let response = http
        .get(&api.url)
        .header("authorization", "Bearer mine")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.seen().last().unwrap().0, "Bearer mine");
    assert_eq!(stack.relay.token_requests(), 2);
}

/// Two requests to `path` on an API that rejects the first, through the tower layer over
/// hyper's client. Returns the stack (for its relay), the API, and the two answers.
async fn two_calls_through_tower(path: &str) -> (Stack, Api, Vec<(StatusCode, Bytes)>) {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack.builder(&client).build().await.unwrap();
    let api = spawn_api(1).await;
    let hyper_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
    let mut service = BearerLayer::new(tokens).layer(hyper_client);
    let mut answers = Vec::new();
    for body in ["one", "two"] {
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap();
        let request = http::Request::post(format!("{}{path}", api.url))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = service.call(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        answers.push((status, body));
    }
    (stack, api, answers)
}

#[tokio::test]
async fn tower_layer_adds_the_token_and_evicts_it_on_invalid_token() {
    let (stack, api, answers) = two_calls_through_tower("/x").await;
    assert_eq!(answers[0].0, 401);
    assert_eq!(answers[1], (StatusCode::OK, Bytes::from("invoices")));
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].0.starts_with("Bearer ey"));
    assert_ne!(seen[0].0, seen[1].0, "the rejected token was evicted");
    assert_eq!(stack.relay.token_requests(), 2);
}

#[tokio::test]
async fn tower_layer_evicts_the_token_on_grpc_unauthenticated() {
    let (stack, api, answers) = two_calls_through_tower("/grpc/grpc.health.v1.Health/Check").await;
    assert_eq!(
        answers[0].0, 200,
        "gRPC rejects with HTTP 200 and grpc-status 16"
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].0, seen[1].0, "the rejected token was evicted");
    assert_eq!(stack.relay.token_requests(), 2);
}
