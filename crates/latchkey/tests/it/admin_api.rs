//! The admin API through the real server: an admin client bootstrapped with the CLI gets a
//! token with client_credentials and manages clients over HTTP; every refusal is a problem.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    T0, TestApp, basic, server_config, spawn_app, spawn_with_config, token_status,
};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// Registers a client with the CLI against the server's database; its id and secret.
fn cli_create(app: &TestApp, extra: &[&str]) -> (String, String) {
    let output = Command::new(BIN)
        .args(["--database", &app.database_url, "--output", "json"])
        .args(["client", "create", "--name", "ops"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        created["client_id"].as_str().unwrap().to_owned(),
        created["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// A client_credentials token for `id`, asking for `resource` when given.
async fn token(app: &TestApp, id: &str, secret: &str, resource: Option<&str>) -> String {
    let body = match resource {
        Some(resource) => format!(
            "grant_type=client_credentials&resource={}",
            resource.replace(':', "%3A")
        ),
        None => "grant_type=client_credentials".to_owned(),
    };
    let response = app
        .http
        .post(app.token_url())
        .header("authorization", basic(id, secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A DPoP-bound admin token for `id`, bound to `key` (RFC 9449 §5).
async fn dpop_admin_token(
    app: &TestApp,
    id: &str,
    secret: &str,
    key: &latchkey_client::PrivateKey,
) -> String {
    let proof =
        latchkey_jose::dpop::make_proof(key, "POST", &app.token_url(), T0, None, None).unwrap();
    let issued: Value = app
        .http
        .post(app.token_url())
        .basic_auth(id, Some(secret))
        .header("DPoP", proof)
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:latchkey:admin"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(issued["token_type"], "DPoP");
    issued["access_token"].as_str().unwrap().to_owned()
}

struct Api<'a> {
    app: &'a TestApp,
    token: String,
}

impl Api<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/admin/v1{path}", self.app.admin_base)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .app
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, Some(body), None)
            .await
    }
}

/// The status, and the body of a problem response (checked to be one).
async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_client_manages_clients_over_http() {
    let app = spawn_app().await;
    let (admin_id, admin_secret) = cli_create(&app, &["--admin"]);
    let api = Api {
        app: &app,
        token: token(&app, &admin_id, &admin_secret, Some("urn:latchkey:admin")).await,
    };

    // Register a client, and use it at the token endpoint.
    let created = api
        .post(
            "/clients",
            json!({ "name": "billing", "scope": "invoices:read", "audience": ["https://api.example.com"] }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let created_tag = created.headers()["etag"].to_str().unwrap().to_owned();
    let created: Value = created.json().await.unwrap();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/admin/v1/clients/{id}"));
    assert_eq!(created["scope"], "invoices:read");
    assert_eq!(created["auth_method"], "client_secret_basic");
    assert_eq!(token_status(&app.http, &app.base, &id, &secret).await, 200);

    // Show it: the same representation and ETag as at creation, never the secret.
    let shown = api.get(&format!("/clients/{id}")).await;
    assert_eq!(shown.status(), 200);
    assert_eq!(shown.headers()["etag"].to_str().unwrap(), created_tag);
    let shown: Value = shown.json().await.unwrap();
    assert!(shown.get("client_secret").is_none());
    assert_eq!(shown["name"], "billing");

    // List: pages by id, and a name filter.
    let (other, _) = cli_create(&app, &[]);
    let page: Value = api.get("/clients?limit=1").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap();
    let rest: Value = api
        .get(&format!("/clients?after={next}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 2, "{rest}");
    assert!(rest.get("next").is_none());
    let filtered: Value = api.get("/clients?name=BILL").await.json().await.unwrap();
    let names: Vec<&str> = filtered["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, [id.as_str()]);
    assert!(!names.contains(&other.as_str()));

    // Change it against its ETag; a change against the old one is a lost update: 412.
    let patched = api
        .send(
            reqwest::Method::PATCH,
            &format!("/clients/{id}"),
            Some(json!({ "name": "billing-v2", "token_ttl_seconds": 600 })),
            Some(&created_tag),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let new_tag = patched.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_tag, created_tag);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(
        (
            patched["name"].clone(),
            patched["token_ttl_seconds"].clone()
        ),
        (json!("billing-v2"), json!(600))
    );
    let lost = api
        .send(
            reqwest::Method::PATCH,
            &format!("/clients/{id}"),
            Some(json!({ "name": "stale" })),
            Some(&created_tag),
        )
        .await;
    let (status, _) = problem(lost).await;
    assert_eq!(status, 412);
    let unchanged: Value = api
        .get(&format!("/clients/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["name"], "billing-v2");
    // Many changes race against the same ETag: exactly one is made, every other is a 412 (the
    // version is checked by the update itself, not only before it).
    let tag = new_tag.clone();
    let racers = (0..8).map(|i| {
        let api = &api;
        let tag = tag.clone();
        let id = id.clone();
        async move {
            api.send(
                reqwest::Method::PATCH,
                &format!("/clients/{id}"),
                Some(json!({ "name": format!("racer-{i}") })),
                Some(&tag),
            )
            .await
            .status()
        }
    });
    let statuses = futures_util::future::join_all(racers).await;
    assert_eq!(
        statuses.iter().filter(|s| s.as_u16() == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s.as_u16(), 200 | 412)),
        "{statuses:?}"
    );

    // Disable: refused at the token endpoint at once; enable: back.
    let disabled = api.post(&format!("/clients/{id}/disable"), json!({})).await;
    assert_eq!(disabled.status(), 200);
    assert_eq!(token_status(&app.http, &app.base, &id, &secret).await, 401);
    assert_eq!(
        api.post(&format!("/clients/{id}/enable"), json!({}))
            .await
            .status(),
        200
    );
    assert_eq!(token_status(&app.http, &app.base, &id, &secret).await, 200);
    let before = api.get(&format!("/clients/{id}")).await;
    let before_tag = before.headers()["etag"].to_str().unwrap().to_owned();
    let revoked = api
        .post(&format!("/clients/{id}/revoke-tokens"), json!({}))
        .await;
    // Revoking its tokens changes the client: its old ETag no longer matches.
    assert_ne!(revoked.headers()["etag"].to_str().unwrap(), before_tag);
    let revoked: Value = revoked.json().await.unwrap();
    assert_eq!(revoked["client_id"], id.as_str());

    // Delete: gone, and a problem for it after.
    let deleted = api
        .send(
            reqwest::Method::DELETE,
            &format!("/clients/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(token_status(&app.http, &app.base, &id, &secret).await, 401);
    let (status, _) = problem(api.get(&format!("/clients/{id}")).await).await;
    assert_eq!(status, 404);

    // An admin may not cut itself off.
    for path in [
        format!("/clients/{admin_id}/disable"),
        format!("/clients/{admin_id}/revoke-tokens"),
    ] {
        let (status, _) = problem(api.post(&path, json!({})).await).await;
        assert_eq!(status, 409, "{path}");
    }
    let (status, _) = problem(
        api.send(
            reqwest::Method::DELETE,
            &format!("/clients/{admin_id}"),
            None,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 409);
    for patch in [
        json!({ "scope": "read" }),
        json!({ "audience": ["https://api.example.com"] }),
    ] {
        let response = api
            .send(
                reqwest::Method::PATCH,
                &format!("/clients/{admin_id}"),
                Some(patch.clone()),
                None,
            )
            .await;
        assert_eq!(problem(response).await.0, 409, "{patch}");
    }
    assert_eq!(api.get("/clients").await.status(), 200, "still an admin");
    // A known resource with a method it does not take: a problem, with Allow.
    let response = api.send(reqwest::Method::DELETE, "/keys", None, None).await;
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    assert_eq!(problem(response).await.0, 405);

    // Every change is in the audit trail under the admin client.
    let events = app
        .store
        .audit_events(&latchkey_server::store::AuditQuery {
            since: 0,
            target: Some(id.clone()),
            after_seq: 0,
            limit: 100,
        })
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "client.create",
            "client.update", // the PATCH
            "client.update", // the one racer that won
            "client.update",
            "client.update",
            "client.update",
            "client.delete"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.actor == latchkey_server::model::Actor::Admin(admin_id.clone()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_keys_and_the_audit_trail_over_http() {
    let app = spawn_app().await;
    let (admin_id, admin_secret) = cli_create(&app, &["--admin"]);
    let api = Api {
        app: &app,
        token: token(&app, &admin_id, &admin_secret, Some("urn:latchkey:admin")).await,
    };
    let (id, first) = cli_create(&app, &["--audience", "https://api.example.com"]);

    // Secrets: listed by id only; a new one works beside the old.
    let listed: Value = api
        .get(&format!("/clients/{id}/secrets"))
        .await
        .json()
        .await
        .unwrap();
    let first_id = listed[0]["secret_id"].as_str().unwrap().to_owned();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&first));
    let added = api
        .post(
            &format!("/clients/{id}/secrets"),
            json!({ "expires_in_seconds": 3600 }),
        )
        .await;
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    let second = added["client_secret"].as_str().unwrap().to_owned();
    assert!(added["expires_at"].is_string());
    assert_eq!(token_status(&app.http, &app.base, &id, &second).await, 200);
    assert_eq!(token_status(&app.http, &app.base, &id, &first).await, 200);
    // Rotation: a third secret; the others keep working for the overlap.
    let rotated: Value = api
        .post(
            &format!("/clients/{id}/secrets/rotate"),
            json!({ "overlap_seconds": 60 }),
        )
        .await
        .json()
        .await
        .unwrap();
    let third = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(token_status(&app.http, &app.base, &id, &third).await, 200);
    assert_eq!(token_status(&app.http, &app.base, &id, &first).await, 200);
    // Revoking one: it fails at once; again: 404.
    let path = format!("/clients/{id}/secrets/{first_id}");
    let revoked = api.send(reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(revoked.status(), 204);
    assert_eq!(token_status(&app.http, &app.base, &id, &first).await, 401);
    let again = api.send(reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(problem(again).await.0, 404);
    let (status, body) = problem(
        api.post(
            &format!("/clients/{id}/secrets"),
            json!({ "expires_in_seconds": 0 }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["field"].clone()),
        (400, json!("expires_in_seconds"))
    );
    // An admin may not revoke or rotate out its own secrets.
    let own: Value = api
        .get(&format!("/clients/{admin_id}/secrets"))
        .await
        .json()
        .await
        .unwrap();
    let own_path = format!(
        "/clients/{admin_id}/secrets/{}",
        own[0]["secret_id"].as_str().unwrap()
    );
    let own_revoke = api
        .send(reqwest::Method::DELETE, &own_path, None, None)
        .await;
    assert_eq!(problem(own_revoke).await.0, 409);

    // Keys: listed, never a private key; rotation refused until the next key is old enough.
    let keys: Value = api.get("/keys").await.json().await.unwrap();
    let kid_in = |state: &str| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["state"] == state)
            .map(|k| k["kid"].clone())
            .unwrap()
    };
    let (current_kid, next_kid) = (kid_in("current"), kid_in("next"));
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(!keys.to_string().contains("private"));
    let early = api.post("/keys/rotate", json!({})).await;
    assert_eq!(problem(early).await.0, 400);
    app.clock.advance(3600);
    let api = Api {
        app: &app,
        token: token(&app, &admin_id, &admin_secret, Some("urn:latchkey:admin")).await,
    };
    let rotated = api.post("/keys/rotate", json!({ "alg": "ES256" })).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    assert_eq!(rotated[0]["retired"], current_kid);
    assert_eq!(rotated[0]["current"], next_kid);
    let (status, body) = problem(api.post("/keys/rotate", json!({ "alg": "HS256" })).await).await;
    assert_eq!(
        (status.as_u16(), body["field"].clone()),
        (400, json!("alg"))
    );

    // The audit trail, by client and in pages, every change under the admin client.
    let page: Value = api
        .get(&format!("/audit?client={id}&limit=2"))
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["action"], "client.create");
    assert!(items[0]["actor"].as_str().unwrap().starts_with("cli:"));
    let rest: Value = api
        .get(&format!("/audit?client={id}&after={}", page["next"]))
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    let by_admin = format!("admin:{admin_id}");
    assert_eq!(
        actions,
        [
            (by_admin.as_str(), "secret.add"),
            (by_admin.as_str(), "secret.revoke")
        ]
    );
    let rotation: Value = api.get("/audit?limit=1000").await.json().await.unwrap();
    assert!(
        rotation["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "keys.rotate" && e["actor"] == by_admin.as_str())
    );
    assert_eq!(problem(api.get("/audit?since=-1").await).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_problems_with_their_status() {
    let app = spawn_app().await;
    let (admin_id, admin_secret) = cli_create(&app, &["--admin"]);
    let (reader_id, reader_secret) = cli_create(&app, &["--admin-read"]);
    let (plain_id, plain_secret) = cli_create(&app, &["--audience", "https://api.example.com"]);
    let admin = Api {
        app: &app,
        token: token(&app, &admin_id, &admin_secret, Some("urn:latchkey:admin")).await,
    };
    let url = admin.url("/clients");

    // No token: 401 with a bare Bearer challenge (RFC 6750 §3.1).
    let missing = app.http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let challenge = missing.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer") && !challenge.contains("error="),
        "{challenge}"
    );
    problem(missing).await;
    // A token that is not ours, and one of ours for another audience: invalid_token.
    for token in [
        "not-a-token".to_owned(),
        token(&app, &plain_id, &plain_secret, None).await,
    ] {
        let refused = app.http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        assert!(
            refused.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains(r#"error="invalid_token""#)
        );
        problem(refused).await;
    }
    // A token for the admin API and another API at once is refused: any service it was sent
    // to could replay it here. Asked for the admin API alone, the same client's token works.
    let mixed: Value = admin
        .post(
            "/clients",
            json!({
                "name": "mixed",
                "scope": "latchkey:admin",
                "audience": ["urn:latchkey:admin", "https://api.example.com"],
            }),
        )
        .await
        .json()
        .await
        .unwrap();
    let (mixed_id, mixed_secret) = (
        mixed["client_id"].as_str().unwrap(),
        mixed["client_secret"].as_str().unwrap(),
    );
    let both = token(&app, mixed_id, mixed_secret, None).await;
    let refused = app.http.get(&url).bearer_auth(&both).send().await.unwrap();
    assert_eq!(problem(refused).await.0, 401);
    let alone = token(&app, mixed_id, mixed_secret, Some("urn:latchkey:admin")).await;
    let accepted = app.http.get(&url).bearer_auth(&alone).send().await.unwrap();
    assert_eq!(accepted.status(), 200);
    // The CLI does not register an admin client for other APIs too.
    let refused = Command::new(BIN)
        .args([
            "--database",
            &app.database_url,
            "client",
            "create",
            "--name",
            "x",
        ])
        .args(["--admin", "--audience", "https://api.example.com"])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // A read-only admin reads, and may not change: 403 insufficient_scope.
    let reader = Api {
        app: &app,
        token: token(&app, &reader_id, &reader_secret, Some("urn:latchkey:admin")).await,
    };
    assert_eq!(reader.get("/clients").await.status(), 200);
    let forbidden = reader.post("/clients", json!({ "name": "x" })).await;
    assert_eq!(forbidden.status(), 403);
    assert!(
        forbidden.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );
    problem(forbidden).await;

    // Bad input, each naming what is wrong.
    let bad_json = app
        .http
        .post(&url)
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(bad_json).await.0, 400);
    let (status, body) = problem(
        admin
            .post("/clients", json!({ "name": "x", "colour": "blue" }))
            .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["field"].clone()),
        (400, json!("colour"))
    );
    let (status, body) = problem(admin.post("/clients", json!({ "scope": "a" })).await).await;
    assert_eq!(
        (status.as_u16(), body["field"].clone()),
        (400, json!("name"))
    );
    for (field, new) in [
        ("scope", json!({ "name": "x", "scope": "bad\"scope" })),
        (
            "audience",
            json!({ "name": "x", "audience": ["not a uri"] }),
        ),
        (
            "token_ttl_seconds",
            json!({ "name": "x", "token_ttl_seconds": 1 }),
        ),
        (
            "audience",
            json!({
                "name": "x",
                "audience": (0..33).map(|i| format!("https://api{i}.example")).collect::<Vec<_>>(),
            }),
        ),
        ("name", json!({ "name": "" })),
        (
            "auth_method",
            json!({ "name": "x", "auth_method": "password" }),
        ),
    ] {
        let (status, body) = problem(admin.post("/clients", new).await).await;
        assert_eq!(
            (status.as_u16(), body["field"].clone()),
            (400, json!(field)),
            "{body}"
        );
    }
    let not_json = app
        .http
        .post(&url)
        .bearer_auth(&admin.token)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(not_json).await.0, 415);
    let huge = json!({ "name": "x".repeat(70 * 1024) });
    assert_eq!(problem(admin.post("/clients", huge).await).await.0, 413);
    // Unknown ids, paths and parameters.
    for path in ["/clients/nobody", "/nothing-here"] {
        assert_eq!(problem(admin.get(path).await).await.0, 404, "{path}");
    }
    let (status, body) = problem(admin.get("/clients?colour=blue").await).await;
    assert_eq!(
        (status.as_u16(), body["field"].clone()),
        (400, json!("colour"))
    );
    assert_eq!(problem(admin.get("/clients?limit=0").await).await.0, 400);
    let patch_unknown = admin
        .send(
            reqwest::Method::PATCH,
            "/clients/nobody",
            Some(json!({ "name": "x" })),
            None,
        )
        .await;
    assert_eq!(problem(patch_unknown).await.0, 404);
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/admin/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/admin/v1/clients",
        "/admin/v1/clients/{id}",
        "/admin/v1/clients/{id}/disable",
        "/admin/v1/clients/{id}/revoke-tokens",
        "/admin/v1/clients/{id}/secrets",
        "/admin/v1/clients/{id}/secrets/rotate",
        "/admin/v1/clients/{id}/secrets/{secret_id}",
        "/admin/v1/keys",
        "/admin/v1/keys/rotate",
        "/admin/v1/audit",
    ] {
        assert!(document["paths"][path].is_object(), "{path}");
    }
    assert!(document["components"]["schemas"]["Problem"].is_object());
}

/// Whether `schemathesis` (PyPI) is installed; under CI it must be.
fn schemathesis_ready() -> bool {
    let probe = Command::new("schemathesis").arg("--version").output();
    match probe {
        Ok(out) if out.status.success() => true,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have schemathesis (pip install schemathesis; see .ci/run)"
            );
            eprintln!("SKIPPED: schemathesis is not installed (pip install schemathesis)");
            false
        }
    }
}

/// An independent tool reads the OpenAPI document and sends the running server hundreds of
/// generated requests to every operation, valid and invalid. Every answer must be one the
/// document describes (status, content type, headers, body schema), invalid input must be
/// refused with a 4xx, authentication must be enforced, and nothing may answer 5xx (a panic
/// it found on a far-future expiry is fixed). Stateful sequences are off (see
/// tests/interop/schemathesis.toml). Left out: the check that every
/// schema-valid request succeeds, since a valid-looking request can still be refused by design
/// (a name with control characters; an `If-Match` of another version: 412).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_the_api() {
    if !schemathesis_ready() {
        return;
    }
    let _alone = crate::helpers::UNDER_LOAD.lock().await;
    let app = spawn_app().await;
    let (admin_id, admin_secret) = cli_create(&app, &["--admin"]);
    let admin_token = token(&app, &admin_id, &admin_secret, Some("urn:latchkey:admin")).await;
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/schemathesis.toml"
    );
    let output = tokio::process::Command::new("schemathesis")
        .args(["--config-file", config])
        .args(["run", &app.url("/admin/v1/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {admin_token}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "40", "--seed", "1", "--no-color"])
        .args(["--generation-database", "none"])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !report.contains("FAILURES") && !report.contains("ERRORS"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_can_have_a_listener_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&database_url)
        .await
        .unwrap();
    let clock = latchkey_server::ManualClock::new(T0);
    let config = latchkey_server::ServerConfig {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..server_config(latchkey_proto::SigningAlg::Es256, None)
    };
    let app = spawn_with_config(config, database_url, dir, store, clock).await;
    assert_ne!(app.admin_base, app.base);
    let (admin_id, admin_secret) = cli_create(&app, &["--admin"]);
    let api = Api {
        app: &app,
        token: token(&app, &admin_id, &admin_secret, Some("urn:latchkey:admin")).await,
    };
    // There, and only there: the main listener knows no admin API.
    assert_eq!(api.get("/clients").await.status(), 200);
    let on_main = app
        .http
        .get(app.url("/admin/v1/clients"))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(on_main.status(), 404);
    // A DPoP proof names the admin listener's origin, whatever Host the request claims.
    let key = latchkey_client::PrivateKey::generate(latchkey_proto::SigningAlg::Es256)
        .unwrap()
        .0;
    let bound = dpop_admin_token(&app, &admin_id, &admin_secret, &key).await;
    let bound = bound.as_str();
    let url = api.url("/clients");
    let send = |proof_url: &str, host: Option<&str>| {
        let proof =
            latchkey_jose::dpop::make_proof(&key, "GET", proof_url, T0, Some(bound), None).unwrap();
        let mut request = app
            .http
            .get(&url)
            .header("authorization", format!("DPoP {bound}"))
            .header("DPoP", proof);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(send(&url, None).await, 200);
    let elsewhere = "http://evil.example/admin/v1/clients";
    assert_eq!(send(elsewhere, Some("evil.example")).await, 401);

    // The admin listener serves the admin API, the console, and the token endpoint where
    // admin clients (and the console) sign in without leaving that origin; nothing else.
    let token_there = |body: &'static str| {
        app.http
            .post(format!("{}/oauth2/token", app.admin_base))
            .header("authorization", basic(&admin_id, &admin_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let admin_token = token_there("grant_type=client_credentials&resource=urn%3Alatchkey%3Aadmin")
        .await
        .unwrap();
    assert_eq!(admin_token.status(), 200);
    // DPoP there: the proof names that listener's token endpoint (RFC 9449 §4.3), not the
    // issuer's.
    let endpoint = format!("{}/oauth2/token", app.admin_base);
    let with_proof = |htu: &str| {
        let proof = latchkey_jose::dpop::make_proof(&key, "POST", htu, T0, None, None).unwrap();
        app.http
            .post(&endpoint)
            .header("authorization", basic(&admin_id, &admin_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("DPoP", proof)
            .body("grant_type=client_credentials&resource=urn%3Alatchkey%3Aadmin")
            .send()
    };
    let bound_there = with_proof(&endpoint).await.unwrap();
    assert_eq!(bound_there.status(), 200);
    let bound_there: Value = bound_there.json().await.unwrap();
    assert_eq!(bound_there["token_type"], "DPoP");
    let named_elsewhere = with_proof(&app.token_url()).await.unwrap();
    assert_eq!(named_elsewhere.status(), 400);
    // Admin tokens only: a request that does not ask for one is refused there.
    let other = token_there("grant_type=client_credentials").await.unwrap();
    assert_eq!(other.status(), 400);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"], "invalid_target");
    for path in [
        "/jwks",
        "/oauth2/introspect",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.admin_base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let console = app
        .http
        .get(format!("{}/console/", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 200);
    assert_eq!(
        app.http
            .get(app.url("/console/"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "not on the main listener when the admin API is apart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_admin_token_needs_a_fresh_proof_of_its_key() {
    use latchkey_jose::dpop::make_proof;
    let app = spawn_app().await;
    let (admin_id, admin_secret) = cli_create(&app, &["--admin"]);
    let key = latchkey_client::PrivateKey::generate(latchkey_proto::SigningAlg::Es256)
        .unwrap()
        .0;
    // A DPoP-bound admin token (RFC 9449 §5).
    let bound = dpop_admin_token(&app, &admin_id, &admin_secret, &key).await;
    let bearer = token(&app, &admin_id, &admin_secret, Some("urn:latchkey:admin")).await;
    let token = bound.as_str();
    let url = app.url("/admin/v1/clients");
    let get = |authorization: String, proof: Option<String>| {
        let mut request = app.http.get(&url).header("authorization", authorization);
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        async move { request.send().await.unwrap().status() }
    };
    let fresh = |signer: &latchkey_client::PrivateKey, method: &str| {
        make_proof(signer, method, &url, T0, Some(token), None).unwrap()
    };
    // Never as a bearer token; not without a proof.
    assert_eq!(get(format!("Bearer {token}"), None).await, 401);
    assert_eq!(get(format!("DPoP {token}"), None).await, 401);
    // With a proof of its key for this request: in, once.
    let good = fresh(&key, "GET");
    assert_eq!(get(format!("DPoP {token}"), Some(good.clone())).await, 200);
    assert_eq!(
        get(format!("DPoP {token}"), Some(good)).await,
        401,
        "replayed"
    );
    // Another key, another method: out.
    let other = latchkey_client::PrivateKey::generate(latchkey_proto::SigningAlg::Es256)
        .unwrap()
        .0;
    assert_eq!(
        get(format!("DPoP {token}"), Some(fresh(&other, "GET"))).await,
        401
    );
    assert_eq!(
        get(format!("DPoP {token}"), Some(fresh(&key, "POST"))).await,
        401
    );
    // An unbound token under the DPoP scheme: out too.
    assert_eq!(
        get(format!("DPoP {bearer}"), Some(fresh(&key, "GET"))).await,
        401
    );
    // A refusal under the DPoP scheme challenges with DPoP and its algorithms (RFC 9449 §7.1).
    let refused = app
        .http
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .send()
        .await
        .unwrap();
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(
            r#"DPoP realm="latchkey admin", algs="ES256 EdDSA RS256", error="invalid_token""#
        ),
        "{challenge}"
    );
}
