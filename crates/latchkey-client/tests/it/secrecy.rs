//! Secrets and tokens never appear in `Debug`, `Display` or logs (docs/CONFORMANCE.md,
//! "Client library").

use std::io::Write;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use latchkey_client::{ClientAuthMethod, ClientSecret, FileStore, RetryPolicy, StoredToken};

use crate::helpers::{Scripted, spawn_stack};

/// Everything logged, at every level, by every crate.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread, so the thread-local subscriber sees the background refresh task too.
#[tokio::test(flavor = "current_thread")]
async fn neither_the_secret_nor_a_token_is_ever_printed_or_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let stack = spawn_stack().await;
    let client = stack
        .register(|c| c.auth_method = ClientAuthMethod::ClientSecretPost)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = stack
        .builder(&client)
        .auth_method(ClientAuthMethod::ClientSecretPost)
        .retry_policy(RetryPolicy {
            // The first 503 is retried; the refresh meets only 500s until the deadline.
            deadline: Duration::from_millis(400),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(2),
        })
        .store(FileStore::new(dir.path().join("t.json")).with_clock(stack.client_clock.clone()))
        .build()
        .await
        .unwrap();
    // A retried 503, a token, a failed background refresh, an eviction, a rejection.
    stack.relay.script([Scripted {
        status: 503,
        headers: vec![],
        body: String::new(),
    }]);
    let token = tokens.token().await.unwrap();
    stack.advance(800);
    let failure = || Scripted {
        status: 500,
        headers: vec![],
        body: r#"{"error":"server_error"}"#.into(),
    };
    stack.relay.script((0..10).map(|_| failure()));
    tokens.token().await.unwrap();
    // Let the background refresh fail (one thread: it runs when this task waits).
    for _ in 0..200 {
        if logged(&captured).contains("token refresh failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack.relay.clear_script();
    tokens.invalidate(&token).await;
    let fresh = tokens.token().await.unwrap();
    let rejected = stack
        .builder(&client)
        .auth_method(ClientAuthMethod::ClientSecretPost)
        .client_secret("wrong-secret-value")
        .build()
        .await
        .unwrap()
        .token()
        .await
        .unwrap_err();

    let printed = [
        format!("{tokens:?}"),
        format!("{token:?}"),
        format!("{fresh:?}"),
        format!("{rejected:?} {rejected}"),
        format!("{:?}", ClientSecret::new(client.secret.clone())),
        format!(
            "{:?}",
            serde_json::from_str::<StoredToken>(&stored_json(&token)).unwrap()
        ),
    ];
    let logs = logged(&captured);
    // The retry happened (the relay answered its 503). Its debug line is not asserted: an
    // event of a callsite another test thread registers at the same moment can miss this
    // thread's scoped subscriber (tracing caches callsite interest process-wide), which made
    // this assertion fail about once in four full runs. The warning below shows that
    // capturing works.
    assert!(stack.relay.scripted_answers() >= 1, "{logs}");
    assert!(logs.contains("token refresh failed"), "{logs}");
    for text in printed.iter().chain([&logs]) {
        for secret in [
            client.secret.as_str(),
            "wrong-secret-value",
            token.secret(),
            fresh.secret(),
        ] {
            assert!(!text.contains(secret), "a secret leaked into: {text}");
        }
    }
}

fn logged(captured: &Captured) -> String {
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

fn stored_json(token: &latchkey_client::AccessToken) -> String {
    serde_json::json!({
        "access_token": token.secret(),
        "token_type": "Bearer",
        "received_at": 0,
        "expires_at": 1,
    })
    .to_string()
}
