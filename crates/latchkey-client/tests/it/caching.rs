//! The client's token cache (docs/CONFORMANCE.md, "Client library"): the cache key, single
//! flight, expiry from `expires_in` (RFC 6749 §5.1), early refresh.

use std::collections::HashSet;
use std::time::Duration;

use latchkey_client::ClientCredentials;

use crate::helpers::{API, Scripted, jwt_payload, spawn_stack, unix};

/// Calls `token()` from `n` tasks at once and returns every token handed out.
async fn concurrent_tokens(
    tokens: &ClientCredentials,
    n: usize,
) -> Vec<latchkey_client::AccessToken> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let tokens = tokens.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            tokens.token().await.unwrap()
        });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_callers_on_a_cold_cache_cause_one_token_request() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack.builder(&client).scope("read").build().await.unwrap();
    assert_eq!(stack.relay.token_requests(), 0, "build() does not fetch");

    let handed_out = concurrent_tokens(&tokens, 1000).await;

    assert_eq!(stack.relay.token_requests(), 1);
    let distinct: HashSet<&str> = handed_out.iter().map(|t| t.secret()).collect();
    assert_eq!(distinct.len(), 1);
    let claims = jwt_payload(handed_out[0].secret());
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["client_id"], client.id.as_str());
    // Expiry is receipt plus expires_in.
    assert_eq!(unix(handed_out[0].expires_at()), unix(stack.now()) + 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn near_expiry_one_refresh_runs_and_no_caller_gets_an_expired_token() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack.builder(&client).build().await.unwrap();
    let first = tokens.token().await.unwrap();
    assert_eq!(stack.relay.token_requests(), 1);

    // 15-minute token: refresh is due between 630 s and 720 s (20% margin plus up to half of
    // it again as jitter); it may be handed out until 895 s.
    stack.advance(600);
    let before_window = concurrent_tokens(&tokens, 200).await;
    assert!(before_window.iter().all(|t| t.secret() == first.secret()));
    assert_eq!(
        stack.relay.token_requests(),
        1,
        "no refresh before the window"
    );

    stack.advance(200); // 800 s: inside the refresh window, still valid.
    let in_window = concurrent_tokens(&tokens, 1000).await;
    for token in &in_window {
        assert!(
            token.expires_at() >= stack.now() + Duration::from_secs(5),
            "a token within 5 s of expiry was handed out"
        );
    }
    // Callers were served the old token while one refresh ran; wait for that refresh by
    // asking for a token past the old one's usable time (no sleeping: the clock moves).
    stack.advance(96); // 896 s: 4 s left, so the old token may no longer be handed out.
    let after = tokens.token().await.unwrap();
    assert_ne!(after.secret(), first.secret());
    assert!(after.expires_at() >= stack.now() + Duration::from_secs(5));
    assert_eq!(stack.relay.token_requests(), 2, "exactly one refresh");
    for token in &in_window {
        assert!(token.secret() == first.secret() || token.secret() == after.secret());
    }

    // The new token expires 900 s after it was received.
    stack.advance(904); // The new token was received at 800..=896 s; now it is 1800 s.
    let expired_wave = concurrent_tokens(&tokens, 1000).await;
    let third = &expired_wave[0];
    assert!(expired_wave.iter().all(|t| t.secret() == third.secret()));
    assert_ne!(third.secret(), after.secret());
    assert!(third.expires_at() > stack.now());
    assert_eq!(
        stack.relay.token_requests(),
        3,
        "callers on an expired token share one fetch"
    );
}

#[tokio::test]
async fn two_scopes_or_two_audiences_never_share_a_token() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let read = stack.builder(&client).scope("read").build().await.unwrap();
    let write = stack.builder(&client).scope("write").build().await.unwrap();
    let read_api = stack
        .builder(&client)
        .scope("read")
        .audience(API)
        .build()
        .await
        .unwrap();

    let r = read.token().await.unwrap();
    let w = write.token().await.unwrap();
    let a = read_api.token().await.unwrap();
    assert_eq!(stack.relay.token_requests(), 3);
    assert_eq!(jwt_payload(r.secret())["scope"], "read");
    assert_eq!(jwt_payload(w.secret())["scope"], "write");
    assert_eq!(jwt_payload(a.secret())["aud"], API);
    assert_eq!(r.scope(), Some("read"));
    let keys: HashSet<_> = [&read, &write, &read_api]
        .iter()
        .map(|t| t.cache_key().clone())
        .collect();
    assert_eq!(keys.len(), 3);

    // Scope order does not matter: "write read" and "read write" are one cache key.
    let ab = stack
        .builder(&client)
        .scope("write read")
        .build()
        .await
        .unwrap();
    let ba = stack
        .builder(&client)
        .scope("read")
        .scope("write")
        .build()
        .await
        .unwrap();
    assert_eq!(ab.cache_key(), ba.cache_key());
}

#[tokio::test]
async fn a_response_without_expires_in_gets_a_short_default_lifetime() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack.builder(&client).build().await.unwrap();
    stack.relay.script([Scripted {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: r#"{"access_token":"opaque-from-elsewhere","token_type":"bearer"}"#.into(),
    }]);
    let token = tokens.token().await.unwrap();
    assert_eq!(token.secret(), "opaque-from-elsewhere");
    assert_eq!(unix(token.expires_at()), unix(stack.now()) + 60);

    // Past the default lifetime, a real token is fetched.
    stack.advance(60);
    let next = tokens.token().await.unwrap();
    assert_ne!(next.secret(), "opaque-from-elsewhere");
    assert_eq!(stack.relay.token_requests(), 1);
}

#[tokio::test]
async fn a_token_that_expires_on_arrival_is_an_error_not_a_token() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack.builder(&client).build().await.unwrap();
    let token_response = |expires_in: u64| Scripted {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: format!(
            r#"{{"access_token":"t{expires_in}","token_type":"Bearer","expires_in":{expires_in}}}"#
        ),
    };
    stack.relay.script([token_response(0)]);
    let error = tokens.token().await.unwrap_err();
    assert!(
        matches!(&error, latchkey_client::Error::InvalidResponse(m) if m.contains("expires too soon")),
        "{error}"
    );
    // A short but usable lifetime is fine: 4 s, of which the last second is kept back.
    stack.relay.script([token_response(4)]);
    let short = tokens.token().await.unwrap();
    assert_eq!(short.secret(), "t4");
    stack.advance(3);
    let next = tokens.token().await.unwrap();
    assert_ne!(
        next.secret(),
        "t4",
        "a token with 1 s left is not handed out"
    );
    // An absurd lifetime does not overflow anything.
    let other = stack.builder(&client).scope("write").build().await.unwrap();
    stack.relay.script([token_response(u64::MAX)]);
    let long = other.token().await.unwrap();
    assert!(long.expires_at() > stack.now() + Duration::from_secs(300 * 24 * 3600));
}

#[tokio::test]
async fn discovery_refuses_a_document_for_another_issuer() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    // The relay serves metadata whose issuer is the relay's URL; asking with a trailing slash
    // is a different issuer (RFC 8414 §3.3: identical, not "equivalent").
    let error = ClientCredentials::builder()
        .issuer(format!("{}/", stack.issuer))
        .client_id(&client.id)
        .client_secret(client.secret.as_str())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, latchkey_client::Error::Discovery(ref m) if m.contains("RFC 8414 §3.3")),
        "{error}"
    );

    // Metadata for another issuer altogether.
    stack.relay.script([Scripted {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: r#"{"issuer":"https://evil.example","token_endpoint":"https://evil.example/token"}"#
            .into(),
    }]);
    let error = stack.builder(&client).build().await.unwrap_err();
    assert!(
        matches!(error, latchkey_client::Error::Discovery(_)),
        "{error}"
    );

    // Without discovery, the token endpoint can be given directly.
    let direct = ClientCredentials::builder()
        .token_endpoint(format!("{}/oauth2/token", stack.issuer))
        .client_id(&client.id)
        .client_secret(client.secret.as_str())
        .auth_method(latchkey_client::ClientAuthMethod::ClientSecretBasic)
        .build()
        .await
        .unwrap();
    assert!(direct.token().await.is_ok());
}
