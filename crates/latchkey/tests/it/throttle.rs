//! Brute-force throttling through the real server and real sockets, from addresses in
//! 127.0.0.0/8: failed client authentications are limited per client id and address (10 a
//! minute by default) and per address (100); past a limit the OAuth endpoints answer 429 with
//! Retry-After, and nothing else is held up.

use std::net::IpAddr;

use latchkey_server::{ManualClock, ServerConfig, store};
use serde_json::Value;

use crate::helpers::{T0, TestApp, TestClient, basic, server_config, spawn_with_config};

/// A server with the default limits (and `trusted_proxies`).
async fn throttled_app(trusted_proxies: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = store::connect(&database_url).await.unwrap();
    let defaults = ServerConfig::default();
    let config = ServerConfig {
        trusted_proxies: trusted_proxies.iter().map(|r| r.parse().unwrap()).collect(),
        failed_auth_limit: defaults.failed_auth_limit,
        failed_auth_limit_per_address: defaults.failed_auth_limit_per_address,
        ..server_config(latchkey_proto::SigningAlg::Es256, None)
    };
    spawn_with_config(config, database_url, dir, store, ManualClock::new(T0)).await
}

/// An HTTP client whose connections come from `address`.
fn from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .build()
        .unwrap()
}

/// POSTs `body` to `path` with `authorization` (and extra headers); returns the status,
/// `Retry-After` and the JSON body.
async fn post(
    http: &reqwest::Client,
    app: &TestApp,
    path: &str,
    authorization: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Option<String>, Value) {
    let mut request = http
        .post(app.url(path))
        .header("authorization", authorization)
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body.to_owned()).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn token(
    http: &reqwest::Client,
    app: &TestApp,
    authorization: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    post(
        http,
        app,
        "/oauth2/token",
        authorization,
        headers,
        "grant_type=client_credentials",
    )
    .await
}

fn wrong(client: &TestClient) -> String {
    basic(client.id(), "not-the-secret-not-the-secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failures_of_a_client_at_an_address_then_429_there_only() {
    let app = throttled_app(&[]).await;
    let client = app.client(|c| c.can_introspect = true).await;
    let other = app.client(|_| {}).await;
    let attacker = from([127, 0, 0, 2]);
    for attempt in 1..=10 {
        let (status, _, body) = token(&attacker, &app, &wrong(&client), &[]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{attempt}"
        );
    }
    // The 11th is not looked at, even with the right secret.
    let (status, retry_after, body) = token(&attacker, &app, &client.basic(), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        retry_after.as_deref(),
        Some("6"),
        "one more attempt every 6 s"
    );
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("failed client authentications")
    );
    // Introspection and revocation are held alike.
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let (status, _, _) = post(&attacker, &app, path, &client.basic(), &[], "token=x").await;
        assert_eq!(status, 429, "{path}");
    }
    // No lockout: the same client from another address, and another client from this one.
    let (status, _, _) = token(&from([127, 0, 0, 3]), &app, &client.basic(), &[]).await;
    assert_eq!(status, 200);
    let (status, _, _) = token(&attacker, &app, &other.basic(), &[]).await;
    assert_eq!(status, 200);
    // Six seconds later the bucket has one attempt again.
    app.clock.advance(6);
    let (status, _, _) = token(&attacker, &app, &client.basic(), &[]).await;
    assert_eq!(status, 200);
    let (status, _, _) = token(&attacker, &app, &wrong(&client), &[]).await;
    assert_eq!(status, 401);
    let (status, retry_after, _) = token(&attacker, &app, &client.basic(), &[]).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("6")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_trying_many_ids_is_held_after_a_hundred_failures() {
    let app = throttled_app(&[]).await;
    let client = app.client(|_| {}).await;
    let sprayer = from([127, 0, 0, 4]);
    for i in 0..100 {
        let (status, _, _) = token(&sprayer, &app, &basic(&format!("guess-{i}"), "x"), &[]).await;
        assert_eq!(status, 401, "{i}");
    }
    let (status, retry_after, _) = token(&sprayer, &app, &basic("guess-new", "x"), &[]).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")));
    let (status, _, _) = token(&sprayer, &app, &client.basic(), &[]).await;
    assert_eq!(status, 429, "every id from that address waits");
    let (status, _, _) = token(&from([127, 0, 0, 5]), &app, &client.basic(), &[]).await;
    assert_eq!(status, 200, "other addresses do not");
}

/// Behind a trusted proxy the client's address comes from X-Forwarded-For; from any other
/// peer the header is ignored (a client cannot pick its own address to escape the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy() {
    let app = throttled_app(&["127.0.0.6/32"]).await;
    let client = app.client(|_| {}).await;
    let proxy = from([127, 0, 0, 6]);
    let behind = |address: &'static str| [("x-forwarded-for", address)];
    for _ in 0..10 {
        // The client's own claim (first) is not taken: the proxy appended 203.0.113.9.
        let headers = [("x-forwarded-for", "198.51.100.1, 203.0.113.9")];
        let (status, _, _) = token(&proxy, &app, &wrong(&client), &headers).await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = token(&proxy, &app, &client.basic(), &behind("203.0.113.9")).await;
    assert_eq!(status, 429, "203.0.113.9 is held");
    let (status, _, _) = token(&proxy, &app, &client.basic(), &behind("203.0.113.10")).await;
    assert_eq!(
        status, 200,
        "another client address behind the proxy is not"
    );
    // An untrusted peer naming 203.0.113.9 is judged by its own address.
    let direct = from([127, 0, 0, 7]);
    let (status, _, _) = token(&direct, &app, &client.basic(), &behind("203.0.113.9")).await;
    assert_eq!(status, 200);
    for _ in 0..10 {
        token(&direct, &app, &wrong(&client), &behind("203.0.113.10")).await;
    }
    let (status, _, _) = token(&proxy, &app, &client.basic(), &behind("203.0.113.10")).await;
    assert_eq!(status, 200, "the untrusted peer's failures were its own");
    let (status, _, _) = token(&direct, &app, &client.basic(), &[]).await;
    assert_eq!(status, 429);
}
