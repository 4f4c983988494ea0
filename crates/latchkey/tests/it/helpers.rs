//! `spawn_app()` and typed helpers for talking to the server.

use std::sync::Arc;

use base64::Engine as _;
use latchkey_proto::{ClientAuthMethod, GrantType, SigningAlg, TokenFormat};
use latchkey_server::cache::Cache;
use latchkey_server::janitor::Janitor;
use latchkey_server::model::ClientRecord;
use latchkey_server::service::admin::{self, NewClient};
use latchkey_server::store::{self, Store};
use latchkey_server::{Application, ManualClock, ServerConfig};
use tempfile::TempDir;

/// The fixed start of test time: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600;

pub struct TestApp {
    pub base: String,
    /// Where the admin API is: `base`, or its own listener with `admin_listen`.
    pub admin_base: String,
    pub issuer: String,
    pub clock: ManualClock,
    pub store: Arc<dyn Store>,
    pub database_url: String,
    pub http: reqwest::Client,
    /// Runs a housekeeping pass on demand; the server's own timer is set to an hour, so tests
    /// decide when it runs.
    pub janitor: Janitor,
    /// What the server holds in memory.
    pub cache: Arc<Cache>,
    /// Its usage accounting, to flush on demand (the server's own timer flushes every 10 s).
    pub usage: Arc<latchkey_server::usage::Usage>,
    /// `/metrics`, with `metrics_listen`.
    pub metrics_url: Option<String>,
    pub dir: TempDir,
}

/// A server configuration on a free port; the janitor's and the usage flush's own timers are
/// an hour. Failed
/// authentications are throttled only past 10,000 a minute: tests of other features send
/// hundreds of bad credentials from 127.0.0.1 with the clock stopped (`throttle.rs` tests the
/// default limits).
pub fn server_config(alg: SigningAlg, issuer: Option<String>) -> ServerConfig {
    let generous = latchkey_server::throttle::Rate {
        count: 10_000,
        period: std::time::Duration::from_secs(60),
    };
    ServerConfig {
        issuer,
        signing_alg: alg,
        janitor_interval: std::time::Duration::from_secs(3600),
        failed_auth_limit: Some(generous),
        failed_auth_limit_per_address: Some(generous),
        // Tests flush usage themselves and read what the flush returns: the server's own
        // timer must not take the counts first.
        usage_flush_interval: std::time::Duration::from_secs(3600),
        ..ServerConfig::default()
    }
}

/// A registered client and its secret in the clear.
pub struct TestClient {
    pub record: ClientRecord,
    pub secret: String,
}

impl TestClient {
    pub fn id(&self) -> &str {
        &self.record.client_id
    }

    /// `Basic base64(id:secret)`; generated ids and secrets need no form-encoding.
    pub fn basic(&self) -> String {
        basic(self.id(), &self.secret)
    }
}

/// A client-credentials token request to the server at `base`, authenticated by the
/// `authorization` header given.
pub async fn token_request(
    http: &reqwest::Client,
    base: &str,
    authorization: &str,
) -> reqwest::Response {
    http.post(format!("{base}/oauth2/token"))
        .header("authorization", authorization)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
}

/// The status of a client-credentials token request with HTTP Basic credentials.
pub async fn token_status(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> u16 {
    token_request(http, base, &basic(id, secret))
        .await
        .status()
        .as_u16()
}

/// GETs `url` and decodes the JSON body into `T`.
pub async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(SigningAlg::Es256).await
}

pub async fn spawn_app_with(alg: SigningAlg) -> TestApp {
    spawn_configured(alg, None).await
}

/// A server whose issuer is `issuer` (for example one with a path) rather than its address.
pub async fn spawn_app_with_issuer(issuer: &str) -> TestApp {
    spawn_configured(SigningAlg::Es256, Some(issuer.to_owned())).await
}

/// A server whose clock stands at the real time, for tests where another process (the `gate`
/// or `sidecar` binary) checks its tokens against the real clock.
pub async fn spawn_app_at_real_time() -> TestApp {
    #[allow(clippy::disallowed_methods)] // The other process reads the real clock too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    spawn_at(SigningAlg::Es256, None, now as i64).await
}

async fn spawn_configured(alg: SigningAlg, issuer: Option<String>) -> TestApp {
    spawn_at(alg, issuer, T0).await
}

async fn spawn_at(alg: SigningAlg, issuer: Option<String>, now: i64) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = store::connect(&database_url).await.unwrap();
    let clock = ManualClock::new(now);
    let config = server_config(alg, issuer);
    spawn_with_config(config, database_url, dir, store, clock).await
}

/// Starts a server with `config` on the database at `database_url`.
pub async fn spawn_with_config(
    config: ServerConfig,
    database_url: String,
    dir: TempDir,
    store: Arc<dyn Store>,
    clock: ManualClock,
) -> TestApp {
    let app = Application::build(config, Arc::clone(&store), Arc::new(clock.clone()))
        .await
        .unwrap();
    let janitor = app.janitor();
    let cache = app.cache();
    let usage = app.usage();
    let metrics_url = app
        .metrics_addr()
        .map(|addr| format!("http://{addr}/metrics"));
    let base = format!("http://{}", app.local_addr());
    let admin_base = app
        .admin_addr()
        .map_or_else(|| base.clone(), |addr| format!("http://{addr}"));
    let issuer = app.issuer().to_owned();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        base,
        admin_base,
        issuer,
        clock,
        store,
        database_url,
        http: reqwest::Client::new(),
        janitor,
        cache,
        usage,
        metrics_url,
        dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` and decodes the JSON body into `T`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        get_json(&self.http, &self.url(path)).await
    }

    pub fn token_url(&self) -> String {
        self.url("/oauth2/token")
    }

    /// Registers a client through the same admin API the CLI uses; `edit` adjusts the defaults
    /// (scope "read write", two audiences, Basic authentication, 15 minutes).
    pub async fn client(&self, edit: impl FnOnce(&mut NewClient)) -> TestClient {
        let mut new = NewClient {
            name: "test-client".into(),
            scope: vec!["read".into(), "write".into()],
            audience: vec![
                "https://api.example.com".into(),
                "https://other.example.com".into(),
            ],
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
            &self.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            new,
        )
        .await
        .unwrap()
        .value;
        TestClient {
            record,
            secret: secret.expose().to_owned(),
        }
    }

    /// Registers a `private_key_jwt` client whose one public key is that of `key`; `edit`
    /// adjusts the defaults as in [`TestApp::client`].
    pub async fn key_client(
        &self,
        key: &latchkey_client::PrivateKey,
        edit: impl FnOnce(&mut NewClient),
    ) -> ClientRecord {
        let mut new = NewClient {
            name: "key-client".into(),
            scope: vec!["read".into(), "write".into()],
            audience: vec!["https://api.example.com".into()],
            token_ttl_seconds: 900,
            auth_method: ClientAuthMethod::PrivateKeyJwt,
            grant_types: vec![GrantType::ClientCredentials],
            can_introspect: false,
            token_format: TokenFormat::Jwt,
            reuse_tokens: false,
            limits: Default::default(),
        };
        edit(&mut new);
        let jwks = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
        admin::create_key_client(
            self.store.as_ref(),
            &self.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            new,
            admin::ClientKeys::Jwks(&jwks),
        )
        .await
        .unwrap()
        .value
    }

    /// A form POST to the token endpoint with Basic authentication.
    pub async fn token_basic(&self, client: &TestClient, body: &str) -> reqwest::Response {
        self.http
            .post(self.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", client.basic())
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// A client_credentials request authenticated by a client assertion (private_key_jwt or a
    /// federated token): the status and the JSON body.
    pub async fn assertion_request(&self, assertion: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// Decodes a JWT's header and payload without verifying (for asserting on their contents; the
/// signature is verified separately by independent verifiers).
pub fn decode_parts(jwt: &str) -> (serde_json::Value, serde_json::Value) {
    let mut parts = jwt.split('.');
    let mut next = || {
        let part = parts.next().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let header = next();
    let payload = next();
    (header, payload)
}

/// `latchkey ARGS --output json` with `LATCHKEY_DATABASE_URL=database` and `env`, as a user
/// runs it (the OS user `ops`, no `LATCHKEY_SERVER` unless `env` sets it); the JSON it printed.
pub fn cli_json(database: &str, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env_remove("LATCHKEY_SERVER")
        .env("USER", "ops")
        .env("LATCHKEY_DATABASE_URL", database)
        .envs(env.iter().copied())
        .args(["--output", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

impl TestApp {
    /// The status of a form POST to `path` with this `Authorization` value.
    pub async fn form_status(&self, path: &str, authorization: &str, body: &str) -> u16 {
        self.http
            .post(self.url(path))
            .header("authorization", authorization)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// An audit entry for changes a test makes through the store directly.
pub fn audit() -> latchkey_server::model::AuditEntry {
    latchkey_server::model::AuditEntry {
        at: T0,
        actor: latchkey_server::model::Actor::Cli("test".into()),
        action: latchkey_server::model::audit::action::CLIENT_UPDATE,
        target: None,
        changes: serde_json::json!({}),
    }
}

/// Held by the tests that load this machine's cores (load on servers, a browser,
/// schemathesis), so that none of them runs beside another and a rate one asserts is its own.
pub static UNDER_LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
