//! Federated workload identity end to end: a test issuer on loopback (its own discovery
//! document and JWK Set, like a Kubernetes cluster's service-account issuer) gives the
//! workload a token; a client registered with the CLI to trust that issuer and subject gets
//! latchkey tokens with it, and with nothing else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_client::PrivateKey;
use latchkey_proto::SigningAlg;
use serde_json::{Value, json};

use crate::helpers::{T0, TestApp, decode_parts, server_config, spawn_with_config};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SUBJECT: &str = "system:serviceaccount:jobs:batch";

/// An OIDC-style issuer the test controls.
struct TestIssuer {
    issuer: String,
    key: PrivateKey,
    /// The `issuer` its discovery document names (normally its own).
    claimed: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    /// Set: its discovery document never answers.
    hang: Arc<std::sync::atomic::AtomicBool>,
    /// Told each time its discovery document is asked for.
    asked: Arc<tokio::sync::Notify>,
}

impl TestIssuer {
    async fn start() -> TestIssuer {
        let key = PrivateKey::generate(SigningAlg::Rs256).unwrap().0;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let claimed = Arc::new(Mutex::new(issuer.clone()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asked = Arc::new(tokio::sync::Notify::new());
        let jwks = json!({ "keys": [key.public_jwk()] });
        let discovery = {
            let (claimed, issuer, fetches) = (claimed.clone(), issuer.clone(), fetches.clone());
            let (hang, asked) = (hang.clone(), asked.clone());
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                asked.notify_one();
                if hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                let claimed = claimed.lock().unwrap().clone();
                axum::Json(json!({
                    "issuer": claimed,
                    "jwks_uri": format!("{issuer}/openid/v1/jwks"),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }))
            }
        };
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(discovery),
            )
            .route(
                "/openid/v1/jwks",
                axum::routing::get(move || {
                    let jwks = jwks.clone();
                    async move { axum::Json(jwks) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        TestIssuer {
            issuer,
            key,
            claimed,
            fetches,
            hang,
            asked,
        }
    }

    /// A service-account token as a cluster issues it: no typ, RS256, an hour long.
    fn token(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = json!({
            "iss": self.issuer,
            "sub": SUBJECT,
            "aud": ["https://auth.latchkey.test"],
            "iat": T0,
            "nbf": T0,
            "exp": T0 + 3600,
            "kubernetes.io": { "namespace": "jobs", "serviceaccount": { "name": "batch" } },
        });
        edit(&mut claims);
        let header = json!({ "alg": "RS256", "kid": self.key.kid() });
        self.key
            .sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
            .unwrap()
    }
}

async fn spawn() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&url).await.unwrap();
    let config = latchkey_server::ServerConfig {
        allow_private_jwks_uri: true,
        ..server_config(SigningAlg::Es256, Some("https://auth.latchkey.test".into()))
    };
    spawn_with_config(
        config,
        url,
        dir,
        store,
        latchkey_server::ManualClock::new(T0),
    )
    .await
}

/// `latchkey client create --federated-issuer ...`, as an operator runs it.
async fn register(app: &TestApp, issuer: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--database".to_owned(),
        app.database_url.clone(),
        "client".into(),
        "create".into(),
        "--name".into(),
        "batch".into(),
        "--scope".into(),
        "read".into(),
        "--audience".into(),
        "https://api.example.com".into(),
        "--auth-method".into(),
        "private_key_jwt".into(),
        "--federated-issuer".into(),
        issuer.into(),
        "--federated-subject".into(),
        SUBJECT.into(),
        "--allow-private-jwks-uri".into(),
        "--output".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(&args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn exchange(app: &TestApp, client_id: &str, token: &str) -> (u16, Value) {
    let response = app
        .http
        .post(app.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", token),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_token_from_a_trusted_issuer_gets_latchkey_tokens() {
    let cluster = TestIssuer::start().await;
    let app = spawn().await;
    let client = register(&app, &cluster.issuer, &[]).await;
    assert!(client.get("client_secret").is_none(), "{client}");
    assert_eq!(client["federated_issuer"], cluster.issuer.as_str());
    assert_eq!(client["federated_subject"], SUBJECT);
    let id = client["client_id"].as_str().unwrap();

    // The same workload token works as long as it is valid: its issuer means it to be reused.
    let token = cluster.token(|_| {});
    for _ in 0..2 {
        let (status, body) = exchange(&app, id, &token).await;
        assert_eq!(status, 200, "{body}");
        let (_, claims) = decode_parts(body["access_token"].as_str().unwrap());
        assert_eq!(claims["client_id"], id);
        assert_eq!(claims["sub"], id);
        assert_eq!(claims["iss"], "https://auth.latchkey.test");
    }
    assert_eq!(
        cluster.fetches.load(Ordering::SeqCst),
        1,
        "discovery is cached"
    );
    // A string audience is the same as a one-element list.
    let (status, _) = exchange(
        &app,
        id,
        &cluster.token(|c| c["aud"] = json!("https://auth.latchkey.test")),
    )
    .await;
    assert_eq!(status, 200);

    // iss, sub, aud and exp exactly.
    let impostor = PrivateKey::generate(SigningAlg::Rs256).unwrap().0;
    let forged = {
        let claims = decode_parts(&token).1;
        let header = json!({ "alg": "RS256", "kid": cluster.key.kid() });
        impostor
            .sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
            .unwrap()
    };
    for (case, bad) in [
        (
            "another subject",
            cluster.token(|c| c["sub"] = json!("system:serviceaccount:jobs:other")),
        ),
        (
            "another issuer",
            cluster.token(|c| c["iss"] = json!("https://other.example")),
        ),
        (
            "issuer with a slash",
            cluster.token(|c| c["iss"] = json!(format!("{}/", cluster.issuer))),
        ),
        (
            "another audience",
            cluster.token(|c| c["aud"] = json!(["https://kubernetes.default.svc"])),
        ),
        (
            "two audiences",
            cluster.token(|c| c["aud"] = json!(["https://auth.latchkey.test", "https://x"])),
        ),
        ("expired", cluster.token(|c| c["exp"] = json!(T0 - 1))),
        (
            "no exp",
            cluster.token(|c| _ = c.as_object_mut().unwrap().remove("exp")),
        ),
        (
            "string exp",
            cluster.token(|c| c["exp"] = json!((T0 + 3600).to_string())),
        ),
        (
            "not yet valid",
            cluster.token(|c| c["nbf"] = json!(T0 + 600)),
        ),
        ("signed by another key", forged),
        (
            "a year long",
            cluster.token(|c| c["exp"] = json!(T0 + 365 * 24 * 3600)),
        ),
        (
            "a day and a minute long",
            cluster.token(|c| c["exp"] = json!(T0 + 24 * 3600 + 60)),
        ),
        (
            "no iat",
            cluster.token(|c| _ = c.as_object_mut().unwrap().remove("iat")),
        ),
        (
            "issued two days ago",
            cluster.token(|c| c["iat"] = json!(T0 - 2 * 24 * 3600)),
        ),
        ("an access token", {
            let claims = decode_parts(&token).1;
            let header = json!({ "alg": "RS256", "kid": cluster.key.kid(), "typ": "at+jwt" });
            cluster
                .key
                .sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
                .unwrap()
        }),
    ] {
        let (status, body) = exchange(&app, id, &bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{case}"
        );
    }
    // Without client_id the workload's subject names no client.
    let response = app
        .http
        .post(app.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// A client registered with its own token age limit: tokens beyond it are refused, within it
/// accepted, and `client show` reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sets_its_own_federated_token_age() {
    let cluster = TestIssuer::start().await;
    let app = spawn().await;
    let client = register(&app, &cluster.issuer, &["--federated-max-token-age", "2h"]).await;
    assert_eq!(client["federated_max_token_age_seconds"], 7200);
    let id = client["client_id"].as_str().unwrap();
    let (status, body) = exchange(&app, id, &cluster.token(|c| c["exp"] = json!(T0 + 5400))).await;
    assert_eq!(status, 200, "{body}");
    for (case, token) in [
        (
            "three hours long",
            cluster.token(|c| c["exp"] = json!(T0 + 3 * 3600)),
        ),
        (
            "issued three hours ago",
            cluster.token(|c| c["iat"] = json!(T0 - 3 * 3600)),
        ),
    ] {
        let (status, _) = exchange(&app, id, &token).await;
        assert_eq!(status, 401, "{case}");
    }
    let default = register(&app, &cluster.issuer, &[]).await;
    assert_eq!(default["federated_max_token_age_seconds"], 24 * 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_audience_and_a_lying_issuer() {
    let cluster = TestIssuer::start().await;
    let app = spawn().await;
    let client = register(&app, &cluster.issuer, &["--federated-audience", "latchkey"]).await;
    assert_eq!(client["federated_audience"], "latchkey");
    let id = client["client_id"].as_str().unwrap();
    let (status, body) = exchange(&app, id, &cluster.token(|c| c["aud"] = json!("latchkey"))).await;
    assert_eq!(status, 200, "{body}");
    // Our issuer is not the audience any more once another is configured.
    let (status, _) = exchange(&app, id, &cluster.token(|_| {})).await;
    assert_eq!(status, 401);

    // A discovery document that names another issuer is not trusted: no keys, 503.
    let other = TestIssuer::start().await;
    *other.claimed.lock().unwrap() = "https://evil.example".into();
    let client = register(&app, &other.issuer, &[]).await;
    let (status, body) = exchange(
        &app,
        client["client_id"].as_str().unwrap(),
        &other.token(|_| {}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
}

/// An issuer address that accepts connections and never answers, counting them (and
/// telling `reached` of each).
async fn silent_issuer() -> (String, Arc<AtomicUsize>, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    let (counter, told) = (Arc::clone(&accepted), Arc::clone(&reached));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            told.notify_one();
            held.push(stream);
        }
    });
    (url, accepted, reached)
}

/// Discovery is per issuer with a bounded wait: requests for an issuer that never answers
/// get 503 (with Retry-After) after about two seconds, not the 10 s+ of the discovery
/// itself, and a healthy issuer's request sent meanwhile is answered before them. Concurrent
/// requests share one discovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_issuer_answers_503_soon_and_never_delays_another() {
    let (dead, accepted, reached) = silent_issuer().await;
    let healthy = TestIssuer::start().await;
    let app = spawn().await;
    let stuck = register(&app, &dead, &[]).await;
    let fine = register(&app, &healthy.issuer, &[]).await;
    let stuck_id = stuck["client_id"].as_str().unwrap().to_owned();
    let fine_id = fine["client_id"].as_str().unwrap().to_owned();
    let stuck_token = healthy.token(|c| c["iss"] = json!(dead.clone()));

    let started = tokio::time::Instant::now();
    let dead_requests =
        futures_util::future::join_all((0..3).map(|_| exchange(&app, &stuck_id, &stuck_token)));
    let mut dead_requests = std::pin::pin!(dead_requests);
    // The dead issuer's discovery is under way (it holds a connection there) before the
    // healthy issuer's request is sent.
    tokio::select! {
        _ = &mut dead_requests => panic!("the dead issuer answered"),
        () = reached.notified() => {}
    }
    let healthy_token = healthy.token(|_| {});
    let healthy_request = exchange(&app, &fine_id, &healthy_token);
    let (status, body) = tokio::select! {
        biased;
        _ = &mut dead_requests => panic!("the healthy issuer waited for the dead one"),
        answer = healthy_request => answer,
    };
    assert_eq!(status, 200, "{body}");
    for (status, body) in dead_requests.await {
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("temporarily_unavailable"))
        );
    }
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(5),
        "dead issuer answered after {waited:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one discovery for all three"
    );
}

/// After a failed discovery the issuer is not asked again until a backoff has passed (the
/// server's clock, 1 s doubling); a discovered issuer stays in use after its hour, while it
/// is read again in the background, and keeps its keys when that fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_failures_back_off_and_stale_discoveries_stay_in_use() {
    // An issuer that closes every connection at once: discovery fails quickly.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slamming = format!("http://{}", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let healthy = TestIssuer::start().await;
    let app = spawn().await;
    let gone = register(&app, &slamming, &[]).await;
    let gone_id = gone["client_id"].as_str().unwrap().to_owned();
    let token = healthy.token(|c| c["iss"] = json!(slamming.clone()));
    let (status, _) = exchange(&app, &gone_id, &token).await;
    assert_eq!(status, 503);
    let after_first = attempts.load(Ordering::SeqCst);
    assert!(after_first > 0);
    // Within the backoff (1 s on the server's clock): 503 at once, the issuer is not asked.
    let (status, _) = exchange(&app, &gone_id, &token).await;
    assert_eq!(status, 503);
    assert_eq!(attempts.load(Ordering::SeqCst), after_first);
    // Past it: asked again.
    app.clock.advance(2);
    let (status, _) = exchange(&app, &gone_id, &token).await;
    assert_eq!(status, 503);
    assert!(attempts.load(Ordering::SeqCst) > after_first);

    let fine = register(&app, &healthy.issuer, &[]).await;
    let fine_id = fine["client_id"].as_str().unwrap().to_owned();
    let (status, _) = exchange(&app, &fine_id, &healthy.token(|_| {})).await;
    assert_eq!(status, 200);
    assert_eq!(healthy.fetches.load(Ordering::SeqCst), 1);
    // Two hours on the discovery is stale, and rediscovering it hangs: the keys found before
    // are used at once (no request waits for the rediscovery), which goes on in the
    // background.
    app.clock.advance(7200);
    healthy.hang.store(true, Ordering::SeqCst);
    let fresh = healthy.token(|c| {
        c["iat"] = json!(T0 + 7200);
        c["nbf"] = json!(T0 + 7200);
        c["exp"] = json!(T0 + 7200 + 3600);
    });
    let response = app
        .http
        .post(app.token_url())
        .timeout(std::time::Duration::from_secs(1))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", fine_id.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", fresh.as_str()),
        ])
        .send()
        .await
        .expect("answered without waiting for the rediscovery");
    assert_eq!(response.status(), 200);
    let rediscovered = async {
        while healthy.fetches.load(Ordering::SeqCst) < 2 {
            healthy.asked.notified().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), rediscovered)
        .await
        .expect("rediscovered in the background");
}
