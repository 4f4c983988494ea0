//! The real server, a JWKS relay that can be taken down, and an axum API behind the guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_guard::{Caller, Guard};
use latchkey_proto::{ClientAuthMethod, GrantType, TokenFormat};
use latchkey_server::service::admin::{self, NewClient};
use latchkey_server::store::{self, KeyState, Store};
use latchkey_server::{Application, ServerConfig};
use tempfile::TempDir;

/// The fixed start of test time: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600;
/// The guarded API's identifier.
pub const API: &str = "https://api.example.com";

pub struct Stack {
    pub issuer: String,
    pub server_clock: latchkey_server::ManualClock,
    pub clock: latchkey_client::ManualClock,
    pub store: Arc<dyn Store>,
    pub guard: Guard,
    /// The guarded API's base URL.
    pub api: String,
    pub jwks_down: Arc<AtomicBool>,
    /// Serve `{"keys":[]}` (as if every key had been removed).
    pub jwks_empty: Arc<AtomicBool>,
    /// The relay's JWKS URL.
    pub jwks_uri: String,
    pub http: reqwest::Client,
    pub client_id: String,
    secret: String,
    _dir: TempDir,
}

pub async fn spawn_stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = store::connect(&database_url).await.unwrap();
    let server_clock = latchkey_server::ManualClock::new(T0);
    let config = ServerConfig {
        janitor_interval: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let app = Application::build(config, Arc::clone(&store), Arc::new(server_clock.clone()))
        .await
        .unwrap();
    let issuer = app.issuer().to_owned();
    tokio::spawn(app.run_until(std::future::pending()));

    let jwks_down = Arc::new(AtomicBool::new(false));
    let jwks_empty = Arc::new(AtomicBool::new(false));
    let jwks_uri = serve(
        axum::Router::new()
            .route("/jwks", get(relay_jwks))
            .with_state(Relay {
                upstream: format!("{issuer}/jwks"),
                down: Arc::clone(&jwks_down),
                empty: Arc::clone(&jwks_empty),
            }),
    )
    .await;
    let jwks_uri = format!("{jwks_uri}/jwks");
    let clock = latchkey_client::ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0 as u64));
    let guard = Guard::builder()
        .issuer(&issuer)
        .audience(API)
        .jwks_uri(&jwks_uri)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let api = serve_api(&guard).await;
    let (record, secret) = admin::create_client(
        store.as_ref(),
        &server_clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        NewClient {
            name: "guard-test".into(),
            scope: vec!["read".into(), "admin".into()],
            audience: vec![API.into(), "https://other.example.com".into()],
            token_ttl_seconds: 900,
            auth_method: ClientAuthMethod::ClientSecretBasic,
            grant_types: vec![GrantType::ClientCredentials],
            can_introspect: false,
            token_format: TokenFormat::Jwt,
            reuse_tokens: false,
            limits: Default::default(),
        },
    )
    .await
    .unwrap()
    .value;
    Stack {
        issuer,
        server_clock,
        clock,
        store,
        guard,
        api,
        jwks_down,
        jwks_empty,
        jwks_uri,
        http: reqwest::Client::new(),
        client_id: record.client_id,
        secret: secret.expose().to_owned(),
        _dir: dir,
    }
}

/// Serves the test API (`/hello`, and `/admin` needing scope `admin`) behind `guard`;
/// returns its base URL.
pub async fn serve_api(guard: &Guard) -> String {
    serve(
        axum::Router::new()
            .route(
                "/admin",
                get(whoami).route_layer(guard.require_scope("admin")),
            )
            .route("/hello", get(whoami))
            .layer(guard.layer()),
    )
    .await
}

/// Serves `router` on a port of its own; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn whoami(caller: Caller) -> String {
    format!("{} {}", caller.client_id(), caller.scopes().join(" "))
}

/// The JWKS, relayed from the server, unless switched to "down" or "empty".
#[derive(Clone)]
struct Relay {
    upstream: String,
    down: Arc<AtomicBool>,
    empty: Arc<AtomicBool>,
}

async fn relay_jwks(State(relay): State<Relay>) -> Response {
    if relay.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if relay.empty.load(Ordering::SeqCst) {
        return ([("cache-control", "max-age=300")], r#"{"keys":[]}"#).into_response();
    }
    let answer = reqwest::get(relay.upstream).await.unwrap();
    let cache_control = answer.headers()["cache-control"].clone();
    let body = answer.bytes().await.unwrap();
    ([("cache-control", cache_control)], body).into_response()
}

impl Stack {
    /// A token from the real server for `form` (e.g. `scope=read&resource=...`).
    pub async fn token(&self, form: &str) -> String {
        self.token_for(&self.client_id, &self.secret, form).await
    }

    /// Registers another client like the stack's own, changed by `edit`; returns id and secret.
    pub async fn register(&self, edit: impl FnOnce(&mut NewClient)) -> (String, String) {
        let mut new = NewClient {
            name: "guard-test-2".into(),
            scope: vec!["read".into()],
            audience: vec![API.into()],
            token_ttl_seconds: 900,
            auth_method: ClientAuthMethod::ClientSecretBasic,
            grant_types: vec![GrantType::ClientCredentials],
            can_introspect: false,
            token_format: TokenFormat::Jwt,
            reuse_tokens: false,
            limits: Default::default(),
        };
        edit(&mut new);
        let (record, secret) = admin::create_client(
            self.store.as_ref(),
            &self.server_clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            new,
        )
        .await
        .unwrap()
        .value;
        (record.client_id, secret.expose().to_owned())
    }

    /// A token from the real server for the client `id`.
    pub async fn token_for(&self, id: &str, secret: &str, form: &str) -> String {
        let response = self
            .http
            .post(format!("{}/oauth2/token", self.issuer))
            .header(
                "authorization",
                format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=client_credentials&{form}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The stack client's secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A token for the API with scope `read`.
    pub async fn api_token(&self) -> String {
        self.token(&format!("scope=read&resource={API}")).await
    }

    /// GET `path` on the guarded API with these `Authorization` header values.
    pub async fn get(&self, path: &str, authorization: &[&str]) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.api));
        for value in authorization {
            request = request.header("authorization", *value);
        }
        request.send().await.unwrap()
    }

    /// Moves the server's and the guard's clocks forward together.
    pub fn advance(&self, seconds: i64) {
        self.server_clock.advance(seconds);
        self.clock.advance(Duration::from_secs(seconds as u64));
    }

    pub fn now(&self) -> i64 {
        T0 + i64::try_from(
            latchkey_client::Clock::now(&self.clock)
                .duration_since(UNIX_EPOCH + Duration::from_secs(T0 as u64))
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    }

    /// Signs `header` and `claims` with the server's current private key (read from its
    /// database), to build tokens the server would never issue.
    pub async fn forge(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
        let keys = self.store.signing_keys().await.unwrap();
        let current = keys.iter().find(|k| k.state == KeyState::Current).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &current.private_key)
            .unwrap();
        let mut header = header;
        if header.get("kid").is_none() {
            header["kid"] = current.kid.clone().into();
        }
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// Claims like the server's, for this API, valid now for 15 minutes.
    pub fn claims(&self) -> serde_json::Value {
        let now = self.now();
        serde_json::json!({
            "iss": self.issuer, "sub": self.client_id, "client_id": self.client_id,
            "aud": API, "iat": now, "exp": now + 900, "jti": "forged-1", "scope": "read",
        })
    }
}

/// The `WWW-Authenticate` header of a response.
pub fn challenge(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}
