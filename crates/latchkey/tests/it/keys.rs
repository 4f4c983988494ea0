//! Signing-key rotation, seen by an independent verifier that refreshes the JWK Set only every
//! max-age, and private keys sealed with a key-encryption key (docs/CONFORMANCE.md, "Signing
//! keys and rotation").

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latchkey_proto::{SigningAlg, TokenFormat};
use latchkey_server::cache::wait_for_servers;
use latchkey_server::kek::KeyEncryptionKey;
use latchkey_server::keys::KeySource;
use latchkey_server::service::admin;
use latchkey_server::store::{self, KeyState, RotationOutcome, RotationPlan, StoredKey};
use latchkey_server::{Application, ManualClock, StartError};
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{T0, TestApp, TestClient, server_config, spawn_app, spawn_with_config};

const MAX_AGE: i64 = 300;

/// An independent verifier (the `jsonwebtoken` crate) that caches the JWK Set and refetches it
/// only once its copy is a max-age old: the laziest verifier the rotation rules must serve.
struct LazyVerifier {
    jwks: JwkSet,
    fetched_at: i64,
}

impl LazyVerifier {
    async fn new(app: &TestApp) -> Self {
        LazyVerifier {
            jwks: app.get_json("/jwks").await,
            fetched_at: app.clock_now(),
        }
    }

    /// Whether `token` verifies now; expiry is checked against the test clock.
    async fn verifies(&mut self, app: &TestApp, token: &str) -> bool {
        let now = app.clock_now();
        if now - self.fetched_at >= MAX_AGE {
            self.jwks = app.get_json("/jwks").await;
            self.fetched_at = now;
        }
        let Some(kid) = jsonwebtoken::decode_header(token).unwrap().kid else {
            return false;
        };
        let Some(jwk) = self.jwks.find(&kid) else {
            return false;
        };
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://api.example.com"]);
        validation.set_issuer(&[&app.issuer]);
        validation.validate_exp = false;
        match jsonwebtoken::decode::<Value>(token, &key, &validation) {
            Ok(data) => data.claims["exp"].as_i64().unwrap() > now,
            Err(_) => false,
        }
    }
}

impl TestApp {
    fn clock_now(&self) -> i64 {
        use latchkey_server::Clock as _;
        self.clock.unix_seconds()
    }

    async fn issue(&self, client: &TestClient) -> String {
        let body: Value = self
            .token_basic(client, "grant_type=client_credentials")
            .await
            .json()
            .await
            .unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn rotate(&self) -> Result<Vec<admin::Rotated>, admin::AdminError> {
        let source = KeySource {
            alg: SigningAlg::Es256,
            kek: None,
        };
        admin::rotate_keys(
            self.store.as_ref(),
            &self.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            &source,
            None,
        )
        .await
        .map(|applied| applied.value)
    }
}

/// Issue acceptance 2: tokens are issued every two minutes while the key rotates twice; at
/// every step a verifier that refreshes the JWK Set only every max-age accepts every unexpired
/// token. A day later the retired keys are removed: their tokens no longer verify or
/// introspect.
#[tokio::test]
async fn rotation_never_fails_a_valid_token_for_a_lazy_verifier() {
    let app = spawn_app().await;
    let client = app.client(|c| c.token_ttl_seconds = 1800).await;
    let rs = app
        .client(|c| {
            c.can_introspect = true;
            c.grant_types.clear();
        })
        .await;
    let mut verifier = LazyVerifier::new(&app).await;
    let first_kid = app.signing_kid_now().await;

    // The next key was published at start; it may not sign before one max-age plus skew.
    let refused = app.rotate().await.unwrap_err().to_string();
    assert!(refused.contains("Try again in 360 s"), "{refused}");

    let mut tokens: Vec<(i64, String)> = Vec::new();
    let mut rotations = Vec::new();
    let step = 120;
    for t in (0..=3 * 3600).step_by(step) {
        app.clock.set(T0 + t as i64);
        if t == 360 || t == 720 {
            rotations.extend(app.rotate().await.unwrap());
        }
        tokens.push((T0 + t as i64 + 1800, app.issue(&client).await));
        for (exp, token) in &tokens {
            if *exp > app.clock_now() {
                assert!(
                    verifier.verifies(&app, token).await,
                    "t={t}: an unexpired token failed to verify"
                );
            }
        }
        app.janitor.run_once().await.unwrap();
    }
    assert_eq!(rotations.len(), 2);
    assert_eq!(rotations[0].retired, first_kid);
    assert_eq!(rotations[1].retired, rotations[0].current);
    let old_token = tokens[0].1.clone();
    assert_eq!(
        jsonwebtoken::decode_header(&old_token)
            .unwrap()
            .kid
            .unwrap(),
        first_kid
    );

    // Both retired keys are still published within a day of their retirement...
    let jwks: JwkSet = app.get_json("/jwks").await;
    assert!(jwks.find(&first_kid).is_some());
    // ...and removed after the day, a max-age and skew.
    app.clock.set(T0 + 720 + 24 * 3600 + MAX_AGE + 60);
    let report = app.janitor.run_once().await.unwrap();
    assert_eq!(
        report.removed_keys.len(),
        2,
        "both retired keys: {report:?}"
    );
    let jwks: JwkSet = app.get_json("/jwks").await;
    assert!(jwks.find(&first_kid).is_none());
    assert_eq!(jwks.keys.len(), 2, "current and next remain");
    let mut fresh_verifier = LazyVerifier::new(&app).await;
    assert!(!fresh_verifier.verifies(&app, &old_token).await);
    let answer = app
        .http
        .post(app.url("/oauth2/introspect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", rs.basic())
        .body(format!("token={old_token}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(answer, serde_json::json!({ "active": false }));
    let stored = app.store.signing_keys().await.unwrap();
    let removed = stored.iter().find(|k| k.kid == first_kid).unwrap();
    assert_eq!(removed.state, KeyState::Removed);
    assert!(removed.private_key.is_empty(), "the private key is erased");
}

/// Automatic rotation (`serve --key-rotation`): the janitor rotates once the current key has
/// signed for the period and the next key is ready.
#[tokio::test]
async fn automatic_rotation_by_the_janitor() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("auto.db").display());
    let store = store::connect(&url).await.unwrap();
    let clock = ManualClock::new(T0);
    let mut config = server_config(SigningAlg::Es256, None);
    config.key_rotation = Some(3600);
    let app = crate::helpers::spawn_with_config(config, url, dir, store, clock).await;
    let before = app.signing_kid_now().await;
    app.clock.advance(3599);
    assert_eq!(app.janitor.run_once().await.unwrap().rotated_to, None);
    app.clock.advance(1);
    let rotated = app.janitor.run_once().await.unwrap().rotated_to.unwrap();
    assert_ne!(rotated, before);
    let client = app.client(|_| {}).await;
    let token = app.issue(&client).await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.unwrap(),
        rotated
    );
}

impl TestApp {
    /// The kid the server signs with now, read from a fresh token's header.
    async fn signing_kid_now(&self) -> String {
        let client = self.client(|_| {}).await;
        let token = self.issue(&client).await;
        jsonwebtoken::decode_header(&token).unwrap().kid.unwrap()
    }
}

const KEK_A: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const KEK_B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn start(url: &str, kek: Option<&str>) -> Result<Application, StartError> {
    let store = store::connect(url).await.unwrap();
    let mut config = server_config(SigningAlg::Es256, None);
    config.key_encryption_key = kek.map(|k| Arc::new(KeyEncryptionKey::from_base64(k).unwrap()));
    Application::build(config, store, Arc::new(ManualClock::new(T0))).await
}

/// Keys survive a restart; with a KEK they are sealed at rest (clear keys are sealed at the
/// next start); a missing or wrong KEK fails loudly at start (docs/CONFORMANCE.md, "Signing
/// keys and rotation").
#[tokio::test]
async fn private_keys_are_sealed_with_the_kek_and_a_wrong_kek_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kek.db").display());
    let clear = start(&url, None).await.unwrap();
    let kid = clear.signing_kid();
    drop(clear);
    let stored = store::connect(&url)
        .await
        .unwrap()
        .signing_keys()
        .await
        .unwrap();
    assert!(stored.iter().all(|k| k.encryption.is_none()));

    let sealed = start(&url, Some(KEK_A)).await.unwrap();
    assert_eq!(sealed.signing_kid(), kid, "the same key, now sealed");
    drop(sealed);
    let stored = store::connect(&url)
        .await
        .unwrap()
        .signing_keys()
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    for key in &stored {
        assert!(key.encryption.as_deref().unwrap().starts_with("A256GCM:"));
        // A sealed key is not PKCS#8: no DER SEQUENCE header, and it does not parse.
        assert!(latchkey_server::keys::SigningKey::from_pkcs8(key.alg, &key.private_key).is_err());
    }

    assert_eq!(start(&url, Some(KEK_A)).await.unwrap().signing_kid(), kid);
    let wrong = start(&url, Some(KEK_B)).await.err().unwrap().to_string();
    assert!(wrong.contains("key-encryption key"), "{wrong}");
    let missing = start(&url, None).await.err().unwrap().to_string();
    assert!(missing.contains("LATCHKEY_KEY_ENCRYPTION_KEY"), "{missing}");
}

/// A key source as a server with `kek` (or none) has it.
fn key_source(kek: Option<&str>) -> KeySource {
    KeySource {
        alg: SigningAlg::Es256,
        kek: kek.map(|k| Arc::new(KeyEncryptionKey::from_base64(k).unwrap())),
    }
}

/// A server with the KEK `kek` on the database at `url`, its clock at `now`.
async fn spawn_sealed_on(url: String, dir: TempDir, kek: &str, now: i64) -> TestApp {
    let store = store::connect(&url).await.unwrap();
    let mut config = server_config(SigningAlg::Es256, None);
    config.key_encryption_key = key_source(Some(kek)).kek;
    spawn_with_config(config, url, dir, store, ManualClock::new(now)).await
}

/// A server with the KEK `kek` on a fresh database.
async fn spawn_sealed(kek: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sealed.db").display());
    spawn_sealed_on(url, dir, kek, T0).await
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

impl TestApp {
    /// Returns once every running server has reloaded the keys as they are in the database now.
    async fn reloaded(&self) {
        let behind = wait_for_servers(self.store.as_ref(), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(behind.is_empty(), "servers did not reload: {behind:?}");
    }

    /// The kids in the served JWK Set.
    async fn published_kids(&self) -> Vec<String> {
        let jwks: JwkSet = self.get_json("/jwks").await;
        jwks.keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect()
    }

    /// Rotates with `new_next` as the new next key straight through the store, bypassing
    /// every check of the server and the CLI: what someone with write access to the database,
    /// or an old replica without the KEK, can do.
    async fn force_rotation(&self, new_next: StoredKey) -> (String, String) {
        let plan = RotationPlan {
            alg: SigningAlg::Es256,
            now: self.clock_now(),
            next_created_by: self.clock_now(),
            only_if_current_activated_by: None,
            new_next,
        };
        match self
            .store
            .rotate_keys(&crate::helpers::audit(), &plan)
            .await
            .unwrap()
        {
            RotationOutcome::Rotated { current, next, .. } => (current, next),
            other => panic!("no rotation: {other:?}"),
        }
    }

    async fn token_status(&self, client: &TestClient) -> (u16, Value) {
        let response = self
            .token_basic(client, "grant_type=client_credentials")
            .await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// With a KEK, a key written in the clear after start (by someone with access to the
/// database, a replica started without the KEK, a restored backup) is refused at every
/// reload: never published, never rotated to, never used to sign. A refused current key means
/// 503 for JWTs rather than a token signed with it; opaque tokens are still issued. A restart
/// with the KEK still seals clear keys once, so a database from before the KEK keeps working
/// (docs/CONFORMANCE.md, "Signing keys and rotation").
#[tokio::test]
async fn a_key_written_in_the_clear_after_start_is_refused_while_a_kek_is_set() {
    let app = spawn_sealed(KEK_A).await;
    let jwt_client = app.client(|_| {}).await;
    let opaque_client = app.client(|c| c.token_format = TokenFormat::Opaque).await;
    let first = app.signing_kid_now().await;
    let clear = key_source(None);
    let sealed = key_source(Some(KEK_A));

    // A retired key in the clear appears: not published.
    let mut planted = clear
        .new_stored_key(SigningAlg::Es256, KeyState::Retired, T0)
        .unwrap();
    planted.retired_at = Some(T0);
    app.store
        .import_key(&crate::helpers::audit(), &planted)
        .await
        .unwrap();
    app.reloaded().await;
    let published = app.published_kids().await;
    assert!(!published.contains(&planted.kid), "{published:?}");
    assert_eq!(published.len(), 2, "current and next: {published:?}");
    assert_eq!(kid_of(&app.issue(&jwt_client).await), first);

    // A next key in the clear: the sealed next key signs, the clear one is not published, and
    // a rotation with the KEK will not promote it.
    app.clock.set(T0 + 360);
    let (second, clear_next) = app
        .force_rotation(
            clear
                .new_stored_key(SigningAlg::Es256, KeyState::Next, T0 + 360)
                .unwrap(),
        )
        .await;
    app.reloaded().await;
    assert_eq!(kid_of(&app.issue(&jwt_client).await), second);
    assert!(!app.published_kids().await.contains(&clear_next));
    app.clock.set(T0 + 720);
    let refused = admin::rotate_keys(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        &sealed,
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains(&clear_next) && refused.contains("in the clear"),
        "{refused}"
    );
    assert_eq!(kid_of(&app.issue(&jwt_client).await), second);

    // Made current anyway: no JWT is signed, the clear key is still not published, and the
    // retired sealed key still is, for the tokens it signed.
    let (current, _) = app
        .force_rotation(
            sealed
                .new_stored_key(SigningAlg::Es256, KeyState::Next, T0 + 720)
                .unwrap(),
        )
        .await;
    assert_eq!(current, clear_next);
    app.reloaded().await;
    let (status, body) = app.token_status(&jwt_client).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    let published = app.published_kids().await;
    assert!(
        !published.contains(&clear_next) && !published.contains(&planted.kid),
        "{published:?}"
    );
    assert!(published.contains(&second), "{published:?}");
    let (status, body) = app.token_status(&opaque_client).await;
    assert_eq!(status, 200, "opaque tokens need no signature: {body}");

    // A restart with the KEK seals the clear keys once and signs with the current one...
    let restarted = spawn_sealed_on(
        app.database_url.clone(),
        tempfile::tempdir().unwrap(),
        KEK_A,
        app.clock_now(),
    )
    .await;
    assert_eq!(kid_of(&restarted.issue(&jwt_client).await), clear_next);
    let stored = app.store.signing_keys().await.unwrap();
    assert!(
        stored
            .iter()
            .filter(|k| k.state != KeyState::Removed)
            .all(|k| k.encryption.is_some()),
        "{stored:?}"
    );
    // ...and the running server, now finding it sealed, signs again at its next reload.
    app.client(|_| {}).await;
    app.reloaded().await;
    assert_eq!(kid_of(&app.issue(&jwt_client).await), clear_next);
    assert!(app.published_kids().await.contains(&planted.kid));
}

/// The opposite case: a key sealed with a KEK this server does not hold is refused at a
/// reload too (not published, never signs, 503 while it is current), and a start-up with
/// that database fails loudly, naming the KEK.
#[tokio::test]
async fn a_key_sealed_with_another_kek_is_refused_at_reload() {
    let app = spawn_sealed(KEK_A).await;
    let client = app.client(|_| {}).await;
    let foreign = key_source(Some(KEK_B));
    app.clock.set(T0 + 360);
    let (second, foreign_next) = app
        .force_rotation(
            foreign
                .new_stored_key(SigningAlg::Es256, KeyState::Next, T0 + 360)
                .unwrap(),
        )
        .await;
    app.reloaded().await;
    assert_eq!(kid_of(&app.issue(&client).await), second);
    assert!(!app.published_kids().await.contains(&foreign_next));

    app.clock.set(T0 + 720);
    let refused = admin::rotate_keys(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        &key_source(Some(KEK_A)),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains(&foreign_next), "{refused}");
    let (current, _) = app
        .force_rotation(
            key_source(Some(KEK_A))
                .new_stored_key(SigningAlg::Es256, KeyState::Next, T0 + 720)
                .unwrap(),
        )
        .await;
    assert_eq!(current, foreign_next);
    app.reloaded().await;
    let (status, body) = app.token_status(&client).await;
    assert_eq!(status, 503, "{body}");
    let published = app.published_kids().await;
    assert!(!published.contains(&foreign_next), "{published:?}");
    assert!(published.contains(&second), "{published:?}");

    let start_error = start(&app.database_url, Some(KEK_A))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        start_error.contains(&foreign_next) && start_error.contains("key-encryption key"),
        "{start_error}"
    );
}
