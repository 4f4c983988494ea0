//! DPoP proofs (RFC 9449 §4.3), checked the same way at the token endpoint and at resource
//! servers: shape, `typ`, an asymmetric `alg` of the embedded public `jwk`, the signature,
//! `htm`, `htu`, the `iat` window and, for resource requests, `ath`. No IO: remembering each
//! `jti` (§11.1) is the caller's, with the [`VerifiedProof::jti`] and its window.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_proto::{Jwk, SigningAlg};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::{KeyError, PrivateKey, VerifyingKey, thumbprint};

/// Longer proofs are refused before decoding (an RSA-4096 `jwk` fits easily).
pub const MAX_PROOF_LEN: usize = 8 * 1024;
/// At the token endpoint, a proof's `iat` may be this many seconds old.
pub const PROOF_MAX_AGE_SECONDS: i64 = 300;
/// A proof's `iat` may be this many seconds in the future (clock skew).
pub const PROOF_SKEW_SECONDS: i64 = 60;

/// JWK members that carry private key material; a proof's `jwk` must have none (§4.3 item 7).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// What the request the proof comes with looks like.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The HTTP method (`htm`).
    pub method: &'a str,
    /// The request URL (`htu` is compared without query and fragment, RFC 9449 §4.3 item 9).
    pub url: &'a str,
    /// Now, in seconds since the Unix epoch.
    pub now: i64,
    /// At a resource server: the access token, whose hash `ath` must be (§4.3 item 12).
    pub access_token: Option<&'a str>,
    /// The nonce the server requires, if it does (§8, §9).
    pub nonce: Option<&'a str>,
    /// How old `iat` may be, in seconds (every proof id must be remembered this long).
    pub max_age_seconds: i64,
}

/// A proof that passed: whose key signed it and what must be remembered against replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The RFC 7638 thumbprint of the proof's public key: `cnf.jkt` of the token it binds.
    pub jkt: String,
    /// The proof's unique id; a second use within the window is a replay.
    pub jti: String,
    /// Until when the `jti` must be remembered: after this the proof is too old anyway.
    pub remember_until: i64,
    /// The proof's `nonce`, for a server that checks nonces of its own making (§8).
    pub nonce: Option<String>,
}

/// Why a proof was refused; every case is `invalid_dpop_proof` (or `use_dpop_nonce` for
/// [`ProofError::Nonce`]) on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// Too long, not three base64url parts, or not JSON.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    Type,
    /// `alg` is missing, symmetric, `none`, or not that of the `jwk`.
    Algorithm,
    /// `jwk` is missing, private, or not a supported public key.
    Key,
    /// The signature does not verify with `jwk`.
    Signature,
    /// A required claim is missing or of the wrong type.
    Claims,
    /// `htm` is not the request's method.
    Method,
    /// `htu` is not the request's URL.
    Url,
    /// `iat` is too old or too far ahead.
    Time,
    /// `ath` is missing or not the hash of the access token.
    TokenHash,
    /// The required nonce is missing or not the current one.
    Nonce,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProofError::Malformed => "the DPoP proof is not a well-formed JWT",
            ProofError::Type => "the DPoP proof's typ must be dpop+jwt",
            ProofError::Algorithm => {
                "the DPoP proof's alg must be an asymmetric algorithm of its jwk"
            }
            ProofError::Key => "the DPoP proof needs a supported public jwk",
            ProofError::Signature => "the DPoP proof's signature does not verify",
            ProofError::Claims => "the DPoP proof needs jti, htm, htu and an integer iat",
            ProofError::Method => "the DPoP proof's htm is not this request's method",
            ProofError::Url => "the DPoP proof's htu is not this request's URL",
            ProofError::Time => "the DPoP proof's iat is outside the accepted window",
            ProofError::TokenHash => "the DPoP proof's ath is not the access token's hash",
            ProofError::Nonce => "the DPoP proof must carry the server's nonce",
        })
    }
}

impl std::error::Error for ProofError {}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<Value>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    ath: Option<String>,
    nonce: Option<String>,
}

/// The base64url SHA-256 of an access token: a proof's `ath` (RFC 9449 §4.2).
pub fn access_token_hash(access_token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Makes a DPoP proof (RFC 9449 §4.2) with `key` for a `method` request to `url` (its query
/// and fragment are left out of `htu`), at `iat`, with a random 128-bit `jti`; with `ath` for
/// an access token sent to a resource server, and the server's `nonce` when it asked for one.
pub fn make_proof(
    key: &PrivateKey,
    method: &str,
    url: &str,
    iat: i64,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> Result<String, KeyError> {
    let mut htu = Url::parse(url).map_err(|e| KeyError::Unreadable(format!("htu: {e}")))?;
    htu.set_query(None);
    htu.set_fragment(None);
    // RFC 9110 §4.2.4: a target URI carries no userinfo (verifiers refuse it, and a password
    // must not travel in a proof).
    if !htu.username().is_empty() || htu.password().is_some() {
        htu.set_username("")
            .and_then(|()| htu.set_password(None))
            .map_err(|()| KeyError::Unreadable("htu: userinfo cannot be removed".into()))?;
    }
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| KeyError::Crypto)?;
    let header = serde_json::json!({
        "typ": "dpop+jwt",
        "alg": key.alg().as_str(),
        "jwk": key.public_jwk(),
    });
    let mut claims = serde_json::json!({
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "htm": method,
        "htu": htu.as_str(),
        "iat": iat,
    });
    if let Some(token) = access_token {
        claims["ath"] = Value::String(access_token_hash(token));
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = Value::String(nonce.to_owned());
    }
    key.sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
}

/// Checks a DPoP proof against the request it came with (RFC 9449 §4.3).
pub fn verify_proof(proof: &str, check: &ProofCheck<'_>) -> Result<VerifiedProof, ProofError> {
    use ProofError as E;
    if proof.len() > MAX_PROOF_LEN || proof.bytes().filter(|&b| b == b'.').count() != 2 {
        return Err(E::Malformed);
    }
    let (signed, signature) = proof.rsplit_once('.').ok_or(E::Malformed)?;
    let (header, payload) = signed.split_once('.').ok_or(E::Malformed)?;
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| E::Malformed);
    let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| E::Malformed)?;
    // Item 4: explicit typing, so no other JWT can pass as a proof.
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(E::Type);
    }
    if header.crit.is_some() {
        return Err(E::Malformed);
    }
    // Item 5: an asymmetric algorithm we support; `none` and MACs never.
    let alg: SigningAlg = header
        .alg
        .as_deref()
        .and_then(|a| a.parse().ok())
        .ok_or(E::Algorithm)?;
    let key = public_key(header.jwk.as_ref().ok_or(E::Key)?)?;
    if key.0.alg() != alg {
        return Err(E::Algorithm);
    }
    // Item 6: signed by the key it carries.
    if !key.0.verify(signed.as_bytes(), &decode(signature)?) {
        return Err(E::Signature);
    }
    let claims: Claims = serde_json::from_slice(&decode(payload)?).map_err(|_| E::Claims)?;
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(E::Claims);
    }
    // Item 8: htm, compared exactly (methods are case-sensitive, RFC 9110 §9.1).
    if claims.htm != check.method {
        return Err(E::Method);
    }
    // Item 9: htu, without query and fragment, after normalisation.
    if !same_target(&claims.htu, check.url) {
        return Err(E::Url);
    }
    // Item 10: the nonce the server requires.
    if let Some(nonce) = check.nonce
        && claims.nonce.as_deref() != Some(nonce)
    {
        return Err(E::Nonce);
    }
    // Item 11: iat within the window.
    if claims.iat < check.now - check.max_age_seconds || claims.iat > check.now + PROOF_SKEW_SECONDS
    {
        return Err(E::Time);
    }
    // Item 12: bound to the access token it is sent with.
    if let Some(token) = check.access_token
        && claims.ath.as_deref() != Some(access_token_hash(token).as_str())
    {
        return Err(E::TokenHash);
    }
    Ok(VerifiedProof {
        jkt: key.1,
        jti: claims.jti,
        remember_until: claims.iat + check.max_age_seconds + PROOF_SKEW_SECONDS,
        nonce: claims.nonce,
    })
}

/// The proof's public key and its thumbprint; private or unsupported keys are refused.
fn public_key(jwk: &Value) -> Result<(VerifyingKey, String), ProofError> {
    let object = jwk.as_object().ok_or(ProofError::Key)?;
    if PRIVATE_MEMBERS.iter().any(|m| object.contains_key(*m)) {
        return Err(ProofError::Key);
    }
    let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
    let mut jwk = Jwk {
        kty: text("kty").ok_or(ProofError::Key)?,
        kid: String::new(),
        use_: text("use"),
        alg: text("alg"),
        crv: text("crv"),
        x: text("x"),
        y: text("y"),
        n: text("n"),
        e: text("e"),
        x5c: None,
    };
    let jkt = thumbprint(&jwk).ok_or(ProofError::Key)?;
    jwk.kid.clone_from(&jkt);
    let key = VerifyingKey::from_jwk(&jwk).ok_or(ProofError::Key)?;
    Ok((key, jkt))
}

/// RFC 9449 §4.3 item 9 with RFC 3986 §6.2.2 and §6.2.3 normalisation: scheme, host, port
/// (the default one made explicit) and path must match; query and fragment do not count. An
/// `htu` with userinfo is refused: RFC 9110 §4.2.4 forbids it in an http(s) target URI, and it
/// would let one target be written in endless ways.
fn same_target(htu: &str, url: &str) -> bool {
    let (Ok(a), Ok(b)) = (Url::parse(htu), Url::parse(url)) else {
        return false;
    };
    if !a.username().is_empty() || a.password().is_some() {
        return false;
    }
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "https://as.example/oauth2/token";
    const NOW: i64 = 1_767_225_600;

    fn proof(key: &PrivateKey, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let mut header =
            json!({ "typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": key.public_jwk() });
        let mut claims = json!({ "jti": "j1", "htm": "POST", "htu": URL, "iat": NOW });
        edit(&mut header, &mut claims);
        key.sign_jws(header.to_string().as_bytes(), claims.to_string().as_bytes())
            .unwrap()
    }

    fn check() -> ProofCheck<'static> {
        ProofCheck {
            method: "POST",
            url: URL,
            now: NOW,
            access_token: None,
            nonce: None,
            max_age_seconds: PROOF_MAX_AGE_SECONDS,
        }
    }

    #[test]
    fn a_good_proof_names_its_key() {
        for alg in SigningAlg::ALL {
            let key = PrivateKey::generate(*alg).unwrap().0;
            let verified = verify_proof(&proof(&key, |_, _| {}), &check()).unwrap();
            assert_eq!(verified.jkt, thumbprint(key.public_jwk()).unwrap());
            assert_eq!(verified.jti, "j1");
        }
        let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
        // Normalisation: case of scheme and host, the default port, and a query.
        for htu in [
            "HTTPS://AS.example/oauth2/token",
            "https://as.example:443/oauth2/token",
            "https://as.example/oauth2/token?x=1",
        ] {
            let p = proof(&key, |_, c| c["htu"] = json!(htu));
            assert!(verify_proof(&p, &check()).is_ok(), "{htu}");
        }
        let with_ath = proof(&key, |_, c| c["ath"] = json!(access_token_hash("tok")));
        let at_rs = ProofCheck {
            access_token: Some("tok"),
            ..check()
        };
        assert!(verify_proof(&with_ath, &at_rs).is_ok());
    }

    #[test]
    fn made_proofs_verify() {
        let key = PrivateKey::generate(SigningAlg::EdDsa).unwrap().0;
        let proof = make_proof(
            &key,
            "GET",
            "https://as.example/oauth2/token?q=1#f",
            NOW,
            Some("tok"),
            None,
        )
        .unwrap();
        let at_rs = ProofCheck {
            method: "GET",
            access_token: Some("tok"),
            ..check()
        };
        assert_eq!(verify_proof(&proof, &at_rs).unwrap().jkt, key.kid());
        // Userinfo never reaches htu (RFC 9110 §4.2.4), so the proof verifies.
        let with_userinfo = make_proof(
            &key,
            "GET",
            "https://user:pw@as.example/oauth2/token",
            NOW,
            Some("tok"),
            None,
        )
        .unwrap();
        assert!(verify_proof(&with_userinfo, &at_rs).is_ok());
        let again = make_proof(&key, "GET", URL, NOW, Some("tok"), None).unwrap();
        assert_ne!(
            verify_proof(&again, &at_rs).unwrap().jti,
            verify_proof(&proof, &at_rs).unwrap().jti
        );
    }

    /// RFC 7638 §3: one key, one thumbprint. Members that are not canonical (RFC 7518 §2,
    /// §6.2.1.2, §6.3.1.1; RFC 8037 §2; RFC 8032 §5.1.3) would give the same key another
    /// `jkt`, so a proof carrying them is refused even though its signature verifies.
    #[test]
    fn a_proofs_jwk_members_must_be_canonical() {
        fn b64(bytes: &[u8]) -> Value {
            json!(URL_SAFE_NO_PAD.encode(bytes))
        }
        fn decoded(v: &Value) -> Vec<u8> {
            URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap()
        }
        fn zero_first(v: &Value) -> Value {
            b64(&[&[0u8][..], &decoded(v)].concat())
        }
        let rsa = PrivateKey::generate(SigningAlg::Rs256).unwrap().0;
        let ec = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
        let ed = PrivateKey::generate(SigningAlg::EdDsa).unwrap().0;
        type Edit = fn(&mut Value);
        let cases: Vec<(&str, &PrivateKey, Edit)> = vec![
            ("RSA n with a leading zero", &rsa, |j| {
                j["n"] = zero_first(&j["n"])
            }),
            ("RSA e with a leading zero", &rsa, |j| {
                j["e"] = zero_first(&j["e"])
            }),
            ("RSA e empty", &rsa, |j| j["e"] = json!("")),
            ("EC x of 33 octets", &ec, |j| j["x"] = zero_first(&j["x"])),
            ("EC y of 33 octets", &ec, |j| j["y"] = zero_first(&j["y"])),
            ("EC x of 31 octets", &ec, |j| {
                j["x"] = b64(&decoded(&j["x"])[1..])
            }),
            ("EC y of 31 octets", &ec, |j| {
                j["y"] = b64(&decoded(&j["y"])[1..])
            }),
            ("Ed25519 x of 33 octets", &ed, |j| {
                j["x"] = zero_first(&j["x"])
            }),
            ("Ed25519 x of 31 octets", &ed, |j| {
                j["x"] = b64(&decoded(&j["x"])[1..])
            }),
            ("EC x padded", &ec, |j| {
                j["x"] = json!(format!("{}=", j["x"].as_str().unwrap()))
            }),
        ];
        for (case, key, edit) in cases {
            let p = proof(key, |h, _| edit(&mut h["jwk"]));
            assert_eq!(verify_proof(&p, &check()), Err(ProofError::Key), "{case}");
        }
        // The canonical members of the same keys pass.
        for key in [&rsa, &ec, &ed] {
            assert!(verify_proof(&proof(key, |_, _| {}), &check()).is_ok());
        }
    }

    #[test]
    fn every_rule_of_section_4_3_is_enforced() {
        let key = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
        let other = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
        let ed = PrivateKey::generate(SigningAlg::EdDsa).unwrap().0;
        let cases: Vec<(ProofError, String)> = vec![
            (
                ProofError::Type,
                proof(&key, |h, _| h["typ"] = json!("JWT")),
            ),
            (
                ProofError::Type,
                proof(&key, |h, _| _ = h.as_object_mut().unwrap().remove("typ")),
            ),
            (
                ProofError::Algorithm,
                proof(&key, |h, _| h["alg"] = json!("HS256")),
            ),
            (
                ProofError::Algorithm,
                proof(&key, |h, _| h["alg"] = json!("none")),
            ),
            (
                ProofError::Algorithm,
                proof(&key, |h, _| h["alg"] = json!("EdDSA")),
            ),
            (
                ProofError::Key,
                proof(&key, |h, _| _ = h.as_object_mut().unwrap().remove("jwk")),
            ),
            (
                ProofError::Key,
                proof(&key, |h, _| h["jwk"]["d"] = json!("AAAA")),
            ),
            (
                ProofError::Signature,
                proof(&key, |h, _| {
                    h["jwk"] = serde_json::to_value(other.public_jwk()).unwrap()
                }),
            ),
            (
                ProofError::Algorithm,
                proof(&key, |h, _| {
                    h["jwk"] = serde_json::to_value(ed.public_jwk()).unwrap()
                }),
            ),
            (
                ProofError::Claims,
                proof(&key, |_, c| _ = c.as_object_mut().unwrap().remove("jti")),
            ),
            (
                ProofError::Claims,
                proof(&key, |_, c| c["iat"] = json!(NOW.to_string())),
            ),
            (
                ProofError::Method,
                proof(&key, |_, c| c["htm"] = json!("GET")),
            ),
            (
                ProofError::Method,
                proof(&key, |_, c| c["htm"] = json!("post")),
            ),
            (
                ProofError::Url,
                proof(&key, |_, c| c["htu"] = json!("https://as.example/other")),
            ),
            (
                ProofError::Url,
                proof(&key, |_, c| {
                    c["htu"] = json!("http://as.example/oauth2/token")
                }),
            ),
            (
                ProofError::Url,
                proof(&key, |_, c| {
                    c["htu"] = json!("https://evil.example/oauth2/token")
                }),
            ),
            (
                ProofError::Url,
                proof(&key, |_, c| {
                    c["htu"] = json!("https://user@as.example/oauth2/token")
                }),
            ),
            (
                ProofError::Url,
                proof(&key, |_, c| {
                    c["htu"] = json!("https://user:pw@as.example/oauth2/token")
                }),
            ),
            (
                ProofError::Url,
                proof(&key, |_, c| {
                    c["htu"] = json!("https:user@as.example/oauth2/token")
                }),
            ),
            (
                ProofError::Time,
                proof(&key, |_, c| c["iat"] = json!(NOW - 301)),
            ),
            (
                ProofError::Time,
                proof(&key, |_, c| c["iat"] = json!(NOW + 61)),
            ),
            (
                ProofError::Malformed,
                proof(&key, |h, _| h["crit"] = json!(["x"])),
            ),
            (ProofError::Malformed, "a.b".to_owned()),
            (
                ProofError::Malformed,
                format!("{}.x.y", "a".repeat(MAX_PROOF_LEN)),
            ),
        ];
        for (expected, bad) in cases {
            assert_eq!(
                verify_proof(&bad, &check()),
                Err(expected.clone()),
                "{expected:?}"
            );
        }
        let at_rs = ProofCheck {
            access_token: Some("tok"),
            ..check()
        };
        let no_ath = proof(&key, |_, _| {});
        assert_eq!(verify_proof(&no_ath, &at_rs), Err(ProofError::TokenHash));
        let wrong_ath = proof(&key, |_, c| c["ath"] = json!(access_token_hash("other")));
        assert_eq!(verify_proof(&wrong_ath, &at_rs), Err(ProofError::TokenHash));
        let with_nonce = ProofCheck {
            nonce: Some("n1"),
            ..check()
        };
        assert_eq!(verify_proof(&no_ath, &with_nonce), Err(ProofError::Nonce));
        let nonced = proof(&key, |_, c| c["nonce"] = json!("n1"));
        assert!(verify_proof(&nonced, &with_nonce).is_ok());
    }
}
