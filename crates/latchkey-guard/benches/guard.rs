//! Guard throughput: (a) first-seen tokens, each costing an ES256 signature verification, and
//! (b) a repeated token, answered from the verified-token cache.
//!
//!     cargo bench -p latchkey-guard --bench guard
//!
//! The issuer here is a JWKS served on loopback for a P-256 key made at start; tokens are
//! signed with it ahead of the measurement. Everything measured runs on one thread (a
//! current-thread runtime), so the numbers are per core; (b) is also run from 2 threads.
//! Settings: `BENCH_TOKENS` (distinct tokens for (a), default 30,000), `BENCH_REPEATS` (calls
//! for (b), default 3,000,000). Targets on the 2-core machine: (a) ≥ 15,000/s on one core,
//! (b) ≥ 500,000/s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_guard::Guard;

const ISSUER: &str = "https://issuer.bench";
const API: &str = "https://api.bench";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let distinct = setting("BENCH_TOKENS", 30_000);
    let repeats = setting("BENCH_REPEATS", 3_000_000);
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let public = key.public_key().as_ref();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "bench", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&public[1..33]), "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
    }]})
    .to_string();

    // The JWKS, served from a thread of its own.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let jwks_uri = format!("http://{}/jwks", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let router = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    let jwks = jwks.clone();
                    async move { ([("cache-control", "max-age=300")], jwks) }
                }),
            );
            axum::serve(listener, router).await.unwrap();
        });
    });

    #[allow(clippy::disallowed_methods)] // Real time: the guard runs on the real clock here.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |jti: usize| {
        let header = r#"{"alg":"ES256","typ":"at+jwt","kid":"bench"}"#;
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "lk_bench", "client_id": "lk_bench", "aud": API,
            "iat": now, "exp": now + 3600, "jti": format!("jti-{jti}"), "scope": "read write",
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = key.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    };
    let tokens: Vec<String> = (0..distinct).map(sign).collect();
    let repeated = sign(usize::MAX);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let guard = runtime.block_on(async {
        Guard::builder()
            .issuer(ISSUER)
            .audience(API)
            .jwks_uri(&jwks_uri)
            .cache_capacity(distinct * 2)
            .build()
            .await
            .unwrap()
    });

    // (a) First-seen tokens.
    let elapsed = runtime.block_on(async {
        let started = Instant::now();
        for token in &tokens {
            black_box(guard.authenticate(token).await.unwrap());
        }
        started.elapsed()
    });
    let first_seen = distinct as f64 / elapsed.as_secs_f64();
    println!(
        "(a) first-seen tokens, ES256, 1 thread: {first_seen:>10.0} tokens/s ({:.1} µs each)",
        elapsed.as_secs_f64() * 1e6 / distinct as f64
    );

    // (b) One token, repeated.
    let elapsed = runtime.block_on(async {
        guard.authenticate(&repeated).await.unwrap();
        let started = Instant::now();
        for _ in 0..repeats {
            black_box(guard.authenticate(&repeated).await.unwrap());
        }
        started.elapsed()
    });
    let cached = repeats as f64 / elapsed.as_secs_f64();
    println!(
        "(b) repeated token (cache), 1 thread:   {cached:>10.0} tokens/s ({:.0} ns each)",
        elapsed.as_secs_f64() * 1e9 / repeats as f64
    );
    let elapsed = two_threads(&guard, &repeated, repeats);
    println!(
        "(b) repeated token (cache), 2 threads:  {:>10.0} tokens/s",
        repeats as f64 / elapsed.as_secs_f64()
    );
    println!(
        "targets: (a) ≥ 15,000/s {}; (b) ≥ 500,000/s {}",
        if first_seen >= 15_000.0 {
            "met"
        } else {
            "NOT met"
        },
        if cached >= 500_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn two_threads(guard: &Guard, token: &str, calls: usize) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    for _ in 0..calls / 2 {
                        black_box(guard.authenticate(token).await.unwrap());
                    }
                });
            });
        }
    });
    started.elapsed()
}
