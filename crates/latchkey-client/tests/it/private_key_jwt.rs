//! `private_key_jwt` (RFC 7523 §2.2): the client signs a fresh assertion per token request
//! with a PEM key whose public half is registered at the real server.

use base64::Engine as _;
use latchkey_client::{ClientCredentials, Error, PrivateKey};
use latchkey_proto::{ClientAuthMethod, GrantType, SigningAlg, TokenFormat};
use latchkey_server::service::admin::{self, NewClient};

use crate::helpers::{API, jwt_payload, quick_retries, spawn_stack};

/// A PEM (PKCS#8) private key and the id of a client registered with its public key.
async fn key_client(stack: &crate::helpers::Stack, alg: SigningAlg) -> (String, String) {
    let (key, pkcs8) = PrivateKey::generate(alg).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&pkcs8)
    );
    let new = NewClient {
        name: "key-client".into(),
        scope: vec!["read".into()],
        audience: vec![API.into()],
        token_ttl_seconds: 900,
        auth_method: ClientAuthMethod::PrivateKeyJwt,
        grant_types: vec![GrantType::ClientCredentials],
        can_introspect: false,
        token_format: TokenFormat::Jwt,
        reuse_tokens: false,
        limits: Default::default(),
    };
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
    let record = admin::create_key_client(
        stack.store.as_ref(),
        &stack.server_clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        new,
        admin::ClientKeys::Jwks(&jwks),
    )
    .await
    .unwrap()
    .value;
    (record.client_id, pem)
}

#[tokio::test]
async fn tokens_come_with_a_fresh_assertion_each_time() {
    let stack = spawn_stack().await;
    for alg in SigningAlg::ALL {
        let (id, pem) = key_client(&stack, *alg).await;
        let tokens = ClientCredentials::builder()
            .issuer(&stack.issuer)
            .client_id(&id)
            .private_key_pem(&pem)
            .clock(stack.client_clock.clone())
            .retry_policy(quick_retries())
            .build()
            .await
            .unwrap();
        let first = tokens.token().await.unwrap();
        assert_eq!(jwt_payload(first.secret())["client_id"], id.as_str());
        // The server refuses a reused assertion id, so a second issuance proves a new one.
        tokens.invalidate(&first).await;
        let second = tokens.token().await.unwrap();
        assert_ne!(first.secret(), second.secret(), "{alg}");
    }
}

#[tokio::test]
async fn the_assertion_audience_is_the_issuer() {
    let stack = spawn_stack().await;
    let (id, pem) = key_client(&stack, SigningAlg::Es256).await;
    let endpoint = format!("{}/oauth2/token", stack.issuer);
    let builder = || {
        ClientCredentials::builder()
            .token_endpoint(&endpoint)
            .client_id(&id)
            .private_key_pem(&pem)
            .clock(stack.client_clock.clone())
            .retry_policy(quick_retries())
    };
    // Without discovery there is no issuer to address, and the endpoint URL is never used.
    let err = builder().build().await.unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("assertion_audience")),
        "{err}"
    );
    let tokens = builder()
        .assertion_audience(&stack.issuer)
        .build()
        .await
        .unwrap();
    tokens.token().await.unwrap();
    // An assertion for another audience is refused by the server, as the client reports.
    let wrong = builder()
        .assertion_audience(&endpoint)
        .build()
        .await
        .unwrap();
    let err = wrong.token().await.unwrap_err();
    assert!(
        matches!(&err, Error::Rejected(r) if r.error == "invalid_client"),
        "{err}"
    );
}

#[tokio::test]
async fn key_configuration_mistakes_fail_at_build() {
    let stack = spawn_stack().await;
    let (id, pem) = key_client(&stack, SigningAlg::Es256).await;
    let base = || {
        ClientCredentials::builder()
            .issuer(&stack.issuer)
            .client_id(&id)
    };
    for (case, builder) in [
        (
            "secret and key",
            base().private_key_pem(&pem).client_secret("s"),
        ),
        (
            "not a key",
            base()
                .private_key_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        ),
        (
            "method without key",
            base().auth_method(ClientAuthMethod::PrivateKeyJwt),
        ),
    ] {
        let err = builder.build().await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{case}: {err}");
    }
}
