//! The audit trail through the CLI: every change a user makes is listed with who made it and
//! what changed, and never a secret.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// Runs `latchkey --database DB ARGS --output json` as the OS user `user`; the parsed output.
fn latchkey_as(user: &str, database: &str, args: &[&str]) -> Value {
    let output = Command::new(BIN)
        .env("USER", user)
        .args(["--database", database, "--output", "json"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn every_change_through_the_cli_is_listed_with_its_user_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    let db = db.as_str();
    let created = latchkey_as(
        "alice",
        db,
        &["client", "create", "--name", "billing", "--scope", "read"],
    );
    let id = created["client_id"].as_str().unwrap().to_owned();
    let first_secret = created["client_secret"].as_str().unwrap().to_owned();
    let other = latchkey_as("alice", db, &["client", "create", "--name", "other"]);
    latchkey_as("bob", db, &["client", "disable", &id]);
    latchkey_as(
        "bob",
        db,
        &["client", "update", &id, "--name", "billing-v2"],
    );
    let added = latchkey_as("carol", db, &["client", "secret", "add", &id]);
    let second_secret = added["client_secret"].as_str().unwrap().to_owned();
    let secret_id = added["secret_id"].as_str().unwrap().to_owned();
    latchkey_as(
        "carol",
        db,
        &["client", "secret", "revoke", &id, &secret_id],
    );
    latchkey_as("dave", db, &["client", "delete", &id]);

    let listed = latchkey_as("eve", db, &["audit", "list", "--client", &id]);
    let events = listed.as_array().unwrap();
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("cli:alice", "client.create"),
            ("cli:bob", "client.update"),
            ("cli:bob", "client.update"),
            ("cli:carol", "secret.add"),
            ("cli:carol", "secret.revoke"),
            ("cli:dave", "client.delete"),
        ]
    );
    assert!(events.iter().all(|e| e["target"] == id.as_str()));
    assert_eq!(events[0]["changes"]["name"]["after"], "billing");
    // Disabling also revokes the client's tokens: both fields, before and after.
    assert_eq!(
        events[1]["changes"]["enabled"],
        serde_json::json!({ "before": true, "after": false })
    );
    assert_eq!(
        events[1]["changes"]["token_epoch"],
        serde_json::json!({ "before": 0, "after": 1 })
    );
    assert_eq!(
        events[2]["changes"],
        serde_json::json!({ "name": { "before": "billing", "after": "billing-v2" } })
    );
    assert_eq!(
        events[3]["changes"]["secret_id"]["after"],
        secret_id.as_str()
    );
    assert_eq!(events[5]["changes"]["name"]["before"], "billing-v2");

    // Never a secret, in any event.
    let everything = latchkey_as("eve", db, &["audit", "list"]);
    let text = everything.to_string();
    for secret in [&first_secret, &second_secret] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the audit trail"
        );
    }
    assert!(!text.contains("hash"), "{text}");
    // The other client's creation is there too; --client left it out.
    assert_eq!(everything.as_array().unwrap().len(), events.len() + 1);
    assert!(text.contains(other["client_id"].as_str().unwrap()));
    assert_eq!(
        latchkey_as("eve", db, &["audit", "list", "--limit", "2"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Events are from now: all within the last hour.
    assert_eq!(
        latchkey_as("eve", db, &["audit", "list", "--since", "1h"])
            .as_array()
            .unwrap()
            .len(),
        events.len() + 1
    );
}

/// Changes that race each record exactly what they replaced: each is held to the version it
/// read, and read again when another came in between, so the trail's "before" values chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_changes_each_record_what_they_replaced() {
    use latchkey_server::model::{Actor, ClientUpdate};
    use latchkey_server::service::admin;

    let app = crate::helpers::spawn_app().await;
    let client = app.client(|_| {}).await;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (store, clock, id) = (app.store.clone(), app.clock.clone(), client.id().to_owned());
        racers.spawn(async move {
            let update = ClientUpdate {
                name: Some(format!("name {i}")),
                ..ClientUpdate::default()
            };
            admin::update_client(store.as_ref(), &clock, &Actor::Cli("t".into()), &id, update)
                .await
                .map(|applied| applied.value.name)
        });
    }
    for result in racers.join_all().await {
        result.unwrap();
    }
    let events = app
        .store
        .audit_events(&latchkey_server::store::AuditQuery {
            since: 0,
            target: Some(client.id().to_owned()),
            after_seq: 0,
            limit: 100,
        })
        .await
        .unwrap();
    let names: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e.action == "client.update")
        .map(|e| {
            (
                e.changes["name"]["before"].clone(),
                e.changes["name"]["after"].clone(),
            )
        })
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(names[0].0, "test-client");
    for pair in names.windows(2) {
        assert_eq!(pair[1].0, pair[0].1, "{names:?}");
    }
    // A change that changes nothing is not made: no event, no new version.
    let before = app.store.find_client(client.id()).await.unwrap().unwrap();
    let same = ClientUpdate {
        name: Some(before.name.clone()),
        enabled: Some(true),
        ..ClientUpdate::default()
    };
    admin::update_client(
        app.store.as_ref(),
        &app.clock,
        &Actor::Cli("t".into()),
        client.id(),
        same,
    )
    .await
    .unwrap();
    let after = app.store.find_client(client.id()).await.unwrap().unwrap();
    assert_eq!(after.version, before.version);
    let all = app
        .store
        .audit_events(&latchkey_server::store::AuditQuery {
            since: 0,
            target: Some(client.id().to_owned()),
            after_seq: 0,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), events.len());
}
