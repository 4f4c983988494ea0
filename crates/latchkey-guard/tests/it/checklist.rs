//! The resource server's checks (RFC 9068 §4, RFC 6750 §2 and §3; docs/CONFORMANCE.md,
//! "RFC 9068: JWT access tokens" and "RFC 6750: bearer tokens at resource servers"), one by
//! one, over HTTP against the guarded API, with tokens from the real server (or signed with
//! its key, for what it would never issue). The clock is moved.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_guard::{Invalid, Rejection};
use serde_json::json;

use crate::helpers::{API, challenge, spawn_stack};

#[tokio::test]
async fn no_token_gets_a_challenge_without_an_error_code() {
    let stack = spawn_stack().await;
    for authorization in [&[][..], &["Basic dXNlcjpwYXNz"][..]] {
        let response = stack.get("/hello", authorization).await;
        assert_eq!(response.status(), 401);
        assert_eq!(challenge(&response), format!("Bearer realm=\"{API}\""));
    }
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_caller() {
    let stack = spawn_stack().await;
    let token = stack.api_token().await;
    let response = stack.get("/hello", &[&format!("Bearer {token}")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        format!("{} read", stack.client_id)
    );
    // The same through the library API.
    let caller = stack.guard.authenticate(&token).await.unwrap();
    assert_eq!(caller.client_id(), stack.client_id);
    assert!(caller.has_scope("read") && !caller.has_scope("admin"));
    assert!(caller.audience().contains(API));
}

#[tokio::test]
async fn a_token_in_two_places_is_an_invalid_request() {
    let stack = spawn_stack().await;
    let token = stack.api_token().await;
    let bearer = format!("Bearer {token}");
    let two_headers = stack.get("/hello", &[&bearer, &bearer]).await;
    assert_eq!(two_headers.status(), 400);
    assert!(challenge(&two_headers).contains("error=\"invalid_request\""));
    let header_and_query = stack
        .http
        .get(format!("{}/hello?access_token={token}", stack.api))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(header_and_query.status(), 400);
    assert!(challenge(&header_and_query).contains("error=\"invalid_request\""));
}

/// Each case: a token and the reason it is refused; all get 401 `invalid_token`.
#[tokio::test]
async fn tokens_that_break_rfc9068_get_401_invalid_token() {
    let stack = spawn_stack().await;
    let claims = stack.claims();
    let with = |key: &str, value: serde_json::Value| {
        let mut c = claims.clone();
        c[key] = value;
        c
    };
    let es256 = |typ: &str| json!({"alg": "ES256", "typ": typ});
    let other_audience = stack
        .token("scope=read&resource=https://other.example.com")
        .await;
    let real = stack.api_token().await;
    let (header, rest) = real.split_once('.').unwrap();
    let real_header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let with_header = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut h = real_header.clone();
        edit(&mut h);
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(h.to_string()))
    };
    // `alg: none` with the signature stripped, and HS256 keyed with the public key.
    let unsigned = {
        let mut h = real_header.clone();
        h["alg"] = "none".into();
        let (_, payload_and_sig) = real.split_once('.').unwrap();
        let payload = payload_and_sig.split_once('.').unwrap().0;
        format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(h.to_string()))
    };
    let hs256 = hs256_with_public_key(&stack, &claims).await;
    let cases: Vec<(&str, String, Invalid)> = vec![
        (
            "typ JWT",
            stack.forge(es256("JWT"), claims.clone()).await,
            Invalid::Type,
        ),
        (
            "no typ",
            stack.forge(json!({"alg": "ES256"}), claims.clone()).await,
            Invalid::Type,
        ),
        (
            "wrong iss",
            stack
                .forge(es256("at+jwt"), with("iss", "https://evil.example".into()))
                .await,
            Invalid::Issuer,
        ),
        ("aud not this API", other_audience, Invalid::Audience),
        ("alg none", unsigned, Invalid::Algorithm),
        ("HS256 with the public key", hs256, Invalid::Algorithm),
        (
            "EdDSA header on an ES256 key",
            with_header(&|h| h["alg"] = "EdDSA".into()),
            Invalid::Algorithm,
        ),
        (
            "crit",
            stack
                .forge(
                    json!({"alg": "ES256", "typ": "at+jwt", "crit": ["exp"]}),
                    claims.clone(),
                )
                .await,
            Invalid::Critical,
        ),
        (
            "nbf in the future",
            stack
                .forge(es256("at+jwt"), with("nbf", (stack.now() + 60).into()))
                .await,
            Invalid::NotYetValid,
        ),
        (
            "string exp",
            stack
                .forge(
                    es256("at+jwt"),
                    with("exp", (stack.now() + 900).to_string().into()),
                )
                .await,
            Invalid::Claims,
        ),
        (
            "string iat",
            stack
                .forge(es256("at+jwt"), with("iat", stack.now().to_string().into()))
                .await,
            Invalid::Claims,
        ),
        (
            "no client_id",
            stack
                .forge(es256("at+jwt"), {
                    let mut c = claims.clone();
                    c.as_object_mut().unwrap().remove("client_id");
                    c
                })
                .await,
            Invalid::Claims,
        ),
        (
            "expired",
            stack
                .forge(es256("at+jwt"), with("exp", (stack.now() - 6).into()))
                .await,
            Invalid::Expired,
        ),
        (
            "unknown kid",
            stack
                .forge(
                    json!({"alg": "ES256", "typ": "at+jwt", "kid": "nobody"}),
                    claims.clone(),
                )
                .await,
            Invalid::UnknownKey("nobody".into()),
        ),
        ("mutated signature", flip_last(&real), Invalid::Signature),
        (
            "DPoP-bound, sent as Bearer",
            stack
                .forge(
                    es256("at+jwt"),
                    with(
                        "cnf",
                        json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
                    ),
                )
                .await,
            Invalid::NotBearer,
        ),
        (
            "certificate-bound, no certificate",
            stack
                .forge(
                    es256("at+jwt"),
                    with(
                        "cnf",
                        json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
                    ),
                )
                .await,
            Invalid::NotBearer,
        ),
        ("not a JWT", "abc".into(), Invalid::Malformed),
    ];
    for (case, token, reason) in cases {
        let response = stack.get("/hello", &[&format!("Bearer {token}")]).await;
        assert_eq!(response.status(), 401, "{case}");
        assert!(
            challenge(&response).contains("error=\"invalid_token\""),
            "{case}: {}",
            challenge(&response)
        );
        assert_eq!(
            stack.guard.authenticate(&token).await.unwrap_err(),
            Rejection::InvalidToken(reason),
            "{case}"
        );
    }
    // Case-insensitive typ and the media-type form are accepted (RFC 9068 §4).
    for typ in ["AT+JWT", "application/at+jwt"] {
        let token = stack.forge(es256(typ), claims.clone()).await;
        assert_eq!(
            stack
                .get("/hello", &[&format!("Bearer {token}")])
                .await
                .status(),
            200,
            "{typ}"
        );
    }
}

#[tokio::test]
async fn expiry_has_a_small_leeway_and_no_more() {
    let stack = spawn_stack().await;
    let token = stack.api_token().await;
    let bearer = format!("Bearer {token}");
    assert_eq!(stack.get("/hello", &[&bearer]).await.status(), 200);
    stack.advance(900 + 4); // Expired 4 s ago: inside the 5 s leeway.
    assert_eq!(stack.get("/hello", &[&bearer]).await.status(), 200);
    stack.advance(2); // 6 s ago: refused, even though the verified token is cached.
    let response = stack.get("/hello", &[&bearer]).await;
    assert_eq!(response.status(), 401);
    assert!(challenge(&response).contains("the token has expired"));
}

#[tokio::test]
async fn a_missing_scope_is_403_naming_the_scope() {
    let stack = spawn_stack().await;
    let read_only = stack.api_token().await;
    let response = stack.get("/admin", &[&format!("Bearer {read_only}")]).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        challenge(&response),
        format!("Bearer realm=\"{API}\", error=\"insufficient_scope\", scope=\"admin\"")
    );
    let admin = stack.token(&format!("scope=admin&resource={API}")).await;
    let response = stack.get("/admin", &[&format!("Bearer {admin}")]).await;
    assert_eq!(response.status(), 200);
}

/// Property: any change to any byte of a valid token (within the base64url alphabet, so the
/// header stays well-formed) gets 401, never access.
#[tokio::test]
async fn every_mutated_token_is_refused() {
    let stack = spawn_stack().await;
    let token = stack.api_token().await;
    assert!(stack.guard.authenticate(&token).await.is_ok());
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = fastrand::Rng::with_seed(0x1a7c_4e11);
    for round in 0..2000 {
        let mut bytes = token.clone().into_bytes();
        let position = rng.usize(..bytes.len());
        if bytes[position] == b'.' {
            continue;
        }
        let replacement = alphabet[rng.usize(..alphabet.len())];
        if replacement == bytes[position] {
            continue;
        }
        bytes[position] = replacement;
        let mutated = String::from_utf8(bytes).unwrap();
        // Changing the last character's padding bits can leave the decoded signature the same;
        // such a "mutation" is the same token for every verifier.
        if same_signature(&token, &mutated) && same_prefix(&token, &mutated) {
            continue;
        }
        let result = stack.guard.authenticate(&mutated).await;
        assert!(
            matches!(result, Err(Rejection::InvalidToken(_))),
            "round {round}: position {position} gave {result:?}"
        );
        if round % 100 == 0 {
            let response = stack.get("/hello", &[&format!("Bearer {mutated}")]).await;
            assert_eq!(response.status(), 401);
        }
    }
}

fn same_prefix(a: &str, b: &str) -> bool {
    a.rsplit_once('.').unwrap().0 == b.rsplit_once('.').unwrap().0
}

fn same_signature(a: &str, b: &str) -> bool {
    let sig = |t: &str| URL_SAFE_NO_PAD.decode(t.rsplit_once('.').unwrap().1).ok();
    sig(a).is_some() && sig(a) == sig(b)
}

fn flip_last(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[10] ^= 1;
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The classic confusion attack: HS256, keyed with the server's public key as published.
async fn hs256_with_public_key(
    stack: &crate::helpers::Stack,
    claims: &serde_json::Value,
) -> String {
    let jwks: serde_json::Value = stack
        .http
        .get(format!("{}/jwks", stack.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": key["kid"]});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let hmac_key =
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.to_string().as_bytes());
    let tag = aws_lc_rs::hmac::sign(&hmac_key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}
