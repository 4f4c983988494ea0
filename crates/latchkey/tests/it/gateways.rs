//! `latchkey gate` and `latchkey sidecar` end to end: the real binary between real HTTP
//! services, with tokens from the real server.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use latchkey_guard::{Caller, Guard};

use crate::helpers::{TestApp, spawn_app_at_real_time};

pub const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
pub const API: &str = "https://api.example.com";
/// A W3C trace context (`traceparent`) the gateways must pass on unchanged.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A child process, killed when dropped.
pub struct Background(Child);

impl Background {
    /// The process, to signal or wait for.
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits for a stdout line containing `ready`; returns the process and
/// that line.
pub fn start(command: Command, ready: &str) -> (Background, String) {
    let (process, line, _) = start_logged(command, ready);
    (process, line)
}

/// [`start`], also giving the lines the process writes after `ready`.
pub fn start_logged(
    mut command: Command,
    ready: &str,
) -> (Background, String, std::sync::mpsc::Receiver<String>) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let process = Background(child);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line containing {ready:?}"));
        if line.contains(ready) {
            return (process, line, rx);
        }
    }
}

/// The `listen=ADDR` field of a log line.
pub fn listen_field(line: &str) -> String {
    log_field(line, "listen")
}

/// The `NAME=VALUE` field of a log line.
pub fn log_field(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        .to_owned()
}

pub async fn token(app: &TestApp, client: &crate::helpers::TestClient, form: &str) -> String {
    let response = app
        .token_basic(client, &format!("grant_type=client_credentials&{form}"))
        .await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

/// An upstream that answers with the request's method, path, headers and body size as JSON.
pub async fn echo_upstream() -> String {
    recording_echo_upstream().await.0
}

/// [`echo_upstream`], also keeping the `METHOD uri` of every request it receives.
pub async fn recording_echo_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = Arc::clone(&seen);
    let url =
        serve(axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: Bytes| async move {
                recorder.lock().unwrap().push(format!("{method} {uri}"));
                let headers: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap().into()))
                    .collect();
                axum::Json(serde_json::json!({
                    "method": method.as_str(), "uri": uri.to_string(),
                    "headers": headers, "body_len": body.len(),
                }))
            },
        ))
        .await;
    (url, seen)
}

/// `latchkey gate` in front of `upstream`, trusting `app` for tokens to [`API`], on a free port.
pub fn gate_command(app: &TestApp, upstream: &str) -> Command {
    let mut command = Command::new(BIN);
    command.args([
        "gate",
        "--upstream",
        upstream,
        "--issuer",
        &app.issuer,
        "--audience",
        API,
        "--listen",
        "127.0.0.1:0",
    ]);
    command
}

fn gate(app: &TestApp, upstream: &str, scopes: &[&str]) -> (Background, String) {
    let mut command = gate_command(app, upstream);
    command.args(["--upstream-timeout", "1s"]);
    for scope in scopes {
        command.args(["--require-scope", scope]);
    }
    let (process, line) = start(command, "latchkey gate is serving");
    (process, format!("http://{}", listen_field(&line)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_puts_token_validation_in_front_of_a_plain_upstream() {
    if let Err(error) = Command::new("python3").arg("--version").output() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is required under CI: {error}"
        );
        eprintln!("skipping: no python3 for the plain upstream ({error})");
        return;
    }
    let app = spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    // A plain upstream: Python's http.server serving a file.
    let files = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(files.path().join("data.bin"), &data).unwrap();
    let mut python = Command::new("python3");
    python
        .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .current_dir(files.path())
        .stderr(Stdio::null());
    let (_python, line) = start(python, "Serving HTTP");
    let port = line
        .split("port ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let (_gate, gate_url) = gate(&app, &format!("http://127.0.0.1:{port}"), &["read"]);
    let http = reqwest::Client::new();
    let get = |authorization: Option<String>| {
        let mut request = http.get(format!("{gate_url}/data.bin"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };

    let none = get(None).await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        format!("Bearer realm=\"{API}\"")
    );

    let good = token(&app, &client, &format!("scope=read&resource={API}")).await;
    let response = get(Some(format!("Bearer {good}"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        &data[..],
        "byte for byte"
    );

    let other_api = token(
        &app,
        &client,
        "scope=read&resource=https://other.example.com",
    )
    .await;
    let response = get(Some(format!("Bearer {other_api}"))).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let no_read = token(&app, &client, &format!("scope=write&resource={API}")).await;
    let response = get(Some(format!("Bearer {no_read}"))).await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"read\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_sets_identity_headers_and_strips_spoofed_ones() {
    let app = spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    let upstream = echo_upstream().await;
    let (_gate, gate_url) = gate(&app, &format!("{upstream}/base"), &[]);
    let good = token(&app, &client, &format!("scope=read write&resource={API}")).await;
    let response = reqwest::Client::new()
        .put(format!("{gate_url}/items/7?x=1"))
        .header("authorization", format!("Bearer {good}"))
        .header("x-latchkey-client-id", "lk_someone_else")
        .header("X-Latchkey-Admin", "yes")
        .header("x_latchkey_scope", "admin")
        // A client may not have the gate drop its identity headers as hop-by-hop ones...
        .header(
            "connection",
            "keep-alive, x-latchkey-client-id, x-latchkey-scope",
        )
        // ...nor choose what the upstream believes about where the request came from, or how
        // (also in the spellings CGI-style servers read as the same names).
        .header("x-forwarded-for", "10.9.9.9")
        .header("x_forwarded_for", "10.9.9.9")
        .header("forwarded", "for=10.9.9.9;proto=https")
        .header("x-real-ip", "10.9.9.9")
        .header("x-forwarded-proto", "https")
        .header("X_Forwarded_Proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-ssl", "on")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-prefix", "/admin")
        .header("x-forwarded-uri", "/admin")
        .header("x-forwarded-client-cert", "Hash=00")
        .header("x-original-url", "/admin")
        .header("x-rewrite-url", "/admin")
        .header("true-client-ip", "10.9.9.9")
        .header("cf-connecting-ip", "10.9.9.9")
        // W3C trace context passes through to the upstream as it came.
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "vendor=abc")
        .body(vec![1u8; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["uri"], "/base/items/7?x=1");
    assert_eq!(echo["body_len"], 70_000);
    let headers = &echo["headers"];
    assert_eq!(headers["x-latchkey-client-id"], client.id());
    assert_eq!(headers["x-latchkey-scope"], "read write");
    assert!(
        headers.get("x-latchkey-admin").is_none(),
        "spoofed header stripped"
    );
    assert!(
        headers.get("authorization").is_none(),
        "the token stays at the gate"
    );
    assert!(
        headers.get("x_latchkey_scope").is_none(),
        "underscore variant stripped"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    // The gate listens on plain HTTP, whatever the client says.
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["x-forwarded-host"],
        gate_url.trim_start_matches("http://")
    );
    for name in [
        "forwarded",
        "x-real-ip",
        "x_forwarded_for",
        "x_forwarded_proto",
        "x-forwarded-ssl",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-uri",
        "x-forwarded-client-cert",
        "x-original-url",
        "x-rewrite-url",
        "true-client-ip",
        "cf-connecting-ip",
    ] {
        assert!(headers.get(name).is_none(), "{name} stripped");
    }
    assert_eq!(headers["via"], "1.1 latchkey");
    assert_eq!(headers["traceparent"], TRACEPARENT);
    assert_eq!(headers["tracestate"], "vendor=abc");

    // Dot segments could climb out of the upstream's /base prefix: refused. (Sent raw: HTTP
    // client libraries normalise them away.)
    for path in ["/items/../../secret", "/items/%2e%2e/%2E%2E/secret"] {
        let (status, _) = raw_get(&gate_url, path, &good).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{path}");
    }
}

/// Sends `GET path` as written, with the token, and returns the status line and the body.
async fn raw_get(base: &str, path: &str, token: &str) -> (String, String) {
    let addr = base.trim_start_matches("http://");
    let response = raw(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    status_and_body(&response)
}

/// Writes `request` as it is to a new connection to `addr` and reads until the server closes
/// it: every response it sent.
async fn raw(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A bound, not a wait: the server closes at once after answering.
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("the server closes the connection after answering")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The status line and the body of a response read by [`raw`].
fn status_and_body(response: &str) -> (String, String) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let status = head.lines().next().unwrap_or_default();
    (status.to_owned(), body.to_owned())
}

#[test]
fn sidecar_refuses_to_send_tokens_in_the_clear_across_the_network() {
    let output = Command::new(BIN)
        .args([
            "sidecar",
            "--upstream",
            "http://api.example.com",
            "--issuer",
            "http://127.0.0.1:9",
            "--client-id",
            "x",
        ])
        .env("LATCHKEY_CLIENT_SECRET", "s")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("RFC 6750"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_adds_one_cached_token_to_every_request() {
    let app = spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    // A guarded upstream that records the tokens it sees.
    let guard = Guard::builder()
        .issuer(&app.issuer)
        .audience(API)
        .build()
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = Arc::clone(&seen);
    let upstream = serve(
        axum::Router::new()
            .fallback(move |caller: Caller, headers: HeaderMap| {
                let recorder = Arc::clone(&recorder);
                async move {
                    assert_eq!(headers["traceparent"], TRACEPARENT, "trace context passes");
                    let token = headers["authorization"].to_str().unwrap().to_owned();
                    recorder.lock().unwrap().push(token);
                    format!("hello {}", caller.client_id())
                }
            })
            .layer(guard.require_scope("read")),
    )
    .await;
    let mut command = Command::new(BIN);
    command
        .args([
            "sidecar",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--issuer",
            &app.issuer,
            "--client-id",
            client.id(),
            "--scope",
            "read",
            "--audience",
            API,
        ])
        .env("LATCHKEY_CLIENT_SECRET", &client.secret);
    let (_sidecar, line) = start(command, "latchkey sidecar is serving");
    let sidecar = format!("http://{}", listen_field(&line));
    let http = reqwest::Client::new();
    for i in 0..25 {
        let response = http
            .get(format!("{sidecar}/call/{i}"))
            .header("authorization", "Basic aWdub3JlZA==")
            .header("traceparent", TRACEPARENT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            format!("hello {}", client.id())
        );
    }
    // The sidecar forwards through the same code as the gate, with the same refusals.
    for path in ["/call/..%2fadmin", "/call/..\\admin"] {
        let (status, body) = raw_get(&sidecar, path, "").await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            (
                "HTTP/1.1 400 Bad Request",
                "the path has a \\, %2F or %5C\n"
            ),
            "{path}"
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 25);
    assert!(
        seen.iter().all(|t| t == &seen[0]),
        "one token (one token request) for every call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_answers_504_when_the_upstream_hangs() {
    let app = spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let (_gate, gate_url) = gate(&app, &upstream, &[]);
    let good = token(&app, &client, &format!("scope=read&resource={API}")).await;
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{gate_url}/slow"))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(1) && waited < std::time::Duration::from_secs(30),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_refuses_paths_an_upstream_could_read_differently() {
    let app = spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    let (upstream, seen) = recording_echo_upstream().await;
    let (_gate, gate_url) = gate(&app, &format!("{upstream}/base"), &[]);
    let good = token(&app, &client, &format!("scope=read&resource={API}")).await;
    const SEPARATOR: Option<&str> = Some("the path has a \\, %2F or %5C\n");
    // An encoded / or \ is data to the gate, a separator to upstreams that decode before they
    // route; a \ is a separator to some. Each row: the path as sent (client libraries would
    // normalise some of these), and the 400's body, or `None` for forwarded.
    let cases = [
        ("/a/..%2fadmin", SEPARATOR),
        ("/a/..%2Fadmin", SEPARATOR),
        ("/a/..\\admin", SEPARATOR),
        ("/a/..%5cadmin", SEPARATOR),
        ("/a/%5Cadmin", SEPARATOR),
        ("/a%2fb", SEPARATOR),
        ("/a/%2E%2E/admin", Some("the path has . or .. segments\n")),
        // Servlet containers drop `;` parameters before they resolve dot segments.
        ("/a/..;/admin", Some("the path has . or .. segments\n")),
        ("/a/.;x/admin", Some("the path has . or .. segments\n")),
        ("/a/%2e%2e;/admin", Some("the path has . or .. segments\n")),
        ("*", Some("the request target is not a path\n")),
        // The query is not a path: encoded separators there are forwarded, and so is an
        // encoded `%` (an upstream decodes it once, to `%2f`, which is data).
        ("/a/b?next=%2Fadmin%5C", None),
        ("/a/%252f", None),
    ];
    for (path, refused) in cases {
        let (status, body) = raw_get(&gate_url, path, &good).await;
        match refused {
            Some(why) => assert_eq!(
                (status.as_str(), body.as_str()),
                ("HTTP/1.1 400 Bad Request", why),
                "{path}"
            ),
            None => assert_eq!(status, "HTTP/1.1 200 OK", "{path}"),
        }
    }
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /base/a/b?next=%2Fadmin%5C", "GET /base/a/%252f"],
        "the upstream sees only the paths let through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_never_forwards_a_body_length_the_upstream_could_read_differently() {
    let app = spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    let (upstream, seen) = recording_echo_upstream().await;
    let (_gate, gate_url) = gate(&app, &upstream, &[]);
    let good = token(&app, &client, &format!("scope=read&resource={API}")).await;
    let addr = gate_url.trim_start_matches("http://");
    let post = |path: &str, framing: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {good}\r\n\
             {framing}\r\n{body}"
        )
    };
    const NOT_CHUNKED: &str = "the request's Transfer-Encoding is not chunked\n";
    // Each row: the framing headers, and the 400's body, or `None` for forwarded. Only
    // `chunked` alone is forwarded; hyper itself refuses a coding that does not end in
    // `chunked` (with an empty body), the gate the rest.
    let cases = [
        ("/chunked", "Transfer-Encoding: chunked\r\n", None),
        ("/upper", "Transfer-Encoding: CHUNKED\r\n", None),
        (
            "/gzip-chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
            Some(NOT_CHUNKED),
        ),
        (
            "/twice",
            "Transfer-Encoding: chunked, chunked\r\n",
            Some(NOT_CHUNKED),
        ),
        (
            "/two-fields",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            Some(NOT_CHUNKED),
        ),
        ("/gzip", "Transfer-Encoding: gzip\r\n", Some("")),
        ("/identity", "Transfer-Encoding: identity\r\n", Some("")),
    ];
    for (path, framing, refused) in cases {
        let framing = format!("{framing}Connection: close\r\n");
        let response = raw(addr, &post(path, &framing, "5\r\nhello\r\n0\r\n\r\n")).await;
        let (status, body) = status_and_body(&response);
        match refused {
            Some(why) => assert_eq!(
                (status.as_str(), body.as_str()),
                ("HTTP/1.1 400 Bad Request", why),
                "{path}"
            ),
            None => {
                assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
                let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(echo["body_len"], 5, "{path}");
            }
        }
    }
    assert_eq!(*seen.lock().unwrap(), ["POST /chunked", "POST /upper"]);

    // Content-Length and Transfer-Encoding together, in either order, with a second request
    // hidden in the body for a reader that believes Content-Length (RFC 9112 §11.2). The
    // gate's own check never sees this: hyper, below it, takes RFC 9112 §6.1's other choice,
    // reading the body as chunked alone, dropping Content-Length and closing the connection
    // after answering. So the upstream gets one request, framed anew, and never the hidden one.
    seen.lock().unwrap().clear();
    let hidden = format!(
        "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {good}\r\n\r\n"
    );
    let length = format!("Content-Length: {}\r\n", hidden.len());
    let chunked = "Transfer-Encoding: chunked\r\n";
    for (path, framing) in [
        ("/cl-te", format!("{length}{chunked}")),
        ("/te-cl", format!("{chunked}{length}")),
    ] {
        // No `Connection: close`: the gate closes by itself.
        let response = raw(addr, &post(path, &framing, &hidden)).await;
        assert_eq!(
            response.matches("HTTP/1.1 ").count(),
            1,
            "one answer: {response}"
        );
        let (status, body) = status_and_body(&response);
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert!(response.contains("\r\nconnection: close\r\n"), "{response}");
        let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echo["body_len"], 0, "{path}");
        assert!(
            echo["headers"].get("content-length").is_none(),
            "{path}: {echo}"
        );
    }
    assert_eq!(*seen.lock().unwrap(), ["POST /cl-te", "POST /te-cl"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_terminating_tls_tells_the_upstream_https() {
    let dir = tempfile::tempdir().unwrap();
    let Some((app, https)) = crate::mtls::spawn_tls(dir.path(), None).await else {
        return;
    };
    let client = app.client(|_| {}).await;
    let upstream = echo_upstream().await;
    let mut command = Command::new(BIN);
    command
        .args(["gate", "--upstream", &upstream, "--issuer", &app.issuer])
        .args(["--audience", API, "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.path().join("server.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("server.key"))
        // The gate fetches the issuer's keys over HTTPS: trust the test server's certificate.
        .env("SSL_CERT_FILE", dir.path().join("server.pem"));
    let (_gate, line) = start(command, "latchkey gate is serving");
    let good = token(&app, &client, &format!("scope=read&resource={API}")).await;
    let response = https
        .get(format!("https://{}/x", listen_field(&line)))
        .bearer_auth(good)
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
}
