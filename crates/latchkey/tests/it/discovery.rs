//! RFC 8414 metadata, the JWK Set (docs/CONFORMANCE.md, "Signing keys and rotation"), health
//! probes, and keys across restarts.

use std::sync::Arc;

use latchkey_proto::SigningAlg;
use latchkey_server::{Application, ManualClock, store};

use crate::helpers::{T0, server_config, spawn_app};

#[tokio::test]
async fn metadata_is_served_at_both_well_known_paths() {
    let app = spawn_app().await;
    let mut documents = Vec::new();
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        documents.push(response.json::<serde_json::Value>().await.unwrap());
    }
    assert_eq!(documents[0], documents[1]);
    let doc = &documents[0];
    assert_eq!(doc["issuer"], app.issuer.as_str());
    assert_eq!(
        doc["token_endpoint"],
        format!("{}/oauth2/token", app.issuer)
    );
    assert_eq!(doc["jwks_uri"], format!("{}/jwks", app.issuer));
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["client_credentials"])
    );
    let methods = serde_json::json!([
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt"
    ]);
    // RFC 8414 §2: the algorithms private_key_jwt assertions may use; never none or a MAC.
    let algs = serde_json::json!(["ES256", "EdDSA", "RS256"]);
    assert_eq!(doc["token_endpoint_auth_methods_supported"], methods);
    assert_eq!(
        doc["token_endpoint_auth_signing_alg_values_supported"],
        algs
    );
    assert_eq!(doc["response_types_supported"], serde_json::json!([]));
    // RFC 8414 §2 with RFC 7662 and RFC 7009: the lifecycle endpoints and how to authenticate.
    for (endpoint, path) in [
        ("introspection", "/oauth2/introspect"),
        ("revocation", "/oauth2/revoke"),
    ] {
        assert_eq!(
            doc[format!("{endpoint}_endpoint")],
            format!("{}{path}", app.issuer)
        );
        assert_eq!(
            doc[format!("{endpoint}_endpoint_auth_methods_supported")],
            methods
        );
        assert_eq!(
            doc[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")],
            algs
        );
    }
}

#[tokio::test]
async fn jwks_has_public_members_only_and_a_max_age() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/jwks")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let jwks: serde_json::Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    // The current key and the next one, published ahead of its turn (docs/CONFORMANCE.md,
    // "Signing keys and rotation").
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(
                key.get(private).is_none(),
                "private member {private} published"
            );
        }
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "ES256");
        assert_eq!(key["kty"], "EC");
        assert!(
            key["kid"].as_str().unwrap().len() >= 43,
            "RFC 7638 SHA-256 thumbprint"
        );
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let alive = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

#[tokio::test]
async fn servers_starting_at_once_agree_on_one_key_that_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let start = || {
        let url = url.clone();
        async move {
            let store = store::connect(&url).await.unwrap();
            let config = server_config(SigningAlg::Es256, None);
            let app = Application::build(config, store, Arc::new(ManualClock::new(T0)))
                .await
                .unwrap();
            app.signing_kid()
        }
    };
    let kids = futures_join(vec![start(), start(), start(), start()]).await;
    assert!(
        kids.windows(2).all(|w| w[0] == w[1]),
        "one current key: {kids:?}"
    );
    let after_restart = start().await;
    assert_eq!(after_restart, kids[0]);
    let keys = store::connect(&url)
        .await
        .unwrap()
        .signing_keys()
        .await
        .unwrap();
    // One current key and one next key, published ahead of its turn (docs/CONFORMANCE.md,
    // "Signing keys and rotation").
    let states: Vec<&str> = keys.iter().map(|k| k.state.as_str()).collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(states.contains(&"current") && states.contains(&"next"));
}

async fn futures_join<F: std::future::Future<Output = String> + Send + 'static>(
    futures: Vec<F>,
) -> Vec<String> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn an_issuer_with_a_path_serves_what_it_advertises() {
    let app = crate::helpers::spawn_app_with_issuer("https://auth.example.com/tenant-a/").await;
    assert_eq!(
        app.issuer, "https://auth.example.com/tenant-a",
        "trailing slash dropped"
    );
    // RFC 8414 §3.1: path insertion; and the issuer + /.well-known form many clients use.
    for path in [
        "/.well-known/oauth-authorization-server/tenant-a",
        "/tenant-a/.well-known/oauth-authorization-server",
    ] {
        let doc: serde_json::Value = app.get_json(path).await;
        assert_eq!(doc["issuer"], "https://auth.example.com/tenant-a", "{path}");
        assert_eq!(
            doc["token_endpoint"],
            "https://auth.example.com/tenant-a/oauth2/token"
        );
        assert_eq!(doc["jwks_uri"], "https://auth.example.com/tenant-a/jwks");
    }
    // The advertised endpoints, under the path; and at the root for prefix-stripping proxies.
    let client = app.client(|_| {}).await;
    for prefix in ["/tenant-a", ""] {
        assert_eq!(
            app.http
                .get(app.url(&format!("{prefix}/jwks")))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let response = app
            .http
            .post(app.url(&format!("{prefix}/oauth2/token")))
            .header("authorization", client.basic())
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{prefix}/oauth2/token");
        let body: serde_json::Value = response.json().await.unwrap();
        let (_, claims) = crate::helpers::decode_parts(body["access_token"].as_str().unwrap());
        assert_eq!(claims["iss"], "https://auth.example.com/tenant-a");
    }
}
