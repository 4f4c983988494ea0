//! JWKS behaviour: discovery, key rotation followed without a failed request, unknown-kid
//! floods rate-limited, an outage survived with the keys held, and no keys meaning 503.

use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use latchkey_guard::{Guard, Rejection};
use latchkey_proto::SigningAlg;
use latchkey_server::keys::KeySource;
use latchkey_server::service::admin;
use serde_json::json;

use crate::helpers::{API, T0, spawn_stack};

#[tokio::test]
async fn the_jwks_is_found_through_discovery() {
    let stack = spawn_stack().await;
    let guard = Guard::builder()
        .issuer(&stack.issuer)
        .audience(API)
        .clock(stack.clock.clone())
        .build()
        .await
        .unwrap();
    let token = stack.api_token().await;
    assert_eq!(
        guard.authenticate(&token).await.unwrap().client_id(),
        stack.client_id
    );
    assert_eq!(guard.jwks_fetches(), 1);
}

#[tokio::test]
async fn key_rotation_is_followed_without_a_failed_request() {
    let stack = spawn_stack().await;
    let source = KeySource {
        alg: SigningAlg::Es256,
        kek: None,
    };
    let mut tokens = vec![stack.api_token().await];
    // Two rotations, each once the next key has been published long enough (360 s). Between
    // them the guard's JWKS goes stale (max-age 300 s) and is refreshed in the background.
    for _ in 0..2 {
        for _ in 0..4 {
            stack.advance(120);
            for token in tokens.iter().filter(|t| token_exp(t) > stack.now()) {
                let caller = stack.guard.authenticate(token).await;
                assert!(caller.is_ok(), "a valid token was refused: {caller:?}");
            }
            // Let a background refresh that this started finish (it runs on its own task).
            tokio::task::yield_now().await;
        }
        admin::rotate_keys(
            stack.store.as_ref(),
            &stack.server_clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            &source,
            None,
        )
        .await
        .unwrap();
        // Tokens signed by the new key: the guard knows the key already (it was published
        // as "next"), or fetches it once as an unknown kid.
        let fresh = stack.api_token().await;
        let response = stack.get("/hello", &[&format!("Bearer {fresh}")]).await;
        assert_eq!(response.status(), 200);
        tokens.push(fresh);
    }
}

fn token_exp(token: &str) -> i64 {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_i64().unwrap()
}

#[tokio::test]
async fn the_background_refresh_alone_follows_a_rotation() {
    let stack = spawn_stack().await;
    // Unknown kids may never refetch here: only the max-age refresh can bring new keys.
    let guard = Guard::builder()
        .issuer(&stack.issuer)
        .audience(API)
        .jwks_uri(&stack.jwks_uri)
        .min_refetch_interval(Duration::from_secs(100 * 24 * 3600))
        .clock(stack.clock.clone())
        .build()
        .await
        .unwrap();
    let source = KeySource {
        alg: SigningAlg::Es256,
        kek: None,
    };
    for _ in 0..2 {
        // The next key is published 360 s before it signs; max-age is 300 s.
        stack.advance(301);
        let token = stack.api_token().await;
        let fetches = guard.jwks_fetches();
        guard.authenticate(&token).await.unwrap(); // stale: starts the background refresh
        wait_for(|| guard.jwks_fetches() > fetches).await;
        stack.advance(60);
        admin::rotate_keys(
            stack.store.as_ref(),
            &stack.server_clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            &source,
            None,
        )
        .await
        .unwrap();
        let fresh = stack.api_token().await;
        assert!(
            guard.authenticate(&fresh).await.is_ok(),
            "the new key was already known"
        );
    }
}

#[tokio::test]
async fn a_key_that_leaves_the_jwks_takes_its_cached_tokens_with_it() {
    let stack = spawn_stack().await;
    let token = stack.api_token().await;
    assert!(stack.guard.authenticate(&token).await.is_ok());
    stack.jwks_empty.store(true, Ordering::SeqCst);
    stack.advance(301); // Stale: the next request, though answered from the cache, refreshes.
    let fetches = stack.guard.jwks_fetches();
    let _ = stack.guard.authenticate(&token).await;
    wait_for(|| stack.guard.jwks_fetches() > fetches).await;
    // Let the refreshed (empty) set land.
    for _ in 0..50 {
        if stack.guard.authenticate(&token).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        stack.guard.authenticate(&token).await,
        Err(Rejection::InvalidToken(_))
    ));
}

/// Polls a condition that a background task makes true.
async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

#[tokio::test]
async fn an_unknown_kid_flood_refetches_at_most_once_per_interval() {
    let stack = spawn_stack().await;
    // The fetch at start-up used this interval's allowance.
    stack.advance(11);
    let before = stack.guard.jwks_fetches();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let token = stack
            .forge(
                json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("unknown-{i}")}),
                stack.claims(),
            )
            .await;
        let guard = stack.guard.clone();
        tasks.spawn(async move { guard.authenticate(&token).await });
    }
    for result in tasks.join_all().await {
        assert!(matches!(result, Err(Rejection::InvalidToken(_))));
    }
    assert_eq!(
        stack.guard.jwks_fetches() - before,
        1,
        "one refetch for 200 unknown kids"
    );

    // The next interval (10 s) allows one more.
    stack.advance(11);
    let token = stack
        .forge(
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "unknown-again"}),
            stack.claims(),
        )
        .await;
    assert!(stack.guard.authenticate(&token).await.is_err());
    assert!(stack.guard.authenticate(&token).await.is_err());
    assert_eq!(stack.guard.jwks_fetches() - before, 2);
}

#[tokio::test]
async fn a_jwks_outage_keeps_the_keys_held() {
    let stack = spawn_stack().await;
    let token = stack.api_token().await;
    assert!(stack.guard.authenticate(&token).await.is_ok());
    stack.jwks_down.store(true, Ordering::SeqCst);
    // Past max-age: the refresh fails, the keys held still verify (a new token, so the
    // verified-token cache is not what answers).
    stack.advance(400);
    for _ in 0..3 {
        let fresh = stack.api_token().await;
        assert!(stack.guard.authenticate(&fresh).await.is_ok());
        tokio::task::yield_now().await;
        stack.advance(20);
    }
    assert!(stack.guard.jwks_fetches() >= 2, "it did try to refresh");
}

#[tokio::test]
async fn without_any_key_nothing_is_accepted() {
    let stack = spawn_stack().await;
    // A JWKS URL that answers 404 (a path the guarded API does not serve).
    let blind = Guard::builder()
        .issuer(&stack.issuer)
        .audience(API)
        .jwks_uri(format!("{}/no-such-jwks", stack.api))
        .clock(latchkey_client::ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(T0 as u64),
        ))
        .build()
        .await
        .unwrap();
    let token = stack.api_token().await;
    assert_eq!(
        blind.authenticate(&token).await.unwrap_err(),
        Rejection::Unavailable
    );
}
