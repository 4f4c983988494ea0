//! Issuance: what a successful token response and a JWT access token contain (RFC 6749
//! §5.1, RFC 9068 §2), verified with the independent `jsonwebtoken` crate for each algorithm.

use std::collections::BTreeSet;

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latchkey_proto::SigningAlg;
use latchkey_server::{Clock, SystemClock};

use crate::helpers::{T0, decode_parts, spawn_app, spawn_app_with};

const CC: &str = "grant_type=client_credentials";

#[tokio::test]
async fn token_response_is_exactly_rfc_6749_5_1() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    let response = app
        .token_basic(&client, "grant_type=client_credentials&scope=read")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Map<String, serde_json::Value> = response.json().await.unwrap();
    let members: BTreeSet<&str> = body.keys().map(String::as_str).collect();
    // RFC 6749 §4.4.3: no refresh token.
    assert_eq!(
        members,
        BTreeSet::from(["access_token", "token_type", "expires_in", "scope"])
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read");
}

#[tokio::test]
async fn jwt_access_token_has_rfc_9068_header_and_claims() {
    let app = spawn_app().await;
    let client = app.client(|c| c.token_ttl_seconds = 120).await;
    app.clock.advance(42);
    let body: serde_json::Value = app.token_basic(&client, CC).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let (header, claims) = decode_parts(token);

    let jwks: serde_json::Value = app.get_json("/jwks").await;
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let published: Vec<&serde_json::Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(published.contains(&&header["kid"]), "kid is published");

    assert_eq!(claims["iss"], app.issuer.as_str());
    assert_eq!(claims["sub"], client.id());
    assert_eq!(claims["client_id"], client.id());
    assert_eq!(claims["iat"], T0 + 42);
    assert_eq!(claims["exp"], T0 + 42 + 120);
    assert_eq!(body["expires_in"], 120);
    assert_eq!(claims["scope"], "read write");
    let jti = claims["jti"].as_str().unwrap();
    assert!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jti)
            .unwrap()
            .len()
            >= 16,
        "jti has 128+ bits"
    );

    let again: serde_json::Value = app.token_basic(&client, CC).await.json().await.unwrap();
    let (_, again) = decode_parts(again["access_token"].as_str().unwrap());
    assert_ne!(again["jti"], claims["jti"], "every token has its own jti");
}

#[tokio::test]
async fn tokens_verify_against_jwks_with_jsonwebtoken_for_every_algorithm() {
    for (alg, jwt_alg) in [
        (SigningAlg::Es256, Algorithm::ES256),
        (SigningAlg::EdDsa, Algorithm::EdDSA),
        (SigningAlg::Rs256, Algorithm::RS256),
    ] {
        let app = spawn_app_with(alg).await;
        // The verifier checks `exp` against the real clock, so issue at real time.
        app.clock.set(SystemClock.unix_seconds());
        let client = app.client(|_| {}).await;
        let body: serde_json::Value = app
            .token_basic(&client, "grant_type=client_credentials&scope=read")
            .await
            .json()
            .await
            .unwrap();
        let token = body["access_token"].as_str().unwrap();

        let jwks: JwkSet = app.get_json("/jwks").await;
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.alg, jwt_alg);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("kid is published");
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(jwt_alg);
        validation.set_issuer(&[app.issuer.as_str()]);
        validation.set_audience(&["https://api.example.com"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .unwrap_or_else(|e| panic!("{alg}: {e}"))
            .claims;
        assert_eq!(claims["client_id"], client.id());
        assert_eq!(claims["scope"], "read");

        // A flipped signature byte fails the same verifier.
        let mut tampered = token.to_owned().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(&tampered, &key, &validation).is_err(),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn client_secrets_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    assert_eq!(
        client.secret.len(),
        43,
        "256 bits, base64url without padding"
    );
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let needle = client.secret.as_bytes();
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle),
        "the clear secret is on disk"
    );
    assert!(!format!("{:?}", client.record).contains(&client.secret));
}
