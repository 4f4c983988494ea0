//! Token reuse (`client update --reuse-tokens`) through the real server: the same request
//! gets the same token back, with what is left of its lifetime, until half of it is gone; a
//! token that was revoked, whose client changed, or whose key no longer signs is never handed
//! out again.

use serde_json::Value;

use crate::helpers::{TestApp, TestClient, cli_json as cli, spawn_app};

async fn token(app: &TestApp, client: &TestClient, body: &str) -> Value {
    let response = app.token_basic(client, body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

const ASK: &str = "grant_type=client_credentials";

/// Moves the clock on, and the server's change-feed poll with it (in real time it polls every
/// second; a clock moved further would make its memory look stale).
async fn advance(app: &TestApp, seconds: i64) {
    app.clock.advance(seconds);
    app.cache.refresh(app.store.as_ref()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_gets_the_same_token_until_half_its_lifetime() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    let plain = app.client(|_| {}).await;
    let updated = cli(
        &app.database_url,
        &[],
        &["client", "update", client.id(), "--reuse-tokens"],
    );
    assert_eq!(updated["reuse_tokens"], true);

    let first = token(&app, &client, ASK).await;
    assert_eq!(first["expires_in"], 900);
    advance(&app, 100).await;
    let again = token(&app, &client, ASK).await;
    assert_eq!(again["access_token"], first["access_token"]);
    assert_eq!(again["expires_in"], 800, "what is left of its lifetime");
    assert_eq!(again["scope"], first["scope"]);
    // Another scope or audience is another token.
    let narrower = token(&app, &client, &format!("{ASK}&scope=read")).await;
    assert_ne!(narrower["access_token"], first["access_token"]);
    let other_api = token(
        &app,
        &client,
        &format!("{ASK}&resource=https%3A%2F%2Fother.example.com"),
    )
    .await;
    assert_ne!(other_api["access_token"], first["access_token"]);
    // A client without the setting gets a new token every time.
    let a = token(&app, &plain, ASK).await;
    let b = token(&app, &plain, ASK).await;
    assert_ne!(a["access_token"], b["access_token"]);

    // Half its lifetime gone (450 s of 900): a new one.
    advance(&app, 349).await;
    let still = token(&app, &client, ASK).await;
    assert_eq!(still["access_token"], first["access_token"], "449 s: still");
    advance(&app, 1).await;
    let fresh = token(&app, &client, ASK).await;
    assert_ne!(fresh["access_token"], first["access_token"], "450 s: new");
    assert_eq!(fresh["expires_in"], 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_or_one_of_a_changed_client_or_retired_key_is_never_reused() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    cli(
        &app.database_url,
        &[],
        &["client", "update", client.id(), "--reuse-tokens"],
    );
    let first = token(&app, &client, ASK).await;
    let first = first["access_token"].as_str().unwrap().to_owned();

    // RFC 7009: the client revokes it; the next request gets a new one.
    assert_eq!(
        app.form_status("/oauth2/revoke", &client.basic(), &format!("token={first}"))
            .await,
        200
    );
    let second = token(&app, &client, ASK).await;
    let second = second["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(
        token(&app, &client, ASK).await["access_token"],
        second.as_str(),
        "the new one is reused"
    );

    // revoke-tokens moves the client's epoch on: its record, and the kept token, are gone.
    cli(
        &app.database_url,
        &[],
        &["client", "revoke-tokens", client.id()],
    );
    let third = token(&app, &client, ASK).await;
    let third = third["access_token"].as_str().unwrap().to_owned();
    assert_ne!(third, second);

    // The signing key rotates: tokens it signed are not handed out again.
    cli(&app.database_url, &[], &["keys", "rotate"]);
    let fourth = token(&app, &client, ASK).await;
    assert_ne!(fourth["access_token"], third.as_str());

    // Turned off: a new token every time.
    cli(
        &app.database_url,
        &[],
        &["client", "update", client.id(), "--reuse-tokens", "false"],
    );
    let a = token(&app, &client, ASK).await;
    let b = token(&app, &client, ASK).await;
    assert_ne!(a["access_token"], b["access_token"]);
}
