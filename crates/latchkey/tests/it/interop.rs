//! Independent implementations against the real server: Authlib (an OAuth client library) gets
//! tokens with both secret methods, and PyJWT verifies them against `/jwks` for every signing
//! algorithm. Needs `python3` with `authlib`, `pyjwt`, `cryptography` and `requests`
//! (`.ci/run` installs them); elsewhere the test says why it skips, and under CI it fails.

use std::process::Command;

use base64::Engine as _;
use latchkey_proto::{ClientAuthMethod, SigningAlg};
use latchkey_server::{Clock, SystemClock};

use crate::helpers::spawn_app_with;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/authlib_client.py"
);

fn python_ready() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import authlib, jwt, requests, cryptography"])
        .output();
    match probe {
        Ok(out) if out.status.success() => true,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have python3 with authlib, pyjwt, cryptography and requests (see .ci/run)"
            );
            eprintln!(
                "SKIPPED interop: python3 with authlib, pyjwt, cryptography and requests is not installed \
                 (pip install authlib pyjwt cryptography requests)"
            );
            false
        }
    }
}

#[tokio::test]
async fn authlib_gets_tokens_that_pyjwt_verifies() {
    if !python_ready() {
        return;
    }
    for (alg, method) in [
        (SigningAlg::Es256, ClientAuthMethod::ClientSecretBasic),
        (SigningAlg::EdDsa, ClientAuthMethod::ClientSecretPost),
        (SigningAlg::Rs256, ClientAuthMethod::ClientSecretBasic),
    ] {
        let app = spawn_app_with(alg).await;
        app.clock.set(SystemClock.now()); // PyJWT checks `exp` against the real clock.
        let client = app.client(|c| c.auth_method = method).await;
        let metadata_url = app.url("/.well-known/oauth-authorization-server");
        let script = tokio::process::Command::new("python3")
            .args([
                SCRIPT,
                &metadata_url,
                client.id(),
                method.as_str(),
                "read",
                "https://api.example.com",
            ])
            .env("CLIENT_SECRET", &client.secret)
            .output()
            .await
            .unwrap();
        assert!(
            script.status.success(),
            "{alg} / {method}: {}",
            String::from_utf8_lossy(&script.stderr)
        );
        let out: serde_json::Value = serde_json::from_slice(&script.stdout).unwrap();
        assert_eq!(out["response"]["token_type"], "Bearer");
        assert_eq!(out["response"]["scope"], "read");
        assert_eq!(out["response"]["expires_in"], 900);
        assert!(out["response"].get("refresh_token").is_none());
        assert_eq!(out["header"]["typ"], "at+jwt");
        assert_eq!(out["header"]["alg"], alg.as_str());
        assert_eq!(out["claims"]["client_id"], client.id());
        assert_eq!(out["claims"]["sub"], client.id());
        assert_eq!(out["claims"]["iss"], app.issuer.as_str());
        assert_eq!(out["claims"]["scope"], "read");
    }
}

/// Issue 7 acceptance: Authlib authenticates with private_key_jwt (its own JOSE code signs the
/// assertion) with a key of each type, twice per key (each assertion used once).
#[tokio::test]
async fn authlib_authenticates_with_private_key_jwt() {
    if !python_ready() {
        return;
    }
    let app = spawn_app_with(SigningAlg::Es256).await;
    app.clock.set(SystemClock.now()); // Authlib stamps assertions with the real clock.
    for alg in SigningAlg::ALL {
        let (key, pkcs8) = latchkey_client::PrivateKey::generate(*alg).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&pkcs8)
        );
        let client = app.key_client(&key, |_| {}).await;
        let script = tokio::process::Command::new("python3")
            .args([
                SCRIPT,
                &app.url("/.well-known/oauth-authorization-server"),
                &client.client_id,
                "private_key_jwt",
                "read",
                "https://api.example.com",
            ])
            .env("CLIENT_SECRET", &pem)
            .env("CLIENT_KEY_ALG", alg.as_str())
            .output()
            .await
            .unwrap();
        assert!(
            script.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&script.stderr)
        );
        let out: serde_json::Value = serde_json::from_slice(&script.stdout).unwrap();
        assert_eq!(out["claims"]["client_id"], client.client_id.as_str());
        assert_eq!(out["response"]["token_type"], "Bearer");
    }
}

const OPENID_CLIENT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

fn node_ready() -> bool {
    let installed = std::path::Path::new(OPENID_CLIENT_DIR)
        .join("node_modules/openid-client")
        .is_dir();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed && node {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have node with openid-client installed (see .ci/run)"
    );
    eprintln!(
        "SKIPPED DPoP interop: needs node and `npm install --prefix crates/latchkey/tests/interop`"
    );
    false
}

/// Issue 7 acceptance: openid-client (an independent, certified client) gets a DPoP-bound
/// token with its own proof, then calls an API behind latchkey-guard with its own proofs.
#[tokio::test]
async fn openid_client_gets_and_uses_a_dpop_bound_token() {
    if !node_ready() {
        return;
    }
    let app = crate::helpers::spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let guard = latchkey_guard::Guard::builder()
        .issuer(&app.issuer)
        .audience("https://api.example.com")
        .public_origin(&origin)
        .build()
        .await
        .unwrap();
    let api = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|caller: latchkey_guard::Caller| async move {
                format!("hello {}", caller.client_id())
            }),
        )
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, api).await.unwrap() });

    let script = tokio::process::Command::new("node")
        .current_dir(OPENID_CLIENT_DIR)
        .args([
            "openid_client_dpop.mjs",
            &app.issuer,
            client.id(),
            "read",
            "https://api.example.com",
            &format!("{origin}/hello"),
        ])
        .env("CLIENT_SECRET", &client.secret)
        .output()
        .await
        .unwrap();
    assert!(
        script.status.success(),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&script.stdout).unwrap();
    assert_eq!(out["response"]["token_type"], "dpop");
    let jkt = out["claims"]["cnf"]["jkt"].as_str().unwrap();
    assert_eq!(jkt.len(), 43, "a base64url SHA-256 thumbprint");
    for answer in out["answers"].as_array().unwrap() {
        assert_eq!(answer["status"], 200, "{out}");
        assert_eq!(answer["body"], format!("hello {}", client.id()));
    }
}
