//! Dynamic client registration (RFC 7591) and its management (RFC 7592) through the real
//! server: initial access tokens made with the CLI, an independent client registering, reading,
//! updating and deleting, and every refusal with its status and OAuth error.

use std::process::Command;

use latchkey_client::PrivateKey;
use latchkey_proto::SigningAlg;
use latchkey_server::ManualClock;
use latchkey_server::model::Actor;
use latchkey_server::service::admin::registration_tokens::{self, NewRegistrationToken};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{T0, TestApp, basic, spawn_app, token_status};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// Runs `latchkey ARGS` on the server's database; the JSON it prints.
fn cli(app: &TestApp, args: &[&str]) -> Value {
    let output = Command::new(BIN)
        .env("USER", "ops")
        .args(["--database", &app.database_url, "--output", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A new initial access token made with the CLI: its id and the token.
fn initial_token(app: &TestApp, extra: &[&str]) -> (String, String) {
    let mut args = vec!["registration-token", "create"];
    args.extend_from_slice(extra);
    let created = cli(app, &args);
    (
        created["token_id"].as_str().unwrap().to_owned(),
        created["registration_token"].as_str().unwrap().to_owned(),
    )
}

/// Sends `body` (JSON unless `content_type` says otherwise) with `method` to `url`.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = app.http.request(method, url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
    };
    (status, headers, body)
}

async fn register(app: &TestApp, token: &str, metadata: &Value) -> (StatusCode, Value) {
    let url = app.url("/oauth2/register");
    let (status, _, body) = send(
        app,
        reqwest::Method::POST,
        &url,
        Some(token),
        Some(metadata),
    )
    .await;
    (status, body)
}

/// Asserts an OAuth error: the status, the code, and a description.
fn assert_error(result: &(StatusCode, Value), status: StatusCode, code: &str, case: &str) {
    assert_eq!(result.0, status, "{case}: {}", result.1);
    assert_eq!(result.1["error"], code, "{case}: {}", result.1);
    assert!(result.1["error_description"].is_string(), "{case}");
}

/// An independent client (Python `requests` at its defaults, and Authlib for the token) does
/// the whole RFC 7591/7592 cycle; every step is in the audit trail with the registration as
/// the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_client_registers_reads_updates_and_deletes() {
    if !crate::interop::python_ready() {
        return;
    }
    let app = spawn_app().await;
    let (token_id, token) = initial_token(
        &app,
        &[
            "--max-uses",
            "5",
            "--scope-limit",
            "inventory:read inventory:write",
        ],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/dcr_client.py");
    let output = tokio::process::Command::new("python3")
        .args([
            script,
            &app.url("/.well-known/oauth-authorization-server"),
            "https://inventory.example.com",
        ])
        .env("INITIAL_ACCESS_TOKEN", &token)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    let registered = &out["registered"];
    let client_id = registered["client_id"].as_str().unwrap();
    assert!(out["has_secret"].as_bool().unwrap());
    assert_eq!(registered["client_name"], "inventory sync");
    assert_eq!(registered["scope"], "inventory:read");
    assert_eq!(registered["grant_types"], json!(["client_credentials"]));
    assert_eq!(
        registered["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    assert_eq!(
        registered["audience"],
        json!(["https://inventory.example.com"])
    );
    assert_eq!(registered["client_secret_expires_at"], 0);
    assert_eq!(registered["client_id_issued_at"], T0);
    assert_eq!(
        registered["registration_client_uri"],
        app.url(&format!("/oauth2/register/{client_id}"))
    );
    assert!(
        registered.get("software_id").is_none(),
        "ignored, not echoed"
    );
    assert_eq!(out["token"]["ok"], true, "{}", out["token"]);
    assert_eq!(out["token"]["token"]["scope"], "inventory:read");
    // The read answers the registered metadata, with the token the client presented.
    assert_eq!(out["read"]["client_name"], "inventory sync");
    assert!(out["read"].get("client_secret").is_none());
    assert!(
        out["read"]["registration_access_token"]
            .as_str()
            .unwrap()
            .starts_with("lkra_")
    );
    assert_eq!(out["updated"]["client_name"], "inventory sync v2");
    assert_eq!(out["updated"]["scope"], "inventory:read inventory:write");
    assert_eq!(
        out["token_after_update"]["token"]["scope"],
        "inventory:read inventory:write"
    );
    assert_eq!(out["read_with_initial_token"]["status"], 401);
    assert_eq!(
        out["read_with_initial_token"]["body"]["error"],
        "invalid_token"
    );
    assert!(
        out["read_with_initial_token"]["www_authenticate"]
            .as_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(out["deleted"], 204);
    assert_eq!(out["read_after_delete"], 401);
    assert_eq!(out["token_after_delete"]["ok"], false);

    let events = cli(&app, &["audit", "list", "--client", client_id]);
    let summary: Vec<(&str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    let actor = format!("registration:{token_id}");
    assert_eq!(
        summary,
        [
            (actor.as_str(), "client.create"),
            (actor.as_str(), "client.update"),
            (actor.as_str(), "client.delete"),
        ]
    );
    let tokens = cli(&app, &["registration-token", "list"]);
    assert_eq!(tokens[0]["token_id"], token_id.as_str());
    assert_eq!(tokens[0]["uses"], 1);
    assert_eq!(tokens[0]["max_uses"], 5);
    assert!(tokens[0].get("registration_token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_access_tokens_are_checked_and_metadata_refused_with_a_reason() {
    let app = spawn_app().await;
    let url = app.url("/oauth2/register");
    let (token_id, token) = initial_token(
        &app,
        &[
            "--max-uses",
            "2",
            "--audience-limit",
            "https://api.example.com",
        ],
    );
    // No token, another scheme, an unknown token: 401 with a Bearer challenge.
    for (case, authorization) in [
        ("no token", None),
        ("basic", Some(basic("a", "b"))),
        ("unknown", Some("Bearer lkrt_nope".to_owned())),
    ] {
        let mut request = app.http.post(&url).json(&json!({}));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{case}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer realm=\"latchkey\", error=\"invalid_token\""),
            "{case}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{case}");
    }
    // Bad metadata: 400 invalid_client_metadata saying what is wrong; nothing is used up.
    let refused = [
        (
            "authorization_code",
            json!({ "grant_types": ["authorization_code"] }),
            "grant_types",
        ),
        (
            "public client",
            json!({ "token_endpoint_auth_method": "none" }),
            "token_endpoint_auth_method",
        ),
        (
            "mtls without TLS",
            json!({ "token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=a" }),
            "token_endpoint_auth_method",
        ),
        (
            "keys without a method",
            json!({ "jwks": { "keys": [] } }),
            "jwks",
        ),
        (
            "both key sources",
            json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks": { "keys": [] }, "jwks_uri": "https://keys.example/jwks" }),
            "jwks",
        ),
        (
            "ssrf",
            json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://127.0.0.1/jwks" }),
            "jwks_uri",
        ),
        (
            "unresolvable",
            json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://no-such-host.invalid/jwks" }),
            "jwks_uri",
        ),
        (
            "plain http jwks_uri",
            json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://keys.example/jwks" }),
            "jwks_uri",
        ),
        (
            "bad jwks",
            json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks": { "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] } }),
            "",
        ),
        (
            "audience beyond the limit",
            json!({ "audience": ["https://payments.example.com"] }),
            "audience",
        ),
        (
            "relative audience",
            json!({ "audience": ["api"] }),
            "audience",
        ),
        ("bad scope", json!({ "scope": "a\"b" }), "scope"),
        (
            "long name",
            json!({ "client_name": "x".repeat(201) }),
            "name",
        ),
        ("wrong type", json!({ "scope": 5 }), "invalid type"),
        ("admin scope", json!({ "scope": "latchkey:admin" }), "admin"),
        (
            "admin read scope",
            json!({ "scope": "read latchkey:admin:read" }),
            "admin",
        ),
        ("not an object", json!([1, 2]), "object"),
    ];
    for (case, metadata, mentions) in refused {
        let result = register(&app, &token, &metadata).await;
        assert_error(
            &result,
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            case,
        );
        let description = result.1["error_description"].as_str().unwrap();
        assert!(description.contains(mentions), "{case}: {description}");
        // RFC 6749 section 5.2's characters only, and nothing about what a host resolves to.
        assert!(
            description
                .chars()
                .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\'),
            "{case}: {description}"
        );
        assert!(!description.contains("127.0.0.1"), "{case}: {description}");
        assert!(!description.contains("resolve "), "{case}: {description}");
    }
    let redirect = register(
        &app,
        &token,
        &json!({ "redirect_uris": ["https://app.example/cb"] }),
    )
    .await;
    assert_error(
        &redirect,
        StatusCode::BAD_REQUEST,
        "invalid_redirect_uri",
        "redirect_uris",
    );
    // The token is checked before the body: without one, nothing is said about the metadata.
    let response = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .post(format!("{url}?client_name=x"))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "no query");
    let raw = |content_type: &'static str, body: Vec<u8>| {
        app.http
            .post(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = raw("application/json", b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = raw(
        "application/x-www-form-urlencoded",
        b"client_name=a".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 415);
    let response = raw("application/json", vec![b' '; 70 * 1024])
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = app.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");

    // Still two uses: a key client and a secret client, then the token is used up.
    let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let (status, key_client) = register(
        &app,
        &token,
        &json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks": { "keys": [key.public_jwk()] } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key_client}");
    assert!(key_client.get("client_secret").is_none());
    assert!(key_client.get("client_secret_expires_at").is_none());
    assert_eq!(
        key_client["audience"],
        json!(["https://api.example.com"]),
        "the limit is the default"
    );
    assert_eq!(key_client["jwks"]["keys"][0]["kid"], key.kid());
    let (status, secret_client) =
        register(&app, &token, &json!({ "client_name": "billing" })).await;
    assert_eq!(status, StatusCode::CREATED, "{secret_client}");
    let id = secret_client["client_id"].as_str().unwrap();
    let secret = secret_client["client_secret"].as_str().unwrap();
    assert_eq!(token_status(&app.http, &app.base, id, secret).await, 200);
    let used_up = register(&app, &token, &json!({})).await;
    assert_error(
        &used_up,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "used up",
    );

    // Not even a token without limits registers an admin client; no token can be made to.
    let (_, unlimited) = initial_token(&app, &[]);
    let admin = register(
        &app,
        &unlimited,
        &json!({ "audience": ["urn:latchkey:admin"], "scope": "latchkey:admin" }),
    )
    .await;
    assert_error(
        &admin,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
        "admin audience",
    );
    let refused = Command::new(BIN)
        .args([
            "--database",
            &app.database_url,
            "registration-token",
            "create",
            "--scope-limit",
            "latchkey:admin",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // Expired and revoked tokens register nothing.
    let an_hour_before = ManualClock::new(T0 - 7200);
    let (_, expired) = registration_tokens::create(
        app.store.as_ref(),
        &an_hour_before,
        &Actor::Cli("test".into()),
        NewRegistrationToken {
            expires_in: 3600,
            ..NewRegistrationToken::default()
        },
    )
    .await
    .unwrap();
    let result = register(&app, &expired, &json!({})).await;
    assert_error(
        &result,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "expired",
    );
    let (other_id, other) = initial_token(&app, &[]);
    cli(&app, &["registration-token", "revoke", &other_id]);
    let result = register(&app, &other, &json!({})).await;
    assert_error(
        &result,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "revoked",
    );
    let events = cli(&app, &["audit", "list"]);
    let actions: Vec<(&str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .unwrap()
                .starts_with("registration_token")
        })
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("registration_token.create", token_id.as_str())));
    assert!(actions.contains(&("registration_token.revoke", other_id.as_str())));
    // The token itself is nowhere in the trail.
    assert!(!events.to_string().contains(&token[5..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_endpoint_takes_only_the_clients_own_token() {
    let app = spawn_app().await;
    let (_, token) = initial_token(&app, &["--scope-limit", "read write"]);
    let (_, first) = register(&app, &token, &json!({ "scope": "read" })).await;
    let (_, second) = register(&app, &token, &json!({ "scope": "read" })).await;
    let uri = first["registration_client_uri"].as_str().unwrap();
    let own = first["registration_access_token"].as_str().unwrap();
    let others = second["registration_access_token"].as_str().unwrap();
    let id = first["client_id"].as_str().unwrap();

    for (case, token) in [
        ("other client's", Some(others)),
        ("initial", Some(token.as_str())),
        ("none", None),
    ] {
        let (status, headers, body) = send(&app, reqwest::Method::GET, uri, token, None).await;
        assert_eq!(status, 401, "{case}");
        assert_eq!(body["error"], "invalid_token", "{case}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    let put = |body: Value| {
        let app = &app;
        async move {
            let (status, _, body) =
                send(app, reqwest::Method::PUT, uri, Some(own), Some(&body)).await;
            (status, body)
        }
    };
    let result = put(json!({ "client_name": "a" })).await;
    assert_error(
        &result,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "no client_id",
    );
    let result = put(json!({ "client_id": second["client_id"], "client_name": "a" })).await;
    assert_error(
        &result,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "another client_id",
    );
    let result = put(json!({ "client_id": id, "registration_access_token": own })).await;
    assert_error(
        &result,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "server-set member",
    );
    let result = put(json!({ "client_id": id, "client_secret": "not-the-secret" })).await;
    assert_error(
        &result,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "wrong secret",
    );
    let result =
        put(json!({ "client_id": id, "token_endpoint_auth_method": "client_secret_post" })).await;
    assert_error(
        &result,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
        "method change",
    );
    let result = put(json!({ "client_id": id, "scope": "read admin" })).await;
    assert_error(
        &result,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
        "beyond the limit",
    );

    // A good replacement, with the current secret repeated; what is left out returns to its
    // default (the scope: the token's limit).
    let result = put(json!({ "client_id": id, "client_secret": first["client_secret"], "client_name": "renamed" })).await;
    assert_eq!(result.0, 200, "{}", result.1);
    assert_eq!(result.1["client_name"], "renamed");
    assert_eq!(result.1["scope"], "read write");
    assert!(result.1.get("client_secret").is_none());
    assert_eq!(result.1["registration_access_token"], own);

    // A disabled client cannot manage itself; enabled again, it can.
    cli(&app, &["client", "disable", id]);
    let (status, _, body) = send(&app, reqwest::Method::GET, uri, Some(own), None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_token"))
    );
    cli(&app, &["client", "enable", id]);
    let (status, _, _) = send(&app, reqwest::Method::GET, uri, Some(own), None).await;
    assert_eq!(status, 200);

    let (status, headers, _) = send(
        &app,
        reqwest::Method::POST,
        uri,
        Some(own),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, PUT, DELETE");
    // Deleting one client leaves the other and its token working.
    let (status, _, body) = send(&app, reqwest::Method::DELETE, uri, Some(own), None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, _, _) = send(
        &app,
        reqwest::Method::GET,
        second["registration_client_uri"].as_str().unwrap(),
        Some(others),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = send(&app, reqwest::Method::DELETE, uri, Some(own), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn discovery_lists_the_registration_endpoint() {
    let app = spawn_app().await;
    let metadata: Value = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        metadata["registration_endpoint"],
        app.url("/oauth2/register")
    );
}
