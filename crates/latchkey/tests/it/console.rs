//! The web console: its files and headers through the real server, and the whole of it in a
//! real browser (headless Debian Chromium driven by playwright-core, `tests/interop/console.mjs`)
//! against a real server: sign in (a wrong secret first), create a client and see its secret
//! once, get tokens with it and see them in its usage chart, rotate its secret, disable it, and
//! read the keys and the audit trail. Screenshots go to `target/tmp/console-screenshots`.
//! `.ci/run` installs Chromium and playwright-core; elsewhere the browser test says why it
//! skips, and under CI it fails.

use std::path::Path;
use std::time::Duration;

use latchkey_server::{ManualClock, ServerConfig, store};

use crate::helpers::{cli_json, server_config, spawn_with_config};

const INTEROP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

/// The Chromium to drive: `$CHROMIUM`, else Debian's.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn browser_ready() -> bool {
    let driver = Path::new(INTEROP_DIR)
        .join("node_modules/playwright-core")
        .is_dir();
    let browser = Path::new(&chromium()).exists();
    if driver && browser {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have Chromium and playwright-core installed (see .ci/run)"
    );
    eprintln!(
        "SKIPPED console browser test: needs {} (apt-get install chromium) and `npm ci --prefix \
         crates/latchkey/tests/interop`",
        chromium()
    );
    false
}

/// A server at the real time (the browser reads the real clock for its charts) that writes
/// usage counts every 200 ms, with `config` edited.
async fn console_app(edit: impl FnOnce(&mut ServerConfig)) -> crate::helpers::TestApp {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = store::connect(&database_url).await.unwrap();
    let mut config = ServerConfig {
        usage_flush_interval: Duration::from_millis(200),
        ..server_config(latchkey_proto::SigningAlg::Es256, None)
    };
    edit(&mut config);
    #[allow(clippy::disallowed_methods)] // The browser reads the real clock too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    spawn_with_config(
        config,
        database_url,
        dir,
        store,
        ManualClock::new(now as i64),
    )
    .await
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let app = console_app(|_| {}).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = http.get(app.url("/console")).send().await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "console/");
    let followed = reqwest::get(app.url("/console")).await.unwrap();
    assert_eq!(followed.url().path(), "/console/");
    for (path, media) in [
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let response = http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(media),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
        let body = response.text().await.unwrap();
        assert!(body.len() > 100, "{path} is empty");
        for remote in [
            "src=\"http",
            "href=\"http",
            "url(http",
            "@import",
            "fetch('http",
        ] {
            assert!(
                !body.contains(remote),
                "{path} loads nothing from elsewhere"
            );
        }
    }

    // Off, it is not there.
    let off = console_app(|c| c.console = false).await;
    let response = http.get(off.url("/console/")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_uses_the_console_in_a_real_browser() {
    if !browser_ready() {
        return;
    }
    let _alone = crate::helpers::UNDER_LOAD.lock().await;
    let app = console_app(|_| {}).await;
    let admin = cli_json(
        &app.database_url,
        &[],
        &["client", "create", "--name", "ops", "--admin"],
    );
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(Path::new(INTEROP_DIR).join("console.mjs"))
            .args([
                app.base.as_str(),
                admin["client_id"].as_str().unwrap(),
                admin["client_secret"].as_str().unwrap(),
                screenshots.to_str().unwrap(),
            ])
            .env("CHROMIUM", chromium())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser test finished within 3 minutes")
    .unwrap();
    assert!(
        output.status.success(),
        "console.mjs failed (screenshots in {}):\n{}\n{}",
        screenshots.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "console screenshots in {}: {}",
        screenshots.display(),
        String::from_utf8_lossy(&output.stdout)
    );
}
