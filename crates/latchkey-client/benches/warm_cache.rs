//! The cost of `ClientCredentials::token()` when the cache is warm: the path every outgoing
//! request of a service takes.
//!
//!     cargo bench -p latchkey-client --bench warm_cache
//!
//! Starts the real server in-process on a temp SQLite database, fetches one token, then:
//! 1. one task on a single-threaded runtime calls `token()` in a loop (ns per call);
//! 2. 64 tasks on a runtime with one worker per core call it at once, yielding every 64 calls
//!    so they interleave (aggregate calls per second, and ns per call per core).
//!
//! Settings (environment): `BENCH_CALLS` (calls per measurement, default 20,000,000),
//! `BENCH_TASKS` (64). Targets: < 1 µs per call single-threaded, and no collapse under
//! contention: the concurrent run's per-core cost stays within a small factor of the
//! single-threaded one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_client::ClientCredentials;
use latchkey_proto::{ClientAuthMethod, GrantType, TokenFormat};
use latchkey_server::service::admin::{self, NewClient};
use latchkey_server::{Application, ServerConfig, SystemClock, store};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let calls = setting("BENCH_CALLS", 20_000_000);
    let tasks = setting("BENCH_TASKS", 64);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());

    // The server, on a runtime of its own.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (token_endpoint, id, secret) = server.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = store::connect(&url).await.unwrap();
        let config = ServerConfig {
            janitor_interval: Duration::from_secs(3600),
            ..ServerConfig::default()
        };
        let app = Application::build(config, Arc::clone(&store), Arc::new(SystemClock))
            .await
            .unwrap();
        let endpoint = format!("http://{}/oauth2/token", app.local_addr());
        tokio::spawn(app.run_until(std::future::pending()));
        let new = NewClient {
            name: "bench".into(),
            scope: vec!["read".into()],
            audience: vec!["https://api.example.com".into()],
            token_ttl_seconds: 3600,
            auth_method: ClientAuthMethod::ClientSecretBasic,
            grant_types: vec![GrantType::ClientCredentials],
            can_introspect: false,
            token_format: TokenFormat::Jwt,
            reuse_tokens: false,
            limits: Default::default(),
        };
        let (record, secret) = admin::create_client(
            store.as_ref(),
            &SystemClock,
            &latchkey_server::model::Actor::Cli("test".into()),
            new,
        )
        .await
        .unwrap()
        .value;
        (endpoint, record.client_id, secret.expose().to_owned())
    });

    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tokens = single.block_on(async {
        let tokens = ClientCredentials::builder()
            .token_endpoint(&token_endpoint)
            .client_id(&id)
            .client_secret(secret.as_str())
            .scope("read")
            .build()
            .await
            .unwrap();
        tokens.token().await.unwrap();
        tokens
    });

    // 1. Single-threaded.
    let per_call = single.block_on(async {
        for _ in 0..calls / 10 {
            black_box(tokens.token().await.unwrap());
        }
        let started = Instant::now();
        for _ in 0..calls {
            black_box(tokens.token().await.unwrap());
        }
        started.elapsed() / u32::try_from(calls).unwrap()
    });
    println!(
        "warm token(), 1 task, 1 thread:  {:>7.1} ns/call",
        nanos(per_call)
    );

    // 2. Concurrent.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    let per_task = calls / tasks;
    let elapsed = multi.block_on(async {
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let tokens = tokens.clone();
            set.spawn(async move {
                for i in 0..per_task {
                    black_box(tokens.token().await.unwrap());
                    if i % 64 == 63 {
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        set.join_all().await;
        started.elapsed()
    });
    let total = (per_task * tasks) as f64;
    let rate = total / elapsed.as_secs_f64();
    println!(
        "warm token(), {tasks} tasks, {cores} threads: {:>7.1} ns/call per thread, {:.1} M calls/s in all",
        elapsed.as_nanos() as f64 * cores as f64 / total,
        rate / 1e6
    );
    println!(
        "single-threaded rate {:.1} M calls/s; concurrent/single = {:.2}",
        1e3 / nanos(per_call),
        rate / (1e9 / nanos(per_call))
    );
    drop(server);
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}
