//! `latchkey --server URL`: the client, keys and audit commands through the admin API, as an
//! admin client. Each read prints exactly what the same command prints on the database, and
//! each change is made, audited as the admin client, and usable.

use std::process::{Command, Output};

use latchkey_client::PrivateKey;
use latchkey_proto::SigningAlg;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, token_status};
use crate::mtls::self_signed;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// The two ways the CLI can reach the data.
#[derive(Clone, Copy)]
enum Via<'a> {
    Database,
    Server { id: &'a str, secret: &'a str },
}

fn run(app: &TestApp, via: Via<'_>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .env("USER", "ops")
        .env_remove("LATCHKEY_ADMIN_CLIENT_ID")
        .env_remove("LATCHKEY_ADMIN_CLIENT_SECRET");
    if !args.contains(&"--output") {
        command.args(["--output", "json"]);
    }
    match via {
        // The database of the server, as the CLI on the server's host reaches it.
        Via::Database => command.args(["--database", &app.database_url]),
        // A database the CLI cannot reach: every answer must come from the server.
        Via::Server { id, secret } => command
            .env(
                "LATCHKEY_DATABASE_URL",
                "sqlite:///nonexistent-dir/never.db",
            )
            .args(["--server", &app.base])
            .env("LATCHKEY_ADMIN_CLIENT_ID", id)
            .env("LATCHKEY_ADMIN_CLIENT_SECRET", secret),
    };
    command.args(args).output().unwrap()
}

/// The JSON a successful command printed.
fn json_of(app: &TestApp, via: Via<'_>, args: &[&str]) -> Value {
    let output = run(app, via, args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_cli_prints_what_the_database_cli_prints() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = json_of(
        &app,
        Via::Database,
        &["client", "create", "--name", "ops", "--admin"],
    );
    let admin_id = admin["client_id"].as_str().unwrap();
    let admin_secret = admin["client_secret"].as_str().unwrap();
    let server = Via::Server {
        id: admin_id,
        secret: admin_secret,
    };
    // Data of every kind, made on the database.
    let billing = json_of(
        &app,
        Via::Database,
        &[
            "client",
            "create",
            "--name",
            "billing",
            "--scope",
            "read write",
            "--audience",
            "https://api.example.com",
        ],
    );
    let billing_id = billing["client_id"].as_str().unwrap();
    json_of(
        &app,
        Via::Database,
        &["client", "secret", "add", billing_id, "--expires-in", "30d"],
    );
    let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let jwks_file = dir.path().join("keys.json");
    std::fs::write(
        &jwks_file,
        json!({ "keys": [key.public_jwk()] }).to_string(),
    )
    .unwrap();
    let keyed = json_of(
        &app,
        Via::Database,
        &[
            "client",
            "create",
            "--name",
            "keyed",
            "--auth-method",
            "private_key_jwt",
            "--jwks-file",
            jwks_file.to_str().unwrap(),
            "--audience",
            "https://api.example.com",
        ],
    );
    let keyed_id = keyed["client_id"].as_str().unwrap();
    json_of(
        &app,
        Via::Database,
        &[
            "client",
            "create",
            "--name",
            "pki",
            "--auth-method",
            "tls_client_auth",
            "--tls-subject-dn",
            "CN=robot,O=Example",
            "--audience",
            "https://api.example.com",
        ],
    );
    json_of(&app, Via::Database, &["client", "disable", keyed_id]);
    json_of(
        &app,
        Via::Database,
        &[
            "registration-token",
            "create",
            "--max-uses",
            "3",
            "--scope-limit",
            "read",
        ],
    );

    for args in [
        vec!["client", "list"],
        vec!["client", "show", billing_id],
        vec!["client", "show", keyed_id],
        vec!["client", "secret", "list", billing_id],
        vec!["keys", "list"],
        vec!["audit", "list"],
        vec!["audit", "list", "--client", billing_id],
        vec!["client", "export"],
        vec!["registration-token", "list"],
        vec!["--output", "table", "client", "list"],
        vec!["--output", "table", "client", "show", keyed_id],
    ] {
        let local = run(&app, Via::Database, &args);
        let remote = run(&app, server, &args);
        assert!(
            local.status.success() && remote.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&remote.stderr)
        );
        assert_eq!(stdout(&local), stdout(&remote), "{args:?}");
        assert!(!stdout(&remote).trim().is_empty(), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_goes_through_the_admin_api() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = json_of(
        &app,
        Via::Database,
        &["client", "create", "--name", "ops", "--admin"],
    );
    let admin_id = admin["client_id"].as_str().unwrap();
    let server = Via::Server {
        id: admin_id,
        secret: admin["client_secret"].as_str().unwrap(),
    };

    // A client made over HTTP gets tokens.
    let created = json_of(
        &app,
        server,
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--scope",
            "read",
            "--audience",
            "https://api.example.com",
        ],
    );
    let id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    assert_eq!(token_status(&app.http, &app.base, id, secret).await, 200);
    let updated = json_of(
        &app,
        server,
        &[
            "client",
            "update",
            id,
            "--name",
            "svc2",
            "--scope",
            "read write",
            "--token-ttl",
            "5m",
        ],
    );
    assert_eq!(
        (
            updated["name"].clone(),
            updated["scope"].clone(),
            updated["token_ttl_seconds"].clone()
        ),
        (json!("svc2"), json!("read write"), json!(300))
    );
    let rotated = json_of(
        &app,
        server,
        &["client", "secret", "rotate", id, "--overlap", "0"],
    );
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert_eq!(token_status(&app.http, &app.base, id, secret).await, 401);
    assert_eq!(
        token_status(&app.http, &app.base, id, new_secret).await,
        200
    );
    let added = json_of(&app, server, &["client", "secret", "add", id]);
    let added_id = added["secret_id"].as_str().unwrap();
    json_of(&app, server, &["client", "secret", "revoke", id, added_id]);
    // The rotated-out secret (expired, not revoked) and the new one.
    let listed = json_of(&app, server, &["client", "secret", "list", id]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        json_of(&app, server, &["client", "disable", id])["enabled"],
        false
    );
    assert_eq!(
        token_status(&app.http, &app.base, id, new_secret).await,
        401
    );
    assert_eq!(
        json_of(&app, server, &["client", "enable", id])["enabled"],
        true
    );
    assert_eq!(
        json_of(&app, server, &["client", "revoke-tokens", id])["tokens_revoked"],
        true
    );

    // Keys, certificates and subjects over HTTP: create, then replace.
    let first = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let second = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let jwks_file = |key: &PrivateKey, name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, json!({ "keys": [key.public_jwk()] }).to_string()).unwrap();
        path
    };
    let first_file = jwks_file(&first, "first.json");
    let second_file = jwks_file(&second, "second.json");
    let keyed = json_of(
        &app,
        server,
        &[
            "client",
            "create",
            "--name",
            "keyed",
            "--auth-method",
            "private_key_jwt",
            "--jwks-file",
            first_file.to_str().unwrap(),
        ],
    );
    assert!(keyed.get("client_secret").is_none());
    let keyed_id = keyed["client_id"].as_str().unwrap();
    assert_eq!(keyed["jwks"]["keys"][0]["kid"], first.kid());
    let replaced = json_of(
        &app,
        server,
        &[
            "client",
            "update",
            keyed_id,
            "--jwks-file",
            second_file.to_str().unwrap(),
        ],
    );
    assert_eq!(replaced["jwks"]["keys"][0]["kid"], second.kid());
    let pki = json_of(
        &app,
        server,
        &[
            "client",
            "create",
            "--name",
            "pki",
            "--auth-method",
            "tls_client_auth",
            "--tls-san-dns",
            "robot.example.com",
        ],
    );
    assert_eq!(pki["tls_client_auth_san_dns"], "robot.example.com");
    let pki = json_of(
        &app,
        server,
        &[
            "client",
            "update",
            pki["client_id"].as_str().unwrap(),
            "--tls-subject-dn",
            "CN=robot",
        ],
    );
    assert_eq!(pki["tls_client_auth_subject_dn"], "CN=robot");
    if let Some((cert, _)) = self_signed(dir.path(), "self", "/CN=self", "DNS:self.example.com") {
        let own = json_of(
            &app,
            server,
            &[
                "client",
                "create",
                "--name",
                "self",
                "--auth-method",
                "self_signed_tls_client_auth",
                "--certificate-file",
                cert.to_str().unwrap(),
            ],
        );
        assert_eq!(own["auth_method"], "self_signed_tls_client_auth");
        assert!(own["jwks"]["keys"][0]["x5c"].is_array());
    }
    let federated = json_of(
        &app,
        server,
        &[
            "client",
            "create",
            "--name",
            "workload",
            "--auth-method",
            "private_key_jwt",
            "--federated-issuer",
            "https://8.8.8.8",
            "--federated-subject",
            "repo:example/app:ref:refs/heads/main",
            "--federated-max-token-age",
            "1h",
        ],
    );
    assert_eq!(federated["federated_max_token_age_seconds"], 3600);

    // Initial access tokens over HTTP.
    let made = json_of(
        &app,
        server,
        &["registration-token", "create", "--max-uses", "2"],
    );
    assert!(
        made["registration_token"]
            .as_str()
            .unwrap()
            .starts_with("lkrt_")
    );
    let token_id = made["token_id"].as_str().unwrap();
    json_of(&app, server, &["registration-token", "revoke", token_id]);
    assert_eq!(
        json_of(&app, server, &["registration-token", "list"]),
        json!([])
    );

    // Keys rotate once the next key has been published long enough.
    app.clock.advance(2 * 24 * 3600);
    let rotated = json_of(&app, server, &["keys", "rotate"]);
    assert_eq!(rotated[0]["alg"], "ES256");
    json_of(&app, server, &["client", "delete", id]);
    let shown = run(&app, server, &["client", "show", id]);
    assert!(!shown.status.success());
    assert!(
        String::from_utf8_lossy(&shown.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );

    // Every change above is the admin client's in the audit trail.
    let events = json_of(&app, Via::Database, &["audit", "list", "--client", id]);
    let actors: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(actors.len() >= 8, "{actors:?}");
    let admin_actor = format!("admin:{admin_id}");
    assert!(actors.iter().all(|a| *a == admin_actor), "{actors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_cli_says_what_is_missing_or_refused() {
    let app = spawn_app().await;
    let admin = json_of(
        &app,
        Via::Database,
        &["client", "create", "--name", "ops", "--admin"],
    );
    let reader = json_of(
        &app,
        Via::Database,
        &["client", "create", "--name", "auditor", "--admin-read"],
    );
    let no_credentials = Command::new(BIN)
        .env_remove("LATCHKEY_ADMIN_CLIENT_ID")
        .args(["--server", &app.base, "client", "list"])
        .output()
        .unwrap();
    assert!(!no_credentials.status.success());
    assert!(String::from_utf8_lossy(&no_credentials.stderr).contains("LATCHKEY_ADMIN_CLIENT_ID"));
    let wrong = run(
        &app,
        Via::Server {
            id: admin["client_id"].as_str().unwrap(),
            secret: "wrong-secret-wrong-secret",
        },
        &["client", "list"],
    );
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("invalid_client"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let read_only = Via::Server {
        id: reader["client_id"].as_str().unwrap(),
        secret: reader["client_secret"].as_str().unwrap(),
    };
    assert!(run(&app, read_only, &["client", "list"]).status.success());
    let refused = run(&app, read_only, &["client", "create", "--name", "x"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let import = run(&app, read_only, &["client", "import", "-"]);
    assert!(String::from_utf8_lossy(&import.stderr).contains("no bulk import"));
    // A --database typed on the command line is not quietly overridden by a server.
    let both = Command::new(BIN)
        .env("LATCHKEY_SERVER", &app.base)
        .args(["--database", &app.database_url, "client", "list"])
        .output()
        .unwrap();
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("not both"));

    // With a token cache file, the token is kept between runs, readable by its owner only.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("admin-token.json");
    for _ in 0..2 {
        let output = Command::new(BIN)
            .args(["--output", "json", "--server", &app.base])
            .args(["--admin-token-cache", cache.to_str().unwrap()])
            .env(
                "LATCHKEY_ADMIN_CLIENT_ID",
                admin["client_id"].as_str().unwrap(),
            )
            .env(
                "LATCHKEY_ADMIN_CLIENT_SECRET",
                admin["client_secret"].as_str().unwrap(),
            )
            .args(["keys", "list"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}
