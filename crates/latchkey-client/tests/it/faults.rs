//! Retries with backoff for network errors, 5xx and 429 (RFC 6585 §4), honouring
//! `Retry-After`; no retry for OAuth rejections; errors never cached (docs/CONFORMANCE.md,
//! "Client library").

use std::time::{Duration, Instant};

use latchkey_client::{ClientCredentials, Error, RetryPolicy};
use latchkey_proto::ErrorCode;

use crate::helpers::{Scripted, quick_retries, spawn_stack};

fn unavailable(retry_after: Option<&str>) -> Scripted {
    Scripted {
        status: 503,
        headers: retry_after
            .map(|v| vec![("retry-after", v.to_owned())])
            .unwrap_or_default(),
        body: r#"{"error":"temporarily_unavailable"}"#.into(),
    }
}

#[tokio::test]
async fn a_server_that_is_down_gets_backoff_then_a_clear_error() {
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let policy = RetryPolicy {
        deadline: Duration::from_millis(600),
        initial_backoff: Duration::from_millis(40),
        max_backoff: Duration::from_millis(160),
        attempt_timeout: Duration::from_millis(500),
    };
    let tokens = ClientCredentials::builder()
        .token_endpoint(format!("http://127.0.0.1:{port}/oauth2/token"))
        .client_id("lk_client")
        .client_secret("a-secret-that-must-not-leak")
        .retry_policy(policy)
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let error = tokens.token().await.unwrap_err();
    let Error::Unavailable {
        attempts, elapsed, ..
    } = &error
    else {
        panic!("expected Unavailable, got {error:?}");
    };
    // Waits of 20–40, 40–80, 80–160, 80–160 ms...: several attempts fit in 600 ms, and the
    // waits between them add up to at least the first three half-waits.
    assert!(*attempts >= 3, "{attempts} attempts");
    assert!(
        *elapsed >= Duration::from_millis(20 + 40 + 80),
        "{elapsed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!error.is_configuration());
    let message = error.to_string();
    assert!(message.contains("unavailable after"), "{message}");
    assert!(!message.contains("a-secret-that-must-not-leak"));
}

#[tokio::test]
async fn retry_after_on_503_and_429_is_honoured() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let policy = RetryPolicy {
        deadline: Duration::from_secs(5),
        // The policy alone would retry after 5–10 ms; the server asks for longer.
        initial_backoff: Duration::from_millis(10),
        ..quick_retries()
    };
    let tokens = stack
        .builder(&client)
        .retry_policy(policy)
        .build()
        .await
        .unwrap();
    stack.relay.script([unavailable(Some("1"))]);
    let started = Instant::now();
    tokens.token().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stack.relay.scripted_answers(), 1);
    assert_eq!(stack.relay.token_requests(), 1);

    // 429 with an HTTP-date, on a second client (the first one has a valid token cached).
    let other = stack
        .builder(&client)
        .scope("write")
        .retry_policy(policy)
        .build()
        .await
        .unwrap();
    // The date is read against the client's clock.
    let soon = httpdate::fmt_http_date(stack.now() + Duration::from_secs(2));
    stack.relay.script([Scripted {
        status: 429,
        headers: vec![("retry-after", soon)],
        body: String::new(),
    }]);
    let started = Instant::now();
    other.token().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stack.relay.token_requests(), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_fails_at_once() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack.builder(&client).build().await.unwrap();
    stack.relay.script([unavailable(Some("3600"))]);
    let started = Instant::now();
    let error = tokens.token().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(error.to_string().contains("retry after"), "{error}");
    assert_eq!(stack.relay.token_requests(), 0);
}

#[tokio::test]
async fn invalid_client_and_invalid_scope_are_not_retried() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;

    let wrong_secret = stack
        .builder(&client)
        .client_secret("not-the-secret")
        .build()
        .await
        .unwrap();
    let error = wrong_secret.token().await.unwrap_err();
    let Error::Rejected(rejection) = &error else {
        panic!("expected a rejection, got {error:?}");
    };
    assert_eq!(rejection.status, 401);
    assert_eq!(rejection.code, Some(ErrorCode::InvalidClient));
    assert!(error.is_configuration());
    assert!(error.to_string().contains("check the client id"), "{error}");
    assert_eq!(stack.relay.token_requests(), 1, "no retry");

    let too_much = stack.builder(&client).scope("root").build().await.unwrap();
    let error = too_much.token().await.unwrap_err();
    assert!(
        matches!(&error, Error::Rejected(r) if r.code == Some(ErrorCode::InvalidScope) && r.status == 400),
        "{error:?}"
    );
    assert_eq!(stack.relay.token_requests(), 2, "no retry");

    // The same failure again makes a new request: errors are not cached.
    assert!(too_much.token().await.is_err());
    assert_eq!(stack.relay.token_requests(), 3);
}

#[tokio::test]
async fn errors_are_not_cached_and_a_failed_refresh_keeps_the_valid_token() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let tokens = stack
        .builder(&client)
        .retry_policy(RetryPolicy {
            deadline: Duration::from_millis(50),
            initial_backoff: Duration::from_millis(100),
            ..quick_retries()
        })
        .build()
        .await
        .unwrap();
    // The backoff (50–100 ms) does not fit in the deadline: one attempt, then the error.
    stack.relay.script([unavailable(None)]);
    assert!(matches!(
        tokens.token().await,
        Err(Error::Unavailable { attempts: 1, .. })
    ));
    let first = tokens.token().await.unwrap();
    assert_eq!(stack.relay.token_requests(), 1);

    // In the refresh window the refresh fails; callers keep the valid token and the failed
    // refresh is not retried on every call.
    stack.advance(800);
    stack.relay.script([unavailable(None)]);
    let during = tokens.token().await.unwrap();
    assert_eq!(during.secret(), first.secret());
    // Let the background refresh fail; the token stays, and within 5 s no new refresh starts.
    wait_until(|| stack.relay.scripted_answers() == 2).await;
    for _ in 0..10 {
        assert_eq!(tokens.token().await.unwrap().secret(), first.secret());
    }
    assert_eq!(
        stack.relay.token_requests(),
        1,
        "no new refresh within 5 s of the failure"
    );
    stack.advance(6);
    let _ = tokens.token().await.unwrap();
    wait_until(|| stack.relay.token_requests() == 2).await;
}

/// Polls a condition that background work makes true (the refresh task runs on its own).
async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_never_followed_silently() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let moved = || Scripted {
        status: 307,
        headers: vec![(
            "location",
            format!("{}/elsewhere/token", "http://127.0.0.1:9"),
        )],
        body: String::new(),
    };
    // The default HTTP client does not follow it.
    let tokens = stack.builder(&client).build().await.unwrap();
    stack.relay.script([moved()]);
    let error = tokens.token().await.unwrap_err();
    assert!(
        matches!(&error, Error::InvalidResponse(m) if m.contains("HTTP 307")),
        "{error}"
    );

    // A client the user supplies that follows redirects: the redirect is an error, and the
    // credentials went to the same host only (the relay points back at itself here).
    let following = stack
        .builder(&client)
        .http_client(reqwest::Client::new())
        .build()
        .await
        .unwrap();
    stack.relay.script([Scripted {
        status: 307,
        headers: vec![("location", format!("{}/oauth2/token?moved", stack.issuer))],
        body: String::new(),
    }]);
    let error = following.token().await.unwrap_err();
    assert!(error.is_configuration(), "{error}");
    assert!(error.to_string().contains("redirect"), "{error}");
}
