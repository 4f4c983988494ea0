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

/// Whether python3 has the independent libraries the interop tests use; under CI it must.
pub fn python_ready() -> bool {
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
        app.clock.set(SystemClock.unix_seconds()); // PyJWT checks `exp` against the real clock.
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

/// A PKCS#8 private key as PEM, in 64-character lines.
fn pkcs8_pem(pkcs8: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// The PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (RFC 5208 §5: a SEQUENCE of the
/// version, the algorithm and an OCTET STRING holding the key), which `jsonwebtoken` takes.
fn pkcs1_of(pkcs8: &[u8]) -> &[u8] {
    // One DER element at `at`: (where its contents start, their length).
    let element = |at: usize| {
        let len = pkcs8[at + 1];
        if len < 0x80 {
            (at + 2, usize::from(len))
        } else {
            let n = usize::from(len & 0x7f);
            let len = pkcs8[at + 2..at + 2 + n]
                .iter()
                .fold(0, |acc, &b| (acc << 8) | usize::from(b));
            (at + 2 + n, len)
        }
    };
    let next = |at: usize| {
        let (contents, len) = element(at);
        contents + len
    };
    let version = element(0).0; // the first element inside the outer SEQUENCE
    let octet_string = next(next(version)); // after the version and the algorithm
    let (key, key_len) = element(octet_string);
    &pkcs8[key..key + key_len]
}

/// Authlib authenticates with private_key_jwt at its defaults (its own JOSE code signs an
/// hour-long assertion typed `JWT`) with a key of each type, twice per key (each assertion
/// used once).
#[tokio::test]
async fn authlib_authenticates_with_private_key_jwt() {
    if !python_ready() {
        return;
    }
    let app = spawn_app_with(SigningAlg::Es256).await;
    app.clock.set(SystemClock.unix_seconds()); // Authlib stamps assertions with the real clock.
    for alg in SigningAlg::ALL {
        let (key, pkcs8) = latchkey_client::PrivateKey::generate(*alg).unwrap();
        let pem = pkcs8_pem(&pkcs8);
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

/// Client assertions as users of two independent JWT libraries write them, with each
/// library's default header (`typ: JWT`, no `kid`): PyJWT's `jwt.encode` and the
/// `jsonwebtoken` crate's `Header::new`. Each is accepted for every key type; the same
/// library with the explicit type of another kind of JWT is refused.
#[tokio::test]
async fn pyjwt_and_jsonwebtoken_assertions_with_their_default_headers() {
    if !python_ready() {
        return;
    }
    let app = spawn_app_with(SigningAlg::Es256).await;
    let dir = tempfile::tempdir().unwrap();
    for alg in SigningAlg::ALL {
        let (key, pkcs8) = latchkey_client::PrivateKey::generate(*alg).unwrap();
        let pem = pkcs8_pem(&pkcs8);
        let pem_file = dir.path().join(format!("{alg}.pem"));
        std::fs::write(&pem_file, &pem).unwrap();
        let client = app.key_client(&key, |_| {}).await;
        let id = client.client_id.as_str();
        let claims = |jti: &str| {
            serde_json::json!({
                "iss": id, "sub": id, "aud": app.issuer, "jti": jti,
                "iat": crate::helpers::T0, "exp": crate::helpers::T0 + 300,
            })
        };
        let pyjwt = Command::new("python3")
            .arg(SCRIPT)
            .arg("--pyjwt-assertion")
            .arg(&pem_file)
            .arg(alg.as_str())
            .arg(claims(&format!("pyjwt-{alg}")).to_string())
            .output()
            .unwrap();
        assert!(
            pyjwt.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&pyjwt.stderr)
        );
        let pyjwt = String::from_utf8(pyjwt.stdout).unwrap().trim().to_owned();
        let jwt_alg = match alg {
            SigningAlg::Es256 => jsonwebtoken::Algorithm::ES256,
            SigningAlg::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            SigningAlg::Rs256 => jsonwebtoken::Algorithm::RS256,
        };
        let encoding_key = match alg {
            SigningAlg::Es256 => jsonwebtoken::EncodingKey::from_ec_der(&pkcs8),
            SigningAlg::EdDsa => jsonwebtoken::EncodingKey::from_ed_der(&pkcs8),
            SigningAlg::Rs256 => jsonwebtoken::EncodingKey::from_rsa_der(pkcs1_of(&pkcs8)),
        };
        let crate_signed = |header: &jsonwebtoken::Header, jti: &str| {
            jsonwebtoken::encode(header, &claims(jti), &encoding_key).unwrap()
        };
        let default_header = jsonwebtoken::Header::new(jwt_alg);
        assert_eq!(default_header.typ.as_deref(), Some("JWT"));
        for (library, assertion) in [
            ("PyJWT", pyjwt),
            (
                "jsonwebtoken",
                crate_signed(&default_header, &format!("crate-{alg}")),
            ),
        ] {
            let header = crate::helpers::decode_parts(&assertion).0;
            assert_eq!(header["typ"], "JWT", "{library} {alg}: {header}");
            let (status, body) = app.assertion_request(&assertion).await;
            assert_eq!(status, 200, "{library} {alg}: {body}");
        }
        for typ in ["at+jwt", "dpop+jwt", "secevent+jwt"] {
            let mut header = jsonwebtoken::Header::new(jwt_alg);
            header.typ = Some(typ.into());
            let (status, body) = app
                .assertion_request(&crate_signed(&header, &format!("{typ}-{alg}")))
                .await;
            assert_eq!(status, 401, "{typ} {alg}: {body}");
            assert_eq!(body["error"], "invalid_client");
        }
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

/// openid-client, at its defaults, gets a DPoP-bound admin token and reads the admin API with
/// its own proofs (RFC 9449 §7.1): the admin API checks them as the guard does.
#[tokio::test]
async fn openid_client_reads_the_admin_api_with_a_dpop_bound_token() {
    if !node_ready() {
        return;
    }
    let app = crate::helpers::spawn_app_at_real_time().await;
    let admin = app
        .client(|c| {
            c.scope = vec!["latchkey:admin:read".into()];
            c.audience = vec!["urn:latchkey:admin".into()];
        })
        .await;
    let script = tokio::process::Command::new("node")
        .current_dir(OPENID_CLIENT_DIR)
        .args([
            "openid_client_dpop.mjs",
            &app.issuer,
            admin.id(),
            "latchkey:admin:read",
            "urn:latchkey:admin",
            &app.url("/admin/v1/clients?limit=5"),
        ])
        .env("CLIENT_SECRET", &admin.secret)
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
    for answer in out["answers"].as_array().unwrap() {
        assert_eq!(answer["status"], 200, "{out}");
        let page: serde_json::Value =
            serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        assert_eq!(page["items"][0]["client_id"], admin.id(), "{out}");
    }
}
