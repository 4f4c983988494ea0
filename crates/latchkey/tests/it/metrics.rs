//! `/metrics` through the real server: an independent Prometheus parser reads it, and the
//! counts are exact.

use latchkey_server::{ManualClock, ServerConfig, store};
use serde_json::Value;

use crate::helpers::{T0, basic, server_config, spawn_with_config};

/// The samples of `family` whose labels include `labels`, summed.
fn value(families: &Value, family: &str, labels: &[(&str, &str)]) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"))
        .iter()
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .filter(|s| s["name"] == family || s["name"] == format!("{family}_total"))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_parser_reads_exact_metrics() {
    if !crate::interop::python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = store::connect(&database_url).await.unwrap();
    let config = ServerConfig {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..server_config(latchkey_proto::SigningAlg::Es256, None)
    };
    let app = spawn_with_config(config, database_url, dir, store, ManualClock::new(T0)).await;
    let metrics_url = app.metrics_url.clone().unwrap();
    // A name the text format must escape.
    let client = app.client(|c| c.name = "ops \"blue\" \\ team".into()).await;
    for _ in 0..5 {
        assert_eq!(
            app.token_basic(&client, "grant_type=client_credentials")
                .await
                .status(),
            200
        );
    }
    let wrong = basic(client.id(), "wrong-secret-wrong-secret");
    for _ in 0..2 {
        let status = app
            .form_status("/oauth2/token", &wrong, "grant_type=client_credentials")
            .await;
        assert_eq!(status, 401);
    }
    // Per-client issuance comes with the usage flush.
    app.usage.flush(app.store.as_ref(), T0 + 10).await.unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/parse_metrics.py"
    );
    let output = tokio::process::Command::new("python3")
        .args([script, &metrics_url])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        parsed["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let families = &parsed["families"];
    let requests = "latchkey_token_requests";
    assert_eq!(families[requests]["type"], "counter");
    assert_eq!(value(families, requests, &[("outcome", "issued")]), 5.0);
    assert_eq!(
        value(families, requests, &[("outcome", "invalid_client")]),
        2.0
    );
    assert_eq!(
        value(families, requests, &[("outcome", "invalid_scope")]),
        0.0
    );
    let issued = "latchkey_tokens_issued";
    assert_eq!(
        value(families, issued, &[("alg", "ES256"), ("format", "jwt")]),
        5.0
    );
    // Latency is a histogram (buckets, not a summary), per endpoint.
    let duration = "latchkey_http_request_duration_seconds";
    assert_eq!(families[duration]["type"], "histogram");
    let token_count: f64 = families[duration]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == format!("{duration}_count") && s["labels"]["endpoint"] == "token")
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(token_count, 7.0);
    let buckets = families[duration]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == format!("{duration}_bucket") && s["labels"]["endpoint"] == "token")
        .count();
    assert!(buckets >= 15, "{buckets} buckets");
    assert!(
        value(
            families,
            "latchkey_client_cache_lookups",
            &[("result", "hit")]
        ) >= 6.0
    );
    assert_eq!(
        families["latchkey_change_feed_lag_seconds"]["type"],
        "gauge"
    );
    // Per client, by id and name, and every client beyond the top under `other`.
    let per_client = "latchkey_client_tokens_issued";
    assert_eq!(families[per_client]["type"], "counter");
    assert_eq!(
        value(
            families,
            per_client,
            &[
                ("client_id", client.id()),
                ("client_name", "ops \"blue\" \\ team")
            ]
        ),
        5.0
    );
    assert_eq!(value(families, per_client, &[("client_id", "other")]), 0.0);
    assert_eq!(families["latchkey_not_caching_flags"]["type"], "counter");
    // Database errors by kind (none here; the fault tests make some).
    assert_eq!(families["latchkey_database_errors"]["type"], "counter");
    let kinds = families["latchkey_database_errors"]["samples"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(kinds, 4);

    // Every metric the Grafana dashboard queries exists.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana/latchkey.json"
    ))
    .unwrap();
    let mut queried = 0;
    for (at, _) in dashboard.match_indices("latchkey_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_total"))
            .unwrap_or(&name);
        assert!(
            families.get(family).is_some(),
            "the dashboard queries {name}, which /metrics does not have"
        );
        queried += 1;
    }
    assert!(queried >= 9, "{queried}");
}
