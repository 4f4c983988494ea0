//! Every `Store` operation, with the same expectations on every backend.

use std::collections::HashSet;
use std::sync::Arc;

use latchkey_proto::{Confirmation, SigningAlg, TokenFormat};
use latchkey_server::model::audit::action;
use latchkey_server::model::{
    Actor, AuditEntry, ClientRecord, ClientUpdate, Credential, Federation, OpaqueTokenRecord,
    Registration, RegistrationToken, SecretMethod, SecretRecord, TlsSubject,
};
use latchkey_server::secret::SecretHash;
use latchkey_server::store::{
    AuditQuery, Change, KeyState, RotationOutcome, RotationPlan, SecretAdded, StoreError, StoredKey,
};

use crate::backends::each_backend;

const T0: i64 = 1_767_225_600;

/// The audit entry the suite's changes carry.
fn audit() -> AuditEntry {
    AuditEntry {
        at: T0,
        actor: Actor::Cli("test".into()),
        action: action::CLIENT_UPDATE,
        target: None,
        changes: serde_json::json!({ "by": "the storage suite" }),
    }
}

fn secret(id: &str, created_at: i64, expires_at: Option<i64>) -> SecretRecord {
    SecretRecord {
        secret_id: id.into(),
        hash: SecretHash::of(id.as_bytes()),
        created_at,
        expires_at,
    }
}

fn client(id: &str, created_at: i64) -> ClientRecord {
    ClientRecord {
        scope: vec!["read".into(), "write".into()],
        audience: vec!["https://api.example.com".into()],
        token_ttl_seconds: 900,
        secrets: vec![secret(&format!("{id}-s1"), created_at, None)],
        ..ClientRecord::new(
            id.into(),
            format!("name of {id}"),
            Credential::Secret(SecretMethod::Basic),
            created_at,
        )
    }
}

fn opaque(jti: &str, client_id: &str, expires_at: i64) -> OpaqueTokenRecord {
    OpaqueTokenRecord {
        token_hash: SecretHash::of(jti.as_bytes()),
        jti: jti.into(),
        client_id: client_id.into(),
        scope: vec!["read".into()],
        audience: vec!["https://api.example.com".into()],
        issued_at: T0,
        expires_at,
        epoch: 0,
        cnf: None,
    }
}

fn key(kid: &str, state: KeyState, created_at: i64) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        alg: SigningAlg::Es256,
        state,
        private_key: format!("pkcs8 of {kid}").into_bytes(),
        encryption: None,
        public_jwk: format!(r#"{{"kid":"{kid}"}}"#),
        created_at,
        activated_at: (state == KeyState::Current).then_some(created_at),
        retired_at: None,
        removed_at: None,
    }
}

#[tokio::test]
async fn clients_are_created_found_listed_and_unique() {
    each_backend(|store, backend| async move {
        store.ready().await.unwrap();
        assert_eq!(
            store.find_client("nobody").await.unwrap(),
            None,
            "{backend}"
        );
        let a = client("lk_a", T0);
        let b = client("lk_b", T0 + 1);
        store.create_client(&audit(), &b).await.unwrap();
        store.create_client(&audit(), &a).await.unwrap();
        assert_eq!(
            store.find_client("lk_a").await.unwrap().as_ref(),
            Some(&a),
            "{backend}"
        );
        let listed: Vec<String> = store
            .list_clients()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(listed, ["lk_a", "lk_b"], "ordered by creation: {backend}");
        assert!(
            matches!(
                store.create_client(&audit(), &a).await,
                Err(StoreError::Conflict(_))
            ),
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn registered_public_keys_are_stored_and_replaced() {
    each_backend(|store, backend| async move {
        let mut keyed = client("lk_k", T0);
        keyed.credential = Credential::Keys(r#"{"keys":[{"kid":"one"}]}"#.into());
        keyed.secrets.clear();
        store.create_client(&audit(), &keyed).await.unwrap();
        assert_eq!(
            store.find_client("lk_k").await.unwrap().as_ref(),
            Some(&keyed),
            "{backend}"
        );
        let two = Credential::Keys(r#"{"keys":[{"kid":"two"}]}"#.into());
        let rotated = ClientUpdate {
            credential: Some(two.clone()),
            ..ClientUpdate::default()
        };
        let updated = store
            .update_client(&audit(), "lk_k", &rotated, T0 + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.credential, two);
        // Other updates leave the keys alone.
        let renamed = ClientUpdate {
            name: Some("x".into()),
            ..ClientUpdate::default()
        };
        let updated = store
            .update_client(&audit(), "lk_k", &renamed, T0 + 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.credential, two, "{backend}");
        // Keys come from one place: a jwks_uri replaces registered keys, and back.
        let by_uri = ClientUpdate {
            credential: Some(Credential::JwksUri("https://client.example/jwks".into())),
            ..ClientUpdate::default()
        };
        let updated = store
            .update_client(&audit(), "lk_k", &by_uri, T0 + 3)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                updated.credential.registered_jwks(),
                updated.credential.jwks_uri()
            ),
            (None, Some("https://client.example/jwks")),
            "{backend}"
        );
        assert_eq!(store.find_client("lk_k").await.unwrap().unwrap(), updated);
        let updated = store
            .update_client(&audit(), "lk_k", &rotated, T0 + 4)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                updated.credential.registered_jwks(),
                updated.credential.jwks_uri()
            ),
            (Some(r#"{"keys":[{"kid":"two"}]}"#), None),
            "{backend}"
        );
        // Federated identity replaces both, is read back whole, and is cleared by keys.
        let federation = Federation {
            issuer: "https://k8s.example".into(),
            subject: "system:serviceaccount:jobs:batch".into(),
            audience: Some("https://aud.example".into()),
            max_token_age: Some(7200),
        };
        for (audience, max_token_age) in [
            (Some("https://aud.example".to_owned()), Some(7200)),
            (None, None),
        ] {
            let federated = ClientUpdate {
                credential: Some(Credential::Federation(Federation {
                    audience,
                    max_token_age,
                    ..federation.clone()
                })),
                ..ClientUpdate::default()
            };
            let updated = store
                .update_client(&audit(), "lk_k", &federated, T0 + 5)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                Some(&updated.credential),
                federated.credential.as_ref(),
                "{backend}"
            );
            assert_eq!(
                (
                    updated.credential.registered_jwks(),
                    updated.credential.jwks_uri()
                ),
                (None, None)
            );
            assert_eq!(
                Some(store.find_client("lk_k").await.unwrap().unwrap().credential),
                federated.credential,
                "{backend}"
            );
        }
        let updated = store
            .update_client(&audit(), "lk_k", &by_uri, T0 + 6)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.credential.federation(), None, "{backend}");
        let mut created = client("lk_f", T0);
        created.secrets.clear();
        created.credential = Credential::Federation(federation);
        store.create_client(&audit(), &created).await.unwrap();
        assert_eq!(store.find_client("lk_f").await.unwrap(), Some(created));
        // A tls_client_auth client's certificate subject is read back, and replaced whole.
        let mut mtls = client("lk_t", T0);
        mtls.secrets.clear();
        mtls.credential = Credential::TlsSubject(
            TlsSubject::parse("tls_client_auth_subject_dn", "CN=billing,O=Example").unwrap(),
        );
        store.create_client(&audit(), &mtls).await.unwrap();
        assert_eq!(
            store.find_client("lk_t").await.unwrap().as_ref(),
            Some(&mtls)
        );
        let moved = ClientUpdate {
            credential: Some(Credential::TlsSubject(TlsSubject::SanIp(
                "10.1.2.3".parse().unwrap(),
            ))),
            ..ClientUpdate::default()
        };
        let updated = store
            .update_client(&audit(), "lk_t", &moved, T0 + 7)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            Some(&updated.credential),
            moved.credential.as_ref(),
            "{backend}"
        );
        assert_eq!(store.find_client("lk_t").await.unwrap(), Some(updated));
        // A self_signed_tls_client_auth client's certificates are a JWK Set of their own kind.
        let mut self_signed = client("lk_s", T0);
        self_signed.secrets.clear();
        self_signed.credential = Credential::Certificates(r#"{"keys":[{"x5c":["AA=="]}]}"#.into());
        store.create_client(&audit(), &self_signed).await.unwrap();
        assert_eq!(
            store.find_client("lk_s").await.unwrap(),
            Some(self_signed.clone())
        );
        // A credential of another method is refused and changes nothing: the row would not
        // read back (self-signed certificates are not private_key_jwt keys, nor a secret).
        for (id, other) in [
            ("lk_s", two.clone()),
            ("lk_k", Credential::Secret(SecretMethod::Post)),
            (
                "lk_t",
                Credential::JwksUri("https://client.example/jwks".into()),
            ),
        ] {
            let before = store.find_client(id).await.unwrap();
            let wrong = ClientUpdate {
                credential: Some(other),
                ..ClientUpdate::default()
            };
            assert!(
                matches!(
                    store.update_client(&audit(), id, &wrong, T0 + 8).await,
                    Err(StoreError::Conflict(_))
                ),
                "{backend} {id}"
            );
            assert_eq!(store.find_client(id).await.unwrap(), before, "{backend}");
        }
        assert_eq!(store.find_client("lk_s").await.unwrap(), Some(self_signed));
    })
    .await;
}

#[tokio::test]
async fn updates_change_only_what_they_name_and_move_the_generation() {
    each_backend(|store, backend| async move {
        store
            .create_client(&audit(), &client("lk_a", T0))
            .await
            .unwrap();
        store
            .insert_opaque_token(&opaque("j1", "lk_a", T0 + 900))
            .await
            .unwrap();
        let before = store.sync_point().await.unwrap().generation;
        let update = ClientUpdate {
            name: Some("renamed".into()),
            scope: Some(vec!["read".into()]),
            enabled: Some(false),
            can_introspect: Some(true),
            token_format: Some(TokenFormat::Opaque),
            revoke_tokens: true,
            ..ClientUpdate::default()
        };
        let updated = store
            .update_client(&audit(), "lk_a", &update, T0 + 5)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.name, "renamed", "{backend}");
        assert_eq!(updated.scope, ["read"]);
        assert_eq!(updated.audience, ["https://api.example.com"], "unchanged");
        assert!(!updated.enabled && updated.can_introspect);
        assert_eq!(updated.token_format, TokenFormat::Opaque);
        assert_eq!(
            updated.token_epoch, 1,
            "revoke_tokens moves the epoch: {backend}"
        );
        assert_eq!(updated.updated_at, T0 + 5);
        let gone = store
            .find_opaque_token(&SecretHash::of(b"j1"))
            .await
            .unwrap();
        assert_eq!(gone, None, "revoke_tokens deletes opaque tokens: {backend}");
        assert!(
            store.sync_point().await.unwrap().generation > before,
            "{backend}"
        );
        assert_eq!(
            store
                .update_client(&audit(), "nobody", &ClientUpdate::default(), T0)
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn secrets_are_added_within_the_limit_listed_used_and_revoked() {
    each_backend(|store, backend| async move {
        store
            .create_client(&audit(), &client("lk_a", T0))
            .await
            .unwrap();
        let added = store
            .add_secret(
                &audit(),
                "lk_a",
                &secret("s2", T0 + 1, None),
                Some(T0 + 100),
                3,
                T0 + 1,
            )
            .await
            .unwrap();
        assert_eq!(added, SecretAdded::Added, "{backend}");
        let record = store.find_client("lk_a").await.unwrap().unwrap();
        let first = record
            .secrets
            .iter()
            .find(|s| s.secret_id == "lk_a-s1")
            .unwrap();
        assert_eq!(
            first.expires_at,
            Some(T0 + 100),
            "the overlap ends the others: {backend}"
        );
        assert_eq!(
            store
                .add_secret(
                    &audit(),
                    "lk_a",
                    &secret("s3", T0 + 2, None),
                    None,
                    3,
                    T0 + 2
                )
                .await
                .unwrap(),
            SecretAdded::Added
        );
        assert_eq!(
            store
                .add_secret(
                    &audit(),
                    "lk_a",
                    &secret("s4", T0 + 3, None),
                    None,
                    3,
                    T0 + 3
                )
                .await
                .unwrap(),
            SecretAdded::TooMany,
            "{backend}"
        );
        // Once the first one has expired, there is room again.
        assert_eq!(
            store
                .add_secret(
                    &audit(),
                    "lk_a",
                    &secret("s4", T0 + 200, None),
                    None,
                    3,
                    T0 + 200
                )
                .await
                .unwrap(),
            SecretAdded::Added,
            "{backend}"
        );
        assert_eq!(
            store
                .add_secret(&audit(), "nobody", &secret("s5", T0, None), None, 3, T0)
                .await
                .unwrap(),
            SecretAdded::NoSuchClient
        );
        store
            .record_secret_use(&[("s2".into(), T0 + 50), ("s3".into(), T0 + 60)])
            .await
            .unwrap();
        store
            .record_secret_use(&[("s2".into(), T0 + 40)])
            .await
            .unwrap();
        let listed = store.list_secrets("lk_a").await.unwrap().unwrap();
        let s2 = listed.iter().find(|s| s.secret_id == "s2").unwrap();
        assert_eq!(
            s2.last_used_at,
            Some(T0 + 50),
            "never moves back: {backend}"
        );
        assert!(
            store
                .revoke_secret(&audit(), "lk_a", "s2", T0 + 70)
                .await
                .unwrap()
        );
        assert!(
            !store
                .revoke_secret(&audit(), "lk_a", "s2", T0 + 71)
                .await
                .unwrap(),
            "{backend}"
        );
        assert!(
            !store
                .revoke_secret(&audit(), "lk_a", "nope", T0)
                .await
                .unwrap()
        );
        let listed = store.list_secrets("lk_a").await.unwrap().unwrap();
        assert!(listed.iter().all(|s| s.secret_id != "s2"), "{backend}");
        assert_eq!(store.list_secrets("nobody").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn concurrent_secret_additions_respect_the_limit() {
    each_backend(|store, backend| async move {
        store
            .create_client(&audit(), &client("lk_a", T0))
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..12 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                store
                    .add_secret(
                        &audit(),
                        "lk_a",
                        &secret(&format!("c{i}"), T0 + 1, None),
                        None,
                        5,
                        T0 + 1,
                    )
                    .await
            });
        }
        let added = tasks
            .join_all()
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(SecretAdded::Added)))
            .count();
        assert_eq!(added, 4, "5 live at most, one existed: {backend}");
        let live = store
            .find_client("lk_a")
            .await
            .unwrap()
            .unwrap()
            .secrets
            .len();
        assert_eq!(live, 5, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn deleting_a_client_takes_its_secrets_and_tokens() {
    each_backend(|store, backend| async move {
        store
            .create_client(&audit(), &client("lk_a", T0))
            .await
            .unwrap();
        store
            .insert_opaque_token(&opaque("j1", "lk_a", T0 + 900))
            .await
            .unwrap();
        assert!(
            store.delete_client(&audit(), "lk_a", None).await.unwrap(),
            "{backend}"
        );
        assert!(!store.delete_client(&audit(), "lk_a", None).await.unwrap());
        assert_eq!(store.find_client("lk_a").await.unwrap(), None);
        assert_eq!(
            store
                .find_opaque_token(&SecretHash::of(b"j1"))
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn servers_acknowledge_generations() {
    each_backend(|store, backend| async move {
        let generation = store.sync_point().await.unwrap().generation;
        store
            .acknowledge_generation("server-1", generation)
            .await
            .unwrap();
        store
            .acknowledge_generation("server-2", generation)
            .await
            .unwrap();
        store
            .create_client(&audit(), &client("lk_a", T0))
            .await
            .unwrap();
        let next = store.sync_point().await.unwrap().generation;
        assert!(next > generation);
        let mut behind = store.servers_behind(next).await.unwrap();
        behind.sort();
        assert_eq!(behind, ["server-1", "server-2"], "{backend}");
        store
            .acknowledge_generation("server-1", next)
            .await
            .unwrap();
        assert_eq!(store.servers_behind(next).await.unwrap(), ["server-2"]);
        store.forget_server("server-2").await.unwrap();
        assert!(
            store.servers_behind(next).await.unwrap().is_empty(),
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn clients_are_created_in_bulk_and_read_in_pages() {
    each_backend(|store, backend| async move {
        let start = store.sync_point().await.unwrap().generation;
        // More than one statement's worth of clients (500) and of secrets (2,000).
        let batch: Vec<ClientRecord> = (0..1_100)
            .map(|i| {
                let mut c = client(&format!("lk_{i:04}"), T0);
                c.secrets.push(secret(&format!("s2_{i:04}"), T0, None));
                c
            })
            .collect();
        store.create_clients(&audit(), &batch).await.unwrap();
        // One feed entry for the batch.
        let entries = store.changes_since(start, 10).await.unwrap();
        assert_eq!(entries.len(), 1, "{backend}");
        assert_eq!(entries[0].change, Change::NewClients, "{backend}");
        // All or nothing: a batch with one taken id stores none of its clients.
        let clash = vec![client("lk_new", T0), client("lk_0003", T0)];
        assert!(matches!(
            store.create_clients(&audit(), &clash).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(
            store.find_client("lk_new").await.unwrap().is_none(),
            "{backend}"
        );

        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = store.clients_after(&after, 300).await.unwrap();
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 300);
            after = last.client_id.clone();
            seen.extend(page);
        }
        assert_eq!(
            seen, batch,
            "{backend}: every client once, in id order, with its secrets"
        );
    })
    .await;
}

/// An audit entry by `actor` at `at` about `target`.
fn entry(at: i64, actor: Actor, action: &'static str, target: &str) -> AuditEntry {
    AuditEntry {
        at,
        actor,
        action,
        target: Some(target.into()),
        changes: serde_json::json!({ "enabled": { "before": true, "after": false } }),
    }
}

#[tokio::test]
async fn every_change_appends_its_audit_entry_in_its_transaction() {
    each_backend(|store, backend| async move {
        let alice = Actor::Cli("alice".into());
        let admin = Actor::Admin("lk_admin".into());
        let all = AuditQuery {
            since: 0,
            target: None,
            after_seq: 0,
            limit: 100,
        };
        let created = entry(T0, alice.clone(), action::CLIENT_CREATE, "lk_a");
        store
            .create_client(&created, &client("lk_a", T0))
            .await
            .unwrap();
        let update = ClientUpdate {
            enabled: Some(false),
            ..ClientUpdate::default()
        };
        let updated = entry(T0 + 10, admin.clone(), action::CLIENT_UPDATE, "lk_a");
        store
            .update_client(&updated, "lk_a", &update, T0 + 10)
            .await
            .unwrap();
        // A change that changes nothing records nothing; a refused one neither.
        let nothing = entry(T0 + 11, admin.clone(), action::CLIENT_DELETE, "lk_none");
        assert!(
            !store
                .delete_client(&nothing, "lk_none", None)
                .await
                .unwrap()
        );
        assert!(
            store
                .update_client(&nothing, "lk_none", &update, T0 + 11)
                .await
                .unwrap()
                .is_none()
        );
        // Key removal records what it removed, merged into the entry's changes.
        let start = entry(T0, Actor::Server("srv".into()), action::KEY_CREATE, "k1");
        store
            .insert_key_if_none(&start, &key("k1", KeyState::Current, T0))
            .await
            .unwrap();
        let events = store.audit_events(&all).await.unwrap();
        assert_eq!(events.len(), 3, "{backend}: {events:?}");
        assert_eq!(
            (
                events[0].actor.clone(),
                events[0].action.as_str(),
                events[0].target.as_deref()
            ),
            (alice.clone(), "client.create", Some("lk_a")),
            "{backend}"
        );
        assert_eq!(events[1].actor, admin, "{backend}");
        assert_eq!(events[1].at, T0 + 10);
        assert_eq!(events[1].changes, updated.changes, "{backend}");
        assert!(events[0].seq < events[1].seq && events[1].seq < events[2].seq);
        // By client, since a time, and in pages.
        let about_a = AuditQuery {
            target: Some("lk_a".into()),
            ..all.clone()
        };
        assert_eq!(store.audit_events(&about_a).await.unwrap().len(), 2);
        let recent = AuditQuery {
            since: T0 + 5,
            ..all.clone()
        };
        assert_eq!(store.audit_events(&recent).await.unwrap().len(), 1);
        let page = AuditQuery {
            after_seq: events[0].seq,
            limit: 1,
            ..all.clone()
        };
        assert_eq!(
            store.audit_events(&page).await.unwrap()[0].seq,
            events[1].seq,
            "{backend}"
        );
        // The retention: events before the cut-off go, later ones stay.
        let purged = store.purge_expired(T0 + 20, T0 + 5, 0).await.unwrap();
        assert_eq!(purged.audit_events, 2, "{backend}");
        let left = store.audit_events(&all).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].seq, events[1].seq);
    })
    .await;
}

#[tokio::test]
async fn every_change_is_one_numbered_feed_entry() {
    each_backend(|store, backend| async move {
        let start = store.sync_point().await.unwrap().generation;
        store
            .create_client(&audit(), &client("lk_a", T0))
            .await
            .unwrap();
        store
            .create_client(&audit(), &client("lk_b", T0))
            .await
            .unwrap();
        let update = ClientUpdate {
            enabled: Some(false),
            ..ClientUpdate::default()
        };
        store
            .update_client(&audit(), "lk_a", &update, T0 + 1)
            .await
            .unwrap();
        store
            .add_secret(
                &audit(),
                "lk_b",
                &secret("s_b2", T0 + 2, None),
                None,
                5,
                T0 + 2,
            )
            .await
            .unwrap();
        store
            .insert_key_if_none(&audit(), &key("k1", KeyState::Current, T0))
            .await
            .unwrap();
        assert!(store.delete_client(&audit(), "lk_b", None).await.unwrap());
        // Nothing that fails to change anything moves the feed.
        assert!(!store.delete_client(&audit(), "lk_b", None).await.unwrap());

        let entries = store.changes_since(start, 100).await.unwrap();
        let changes: Vec<Change> = entries.iter().map(|e| e.change.clone()).collect();
        assert_eq!(
            changes,
            [
                Change::Client("lk_a".into()),
                Change::Client("lk_b".into()),
                Change::Client("lk_a".into()),
                Change::Client("lk_b".into()),
                Change::Keys,
                Change::Client("lk_b".into()),
            ],
            "{backend}"
        );
        let numbers: Vec<i64> = entries.iter().map(|e| e.generation).collect();
        assert_eq!(
            numbers,
            (start + 1..=start + 6).collect::<Vec<_>>(),
            "{backend}"
        );
        assert_eq!(
            store.sync_point().await.unwrap().generation,
            start + 6,
            "{backend}"
        );
        // Read from the middle, and in pages.
        let page = store.changes_since(start + 2, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.generation).collect::<Vec<_>>(),
            [start + 3, start + 4],
            "{backend}"
        );
        assert!(store.changes_since(start + 6, 10).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn opaque_tokens_and_the_deny_list() {
    each_backend(|store, backend| async move {
        store
            .create_client(&audit(), &client("lk_a", T0))
            .await
            .unwrap();
        // A bound token keeps its confirmation (RFC 8705 §3, RFC 9449 §6).
        let bound = OpaqueTokenRecord {
            cnf: Some(Confirmation {
                jkt: Some("jkt".into()),
                x5t_s256: Some("x5t".into()),
            }),
            ..opaque("j0", "lk_a", T0 + 900)
        };
        store.insert_opaque_token(&bound).await.unwrap();
        assert_eq!(
            store.find_opaque_token(&bound.token_hash).await.unwrap(),
            Some(bound),
            "{backend}"
        );
        let token = opaque("j1", "lk_a", T0 + 900);
        store.insert_opaque_token(&token).await.unwrap();
        assert_eq!(
            store
                .find_opaque_token(&token.token_hash)
                .await
                .unwrap()
                .as_ref(),
            Some(&token),
            "{backend}"
        );
        let start = store.sync_point().await.unwrap().revocation_seq;
        store
            .revoke_token("j1", "lk_a", T0 + 900, Some(&token.token_hash))
            .await
            .unwrap();
        // Twice is not an error and adds nothing.
        store
            .revoke_token("j1", "lk_a", T0 + 900, Some(&token.token_hash))
            .await
            .unwrap();
        store
            .revoke_token("j2", "lk_a", T0 + 10, None)
            .await
            .unwrap();
        assert_eq!(
            store.find_opaque_token(&token.token_hash).await.unwrap(),
            None
        );
        assert!(store.is_revoked("j1").await.unwrap() && !store.is_revoked("j9").await.unwrap());
        let since: Vec<String> = store
            .revocations_since(start)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.jti)
            .collect();
        assert_eq!(since, ["j1", "j2"], "{backend}");
        assert!(store.sync_point().await.unwrap().revocation_seq > start);
        store
            .insert_opaque_token(&opaque("j3", "lk_a", T0 + 5))
            .await
            .unwrap();
        let purged = store.purge_expired(T0 + 100, T0, 0).await.unwrap();
        assert_eq!(
            (purged.opaque_tokens, purged.revocations),
            (1, 1),
            "{backend}"
        );
        assert!(store.is_revoked("j1").await.unwrap());
    })
    .await;
}

/// Revocations from many tasks while a poller follows the deny list by position, as servers
/// do: the poller must see every entry, in an order where positions only grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poller_following_the_deny_list_misses_nothing() {
    each_backend(|store, backend| async move {
        store
            .create_client(&audit(), &client("lk_a", T0))
            .await
            .unwrap();
        let start = store.sync_point().await.unwrap().revocation_seq;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0..25 {
                        store
                            .revoke_token(&format!("w{w}-{i}"), "lk_a", T0 + 900, None)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut seen = HashSet::new();
        let mut last = start;
        let mut done = false;
        while !done {
            done = writers.iter().all(|w| w.is_finished());
            for revocation in store.revocations_since(last).await.unwrap() {
                assert!(revocation.seq > last, "positions only grow: {backend}");
                last = revocation.seq;
                seen.insert(revocation.jti);
            }
        }
        assert_eq!(seen.len(), 200, "every revocation was seen once: {backend}");
    })
    .await;
}

#[tokio::test]
async fn signing_keys_have_one_current_and_one_next_even_under_a_race() {
    each_backend(|store, backend| async move {
        assert!(store.signing_keys().await.unwrap().is_empty());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let current = store
                    .insert_key_if_none(&audit(), &key(&format!("c{i}"), KeyState::Current, T0))
                    .await
                    .unwrap();
                let next = store
                    .insert_key_if_none(&audit(), &key(&format!("n{i}"), KeyState::Next, T0))
                    .await
                    .unwrap();
                (current.kid, next.kid)
            });
        }
        let agreed: HashSet<(String, String)> = tasks.join_all().await.into_iter().collect();
        assert_eq!(agreed.len(), 1, "every server got the same keys: {backend}");
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 2, "{backend}");
        let (current, next) = agreed.into_iter().next().unwrap();

        // Rotation: refused while the next key is too new, or not due; then done.
        let plan = |now: i64, next_created_by: i64, only_if: Option<i64>| RotationPlan {
            alg: SigningAlg::Es256,
            now,
            next_created_by,
            only_if_current_activated_by: only_if,
            new_next: key("n-new", KeyState::Next, now),
        };
        assert_eq!(
            store
                .rotate_keys(&audit(), &plan(T0 + 10, T0 - 1, None))
                .await
                .unwrap(),
            RotationOutcome::NextTooNew { created_at: T0 },
            "{backend}"
        );
        assert_eq!(
            store
                .rotate_keys(&audit(), &plan(T0 + 400, T0 + 40, Some(T0 - 1)))
                .await
                .unwrap(),
            RotationOutcome::NotDue
        );
        assert_eq!(
            store
                .rotate_keys(&audit(), &plan(T0 + 400, T0 + 40, None))
                .await
                .unwrap(),
            RotationOutcome::Rotated {
                retired: current.clone(),
                current: next.clone(),
                next: "n-new".into(),
            },
            "{backend}"
        );
        let states: Vec<(String, KeyState)> = store
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.kid, k.state))
            .collect();
        assert!(
            states.contains(&(current.clone(), KeyState::Retired)),
            "{states:?}"
        );
        assert!(states.contains(&(next.clone(), KeyState::Current)));
        assert!(states.contains(&("n-new".into(), KeyState::Next)));

        // Removal of keys retired long enough, and resealing.
        assert!(
            store
                .remove_retired_keys(&audit(), T0 + 399, T0 + 500)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .remove_retired_keys(&audit(), T0 + 400, T0 + 500)
                .await
                .unwrap(),
            std::slice::from_ref(&current)
        );
        let removed = store
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.kid == current)
            .unwrap();
        assert_eq!(removed.state, KeyState::Removed, "{backend}");
        assert!(
            removed.private_key.is_empty(),
            "the private key is erased: {backend}"
        );
        store
            .reseal_key(&audit(), &next, b"sealed", "A256GCM:kek1")
            .await
            .unwrap();
        let resealed = store
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.kid == next)
            .unwrap();
        assert_eq!(resealed.private_key, b"sealed");
        assert_eq!(resealed.encryption.as_deref(), Some("A256GCM:kek1"));
        // Importing keys as they are (migrate-data): any state, but no duplicate kid and no
        // second current key.
        let mut old = key("imported", KeyState::Retired, T0 - 100);
        old.retired_at = Some(T0 - 50);
        store.import_key(&audit(), &old).await.unwrap();
        let imported = store
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.kid == "imported")
            .unwrap();
        assert_eq!(imported, old, "{backend}");
        assert!(matches!(
            store.import_key(&audit(), &old).await,
            Err(StoreError::Conflict(_))
        ));
        let second_current = key("another-current", KeyState::Current, T0);
        assert!(
            matches!(
                store.import_key(&audit(), &second_current).await,
                Err(StoreError::Conflict(_))
            ),
            "{backend}"
        );
        let empty = store
            .rotate_keys(
                &audit(),
                &RotationPlan {
                    alg: SigningAlg::EdDsa,
                    ..plan(T0 + 900, T0 + 900, None)
                },
            )
            .await
            .unwrap();
        assert_eq!(empty, RotationOutcome::NoKeys, "{backend}");
    })
    .await;
}

/// RFC 7523 §3 item 7 (docs/CONFORMANCE.md, "Assertion replay"): a client assertion's `jti`
/// authenticates once; of concurrent replays exactly one succeeds; expired entries are purged
/// and free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assertion_ids_are_single_use_even_under_concurrent_replays() {
    each_backend(|store, backend| async move {
        assert!(
            store
                .use_assertion_jti("lk_a", "j1", T0 + 60, T0)
                .await
                .unwrap()
        );
        assert!(
            !store
                .use_assertion_jti("lk_a", "j1", T0 + 60, T0 + 1)
                .await
                .unwrap(),
            "{backend}"
        );
        // Per client: another client's assertion may carry the same id.
        assert!(
            store
                .use_assertion_jti("lk_b", "j1", T0 + 60, T0)
                .await
                .unwrap(),
            "{backend}"
        );

        let mut replays = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let store = Arc::clone(&store);
            replays
                .spawn(async move { store.use_assertion_jti("lk_a", "race", T0 + 60, T0).await });
        }
        let winners = replays
            .join_all()
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(true)))
            .count();
        assert_eq!(winners, 1, "exactly one of 16 concurrent uses: {backend}");

        // Uses are written in batches: 8 ids each used 3 times at once → 8 first uses, one
        // per id.
        let mut mixed = tokio::task::JoinSet::new();
        for round in 0..3 {
            for id in 0..8 {
                let store = Arc::clone(&store);
                mixed.spawn(async move {
                    let jti = format!("mixed-{id}");
                    let fresh = store.use_assertion_jti("lk_a", &jti, T0 + 60, T0).await;
                    (id, round, fresh)
                });
            }
        }
        let mut firsts = [0; 8];
        for (id, _, fresh) in mixed.join_all().await {
            if fresh.unwrap() {
                firsts[id] += 1;
            }
        }
        assert_eq!(firsts, [1; 8], "{backend}");

        // Once expired, the entry no longer counts, and the janitor purges it.
        assert!(
            store
                .use_assertion_jti("lk_a", "j1", T0 + 200, T0 + 60)
                .await
                .unwrap(),
            "{backend}"
        );
        let purged = store.purge_expired(T0 + 61, T0, 0).await.unwrap();
        assert_eq!(
            purged.assertion_jtis, 10,
            "lk_b/j1, race and the 8 mixed: {backend}"
        );
        assert!(
            !store
                .use_assertion_jti("lk_a", "j1", T0 + 200, T0 + 61)
                .await
                .unwrap()
        );
    })
    .await;
}

#[tokio::test]
async fn a_registration_counts_one_use_of_its_token_and_stores_the_client_with_it() {
    each_backend(|store, backend| async move {
        let token = RegistrationToken {
            token_id: "rt1".into(),
            hash: SecretHash::of(b"lkrt_one"),
            created_at: T0,
            expires_at: T0 + 3600,
            max_uses: Some(3),
            uses: 0,
            scope_limit: Some(vec!["read".into()]),
            audience_limit: None,
        };
        store
            .create_registration_token(&audit(), &token)
            .await
            .unwrap();
        assert_eq!(
            store
                .find_registration_token(&token.hash)
                .await
                .unwrap()
                .as_ref(),
            Some(&token),
            "{backend}"
        );
        let registration = |id: &str| Registration {
            client_id: id.into(),
            access_hash: SecretHash::of(format!("lkra_{id}").as_bytes()),
            token_id: "rt1".into(),
            scope_limit: Some(vec!["read".into()]),
            audience_limit: None,
        };
        // Eight registrations race for three uses: exactly three are stored, with their clients.
        let mut attempts = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = store.clone();
            let id = format!("lk_r{i}");
            let registration = registration(&id);
            attempts.spawn(async move {
                let ok = store
                    .register_client(&audit(), &client(&id, T0), &registration, T0 + 1)
                    .await
                    .unwrap();
                (id, ok)
            });
        }
        let results = attempts.join_all().await;
        let stored: Vec<&String> = results
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(stored.len(), 3, "{backend}: {results:?}");
        for (id, ok) in &results {
            assert_eq!(
                store.find_client(id).await.unwrap().is_some(),
                *ok,
                "{backend}"
            );
            let found = store
                .find_registration(&registration(id).access_hash)
                .await
                .unwrap();
            assert_eq!(found.is_some(), *ok, "{backend}");
        }
        let used = store
            .find_registration_token(&token.hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(used.uses, 3, "{backend}");
        assert!(!used.usable(T0 + 1));
        // Deleting the client deletes its registration.
        assert!(
            store
                .delete_client(&audit(), stored[0], None)
                .await
                .unwrap()
        );
        assert!(
            store
                .find_registration(&registration(stored[0]).access_hash)
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
        // An expired token registers nothing; the janitor removes it; revoking deletes one.
        let later = RegistrationToken {
            token_id: "rt2".into(),
            hash: SecretHash::of(b"lkrt_two"),
            max_uses: None,
            ..token.clone()
        };
        store
            .create_registration_token(&audit(), &later)
            .await
            .unwrap();
        let registered = store
            .register_client(
                &audit(),
                &client("lk_late", T0),
                &Registration {
                    token_id: "rt2".into(),
                    ..registration("lk_late")
                },
                T0 + 3600,
            )
            .await
            .unwrap();
        assert!(!registered, "{backend}: registered with an expired token");
        assert_eq!(store.registration_tokens().await.unwrap().len(), 2);
        assert!(
            store
                .revoke_registration_token(&audit(), "rt1")
                .await
                .unwrap()
        );
        assert!(
            !store
                .revoke_registration_token(&audit(), "rt1")
                .await
                .unwrap()
        );
        let purged = store.purge_expired(T0 + 3600, 0, 0).await.unwrap();
        assert_eq!(purged.registration_tokens, 1, "{backend}");
        assert!(store.registration_tokens().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_change_held_to_a_version_is_made_once_among_racers() {
    each_backend(|store, backend| async move {
        store
            .create_client(&audit(), &client("lk_v", T0))
            .await
            .unwrap();
        let version = store.find_client("lk_v").await.unwrap().unwrap().version;
        let mut racers = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = store.clone();
            racers.spawn(async move {
                let update = ClientUpdate {
                    name: Some(format!("racer {i}")),
                    expected_version: Some(version),
                    ..ClientUpdate::default()
                };
                store.update_client(&audit(), "lk_v", &update, T0 + 1).await
            });
        }
        let results = racers.join_all().await;
        let made = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Precondition(_))))
            .count();
        assert_eq!((made, refused), (1, 7), "{backend}: {results:?}");
        let now = store.find_client("lk_v").await.unwrap().unwrap();
        assert_eq!(now.version, version + 1, "{backend}");
        // Deletion is held to a version too; without one it is unconditional.
        assert!(matches!(
            store.delete_client(&audit(), "lk_v", Some(version)).await,
            Err(StoreError::Precondition(_))
        ));
        assert!(
            store
                .delete_client(&audit(), "lk_v", Some(now.version))
                .await
                .unwrap()
        );
        assert!(
            !store
                .delete_client(&audit(), "lk_v", Some(now.version))
                .await
                .unwrap()
        );
    })
    .await;
}

#[tokio::test]
async fn usage_counts_add_up_per_client_minute_and_kind() {
    use latchkey_proto::ErrorCode;
    use latchkey_server::model::{UsageCount, UsageKind};
    use latchkey_server::store::UsageQuery;
    each_backend(|store, backend| async move {
        let count = |client: &str, minute: i64, kind: UsageKind, count: i64| UsageCount {
            client_id: client.into(),
            minute,
            kind,
            count,
        };
        let denied = UsageKind::Denied(ErrorCode::InvalidClient);
        // Two servers write the same minute, one of them twice in one batch.
        store
            .record_usage(
                &[
                    count("a", T0, UsageKind::Tokens, 3),
                    count("a", T0, UsageKind::Tokens, 2),
                    count("a", T0, denied, 1),
                    count("b", T0, UsageKind::Tokens, 1),
                ],
                &[],
            )
            .await
            .unwrap();
        store
            .record_usage(
                &[
                    count("a", T0, UsageKind::Tokens, 4),
                    count("a", T0 + 60, UsageKind::Introspections, 2),
                ],
                &[],
            )
            .await
            .unwrap();
        let minutes = store
            .usage_counts(&UsageQuery {
                since: 0,
                client: Some("a".into()),
                limit: 10,
                step: 60,
            })
            .await
            .unwrap();
        assert_eq!(
            minutes,
            [
                count("a", T0, denied, 1),
                count("a", T0, UsageKind::Tokens, 9),
                count("a", T0 + 60, UsageKind::Introspections, 2),
            ],
            "{backend}"
        );
        let latest = store
            .usage_counts(&UsageQuery {
                since: 0,
                client: Some("a".into()),
                limit: 1,
                step: 60,
            })
            .await
            .unwrap();
        assert_eq!(latest, [count("a", T0 + 60, UsageKind::Introspections, 2)]);
        // Hours instead of minutes: both minutes fall in the hour of T0.
        let hours = store
            .usage_counts(&UsageQuery {
                since: 0,
                client: Some("a".into()),
                limit: 10,
                step: 3600,
            })
            .await
            .unwrap();
        let hour = T0 - T0.rem_euclid(3600);
        assert_eq!(
            hours,
            [
                count("a", hour, denied, 1),
                count("a", hour, UsageKind::Introspections, 2),
                count("a", hour, UsageKind::Tokens, 9),
            ],
            "{backend}"
        );
        // Totals of the most active clients, filed under `since`.
        let top = store
            .usage_counts(&UsageQuery {
                since: T0,
                client: None,
                limit: 1,
                step: 60,
            })
            .await
            .unwrap();
        assert_eq!(
            top,
            [
                count("a", T0, denied, 1),
                count("a", T0, UsageKind::Introspections, 2),
                count("a", T0, UsageKind::Tokens, 9),
            ],
            "{backend}"
        );
        let purged = store.purge_expired(T0, 0, T0 + 60).await.unwrap();
        assert_eq!(purged.usage_counts, 3, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn token_sources_add_up_and_list_the_clients_not_caching() {
    use latchkey_server::model::TokenSource;
    use latchkey_server::store::UsageQuery;
    each_backend(|store, backend| async move {
        let hour = T0 - T0.rem_euclid(3600);
        let row = |client: &str, source: &str, hour: i64, tokens: i64| TokenSource {
            client_id: client.into(),
            source: source.into(),
            hour,
            tokens,
            lifetime: 3600,
            allowed: 10,
        };
        // Two servers count the same client and address: the returned rows are the totals.
        let first = store
            .record_usage(
                &[],
                &[
                    row("a", "10.0.0.1", hour, 6),
                    row("a", "10.0.0.1", hour, 1),
                    row("a", "10.0.0.2", hour, 2),
                    row("b", "10.0.0.1", hour, 11),
                ],
            )
            .await
            .unwrap();
        let mut first: Vec<(String, String, i64)> = first
            .into_iter()
            .map(|r| (r.client_id, r.source, r.tokens))
            .collect();
        first.sort();
        assert_eq!(
            first,
            [
                ("a".into(), "10.0.0.1".into(), 7),
                ("a".into(), "10.0.0.2".into(), 2),
                ("b".into(), "10.0.0.1".into(), 11),
            ],
            "{backend}"
        );
        let second = store
            .record_usage(&[], &[row("a", "10.0.0.1", hour, 5)])
            .await
            .unwrap();
        assert_eq!(second, [row("a", "10.0.0.1", hour, 12)], "{backend}");
        // The previous hour: b again, over its allowance.
        store
            .record_usage(&[], &[row("b", "10.0.0.9", hour - 3600, 40)])
            .await
            .unwrap();
        let query = |since: i64, client: Option<&str>, limit: u32| UsageQuery {
            since,
            client: client.map(str::to_owned),
            limit,
            step: 60,
        };
        let flagged = store
            .not_caching(&query(hour - 3600, None, 10))
            .await
            .unwrap();
        assert_eq!(
            flagged,
            [
                row("a", "10.0.0.1", hour, 12),
                row("b", "10.0.0.1", hour, 11),
                row("b", "10.0.0.9", hour - 3600, 40),
            ],
            "{backend}: newest hour first, most tokens first; a at 10.0.0.2 is within"
        );
        // `since` inside an hour counts that hour.
        let recent = store
            .not_caching(&query(hour + 59, Some("b"), 10))
            .await
            .unwrap();
        assert_eq!(recent, [row("b", "10.0.0.1", hour, 11)], "{backend}");
        assert_eq!(
            store.not_caching(&query(0, None, 1)).await.unwrap().len(),
            1
        );
        let purged = store.purge_expired(T0, 0, hour).await.unwrap();
        assert_eq!(purged.token_sources, 1, "{backend}");
        // Kept 7 days at most, even with a longer usage retention.
        let purged = store.purge_expired(T0 + 8 * 86_400, 0, 0).await.unwrap();
        assert_eq!(purged.token_sources, 3, "{backend}");
    })
    .await;
}
