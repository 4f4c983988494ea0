//! Introspection mode (RFC 7662) for opaque tokens from the real server: answers cached until
//! the token expires or a short bound, inactive answers briefly, and never `active` without
//! an answer.

use std::time::Duration;

use latchkey_guard::{Guard, Invalid, Rejection};
use latchkey_proto::TokenFormat;

use crate::helpers::{API, Stack, spawn_stack};

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
