//! Introspection mode (RFC 7662) for opaque tokens from the real server: answers cached until
//! the token expires or a short bound, inactive answers briefly, and never `active` without
//! an answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, select};
use latchkey_guard::{Guard, GuardBuilder, Invalid, Rejection};
use latchkey_proto::TokenFormat;
use tokio::sync::{mpsc, watch};

use crate::helpers::{API, Stack, serve, serve_api, spawn_stack};

async fn introspecting_guard(stack: &Stack, secret_override: Option<&str>) -> Guard {
    let (id, secret) = stack
        .register(|c| {
            c.can_introspect = true;
            c.grant_types = vec![];
        })
        .await;
    Guard::builder()
        .issuer(&stack.issuer)
        .audience(API)
        .introspection(id, secret_override.unwrap_or(&secret))
        .introspection_cache(Duration::from_secs(60), Duration::from_secs(5))
        .clock(stack.clock.clone())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn opaque_tokens_are_introspected_and_the_answer_reused() {
    let stack = spawn_stack().await;
    let guard = introspecting_guard(&stack, None).await;
    let (id, secret) = stack
        .register(|c| c.token_format = TokenFormat::Opaque)
        .await;
    let token = stack.token_for(&id, &secret, "scope=read").await;
    assert!(token.starts_with("lkat_"));

    let caller = guard.authenticate(&token).await.unwrap();
    assert_eq!(caller.client_id(), id);
    assert!(caller.has_scope("read"));
    for _ in 0..10 {
        guard.authenticate(&token).await.unwrap();
    }
    assert_eq!(guard.introspections(), 1, "answers are reused");

    // Revoked on the server: still accepted while the answer is reused (60 s at most)...
    let revoke = stack
        .http
        .post(format!("{}/oauth2/revoke", stack.issuer))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    stack.advance(30);
    assert!(guard.authenticate(&token).await.is_ok());
    // ...and refused once it is asked again.
    stack.advance(31);
    assert_eq!(
        guard.authenticate(&token).await.unwrap_err(),
        Rejection::InvalidToken(Invalid::Inactive)
    );
    assert_eq!(guard.introspections(), 2);
    // JWTs are still verified locally, without introspection.
    guard.authenticate(&stack.api_token().await).await.unwrap();
    assert_eq!(guard.introspections(), 2);
}

#[tokio::test]
async fn unknown_tokens_are_remembered_briefly_as_inactive() {
    let stack = spawn_stack().await;
    let guard = introspecting_guard(&stack, None).await;
    let fake = "lkat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..5 {
        assert_eq!(
            guard.authenticate(fake).await.unwrap_err(),
            Rejection::InvalidToken(Invalid::Inactive)
        );
    }
    assert_eq!(guard.introspections(), 1);
    stack.advance(6);
    assert!(guard.authenticate(fake).await.is_err());
    assert_eq!(guard.introspections(), 2);
}

#[tokio::test]
async fn without_an_answer_a_token_is_never_active() {
    let stack = spawn_stack().await;
    // The guard's own credentials are wrong: the endpoint answers 401.
    let guard = introspecting_guard(&stack, Some("not-the-secret")).await;
    let (id, secret) = stack
        .register(|c| c.token_format = TokenFormat::Opaque)
        .await;
    let token = stack.token_for(&id, &secret, "scope=read").await;
    assert_eq!(
        guard.authenticate(&token).await.unwrap_err(),
        Rejection::Unavailable
    );
    // And without introspection configured, an opaque token is simply not valid.
    assert_eq!(
        stack.guard.authenticate(&token).await.unwrap_err(),
        Rejection::InvalidToken(Invalid::Malformed)
    );
}

#[tokio::test]
async fn an_opaque_token_for_another_api_is_refused() {
    let stack = spawn_stack().await;
    let guard = introspecting_guard(&stack, None).await;
    let (id, secret) = stack
        .register(|c| {
            c.token_format = TokenFormat::Opaque;
            c.audience = vec!["https://other.example.com".into()];
        })
        .await;
    let token = stack.token_for(&id, &secret, "scope=read").await;
    assert_eq!(
        guard.authenticate(&token).await.unwrap_err(),
        Rejection::InvalidToken(Invalid::Audience)
    );
}

/// A relay in front of the server's introspection endpoint: it counts the requests that reach
/// it, reports each arrival, and holds them while closed.
struct Relay {
    url: String,
    requests: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
    arrivals: mpsc::UnboundedReceiver<()>,
}

#[derive(Clone)]
struct RelayState {
    upstream: String,
    requests: Arc<AtomicUsize>,
    open: watch::Receiver<bool>,
    arrived: mpsc::UnboundedSender<()>,
}

async fn spawn_relay(stack: &Stack) -> Relay {
    let requests = Arc::new(AtomicUsize::new(0));
    let (open, open_rx) = watch::channel(true);
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let url = serve(
        axum::Router::new()
            .route("/introspect", axum::routing::post(relay_introspection))
            .with_state(RelayState {
                upstream: format!("{}/oauth2/introspect", stack.issuer),
                requests: Arc::clone(&requests),
                open: open_rx,
                arrived,
            }),
    )
    .await;
    Relay {
        url: format!("{url}/introspect"),
        requests,
        open,
        arrivals,
    }
}

async fn relay_introspection(
    State(relay): State<RelayState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    relay.requests.fetch_add(1, Ordering::SeqCst);
    relay.arrived.send(()).unwrap();
    relay.open.clone().wait_for(|open| *open).await.unwrap();
    let answer = reqwest::Client::new()
        .post(&relay.upstream)
        .header("authorization", headers["authorization"].clone())
        .header("content-type", headers["content-type"].clone())
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.bytes().await.unwrap();
    (status, [("content-type", "application/json")], body).into_response()
}

/// A guard that introspects through `relay`, configured further by `edit`, and an API behind
/// it; returns the guard and the API's base URL.
async fn guard_via(
    stack: &Stack,
    relay: &Relay,
    edit: impl FnOnce(GuardBuilder) -> GuardBuilder,
) -> (Guard, String) {
    let (id, secret) = stack
        .register(|c| {
            c.can_introspect = true;
            c.grant_types = vec![];
        })
        .await;
    let builder = Guard::builder()
        .issuer(&stack.issuer)
        .audience(API)
        .jwks_uri(&stack.jwks_uri)
        .introspection(id, secret)
        .introspection_endpoint(&relay.url)
        .clock(stack.clock.clone());
    let guard = edit(builder).build().await.unwrap();
    let api = serve_api(&guard).await;
    (guard, api)
}

/// Opaque tokens from the real server, for the API.
async fn opaque_tokens(stack: &Stack, count: usize) -> Vec<String> {
    let (id, secret) = stack
        .register(|c| c.token_format = TokenFormat::Opaque)
        .await;
    let mut tokens = Vec::new();
    for _ in 0..count {
        tokens.push(stack.token_for(&id, &secret, "scope=read").await);
    }
    tokens
}

/// GET /hello on `api` with `token`: the status and the `Retry-After` header.
async fn hello(stack: &Stack, api: &str, token: &str) -> (u16, Option<String>) {
    get_hello(stack.http.clone(), api.to_owned(), token.to_owned()).await
}

/// [`hello`] with owned arguments, for a task of its own.
async fn get_hello(http: reqwest::Client, api: String, token: String) -> (u16, Option<String>) {
    let response = http
        .get(format!("{api}/hello"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after)
}

#[tokio::test]
async fn made_up_tokens_never_reach_the_introspection_endpoint() {
    let stack = spawn_stack().await;
    let relay = spawn_relay(&stack).await;
    let (guard, api) = guard_via(&stack, &relay, |b| b).await;
    let b64 = "AbC-_9".repeat(8);
    let made_up = [
        "hello".to_owned(),
        b64[..22].to_owned(),
        format!("lkat_{}", &b64[..42]),
        format!("lkat_{}", &b64[..44]),
        format!("LKAT_{}", &b64[..43]),
        format!("lkat_{}+/", &b64[..41]),
        format!("lkat_{}=", &b64[..43]),
        format!("lkat.{}", &b64[..43]),
        "a.b.c.d".to_owned(),
        "x".repeat(5000),
    ];
    for token in &made_up {
        let response = stack
            .http
            .get(format!("{api}/hello"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{token}");
        assert!(
            crate::helpers::challenge(&response).contains("error=\"invalid_token\""),
            "{token}"
        );
    }
    assert_eq!(relay.requests.load(Ordering::SeqCst), 0);
    assert_eq!(guard.introspections(), 0);

    // A real opaque token is still introspected, once.
    let token = &opaque_tokens(&stack, 1).await[0];
    assert_eq!(hello(&stack, &api, token).await.0, 200);
    assert_eq!(hello(&stack, &api, token).await.0, 200);
    assert_eq!(relay.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn other_formats_are_introspected_only_when_opted_in() {
    let stack = spawn_stack().await;
    let relay = spawn_relay(&stack).await;
    let (guard, api) = guard_via(&stack, &relay, GuardBuilder::introspect_any_opaque_format).await;
    // Another server's format: asked about (and unknown to this server).
    assert_eq!(hello(&stack, &api, "another-servers-token").await.0, 401);
    assert_eq!(relay.requests.load(Ordering::SeqCst), 1);
    // Longer than 4 KiB: never sent.
    assert_eq!(hello(&stack, &api, &"x".repeat(4097)).await.0, 401);
    assert_eq!(relay.requests.load(Ordering::SeqCst), 1);
    let token = &opaque_tokens(&stack, 1).await[0];
    assert_eq!(hello(&stack, &api, token).await.0, 200);
    assert_eq!(guard.introspections(), 2);
}

/// At most so many introspections in flight and so many waiting: beyond that a request gets
/// 503 with Retry-After at once instead of queueing without bound.
#[tokio::test]
async fn when_every_turn_is_taken_requests_get_503_at_once() {
    let stack = spawn_stack().await;
    let mut relay = spawn_relay(&stack).await;
    let (_guard, api) = guard_via(&stack, &relay, |b| b.introspection_concurrency(1, 1)).await;
    let tokens = opaque_tokens(&stack, 3).await;
    relay.open.send_replace(false);

    let call = |token: &String| {
        let (stack_http, api, token) = (stack.http.clone(), api.clone(), token.clone());
        tokio::spawn(get_hello(stack_http, api, token))
    };
    // The first request takes the only turn and is held at the endpoint.
    let first = call(&tokens[0]);
    relay.arrivals.recv().await.unwrap();
    // Of the next two, one waits for the turn and the other finds the queue full.
    let (refused, waiting) = match select(call(&tokens[1]), call(&tokens[2])).await {
        Either::Left((done, other)) | Either::Right((done, other)) => (done.unwrap(), other),
    };
    assert_eq!(refused, (503, Some("5".to_owned())));

    relay.open.send_replace(true);
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(waiting.await.unwrap().0, 200);
    assert_eq!(relay.requests.load(Ordering::SeqCst), 2);
}
