//! Token rates and quotas per client through the real server: the limit is reached exactly
//! where documented, the 429 carries Retry-After and the RateLimit headers, monitor mode
//! issues the token and audits the overrun, reused tokens do not count, and two servers on one
//! PostgreSQL database (one of them started after the other had served) share one limit.

use std::sync::Arc;
use std::time::Duration;

use latchkey_server::{Application, ManualClock, ServerConfig, store};
use latchkey_testkit::PgDatabase;
use serde_json::Value;

use crate::helpers::{T0, TestApp, TestClient, basic, cli_json as cli, spawn_app};

const ASK: &str = "grant_type=client_credentials";

/// Status, `Retry-After`, `RateLimit-Policy`, `RateLimit` and the body of a token request.
async fn ask(
    app: &TestApp,
    client: &TestClient,
) -> (u16, Option<String>, Option<String>, Option<String>, Value) {
    let response = app.token_basic(client, ASK).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (retry, policy, state) = (
        header("retry-after"),
        header("ratelimit-policy"),
        header("ratelimit"),
    );
    let status = response.status().as_u16();
    (status, retry, policy, state, response.json().await.unwrap())
}

fn update(app: &TestApp, client: &TestClient, args: &[&str]) -> Value {
    let mut argv = vec!["client", "update", client.id()];
    argv.extend_from_slice(args);
    cli(&app.database_url, &[], &argv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rate_is_a_burst_then_one_per_interval() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    let other = app.client(|_| {}).await;
    let updated = update(&app, &client, &["--token-rate", "5/min"]);
    assert_eq!(updated["token_rate"], "5/min");
    assert_eq!(updated["quota_mode"], "enforce");
    for i in 0..5 {
        assert_eq!(ask(&app, &client).await.0, 200, "token {i} of the burst");
    }
    let (status, retry, policy, state, body) = ask(&app, &client).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(retry.as_deref(), Some("12"), "one token every 60 / 5 s");
    assert_eq!(policy.as_deref(), Some("\"rate\";q=5;w=60"));
    assert_eq!(state.as_deref(), Some("\"rate\";r=0;t=12"));
    assert_eq!(ask(&app, &other).await.0, 200, "another client is not held");
    // 12 s later one more token, then none again.
    app.clock.advance(12);
    app.cache.refresh(app.store.as_ref()).await.unwrap();
    assert_eq!(ask(&app, &client).await.0, 200);
    assert_eq!(ask(&app, &client).await.0, 429);
    // Off again: no limit.
    update(&app, &client, &["--token-rate", "off"]);
    for _ in 0..10 {
        assert_eq!(ask(&app, &client).await.0, 200);
    }
    // A slow rate raised to a fast one frees up by the fast one, not the day. (The other
    // client: a rate lowered right after use counts that use.)
    update(&app, &other, &["--token-rate", "1/day"]);
    assert_eq!(ask(&app, &other).await.0, 200);
    let (status, retry, ..) = ask(&app, &other).await;
    assert_eq!((status, retry.as_deref()), (429, Some("86400")));
    update(&app, &other, &["--token-rate", "1000/min"]);
    let (status, retry, ..) = ask(&app, &other).await;
    assert_eq!(
        (status, retry.as_deref()),
        (429, Some("1")),
        "raised: the bucket is empty by the new rate (one token in 60 ms), not by the day"
    );
    app.clock.advance(1);
    app.cache.refresh(app.store.as_ref()).await.unwrap();
    assert_eq!(ask(&app, &other).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_quota_holds_for_its_window_and_monitor_mode_audits_instead() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    update(
        &app,
        &client,
        &["--token-quota", "3/day", "--token-rate", "100/min"],
    );
    for _ in 0..3 {
        assert_eq!(ask(&app, &client).await.0, 200);
    }
    let (status, retry, policy, state, _) = ask(&app, &client).await;
    assert_eq!(status, 429);
    // T0 is midnight UTC: the day's window ends 86,400 s later.
    assert_eq!(retry.as_deref(), Some("86400"));
    assert_eq!(
        policy.as_deref(),
        Some("\"rate\";q=100;w=60, \"quota\";q=3;w=86400")
    );
    assert_eq!(state.as_deref(), Some("\"quota\";r=0;t=86400"));

    // Monitor mode: the token is issued, the overrun audited once.
    update(&app, &client, &["--quota-mode", "monitor"]);
    for _ in 0..3 {
        assert_eq!(ask(&app, &client).await.0, 200);
    }
    let audit = cli(
        &app.database_url,
        &[],
        &["audit", "list", "--client", client.id()],
    );
    let overruns: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "client.quota_exceeded")
        .collect();
    assert_eq!(overruns.len(), 1, "{audit}");
    assert_eq!(overruns[0]["changes"]["limit"], "quota");
    assert_eq!(overruns[0]["changes"]["mode"], "monitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_tokens_do_not_count_against_the_quota() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    update(&app, &client, &["--token-quota", "1/day", "--reuse-tokens"]);
    let first = ask(&app, &client).await.4;
    for _ in 0..5 {
        let (status, _, _, _, body) = ask(&app, &client).await;
        assert_eq!(status, 200);
        assert_eq!(body["access_token"], first["access_token"]);
    }
}

/// Two servers on one PostgreSQL database share the quota exactly: the second starts after
/// the first took six of ten (a restart looks the same to the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_on_one_database_share_one_quota() {
    let Some(database) = PgDatabase::create().await else {
        return;
    };
    let clock = ManualClock::new(T0);
    let start = || async {
        let store = store::connect(&database.url).await.unwrap();
        let config = ServerConfig {
            janitor_interval: Duration::from_secs(3600),
            usage_flush_interval: Duration::from_secs(3600),
            ..ServerConfig::default()
        };
        let app = Application::build(config, Arc::clone(&store), Arc::new(clock.clone()))
            .await
            .unwrap();
        let base = format!("http://{}", app.local_addr());
        tokio::spawn(app.run_until(std::future::pending()));
        base
    };
    let first = start().await;
    let created = cli(
        &database.url,
        &[],
        &[
            "client",
            "create",
            "--name",
            "metered",
            "--audience",
            "https://api.example.com",
            "--token-quota",
            "10/day",
        ],
    );
    assert_eq!(created["token_quota"], "10/day");
    let authorization = basic(
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let http = reqwest::Client::new();
    let status = |base: String| {
        let (http, authorization) = (http.clone(), authorization.clone());
        async move {
            crate::helpers::token_request(&http, &base, &authorization)
                .await
                .status()
                .as_u16()
        }
    };
    for _ in 0..6 {
        assert_eq!(status(first.clone()).await, 200);
    }
    let second = start().await;
    let mut issued = 0;
    for i in 0..20 {
        let base = if i % 2 == 0 { &first } else { &second };
        if status(base.clone()).await == 200 {
            issued += 1;
        }
    }
    assert_eq!(issued, 4, "exactly the 4 left of 10, across both servers");
}
