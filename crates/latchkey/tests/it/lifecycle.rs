//! Token lifecycle over HTTP: introspection (RFC 7662), revocation (RFC 7009), opaque
//! tokens, `revoke-tokens`, the janitor, and secret rotation. The clock is moved, never slept.

use latchkey_proto::TokenFormat;
use latchkey_server::model::ClientUpdate;
use latchkey_server::service::admin;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestClient, basic, spawn_app};

const CC: &str = "grant_type=client_credentials";

impl TestApp {
    /// A resource server: a client that may introspect and gets no tokens itself.
    async fn resource_server(&self) -> TestClient {
        self.client(|c| {
            c.can_introspect = true;
            c.grant_types.clear();
        })
        .await
    }

    /// A fresh access token for `client`.
    async fn token_for(&self, client: &TestClient) -> String {
        let response = self.token_basic(client, CC).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// POSTs a form with Basic authentication to `path`.
    async fn post_form(&self, path: &str, authorization: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", authorization)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// `token` introspected by `caller` (a client with `can_introspect`): the answer, after
    /// checking the response's status and headers.
    pub(crate) async fn introspect(&self, caller: &TestClient, token: &str) -> Value {
        let response = self
            .post_form(
                "/oauth2/introspect",
                &caller.basic(),
                &format!("token={}", urlencode(token)),
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["content-type"], "application/json");
        response.json().await.unwrap()
    }

    async fn revoke(&self, client: &TestClient, body: &str) -> reqwest::Response {
        self.post_form("/oauth2/revoke", &client.basic(), body)
            .await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn inactive() -> Value {
    json!({ "active": false })
}

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

/// RFC 7662 §2.2: an active token's members, for both formats.
#[tokio::test]
async fn introspection_reports_active_tokens_with_every_member() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    for format in [TokenFormat::Jwt, TokenFormat::Opaque] {
        let client = app.client(|c| c.token_format = format).await;
        let token = app.token_for(&client).await;
        if format == TokenFormat::Opaque {
            // 256 random bits behind a recognisable prefix (docs/CONFORMANCE.md, "Opaque
            // tokens").
            assert!(token.starts_with("lkat_") && token.len() == 48, "{token}");
        }
        let answer = app.introspect(&rs, &token).await;
        let jti = answer["jti"].as_str().unwrap().to_owned();
        assert!(jti.len() >= 22, "128-bit jti");
        assert_eq!(
            answer,
            json!({
                "active": true,
                "scope": "read write",
                "client_id": client.id(),
                "token_type": "Bearer",
                "exp": crate::helpers::T0 + 900,
                "iat": crate::helpers::T0,
                "sub": client.id(),
                "aud": ["https://api.example.com", "https://other.example.com"],
                "iss": app.issuer,
                "jti": jti,
            }),
            "{format}"
        );
    }
}

/// An opaque token is stored only as a hash (docs/CONFORMANCE.md, "Opaque tokens").
#[tokio::test]
async fn opaque_tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let client = app.client(|c| c.token_format = TokenFormat::Opaque).await;
    let token = app.token_for(&client).await;
    let db = std::fs::read(app.dir.path().join("latchkey.db")).unwrap();
    let wal = std::fs::read(app.dir.path().join("latchkey.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token itself is never stored"
        );
    }
}

/// RFC 7662 §2.2: anything that is not an active token of ours is exactly `{"active":false}`.
#[tokio::test]
async fn introspection_says_only_active_false_for_anything_else() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    let client = app.client(|_| {}).await;
    let opaque = app.client(|c| c.token_format = TokenFormat::Opaque).await;
    let jwt = app.token_for(&client).await;
    let opaque_token = app.token_for(&opaque).await;

    let mut tampered = jwt.clone().into_bytes();
    let middle = jwt.find('.').unwrap() + 5;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (header, payload) = jwt.split_once('.').unwrap();
    let (payload, _) = payload.split_once('.').unwrap();
    let unsigned = format!("{header}.{payload}.");
    let malformed = [
        "not-a-token".to_owned(),
        "a.b.c".to_owned(),
        "lkat_tooshort".to_owned(),
        format!("lkat_{}", "A".repeat(43)),
        tampered,
        unsigned,
        "x".repeat(10_000),
    ];
    for token in &malformed {
        assert_eq!(app.introspect(&rs, token).await, inactive(), "{token:.40}");
    }
    // Expired: one second past `exp`, for both formats.
    app.clock.advance(900);
    assert_eq!(app.introspect(&rs, &jwt).await, inactive());
    assert_eq!(app.introspect(&rs, &opaque_token).await, inactive());
}

/// RFC 7662 §2.1 and §4: the caller authenticates (401) and must be allowed to introspect
/// (403); the token parameter is required (400); the endpoint follows the token endpoint's
/// transport rules (docs/CONFORMANCE.md, "Request limits and transport").
#[tokio::test]
async fn introspection_callers_must_authenticate_and_be_allowed() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    let not_allowed = app.client(|_| {}).await;
    let token = app.token_for(&not_allowed).await;
    let body = format!("token={token}");

    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            app.http
                .post(app.url("/oauth2/introspect"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone())
                .send()
                .await
                .unwrap(),
            401,
            "invalid_client",
        ),
        (
            app.post_form("/oauth2/introspect", &basic(rs.id(), "wrong"), &body)
                .await,
            401,
            "invalid_client",
        ),
        (
            app.post_form("/oauth2/introspect", &not_allowed.basic(), &body)
                .await,
            403,
            "unauthorized_client",
        ),
        (
            app.post_form(
                "/oauth2/introspect",
                &rs.basic(),
                "token_type_hint=access_token",
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            app.post_form("/oauth2/introspect", &rs.basic(), &format!("{body}&{body}"))
                .await,
            400,
            "invalid_request",
        ),
        (
            app.http
                .get(app.url("/oauth2/introspect"))
                .header("authorization", rs.basic())
                .send()
                .await
                .unwrap(),
            405,
            "invalid_request",
        ),
        (
            app.http
                .post(app.url("/oauth2/introspect"))
                .header("authorization", rs.basic())
                .json(&json!({ "token": token }))
                .send()
                .await
                .unwrap(),
            400,
            "invalid_request",
        ),
    ];
    for (i, (response, status, error)) in cases.into_iter().enumerate() {
        let www = response.headers().get("www-authenticate").cloned();
        assert_eq!(
            error_of(response).await,
            (status, error.to_owned()),
            "case {i}"
        );
        if status == 401 {
            assert_eq!(www.unwrap(), "Basic realm=\"latchkey\"", "case {i}");
        }
    }
    // An unknown hint is ignored.
    let answer = app
        .post_form(
            "/oauth2/introspect",
            &rs.basic(),
            &format!("{body}&token_type_hint=banana"),
        )
        .await;
    assert_eq!(answer.json::<Value>().await.unwrap()["active"], true);
}

/// RFC 7009 §2.1: a client revokes its own token, of either format; introspection then says
/// inactive. Unknown or garbage tokens and unknown hints get 200.
#[tokio::test]
async fn revocation_of_own_tokens_is_seen_by_introspection() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    for format in [TokenFormat::Jwt, TokenFormat::Opaque] {
        let client = app.client(|c| c.token_format = format).await;
        let token = app.token_for(&client).await;
        let kept = app.token_for(&client).await;
        let response = app
            .revoke(
                &client,
                &format!("token={}&token_type_hint=banana", urlencode(&token)),
            )
            .await;
        assert_eq!(response.status(), 200, "{format}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(app.introspect(&rs, &token).await, inactive(), "{format}");
        assert_eq!(app.introspect(&rs, &kept).await["active"], true, "{format}");
        // Revoking again, or revoking garbage, is still 200 (RFC 7009 §2.2).
        for body in [
            format!("token={}", urlencode(&token)),
            "token=garbage".to_owned(),
            "token=a.b.c&token_type_hint=refresh_token".to_owned(),
        ] {
            assert_eq!(app.revoke(&client, &body).await.status(), 200, "{body}");
        }
    }
}

/// RFC 7009 §2.1: another client's token is refused and stays active; the caller must
/// authenticate; the token parameter is required.
#[tokio::test]
async fn revocation_refuses_other_clients_tokens() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    let owner = app.client(|_| {}).await;
    let other = app.client(|_| {}).await;
    let token = app.token_for(&owner).await;
    let body = format!("token={token}");
    assert_eq!(
        error_of(app.revoke(&other, &body).await).await,
        (400, "unauthorized_client".to_owned())
    );
    assert_eq!(
        error_of(
            app.post_form("/oauth2/revoke", &basic(owner.id(), "wrong"), &body)
                .await
        )
        .await,
        (401, "invalid_client".to_owned())
    );
    assert_eq!(
        error_of(app.revoke(&owner, "token_type_hint=access_token").await).await,
        (400, "invalid_request".to_owned())
    );
    assert_eq!(app.introspect(&rs, &token).await["active"], true);
}

/// RFC 7009 §2.2.1: when storage fails, revocation is 503 with `Retry-After` and the token
/// really stays active; it can be revoked once storage is back.
#[tokio::test]
async fn revocation_storage_failure_is_503_and_the_token_stays_active() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    let client = app.client(|_| {}).await;
    let token = app.token_for(&client).await;
    let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
    sqlx::query("ALTER TABLE revoked_tokens RENAME TO revoked_gone")
        .execute(&pool)
        .await
        .unwrap();
    let response = app.revoke(&client, &format!("token={token}")).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        error_of(response).await,
        (503, "temporarily_unavailable".to_owned())
    );
    sqlx::query("ALTER TABLE revoked_gone RENAME TO revoked_tokens")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(app.introspect(&rs, &token).await["active"], true);
    assert_eq!(
        app.revoke(&client, &format!("token={token}"))
            .await
            .status(),
        200
    );
    assert_eq!(app.introspect(&rs, &token).await, inactive());
}

/// With storage down, introspection answers 503, never `active:true` (docs/CONFORMANCE.md,
/// "Storage failures").
#[tokio::test]
async fn introspection_with_storage_down_is_503() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    let jwt_client = app.client(|_| {}).await;
    let opaque_client = app.client(|c| c.token_format = TokenFormat::Opaque).await;
    let jwt = app.token_for(&jwt_client).await;
    let opaque = app.token_for(&opaque_client).await;
    let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
    for table in ["clients", "generation", "opaque_tokens", "revoked_tokens"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} RENAME TO {table}_gone"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    // Past the staleness bound, nothing is answered from memory.
    app.clock.advance(10);
    for token in [&jwt, &opaque] {
        let response = app
            .post_form("/oauth2/introspect", &rs.basic(), &format!("token={token}"))
            .await;
        assert_eq!(
            error_of(response).await,
            (503, "temporarily_unavailable".to_owned())
        );
    }
}

/// The revocation window of JWTs, documented in the README: a verifier that checks JWTs
/// locally still accepts a revoked one until it expires; introspection does not.
#[tokio::test]
async fn a_revoked_jwt_still_verifies_locally_until_exp() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    let client = app.client(|_| {}).await;
    let token = app.token_for(&client).await;
    assert_eq!(
        app.revoke(&client, &format!("token={token}"))
            .await
            .status(),
        200
    );
    assert_eq!(app.introspect(&rs, &token).await, inactive());
    let jwks: jsonwebtoken::jwk::JwkSet = app.get_json("/jwks").await;
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["https://api.example.com"]);
    validation.validate_exp = false;
    assert!(jsonwebtoken::decode::<Value>(&token, &key, &validation).is_ok());
}

/// `client revoke-tokens`, `disable` and `delete`: every token the client holds turns
/// inactive at once, and tokens issued afterwards are active (no time window either way).
#[tokio::test]
async fn revoke_tokens_disable_and_delete_end_every_token() {
    let app = spawn_app().await;
    let rs = app.resource_server().await;
    let store = app.store.as_ref();
    for format in [TokenFormat::Jwt, TokenFormat::Opaque] {
        let client = app.client(|c| c.token_format = format).await;
        let before = [app.token_for(&client).await, app.token_for(&client).await];
        admin::revoke_tokens(
            store,
            &app.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            client.id(),
        )
        .await
        .unwrap();
        let after = app.token_for(&client).await;
        for token in &before {
            assert_eq!(app.introspect(&rs, token).await, inactive(), "{format}");
        }
        assert_eq!(
            app.introspect(&rs, &after).await["active"],
            true,
            "{format}"
        );

        let set_enabled = |enabled| ClientUpdate {
            enabled: Some(enabled),
            ..ClientUpdate::default()
        };
        admin::update_client(
            store,
            &app.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            client.id(),
            set_enabled(false),
        )
        .await
        .unwrap();
        assert_eq!(app.introspect(&rs, &after).await, inactive(), "{format}");
        admin::update_client(
            store,
            &app.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            client.id(),
            set_enabled(true),
        )
        .await
        .unwrap();
        assert_eq!(
            app.introspect(&rs, &after).await,
            inactive(),
            "disabling revoked it for good ({format})"
        );
        let fresh = app.token_for(&client).await;
        assert_eq!(app.introspect(&rs, &fresh).await["active"], true);
        admin::delete_client(
            store,
            &app.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            client.id(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(app.introspect(&rs, &fresh).await, inactive(), "{format}");
    }
}

/// Issue acceptance 3: under steady issuance of opaque tokens and revocations, the janitor
/// keeps the stored rows bounded by what can still be valid.
#[tokio::test]
async fn the_janitor_keeps_token_storage_bounded() {
    let app = spawn_app().await;
    let client = app
        .client(|c| {
            c.token_format = TokenFormat::Opaque;
            c.token_ttl_seconds = 60;
        })
        .await;
    let jwt_client = app.client(|c| c.token_ttl_seconds = 60).await;
    let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {table}"
            )))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let mut peak = (0, 0);
    // Ten simulated minutes: 20 tokens and 2 revocations every 10 s, the janitor every 30 s.
    for step in 1..=60 {
        for i in 0..20 {
            let token = app.token_for(&client).await;
            if i < 2 {
                app.revoke(&client, &format!("token={token}")).await;
                let jwt = app.token_for(&jwt_client).await;
                app.revoke(&jwt_client, &format!("token={jwt}")).await;
            }
        }
        app.clock.advance(10);
        if step % 3 == 0 {
            app.janitor.run_once().await.unwrap();
        }
        peak = (
            peak.0.max(count("opaque_tokens").await),
            peak.1.max(count("revoked_tokens").await),
        );
    }
    // At most 60 s of live tokens plus one janitor period: 9 steps of 18 unrevoked tokens.
    assert!(peak.0 <= 9 * 18, "opaque rows peaked at {}", peak.0);
    assert!(peak.1 <= 9 * 4, "deny-list rows peaked at {}", peak.1);
    app.clock.advance(60);
    app.janitor.run_once().await.unwrap();
    assert_eq!(count("opaque_tokens").await, 0);
    assert_eq!(count("revoked_tokens").await, 0);
}

/// Issue acceptance 4 (docs/CONFORMANCE.md, "Secret rotation"): with `secret add` both secrets
/// work; after `secret revoke` or expiry only the new one does, and a revoked or expired secret
/// fails exactly like a wrong one. `secret list` shows last use, never the secret.
#[tokio::test]
async fn secret_rotation_with_add_revoke_and_expiry() {
    let app = spawn_app().await;
    let store = app.store.as_ref();
    let old = app.client(|_| {}).await;
    let (new_id, new_secret) = admin::add_secret(
        store,
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        old.id(),
        Some(3600),
    )
    .await
    .unwrap()
    .value;
    let new = TestClient {
        record: old.record.clone(),
        secret: new_secret.expose().to_owned(),
    };
    let wrong = TestClient {
        record: old.record.clone(),
        secret: "wrong".into(),
    };
    assert_eq!(app.token_basic(&old, CC).await.status(), 200);
    assert_eq!(app.token_basic(&new, CC).await.status(), 200);

    app.janitor.run_once().await.unwrap();
    let listed = admin::list_secrets(store, old.id()).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|s| s.last_used_at == Some(crate::helpers::T0))
    );
    let old_id = listed
        .iter()
        .find(|s| s.secret_id != new_id)
        .unwrap()
        .secret_id
        .clone();

    admin::revoke_secret(
        store,
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        old.id(),
        &old_id,
    )
    .await
    .unwrap();
    let revoked = app.token_basic(&old, CC).await;
    assert_eq!(revoked.status(), 401);
    let wrong_body = app.token_basic(&wrong, CC).await.text().await.unwrap();
    assert_eq!(revoked.text().await.unwrap(), wrong_body);
    assert_eq!(app.token_basic(&new, CC).await.status(), 200);

    // The new secret expires after its hour, and then fails like a wrong one too.
    app.clock.advance(3600);
    let expired = app.token_basic(&new, CC).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(expired.text().await.unwrap(), wrong_body);

    // At most five live secrets.
    for _ in 0..5 {
        admin::add_secret(
            store,
            &app.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            old.id(),
            None,
        )
        .await
        .unwrap();
    }
    assert!(
        admin::add_secret(
            store,
            &app.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            old.id(),
            None
        )
        .await
        .is_err()
    );
}
