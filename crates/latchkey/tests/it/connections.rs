//! Connection limits (README, "Connection limits"): half-sent, idle and slow connections are
//! closed by their deadlines without holding up anyone else, request heads are bounded, the
//! connection cap holds, and SIGTERM drains in-flight requests while half-sent ones are open.
//! The deadlines are set short here (they are flags), so no test waits long for one.

use std::process::Command;
use std::time::Duration;

use latchkey_proto::SigningAlg;
use latchkey_server::connections::ConnectionLimits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::gateways::{listen_field, start};
use crate::helpers::{TestApp, server_config, spawn_with_config};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// The first bytes of a token request whose head never ends.
const HALF_SENT: &[u8] = b"POST /oauth2/token HTTP/1.1\r\nHost: latchkey\r\nContent-Type: application/x-www-form-urlencoded\r\n";

async fn spawn_limited(limits: ConnectionLimits) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&url).await.unwrap();
    let config = latchkey_server::ServerConfig {
        connections: limits,
        ..server_config(SigningAlg::Es256, None)
    };
    let clock = latchkey_server::ManualClock::new(crate::helpers::T0);
    spawn_with_config(config, url, dir, store, clock).await
}

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes; what was read. A reset counts as closed. Bounded by `within`
/// so a connection left open fails the test instead of hanging it.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was not closed within {within:?}"
    );
    out
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"))
}

/// Issue acceptance: with 1,000 half-sent requests held open, a valid token request still
/// gets 200 (while they are all still open), and each half-sent connection is closed by the
/// header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_half_sent_requests_neither_block_a_token_request_nor_stay_open() {
    let header_read_timeout = Duration::from_secs(3);
    let app = spawn_limited(ConnectionLimits {
        header_read_timeout,
        ..ConnectionLimits::DEFAULT
    })
    .await;
    let client = app.client(|_| {}).await;
    let mut half_sent = Vec::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        stream.write_all(HALF_SENT).await.unwrap();
        half_sent.push(stream);
    }
    let opened = tokio::time::Instant::now();
    let response = app
        .token_basic(&client, "grant_type=client_credentials")
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        opened.elapsed() < header_read_timeout,
        "answered only after the half-sent connections were closed"
    );
    for stream in &mut half_sent {
        let answer = read_until_closed(stream, header_read_timeout * 3).await;
        assert!(answer.is_empty() || status_of(&answer) >= 400);
    }
}

/// A kept-alive connection is closed after the idle timeout; a request head larger than the
/// limit gets 431; a body that stops arriving gets 400 once the body timeout passes; a
/// connection that sends nothing is closed by the header-read timeout. Each on a server where
/// only that deadline is short (the others a minute), so the close shows which one acted.
#[tokio::test]
async fn idle_oversized_and_slow_requests_meet_their_limits() {
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(60);
    let within = Duration::from_secs(10);
    let server = |header_read_timeout, idle_timeout, body_timeout| {
        spawn_limited(ConnectionLimits {
            header_read_timeout,
            idle_timeout,
            body_timeout,
            max_header_bytes: 16 * 1024,
            ..ConnectionLimits::DEFAULT
        })
    };

    // Keep-alive: one full request, its answer, then silence until the idle timeout.
    let app = server(long, short, long).await;
    let mut idle = TcpStream::connect(address(&app)).await.unwrap();
    idle.write_all(b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle, within).await;
    assert_eq!(status_of(&answer), 200);

    // A head of 40 KiB against a 16 KiB limit (the bound is approximate: hyper's buffer
    // grows in steps).
    let mut big = TcpStream::connect(address(&app)).await.unwrap();
    let head = format!(
        "GET /jwks HTTP/1.1\r\nHost: a\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    big.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(status_of(&read_until_closed(&mut big, within).await), 431);

    // A body announced as 100 bytes of which 10 arrive.
    let app = server(long, long, short).await;
    let mut slow = TcpStream::connect(address(&app)).await.unwrap();
    slow.write_all(
        b"POST /oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut slow, within).await;
    assert_eq!(status_of(&answer), 400);
    assert!(String::from_utf8_lossy(&answer).contains("invalid_request"));

    // Nothing at all, and half a head.
    let app = server(short, long, long).await;
    let mut silent = TcpStream::connect(address(&app)).await.unwrap();
    assert!(read_until_closed(&mut silent, within).await.is_empty());
    let mut half_sent = TcpStream::connect(address(&app)).await.unwrap();
    half_sent.write_all(HALF_SENT).await.unwrap();
    assert!(read_until_closed(&mut half_sent, within).await.is_empty());
}

/// One request on a connection of its own (`Connection: close`): its status.
async fn get_alone(address: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    status_of(&read_until_closed(&mut stream, Duration::from_secs(10)).await)
}

/// Whether the server has closed `stream` (without waiting for it to).
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// At the cap, a new connection makes room by closing, in this order: the oldest idle
/// connection, the oldest one still sending its head, a request still waiting for its body.
/// Each new connection is served at once.
#[tokio::test]
async fn at_the_cap_new_connections_close_idle_then_half_sent_then_slow_bodies() {
    let app = spawn_limited(ConnectionLimits {
        max_connections: 3,
        ..ConnectionLimits::DEFAULT
    })
    .await;
    let address = address(&app);
    // Kept alive after one request: idle.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /jwks HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    // A head that never ends.
    let mut half_sent = TcpStream::connect(&address).await.unwrap();
    half_sent.write_all(HALF_SENT).await.unwrap();
    // A token request whose body stops after 5 of 40 bytes.
    let slow = || async {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"POST /oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\ngrant")
            .await
            .unwrap();
        stream
    };
    let mut slow_body = slow().await;
    let within = Duration::from_secs(10);

    // Each new connection at the cap closes one: first the idle connection...
    let mut second = slow().await;
    read_until_closed(&mut idle, within).await;
    assert!(!is_closed(&mut half_sent).await && !is_closed(&mut slow_body).await);
    // ... then the half-sent head ...
    let mut third = slow().await;
    read_until_closed(&mut half_sent, within).await;
    assert!(!is_closed(&mut slow_body).await && !is_closed(&mut second).await);
    // ... then the oldest request waiting for its body; the new connection is served.
    assert_eq!(get_alone(&address, "/jwks").await, 200);
    read_until_closed(&mut slow_body, within).await;
    assert!(!is_closed(&mut second).await && !is_closed(&mut third).await);
}

/// `latchkey serve` under `ulimit -n 128` with 200 idle connections open (more than it has
/// file descriptors): the connection cap is fitted below the open-file limit, so accepting
/// never fails, and a token request is still answered (an idle connection makes room), not
/// left to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_lowers_the_cap_and_requests_still_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            &format!(
                "ulimit -n 128 && exec {BIN} --database {database} serve --listen 127.0.0.1:0"
            ),
        ])
        .env("RUST_LOG", "info");
    let (_server, line) = start(command, "latchkey is serving");
    let address = listen_field(&line);
    let created = Command::new(BIN)
        .args([
            "--database",
            &database,
            "client",
            "create",
            "--name",
            "limited",
        ])
        .args(["--scope", "read", "--audience", "https://api.example.com"])
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(created.status.success());
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    let response = reqwest::Client::new()
        .post(format!("http://{address}/oauth2/token"))
        .basic_auth(
            created["client_id"].as_str().unwrap(),
            created["client_secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A TLS connection that never finishes its handshake is closed by the header-read timeout.
#[tokio::test]
async fn a_silent_tls_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = crate::mtls::self_signed(
        dir.path(),
        "server",
        "/CN=localhost",
        "IP:127.0.0.1,DNS:localhost",
    ) else {
        return;
    };
    let database = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", database.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&url).await.unwrap();
    let config = latchkey_server::ServerConfig {
        tls: Some(latchkey_server::tls::TlsFiles {
            cert,
            key,
            client_ca: None,
        }),
        connections: ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::DEFAULT
        },
        ..server_config(SigningAlg::Es256, None)
    };
    let clock = latchkey_server::ManualClock::new(crate::helpers::T0);
    let app = spawn_with_config(config, url, database, store, clock).await;
    let address = app.issuer.trim_start_matches("https://").to_owned();
    // Well within the default 10 s: the 300 ms set here closes them.
    let within = Duration::from_secs(3);
    let mut silent = TcpStream::connect(&address).await.unwrap();
    assert!(read_until_closed(&mut silent, within).await.is_empty());
    let mut half_hello = TcpStream::connect(&address).await.unwrap();
    half_hello.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    read_until_closed(&mut half_hello, within).await;
}

/// `latchkey serve` as users run it: SIGTERM while 200 half-sent requests are open and one
/// request is in flight (its body half-sent). The in-flight request is still answered, the
/// half-sent connections are closed about a second after SIGTERM rather than at their
/// header-read timeout (a minute here), and the process exits well before its shutdown
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_closes_half_sent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, address) = serve_process(
        dir.path(),
        &["--header-read-timeout", "60s", "--shutdown-timeout", "30s"],
    );
    let mut half_sent = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(HALF_SENT).await.unwrap();
        half_sent.push(stream);
    }
    let body = b"grant_type=client_credentials&client_id=nobody&client_secret=wrong";
    let mut in_flight = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(&body[..10]).await.unwrap();
    // Let the server take the head before SIGTERM (a connection is read before shutdown is
    // seen, but this test is about a request already in flight).
    let ready = reqwest::get(format!("http://{address}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    sigterm(&server);
    for stream in &mut half_sent {
        read_until_closed(stream, Duration::from_secs(10)).await;
    }
    in_flight.write_all(&body[10..]).await.unwrap();
    let answer = read_until_closed(&mut in_flight, Duration::from_secs(10)).await;
    assert_eq!(
        status_of(&answer),
        401,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let exited = server.wait_timeout(Duration::from_secs(10));
    assert!(exited.is_some_and(|s| s.success()), "exit: {exited:?}");
}

/// The shutdown timeout bounds a drain: a request whose body never comes does not keep the
/// process alive past it.
#[tokio::test]
async fn the_shutdown_timeout_cuts_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, address) = serve_process(
        dir.path(),
        &["--body-timeout", "5m", "--shutdown-timeout", "500ms"],
    );
    let mut stuck = TcpStream::connect(&address).await.unwrap();
    stuck
        .write_all(b"POST /oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\nab")
        .await
        .unwrap();
    let ready = reqwest::get(format!("http://{address}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    sigterm(&server);
    // The body timeout is five minutes: only the shutdown timeout lets the process go.
    let exited = server.wait_timeout(Duration::from_secs(10));
    assert!(exited.is_some_and(|s| s.success()), "exit: {exited:?}");
    let answer = read_until_closed(&mut stuck, Duration::from_secs(5)).await;
    assert!(answer.is_empty(), "the cut request got no answer");
}

/// `latchkey gate` and `latchkey sidecar` take the same flags: a half-sent request to either
/// is closed by its header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_and_sidecar_close_half_sent_requests() {
    let app = crate::helpers::spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    let upstream = crate::gateways::echo_upstream().await;
    let mut gate = Command::new(BIN);
    gate.args([
        "gate",
        "--upstream",
        &upstream,
        "--issuer",
        &app.issuer,
        "--audience",
        "https://api.example.com",
        "--listen",
        "127.0.0.1:0",
        "--header-read-timeout",
        "300ms",
    ]);
    let (_gate, gate_line) = start(gate, "latchkey gate is serving");
    let mut sidecar = Command::new(BIN);
    sidecar
        .args([
            "sidecar",
            "--upstream",
            &upstream,
            "--issuer",
            &app.issuer,
            "--client-id",
            client.id(),
            "--listen",
            "127.0.0.1:0",
            "--header-read-timeout",
            "300ms",
        ])
        .env("LATCHKEY_CLIENT_SECRET", &client.secret);
    let (_sidecar, sidecar_line) = start(sidecar, "latchkey sidecar is serving");
    for line in [gate_line, sidecar_line] {
        let mut stream = TcpStream::connect(listen_field(&line)).await.unwrap();
        stream
            .write_all(b"GET /anything HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert!(answer.is_empty() || status_of(&answer) >= 400, "{line}");
    }
}

/// `latchkey serve` in `dir` (its database there) with `extra` flags, on a free port; the
/// process and its address.
fn serve_process(dir: &std::path::Path, extra: &[&str]) -> (crate::gateways::Background, String) {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .env_remove("LATCHKEY_DATABASE_URL");
    let (server, line) = start(command, "latchkey is serving");
    (server, listen_field(&line))
}

fn sigterm(server: &crate::gateways::Background) {
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
}

/// Waiting for a child process with a bound.
trait WaitTimeout {
    fn wait_timeout(&mut self, within: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeout for crate::gateways::Background {
    fn wait_timeout(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child().try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}
