//! The `latchkey` binary, run as a user runs it: the README quick start verbatim, every
//! `client` subcommand, JSON and table output, and errors.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{basic, spawn_app};
use crate::mtls::openssl;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        assert!(self.ok, "command failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn latchkey(database: &str, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("--database")
        .arg(database)
        .args(args)
        .output()
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

// Multi-threaded: the CLI runs as a blocking child process while the in-process server (and its
// cache poller, which the CLI waits for) keeps running on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lifecycle_through_the_cli_takes_effect_at_once() {
    let app = spawn_app().await;
    let db = app.database_url.as_str();

    let created = latchkey(
        db,
        &[
            "client",
            "create",
            "--name",
            "billing-sync",
            "--scope",
            "invoices:read invoices:write",
            "--audience",
            "https://api.example.com",
            "--token-ttl",
            "10m",
        ],
    )
    .json();
    let fields: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "client_id",
        "client_secret",
        "name",
        "scope",
        "audience",
        "token_ttl_seconds",
        "auth_method",
        "enabled",
        "created_at",
    ] {
        assert!(fields.contains(&field), "create prints {field}");
    }
    assert_eq!(created["name"], "billing-sync");
    assert_eq!(created["scope"], "invoices:read invoices:write");
    assert_eq!(
        created["audience"],
        serde_json::json!(["https://api.example.com"])
    );
    assert_eq!(created["token_ttl_seconds"], 600);
    assert_eq!(created["auth_method"], "client_secret_basic");
    assert_eq!(created["enabled"], true);
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let auth = basic(&id, &secret);

    let token = || async {
        app.http
            .post(app.token_url())
            .header("authorization", &auth)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
    };
    assert_eq!(token().await.status(), 200);

    // Never a secret again: list, show, update, disable, enable.
    let list = latchkey(db, &["client", "list"]);
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    let show = latchkey(db, &["client", "show", &id]);
    assert_eq!(show.json()["client_id"], id.as_str());
    let update = latchkey(
        db,
        &[
            "client",
            "update",
            &id,
            "--scope",
            "invoices:read",
            "--name",
            "billing",
            "--token-ttl",
            "1h",
        ],
    );
    let updated = update.json();
    assert_eq!(updated["scope"], "invoices:read");
    assert_eq!(updated["name"], "billing");
    assert_eq!(updated["token_ttl_seconds"], 3600);
    for run in [&list, &show, &update] {
        assert!(
            !run.stdout.contains(&secret) && !run.stdout.contains("\"client_secret\""),
            "{}",
            run.stdout
        );
    }

    let body: serde_json::Value = token().await.json().await.unwrap();
    assert_eq!(
        body["scope"], "invoices:read",
        "an update applies to the next token"
    );
    assert_eq!(body["expires_in"], 3600);

    let disable = latchkey(db, &["client", "disable", &id]);
    assert!(
        !disable.stderr.contains("did not confirm"),
        "the running server confirmed: {}",
        disable.stderr
    );
    let disabled = disable.json();
    assert_eq!(disabled["enabled"], false);
    let refused = token().await;
    assert_eq!(refused.status(), 401, "disabled takes effect at once");
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_client"
    );

    assert_eq!(
        latchkey(db, &["client", "enable", &id]).json()["enabled"],
        true
    );
    assert_eq!(token().await.status(), 200);

    assert_eq!(
        latchkey(db, &["client", "delete", &id]).json()["deleted"],
        true
    );
    let refused = token().await;
    assert_eq!(refused.status(), 401, "deleted takes effect at once");
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_client"
    );
    assert!(
        latchkey(db, &["client", "list"])
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn table_output_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let created = latchkey(
        &db,
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--audience",
            "https://api.example.com",
            "--output",
            "table",
        ],
    );
    assert!(created.ok, "{}", created.stderr);
    assert!(
        created
            .stdout
            .lines()
            .any(|l| l.starts_with("client_secret ")),
        "{}",
        created.stdout
    );
    assert!(created.stderr.contains("not shown again"));

    let table = latchkey(&db, &["client", "list", "--output", "table"]);
    assert!(table.stdout.starts_with("CLIENT_ID"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 2);

    let mode = std::fs::metadata(dir.path().join("cli.db")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    for (args, message) in [
        (vec!["client", "show", "nope"], "no client"),
        (vec!["client", "delete", "nope"], "no client"),
        (
            vec!["client", "create", "--name", "x", "--token-ttl", "5s"],
            "between",
        ),
        (
            vec!["client", "create", "--name", "x", "--audience", "not a uri"],
            "absolute URI",
        ),
        (
            vec!["client", "create", "--name", "x", "--scope", "a\"b"],
            "scope token",
        ),
        (
            vec!["client", "create", "--name", "x", "--auth-method", "none"],
            "client_secret_basic",
        ),
    ] {
        let run = latchkey(&db, &args);
        assert!(!run.ok, "{args:?} should fail");
        assert!(run.stdout.is_empty(), "{args:?} printed {}", run.stdout);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn every_command_explains_itself() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["client", "--help"],
        vec!["client", "create", "--help"],
        vec!["client", "update", "--help"],
        vec!["token", "--help"],
    ] {
        let output = Command::new(BIN).args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--listen",
        "LATCHKEY_LISTEN",
        "--issuer",
        "LATCHKEY_ISSUER",
        "--signing-alg",
        "--database",
        "LATCHKEY_DATABASE_URL",
    ] {
        assert!(help.contains(flag), "serve --help mentions {flag}");
    }
}

/// The README quick start, verbatim but for the port: `latchkey serve` in an empty directory
/// (default database ./latchkey.db), `client create`, a token with HTTP Basic, then SIGTERM.
#[tokio::test]
async fn quick_start_from_the_readme() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("LATCHKEY_DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = server.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let listen = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server start-up line");
        log.push(line.clone());
        if line.contains("latchkey is serving") {
            let field = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("listen="))
                .unwrap();
            break field.to_owned();
        }
    };
    assert!(
        log.iter().any(|l| l.contains("latchkey client create")),
        "says how to create a client: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("/.well-known/oauth-authorization-server")),
        "logs the discovery URL"
    );
    assert!(Path::new(&dir.path().join("latchkey.db")).exists());

    let created = Command::new(BIN)
        .args([
            "client",
            "create",
            "--name",
            "billing-sync",
            "--scope",
            "invoices:read invoices:write",
            "--audience",
            "https://api.example.com",
        ])
        .current_dir(dir.path())
        .env_remove("LATCHKEY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(created.status.success());
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let (id, secret) = (
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );

    let response = reqwest::Client::new()
        .post(format!("http://{listen}/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "invoices:read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().starts_with("eyJ"));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "invoices:read");

    // A secret in the query string is refused, and the query never reaches the log.
    let in_query = reqwest::Client::new()
        .post(format!(
            "http://{listen}/oauth2/token?client_secret=QUERY-SENTINEL"
        ))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 400);

    // The access log line names the client and outcome, never the secret or the token.
    let next_access_line = || loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("an access log line");
        assert!(
            !line.contains("QUERY-SENTINEL"),
            "the query was logged: {line}"
        );
        if line.contains("/oauth2/token") {
            break line;
        }
    };
    let line = next_access_line();
    let refused = next_access_line();
    assert!(
        refused.contains("invalid_request") && refused.contains("status=400"),
        "{refused}"
    );
    assert!(
        line.contains(id) && line.contains("issued") && line.contains("status=200"),
        "{line}"
    );
    assert!(!line.contains(secret) && !line.contains(body["access_token"].as_str().unwrap()));

    // A client_id that names no client (here a secret pasted into the wrong field) is logged
    // only as a short hash.
    let pasted = reqwest::Client::new()
        .post(format!("http://{listen}/oauth2/token"))
        .basic_auth("PASTED-SECRET-SENTINEL", Some("x"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(pasted.status(), 401);
    let unknown = next_access_line();
    assert!(
        unknown.contains("unknown:") && !unknown.contains("PASTED-SECRET-SENTINEL"),
        "{unknown}"
    );

    // SIGTERM: readiness turns false, in-flight requests drain, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.wait().unwrap();
    assert!(exit.success(), "graceful exit: {exit:?}");
    let rest: Vec<String> = lines_rx.iter().collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

/// A server that registered but stopped without unregistering (here: built, never run) cannot
/// confirm a change: the CLI waits at most its timeout, warns, forgets that server, and the
/// next change does not wait for it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_delays_a_change_once_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("silent.db").display());
    let store = latchkey_server::store::connect(&db).await.unwrap();
    let config = crate::helpers::server_config(latchkey_proto::SigningAlg::Es256, None);
    let clock = latchkey_server::ManualClock::new(crate::helpers::T0);
    let silent = latchkey_server::Application::build(config, store, std::sync::Arc::new(clock))
        .await
        .unwrap();

    let create = latchkey(
        &db,
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--audience",
            "https://api.example.com",
        ],
    );
    assert!(
        create.stderr.contains("did not confirm"),
        "{}",
        create.stderr
    );
    let created = create.json();
    let id = created["client_id"].as_str().unwrap();
    let next = latchkey(&db, &["client", "disable", id]);
    assert!(
        next.ok && next.stderr.is_empty(),
        "the silent server was forgotten: {}",
        next.stderr
    );
    drop(silent);
}

/// The token lifecycle commands, run as a user runs them: introspection rights and opaque
/// tokens at creation, `revoke-tokens`, `secret add/list/revoke`, `keys list/rotate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_commands_through_the_cli() {
    let app = spawn_app().await;
    let db = app.database_url.as_str();
    let created = latchkey(
        db,
        &[
            "client",
            "create",
            "--name",
            "api",
            "--audience",
            "https://api.example.com",
            "--can-introspect",
            "--token-format",
            "opaque",
        ],
    )
    .json();
    assert_eq!(created["can_introspect"], true);
    assert_eq!(created["token_format"], "opaque");
    let id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    let introspect = |token: String| {
        let app = &app;
        let auth = basic(id, secret);
        async move {
            app.http
                .post(app.url("/oauth2/introspect"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", auth)
                .body(format!("token={token}"))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()["active"]
                .clone()
        }
    };
    let token = |secret: String| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(app.url("/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", basic(id, &secret))
                .body("grant_type=client_credentials")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (
                status,
                body["access_token"].as_str().unwrap_or("").to_owned(),
            )
        }
    };

    let (_, opaque) = token(secret.to_owned()).await;
    assert!(opaque.starts_with("lkat_"));
    assert_eq!(introspect(opaque.clone()).await, true);
    let revoked = latchkey(db, &["client", "revoke-tokens", id]).json();
    assert_eq!(revoked["tokens_revoked"], true);
    assert_eq!(introspect(opaque).await, false);

    // Secrets: add a second one; both work; list shows ids, never secrets; revoke the first.
    let added = latchkey(db, &["client", "secret", "add", id, "--expires-in", "90d"]).json();
    let second = added["client_secret"].as_str().unwrap().to_owned();
    assert!(added["expires_at"].is_string());
    assert_eq!(token(second.clone()).await.0, 200);
    let listed = latchkey(db, &["client", "secret", "list", id]);
    assert!(!listed.stdout.contains(secret) && !listed.stdout.contains(&second));
    let listed = listed.json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let first_id = listed
        .iter()
        .find(|s| s["secret_id"] != added["secret_id"])
        .unwrap()["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    latchkey(db, &["client", "secret", "revoke", id, &first_id]).json();
    assert_eq!(token(secret.to_owned()).await.0, 401);
    assert_eq!(token(second.clone()).await.0, 200);
    let again = latchkey(db, &["client", "secret", "revoke", id, &first_id]);
    assert!(!again.ok && again.stderr.contains("no live secret"));

    // `update --can-introspect false` takes the right away.
    let updated = latchkey(db, &["client", "update", id, "--can-introspect", "false"]).json();
    assert_eq!(updated["can_introspect"], false);

    // Keys: a current and a next key; rotation waits until the next key is published long
    // enough (the CLI reads the wall clock, the test server a fixed one: only the refusal is
    // checked here; rotation itself is tested in `keys`).
    let keys = latchkey(db, &["keys", "list"]).json();
    let mut states: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    states.sort_unstable();
    assert_eq!(states, ["current", "next"]);
    assert!(keys.to_string().contains("\"sealed\":false"));
    assert!(!keys.to_string().contains("private"));
    let rotate = latchkey(db, &["keys", "rotate"]);
    assert!(
        rotate.ok || rotate.stderr.contains("Try again in"),
        "{}",
        rotate.stderr
    );
}

/// `latchkey token` as a script uses it: the token alone on stdout, the secret from a file or
/// the environment, and two runs with one `--cache-file` cost one token request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_prints_a_token_and_shares_its_cache_file() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{}\n", client.secret)).unwrap();
    let cache = dir.path().join("tokens.json");
    let database = app.database_url.clone();
    let run = {
        let (issuer, id) = (app.issuer.clone(), client.id().to_owned());
        let (secret_file, cache) = (secret_file.clone(), cache.clone());
        move |extra: &[&str]| {
            let mut args = vec![
                "token",
                "--issuer",
                &issuer,
                "--client-id",
                &id,
                "--client-secret-file",
                secret_file.to_str().unwrap(),
                "--cache-file",
                cache.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            latchkey(&database, &args)
        }
    };

    let first = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["--scope", "read"])
    })
    .await
    .unwrap();
    assert!(first.ok, "{}", first.stderr);
    let token = first.stdout.trim_end().to_owned();
    assert_eq!(
        first.stdout,
        format!("{token}\n"),
        "the token and nothing else"
    );
    assert_eq!(crate::helpers::decode_parts(&token).1["scope"], "read");

    // A second process reuses the cached token: the same string, so no new issuance (every
    // issued token has a fresh jti).
    let second = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["--scope", "read", "--output", "json"])
    })
    .await
    .unwrap();
    let json = second.json();
    assert_eq!(json["access_token"], token.as_str());
    assert_eq!(json["token_type"], "Bearer");
    let remaining = json["expires_in"].as_u64().unwrap();
    assert!((800..=900).contains(&remaining), "{remaining}");

    // Another scope is another token.
    let other = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["--scope", "write"])
    })
    .await
    .unwrap();
    assert!(other.ok, "{}", other.stderr);
    assert_ne!(other.stdout.trim_end(), token);

    // The secret from the environment; a wrong one is a clear error and prints no token.
    let (issuer, id) = (app.issuer.clone(), client.id().to_owned());
    let env_run = move |secret: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(["token", "--issuer", &issuer, "--client-id", &id]);
        command.env_remove("LATCHKEY_CLIENT_SECRET");
        if let Some(secret) = secret {
            command.env("LATCHKEY_CLIENT_SECRET", secret);
        }
        command.output().unwrap()
    };
    let (good, wrong, none) = tokio::task::spawn_blocking({
        let env_run = env_run.clone();
        let secret = client.secret.clone();
        move || {
            (
                env_run(Some(&secret)),
                env_run(Some("wrong")),
                env_run(None),
            )
        }
    })
    .await
    .unwrap();
    assert!(good.status.success());
    assert!(String::from_utf8(good.stdout).unwrap().starts_with("ey"));
    assert!(!wrong.status.success());
    assert!(wrong.stdout.is_empty());
    let stderr = String::from_utf8(wrong.stderr).unwrap();
    assert!(stderr.contains("invalid_client (HTTP 401)"), "{stderr}");
    assert!(stderr.contains("check the client id"), "{stderr}");
    assert!(!none.status.success());
    assert!(
        String::from_utf8(none.stderr)
            .unwrap()
            .contains("LATCHKEY_CLIENT_SECRET")
    );

    // There is no flag that takes the secret itself.
    let flag = Command::new(BIN)
        .args([
            "token",
            "--issuer",
            &app.issuer,
            "--client-id",
            "x",
            "--client-secret",
            "s",
        ])
        .output()
        .unwrap();
    assert!(!flag.status.success());
}

/// Two `latchkey token --cache-redis` processes: the second gets the first one's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_shares_tokens_through_redis() {
    let redis = "redis://127.0.0.1:6379/";
    if let Err(error) = std::net::TcpStream::connect("127.0.0.1:6379") {
        assert!(
            std::env::var_os("CI").is_none(),
            "Redis is required under CI: {error}"
        );
        eprintln!("skipping: no Redis at {redis} ({error})");
        return;
    }
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    let run = {
        let (issuer, id, secret) = (
            app.issuer.clone(),
            client.id().to_owned(),
            client.secret.clone(),
        );
        move || {
            let output = Command::new(BIN)
                .args([
                    "token",
                    "--issuer",
                    &issuer,
                    "--client-id",
                    &id,
                    "--cache-redis",
                    redis,
                ])
                .env("LATCHKEY_CLIENT_SECRET", &secret)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let (first, second) = tokio::task::spawn_blocking(move || (run(), run()))
        .await
        .unwrap();
    assert!(first.starts_with("ey"));
    assert_eq!(first, second, "one token request for both processes");
}

#[test]
fn migrate_creates_and_upgrades_the_schema_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("fresh.db").display());
    for _ in 0..2 {
        let run = latchkey(&database, &["migrate"]);
        assert!(run.ok, "{}", run.stderr);
        assert_eq!(run.stdout, "the database schema is up to date\n");
    }
    assert!(dir.path().join("fresh.db").exists());
    let listed = latchkey(&database, &["client", "list", "--output", "json"]).json();
    assert_eq!(listed, serde_json::json!([]));
}

/// README "private_key_jwt": keys made by openssl (SEC1 EC, PKCS#8 Ed25519, PKCS#1 RSA),
/// `public-jwks`, `client create --auth-method private_key_jwt --jwks-file`, `token
/// --private-key-file` with each key, then `client update --jwks-file` to drop keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_clients_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ec, ed, rsa) = (path("ec.pem"), path("ed.pem"), path("rsa.pem"));
    if !openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &ec,
    ]) {
        return;
    }
    assert!(openssl(&["genpkey", "-algorithm", "ed25519", "-out", &ed]));
    assert!(openssl(&["genrsa", "-traditional", "-out", &rsa, "2048"]));
    let app = crate::helpers::spawn_app_at_real_time().await;
    let database = app.database_url.clone();
    let issuer = app.issuer.clone();
    let cli = move |args: Vec<String>| {
        let database = database.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                latchkey(&database, &args)
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let jwks = cli(args(&["public-jwks", &ec, &ed, &rsa])).await;
    assert!(jwks.ok, "{}", jwks.stderr);
    let set: serde_json::Value = serde_json::from_str(&jwks.stdout).unwrap();
    let kinds: Vec<&str> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["EC", "OKP", "RSA"]);
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(
            !jwks.stdout.contains(&format!("\"{private}\"")),
            "{private}"
        );
    }
    let jwks_file = path("client.jwks.json");
    std::fs::write(&jwks_file, &jwks.stdout).unwrap();

    let created = cli(args(&[
        "client",
        "create",
        "--name",
        "batch",
        "--scope",
        "read",
        "--audience",
        "https://api.example.com",
        "--auth-method",
        "private_key_jwt",
        "--jwks-file",
        &jwks_file,
        "--output",
        "json",
    ]))
    .await
    .json();
    assert!(created.get("client_secret").is_none(), "{created}");
    assert_eq!(created["auth_method"], "private_key_jwt");
    assert_eq!(created["jwks"]["keys"].as_array().unwrap().len(), 3);
    let id = created["client_id"].as_str().unwrap().to_owned();

    let token_with = |key: &str| {
        args(&[
            "token",
            "--issuer",
            &issuer,
            "--client-id",
            &id,
            "--private-key-file",
            key,
        ])
    };
    for key in [&ec, &ed, &rsa] {
        let run = cli(token_with(key)).await;
        assert!(run.ok, "{key}: {}", run.stderr);
        assert_eq!(
            crate::helpers::decode_parts(run.stdout.trim()).1["client_id"],
            id
        );
    }

    // Rotation: register the Ed25519 key alone; the others stop working at once.
    let ed_only = path("ed.jwks.json");
    let ed_jwks = cli(args(&["public-jwks", &ed])).await;
    std::fs::write(&ed_only, &ed_jwks.stdout).unwrap();
    let updated = cli(args(&[
        "client",
        "update",
        &id,
        "--jwks-file",
        &ed_only,
        "--output",
        "json",
    ]))
    .await
    .json();
    assert_eq!(updated["jwks"]["keys"].as_array().unwrap().len(), 1);
    let refused = cli(token_with(&ec)).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("invalid_client"),
        "{}",
        refused.stderr
    );
    assert!(cli(token_with(&ed)).await.ok);

    // Private key material is refused at registration, and key clients have no secrets.
    let mut leaked: serde_json::Value = serde_json::from_str(&ed_jwks.stdout).unwrap();
    leaked["keys"][0]["d"] = serde_json::json!("AAAA");
    let leaked_file = path("leaked.json");
    std::fs::write(&leaked_file, leaked.to_string()).unwrap();
    let refused = cli(args(&[
        "client",
        "create",
        "--name",
        "x",
        "--auth-method",
        "private_key_jwt",
        "--jwks-file",
        &leaked_file,
    ]))
    .await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("private key material"),
        "{}",
        refused.stderr
    );
    let no_keys = cli(args(&[
        "client",
        "create",
        "--name",
        "x",
        "--auth-method",
        "private_key_jwt",
    ]))
    .await;
    assert!(
        !no_keys.ok && no_keys.stderr.contains("--jwks-file"),
        "{}",
        no_keys.stderr
    );
    let no_secret = cli(args(&["client", "secret", "rotate", &id])).await;
    assert!(
        !no_secret.ok && no_secret.stderr.contains("private_key_jwt"),
        "{}",
        no_secret.stderr
    );
}
