//! Faults under load, each on a PostgreSQL server of the test's own (never the machine's
//! shared one): the database restarted while two servers issue tokens.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_server::{Application, ServerConfig, SystemClock, store};
use latchkey_testkit::PrivatePostgres;
use serde_json::Value;
use sqlx::Connection as _;

use crate::helpers::{UNDER_LOAD, basic, cli_json as cli, get_json, token_request as token};

const ASK: &str = "grant_type=client_credentials";

/// One token request of the load: when it started (ms since the load began), how long it took
/// (ms), its status, and whether a 503 said when to retry.
struct Answer {
    started_ms: u64,
    took_ms: u64,
    status: u16,
    retry_after: bool,
    /// An opaque token it got, to look up afterwards.
    token: Option<String>,
}

/// A server on `url` with real time and no throttling (the load comes from one address): its
/// base URL, and a sender that stops it (dropping it stops it too) with the task that ends when
/// it has.
async fn server(url: &str) -> (String, Stopper) {
    let store = store::connect(url).await.unwrap();
    let config = ServerConfig {
        janitor_interval: Duration::from_secs(3600),
        usage_flush_interval: Duration::from_secs(3600),
        failed_auth_limit: None,
        failed_auth_limit_per_address: None,
        ..ServerConfig::default()
    };
    let app = Application::build(config, store, Arc::new(SystemClock))
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (base, Stopper { stop, running })
}

/// Stops a [`server`].
struct Stopper {
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<()>,
}

impl Stopper {
    /// Tells the server to stop (as SIGTERM does) and waits until it has.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.running.await.unwrap();
    }
}

fn client(database: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "client",
        "create",
        "--name",
        name,
        "--audience",
        "https://api.example.com",
    ];
    args.extend_from_slice(extra);
    let created = cli(database, &[], &args);
    basic(
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    )
}

/// A client with JWTs (no database write per token) and one with opaque tokens (a row each)
/// that may introspect: their `Authorization` headers.
fn jwt_and_opaque_clients(database: &str) -> (String, String) {
    let jwt = client(database, "jwt", &[]);
    let opaque = client(
        database,
        "opaque",
        &["--token-format", "opaque", "--can-introspect"],
    );
    (jwt, opaque)
}

async fn active(http: &reqwest::Client, base: &str, authorization: &str, token: &str) -> bool {
    let response = http
        .post(format!("{base}/oauth2/introspect"))
        .header("authorization", authorization)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["active"] == true
}

/// PostgreSQL stopped for 6 s in the middle of 20 s of token requests to two servers: every
/// answer is 200 or 503 with `Retry-After`, a 503 comes at once rather than after the pool's
/// timeout, service is whole again within 5 s of the database, and nothing committed is lost.
/// JWT clients need no database write per token and keep getting them; opaque tokens are
/// stored, so theirs get 503 while the database is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_on_two_replicas() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let _alone = UNDER_LOAD.lock().await;
    let url = postgres.url();
    let (first, _first) = server(&url).await;
    let (second, _second) = server(&url).await;
    let servers = [first, second];
    let (jwt, opaque) = jwt_and_opaque_clients(&url);
    let http = reqwest::Client::new();
    // A token revoked before the outage stays revoked after it.
    let revoked: Value = token(&http, &servers[0], &opaque)
        .await
        .json()
        .await
        .unwrap();
    let revoked = revoked["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{revoked}"))
        .to_owned();
    let response = http
        .post(format!("{}/oauth2/revoke", servers[0]))
        .header("authorization", &opaque)
        .form(&[("token", &revoked)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let keys_before: Value = get_json(&http, &format!("{}/jwks", servers[0])).await;

    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let began = Instant::now();
    let load = Duration::from_secs(20);
    let mut workers = Vec::new();
    for worker in 0..16 {
        let (http, answers) = (http.clone(), Arc::clone(&answers));
        let base = servers[worker % 2].clone();
        let authorization = if worker % 4 < 2 { &jwt } else { &opaque }.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while began.elapsed() < load {
                let started = began.elapsed();
                let response = token(&http, &base, &authorization).await;
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let body: Value = response.json().await.unwrap_or_default();
                mine.push(Answer {
                    started_ms: started.as_millis() as u64,
                    took_ms: (began.elapsed() - started).as_millis() as u64,
                    status,
                    retry_after,
                    token: (status == 200 && body["token_type"] == "Bearer")
                        .then(|| body["access_token"].as_str().unwrap_or_default().to_owned())
                        .filter(|t| !t.contains('.')),
                });
            }
            answers.lock().unwrap().extend(mine);
        }));
    }
    // The database goes away 5 s in and comes back 6 s later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stopping_ms = began.elapsed().as_millis() as u64;
    let postgres = Arc::new(postgres);
    let stopping = Arc::clone(&postgres);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    let down_ms = began.elapsed().as_millis() as u64;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let starting = Arc::clone(&postgres);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap();
    let up_ms = began.elapsed().as_millis() as u64;
    for worker in workers {
        worker.await.unwrap();
    }

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let rate = answers.len() as f64 / load.as_secs_f64();
    // The load the database was stopped under: token requests per second before it was.
    let rate_before = answers
        .iter()
        .filter(|a| a.started_ms < stopping_ms)
        .count() as f64
        / (stopping_ms as f64 / 1_000.0);
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    let mut refusal_ms: Vec<u64> = refused.iter().map(|a| a.took_ms).collect();
    refusal_ms.sort_unstable();
    let last_refused = refused.iter().map(|a| a.started_ms).max().unwrap_or(0);
    eprintln!(
        "{} requests ({rate:.0}/s, {rate_before:.0}/s before the stop), {} answered 503 (in {:?} ms at p50/p99/max); database down \
         at {down_ms} ms, up at {up_ms} ms; last 503 started at {last_refused} ms",
        answers.len(),
        refused.len(),
        [0.5, 0.99, 1.0].map(|p| refusal_ms
            .get(((refusal_ms.len() as f64 * p) as usize).min(refusal_ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)),
    );
    for answer in &answers {
        assert!(
            answer.status == 200 || (answer.status == 503 && answer.retry_after),
            "status {} (Retry-After: {}) at {} ms",
            answer.status,
            answer.retry_after,
            answer.started_ms
        );
    }
    assert!(!refused.is_empty(), "opaque tokens need the database");
    // JWT clients never needed it.
    assert!(
        answers
            .iter()
            .filter(|a| a.started_ms > down_ms + 500 && a.started_ms < up_ms)
            .any(|a| a.status == 200)
    );
    // Back within 5 s of the database.
    assert!(
        last_refused < up_ms + 5_000,
        "a 503 {} ms after the database came back",
        last_refused - up_ms
    );
    // Refusals come at once: none waits out the pool's 5 s timeout. A request that waits
    // 100 ms for a connection has one request open a connection of its own (refused at once
    // while PostgreSQL is down; 500 ms at most), and the outage it finds wakes every waiting
    // request; then one request at a time probes the same way while the rest are answered at
    // once.
    let slowest = refusal_ms.last().copied().unwrap_or(0);
    assert!(slowest <= 1_500, "a refusal took {slowest} ms");
    // Under load: at least 2,000 token requests a second when the database was stopped (about
    // 3,300-5,200/s here, with the other tests running beside it).
    assert!(
        rate_before >= 2_000.0,
        "{rate_before:.0} requests/s before the database stopped"
    );

    // Nothing lost: every opaque token answered is active, the revoked one is not, both
    // clients still authenticate, and the keys are the same.
    let issued: Vec<&String> = answers.iter().filter_map(|a| a.token.as_ref()).collect();
    assert!(!issued.is_empty());
    for (i, token) in issued
        .iter()
        .enumerate()
        .step_by((issued.len() / 200).max(1))
    {
        assert!(
            active(&http, &servers[i % 2], &opaque, token).await,
            "token {i} of {} is lost",
            issued.len()
        );
    }
    assert!(!active(&http, &servers[1], &opaque, &revoked).await);
    for base in &servers {
        for authorization in [&jwt, &opaque] {
            assert_eq!(token(&http, base, authorization).await.status(), 200);
        }
    }
    let keys_after: Value = get_json(&http, &format!("{}/jwks", servers[1])).await;
    assert_eq!(keys_before, keys_after);
}

/// A server whose database has gone stops promptly when told to: its last usage write fails
/// at once instead of waiting out the pool (it took 9.8 s before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_database_is_gone_stops_at_once() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let url = postgres.url();
    let (base, stopper) = server(&url).await;
    // Tokens counted in memory, for the usage write at shutdown.
    let jwt = client(&url, "jwt", &[]);
    let http = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(token(&http, &base, &jwt).await.status(), 200);
    }
    tokio::task::spawn_blocking(move || postgres.stop())
        .await
        .unwrap();
    let asked = Instant::now();
    stopper.stop().await;
    eprintln!("stopped {:?} after it was asked", asked.elapsed());
    // Its last usage write and its unregistering each give up at the first refused
    // connection, and a poll under way is dropped; the bound leaves room for a machine busy
    // with the other tests.
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "stopped after {:?}",
        asked.elapsed()
    );
}

/// Stopping under load (SIGTERM in `latchkey serve`): every request the server took is
/// answered in full, and requests after the stop find no listener (a client may send them
/// elsewhere) rather than a half answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_under_load_answers_every_request_it_took() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let _alone = UNDER_LOAD.lock().await;
    let url = postgres.url();
    let (base, stopper) = server(&url).await;
    let opaque = client(&url, "opaque", &["--token-format", "opaque"]);
    // Each worker on its own keep-alive connection, until the server goes.
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (base, authorization) = (base.clone(), opaque.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (mut answered, mut refused) = (Vec::new(), 0u32);
            loop {
                match http
                    .post(format!("{base}/oauth2/token"))
                    .header("authorization", &authorization)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(ASK)
                    .send()
                    .await
                {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // An answer begun is finished: its body arrives whole.
                        let body: Value = response.json().await.unwrap();
                        assert_eq!(status, 200, "{body}");
                        answered.push(body["access_token"].as_str().unwrap().to_owned());
                    }
                    // The listener is gone (or a kept-alive connection closed as the server
                    // stopped, before it read the request): stop after a few.
                    Err(error) => {
                        assert!(error.is_connect() || error.is_request(), "{error}");
                        refused += 1;
                        if refused > 3 {
                            return answered;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stopper.stop().await;
    let mut answered = Vec::new();
    for worker in workers {
        answered.extend(worker.await.unwrap());
    }
    assert!(answered.len() > 100, "{} tokens", answered.len());
    // Every token answered was stored before its answer: the database has each one.
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM opaque_tokens")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(stored, answered.len() as i64);
}

/// One of three `latchkey serve` replicas killed with SIGKILL in the middle of a run of admin
/// changes: the other two keep serving, every change the CLI reported made is in force on both
/// at once, and the one change that found the dead replica names it by host and address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_during_admin_changes() {
    use crate::gateways::{BIN, listen_field, start_logged};
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let url = postgres.url();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let mut command = std::process::Command::new(BIN);
        command.args(["--database", &url, "serve", "--listen", "127.0.0.1:0"]);
        let (process, line, _) = start_logged(command, "latchkey is serving");
        replicas.push((process, format!("http://{}", listen_field(&line))));
    }
    let created = cli(
        &url,
        &[],
        &[
            "client",
            "create",
            "--name",
            "changing",
            "--scope",
            "s0",
            "--audience",
            "https://api.example.com",
        ],
    );
    let id = created["client_id"].as_str().unwrap().to_owned();
    let authorization = basic(&id, created["client_secret"].as_str().unwrap());
    let http = reqwest::Client::new();
    let scoped = |base: String, scope: String| {
        let (http, authorization) = (http.clone(), authorization.clone());
        async move {
            http.post(format!("{base}/oauth2/token"))
                .header("authorization", authorization)
                .form(&[("grant_type", "client_credentials"), ("scope", &scope)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let dead = replicas[2].1.trim_start_matches("http://").to_owned();
    let mut warnings = Vec::new();
    for change in 1..=12 {
        if change == 5 {
            let (mut process, _) = replicas.pop().unwrap();
            process.child().kill().unwrap();
            process.child().wait().unwrap();
        }
        let scope = format!("s{change}");
        let output = std::process::Command::new(BIN)
            .env("LATCHKEY_DATABASE_URL", &url)
            .env("USER", "ops")
            .args([
                "--output", "json", "client", "update", &id, "--scope", &scope,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "change {change} failed");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !stderr.trim().is_empty() {
            warnings.push((change, stderr));
        }
        // Reported made, so in force on every live replica at once.
        for (_, base) in &replicas {
            assert_eq!(
                scoped(base.clone(), scope.clone()).await,
                200,
                "{base} {scope}"
            );
        }
    }
    // Only the first change after the kill waited for the dead replica, and it said which.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (change, warning) = &warnings[0];
    assert_eq!(*change, 5);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    assert!(
        warning.contains(&format!("the server on {host} at {dead} (id ")),
        "{warning}"
    );

    // Through the admin API the same: the second replica killed, a change sent to the first
    // names it (in the `Latchkey-Unconfirmed-Servers` header, which the CLI reads).
    let admin = cli(&url, &[], &["client", "create", "--name", "ops", "--admin"]);
    let (mut second, second_base) = replicas.pop().unwrap();
    second.child().kill().unwrap();
    second.child().wait().unwrap();
    let output = std::process::Command::new(BIN)
        .env_remove("LATCHKEY_DATABASE_URL")
        .env(
            "LATCHKEY_ADMIN_CLIENT_ID",
            admin["client_id"].as_str().unwrap(),
        )
        .env(
            "LATCHKEY_ADMIN_CLIENT_SECRET",
            admin["client_secret"].as_str().unwrap(),
        )
        .args(["--output", "json", "--server", &replicas[0].1])
        .args(["client", "update", &id, "--scope", "last"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let second_addr = second_base.trim_start_matches("http://");
    assert!(
        stderr.contains(&format!("the server on {host} at {second_addr} (id ")),
        "{stderr}"
    );
    assert_eq!(scoped(replicas[0].1.clone(), "last".into()).await, 200);
}

/// A small file system of the test's own (tmpfs), unmounted when dropped; `None` where this
/// process may not mount (not root), a failure under CI.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs to mount a tmpfs (root)"
            );
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        Some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// SQLite on a disk that fills up: writes (opaque tokens, admin changes) answer 503 or fail
/// with a clear message, JWTs for known clients are still issued, and once space returns
/// everything works again and the database is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_refuses_writes_and_keeps_issuing_jwts() {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let url = format!("sqlite://{}/latchkey.db", disk.0.path().display());
    let (base, stopper) = server(&url).await;
    let (jwt, opaque) = jwt_and_opaque_clients(&url);
    let http = reqwest::Client::new();
    let before: Value = token(&http, &base, &opaque).await.json().await.unwrap();
    let before = before["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token(&http, &base, &jwt).await.status(), 200);

    // Fill the disk to the last byte.
    let filler = disk.0.path().join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {}
        let _ = file.sync_all();
    }
    let mut refused = 0;
    for _ in 0..20 {
        let response = token(&http, &base, &opaque).await;
        let status = response.status().as_u16();
        assert!(status == 200 || status == 503, "{status}");
        if status == 503 {
            assert!(response.headers().contains_key("retry-after"));
            refused += 1;
        }
    }
    assert!(refused > 0, "no write was refused on a full disk");
    // Known clients still get JWTs.
    for _ in 0..5 {
        assert_eq!(token(&http, &base, &jwt).await.status(), 200);
    }
    // An admin change fails with a message, not a crash.
    let output = std::process::Command::new(crate::gateways::BIN)
        .env("LATCHKEY_DATABASE_URL", &url)
        .env("USER", "ops")
        .args(["client", "create", "--name", "while-full"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));

    // Space returns: writes work again and nothing was lost or corrupted.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(token(&http, &base, &opaque).await.status(), 200);
    assert!(active(&http, &base, &opaque, &before).await);
    client(&url, "after", &[]);
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    // Stopped before the disk is unmounted, which needs the database file closed.
    drop(db);
    stopper.stop().await;
}
