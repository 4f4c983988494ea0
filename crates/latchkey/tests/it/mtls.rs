//! TLS termination by `latchkey serve` and mutual TLS (RFC 8705): certificates made by
//! openssl, the real server in process, clients registered with the CLI, tokens fetched with
//! `curl --cert`, and `latchkey gate` checking certificate-bound tokens.

use std::path::{Path, PathBuf};
use std::process::Command;

use latchkey_proto::SigningAlg;
use serde_json::{Value, json};

use crate::gateways::{echo_upstream, listen_field, start};
use crate::helpers::{TestApp, decode_parts, server_config, spawn_with_config};

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
    // An end-entity certificate: webpki refuses a CA one as a server or client identity.
    self_signed_with(
        dir,
        name,
        subject,
        &[
            &format!("subjectAltName={san}"),
            "basicConstraints=critical,CA:FALSE",
        ],
    )
}

/// `openssl req -x509`: a self-signed P-256 certificate with these extensions, valid a day.
fn self_signed_with(
    dir: &Path,
    name: &str,
    subject: &str,
    extensions: &[&str],
) -> Option<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let mut args = vec![
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
    ];
    for extension in extensions {
        args.extend(["-addext", extension]);
    }
    args.extend(["-keyout", key.to_str()?, "-out", cert.to_str()?]);
    openssl(&args).then_some((cert, key))
}

/// A server terminating TLS with a fresh certificate for 127.0.0.1 (`server.pem` in `dir`),
/// trusting client certificates of `client_ca` for tls_client_auth; returns it with a client
/// that trusts only that certificate.
pub async fn spawn_tls(
    dir: &Path,
    client_ca: Option<PathBuf>,
) -> Option<(TestApp, reqwest::Client)> {
    let (cert, key) = self_signed(dir, "server", "/CN=localhost", "IP:127.0.0.1,DNS:localhost")?;
    let database = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", database.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&url).await.unwrap();
    let config = latchkey_server::ServerConfig {
        tls: Some(latchkey_server::tls::TlsFiles {
            cert: cert.clone(),
            key,
            client_ca,
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
    let Some((app, http)) = spawn_tls(dir.path(), None).await else {
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

/// A CA certificate and key for `subject`, in `dir`.
fn make_ca(dir: &Path, name: &str, subject: &str) -> Option<(PathBuf, PathBuf)> {
    self_signed_with(
        dir,
        name,
        subject,
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign",
        ],
    )
}

/// A client certificate issued by `ca` for `subject` with SANs `san`.
fn issue(dir: &Path, ca: &(PathBuf, PathBuf), name: &str, subject: &str, san: &str) -> Certificate {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
             extendedKeyUsage=clientAuth\n"
        ),
    )
    .unwrap();
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    assert!(openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        &path(&key),
        "-out",
        &path(&csr),
    ]));
    assert!(openssl(&[
        "x509",
        "-req",
        "-in",
        &path(&csr),
        "-CA",
        &path(&ca.0),
        "-CAkey",
        &path(&ca.1),
        "-set_serial",
        &fastrand::u32(1..).to_string(),
        "-days",
        "1",
        "-extfile",
        &path(&ext),
        "-out",
        &path(&cert),
    ]));
    Certificate { cert, key }
}

/// A client certificate and its key (PEM files).
struct Certificate {
    cert: PathBuf,
    key: PathBuf,
}

impl Certificate {
    fn self_signed(dir: &Path, name: &str, subject: &str, san: &str) -> Self {
        let (cert, key) = self_signed(dir, name, subject, san).unwrap();
        Certificate { cert, key }
    }

    /// The RFC 8705 §3.1 thumbprint as openssl computes it: SHA-256 of the DER, base64url.
    fn openssl_thumbprint(&self) -> String {
        let pipeline = format!(
            "openssl x509 -in '{}' -outform DER | openssl dgst -sha256 -binary | base64 -w0 \
             | tr '+/' '-_' | tr -d '='",
            self.cert.display()
        );
        let out = Command::new("sh").args(["-c", &pipeline]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn der(&self) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject as _;
        rustls_pki_types::CertificateDer::from_pem_file(&self.cert)
            .unwrap()
            .to_vec()
    }
}

/// curl, asking `url` with the server's certificate trusted, optionally presenting `cert`.
/// Returns the status and the body. Skips (fails under CI) without curl.
async fn curl(dir: &Path, cert: Option<&Certificate>, url: &str, args: &[&str]) -> (u16, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(dir.join("server.pem"));
    if let Some(cert) = cert {
        command.arg("--cert").arg(&cert.cert);
        command.arg("--key").arg(&cert.key);
    }
    let out = command.args(args).arg(url).output().await.expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap_or(0), body.to_owned())
}

/// `curl --cert` at the token endpoint with a client_id alone (RFC 8705 §2).
async fn curl_token(
    app: &TestApp,
    dir: &Path,
    cert: Option<&Certificate>,
    client_id: &str,
) -> (u16, Value) {
    let (status, body) = curl(
        dir,
        cert,
        &app.token_url(),
        &[
            "-d",
            "grant_type=client_credentials",
            "-d",
            &format!("client_id={client_id}"),
        ],
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// `latchkey client create` with `args`, as a user runs it; returns the client_id.
async fn cli_create(app: &TestApp, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args([
            "--database",
            &app.database_url,
            "client",
            "create",
            "--name",
            "mtls",
        ])
        // An admin client's one audience is the admin API.
        .args(if args.contains(&"--admin") {
            &[][..]
        } else {
            &["--audience", API, "--scope", "read"][..]
        })
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(created.get("client_secret").is_none(), "{created}");
    created["client_id"].as_str().unwrap().to_owned()
}

const API: &str = "https://api.example.com";

/// `latchkey token --client-certificate-file` (latchkey-client with a client certificate);
/// returns the access token.
async fn latchkey_token(
    app: &TestApp,
    dir: &Path,
    client_id: &str,
    cert: &Certificate,
    method: Option<&str>,
) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(["token", "--issuer", &app.issuer, "--client-id", client_id])
        .arg("--client-certificate-file")
        .arg(&cert.cert)
        .arg("--client-key-file")
        .arg(&cert.key)
        // The library's own HTTP client trusts the platform's roots: add the test server's.
        .env("SSL_CERT_FILE", dir.join("server.pem"))
        .env_remove("LATCHKEY_CLIENT_SECRET");
    if let Some(method) = method {
        command.args(["--auth-method", method]);
    }
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn have_curl() -> bool {
    let found = Command::new("curl").arg("--version").output().is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "CI must have curl"
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_with_curl_binds_tokens_to_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    if !have_curl() {
        return;
    }
    let Some(ca) = make_ca(dir, "ca", "/CN=latchkey test client CA") else {
        return;
    };
    let billing = issue(
        dir,
        &ca,
        "billing",
        "/C=US/O=Example Corp/CN=billing",
        "DNS:billing.svc.example,URI:spiffe://example.org/billing,IP:10.1.2.3,\
         email:billing@example.org",
    );
    // Made before the server starts: its clock is fixed then, and a certificate must already
    // be valid at that time.
    let rogue_ca = make_ca(dir, "rogue", "/CN=latchkey test client CA").unwrap();
    let forged = issue(
        dir,
        &rogue_ca,
        "forged",
        "/C=US/O=Example Corp/CN=billing",
        "DNS:billing.svc.example",
    );
    let other = issue(
        dir,
        &ca,
        "other",
        "/C=US/O=Example Corp/CN=other",
        "DNS:other.example",
    );
    let Some((app, _)) = spawn_tls(dir, Some(ca.0.clone())).await else {
        return;
    };

    // RFC 8705 §2.1.2 / §3.3: discovery names both methods and the binding.
    let metadata: Value = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    let methods = metadata["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("\"tls_client_auth\"") && methods.contains("self_signed"));
    assert_eq!(metadata["tls_client_certificate_bound_access_tokens"], true);

    // One client per way of naming the certificate: the subject DN (RFC 4514, spaces and
    // case aside) and each kind of SAN.
    let thumbprint = billing.openssl_thumbprint();
    let registrations: [&[&str]; 5] = [
        &["--tls-subject-dn", "cn=billing, O=Example Corp, C=US"],
        &["--tls-san-dns", "billing.svc.example"],
        &["--tls-san-uri", "spiffe://example.org/billing"],
        &["--tls-san-ip", "10.1.2.3"],
        &["--tls-san-email", "billing@example.org"],
    ];
    let mut ids = Vec::new();
    for registration in registrations {
        let mut args = vec!["--auth-method", "tls_client_auth"];
        args.extend_from_slice(registration);
        let id = cli_create(&app, &args).await;
        let (status, body) = curl_token(&app, dir, Some(&billing), &id).await;
        assert_eq!(status, 200, "{registration:?}: {body}");
        // RFC 8705 §3: certificate-bound tokens stay of type Bearer...
        assert_eq!(body["token_type"], "Bearer");
        // ...and carry the certificate's thumbprint, as openssl computes it.
        let (_, claims) = decode_parts(body["access_token"].as_str().unwrap());
        assert_eq!(
            claims["cnf"],
            json!({ "x5t#S256": thumbprint }),
            "{registration:?}"
        );
        ids.push(id);
    }
    let by_dn = &ids[0];
    // RFC 8705 §3.2: introspection reports the binding.
    let (_, body) = curl_token(&app, dir, Some(&billing), by_dn).await;
    let resource_server = app
        .client(|c| {
            c.can_introspect = true;
            c.grant_types = vec![];
        })
        .await;
    let introspected = app
        .introspect(&resource_server, body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["cnf"], json!({ "x5t#S256": thumbprint }));
    // latchkey-client, through `latchkey token` (tls_client_auth is its default method).
    let fetched = latchkey_token(&app, dir, by_dn, &billing, None).await;
    assert_eq!(
        decode_parts(&fetched).1["cnf"]["x5t#S256"],
        thumbprint.as_str()
    );

    // No certificate, one from another CA with the same names, one from the CA with other
    // names: all invalid_client.
    for (case, cert) in [
        ("none", None),
        ("forged", Some(&forged)),
        ("other", Some(&other)),
    ] {
        let (status, body) = curl_token(&app, dir, cert, by_dn).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{case}"
        );
    }
    let (status, _) = curl_token(&app, dir, Some(&other), &ids[1]).await;
    assert_eq!(status, 401, "a SAN registration refuses other names too");

    // A client_id alone authenticates no secret client, certificate or not.
    let secret_client = app.client(|_| {}).await;
    let (status, _) = curl_token(&app, dir, Some(&billing), secret_client.id()).await;
    assert_eq!(status, 401);

    // Rotation: the client's subject is replaced; the old certificate stops working.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["--database", &app.database_url, "client", "update", by_dn])
        .args(["--tls-subject-dn", "CN=other,O=Example Corp,C=US"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(curl_token(&app, dir, Some(&billing), by_dn).await.0, 401);
    assert_eq!(curl_token(&app, dir, Some(&other), by_dn).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificates_and_the_gate_check_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    if !have_curl() {
        return;
    }
    let Some((app, _)) = spawn_tls(dir, None).await else {
        return;
    };
    let metadata: Value = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    let methods = metadata["token_endpoint_auth_methods_supported"].to_string();
    assert!(
        methods.contains("self_signed_tls_client_auth") && !methods.contains("\"tls_client_auth\""),
        "without --client-ca only self-signed certificates can authenticate: {methods}"
    );
    let robot = Certificate::self_signed(dir, "robot", "/CN=robot", "DNS:robot.example");
    let intruder = Certificate::self_signed(dir, "intruder", "/CN=robot", "DNS:robot.example");
    let id = cli_create(
        &app,
        &[
            "--auth-method",
            "self_signed_tls_client_auth",
            "--certificate-file",
            robot.cert.to_str().unwrap(),
        ],
    )
    .await;
    let (status, body) = curl_token(&app, dir, Some(&robot), &id).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (_, claims) = decode_parts(&token);
    assert_eq!(
        claims["cnf"],
        json!({ "x5t#S256": robot.openssl_thumbprint() })
    );
    // The same names on another key are not the registered certificate.
    let (status, body) = curl_token(&app, dir, Some(&intruder), &id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let header = |cert: &Certificate| {
        use base64::Engine as _;
        format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(cert.der())
        )
    };
    // `latchkey gate` over TLS: the token is accepted with its certificate only.
    let upstream = echo_upstream().await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(["gate", "--upstream", &upstream, "--issuer", &app.issuer])
        .args(["--audience", API, "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        // The gate fetches the issuer's keys over HTTPS: trust the test server's certificate.
        .env("SSL_CERT_FILE", dir.join("server.pem"));
    let (_gate, line) = start(command, "latchkey gate is serving");
    let gate = format!("https://{}/orders", listen_field(&line));
    let bearer = format!("Authorization: Bearer {token}");
    let ask = |cert| {
        let (gate, bearer) = (gate.clone(), bearer.clone());
        async move { curl(dir, cert, &gate, &["-i", "-H", &bearer]).await }
    };
    let (status, body) = ask(Some(&robot)).await;
    assert_eq!(status, 200, "{body}");
    for (case, cert) in [("another certificate", Some(&intruder)), ("none", None)] {
        let (status, body) = ask(cert).await;
        assert_eq!(status, 401, "{case}");
        assert!(body.contains("error=\"invalid_token\""), "{case}: {body}");
    }
    // On its TLS connections the gate reads no certificate header: a client without a
    // certificate cannot name the victim's (certificates are public).
    let spoofed = format!("Client-Cert: {}", header(&robot));
    let (status, _) = curl(dir, None, &gate, &["-H", &bearer, "-H", &spoofed]).await;
    assert_eq!(status, 401);

    // Behind a TLS-terminating proxy, the certificate comes in a header, and only a gate told
    // to trust that header reads it.
    let plain_gate = |trust: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
        command
            .args(["gate", "--upstream", &upstream, "--issuer", &app.issuer])
            .args(["--audience", API, "--listen", "127.0.0.1:0"])
            .env("SSL_CERT_FILE", dir.join("server.pem"));
        if trust {
            command.args(["--trust-certificate-header", "Client-Cert"]);
        }
        start(command, "latchkey gate is serving")
    };
    let http = reqwest::Client::new();
    for trust in [true, false] {
        let (_gate, line) = plain_gate(trust);
        let url = format!("http://{}/orders", listen_field(&line));
        for (cert, accepted) in [(&robot, trust), (&intruder, false)] {
            let response = http
                .get(&url)
                .bearer_auth(&token)
                .header("Client-Cert", header(cert))
                .send()
                .await
                .unwrap();
            let status = response.status();
            assert_eq!(status == 200, accepted, "trust {trust}: {status}");
            if accepted {
                // The upstream never sees a certificate header the gate did not check.
                let echoed: Value = response.json().await.unwrap();
                assert!(echoed["headers"].get("client-cert").is_none(), "{echoed}");
            }
        }
    }
}

/// RFC 8705 §3 at the admin API: a certificate-bound admin token is accepted only over a
/// connection that presents its certificate.
#[tokio::test]
async fn a_certificate_bound_admin_token_needs_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    if !have_curl() {
        return;
    }
    let Some((app, _)) = spawn_tls(dir, None).await else {
        return;
    };
    let robot = Certificate::self_signed(dir, "robot", "/CN=robot", "DNS:robot.example");
    let intruder = Certificate::self_signed(dir, "intruder", "/CN=robot", "DNS:robot.example");
    let id = cli_create(
        &app,
        &[
            "--admin",
            "--auth-method",
            "self_signed_tls_client_auth",
            "--certificate-file",
            robot.cert.to_str().unwrap(),
        ],
    )
    .await;
    let (status, body) = curl_token(&app, dir, Some(&robot), &id).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (_, claims) = decode_parts(&token);
    assert!(claims["cnf"]["x5t#S256"].is_string());
    assert!(claims["aud"].to_string().contains("urn:latchkey:admin"));
    let url = format!("{}/admin/v1/clients", app.issuer);
    let bearer = format!("Authorization: Bearer {token}");
    let (status, body) = curl(dir, Some(&robot), &url, &["-H", &bearer]).await;
    assert_eq!(status, 200, "{body}");
    for cert in [Some(&intruder), None] {
        let (status, body) = curl(dir, cert, &url, &["-H", &bearer]).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("certificate"), "{body}");
    }
}
