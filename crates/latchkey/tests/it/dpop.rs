//! DPoP at the token endpoint (RFC 9449 §4.3, §5, §6): a client that sends a proof gets a
//! token bound to the proof's key (`token_type: DPoP`, `cnf.jkt`); bad, replayed or doubled
//! proofs get `400 invalid_dpop_proof`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_client::PrivateKey;
use latchkey_proto::{SigningAlg, TokenFormat};
use serde_json::{Value, json};

use crate::helpers::{
    T0, TestApp, TestClient, decode_parts, server_config, spawn_app, spawn_with_config,
};

fn proof(app: &TestApp, key: &PrivateKey, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
    let mut header =
        json!({ "typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": key.public_jwk() });
    let mut claims = json!({
        "jti": URL_SAFE_NO_PAD.encode(fastrand::u128(..).to_le_bytes()),
        "htm": "POST",
        "htu": app.token_url(),
        "iat": T0,
    });
    edit(&mut header, &mut claims);
    key.sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
        .unwrap()
}

async fn token(app: &TestApp, client: &TestClient, proofs: &[&str]) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.token_url())
        .basic_auth(client.id(), Some(&client.secret))
        .form(&[("grant_type", "client_credentials")]);
    for proof in proofs {
        request = request.header("DPoP", *proof);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_proof_binds_the_token_to_its_key() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    for alg in SigningAlg::ALL {
        let key = PrivateKey::generate(*alg).unwrap().0;
        let (status, body) = token(&app, &client, &[&proof(&app, &key, |_, _| {})]).await;
        assert_eq!(status, 200, "{alg}: {body}");
        assert_eq!(body["token_type"], "DPoP");
        let (_, claims) = decode_parts(body["access_token"].as_str().unwrap());
        // The kid of a generated key is its RFC 7638 thumbprint, which cnf.jkt must be.
        assert_eq!(claims["cnf"], json!({ "jkt": key.kid() }));
    }
    // Without a proof: a bearer token, no cnf.
    let (status, body) = token(&app, &client, &[]).await;
    assert_eq!((status, body["token_type"].as_str()), (200, Some("Bearer")));
    assert!(
        decode_parts(body["access_token"].as_str().unwrap())
            .1
            .get("cnf")
            .is_none()
    );

    // Introspection reports the binding (RFC 9449 §6.2), of JWTs and of opaque tokens, whose
    // binding is stored with them.
    let rs = app
        .client(|c| {
            c.can_introspect = true;
            c.grant_types = vec![];
        })
        .await;
    let opaque = app.client(|c| c.token_format = TokenFormat::Opaque).await;
    for client in [&client, &opaque] {
        let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
        let (status, body) = token(&app, client, &[&proof(&app, &key, |_, _| {})]).await;
        assert_eq!((status, body["token_type"].as_str()), (200, Some("DPoP")));
        let introspected = app
            .introspect(&rs, body["access_token"].as_str().unwrap())
            .await;
        assert_eq!(introspected["active"], true);
        assert_eq!(introspected["token_type"], "DPoP");
        assert_eq!(introspected["cnf"], json!({ "jkt": key.kid() }));
    }

    // Discovery says which algorithms proofs may use (RFC 9449 §5.1).
    let metadata: Value = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        metadata["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "RS256"])
    );
}

#[tokio::test]
async fn bad_replayed_or_doubled_proofs_are_refused() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let good = proof(&app, &key, |_, _| {});
    assert_eq!(token(&app, &client, &[&good]).await.0, 200);
    let other = app.url("/oauth2/introspect");
    let cases = [
        ("replayed", good.clone()),
        ("typ JWT", proof(&app, &key, |h, _| h["typ"] = json!("JWT"))),
        (
            "alg none",
            proof(&app, &key, |h, _| h["alg"] = json!("none")),
        ),
        (
            "private jwk",
            proof(&app, &key, |h, _| h["jwk"]["d"] = json!("AAAA")),
        ),
        (
            "no jwk",
            proof(&app, &key, |h, _| {
                _ = h.as_object_mut().unwrap().remove("jwk")
            }),
        ),
        ("htm GET", proof(&app, &key, |_, c| c["htm"] = json!("GET"))),
        (
            "another htu",
            proof(&app, &key, |_, c| c["htu"] = json!(other)),
        ),
        (
            "iat 10 min old",
            proof(&app, &key, |_, c| c["iat"] = json!(T0 - 600)),
        ),
        (
            "iat 2 min ahead",
            proof(&app, &key, |_, c| c["iat"] = json!(T0 + 120)),
        ),
        (
            "no jti",
            proof(&app, &key, |_, c| {
                _ = c.as_object_mut().unwrap().remove("jti")
            }),
        ),
        ("not a JWT", "abc".to_owned()),
        (
            "htu with userinfo",
            proof(&app, &key, |_, c| {
                c["htu"] = json!(app.token_url().replacen("://", "://user@", 1))
            }),
        ),
        ("RSA n with a leading zero", {
            // The same RSA key written with one more octet would have another thumbprint.
            let rsa = PrivateKey::generate(SigningAlg::Rs256).unwrap().0;
            proof(&app, &rsa, |h, _| {
                let n = URL_SAFE_NO_PAD
                    .decode(h["jwk"]["n"].as_str().unwrap())
                    .unwrap();
                h["jwk"]["n"] = json!(URL_SAFE_NO_PAD.encode([&[0u8][..], &n].concat()));
            })
        }),
    ];
    for (case, bad) in cases {
        let (status, body) = token(&app, &client, &[&bad]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{case}: {body}"
        );
    }
    let (a, b) = (proof(&app, &key, |_, _| {}), proof(&app, &key, |_, _| {}));
    let (status, body) = token(&app, &client, &[&a, &b]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof"))
    );
    // A proof does not replace client authentication.
    let stranger = crate::helpers::TestClient {
        record: client.record.clone(),
        secret: "wrong".into(),
    };
    let (status, _) = token(&app, &stranger, &[&proof(&app, &key, |_, _| {})]).await;
    assert_eq!(status, 401);
}

/// A token request with one proof; returns the status, the body and the `DPoP-Nonce` header.
async fn token_with_nonce(
    app: &TestApp,
    client: &TestClient,
    proof: &str,
) -> (u16, Value, Option<String>) {
    let response = app
        .http
        .post(app.token_url())
        .basic_auth(client.id(), Some(&client.secret))
        .header("DPoP", proof)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let nonce = response
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), nonce)
}

#[tokio::test]
async fn a_required_server_nonce_is_handed_out_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = latchkey_server::store::connect(&url).await.unwrap();
    let config = latchkey_server::ServerConfig {
        dpop_nonce: true,
        ..server_config(SigningAlg::Es256, None)
    };
    let clock = latchkey_server::ManualClock::new(T0);
    let app = spawn_with_config(config, url, dir, store, clock).await;
    let client = app.client(|_| {}).await;
    let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;

    // RFC 9449 §8: a proof without a nonce gets use_dpop_nonce and the nonce to use.
    let (status, body, nonce) =
        token_with_nonce(&app, &client, &proof(&app, &key, |_, _| {})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("use_dpop_nonce"))
    );
    let nonce = nonce.expect("a DPoP-Nonce header");
    // With it: a DPoP token, and a fresh nonce for the next proof (§8.2).
    let with = |nonce: String, iat: i64| {
        proof(&app, &key, move |_, claims| {
            claims["nonce"] = json!(nonce);
            claims["iat"] = json!(iat);
        })
    };
    let (status, body, next) = token_with_nonce(&app, &client, &with(nonce.clone(), T0)).await;
    assert_eq!(
        (status, body["token_type"].as_str()),
        (200, Some("DPoP")),
        "{body}"
    );
    assert!(next.is_some());
    // A nonce is good for five minutes of the server's clock, then replaced.
    app.clock.advance(4 * 60);
    let (status, _, _) = token_with_nonce(&app, &client, &with(nonce.clone(), T0 + 240)).await;
    assert_eq!(status, 200);
    app.clock.advance(2 * 60);
    let (status, body, fresh) =
        token_with_nonce(&app, &client, &with(nonce.clone(), T0 + 360)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("use_dpop_nonce"))
    );
    assert_ne!(fresh.as_deref(), Some(nonce.as_str()));
    // A made-up nonce, or one changed by a byte, is refused the same way.
    let mut forged = fresh.clone().unwrap().into_bytes();
    forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
    for bad in ["made-up".to_owned(), String::from_utf8(forged).unwrap()] {
        let (status, body, _) = token_with_nonce(&app, &client, &with(bad, T0 + 360)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("use_dpop_nonce"))
        );
    }
    // Bearer tokens need no nonce.
    let (status, body) = token(&app, &client, &[]).await;
    assert_eq!((status, body["token_type"].as_str()), (200, Some("Bearer")));

    // The nonce is asked for before the client authenticates: a private_key_jwt client sends
    // the very same assertion again with the nonce, and it is still unused (RFC 9449 §8).
    let client_key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let key_client = app.key_client(&client_key, |_| {}).await;
    let assertion = client_key
        .sign_jws(
            json!({ "alg": "ES256", "kid": client_key.kid(), "typ": "client-authentication+jwt" })
                .to_string()
                .as_bytes(),
            json!({
                "iss": key_client.client_id, "sub": key_client.client_id, "aud": app.issuer,
                "iat": T0 + 360, "exp": T0 + 420, "jti": "one-assertion",
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    let send = |proof: String| {
        let (app, assertion) = (&app, assertion.clone());
        async move {
            let response = app
                .http
                .post(app.token_url())
                .header("DPoP", proof)
                .form(&[
                    ("grant_type", "client_credentials"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            let nonce = response
                .headers()
                .get("dpop-nonce")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            (body, nonce)
        }
    };
    let (body, nonce) = send(proof(&app, &key, |_, c| c["iat"] = json!(T0 + 360))).await;
    assert_eq!(body["error"], "use_dpop_nonce");
    let (body, _) = send(with(nonce.unwrap(), T0 + 360)).await;
    assert_eq!(body["token_type"], "DPoP", "{body}");

    // latchkey-client takes the nonce from the error and sends the request again at once.
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs((T0 + 360) as u64);
    let tokens = latchkey_client::ClientCredentials::builder()
        .token_endpoint(app.token_url())
        .client_id(client.id())
        .client_secret(client.secret.clone())
        .dpop(PrivateKey::generate(SigningAlg::Es256).unwrap().0)
        .clock(latchkey_client::ManualClock::new(now))
        .build()
        .await
        .unwrap();
    let token = tokens.token().await.unwrap();
    assert_eq!(token.token_type(), latchkey_proto::TokenType::DPoP);
}

/// Token reuse keeps a DPoP-bound token to its key: the same key gets the same token back,
/// another key or no proof gets another token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_token_stays_with_its_dpop_key() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    crate::helpers::cli_json(
        &app.database_url,
        &[],
        &["client", "update", client.id(), "--reuse-tokens"],
    );
    let first_key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let second_key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let mut tokens = Vec::new();
    for key in [&first_key, &first_key, &second_key] {
        let (status, body) = token(&app, &client, &[&proof(&app, key, |_, _| {})]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let (status, bearer) = token(&app, &client, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        tokens[1], tokens[0],
        "the same key, a new proof: the same token"
    );
    assert_ne!(tokens[2], tokens[0], "another key: another token");
    assert_ne!(
        bearer["access_token"],
        tokens[0].as_str(),
        "no proof: a bearer token"
    );
    assert_eq!(bearer["token_type"], "Bearer");
}
