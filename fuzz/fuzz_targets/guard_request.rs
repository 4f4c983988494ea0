//! A request to a resource server behind the guard, through its public entry point
//! (`Guard::authenticate_request`): the `Authorization` header (RFC 6750 §2.1 `Bearer`,
//! RFC 9449 §7.1 `DPoP`, and `access_token` in the query, which is refused), the JWT access
//! token (RFC 9068 §4: header, `kid` lookup, signature, claims, `cnf`), the `DPoP` proof
//! checked against the request's method and URL, and the `Client-Cert` header (RFC 9440, or
//! nginx's escaped PEM) that a certificate-bound token needs.
//!
//! The guard is built with a fixed clock at `NOW`, against a JWK Set (the fixed Ed25519 key as
//! `ed`, the ES256 key as `es`) served over HTTP on the loopback interface by a thread of this
//! process; after its first fetch it fetches no more. It keeps what it keeps in production
//! across inputs (the DPoP proof ids it saw, the tokens it verified), so a fresh guard takes
//! over every [`INPUTS_PER_GUARD`] runs: the clock never moves, so no proof id is ever
//! forgotten, and a guard that had accepted its per-key quota of proofs (10,000 with the one
//! fixed key) would refuse every later DPoP request before the code after the replay check.
//! docs/FUZZING.md says how to reproduce a crash that needs the inputs before it.
//!
//! Input, one field per line: the method, the request target (path and query), the
//! `Authorization` value, the `DPoP` value and the `Client-Cert` value. A credential in the
//! `Authorization` value and a `DPoP` value that start with `{` are templates
//! `HEADER<TAB>PAYLOAD`, signed with the fixed Ed25519 key first.
#![no_main]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use http::{Extensions, HeaderMap, HeaderValue, Method, Uri};
use latchkey_common::ManualClock;
use latchkey_fuzz::{ISSUER, NOW, ed25519_key, es256_key, explain, jws, lines};
use latchkey_guard::Guard;
use latchkey_proto::JwkSet;
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

/// The audience (and so the DPoP origin) of the guarded resource.
const AUDIENCE: &str = "https://api.example";

/// Serves `body` as JSON to every connection, for ever (the process's life).
fn serve_jwks(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}/jwks", listener.local_addr().expect("bound"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=86400\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// A guard serves this many runs of the target (libFuzzer runs some inputs twice), then a
/// fresh one takes over. Fewer than the guard's default quota of remembered proofs per key
/// (10,000, `GuardBuilder::dpop_proofs_per_key`), since each run presents at most one proof.
const INPUTS_PER_GUARD: u32 = 4096;

/// The runtime, and the URL of the JWK Set the guards fetch.
fn setup() -> &'static (Runtime, String) {
    static SETUP: OnceLock<(Runtime, String)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let set = JwkSet {
            keys: vec![
                ed25519_key().public_jwk().clone(),
                es256_key().public_jwk().clone(),
            ],
        };
        let url = serve_jwks(serde_json::to_string(&set).expect("a JWK Set serialises"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        (runtime, url)
    })
}

/// A new guard, which fetches the JWK Set once.
fn new_guard(runtime: &Runtime, jwks_uri: &str) -> Guard {
    let guard = runtime
        .block_on(
            Guard::builder()
                .issuer(ISSUER)
                .audience(AUDIENCE)
                .jwks_uri(jwks_uri)
                .clock(ManualClock::new(
                    UNIX_EPOCH + Duration::from_secs(NOW.unsigned_abs()),
                ))
                .trust_certificate_header("client-cert")
                .min_refetch_interval(Duration::from_secs(1 << 30))
                .cache_capacity(1024)
                .build(),
        )
        .expect("the guard builds");
    assert!(guard.jwks_fetches() == 1, "the JWK Set was fetched");
    guard
}

/// The guard for this run: the current one, or a fresh one after [`INPUTS_PER_GUARD`] runs.
fn guard(runtime: &Runtime, jwks_uri: &str) -> Guard {
    static CURRENT: Mutex<Option<(Guard, u32)>> = Mutex::new(None);
    let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
    match current.as_mut() {
        Some((guard, inputs)) if *inputs < INPUTS_PER_GUARD => {
            *inputs += 1;
            guard.clone()
        }
        _ => {
            let guard = new_guard(runtime, jwks_uri);
            *current = Some((guard.clone(), 1));
            guard
        }
    }
}

/// An `Authorization` value whose credential may be a template.
fn authorization(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, credential)) => format!("{scheme} {}", jws(credential)),
        None => value.to_owned(),
    }
}

fuzz_target!(|input: &str| {
    let (runtime, jwks_uri) = setup();
    let guard = guard(runtime, jwks_uri);
    let fields = lines(input, 5);
    let method = Method::from_bytes(fields[0].as_bytes()).unwrap_or(Method::GET);
    let uri: Uri = fields[1].parse().unwrap_or_else(|_| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("authorization", authorization(fields[2])),
        ("dpop", jws(fields[3])),
        ("client-cert", fields[4].to_owned()),
    ] {
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    let result =
        runtime.block_on(guard.authenticate_request(&method, &headers, &uri, &Extensions::new()));
    explain(&result.as_ref().map(|caller| caller.client_id().to_owned()));
    if let Ok(caller) = result {
        assert!(caller.audience().contains(AUDIENCE));
    }
    assert_eq!(
        guard.jwks_fetches(),
        1,
        "no request makes the guard fetch keys"
    );
});
