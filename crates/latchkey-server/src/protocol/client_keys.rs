//! The public keys a client registers for `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9):
//! which JWK Sets an operator may register, in what form they are stored, and how they are
//! read back into verifiers.

use latchkey_jose::VerifyingKey;
use latchkey_proto::{Jwk, JwkSet};

use crate::protocol::mutual_tls::public_jwk;
use serde_json::Value;

/// A client may register at most this many keys (a current one and a few for rotation).
pub const MAX_KEYS: usize = 10;

/// The largest JWK Set document accepted (a few RSA keys fit easily).
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// JWK members that carry private key material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
/// A client registers public keys only: a private key sent to the server is a leak.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks a JWK Set an operator registers and returns it in the form stored: each key reduced
/// to the public members latchkey reads, with a `kid` (its RFC 7638 thumbprint when the set
/// gave none). The error says, for the operator, which key is wrong and why.
pub fn normalize_jwks(document: &str) -> Result<String, String> {
    if document.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "the JWK Set is larger than {} KiB",
            MAX_JWKS_BYTES / 1024
        ));
    }
    let value: Value =
        serde_json::from_str(document).map_err(|e| format!("the JWK Set is not JSON: {e}"))?;
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("a JWK Set is an object with a \"keys\" array (RFC 7517 §5)")?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(format!("register between 1 and {MAX_KEYS} keys"));
    }
    let mut out: Vec<Jwk> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let n = i + 1;
        let object = key
            .as_object()
            .ok_or_else(|| format!("key {n} is not a JSON object"))?;
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| object.contains_key(**m)) {
            return Err(format!(
                "key {n} holds private key material ({member:?}): register the public key only, \
                 and keep the private key with the client"
            ));
        }
        let text = |name: &str| match object.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("key {n}: {name:?} must be a string")),
        };
        let mut jwk = Jwk {
            kty: text("kty")?.ok_or_else(|| format!("key {n} has no \"kty\""))?,
            kid: text("kid")?.unwrap_or_default(),
            use_: text("use")?,
            alg: text("alg")?,
            crv: text("crv")?,
            x: text("x")?,
            y: text("y")?,
            n: text("n")?,
            e: text("e")?,
            x5c: None,
        };
        let parsed = VerifyingKey::from_jwk(&jwk).ok_or_else(|| {
            format!(
                "key {n} cannot verify client assertions: latchkey accepts EC P-256 (ES256), \
                 OKP Ed25519 (EdDSA) and RSA of 2048 to 8192 bits (RS256) signing keys, with \
                 \"use\" absent or \"sig\" and an \"alg\" that fits the key"
            )
        })?;
        if jwk.kid.is_empty() {
            jwk.kid = latchkey_jose::thumbprint(&jwk)
                .ok_or_else(|| format!("key {n} has no RFC 7638 thumbprint"))?;
        }
        if jwk.kid.len() > 256 || jwk.kid.chars().any(char::is_control) {
            return Err(format!(
                "key {n}: \"kid\" must be at most 256 characters, no control characters"
            ));
        }
        if out.iter().any(|k| k.kid == jwk.kid) {
            return Err(format!("key {n} repeats the kid {:?}", jwk.kid));
        }
        jwk.x5c = checked_x5c(object.get("x5c"), &jwk).map_err(|why| format!("key {n}: {why}"))?;
        // The algorithm is pinned at registration, so a token's header cannot choose it.
        jwk.alg = Some(parsed.alg().as_str().to_owned());
        jwk.use_ = Some("sig".to_owned());
        out.push(jwk);
    }
    serde_json::to_string(&JwkSet { keys: out }).map_err(|e| e.to_string())
}

/// RFC 7517 §4.7: an `x5c` is a chain of standard-base64 DER certificates, leaf first, and
/// the leaf's key is the JWK's key. Kept so `self_signed_tls_client_auth` can match the
/// certificate a client presents (RFC 8705 §2.2.2).
fn checked_x5c(x5c: Option<&Value>, jwk: &Jwk) -> Result<Option<Vec<String>>, String> {
    use base64::Engine as _;
    let Some(x5c) = x5c else {
        return Ok(None);
    };
    let chain = x5c
        .as_array()
        .filter(|chain| (1..=MAX_KEYS).contains(&chain.len()))
        .ok_or("\"x5c\" must be an array of 1 to 10 certificates")?;
    let mut out = Vec::with_capacity(chain.len());
    for (i, cert) in chain.iter().enumerate() {
        let der = cert
            .as_str()
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .ok_or("each \"x5c\" entry is a standard-base64 DER certificate")?;
        if i == 0 {
            let leaf = public_jwk(&der).map_err(|why| format!("its x5c certificate: {why}"))?;
            if latchkey_jose::thumbprint(&leaf) != latchkey_jose::thumbprint(jwk) {
                return Err("the key of its first x5c certificate is not the JWK's key".into());
            }
        }
        out.push(cert.as_str().unwrap_or_default().to_owned());
    }
    Ok(Some(out))
}

/// Parses a stored JWK Set (written by [`normalize_jwks`]) into verifiers, once per load of
/// the client. A key that no longer parses is left out, so it verifies nothing.
pub fn registered_keys(stored: Option<&str>) -> Vec<VerifyingKey> {
    let Some(stored) = stored else {
        return Vec::new();
    };
    match serde_json::from_str::<JwkSet>(stored) {
        Ok(set) => set.keys.iter().filter_map(VerifyingKey::from_jwk).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // The P-256 key of RFC 7515 Appendix A.3.
    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn ec(extra: Value) -> Value {
        let mut key = json!({"kty": "EC", "crv": "P-256", "x": X, "y": Y});
        key.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        key
    }

    #[test]
    fn a_public_key_is_stored_with_a_thumbprint_kid_and_pinned_alg() {
        let stored = normalize_jwks(&json!({"keys": [ec(json!({}))]}).to_string()).unwrap();
        let set: JwkSet = serde_json::from_str(&stored).unwrap();
        assert_eq!(set.keys[0].alg.as_deref(), Some("ES256"));
        assert_eq!(set.keys[0].use_.as_deref(), Some("sig"));
        assert_eq!(
            set.keys[0].kid,
            latchkey_jose::thumbprint(&set.keys[0]).unwrap()
        );
        let keys = registered_keys(Some(&stored));
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), set.keys[0].kid);
    }

    #[test]
    fn private_material_and_unusable_keys_are_refused() {
        for (bad, why) in [
            (json!({"keys": [ec(json!({"d": "AAAA"}))]}), "private"),
            (json!({"keys": [{"kty": "oct", "k": "AAAA"}]}), "private"),
            (
                json!({"keys": [ec(json!({"alg": "RS256"}))]}),
                "cannot verify",
            ),
            (
                json!({"keys": [ec(json!({"use": "enc"}))]}),
                "cannot verify",
            ),
            (
                json!({"keys": [ec(json!({"crv": "P-384"}))]}),
                "cannot verify",
            ),
            (
                json!({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
                "cannot verify",
            ),
            (json!({"keys": []}), "between"),
            (
                json!({"keys": [ec(json!({"kid": "a"})), ec(json!({"kid": "a"}))]}),
                "repeats",
            ),
            (json!([ec(json!({}))]), "\"keys\" array"),
            (json!({"keys": [ec(json!({"kid": 7}))]}), "must be a string"),
        ] {
            let err = normalize_jwks(&bad.to_string()).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(normalize_jwks("not json").is_err());
    }
}
