//! RFC 9449 §7 at the guard (docs/CONFORMANCE.md, "RFC 9449: DPoP"): a DPoP-bound token from
//! the real server is accepted with the DPoP scheme and a valid proof for this request, and
//! refused as Bearer, without a proof, with another key's proof, a replayed proof, or a proof
//! for another request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_client::PrivateKey;
use latchkey_jose::dpop::access_token_hash;
use latchkey_proto::SigningAlg;
use serde_json::{Value, json};

use crate::helpers::{API, Stack, T0, challenge, serve_api, spawn_stack};

fn proof(key: &PrivateKey, htm: &str, htu: &str, edit: impl FnOnce(&mut Value)) -> String {
    let header = json!({ "typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": key.public_jwk() });
    let mut claims = json!({
        "jti": URL_SAFE_NO_PAD.encode(fastrand::u128(..).to_le_bytes()),
        "htm": htm,
        "htu": htu,
        "iat": T0,
    });
    edit(&mut claims);
    key.sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
        .unwrap()
}

/// A DPoP-bound token for the API from the real server.
async fn dpop_token(stack: &Stack, key: &PrivateKey) -> String {
    let token_url = format!("{}/oauth2/token", stack.issuer);
    let response = stack
        .http
        .post(&token_url)
        .basic_auth(&stack.client_id, Some(stack.secret()))
        .header("DPoP", proof(key, "POST", &token_url, |_| {}))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", API),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn call(stack: &Stack, authorization: &str, proofs: &[&str]) -> reqwest::Response {
    let mut request = stack
        .http
        .get(format!("{}/hello", stack.api))
        .header("authorization", authorization);
    for proof in proofs {
        request = request.header("DPoP", *proof);
    }
    request.send().await.unwrap()
}

const HTU: &str = "https://api.example.com/hello";

#[tokio::test]
async fn a_bound_token_needs_its_keys_proof_for_each_request() {
    let stack = spawn_stack().await;
    let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let token = dpop_token(&stack, &key).await;
    let ath = access_token_hash(&token);
    let good = |edit: &dyn Fn(&mut Value)| {
        proof(&key, "GET", HTU, |c| {
            c["ath"] = json!(ath);
            edit(c);
        })
    };
    let scheme = format!("DPoP {token}");
    let first = good(&|_| {});
    let response = call(&stack, &scheme, &[&first]).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().starts_with(&stack.client_id));
    // A second request needs a second proof.
    assert_eq!(call(&stack, &scheme, &[&good(&|_| {})]).await.status(), 200);

    let other_key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let other_token = stack.api_token().await;
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("no proof", vec![]),
        ("replayed proof", vec![first.clone()]),
        ("two proofs", vec![good(&|_| {}), good(&|_| {})]),
        (
            "another key",
            vec![proof(&other_key, "GET", HTU, |c| c["ath"] = json!(ath))],
        ),
        (
            "another method",
            vec![proof(&key, "POST", HTU, |c| c["ath"] = json!(ath))],
        ),
        (
            "another URL",
            vec![proof(&key, "GET", "https://api.example.com/admin", |c| {
                c["ath"] = json!(ath)
            })],
        ),
        (
            "the internal URL",
            vec![proof(&key, "GET", &format!("{}/hello", stack.api), |c| {
                c["ath"] = json!(ath)
            })],
        ),
        ("no ath", vec![proof(&key, "GET", HTU, |_| {})]),
        (
            "another token's ath",
            vec![good(&|c| c["ath"] = json!(access_token_hash(&other_token)))],
        ),
        ("an old proof", vec![good(&|c| c["iat"] = json!(T0 - 120))]),
    ];
    for (case, proofs) in cases {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let response = call(&stack, &scheme, &proofs).await;
        assert_eq!(response.status(), 401, "{case}");
        let challenge = challenge(&response);
        assert!(
            challenge.starts_with("DPoP ") && challenge.contains("error=\"invalid_dpop_proof\""),
            "{case}: {challenge}"
        );
        assert!(challenge.contains("algs=\"ES256 EdDSA RS256\""), "{case}");
    }

    // RFC 9449 §7.2: the bound token sent as Bearer is refused, with or without a proof.
    let response = call(&stack, &format!("Bearer {token}"), &[&good(&|_| {})]).await;
    assert_eq!(response.status(), 401);
    assert!(challenge(&response).contains("error=\"invalid_token\""));
    // A bearer token sent with the DPoP scheme is refused too (RFC 9449 §7.1).
    let response = call(
        &stack,
        &format!("DPoP {other_token}"),
        &[&proof(&key, "GET", HTU, |c| {
            c["ath"] = json!(access_token_hash(&other_token))
        })],
    )
    .await;
    assert_eq!(response.status(), 401);
    let challenge_text = challenge(&response);
    assert!(
        challenge_text.starts_with("DPoP ") && challenge_text.contains("error=\"invalid_token\""),
        "{challenge_text}"
    );
}

#[tokio::test]
async fn without_a_token_both_schemes_are_offered() {
    let stack = spawn_stack().await;
    let response = stack.get("/hello", &[]).await;
    assert_eq!(response.status(), 401);
    let challenges: Vec<&str> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    assert!(challenges[0].starts_with("Bearer realm="));
    assert!(challenges[1].starts_with("DPoP realm=") && challenges[1].contains("algs="));
}

/// latchkey-client with a DPoP key: the token endpoint binds its token, and each request to
/// the guarded API (the middleware path, and the proof helper) carries a fresh proof.
#[tokio::test]
async fn latchkey_client_sends_dpop_proofs() {
    let stack = spawn_stack().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let guard = latchkey_guard::Guard::builder()
        .issuer(&stack.issuer)
        .audience(API)
        .jwks_uri(&stack.jwks_uri)
        .public_origin(&origin)
        .clock(stack.clock.clone())
        .build()
        .await
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|caller: latchkey_guard::Caller| async move {
                caller.client_id().to_owned()
            }),
        )
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tokens = latchkey_client::ClientCredentials::builder()
        .issuer(&stack.issuer)
        .client_id(&stack.client_id)
        .client_secret(stack.secret())
        .audience(API)
        .scope("read")
        .dpop(PrivateKey::generate(SigningAlg::EdDsa).unwrap().0)
        .clock(stack.clock.clone())
        .build()
        .await
        .unwrap();
    let token = tokens.token().await.unwrap();
    assert_eq!(token.token_type(), latchkey_proto::TokenType::DPoP);
    let authorization = token.authorization();
    assert!(authorization.to_str().unwrap().starts_with("DPoP "));
    let url = format!("{origin}/hello");
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(latchkey_client::BearerMiddleware::new(tokens.clone()))
        .build();
    for _ in 0..3 {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), stack.client_id);
    }
    // The same token without a proof is refused.
    let response = stack
        .http
        .get(&url)
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A proof made for one request does not work for another.
    let proof = tokens
        .dpop_proof(&token, "GET", &format!("{origin}/other"))
        .unwrap()
        .unwrap();
    let response = stack
        .http
        .get(&url)
        .header("authorization", token.authorization())
        .header("DPoP", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// RFC 9449 §11.1 with bounded memory: each key may have so many proof ids remembered. A key
/// flooding proofs has its own refused once over that quota; another key's fresh proofs keep
/// working, replays stay refused, and expiry (the clock moved, no sleeping) frees the room.
#[tokio::test]
async fn a_flooding_key_cannot_crowd_out_another() {
    let stack = spawn_stack().await;
    let guard = latchkey_guard::Guard::builder()
        .issuer(&stack.issuer)
        .audience(API)
        .jwks_uri(&stack.jwks_uri)
        .dpop_proofs_per_key(3)
        .clock(stack.clock.clone())
        .build()
        .await
        .unwrap();
    let api = serve_api(&guard).await;
    let flooder = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
    let other = PrivateKey::generate(SigningAlg::EdDsa).unwrap().0;
    let flooder_token = dpop_token(&stack, &flooder).await;
    let other_token = dpop_token(&stack, &other).await;
    // A fresh proof for GET /hello with `key` for `token`, made now.
    let fresh = |key: &PrivateKey, token: &str| {
        proof(key, "GET", HTU, |c| {
            c["ath"] = json!(access_token_hash(token));
            c["iat"] = json!(stack.now());
        })
    };
    let send = async |token: &str, proof: &str| {
        let response = stack
            .http
            .get(format!("{api}/hello"))
            .header("authorization", format!("DPoP {token}"))
            .header("DPoP", proof)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, challenge.unwrap_or_default())
    };

    let first = fresh(&flooder, &flooder_token);
    assert_eq!(send(&flooder_token, &first).await.0, 200);
    for _ in 0..2 {
        let proof = fresh(&flooder, &flooder_token);
        assert_eq!(send(&flooder_token, &proof).await.0, 200);
    }
    for _ in 0..20 {
        let proof = fresh(&flooder, &flooder_token);
        let (status, challenge) = send(&flooder_token, &proof).await;
        assert_eq!(status, 401);
        assert!(
            challenge.contains("error=\"invalid_dpop_proof\"")
                && challenge.contains("too many recent DPoP proofs"),
            "{challenge}"
        );
    }
    for _ in 0..3 {
        let proof = fresh(&other, &other_token);
        assert_eq!(send(&other_token, &proof).await.0, 200, "another key");
    }
    let (status, challenge) = send(&flooder_token, &first).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("used before"), "{challenge}");

    // Proof ids are remembered for max age plus skew (120 s): until then the quota holds...
    stack.advance(119);
    let proof = fresh(&flooder, &flooder_token);
    assert_eq!(send(&flooder_token, &proof).await.0, 401);
    // ...and then the room is free again, while the old proof is still refused.
    stack.advance(1);
    let proof = fresh(&flooder, &flooder_token);
    assert_eq!(send(&flooder_token, &proof).await.0, 200);
    assert_eq!(send(&flooder_token, &proof).await.0, 401, "a replay");
    assert_eq!(send(&flooder_token, &first).await.0, 401, "an old replay");
}
