//! Usage accounting through the real server: every token, refusal, introspection and
//! revocation of a client is counted exactly once, and `latchkey usage` (on the database or
//! through the admin API) and `GET /admin/v1/usage` say so.

use std::sync::Arc;
use std::time::Duration;

use latchkey_server::store;
use latchkey_server::{Application, ManualClock, ServerConfig};
use latchkey_testkit::PgDatabase;
use serde_json::{Value, json};

use crate::helpers::{T0, TestApp, basic, cli_json as cli, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_client_is_counted_once() {
    let app = spawn_app().await;
    let client = app.client(|c| c.can_introspect = true).await;
    let other = app.client(|_| {}).await;
    let good = client.basic();
    let mut tokens = Vec::new();
    for _ in 0..7 {
        let response = app
            .token_basic(&client, "grant_type=client_credentials")
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let wrong = basic(client.id(), "not-the-secret-not-the-secret");
    for _ in 0..3 {
        assert_eq!(
            app.form_status("/oauth2/token", &wrong, "grant_type=client_credentials")
                .await,
            401
        );
    }
    for _ in 0..2 {
        let status = app
            .form_status(
                "/oauth2/token",
                &good,
                "grant_type=client_credentials&scope=admin",
            )
            .await;
        assert_eq!(status, 400);
    }
    // Unknown ids are not anyone's usage.
    for _ in 0..4 {
        let unknown = basic("nobody-at-all", "x");
        assert_eq!(
            app.form_status("/oauth2/token", &unknown, "grant_type=client_credentials")
                .await,
            401
        );
    }
    for token in &tokens[..2] {
        assert_eq!(
            app.form_status("/oauth2/introspect", &good, &format!("token={token}"))
                .await,
            200
        );
    }
    assert_eq!(
        app.form_status("/oauth2/revoke", &good, &format!("token={}", tokens[2]))
            .await,
        200
    );
    assert_eq!(
        app.token_basic(&other, "grant_type=client_credentials")
            .await
            .status(),
        200
    );

    let written = app.usage.flush(app.store.as_ref(), T0 + 30).await.unwrap();
    assert!(written.rows >= 5, "{written:?}");
    assert_eq!(
        app.usage
            .flush(app.store.as_ref(), T0 + 40)
            .await
            .unwrap()
            .rows,
        0,
        "taken once"
    );

    let expected = json!({
        "tokens": 7,
        "denied": { "invalid_client": 3, "invalid_scope": 2 },
        "introspections": 2,
        "revocations": 1,
    });
    let totals = cli(&app.database_url, &[], &["usage", "--since", "30d"]);
    let rows = totals.as_array().unwrap();
    assert_eq!(
        rows.len(),
        0,
        "the CLI counts back from the real clock: nothing that recent"
    );
    let totals = cli(&app.database_url, &[], &["usage", "--since", "3650d"]);
    let rows = totals.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{totals}");
    let mine = rows.iter().find(|r| r["client_id"] == client.id()).unwrap();
    for field in ["tokens", "denied", "introspections", "revocations"] {
        assert_eq!(mine[field], expected[field], "{field}: {totals}");
    }
    assert_eq!(rows[0]["client_id"], client.id(), "most tokens first");

    // One client's minutes; the same over the admin API and through `--server`.
    let minutes = cli(
        &app.database_url,
        &[],
        &["usage", "--client", client.id(), "--since", "3650d"],
    );
    assert_eq!(minutes.as_array().unwrap().len(), 1);
    assert_eq!(minutes[0]["from"], "2026-01-01T00:00:00Z");
    assert_eq!(minutes[0]["tokens"], 7);
    let admin = cli(
        &app.database_url,
        &[],
        &["client", "create", "--name", "ops", "--admin-read"],
    );
    let (id, secret) = (
        admin["client_id"].as_str().unwrap(),
        admin["client_secret"].as_str().unwrap(),
    );
    let remote_env = [
        ("LATCHKEY_SERVER", app.base.as_str()),
        ("LATCHKEY_ADMIN_CLIENT_ID", id),
        ("LATCHKEY_ADMIN_CLIENT_SECRET", secret),
    ];
    let remote = cli(
        "sqlite:///nonexistent-dir/never.db",
        &remote_env,
        &["usage", "--client", client.id(), "--since", "3650d"],
    );
    assert_eq!(remote, minutes);
    let bearer = admin_token(&app, id, secret).await;
    let over_http = admin_get(
        &app,
        &bearer,
        &format!("usage?client={}&since=0", client.id()),
    )
    .await;
    assert_eq!(over_http, minutes);

    // Hours (or any multiple of a minute) instead of minutes, for charts.
    let get = |query: String| {
        app.http
            .get(app.url(&format!("/admin/v1/usage?{query}")))
            .bearer_auth(&bearer)
            .send()
    };
    let hours: Value = get(format!("client={}&since=0&step=3600", client.id()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hours.as_array().unwrap().len(), 1, "{hours}");
    assert_eq!(hours[0]["from"], "2026-01-01T00:00:00Z");
    assert_eq!(hours[0]["tokens"], 7);
    let status = |path: &'static str| {
        let request = app
            .http
            .get(app.url(&format!("/admin/v1/{path}")))
            .bearer_auth(&bearer);
        async move { request.send().await.unwrap().status() }
    };
    for path in ["usage?step=3600", "usage/not-caching?step=3600&client=x"] {
        assert_eq!(
            status(path).await,
            400,
            "{path}: step is for one client's series"
        );
    }
    for bad in ["step=90", "step=0", "step=2678460"] {
        let response = get(format!("client={}&{bad}", client.id())).await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    // An id no client can have is a 400 naming it, not a database error.
    for path in ["usage?client=%00", "usage/not-caching?client=a%20b"] {
        assert_eq!(status(path).await, 400, "{path}");
    }
}

/// Two servers on one PostgreSQL database add up to one total.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_sharing_a_database_add_up() {
    let Some(database) = PgDatabase::create().await else {
        return;
    };
    let clock = ManualClock::new(T0);
    let mut servers = Vec::new();
    for _ in 0..2 {
        let store = store::connect(&database.url).await.unwrap();
        let config = ServerConfig {
            janitor_interval: Duration::from_secs(3600),
            usage_flush_interval: Duration::from_secs(3600),
            ..ServerConfig::default()
        };
        let app = Application::build(config, Arc::clone(&store), Arc::new(clock.clone()))
            .await
            .unwrap();
        let (base, usage) = (format!("http://{}", app.local_addr()), app.usage());
        tokio::spawn(app.run_until(std::future::pending()));
        servers.push((base, usage, store));
    }
    let created = cli(
        &database.url,
        &[],
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--audience",
            "https://api.example.com",
        ],
    );
    let client = basic(
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let http = reqwest::Client::new();
    for i in 0..10 {
        let (base, _, _) = &servers[i % 2];
        let status = http
            .post(format!("{base}/oauth2/token"))
            .header("authorization", &client)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    for (_, usage, store) in &servers {
        usage.flush(store.as_ref(), T0 + 5).await.unwrap();
    }
    let totals = cli(&database.url, &[], &["usage", "--since", "3650d"]);
    assert_eq!(totals[0]["tokens"], 10, "{totals}");
}

/// The not-caching rule: with 15-minute tokens and the default threshold of 10 tokens per
/// lifetime, one address may get 40 tokens in an hour. A service that asks for a token before
/// every call passes that and is flagged (once per hour), under its own address; one that uses
/// latchkey-client for the same number of calls gets one token and is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_for_a_token_per_call_is_flagged_and_one_that_caches_is_not() {
    let app = spawn_app().await;
    let per_call = app.client(|c| c.name = "per-call".into()).await;
    let cached = app.client(|c| c.name = "cached".into()).await;

    // The service without a cache, from 127.0.0.2: a token request before each of 41 calls.
    let from_second_address = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let ask = |n: usize| {
        let (http, url, authorization) = (
            from_second_address.clone(),
            app.token_url(),
            per_call.basic(),
        );
        async move {
            for _ in 0..n {
                let status = http
                    .post(&url)
                    .header("authorization", &authorization)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("grant_type=client_credentials")
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200);
            }
        }
    };
    ask(41).await;

    // The same 41 calls through latchkey-client, at its defaults, from 127.0.0.1.
    let now = std::time::UNIX_EPOCH + Duration::from_secs(T0 as u64);
    let tokens = latchkey_client::ClientCredentials::builder()
        .token_endpoint(app.token_url())
        .client_id(cached.id())
        .client_secret(cached.secret.clone())
        .clock(latchkey_client::ManualClock::new(now))
        .build()
        .await
        .unwrap();
    for _ in 0..41 {
        tokens.token().await.unwrap();
    }

    let flushed = app.usage.flush(app.store.as_ref(), T0 + 30).await.unwrap();
    let flagged: Vec<(String, String, i64, i64, u64)> = flushed
        .newly_not_caching
        .iter()
        .map(|r| {
            (
                r.client_id.clone(),
                r.source.clone(),
                r.tokens,
                r.allowed,
                r.lifetime,
            )
        })
        .collect();
    assert_eq!(
        flagged,
        [(per_call.id().to_owned(), "127.0.0.2".into(), 41, 40, 900)]
    );

    // More of the same in the hour: still flagged, but not again.
    ask(5).await;
    let flushed = app.usage.flush(app.store.as_ref(), T0 + 60).await.unwrap();
    assert!(flushed.newly_not_caching.is_empty(), "{flushed:?}");

    let listed = cli(
        &app.database_url,
        &[],
        &["usage", "--not-caching", "--since", "3650d"],
    );
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["client_id"], per_call.id());
    assert_eq!(rows[0]["source"], "127.0.0.2");
    assert_eq!(rows[0]["tokens"], 46);
    assert_eq!(rows[0]["allowed"], 40);
    assert_eq!(rows[0]["token_lifetime"], 900);
    assert_eq!(rows[0]["hour"], "2026-01-01T00:00:00Z");
    let mine = cli(
        &app.database_url,
        &[],
        &[
            "usage",
            "--not-caching",
            "--client",
            cached.id(),
            "--since",
            "3650d",
        ],
    );
    assert_eq!(mine, serde_json::json!([]));
    let cached_tokens = cli(
        &app.database_url,
        &[],
        &["usage", "--client", cached.id(), "--since", "3650d"],
    );
    assert_eq!(
        cached_tokens[0]["tokens"], 1,
        "latchkey-client got one token"
    );

    // The same list over the admin API.
    let admin = cli(
        &app.database_url,
        &[],
        &["client", "create", "--name", "ops", "--admin-read"],
    );
    let bearer = admin_token(
        &app,
        admin["client_id"].as_str().unwrap(),
        admin["client_secret"].as_str().unwrap(),
    )
    .await;
    let over_http = admin_get(&app, &bearer, "usage/not-caching?since=0").await;
    assert_eq!(over_http, listed);
}

/// An admin token for the client `id` with `secret`.
async fn admin_token(app: &TestApp, id: &str, secret: &str) -> String {
    let token: Value = crate::helpers::token_request(&app.http, &app.base, &basic(id, secret))
        .await
        .json()
        .await
        .unwrap();
    token["access_token"].as_str().unwrap().to_owned()
}

/// `GET /admin/v1/{path}` with `bearer`, as JSON.
async fn admin_get(app: &TestApp, bearer: &str, path: &str) -> Value {
    app.http
        .get(app.url(&format!("/admin/v1/{path}")))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
