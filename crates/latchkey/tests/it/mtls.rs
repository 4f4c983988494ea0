//! TLS termination by `latchkey serve` (RFC 8705 groundwork): certificates made by openssl,
//! the real server in process, clients over HTTPS only.

use std::path::{Path, PathBuf};
use std::process::Command;

use latchkey_proto::SigningAlg;

use crate::helpers::{TestApp, server_config, spawn_with_config};

/// openssl, as users make certificates; skips (fails under CI) without it.
pub fn openssl(args: &[&str]) -> bool {
    match Command::new("openssl").args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "CI must have openssl");
            eprintln!("SKIPPED: openssl is not installed");
            false
        }
    }
}

/// A self-signed P-256 certificate for `subject` (and SAN `san`), in `dir`.
pub fn self_signed(dir: &Path, name: &str, subject: &str, san: &str) -> Option<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        subject,
        "-addext",
        &format!("subjectAltName={san}"),
        // An end-entity certificate: webpki refuses a CA one as a server or client identity.
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ])
    .then_some((cert, key))
}

/// A server terminating TLS with a fresh certificate for 127.0.0.1; returns it with the
/// certificate, and a client that trusts only that certificate.
pub async fn spawn_tls(dir: &Path) -> Option<(TestApp, reqwest::Client)> {
    let (cert, key) = self_signed(dir, "server", "/CN=localhost", "IP:127.0.0.1,DNS:localhost")?;
    let database = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", database.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&url).await.unwrap();
    let config = latchkey_server::ServerConfig {
        tls: Some(latchkey_server::tls::TlsFiles {
            cert: cert.clone(),
            key,
            client_ca: None,
        }),
        ..server_config(SigningAlg::Es256, None)
    };
    #[allow(clippy::disallowed_methods)] // curl and openssl read the real clock too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = latchkey_server::ManualClock::new(now as i64);
    let mut app = spawn_with_config(config, url, database, store, clock).await;
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    app.base = app.issuer.clone();
    app.http = http.clone();
    Some((app, http))
}

#[tokio::test]
async fn serve_terminates_tls() {
    let dir = tempfile::tempdir().unwrap();
    let Some((app, http)) = spawn_tls(dir.path()).await else {
        return;
    };
    assert!(
        app.issuer.starts_with("https://127.0.0.1:"),
        "{}",
        app.issuer
    );
    let metadata: serde_json::Value = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/oauth2/token", app.issuer)
    );
    let client = app.client(|_| {}).await;
    let response = http
        .post(app.token_url())
        .basic_auth(client.id(), Some(&client.secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Plain HTTP to the TLS port gets nowhere.
    let plain = app.issuer.replacen("https://", "http://", 1);
    let answer = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(answer.is_err() || !answer.unwrap().status().is_success());
    // curl, verifying the server against the certificate.
    // (An async child process: the server runs on this test's runtime.)
    let curl = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(dir.path().join("server.pem"))
        .arg(format!("{}/healthz", app.issuer))
        .output()
        .await;
    if let Ok(curl) = curl {
        assert!(
            curl.status.success(),
            "{}",
            String::from_utf8_lossy(&curl.stderr)
        );
    }
}
