//! Several `latchkey serve` replicas on one PostgreSQL database: whichever replica a request
//! hits, the answer is the same. Needs `LATCHKEY_TEST_POSTGRES_URL` (required under CI).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_server::store;
use latchkey_server::{Application, ManualClock, ServerConfig};
use latchkey_testkit::PgDatabase;
use sqlx::Connection as _;

use crate::helpers::{T0, basic};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
const ISSUER: &str = "https://auth.example.com";

/// Starts a replica on `url` (its own connection pool, as a separate process would have).
async fn replica(url: &str, clock: &ManualClock) -> String {
    let store = store::connect(url).await.unwrap();
    let config = ServerConfig {
        issuer: Some(ISSUER.into()),
        janitor_interval: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let app = Application::build(config, store, Arc::new(clock.clone()))
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    base
}

/// `latchkey --database URL args... --output json`, on a blocking thread.
async fn cli(url: &str, args: &[&str]) -> serde_json::Value {
    let mut command = Command::new(BIN);
    command
        .args(["--database", url])
        .args(args)
        .args(["--output", "json"]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    if output.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

async fn post(
    http: &reqwest::Client,
    url: String,
    authorization: &str,
    body: String,
) -> reqwest::Response {
    http.post(url)
        .header("authorization", authorization)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_database_answer_alike() {
    let Some(database) = PgDatabase::create().await else {
        return;
    };
    let url = database.url.clone();
    let clock = ManualClock::new(T0);
    // Started together on an empty database: one schema, one current key.
    let replicas: Vec<String> = start_three(&url, &clock).await;
    let http = reqwest::Client::new();
    let keys: Vec<serde_json::Value> = jwks_of(&http, &replicas).await;
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "every replica publishes the same keys"
    );

    // A client created through the CLI works on every replica.
    let created = cli(
        &url,
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--scope",
            "read",
            "--audience",
            "https://api.example.com",
        ],
    )
    .await;
    let client = basic(
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let checker = cli(
        &url,
        &[
            "client",
            "create",
            "--name",
            "api",
            "--can-introspect",
            "--grant-types",
            "",
        ],
    )
    .await;
    let checker = basic(
        checker["client_id"].as_str().unwrap(),
        checker["client_secret"].as_str().unwrap(),
    );
    let mut tokens = Vec::new();
    for base in &replicas {
        let response = post(
            &http,
            format!("{base}/oauth2/token"),
            &client,
            "grant_type=client_credentials".into(),
        )
        .await;
        assert_eq!(response.status(), 200, "{base}");
        let body: serde_json::Value = response.json().await.unwrap();
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }

    // A token from replica 1 introspects as active on replica 2.
    let introspect = |base: &String, token: &String| {
        post(
            &http,
            format!("{base}/oauth2/introspect"),
            &checker,
            format!("token={token}"),
        )
    };
    let active: serde_json::Value = introspect(&replicas[1], &tokens[0])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active["active"], true);

    // Revoked on replica 3: inactive on the others within a second (they follow the deny list).
    let revoke = post(
        &http,
        format!("{}/oauth2/revoke", replicas[2]),
        &client,
        format!("token={}", tokens[0]),
    )
    .await;
    assert_eq!(revoke.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(1);
    for base in &replicas[..2] {
        loop {
            let answer: serde_json::Value =
                introspect(base, &tokens[0]).await.json().await.unwrap();
            if answer["active"] == false {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{base} still sees the revoked token as active"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The other tokens are untouched.
    let other: serde_json::Value = introspect(&replicas[0], &tokens[1])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other["active"], true);

    // `client disable` returns once every replica has reloaded: at once, everywhere.
    let started = Instant::now();
    cli(
        &url,
        &["client", "disable", created["client_id"].as_str().unwrap()],
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "disable took {took:?}");
    for base in &replicas {
        let response = post(
            &http,
            format!("{base}/oauth2/token"),
            &client,
            "grant_type=client_credentials".into(),
        )
        .await;
        assert_eq!(
            response.status(),
            401,
            "{base} still issues to a disabled client"
        );
        let answer: serde_json::Value = introspect(base, &tokens[1]).await.json().await.unwrap();
        assert_eq!(
            answer["active"], false,
            "{base}: the disabled client's tokens are revoked"
        );
    }
    database.drop_database().await;
}

/// Three replicas started at the same moment on one database.
async fn start_three(url: &str, clock: &ManualClock) -> Vec<String> {
    let (a, b, c) = tokio::join!(
        replica(url, clock),
        replica(url, clock),
        replica(url, clock)
    );
    vec![a, b, c]
}

/// Each replica's JWK Set.
async fn jwks_of(http: &reqwest::Client, replicas: &[String]) -> Vec<serde_json::Value> {
    let mut keys = Vec::new();
    for base in replicas {
        keys.push(
            http.get(format!("{base}/jwks"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap(),
        );
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_data_moves_a_sqlite_installation_to_postgres() {
    let Some(database) = PgDatabase::create().await else {
        return;
    };
    let old = crate::helpers::spawn_app_with_issuer(ISSUER).await;
    let first = old.client(|_| {}).await;
    let second = old.client(|c| c.name = "second".into()).await;
    let extra = latchkey_server::service::admin::add_secret(
        old.store.as_ref(),
        &old.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        second.id(),
        None,
    )
    .await
    .unwrap()
    .value;
    let checker = old
        .client(|c| {
            c.can_introspect = true;
            c.grant_types = vec![];
        })
        .await;
    let issued: serde_json::Value = old
        .token_basic(&first, "grant_type=client_credentials")
        .await
        .json()
        .await
        .unwrap();
    let old_token = issued["access_token"].as_str().unwrap().to_owned();
    // A client registered dynamically (RFC 7591) with an initial access token good for two.
    let initial = cli(
        &old.database_url,
        &["registration-token", "create", "--max-uses", "2"],
    )
    .await;
    let initial = initial["registration_token"].as_str().unwrap().to_owned();
    let register = |base: String, body: serde_json::Value| {
        let (http, initial) = (old.http.clone(), initial.clone());
        async move {
            http.post(format!("{base}/oauth2/register"))
                .bearer_auth(initial)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let registered = register(
        old.base.clone(),
        serde_json::json!({"client_name": "dcr", "audience": ["https://api.example.com"]}),
    )
    .await;
    assert_eq!(registered.status(), 201);
    let registered: serde_json::Value = registered.json().await.unwrap();

    let moved = cli(
        &database.url,
        &[
            "migrate-data",
            "--from",
            &old.database_url,
            "--to",
            &database.url,
        ],
    )
    .await;
    assert_eq!(
        moved,
        serde_json::json!({
            "clients": 4, "secrets": 5, "keys": 2, "registration_tokens": 1, "registrations": 1
        })
    );

    let clock = ManualClock::new(T0);
    let new = replica(&database.url, &clock).await;
    let http = reqwest::Client::new();
    // Every client works with the secret it had, on the new database.
    for (id, secret) in [
        (first.id(), first.secret.as_str()),
        (second.id(), second.secret.as_str()),
        (second.id(), extra.1.expose()),
    ] {
        let response = post(
            &http,
            format!("{new}/oauth2/token"),
            &basic(id, secret),
            "grant_type=client_credentials".into(),
        )
        .await;
        assert_eq!(response.status(), 200, "{id}");
    }
    // The same signing key, so tokens signed before the move still verify offline...
    let (old_header, _) = crate::helpers::decode_parts(&old_token);
    let jwks: serde_json::Value = crate::helpers::get_json(&http, &format!("{new}/jwks")).await;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == old_header["kid"])
    );
    // ...but introspection treats them as revoked: the deny list did not move, so no revoked
    // token may come back to life.
    let answer: serde_json::Value = post(
        &http,
        format!("{new}/oauth2/introspect"),
        &checker.basic(),
        format!("token={old_token}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["active"], false);
    // The registered client reads its registration with the registration access token it was
    // given (RFC 7592), and gets tokens with its secret.
    let client_id = registered["client_id"].as_str().unwrap();
    let read = http
        .get(format!("{new}/oauth2/register/{client_id}"))
        .bearer_auth(registered["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let read: serde_json::Value = read.json().await.unwrap();
    assert_eq!(read["client_name"], "dcr");
    let response = post(
        &http,
        format!("{new}/oauth2/token"),
        &basic(client_id, registered["client_secret"].as_str().unwrap()),
        "grant_type=client_credentials".into(),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    // The initial access token moved with its use counted: one registration left, not two.
    assert_eq!(
        register(new.clone(), serde_json::json!({})).await.status(),
        201
    );
    assert_eq!(
        register(new.clone(), serde_json::json!({})).await.status(),
        401
    );

    // Into a database that is not empty: refused.
    let mut again = Command::new(BIN);
    again.args([
        "migrate-data",
        "--from",
        &old.database_url,
        "--to",
        &database.url,
    ]);
    let output = tokio::task::spawn_blocking(move || again.output().unwrap())
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("empty"));
    database.drop_database().await;
}

/// Connections cut under load (`pg_terminate_backend`, as in a database restart): requests
/// get 200 or 503 `temporarily_unavailable`, never 401 or 500, and the replica recovers by
/// itself once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutting_database_connections_under_load_gives_only_200_or_503() {
    let Some(database) = PgDatabase::create().await else {
        return;
    };
    let _alone = crate::helpers::UNDER_LOAD.lock().await;
    let clock = ManualClock::new(T0);
    let base = replica(&database.url, &clock).await;
    // Opaque tokens: issuing writes a row and introspecting reads one, so both need the
    // database on every request.
    let created = cli(
        &database.url,
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--token-format",
            "opaque",
            "--scope",
            "read",
            "--audience",
            "https://api.example.com",
        ],
    )
    .await;
    let client = basic(
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let checker = cli(
        &database.url,
        &[
            "client",
            "create",
            "--name",
            "api",
            "--can-introspect",
            "--grant-types",
            "",
        ],
    )
    .await;
    let checker = basic(
        checker["client_id"].as_str().unwrap(),
        checker["client_secret"].as_str().unwrap(),
    );
    let http = reqwest::Client::new();
    let issued: serde_json::Value = post(
        &http,
        format!("{base}/oauth2/token"),
        &client,
        "grant_type=client_credentials".into(),
    )
    .await
    .json()
    .await
    .unwrap();
    let token = issued["access_token"].as_str().unwrap().to_owned();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (http, base, client, checker, token, stop) = (
            http.clone(),
            base.clone(),
            client.clone(),
            checker.clone(),
            token.clone(),
            Arc::clone(&stop),
        );
        load.spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let response = if worker % 2 == 0 {
                    post(
                        &http,
                        format!("{base}/oauth2/token"),
                        &client,
                        "grant_type=client_credentials".into(),
                    )
                    .await
                } else {
                    post(
                        &http,
                        format!("{base}/oauth2/introspect"),
                        &checker,
                        format!("token={token}"),
                    )
                    .await
                };
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if status == 503 {
                    assert_eq!(body["error"], "temporarily_unavailable");
                }
                if worker % 2 == 1 && status == 200 {
                    assert_eq!(body["active"], true, "never inactive because of the outage");
                }
                statuses.push(status);
            }
            statuses
        });
    }
    // Cut every connection to the database, again and again, for about a second.
    let mut admin = sqlx::PgConnection::connect(&database.admin_url)
        .await
        .unwrap();
    for _ in 0..20 {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            database.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses: Vec<u16> = load.join_all().await.into_iter().flatten().collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "the outage was seen");

    // Recovery without a restart: within a few seconds, requests succeed again, and keep
    // succeeding.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = post(
            &http,
            format!("{base}/oauth2/token"),
            &client,
            "grant_type=client_credentials".into(),
        )
        .await;
        if response.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        let response = post(
            &http,
            format!("{base}/oauth2/introspect"),
            &checker,
            format!("token={token}"),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    drop(admin);
    database.drop_database().await;
}
