//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, draft-ietf-oauth-rfc7523bis;
//! docs/CONFORMANCE.md, "RFC 7523 / rfc7523bis: private_key_jwt"): checking a client assertion
//! against the keys the client registered. No IO: the single-use `jti` check is the caller's
//! (`Store::use_assertion_jti`), after this passes.

use std::borrow::Borrow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_jose::VerifyingKey;
use serde::Deserialize;

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longer assertions are refused before any decoding.
pub const MAX_ASSERTION_LEN: usize = 8 * 1024;

/// An assertion may live at most this long from now. RFC 7523 §3 lets a server refuse an
/// `exp` "unreasonably far in the future"; an hour is what deployed clients sign by default
/// (authlib's `PrivateKeyJWT`) and what hosted servers accept, and it bounds how long a used
/// `jti` must be remembered. See docs/CONFORMANCE.md, "Assertion lifetime".
pub const MAX_LIFETIME_SECONDS: i64 = 3600;

/// `iat` and `nbf` may be this far in the future (clock skew between client and server).
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// What an assertion must say, besides being signed by one of the client's keys.
#[derive(Debug, Clone, Copy)]
pub struct AssertionPolicy<'a> {
    /// This server's issuer identifier: the one audience accepted (rfc7523bis §5).
    pub issuer: &'a str,
    /// The token endpoint URL, also accepted as the sole audience, only when an operator has
    /// turned on this compatibility for clients that cannot be fixed. Off (`None`) by
    /// default: accepting endpoint URLs is what the 2025 audience-injection attacks used.
    pub compatible_audience: Option<&'a str>,
}

/// A verified assertion: what the single-use check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The assertion's unique id.
    pub jti: String,
    /// Its expiry: the id must be remembered until then.
    pub expires_at: i64,
}

/// Why an assertion was refused. Every case is `invalid_client` on the wire; the variant is
/// for the server's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Too long, not three base64url segments, or not JSON.
    #[error("malformed client assertion")]
    Malformed,
    /// An explicit `typ` that names another kind of JWT (`at+jwt`, `dpop+jwt`, ...).
    #[error("the assertion's typ names another kind of JWT")]
    Type,
    /// A `crit` header: extensions this server does not understand (RFC 7515 §4.1.11).
    #[error("the assertion has critical header extensions")]
    Critical,
    /// No registered key of the client uses the header's `alg` (`none`, HS256...).
    #[error("the assertion's algorithm is not that of a registered key")]
    Algorithm,
    /// No registered key verifies the signature.
    #[error("the assertion's signature does not verify")]
    Signature,
    /// Claims missing or of the wrong type (time claims must be non-negative integers).
    #[error("the assertion's claims are malformed")]
    Claims,
    /// `iss` or `sub` is not the client id.
    #[error("the assertion's iss and sub must be the client id")]
    Subject,
    /// `aud` is not the issuer as its sole value.
    #[error("the assertion's audience must be the issuer alone")]
    Audience,
    /// `exp` has passed.
    #[error("the assertion has expired")]
    Expired,
    /// `exp` is further ahead than allowed.
    #[error("the assertion lives too long")]
    TooLong,
    /// `iat` or `nbf` is too far in the future.
    #[error("the assertion is not valid yet")]
    NotYetValid,
    /// `iat` is further back than allowed (federated tokens).
    #[error("the token was issued too long ago")]
    Stale,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
    // `jwk`, `jku`, `x5u`, `x5c` are ignored: keys come from registration, never the token.
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
}

/// Whether an explicit `typ` header is one a client assertion or a workload identity token
/// may carry: `client-authentication+jwt` (rfc7523bis explicit typing) or the generic `JWT`
/// that most client libraries put in every header by default (authlib, PyJWT, the
/// `jsonwebtoken` crate, go-jose, Kubernetes). Compared without case and with an optional
/// `application/` prefix (RFC 7515 §4.1.9). rfc7523bis makes explicit typing REQUIRED of
/// clients but says rejecting untyped assertions is NOT RECOMMENDED for servers; what must
/// never pass is a JWT that says it is something else (`at+jwt`, `dpop+jwt`, `secevent+jwt`).
/// An absent `typ` is the caller's to accept. See docs/CONFORMANCE.md, "Assertion typ".
pub fn assertion_typ_allowed(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    typ == "client-authentication+jwt" || typ == "jwt"
}

/// The checks every assertion passes before its claims are read: shape, `typ`, no `crit`,
/// the algorithm of a given key, and its signature. Returns the claims, not yet checked.
fn signed_claims<K: Borrow<VerifyingKey>>(
    assertion: &str,
    keys: &[K],
) -> Result<Claims, AssertionError> {
    use AssertionError as E;
    // Oversized or many-dot input (a JWE has four dots) is refused before decoding.
    if assertion.len() > MAX_ASSERTION_LEN || assertion.bytes().filter(|&b| b == b'.').count() != 2
    {
        return Err(E::Malformed);
    }
    let (signed, signature) = assertion.rsplit_once('.').ok_or(E::Malformed)?;
    let (header, payload) = signed.split_once('.').ok_or(E::Malformed)?;
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| E::Malformed);
    let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| E::Malformed)?;
    // A DPoP proof or an access token must never pass as a client assertion; an untyped
    // or generically typed one must (rfc7523bis, the paragraph on explicit typing).
    if header
        .typ
        .as_deref()
        .is_some_and(|typ| !assertion_typ_allowed(typ))
    {
        return Err(E::Type);
    }
    if header.crit.is_some() {
        return Err(E::Critical);
    }
    // The algorithm is pinned by the keys: only keys of the header's alg are tried, and a
    // kid (untrusted input) only narrows the choice when it names one of them.
    let of_alg: Vec<&VerifyingKey> = keys
        .iter()
        .map(Borrow::borrow)
        .filter(|k| k.alg().as_str() == header.alg)
        .collect();
    if of_alg.is_empty() {
        return Err(E::Algorithm);
    }
    let named: Vec<&VerifyingKey> = match &header.kid {
        Some(kid) if of_alg.iter().any(|k| k.kid() == kid) => {
            of_alg.into_iter().filter(|k| k.kid() == kid).collect()
        }
        _ => of_alg,
    };
    let signature = decode(signature)?;
    if !named
        .iter()
        .any(|k| k.verify(signed.as_bytes(), &signature))
    {
        return Err(E::Signature);
    }
    let claims: Claims = serde_json::from_slice(&decode(payload)?).map_err(|_| E::Claims)?;
    if claims.exp < 0 || claims.iat.is_some_and(|t| t < 0) || claims.nbf.is_some_and(|t| t < 0) {
        return Err(E::Claims);
    }
    Ok(claims)
}

/// The one audience value: a string, or a one-element array. A list of several is refused
/// whatever it holds (rfc7523bis §5).
fn sole_audience(aud: &Audience) -> Option<&str> {
    match aud {
        Audience::One(aud) => Some(aud),
        Audience::Many(list) if list.len() == 1 => Some(&list[0]),
        Audience::Many(_) => None,
    }
}

/// RFC 7523 §3 item 4 and the skew rules: not expired, not yet valid by more than the skew.
fn check_times(claims: &Claims, now: i64) -> Result<(), AssertionError> {
    if claims.exp <= now {
        return Err(AssertionError::Expired);
    }
    let ahead = now.saturating_add(CLOCK_SKEW_SECONDS);
    if claims.iat.is_some_and(|t| t > ahead) || claims.nbf.is_some_and(|t| t > ahead) {
        return Err(AssertionError::NotYetValid);
    }
    Ok(())
}

/// Checks `assertion` for the client `client_id` with its registered `keys` (RFC 7523 §3 as
/// updated by rfc7523bis §4).
pub fn verify_assertion<K: Borrow<VerifyingKey>>(
    assertion: &str,
    client_id: &str,
    keys: &[K],
    policy: &AssertionPolicy<'_>,
    now: i64,
) -> Result<VerifiedAssertion, AssertionError> {
    use AssertionError as E;
    let claims = signed_claims(assertion, keys)?;
    let jti = claims
        .jti
        .clone()
        .filter(|j| !j.is_empty())
        .ok_or(E::Claims)?;
    // RFC 7523 §3 items 1 and 2: iss and sub are the client id.
    if claims.iss != client_id || claims.sub != client_id {
        return Err(E::Subject);
    }
    // rfc7523bis §5: the issuer identifier as the sole audience, compared exactly (no
    // trailing slash, no other case or scheme).
    let sole = sole_audience(&claims.aud).ok_or(E::Audience)?;
    if sole != policy.issuer && Some(sole) != policy.compatible_audience {
        return Err(E::Audience);
    }
    check_times(&claims, now)?;
    if claims.exp - now > MAX_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS {
        return Err(E::TooLong);
    }
    Ok(VerifiedAssertion {
        jti,
        expires_at: claims.exp,
    })
}

/// What a workload identity token from a trusted external issuer must say (federated
/// workload identity): exactly this `iss`, `sub` and sole `aud`.
#[derive(Debug, Clone, Copy)]
pub struct FederatedPolicy<'a> {
    /// The external issuer identifier, compared exactly.
    pub issuer: &'a str,
    /// The workload's subject, compared exactly.
    pub subject: &'a str,
    /// The audience, compared exactly, as the sole value.
    pub audience: &'a str,
    /// How far ahead `exp` and how far back `iat` (required) may be, in seconds.
    pub max_token_age: i64,
}

/// A federated token's `exp` may be at most this far ahead and its `iat` this far back,
/// unless the client was registered with another limit: a day. Kubernetes projected tokens
/// live an hour by default, CI systems' minutes; a token good for a year is a leaked
/// credential waiting to happen.
pub const DEFAULT_FEDERATED_MAX_TOKEN_AGE: i64 = 24 * 3600;

/// Checks a workload identity token (a Kubernetes service-account token, a CI system's OIDC
/// token) signed by one of its issuer's `keys`. Such tokens are reused until they expire, as
/// their issuer intends, so no single use is enforced; but a token must have been issued
/// (`iat`, required) and expire within the policy's `max_token_age` of now.
pub fn verify_federated_assertion<K: Borrow<VerifyingKey>>(
    assertion: &str,
    keys: &[K],
    policy: &FederatedPolicy<'_>,
    now: i64,
) -> Result<(), AssertionError> {
    use AssertionError as E;
    let claims = signed_claims(assertion, keys)?;
    if claims.iss != policy.issuer || claims.sub != policy.subject {
        return Err(E::Subject);
    }
    if sole_audience(&claims.aud) != Some(policy.audience) {
        return Err(E::Audience);
    }
    check_times(&claims, now)?;
    if claims.exp.saturating_sub(now) > policy.max_token_age {
        return Err(E::TooLong);
    }
    match claims.iat {
        None => Err(E::Claims),
        Some(iat) if now.saturating_sub(iat) > policy.max_token_age => Err(E::Stale),
        Some(_) => Ok(()),
    }
}

/// The `sub` of an assertion, read without verifying anything: only to find the client whose
/// keys must then verify it. `None` for anything malformed.
pub fn unverified_subject(assertion: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Subject {
        sub: String,
    }
    if assertion.len() > MAX_ASSERTION_LEN {
        return None;
    }
    let payload = URL_SAFE_NO_PAD.decode(assertion.split('.').nth(1)?).ok()?;
    serde_json::from_slice::<Subject>(&payload)
        .ok()
        .map(|s| s.sub)
}

/// The `kid` of an assertion's header, read without verifying anything: only to pick which
/// of a client's published keys to fetch. `None` for none or anything malformed.
pub fn unverified_kid(assertion: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Kid {
        kid: Option<String>,
    }
    if assertion.len() > MAX_ASSERTION_LEN {
        return None;
    }
    let header = URL_SAFE_NO_PAD.decode(assertion.split('.').next()?).ok()?;
    serde_json::from_slice::<Kid>(&header).ok()?.kid
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
    };
    use latchkey_proto::Jwk;
    use serde_json::{Value, json};

    const ISSUER: &str = "https://auth.example.com";
    const CLIENT: &str = "client-1";
    const NOW: i64 = 1_767_225_600;

    struct Signer {
        pair: EcdsaKeyPair,
        jwk: Jwk,
    }

    fn es256(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = Jwk {
            kty: "EC".into(),
            kid: kid.into(),
            use_: Some("sig".into()),
            alg: Some("ES256".into()),
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
            y: Some(URL_SAFE_NO_PAD.encode(&point[33..65])),
            n: None,
            e: None,
            x5c: None,
        };
        Signer { pair, jwk }
    }

    fn sign(signer: &Signer, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = signer
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn claims() -> Value {
        json!({"iss": CLIENT, "sub": CLIENT, "aud": ISSUER, "exp": NOW + 60, "iat": NOW,
               "jti": "a-unique-id"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut c = claims();
        c[key] = value;
        c
    }

    fn check(token: &str, keys: &[&Signer]) -> Result<VerifiedAssertion, AssertionError> {
        let keys: Vec<VerifyingKey> = keys
            .iter()
            .map(|s| VerifyingKey::from_jwk(&s.jwk).unwrap())
            .collect();
        let policy = AssertionPolicy {
            issuer: ISSUER,
            compatible_audience: None,
        };
        verify_assertion(token, CLIENT, &keys, &policy, NOW)
    }

    #[test]
    fn a_good_assertion_passes_and_names_its_jti() {
        let key = es256("k1");
        for header in [
            json!({"alg": "ES256", "kid": "k1"}),
            json!({"alg": "ES256", "typ": "client-authentication+jwt"}),
            json!({"alg": "ES256", "kid": "unknown-but-harmless"}),
        ] {
            let verified = check(&sign(&key, &header, &claims()), &[&key]).unwrap();
            assert_eq!(verified.jti, "a-unique-id");
            assert_eq!(verified.expires_at, NOW + 60);
        }
        // A one-element array audience is the same as the string.
        let token = sign(
            &key,
            &json!({"alg": "ES256"}),
            &with("aud", json!([ISSUER])),
        );
        assert!(check(&token, &[&key]).is_ok());
    }

    #[test]
    fn the_audience_is_the_issuer_alone() {
        use AssertionError::Audience;
        let key = es256("k1");
        let header = json!({"alg": "ES256"});
        for aud in [
            json!(format!("{ISSUER}/oauth2/token")),
            json!([ISSUER, "https://other.example.com"]),
            json!(format!("{ISSUER}/")),
            json!("HTTPS://AUTH.EXAMPLE.COM"),
            json!("http://auth.example.com"),
            json!([]),
        ] {
            let token = sign(&key, &header, &with("aud", aud.clone()));
            assert_eq!(check(&token, &[&key]), Err(Audience), "{aud}");
        }
        // Behind the explicit compatibility flag, the token endpoint alone is accepted.
        let endpoint = format!("{ISSUER}/oauth2/token");
        let token = sign(&key, &header, &with("aud", json!(endpoint)));
        let keys = [VerifyingKey::from_jwk(&key.jwk).unwrap()];
        let lenient = AssertionPolicy {
            issuer: ISSUER,
            compatible_audience: Some(&endpoint),
        };
        assert!(verify_assertion(&token, CLIENT, &keys, &lenient, NOW).is_ok());
    }

    #[test]
    fn issuer_subject_times_and_jti_follow_rfc7523() {
        use AssertionError::*;
        let key = es256("k1");
        let header = json!({"alg": "ES256"});
        let mut no_jti = claims();
        no_jti.as_object_mut().unwrap().remove("jti");
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        let cases: Vec<(&str, Value, AssertionError)> = vec![
            ("iss other", with("iss", json!("someone-else")), Subject),
            ("sub other", with("sub", json!("someone-else")), Subject),
            ("expired", with("exp", json!(NOW - 1)), Expired),
            ("exp now", with("exp", json!(NOW)), Expired),
            ("too long", with("exp", json!(NOW + 3600 + 61)), TooLong),
            ("iat ahead", with("iat", json!(NOW + 120)), NotYetValid),
            ("nbf ahead", with("nbf", json!(NOW + 120)), NotYetValid),
            (
                "string exp",
                with("exp", json!((NOW + 60).to_string())),
                Claims,
            ),
            ("float exp", with("exp", json!(NOW as f64 + 60.5)), Claims),
            ("negative iat", with("iat", json!(-5)), Claims),
            ("no exp", no_exp, Claims),
            ("no jti", no_jti, Claims),
            ("empty jti", with("jti", json!("")), Claims),
        ];
        for (case, claims, expected) in cases {
            let token = sign(&key, &header, &claims);
            assert_eq!(check(&token, &[&key]), Err(expected), "{case}");
        }
        // Up to a minute of skew on iat and nbf is tolerated.
        let token = sign(&key, &header, &with("iat", json!(NOW + 50)));
        assert!(check(&token, &[&key]).is_ok());
    }

    #[test]
    fn the_algorithm_is_pinned_by_the_registered_key() {
        use AssertionError::*;
        let key = es256("k1");
        let other = es256("k2");
        let good = sign(&key, &json!({"alg": "ES256"}), &claims());
        let (signed, _) = good.rsplit_once('.').unwrap();
        let payload = signed.split_once('.').unwrap().1;
        let header = |h: Value| URL_SAFE_NO_PAD.encode(h.to_string());
        // `none` without a signature.
        let none = format!("{}.{payload}.", header(json!({"alg": "none"})));
        assert_eq!(check(&none, &[&key]), Err(Algorithm));
        // HS256 keyed with the registered public key.
        let hs_signed = format!("{}.{payload}", header(json!({"alg": "HS256"})));
        let mac_key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            serde_json::to_string(&key.jwk).unwrap().as_bytes(),
        );
        let tag = aws_lc_rs::hmac::sign(&mac_key, hs_signed.as_bytes());
        let hs256 = format!("{hs_signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(check(&hs256, &[&key]), Err(Algorithm));
        // Another algorithm than the key's.
        let eddsa = format!("{}.{payload}.AAAA", header(json!({"alg": "EdDSA"})));
        assert_eq!(check(&eddsa, &[&key]), Err(Algorithm));
        // No alg at all.
        let missing = format!("{}.{payload}.AAAA", header(json!({"typ": "JWT"})));
        assert_eq!(check(&missing, &[&key]), Err(Malformed));
        // Signed by a key the client did not register, even if the header embeds it.
        let embedded = sign(
            &other,
            &json!({"alg": "ES256", "kid": "k2", "jwk": other.jwk, "jku": "https://evil.example/jwks"}),
            &claims(),
        );
        assert_eq!(check(&embedded, &[&key]), Err(Signature));
        // With both keys registered, either signs.
        assert!(check(&embedded, &[&key, &other]).is_ok());
        // An Ed25519 key only takes EdDSA.
        let rng = SystemRandom::new();
        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref())
            .unwrap();
        let ed_jwk = Jwk {
            kty: "OKP".into(),
            kid: "ed".into(),
            use_: None,
            alg: None,
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())),
            y: None,
            n: None,
            e: None,
            x5c: None,
        };
        let ed_key = VerifyingKey::from_jwk(&ed_jwk).unwrap();
        let ed_signed = format!("{}.{payload}", header(json!({"alg": "EdDSA"})));
        let ed_token = format!(
            "{ed_signed}.{}",
            URL_SAFE_NO_PAD.encode(ed.sign(ed_signed.as_bytes()).as_ref())
        );
        let policy = AssertionPolicy {
            issuer: ISSUER,
            compatible_audience: None,
        };
        assert!(
            verify_assertion(
                &ed_token,
                CLIENT,
                std::slice::from_ref(&ed_key),
                &policy,
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn typ_crit_size_and_shape() {
        use AssertionError::*;
        let key = es256("k1");
        for typ in [
            "at+jwt",
            "dpop+jwt",
            "secevent+jwt",
            "application/at+jwt",
            "",
            "jose",
        ] {
            let token = sign(&key, &json!({"alg": "ES256", "typ": typ}), &claims());
            assert_eq!(check(&token, &[&key]), Err(Type), "{typ}");
        }
        for typ in ["JWT", "jwt", "application/jwt", "APPLICATION/JWT"] {
            let token = sign(&key, &json!({"alg": "ES256", "typ": typ}), &claims());
            assert!(check(&token, &[&key]).is_ok(), "{typ}");
        }
        let token = sign(
            &key,
            &json!({"alg": "ES256", "typ": "Client-Authentication+JWT"}),
            &claims(),
        );
        assert!(check(&token, &[&key]).is_ok(), "typ is case-insensitive");
        let crit = sign(&key, &json!({"alg": "ES256", "crit": ["exp"]}), &claims());
        assert_eq!(check(&crit, &[&key]), Err(Critical));
        assert_eq!(check("a.b.c.d.e", &[&key]), Err(Malformed), "a JWE shape");
        assert_eq!(
            check(&"a".repeat(MAX_ASSERTION_LEN + 1), &[&key]),
            Err(Malformed)
        );
        let long = sign(
            &key,
            &json!({"alg": "ES256"}),
            &with("pad", json!("x".repeat(MAX_ASSERTION_LEN))),
        );
        assert_eq!(check(&long, &[&key]), Err(Malformed));
    }
}
