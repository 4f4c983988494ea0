//! How latchkey scales with the number of registered clients (issue 15): the cost of a request
//! and of a change must not grow with it.
//!
//!     cargo bench -p latchkey --bench scale
//!     BENCH_CLIENTS=10000000 cargo bench -p latchkey --bench scale
//!     BENCH_DATABASE=postgres://postgres@127.0.0.1:5432/test BENCH_REPLICAS=3 \
//!         cargo bench -p latchkey --bench scale
//!
//! Runs the release `latchkey` binary as a user would. Registers `BENCH_CLIENTS` (1,000,000)
//! clients with `latchkey client import` (timed), and 10 clients in a second database. Starts
//! `latchkey serve` on each (`BENCH_REPLICAS` servers on the big database; start-up timed to
//! `/readyz`) and measures, with the access log on as users run it:
//! - token throughput for the same 10 hot clients on both, taking turns (two rounds each);
//!   the ratio big / small (target ≥ 0.9);
//! - the admin API's first page of 100 clients, and one from the middle (a read-only admin);
//! - RSS of each big-database server after `BENCH_DISTINCT` (10,000) distinct clients got a
//!   token (target ≤ 1 GB with the default cache);
//! - how long `latchkey client disable` takes to return, which is when every running server
//!   has confirmed the change, ten times; and the same change made by a long-running process
//!   (the admin call the admin API makes), without the command's own start (target ≤ 100 ms).
//!
//! The soak (issue 19): `BENCH_SOAK_MINUTES=30 BENCH_CLIENTS=100000 BENCH_DISTINCT=100000`
//! measures the server's capacity for 10 s, then asks for tokens at half of it (an open loop:
//! requests are sent on a fixed schedule whether or not answers keep up) from
//! `BENCH_DISTINCT` distinct clients in turn for that many minutes, while a `client update`
//! runs every 2 s. Every 10 s it records the rate, p50/p99, errors and the server's RSS, to
//! `BENCH_SOAK_OUT` (default `target/soak`): `soak.csv` and a plot, `soak.svg`. It prints
//! whether RSS stayed within 10 % and p99 within 20 % (after the first 5 minutes, and the
//! last third against the first).
//!
//! `BENCH_DATABASE=postgres://...` puts the big database on a fresh PostgreSQL database next to
//! the one named (dropped afterwards); the small one stays SQLite. Other settings:
//! `BENCH_CONNECTIONS` (16), `BENCH_SECONDS` (5 per turn), `BENCH_CACHE` (the servers'
//! `--client-cache-size`, default theirs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use sqlx::Connection as _;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let clients: usize = setting("BENCH_CLIENTS", 1_000_000);
    let distinct: usize = setting("BENCH_DISTINCT", 10_000).min(clients);
    let replicas: usize = setting("BENCH_REPLICAS", 1);
    let connections: usize = setting("BENCH_CONNECTIONS", 16);
    let seconds: u64 = setting("BENCH_SECONDS", 5);
    let dir = tempfile::tempdir().unwrap();

    let (big_db, postgres) = match std::env::var("BENCH_DATABASE") {
        Ok(url) if url.starts_with("postgres") => {
            let created = create_postgres_database(&url).await;
            (created.1.clone(), Some(created))
        }
        _ => (
            format!("sqlite://{}", dir.path().join("big.db").display()),
            None,
        ),
    };
    let small_db = format!("sqlite://{}", dir.path().join("small.db").display());

    println!("registering {clients} clients with `latchkey client import`...");
    let (took, big_secrets) = import(&big_db, clients, distinct.max(30), dir.path());
    println!(
        "  import: {clients} clients in {:.1} s ({:.0} clients/s)",
        took.as_secs_f64(),
        clients as f64 / took.as_secs_f64()
    );
    let (_, small_secrets) = import(&small_db, 10, 10, dir.path());

    let soak_minutes: u64 = setting("BENCH_SOAK_MINUTES", 0);
    if soak_minutes > 0 {
        let (server, _) = serve(&big_db);
        soak(&big_db, &server, &big_secrets, soak_minutes, connections).await;
        return;
    }

    let mut big = Vec::new();
    for _ in 0..replicas {
        let (server, ready) = serve(&big_db);
        println!(
            "  serve on {clients} clients: ready in {} ms",
            ready.as_millis()
        );
        big.push(server);
    }
    let (small, ready) = serve(&small_db);
    println!("  serve on 10 clients: ready in {} ms", ready.as_millis());

    let hot = |secrets: &[(String, String)]| -> Arc<Vec<String>> {
        Arc::new(secrets[..10].iter().map(|(id, s)| basic(id, s)).collect())
    };
    let big_hot = hot(&big_secrets);
    let small_hot = hot(&small_secrets);
    let big_addrs: Vec<String> = big.iter().map(|s| s.addr.clone()).collect();
    let small_addrs = vec![small.addr.clone()];
    // Warm both (and fill their caches with the hot clients).
    load(
        &small_addrs,
        &small_hot,
        connections,
        Duration::from_secs(1),
    )
    .await;
    load(&big_addrs, &big_hot, connections, Duration::from_secs(1)).await;
    let mut rates = (Vec::new(), Vec::new());
    for round in 1..=2 {
        let s = load(
            &small_addrs,
            &small_hot,
            connections,
            Duration::from_secs(seconds),
        )
        .await;
        let b = load(
            &big_addrs,
            &big_hot,
            connections,
            Duration::from_secs(seconds),
        )
        .await;
        println!(
            "  round {round}: 10 clients {:.0} tokens/s (p99 {:.2} ms, {} errors); \
             {clients} clients {:.0} tokens/s (p99 {:.2} ms, {} errors)",
            s.rate, s.p99_ms, s.errors, b.rate, b.p99_ms, b.errors
        );
        rates.0.push(s.rate);
        rates.1.push(b.rate);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "token throughput, same 10 hot clients: {clients} registered / 10 registered = {:.2}",
        mean(&rates.1) / mean(&rates.0)
    );

    // Distinct clients: each gets one token, spread over the servers.
    let distinct_auth: Arc<Vec<String>> = Arc::new(
        big_secrets[..distinct]
            .iter()
            .map(|(id, s)| basic(id, s))
            .collect(),
    );
    let started = Instant::now();
    let errors = each_once(&big_addrs, &distinct_auth, connections).await;
    println!(
        "{distinct} distinct clients got one token each in {:.2} s ({errors} errors)",
        started.elapsed().as_secs_f64()
    );
    for (i, server) in big.iter().enumerate() {
        println!(
            "  RSS of server {} on {clients} clients: {} MiB",
            i + 1,
            rss_kib(server.child.id()) / 1024
        );
    }
    println!(
        "  RSS of the server on 10 clients: {} MiB",
        rss_kib(small.child.id()) / 1024
    );

    // A one-client change, confirmed by every running server before the CLI returns.
    let mut times = Vec::new();
    for (id, _) in &big_secrets[distinct.saturating_sub(10)..distinct] {
        let started = Instant::now();
        let output = Command::new(BIN)
            .args(["--database", &big_db, "client", "disable", id])
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stderr.is_empty(),
            "a server did not confirm: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        times.push(took.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "`client disable` confirmed by {replicas} server(s): median {:.0} ms, max {:.0} ms \
         (the whole command: process start, database open, change, confirmation)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    // The same, without the command's own start (on PostgreSQL a new process spends about
    // 200 ms seeding aws-lc's jitter entropy before its first TLS attempt): the admin call a
    // long-running process (the admin API) makes, re-enabling the clients.
    let admin_store = latchkey_server::store::connect(&big_db).await.unwrap();
    let set_enabled = async |id: &str, enabled: bool| {
        let started = Instant::now();
        let applied = latchkey_server::service::admin::update_client(
            admin_store.as_ref(),
            &latchkey_server::SystemClock,
            &latchkey_server::model::Actor::Cli("test".into()),
            id,
            latchkey_server::model::ClientUpdate {
                enabled: Some(enabled),
                ..latchkey_server::model::ClientUpdate::default()
            },
        )
        .await
        .unwrap();
        assert!(
            applied.unconfirmed_servers.is_empty(),
            "every server confirmed"
        );
        started.elapsed().as_secs_f64() * 1000.0
    };
    let changed = &big_secrets[distinct.saturating_sub(10)..distinct];
    // The process's first change opens its database connection and prepares its statements:
    // timed apart, as a long-running admin process pays it once.
    let first = set_enabled(&changed[0].0, true).await;
    let mut confirmed = Vec::new();
    for (id, _) in changed {
        confirmed.push(set_enabled(id, false).await);
        confirmed.push(set_enabled(id, true).await);
    }
    confirmed.sort_by(f64::total_cmp);
    println!(
        "one-client change (admin call) confirmed by {replicas} server(s): median {:.0} ms, \
         p90 {:.0} ms, max {:.0} ms over {} changes (the process's first: {first:.0} ms)",
        confirmed[confirmed.len() / 2],
        confirmed[confirmed.len() * 9 / 10],
        confirmed[confirmed.len() - 1],
        confirmed.len()
    );
    // Disable them again: each disabled client is refused by every server at once.
    for (id, _) in changed {
        set_enabled(id, false).await;
    }
    drop(admin_store);
    let disabled: Vec<String> = big_secrets[distinct.saturating_sub(10)..distinct]
        .iter()
        .map(|(id, s)| basic(id, s))
        .collect();
    for addr in &big_addrs {
        for auth in &disabled {
            assert_eq!(token_status(addr, auth).await, 401, "disabled everywhere");
        }
    }

    admin_api_pages(&big_db, &big_addrs[0], &big_secrets[0].0, clients).await;

    drop(big);
    drop(small);
    if let Some((admin_url, _, name)) = postgres {
        drop_postgres_database(&admin_url, &name).await;
    }
}

/// Writes `n` client lines and imports them; returns the import's duration and the ids and
/// secrets of the first `keep`.
fn import(
    database: &str,
    n: usize,
    keep: usize,
    dir: &std::path::Path,
) -> (Duration, Vec<(String, String)>) {
    let input = dir.join(format!("clients-{n}.jsonl"));
    let output = dir.join(format!("imported-{n}.jsonl"));
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for i in 0..n {
            writeln!(
                file,
                r#"{{"name":"svc-{i}","scope":"read write","audience":["https://api.example.com"]}}"#
            )
            .unwrap();
        }
        file.flush().unwrap();
    }
    let started = Instant::now();
    let status = Command::new(BIN)
        .args(["--database", database, "client", "import"])
        .arg(&input)
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    let took = started.elapsed();
    assert!(status.success());
    let reader = std::io::BufReader::new(std::fs::File::open(&output).unwrap());
    let kept = reader
        .lines()
        .take(keep)
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            (
                value["client_id"].as_str().unwrap().to_owned(),
                value["client_secret"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (took, kept)
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `latchkey serve` and returns it with the time it took to answer `/readyz` with 200.
fn serve(database: &str) -> (Server, Duration) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(BIN);
    command
        .args(["--database", database, "serve", "--listen", &addr])
        .args(["--issuer", "https://auth.bench"]);
    if let Ok(size) = std::env::var("BENCH_CACHE") {
        command.args(["--client-cache-size", &size]);
    }
    let started = Instant::now();
    let child = command
        // The access log stays on, as users run it.
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, addr };
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(&server.addr) {
            stream
                .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return (server, started.elapsed());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the server did not become ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn token_request(addr: &str, authorization: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/oauth2/token")
        .header("host", addr)
        .header("authorization", authorization)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(
            b"grant_type=client_credentials&scope=read",
        )))
        .unwrap()
}

/// One token request for `authorization` on `sender`: its latency (µs) and whether it got a
/// token.
async fn ask(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: &str,
    authorization: &str,
) -> (u32, bool) {
    let sent = Instant::now();
    let response = sender
        .send_request(token_request(addr, authorization))
        .await
        .unwrap();
    let ok = response.status() == 200;
    response.into_body().collect().await.unwrap();
    (sent.elapsed().as_micros() as u32, ok)
}

async fn connect(addr: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn token_status(addr: &str, authorization: &str) -> u16 {
    let mut sender = connect(addr).await;
    let response = sender
        .send_request(token_request(addr, authorization))
        .await
        .unwrap();
    response.status().as_u16()
}

/// The admin API's first page of clients, and a page from the middle, as a read-only admin
/// client gets them: median and max of 20 each, after one untimed request.
async fn admin_api_pages(database: &str, addr: &str, middle_id: &str, clients: usize) {
    let created = Command::new(BIN)
        .args([
            "--database",
            database,
            "--output",
            "json",
            "client",
            "create",
        ])
        .args(["--name", "bench-admin", "--admin-read"])
        .output()
        .unwrap();
    assert!(created.status.success());
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let auth = basic(
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let mut sender = connect(addr).await;
    let token_request = hyper::Request::post("/oauth2/token")
        .header("host", addr)
        .header("authorization", &auth)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(
            b"grant_type=client_credentials&resource=urn%3Alatchkey%3Aadmin",
        )))
        .unwrap();
    let response = sender.send_request(token_request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());
    for (what, path) in [
        ("first page", "/admin/v1/clients?limit=100".to_owned()),
        (
            "a page from the middle",
            format!("/admin/v1/clients?limit=100&after={middle_id}"),
        ),
    ] {
        let mut times = Vec::new();
        for round in 0..21 {
            let request = hyper::Request::get(path.as_str())
                .header("host", addr)
                .header("authorization", &bearer)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let started = Instant::now();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let took = started.elapsed();
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(page["items"].as_array().unwrap().len(), 100);
            if round > 0 {
                times.push(took.as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "admin API, {what} of 100 of {clients} clients: median {:.1} ms, max {:.1} ms",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

struct Load {
    rate: f64,
    p99_ms: f64,
    errors: u64,
}

/// `connections` keep-alive connections spread over `addrs`; request `k` of connection `c`
/// uses credentials `(c + k * connections) % n`.
async fn load(
    addrs: &[String],
    auths: &Arc<Vec<String>>,
    connections: usize,
    duration: Duration,
) -> Load {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let addr = addrs[c % addrs.len()].clone();
        let auths = Arc::clone(auths);
        tasks.spawn(async move {
            let mut sender = connect(&addr).await;
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut k = c;
            while Instant::now() < deadline {
                let (micros, ok) = ask(&mut sender, &addr, &auths[k % auths.len()]).await;
                latencies.push(micros);
                errors += u64::from(!ok);
                k += connections;
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    Load {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p99_ms: f64::from(p99) / 1000.0,
        errors,
    }
}

/// Every credential once, over `connections` connections; returns the number of non-200s.
async fn each_once(addrs: &[String], auths: &Arc<Vec<String>>, connections: usize) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let addr = addrs[c % addrs.len()].clone();
        let auths = Arc::clone(auths);
        tasks.spawn(async move {
            let mut sender = connect(&addr).await;
            let mut errors = 0u64;
            for auth in auths.iter().skip(c).step_by(connections) {
                errors += u64::from(!ask(&mut sender, &addr, auth).await.1);
            }
            errors
        });
    }
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        errors += done.unwrap();
    }
    errors
}

/// A fresh database on the PostgreSQL server of `url`: (admin URL, new database URL, name).
async fn create_postgres_database(url: &str) -> (String, String, String) {
    let name = format!("latchkey_scale_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    (url.to_owned(), format!("{base}/{name}"), name)
}

async fn drop_postgres_database(admin_url: &str, name: &str) {
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

/// One 10 s window of the soak.
struct Window {
    /// Minutes since the soak began, at the window's end.
    minute: f64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    rss_mib: f64,
}

/// The soak: half the measured capacity for `minutes`, admin changes every 2 s, a window of
/// figures every 10 s (see the module's comment).
async fn soak(
    database: &str,
    server: &Server,
    secrets: &[(String, String)],
    minutes: u64,
    connections: usize,
) {
    let addrs = vec![server.addr.clone()];
    let auths: Arc<Vec<String>> = Arc::new(secrets.iter().map(|(id, s)| basic(id, s)).collect());
    // Every client once first, so the soak starts from a warm server.
    each_once(&addrs, &auths, connections).await;
    let capacity = load(&addrs, &auths, connections, Duration::from_secs(10)).await;
    let target = capacity.rate / 2.0;
    println!(
        "capacity {:.0} tokens/s (p99 {:.2} ms); soaking at {target:.0}/s for {minutes} min \
         with {} distinct clients and a client update every 2 s",
        capacity.rate,
        capacity.p99_ms,
        auths.len()
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(minutes * 60);
    // Admin changes: a client's scope, every 2 s, with the CLI as an operator runs it.
    let changes = {
        let database = database.to_owned();
        let ids: Vec<String> = secrets.iter().map(|(id, _)| id.clone()).collect();
        tokio::task::spawn_blocking(move || {
            let (mut made, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let id = &ids[fastrand::usize(..ids.len())];
                let status = Command::new(BIN)
                    .args(["--database", &database, "client", "update", id])
                    .args(["--scope", if made % 2 == 0 { "read" } else { "read write" }])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                if status.success() {
                    made += 1;
                } else {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            (made, failed)
        })
    };
    // The load: each connection on a fixed schedule; answers go to the collector.
    let (answers, mut collected) = tokio::sync::mpsc::unbounded_channel::<(u64, u32, bool)>();
    let every = Duration::from_secs_f64(connections as f64 / target);
    for c in 0..connections {
        let (addr, auths, answers) = (server.addr.clone(), Arc::clone(&auths), answers.clone());
        tokio::spawn(async move {
            let mut sender = connect(&addr).await;
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut k = c;
            while Instant::now() < deadline {
                ticks.tick().await;
                let window = started.elapsed().as_secs() / 10;
                let (micros, ok) = ask(&mut sender, &addr, &auths[k % auths.len()]).await;
                let _ = answers.send((window, micros, ok));
                k += connections;
            }
        });
    }
    drop(answers);
    let pid = server.child.id();
    let mut windows: Vec<Window> = Vec::new();
    // Window `index`'s figures, from its answers (answers that arrive after the next window
    // began count in that one).
    let close = |index: u64, latencies: &mut Vec<u32>, errors: u64, windows: &mut Vec<Window>| {
        if latencies.is_empty() {
            return;
        }
        latencies.sort_unstable();
        let at = |p: f64| {
            let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
            f64::from(latencies[i]) / 1000.0
        };
        let window = Window {
            minute: (index + 1) as f64 / 6.0,
            rate: latencies.len() as f64 / 10.0,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            errors,
            rss_mib: rss_kib(pid) as f64 / 1024.0,
        };
        println!(
            "  {:5.1} min  {:6.0}/s  p50 {:.2} ms  p99 {:.2} ms  {} errors  RSS {:.1} MiB",
            window.minute, window.rate, window.p50_ms, window.p99_ms, window.errors, window.rss_mib
        );
        windows.push(window);
    };
    let (mut index, mut latencies, mut errors) = (0u64, Vec::new(), 0u64);
    while let Some((window, latency, ok)) = collected.recv().await {
        if window > index {
            close(index, &mut latencies, errors, &mut windows);
            (index, errors) = (window, 0);
            latencies.clear();
        }
        latencies.push(latency);
        errors += u64::from(!ok);
    }
    // The last window is whole unless the schedule ran over: then it holds only stragglers.
    if index < minutes * 6 {
        close(index, &mut latencies, errors, &mut windows);
    }
    let (made, failed) = changes.await.unwrap();
    report(&windows, made, failed, target);
}

/// The soak's verdict, CSV and plot.
fn report(windows: &[Window], made: u64, failed: u64, target: f64) {
    // The first 5 minutes settle (a shorter soak: its first sixth).
    let span = windows.last().map_or(0.0, |w| w.minute);
    let warmup = (span / 6.0).min(5.0);
    let settled: Vec<&Window> = windows.iter().filter(|w| w.minute > warmup).collect();
    if settled.is_empty() {
        println!("soak: too short to judge");
        return;
    }
    let third = (settled.len() / 3).max(1);
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (first, last) = (&settled[..third], &settled[settled.len() - third..]);
    let rss = |ws: &[&Window]| median(&mut ws.iter().map(|w| w.rss_mib).collect());
    let p99 = |ws: &[&Window]| median(&mut ws.iter().map(|w| w.p99_ms).collect());
    let rss_change = rss(last) / rss(first) - 1.0;
    let p99_change = p99(last) / p99(first) - 1.0;
    let errors: u64 = windows.iter().map(|w| w.errors).sum();
    let requests: f64 = windows.iter().map(|w| w.rate * 10.0).sum();
    println!(
        "soak: {requests:.0} requests at {target:.0}/s, {errors} errors; {made} admin changes \
         ({failed} failed)"
    );
    println!(
        "  RSS {:.1} -> {:.1} MiB ({:+.1} %; target within 10 %: {}); p99 {:.2} -> {:.2} ms \
         ({:+.1} %; target within 20 %: {}) (medians of the first and last third after 5 min)",
        rss(first),
        rss(last),
        rss_change * 100.0,
        if rss_change.abs() <= 0.10 {
            "met"
        } else {
            "NOT met"
        },
        p99(first),
        p99(last),
        p99_change * 100.0,
        if p99_change.abs() <= 0.20 {
            "met"
        } else {
            "NOT met"
        },
    );
    let out = std::env::var("BENCH_SOAK_OUT").unwrap_or_else(|_| "target/soak".to_owned());
    std::fs::create_dir_all(&out).unwrap();
    let mut csv = String::from("minute,rate,p50_ms,p99_ms,errors,rss_mib\n");
    for w in windows {
        csv.push_str(&format!(
            "{:.2},{:.0},{:.3},{:.3},{},{:.1}\n",
            w.minute, w.rate, w.p50_ms, w.p99_ms, w.errors, w.rss_mib
        ));
    }
    std::fs::write(format!("{out}/soak.csv"), csv).unwrap();
    std::fs::write(format!("{out}/soak.svg"), plot(windows)).unwrap();
    println!("  wrote {out}/soak.csv and {out}/soak.svg");
}

/// A line of a plot: its name, colour and values (one per window).
type Line<'a> = (&'a str, &'a str, Vec<f64>);

/// Two panels over time: the server's RSS (MiB) and the p99 and p50 (ms).
fn plot(windows: &[Window]) -> String {
    let (width, panel, left, top) = (900.0, 220.0, 70.0, 30.0);
    let span = windows.last().map_or(1.0, |w| w.minute).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" \
         font-family=\"sans-serif\" font-size=\"12\"><rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>",
        top * 3.0 + panel * 2.0 + 30.0
    );
    let series: [(&str, Vec<Line>); 2] = [
        (
            "server RSS (MiB)",
            vec![(
                "RSS",
                "#1f77b4",
                windows.iter().map(|w| w.rss_mib).collect(),
            )],
        ),
        (
            "token request latency (ms)",
            vec![
                ("p99", "#d62728", windows.iter().map(|w| w.p99_ms).collect()),
                ("p50", "#2ca02c", windows.iter().map(|w| w.p50_ms).collect()),
            ],
        ),
    ];
    for (i, (title, lines)) in series.iter().enumerate() {
        let y0 = top + i as f64 * (panel + top);
        let most = lines
            .iter()
            .flat_map(|(_, _, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.1;
        let plot_width = width - left - 20.0;
        svg.push_str(&format!(
            "<text x=\"{left}\" y=\"{}\" font-weight=\"bold\">{title}</text>\
             <rect x=\"{left}\" y=\"{y0}\" width=\"{plot_width}\" height=\"{panel}\" \
             fill=\"none\" stroke=\"#999\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{most:.1}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
            y0 - 8.0,
            left - 6.0,
            y0 + 10.0,
            left - 6.0,
            y0 + panel
        ));
        for (k, (name, colour, values)) in lines.iter().enumerate() {
            let points: Vec<String> = windows
                .iter()
                .zip(values)
                .map(|(w, v)| {
                    format!(
                        "{:.1},{:.1}",
                        left + w.minute / span * plot_width,
                        y0 + panel - v / most * panel
                    )
                })
                .collect();
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" \
                 points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>",
                points.join(" "),
                left + plot_width - 40.0,
                y0 + 16.0 + k as f64 * 14.0
            ));
        }
    }
    let axis = top * 3.0 + panel * 2.0 + 15.0;
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{axis}\">0 min</text><text x=\"{}\" y=\"{axis}\" \
         text-anchor=\"end\">{span:.0} min</text></svg>",
        width - 20.0
    ));
    svg
}
