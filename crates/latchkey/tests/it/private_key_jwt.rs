//! `private_key_jwt` client authentication (RFC 7523, draft-ietf-oauth-rfc7523bis) at the real
//! server over HTTP — every row of docs/CONFORMANCE.md, "RFC 7523 / rfc7523bis: private_key_jwt"
//! — with assertions signed here by keys whose public halves are registered the way the CLI
//! registers them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_client::PrivateKey;
use latchkey_proto::SigningAlg;
use latchkey_server::model::ClientUpdate;
use latchkey_server::service::admin::ClientKeys;
use serde_json::{Value, json};

use crate::helpers::{T0, TestApp, decode_parts, server_config, spawn_app, spawn_with_config};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn es256() -> PrivateKey {
    PrivateKey::generate(SigningAlg::Es256).unwrap().0
}

fn jti() -> String {
    URL_SAFE_NO_PAD.encode(fastrand::u128(..).to_le_bytes())
}

/// The claims of a good assertion from `client_id` to `app`, at test time.
fn claims(app: &TestApp, client_id: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": app.issuer,
        "iat": T0,
        "exp": T0 + 60,
        "jti": jti(),
    })
}

fn header(key: &PrivateKey) -> Value {
    json!({ "alg": key.alg().as_str(), "kid": key.kid(), "typ": "client-authentication+jwt" })
}

fn sign(key: &PrivateKey, header: &Value, claims: &Value) -> String {
    key.sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
        .unwrap()
}

/// Posts a client_credentials request with `extra` form pairs.
async fn post(app: &TestApp, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut pairs = vec![("grant_type", "client_credentials")];
    pairs.extend_from_slice(extra);
    let response = app
        .http
        .post(app.token_url())
        .form(&pairs)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn with_assertion(app: &TestApp, assertion: &str) -> (u16, Value) {
    app.assertion_request(assertion).await
}

fn assert_invalid_client(result: &(u16, Value), case: &str) {
    assert_eq!(result.0, 401, "{case}: {}", result.1);
    assert_eq!(result.1["error"], "invalid_client", "{case}");
}

#[tokio::test]
async fn a_signed_assertion_gets_a_token_with_every_key_type() {
    let app = spawn_app().await;
    for alg in SigningAlg::ALL {
        let key = PrivateKey::generate(*alg).unwrap().0;
        let client = app.key_client(&key, |_| {}).await;
        let id = client.client_id.as_str();
        let assertion = sign(&key, &header(&key), &claims(&app, id));
        // client_id may be sent (RFC 7521 §4.2) or left out, the assertion's sub naming it.
        let (status, body) = post(
            &app,
            &[
                ("client_id", id),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
                ("scope", "read"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{alg}: {body}");
        let (_, token) = decode_parts(body["access_token"].as_str().unwrap());
        assert_eq!(token["client_id"], id);
        assert_eq!(token["scope"], "read");
        let fresh = sign(&key, &header(&key), &claims(&app, id));
        assert_eq!(
            with_assertion(&app, &fresh).await.0,
            200,
            "{alg} without client_id"
        );
    }
}

/// rfc7523bis §4, audience: the issuer as the sole value; the 2025 audience-injection fix.
#[tokio::test]
async fn the_audience_must_be_the_issuer_alone() {
    let app = spawn_app().await;
    let key = es256();
    let client = app.key_client(&key, |_| {}).await;
    let id = client.client_id.as_str();
    let issuer = app.issuer.clone();
    let with_aud = |aud: Value| {
        let mut c = claims(&app, id);
        c["aud"] = aud;
        sign(&key, &header(&key), &c)
    };
    assert_eq!(with_assertion(&app, &with_aud(json!(issuer))).await.0, 200);
    assert_eq!(
        with_assertion(&app, &with_aud(json!([issuer]))).await.0,
        200
    );
    let other_scheme = issuer.replacen("http://", "https://", 1);
    for (case, aud) in [
        ("token endpoint", json!(app.token_url())),
        (
            "issuer and another",
            json!([issuer, "https://rs.example.com"]),
        ),
        (
            "another and the issuer",
            json!(["https://rs.example.com", issuer]),
        ),
        ("trailing slash", json!(format!("{issuer}/"))),
        ("other case", json!(issuer.to_uppercase())),
        ("other scheme", json!(other_scheme)),
        ("empty array", json!([])),
        ("number", json!(1)),
    ] {
        assert_invalid_client(&with_assertion(&app, &with_aud(aud)).await, case);
    }
}

/// The token endpoint URL only behind the compatibility flag (docs/CONFORMANCE.md, "Assertion
/// audience").
#[tokio::test]
async fn the_token_endpoint_audience_needs_the_compatibility_flag() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&url).await.unwrap();
    let config = latchkey_server::ServerConfig {
        accept_token_endpoint_audience: true,
        ..server_config(SigningAlg::Es256, None)
    };
    let clock = latchkey_server::ManualClock::new(T0);
    let app = spawn_with_config(config, url, dir, store, clock).await;
    let key = es256();
    let client = app.key_client(&key, |_| {}).await;
    let mut c = claims(&app, &client.client_id);
    c["aud"] = json!(app.token_url());
    assert_eq!(
        with_assertion(&app, &sign(&key, &header(&key), &c)).await.0,
        200
    );
    // Still the sole value, and never a list that merely contains it.
    c["aud"] = json!([app.token_url(), "https://rs.example.com"]);
    c["jti"] = json!(jti());
    assert_invalid_client(
        &with_assertion(&app, &sign(&key, &header(&key), &c)).await,
        "list",
    );
}

/// RFC 7523 §3: iss = sub = client_id; exp required, not past, not far ahead
/// (docs/CONFORMANCE.md, "Assertion lifetime"); iat/nbf up to 60 s ahead; time claims must be
/// non-negative integers.
#[tokio::test]
async fn claims_are_checked_exactly() {
    let app = spawn_app().await;
    let key = es256();
    let client = app.key_client(&key, |_| {}).await;
    let other = app.key_client(&key, |_| {}).await;
    let id = client.client_id.as_str();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&app, id);
        f(&mut c);
        sign(&key, &header(&key), &c)
    };
    for (case, ok) in [
        ("iat 50 s ahead", edit(&|c| c["iat"] = json!(T0 + 50))),
        ("nbf 50 s ahead", edit(&|c| c["nbf"] = json!(T0 + 50))),
        (
            "no iat",
            edit(&|c| _ = c.as_object_mut().unwrap().remove("iat")),
        ),
        ("exp 5 min ahead", edit(&|c| c["exp"] = json!(T0 + 300))),
        ("exp an hour ahead", edit(&|c| c["exp"] = json!(T0 + 3600))),
    ] {
        assert_eq!(with_assertion(&app, &ok).await.0, 200, "{case}");
    }
    let other_id = other.client_id.clone();
    for (case, bad) in [
        ("iss another client", edit(&|c| c["iss"] = json!(other_id))),
        ("sub another client", edit(&|c| c["sub"] = json!(other_id))),
        (
            "no exp",
            edit(&|c| _ = c.as_object_mut().unwrap().remove("exp")),
        ),
        (
            "no jti",
            edit(&|c| _ = c.as_object_mut().unwrap().remove("jti")),
        ),
        ("empty jti", edit(&|c| c["jti"] = json!(""))),
        ("expired", edit(&|c| c["exp"] = json!(T0 - 1))),
        ("exp now", edit(&|c| c["exp"] = json!(T0))),
        ("exp 2 hours ahead", edit(&|c| c["exp"] = json!(T0 + 7200))),
        ("iat 2 min ahead", edit(&|c| c["iat"] = json!(T0 + 120))),
        ("nbf 2 min ahead", edit(&|c| c["nbf"] = json!(T0 + 120))),
        (
            "string exp",
            edit(&|c| c["exp"] = json!((T0 + 60).to_string())),
        ),
        ("float exp", edit(&|c| c["exp"] = json!(T0 as f64 + 60.5))),
        ("negative iat", edit(&|c| c["iat"] = json!(-1))),
        ("string iat", edit(&|c| c["iat"] = json!(T0.to_string()))),
        ("string nbf", edit(&|c| c["nbf"] = json!(T0.to_string()))),
    ] {
        assert_invalid_client(&with_assertion(&app, &bad).await, case);
    }
    // The body's client_id must be the assertion's: another client's keys never help.
    let (status, body) = post(
        &app,
        &[
            ("client_id", &other_id),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &edit(&|_| {})),
        ],
    )
    .await;
    assert_invalid_client(&(status, body), "client_id of another client");
}

/// RFC 7523 §3 item 7: single use per (client, jti), decided by the database; two concurrent
/// replays give exactly one success; a replay store that is down fails closed
/// (docs/CONFORMANCE.md, "Assertion replay").
#[tokio::test]
async fn each_assertion_is_used_once() {
    let app = spawn_app().await;
    let key = es256();
    let client = app.key_client(&key, |_| {}).await;
    let assertion = sign(&key, &header(&key), &claims(&app, &client.client_id));
    assert_eq!(with_assertion(&app, &assertion).await.0, 200);
    assert_invalid_client(&with_assertion(&app, &assertion).await, "replay");

    let raced = sign(&key, &header(&key), &claims(&app, &client.client_id));
    let attempts = (0..16).map(|_| with_assertion(&app, &raced));
    let results = futures_util::future::join_all(attempts).await;
    let ok = results.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(ok, 1, "{results:?}");
    for result in results.iter().filter(|(status, _)| *status != 200) {
        assert_invalid_client(result, "concurrent replay");
    }

    // Another client may use the same jti: uniqueness is per client.
    let other = app.key_client(&key, |_| {}).await;
    let mut c = claims(&app, &other.client_id);
    c["jti"] = decode_parts(&raced).1["jti"].clone();
    assert_eq!(
        with_assertion(&app, &sign(&key, &header(&key), &c)).await.0,
        200
    );

    let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
    sqlx::query("ALTER TABLE assertion_jtis RENAME TO assertion_jtis_gone")
        .execute(&pool)
        .await
        .unwrap();
    let fresh = sign(&key, &header(&key), &claims(&app, &client.client_id));
    let (status, body) = with_assertion(&app, &fresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    sqlx::query("ALTER TABLE assertion_jtis_gone RENAME TO assertion_jtis")
        .execute(&pool)
        .await
        .unwrap();
    // Nothing was recorded, so the same assertion works once the store is back.
    assert_eq!(with_assertion(&app, &fresh).await.0, 200);
}

/// RFC 7523 §3 item 9: the algorithm is pinned by the registered key; header keys are ignored.
#[tokio::test]
async fn the_algorithm_is_pinned_and_header_keys_are_ignored() {
    let app = spawn_app().await;
    let key = es256();
    let client = app.key_client(&key, |_| {}).await;
    let id = client.client_id.as_str();
    let c = claims(&app, id);
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = |alg: Value| {
        let mut h = json!({ "kid": key.kid() });
        if !alg.is_null() {
            h["alg"] = alg;
        }
        format!("{}.{}.", b64(&h), b64(&c))
    };
    // HS256 keyed with the registered public key (the classic algorithm confusion).
    let public = serde_json::to_string(key.public_jwk()).unwrap();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(key.kid().to_owned()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &c,
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    // An attacker's key, announced in the header (jwk, jku, x5c) or with the victim's kid.
    let attacker = es256();
    let mut with_jwk = header(&attacker);
    with_jwk["jwk"] = serde_json::to_value(attacker.public_jwk()).unwrap();
    let mut with_jku = header(&attacker);
    with_jku["jku"] = json!(format!("{}/jwks", app.base));
    let mut with_victim_kid = header(&attacker);
    with_victim_kid["kid"] = json!(key.kid());
    // A registered key of another type: EdDSA signature under an ES256-only registration.
    let ed = PrivateKey::generate(SigningAlg::EdDsa).unwrap().0;
    let mut ed_header = header(&ed);
    ed_header["kid"] = json!(key.kid());
    let good = sign(&key, &header(&key), &c);
    let mut sig = URL_SAFE_NO_PAD
        .decode(good.rsplit_once('.').unwrap().1)
        .unwrap();
    sig[10] ^= 1;
    let mutated = format!(
        "{}.{}",
        good.rsplit_once('.').unwrap().0,
        URL_SAFE_NO_PAD.encode(sig)
    );
    for (case, bad) in [
        ("alg none", unsigned(json!("none"))),
        ("no alg", unsigned(Value::Null)),
        ("HS256 with the public key", hs256),
        ("header jwk", sign(&attacker, &with_jwk, &c)),
        ("header jku", sign(&attacker, &with_jku, &c)),
        ("victim's kid", sign(&attacker, &with_victim_kid, &c)),
        ("EdDSA for an ES256 key", sign(&ed, &ed_header, &c)),
        ("mutated signature", mutated),
    ] {
        assert_invalid_client(&with_assertion(&app, &bad).await, case);
    }
    // kid is only a hint: an unknown kid still finds the registered key of that alg.
    let mut unknown_kid = header(&key);
    unknown_kid["kid"] = json!("no-such-kid");
    assert_eq!(
        with_assertion(&app, &sign(&key, &unknown_kid, &c)).await.0,
        200
    );
}

/// rfc7523bis explicit typing: typ absent, the generic JWT (what most libraries send by
/// default) or client-authentication+jwt; the explicit type of another kind of JWT refused;
/// oversized or many-dot assertions refused before decoding.
#[tokio::test]
async fn typ_and_shape_are_checked() {
    let app = spawn_app().await;
    let key = es256();
    let client = app.key_client(&key, |_| {}).await;
    let id = client.client_id.as_str();
    let typed = |typ: Option<&str>| {
        let mut h = header(&key);
        match typ {
            Some(t) => h["typ"] = json!(t),
            None => _ = h.as_object_mut().unwrap().remove("typ"),
        }
        sign(&key, &h, &claims(&app, id))
    };
    for ok in [
        None,
        Some("client-authentication+jwt"),
        Some("JWT"),
        Some("jwt"),
        Some("application/JWT"),
    ] {
        assert_eq!(with_assertion(&app, &typed(ok)).await.0, 200, "{ok:?}");
    }
    for bad in [
        "at+jwt",
        "dpop+jwt",
        "secevent+jwt",
        "application/at+jwt",
        "token-introspection+jwt",
        "",
    ] {
        assert_invalid_client(&with_assertion(&app, &typed(Some(bad))).await, bad);
    }
    let mut padded = claims(&app, id);
    padded["pad"] = json!("x".repeat(9000));
    let oversized = sign(&key, &header(&key), &padded);
    let good = sign(&key, &header(&key), &claims(&app, id));
    let five_parts = format!("{good}.AAAA.AAAA");
    for (case, bad) in [
        ("oversized", oversized),
        ("five parts", five_parts),
        ("not base64", "!!!.!!!.!!!".to_owned()),
        ("one part", "abc".to_owned()),
    ] {
        assert_invalid_client(&with_assertion(&app, &bad).await, case);
    }
}

/// RFC 6749 §2.3 and RFC 7521 §4.2: one method per request, both assertion parameters, the
/// registered method only.
#[tokio::test]
async fn assertion_parameters_and_methods_are_checked() {
    let app = spawn_app().await;
    let key = es256();
    let client = app.key_client(&key, |_| {}).await;
    let secret_client = app.client(|_| {}).await;
    let id = client.client_id.clone();
    let assertion = || sign(&key, &header(&key), &claims(&app, &id));
    let a = assertion();
    for (case, extra) in [
        (
            "assertion and client_secret",
            vec![
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", a.as_str()),
                ("client_secret", "x"),
            ],
        ),
        (
            "assertion without its type",
            vec![("client_assertion", a.as_str())],
        ),
        (
            "type without assertion",
            vec![("client_assertion_type", ASSERTION_TYPE)],
        ),
    ] {
        let (status, body) = post(&app, &extra).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{case}"
        );
    }
    let response = app
        .http
        .post(app.token_url())
        .basic_auth(secret_client.id(), Some(&secret_client.secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "Basic and an assertion");
    let wrong_type = post(
        &app,
        &[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", &assertion()),
        ],
    )
    .await;
    assert_invalid_client(&wrong_type, "SAML assertion type");

    // A secret client cannot switch to assertions, even with a key that would verify.
    let mut c = claims(&app, secret_client.id());
    c["jti"] = json!(jti());
    assert_invalid_client(
        &with_assertion(&app, &sign(&key, &header(&key), &c)).await,
        "secret client sending an assertion",
    );
    // A key client has no secret to send.
    let (status, body) = post(&app, &[("client_id", &id), ("client_secret", "guess")]).await;
    assert_invalid_client(&(status, body), "key client sending a secret");
    // A disabled key client fails like any other.
    latchkey_server::service::admin::update_client(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        &id,
        ClientUpdate {
            enabled: Some(false),
            ..ClientUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_invalid_client(&with_assertion(&app, &assertion()).await, "disabled client");
}

/// Rotation: `client update` with new keys takes effect on the running server; the old key
/// stops working.
#[tokio::test]
async fn replacing_the_keys_rotates_them() {
    let app = spawn_app().await;
    let old = es256();
    let new = PrivateKey::generate(SigningAlg::EdDsa).unwrap().0;
    let client = app.key_client(&old, |_| {}).await;
    let id = client.client_id.clone();
    let update = |keys: Vec<&PrivateKey>| {
        let jwks = json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() });
        let (store, clock, id) = (app.store.clone(), app.clock.clone(), id.clone());
        async move {
            latchkey_server::service::admin::replace_client_keys(
                store.as_ref(),
                &clock,
                &latchkey_server::model::Actor::Cli("test".into()),
                &id,
                ClientKeys::Jwks(&jwks.to_string()),
                None,
            )
            .await
        }
    };
    let try_key = |key: &PrivateKey| sign(key, &header(key), &claims(&app, &id));
    update(vec![&old, &new]).await.unwrap();
    assert_eq!(with_assertion(&app, &try_key(&old)).await.0, 200);
    assert_eq!(with_assertion(&app, &try_key(&new)).await.0, 200);
    update(vec![&new]).await.unwrap();
    assert_invalid_client(&with_assertion(&app, &try_key(&old)).await, "old key");
    assert_eq!(with_assertion(&app, &try_key(&new)).await.0, 200);
    // Keys with private members are refused, and the registered keys stay.
    let mut leaked = serde_json::to_value(new.public_jwk()).unwrap();
    leaked["d"] = json!("AAAA");
    let err = latchkey_server::service::admin::replace_client_keys(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        &id,
        ClientKeys::Jwks(&json!({ "keys": [leaked] }).to_string()),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("private key material"), "{err}");
    assert_eq!(with_assertion(&app, &try_key(&new)).await.0, 200);
}

/// A JWK Set server the test controls, on loopback: serves `keys`, counts fetches, and can be
/// switched off.
struct PublishedKeys {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Option<Value>>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn publish(keys: Vec<&PrivateKey>) -> PublishedKeys {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let document = |keys: Vec<&PrivateKey>| json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() });
    let served = std::sync::Arc::new(std::sync::Mutex::new(Some(document(keys))));
    let fetches = std::sync::Arc::new(AtomicUsize::new(0));
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get({
            let (served, fetches) = (served.clone(), fetches.clone());
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                match body {
                    Some(body) => {
                        ([("cache-control", "max-age=600")], axum::Json(body)).into_response()
                    }
                    None => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    PublishedKeys {
        url,
        keys: served,
        fetches,
    }
}

impl PublishedKeys {
    fn serve(&self, keys: Option<Vec<&PrivateKey>>) {
        *self.keys.lock().unwrap() = keys
            .map(|keys| json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() }));
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

use axum::response::IntoResponse as _;

async fn spawn_allowing_private_jwks_uri() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&url).await.unwrap();
    let config = latchkey_server::ServerConfig {
        allow_private_jwks_uri: true,
        ..server_config(SigningAlg::Es256, None)
    };
    spawn_with_config(
        config,
        url,
        dir,
        store,
        latchkey_server::ManualClock::new(T0),
    )
    .await
}

/// Registers a private_key_jwt client whose keys are at `uri`.
async fn register_jwks_uri(
    app: &TestApp,
    uri: String,
    allow_private: bool,
) -> Result<latchkey_server::model::ClientRecord, latchkey_server::service::admin::AdminError> {
    let keys = ClientKeys::JwksUri {
        uri: &uri,
        allow_private,
    };
    latchkey_server::service::admin::create_key_client(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        key_client_new(),
        keys,
    )
    .await
    .map(|applied| applied.value)
}

fn key_client_new() -> latchkey_server::service::admin::NewClient {
    latchkey_server::service::admin::NewClient {
        name: "published-keys".into(),
        scope: vec!["read".into()],
        audience: vec!["https://api.example.com".into()],
        token_ttl_seconds: 900,
        auth_method: latchkey_proto::ClientAuthMethod::PrivateKeyJwt,
        grant_types: vec![latchkey_proto::GrantType::ClientCredentials],
        can_introspect: false,
        token_format: latchkey_proto::TokenFormat::Jwt,
        reuse_tokens: false,
        limits: Default::default(),
    }
}

/// Keys at a jwks_uri are fetched with a cache, refetched for a new kid, and never from inside
/// the network unless allowed (docs/CONFORMANCE.md, "Client keys at a jwks_uri").
#[tokio::test]
async fn keys_published_at_a_jwks_uri_are_fetched_and_cached() {
    let app = spawn_allowing_private_jwks_uri().await;
    let old = es256();
    let published = publish(vec![&old]).await;
    let admin = |uri: String, allow_private: bool| register_jwks_uri(&app, uri, allow_private);
    // SSRF: loopback, private, link-local and plain http are refused at registration.
    for uri in [
        published.url.replace("http://", "https://"),
        "https://10.0.0.8/jwks.json".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::1]/jwks.json".to_owned(),
        "https://localhost/jwks.json".to_owned(),
        "http://93.184.216.34/jwks.json".to_owned(),
        // Every special-purpose range, not only the common ones.
        "https://[::127.0.0.1]/jwks.json".to_owned(),
        "https://[::ffff:127.0.0.1]/jwks.json".to_owned(),
        "https://[64:ff9b::a9fe:a9fe]/jwks.json".to_owned(),
        "https://[64:ff9b:1::1]/jwks.json".to_owned(),
        "https://[2002:7f00:1::1]/jwks.json".to_owned(),
        "https://[2001:0:4136:e378::1]/jwks.json".to_owned(),
        "https://[fec0::1]/jwks.json".to_owned(),
        "https://198.18.0.1/jwks.json".to_owned(),
        "https://192.0.0.170/jwks.json".to_owned(),
        "https://240.0.0.1/jwks.json".to_owned(),
    ] {
        let err = admin(uri.clone(), false).await.unwrap_err();
        assert!(
            err.to_string().contains("inside the network") || err.to_string().contains("https"),
            "{uri}: {err}"
        );
    }
    let client = admin(published.url.clone(), true).await.unwrap();
    let id = client.client_id.clone();
    let token = |key: &PrivateKey| {
        let (key_header, c) = (header(key), claims(&app, &id));
        sign(key, &key_header, &c)
    };
    assert_eq!(with_assertion(&app, &token(&old)).await.0, 200);
    assert_eq!(with_assertion(&app, &token(&old)).await.0, 200);
    assert_eq!(published.fetches(), 1, "the key set is cached");

    // The client rotates: a new kid is fetched once, however many requests carry it (once
    // 30 s have passed since the last fetch).
    app.clock.advance(31);
    let new = PrivateKey::generate(SigningAlg::EdDsa).unwrap().0;
    published.serve(Some(vec![&old, &new]));
    for _ in 0..3 {
        assert_eq!(with_assertion(&app, &token(&new)).await.0, 200);
    }
    assert_eq!(published.fetches(), 2);
    // An unknown kid does not refetch again within 30 s.
    let stranger = es256();
    assert_invalid_client(
        &with_assertion(&app, &token(&stranger)).await,
        "unknown key",
    );
    assert_eq!(published.fetches(), 2);

    // The endpoint goes down: the keys held still work.
    published.serve(None);
    app.clock.advance(31);
    assert_eq!(
        with_assertion(
            &app,
            &sign(&old, &header(&old), &{
                let mut c = claims(&app, &id);
                c["iat"] = json!(T0 + 31);
                c["exp"] = json!(T0 + 91);
                c
            })
        )
        .await
        .0,
        200
    );
}

/// Proxy variables never reach the fetches of keys: a proxy would resolve the name itself,
/// past the address check. `latchkey serve` runs with HTTPS_PROXY (and friends) pointing at a
/// listener that counts connections; a client whose jwks_uri names localhost (registered with
/// --allow-private-jwks-uri, the server started without it) gets no token, and the proxy is
/// never contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_are_ignored_by_key_fetches() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let contacted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&contacted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = proxy.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let key = es256();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(["--database", &database, "serve", "--listen", "127.0.0.1:0"])
        .args(["--issuer", "https://auth.latchkey.test"])
        .env("RUST_LOG", "info");
    for variable in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
    ] {
        command.env(variable, &proxy_url);
    }
    let (_server, line) = crate::gateways::start(command, "latchkey is serving");
    let base = format!("http://{}", crate::gateways::listen_field(&line));
    let store = latchkey_server::store::connect(&database).await.unwrap();
    let client = latchkey_server::service::admin::create_key_client(
        store.as_ref(),
        &latchkey_server::SystemClock,
        &latchkey_server::model::Actor::Cli("test".into()),
        key_client_new(),
        ClientKeys::JwksUri {
            uri: "https://localhost:9/jwks.json",
            allow_private: true,
        },
    )
    .await
    .unwrap()
    .value;
    #[allow(clippy::disallowed_methods)] // The server runs on the real clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let id = client.client_id.as_str();
    let claims = json!({
        "iss": id, "sub": id, "aud": "https://auth.latchkey.test",
        "iat": now, "exp": now + 60, "jti": jti(),
    });
    let response = reqwest::Client::new()
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &sign(&key, &header(&key), &claims)),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        [401, 503].contains(&response.status().as_u16()),
        "{}",
        response.status()
    );
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "the proxy was contacted"
    );
}

/// Fail closed: a client whose jwks_uri never answered cannot authenticate (503), and a server
/// without --allow-private-jwks-uri does not fetch from inside the network at all.
#[tokio::test]
async fn unreachable_or_inner_jwks_uris_fail_closed() {
    let key = es256();
    let published = publish(vec![&key]).await;
    published.serve(None);
    let app = spawn_allowing_private_jwks_uri().await;
    let client = register_jwks_uri(&app, published.url.clone(), true)
        .await
        .unwrap();
    let (status, body) = with_assertion(
        &app,
        &sign(&key, &header(&key), &claims(&app, &client.client_id)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );

    // The same registration on a server that keeps to public addresses: never fetched.
    published.serve(Some(vec![&key]));
    let strict = spawn_app().await;
    let client = register_jwks_uri(&strict, published.url.clone(), true)
        .await
        .unwrap();
    let before = published.fetches();
    assert_invalid_client(
        &with_assertion(
            &strict,
            &sign(&key, &header(&key), &claims(&strict, &client.client_id)),
        )
        .await,
        "inner jwks_uri on a strict server",
    );
    assert_eq!(published.fetches(), before);
}
