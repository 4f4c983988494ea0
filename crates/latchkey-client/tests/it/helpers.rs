//! The real server behind a relay that counts what reaches the server and can answer in its
//! place (to inject 503s and odd responses), plus clocks that move together.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use latchkey_client::{ClientCredentials, ManualClock, RetryPolicy};
use latchkey_proto::{ClientAuthMethod, GrantType, TokenFormat};
use latchkey_server::service::admin::{self, NewClient};
use latchkey_server::store::{self, Store};
use latchkey_server::{Application, ServerConfig};
use tempfile::TempDir;

/// The fixed start of test time: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600;

pub const API: &str = "https://api.example.com";

/// A latchkey server reachable only through a relay; the server's issuer is the relay's URL,
/// so discovery goes through the relay too.
pub struct Stack {
    /// The issuer (the relay's base URL).
    pub issuer: String,
    pub relay: Relay,
    pub server_clock: latchkey_server::ManualClock,
    pub client_clock: ManualClock,
    pub store: Arc<dyn Store>,
    pub _dir: TempDir,
}

pub struct Registered {
    pub id: String,
    pub secret: String,
}

pub async fn spawn_stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = store::connect(&database_url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let server_clock = latchkey_server::ManualClock::new(T0);
    let config = ServerConfig {
        issuer: Some(issuer.clone()),
        janitor_interval: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let app = Application::build(config, Arc::clone(&store), Arc::new(server_clock.clone()))
        .await
        .unwrap();
    let upstream = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let relay = Relay::start(listener, upstream);
    Stack {
        issuer,
        relay,
        server_clock,
        client_clock: ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0 as u64)),
        store,
        _dir: dir,
    }
}

impl Stack {
    /// Registers a client that may have scopes `read`, `write`, `admin` and the audience
    /// [`API`], with 15-minute tokens.
    pub async fn register(&self, edit: impl FnOnce(&mut NewClient)) -> Registered {
        let mut new = NewClient {
            name: "client-library-test".into(),
            scope: vec!["read".into(), "write".into(), "admin".into()],
            audience: vec![API.into(), "https://other.example.com".into()],
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
        Registered {
            id: record.client_id,
            secret: secret.expose().to_owned(),
        }
    }

    /// A builder for `client` against this stack's issuer, on the client clock, with short
    /// retry waits.
    pub fn builder(&self, client: &Registered) -> latchkey_client::Builder {
        ClientCredentials::builder()
            .issuer(&self.issuer)
            .client_id(&client.id)
            .client_secret(client.secret.as_str())
            .clock(self.client_clock.clone())
            .retry_policy(quick_retries())
    }

    /// Moves the server's and the client's clocks forward together.
    pub fn advance(&self, seconds: u64) {
        self.server_clock.advance(seconds as i64);
        self.client_clock.advance(Duration::from_secs(seconds));
    }

    /// The client clock's time.
    pub fn now(&self) -> SystemTime {
        latchkey_client::Clock::now(&self.client_clock)
    }
}

/// Retries that give up within two seconds.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(2),
    }
}

/// A canned answer the relay gives instead of asking the server.
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

#[derive(Clone)]
pub struct Relay {
    state: Arc<RelayState>,
}

struct RelayState {
    upstream: String,
    http: reqwest::Client,
    /// `METHOD /path` of every request forwarded to the server.
    forwarded: Mutex<Vec<String>>,
    /// Requests answered from the script.
    scripted_answers: Mutex<usize>,
    script: Mutex<VecDeque<Scripted>>,
}

impl Relay {
    fn start(listener: tokio::net::TcpListener, upstream: String) -> Relay {
        let state = Arc::new(RelayState {
            upstream,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            forwarded: Mutex::default(),
            scripted_answers: Mutex::default(),
            script: Mutex::default(),
        });
        let router = axum::Router::new()
            .fallback(relay)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Relay { state }
    }

    /// Token requests that reached the server.
    pub fn token_requests(&self) -> usize {
        self.state
            .forwarded
            .lock()
            .unwrap()
            .iter()
            .filter(|r| *r == "POST /oauth2/token")
            .count()
    }

    /// Requests the relay answered from its script.
    pub fn scripted_answers(&self) -> usize {
        *self.state.scripted_answers.lock().unwrap()
    }

    /// Drops the answers not given yet.
    pub fn clear_script(&self) {
        self.state.script.lock().unwrap().clear();
    }

    /// The next requests get these answers, in order, instead of reaching the server.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.script.lock().unwrap().extend(answers);
    }
}

async fn relay(
    State(state): State<Arc<RelayState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scripted = state.script.lock().unwrap().pop_front();
    if let Some(answer) = scripted {
        *state.scripted_answers.lock().unwrap() += 1;
        let mut response =
            (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
        for (name, value) in answer.headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    state
        .forwarded
        .lock()
        .unwrap()
        .push(format!("{method} {}", uri.path()));
    let mut request = state
        .http
        .request(method, format!("{}{uri}", state.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap();
    let mut response = (status, bytes).into_response();
    for (name, value) in &answer_headers {
        if name != "content-length" && name != "transfer-encoding" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// The payload of a JWT, decoded without verification (the client itself never does this).
pub fn jwt_payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Seconds from the Unix epoch.
pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs()
}
