//! `latchkey client import` and `latchkey client export`, run as a user runs them: a
//! 1,000-line file, bad lines, kept ids and secrets, standard input, and an export that imports
//! back.

use std::io::Write as _;
use std::process::{Command, Stdio};

use latchkey_client::PrivateKey;
use latchkey_proto::SigningAlg;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, token_status};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<Value> {
        assert!(self.ok, "command failed: {}", self.stderr);
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// Runs `latchkey --database DB args...` with `stdin` on its standard input, on a blocking
/// thread (the in-process server keeps running meanwhile).
async fn latchkey(database: &str, args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(BIN);
    command
        .arg("--database")
        .arg(database)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

const KEPT_ID: &str = "legacy-billing-sync";
const KEPT_SECRET: &str = "kept-secret-from-the-old-server-0123456789";

/// 1,000 clients: generated secrets, one kept id and secret, one disabled, one with a key.
fn thousand_lines() -> String {
    let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let mut lines = Vec::new();
    for i in 1..=1000 {
        let line = match i {
            10 => json!({
                "client_id": KEPT_ID,
                "client_secret": KEPT_SECRET,
                "name": "billing sync",
                "scope": "invoices:read",
                "audience": ["https://api.example.com"],
            }),
            20 => json!({
                "name": "paused",
                "audience": ["https://api.example.com"],
                "enabled": false,
            }),
            30 => json!({
                "name": "signer",
                "audience": ["https://api.example.com"],
                "auth_method": "private_key_jwt",
                "jwks": { "keys": [key.public_jwk()] },
            }),
            _ => json!({
                "name": format!("svc-{i}"),
                "scope": "read write",
                "audience": ["https://api.example.com"],
                "token_ttl_seconds": 600,
            }),
        };
        lines.push(line.to_string());
    }
    lines.join("\n") + "\n"
}

// Multi-threaded: the CLI waits for the in-process server to confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_import_in_order_and_work_at_once() {
    let app = spawn_app().await;
    let db = app.database_url.as_str();
    // The server has been asked for the kept id before it existed: it remembers it as unknown.
    assert_eq!(
        token_status(&app.http, &app.base, KEPT_ID, KEPT_SECRET).await,
        401
    );

    let file = app.dir.path().join("clients.jsonl");
    std::fs::write(&file, thousand_lines()).unwrap();
    let run = latchkey(db, &["client", "import", file.to_str().unwrap()], "").await;
    let out = run.lines();
    assert_eq!(out.len(), 1000);
    for (i, line) in out.iter().enumerate() {
        assert_eq!(line["line"], i + 1, "input order");
        let generated = !matches!(i + 1, 10 | 30);
        assert_eq!(
            line.get("client_secret").is_some(),
            generated,
            "line {}: a secret only when one was generated: {line}",
            i + 1
        );
    }
    assert_eq!(out[9]["client_id"], KEPT_ID);
    assert!(
        run.stderr.contains("imported 1000 clients"),
        "{}",
        run.stderr
    );

    // Every server confirmed before the command returned: no waiting here.
    assert_eq!(
        token_status(&app.http, &app.base, KEPT_ID, KEPT_SECRET).await,
        200
    );
    assert_eq!(
        token_status(
            &app.http,
            &app.base,
            KEPT_ID,
            "wrong-secret-of-the-right-length-0000"
        )
        .await,
        401
    );
    let first = &out[0];
    assert_eq!(
        token_status(
            &app.http,
            &app.base,
            first["client_id"].as_str().unwrap(),
            first["client_secret"].as_str().unwrap()
        )
        .await,
        200
    );
    let paused = &out[19];
    assert_eq!(
        token_status(
            &app.http,
            &app.base,
            paused["client_id"].as_str().unwrap(),
            paused["client_secret"].as_str().unwrap()
        )
        .await,
        401,
        "imported disabled"
    );

    // The export writes the same format, without secrets, and imports back elsewhere.
    let exported = latchkey(db, &["client", "export"], "").await;
    let clients = exported.lines();
    assert_eq!(clients.len(), 1000);
    assert!(clients.iter().all(|c| c.get("client_secret").is_none()));
    let signer = clients
        .iter()
        .find(|c| c["client_id"] == out[29]["client_id"])
        .unwrap();
    assert_eq!(signer["auth_method"], "private_key_jwt");
    assert_eq!(signer["jwks"]["keys"].as_array().unwrap().len(), 1);
    let kept = clients.iter().find(|c| c["client_id"] == KEPT_ID).unwrap();
    assert_eq!(kept["scope"], "invoices:read");

    let other = tempfile::tempdir().unwrap();
    let other_db = format!("sqlite://{}", other.path().join("other.db").display());
    let again = latchkey(&other_db, &["client", "import", "-"], &exported.stdout).await;
    let again = again.lines();
    assert_eq!(again.len(), 1000);
    for (before, after) in clients.iter().zip(&again) {
        assert_eq!(before["client_id"], after["client_id"], "ids kept");
    }
    let round_trip = latchkey(&other_db, &["client", "export"], "").await.lines();
    for (before, after) in clients.iter().zip(&round_trip) {
        for field in [
            "client_id",
            "name",
            "scope",
            "audience",
            "token_ttl_seconds",
            "auth_method",
            "grant_types",
            "enabled",
            "can_introspect",
            "token_format",
            "jwks",
        ] {
            assert_eq!(before.get(field), after.get(field), "{field} of {before}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_named_and_nothing_is_imported() {
    let app = spawn_app().await;
    let db = app.database_url.as_str();
    let good = json!({ "name": "ok", "audience": ["https://api.example.com"] }).to_string();
    let kept = json!({ "client_id": "dup", "name": "a" }).to_string();
    let lines = [
        good.clone(),                                                         // 1
        "{not json".to_owned(),                                               // 2
        json!({ "name": "x", "scope": "bad\"scope" }).to_string(),            // 3
        String::new(),                                                        // 4: blank, skipped
        json!({ "name": "x", "token_ttl_seconds": 5 }).to_string(),           // 5
        json!({ "name": "x", "client_secret": "short" }).to_string(),         // 6
        json!({ "name": "x", "auth_method": "private_key_jwt" }).to_string(), // 7
        kept.clone(),                                                         // 8
        kept,                                                                 // 9: same id
        json!({ "name": "x", "colour": "blue" }).to_string(),                 // 10: unknown field
        json!({ "client_id": "billing:sync", "name": "x" }).to_string(),      // 11: never looked up
        good,                                                                 // 12
    ];
    let run = latchkey(db, &["client", "import", "-"], &(lines.join("\n") + "\n")).await;
    assert!(!run.ok);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    for bad in [2, 3, 5, 6, 7, 9, 10, 11] {
        assert!(
            run.stderr.contains(&format!("line {bad}: ")),
            "line {bad} named: {}",
            run.stderr
        );
    }
    for good in [1, 4, 8, 12] {
        assert!(
            !run.stderr.contains(&format!("line {good}: ")),
            "line {good} is fine: {}",
            run.stderr
        );
    }
    assert!(
        run.stderr
            .contains("8 of 11 lines are bad; nothing was imported"),
        "{}",
        run.stderr
    );
    let exported = latchkey(db, &["client", "export"], "").await;
    assert!(
        exported.ok && exported.stdout.is_empty(),
        "nothing imported"
    );

    // An id that is registered already is a bad line too.
    let first = latchkey(
        db,
        &["client", "import", "-"],
        &json!({ "client_id": "taken", "name": "a" }).to_string(),
    )
    .await;
    assert_eq!(first.lines().len(), 1);
    let second = latchkey(
        db,
        &["client", "import", "-"],
        &json!({ "client_id": "taken", "name": "b" }).to_string(),
    )
    .await;
    assert!(!second.ok);
    assert!(
        second
            .stderr
            .contains("line 1: a client with client_id \"taken\" is registered already"),
        "{}",
        second.stderr
    );

    // --from-line starts later in the file.
    let file = app.dir.path().join("part.jsonl");
    std::fs::write(&file, "{broken\n{\"name\":\"late\"}\n").unwrap();
    let late = latchkey(
        db,
        &[
            "client",
            "import",
            "--from-line",
            "2",
            file.to_str().unwrap(),
        ],
        "",
    )
    .await;
    let late = late.lines();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["line"], 2);
}
