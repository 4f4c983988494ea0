//! JOSE for latchkey. Public keys from a JWK Set, parsed once into signature verifiers: the
//! algorithm of each key comes from the JWK (its `alg`, or its type and curve), never from a
//! token. Private keys ([`PrivateKey`]) that sign compact JWS.
//!
//! Shared by the resource-server guard (issuer JWKS), the server (its signing keys, and keys
//! clients register for `private_key_jwt`) and the client library (assertions), so all read
//! and write JWKs the same way.
#![deny(missing_docs)]

pub mod dpop;
mod signing;

pub use signing::{KeyError, PrivateKey};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
    VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_proto::{Jwk, SigningAlg};

/// One verification key: its id, its one algorithm, and the parsed public key.
pub struct VerifyingKey {
    kid: String,
    alg: SigningAlg,
    verifier: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl VerifyingKey {
    /// Parses a JWK; `None` for keys this guard cannot or must not use (another `use`, an
    /// unknown type or curve, an `alg` that does not fit the key, malformed numbers).
    ///
    /// Members must be canonical, so one key has one RFC 7638 thumbprint: RSA `n` and `e`
    /// without leading zero octets (RFC 7518 §6.3.1.1), EC `x` and `y` of exactly 32 octets
    /// for P-256 (RFC 7518 §6.2.1.2), Ed25519 `x` of exactly 32 octets (RFC 8037 §2) encoding
    /// a y below p (RFC 8032 §5.1.3), all in unpadded base64url without stray bits.
    pub fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let b64 = |v: &Option<String>| URL_SAFE_NO_PAD.decode(v.as_deref()?).ok();
        let (alg, bytes) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let (x, y) = (b64(&jwk.x)?, b64(&jwk.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                (SigningAlg::Es256, [&[4u8][..], &x, &y].concat())
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64(&jwk.x)?;
                // RFC 8037 §2: `x` is the 32-octet public key, whose encoding of y must be
                // below p (RFC 8032 §5.1.3 step 1).
                (x.len() == 32 && canonical_ed25519(&x)).then_some(())?;
                (SigningAlg::EdDsa, x)
            }
            ("RSA", _) => {
                let (n, e) = (b64(&jwk.n)?, b64(&jwk.e)?);
                // RFC 7518 §6.3.1.1 and §2 (Base64urlUInt): n and e in the minimum number of
                // octets. A leading zero octet would be the same key under another RFC 7638
                // thumbprint, so another `jkt` or `kid` for one key.
                if n.first().is_none_or(|&b| b == 0) || e.first().is_none_or(|&b| b == 0) {
                    return None;
                }
                // RS256 keys of 2048 to 8192 bits, as the verifier requires; refused here
                // rather than at every verification.
                let bits = n.len() * 8;
                if !(2048..=8192).contains(&bits) {
                    return None;
                }
                (SigningAlg::Rs256, rsa_public_key_der(&n, &e))
            }
            _ => return None,
        };
        // A key's stated alg must be the one its type allows (RFC 7517 §4.4).
        if jwk
            .alg
            .as_deref()
            .is_some_and(|stated| stated != alg.as_str())
        {
            return None;
        }
        let algorithm: &'static dyn VerificationAlgorithm = match alg {
            SigningAlg::Es256 => &ECDSA_P256_SHA256_FIXED,
            SigningAlg::EdDsa => &ED25519,
            SigningAlg::Rs256 => &RSA_PKCS1_2048_8192_SHA256,
        };
        let verifier = ParsedPublicKey::new(algorithm, bytes).ok()?;
        Some(VerifyingKey {
            kid: jwk.kid.clone(),
            alg,
            verifier,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// Whether `signature` is this key's signature of `message` (JWS signing input).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify_sig(message, signature).is_ok()
    }
}

/// The RFC 7638 §3 thumbprint of a public JWK: SHA-256 over its required members in
/// lexicographic order without whitespace, base64url. `None` when a required member is missing
/// or is not base64url (so untrusted input cannot change the canonical JSON).
pub fn thumbprint(jwk: &Jwk) -> Option<String> {
    fn member(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    }
    let canonical = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("EC", Some(crv @ "P-256")) => format!(
            r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
            member(&jwk.x)?,
            member(&jwk.y)?
        ),
        ("OKP", Some(crv @ "Ed25519")) => {
            format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{}"}}"#, member(&jwk.x)?)
        }
        ("RSA", _) => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            member(&jwk.e)?,
            member(&jwk.n)?
        ),
        _ => return None,
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Some(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// RFC 8032 §5.1.3 step 1: the low 255 bits of an Ed25519 public key (little-endian) are y,
/// and a y of p = 2^255 - 19 or more is another encoding of a smaller y.
fn canonical_ed25519(x: &[u8]) -> bool {
    let Some((&last, rest)) = x.split_last() else {
        return false;
    };
    let Some((&first, middle)) = rest.split_first() else {
        return false;
    };
    // y >= p exactly when its bytes are ed ff .. ff 7f or more (sign bit aside).
    !(last & 0x7f == 0x7f && middle.iter().all(|&b| b == 0xff) && first >= 0xed)
}

/// DER of `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017
/// §A.1.1), which is what aws-lc-rs parses for RSA verification.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let bytes = match bytes.iter().position(|&b| b != 0) {
            Some(first) => &bytes[first..],
            None => &[0u8][..],
        };
        // A leading 0 keeps a set top bit from reading as negative.
        let mut content = Vec::with_capacity(bytes.len() + 1);
        if bytes[0] & 0x80 != 0 {
            content.push(0);
        }
        content.extend_from_slice(bytes);
        tagged(0x02, &content)
    }
    fn tagged(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let octets: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | octets.len() as u8);
            out.extend_from_slice(&octets);
        }
        out.extend_from_slice(content);
        out
    }
    tagged(0x30, &[integer(n), integer(e)].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(kty: &str, crv: Option<&str>, alg: Option<&str>) -> Jwk {
        Jwk {
            kty: kty.into(),
            kid: "k".into(),
            use_: Some("sig".into()),
            alg: alg.map(Into::into),
            crv: crv.map(Into::into),
            x: Some(URL_SAFE_NO_PAD.encode([7u8; 32])),
            y: Some(URL_SAFE_NO_PAD.encode([9u8; 32])),
            n: None,
            e: None,
            x5c: None,
        }
    }

    /// RFC 7638 §3.1: the example RSA key and its thumbprint, as the RFC gives them.
    #[test]
    fn the_rfc_7638_example_thumbprint() {
        let example = Jwk {
            kty: "RSA".into(),
            kid: "2011-04-29".into(),
            use_: None,
            alg: Some("RS256".into()),
            crv: None,
            x: None,
            y: None,
            n: Some(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
                    .into(),
            ),
            e: Some("AQAB".into()),
            x5c: None,
        };
        assert_eq!(
            thumbprint(&example).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn a_stated_alg_must_fit_the_key() {
        // HS256 on an EC key, or an RSA alg on an OKP key, is refused: an alg the key does not
        // allow (RFC 7517 §4.4; RFC 9068 §4, docs/CONFORMANCE.md, "RFC 9068: JWT access tokens").
        assert!(VerifyingKey::from_jwk(&jwk("EC", Some("P-256"), Some("HS256"))).is_none());
        assert!(VerifyingKey::from_jwk(&jwk("OKP", Some("Ed25519"), Some("RS256"))).is_none());
        assert!(VerifyingKey::from_jwk(&jwk("oct", None, Some("HS256"))).is_none());
        let mut enc = jwk("OKP", Some("Ed25519"), None);
        enc.use_ = Some("enc".into());
        assert!(VerifyingKey::from_jwk(&enc).is_none());
        let okp = VerifyingKey::from_jwk(&jwk("OKP", Some("Ed25519"), None)).unwrap();
        assert_eq!(okp.alg(), SigningAlg::EdDsa);
    }

    /// The same rules for every JWK read (issuer JWKS, clients' registered keys, DPoP
    /// proofs): one key, one encoding, so one RFC 7638 thumbprint.
    #[test]
    fn members_must_be_canonical() {
        let rsa = PrivateKey::generate(SigningAlg::Rs256).unwrap().0;
        let good = rsa.public_jwk().clone();
        assert!(VerifyingKey::from_jwk(&good).is_some());
        let zero_first = |v: &Option<String>| {
            let bytes = URL_SAFE_NO_PAD.decode(v.as_deref().unwrap()).unwrap();
            Some(URL_SAFE_NO_PAD.encode([&[0u8][..], &bytes].concat()))
        };
        let mut n = good.clone();
        n.n = zero_first(&n.n);
        assert!(
            VerifyingKey::from_jwk(&n).is_none(),
            "RSA n with a leading zero"
        );
        let mut e = good.clone();
        e.e = zero_first(&e.e);
        assert!(
            VerifyingKey::from_jwk(&e).is_none(),
            "RSA e with a leading zero"
        );

        let ed = |x: Vec<u8>| Jwk {
            x: Some(URL_SAFE_NO_PAD.encode(x)),
            ..jwk("OKP", Some("Ed25519"), None)
        };
        // y = p + 1 (the identity point written with a y above p), and y = p - 1.
        let mut above_p = vec![0xee];
        above_p.extend([0xff; 30]);
        above_p.push(0x7f);
        assert!(VerifyingKey::from_jwk(&ed(above_p.clone())).is_none());
        above_p[31] = 0xff; // the sign bit does not make it canonical
        assert!(VerifyingKey::from_jwk(&ed(above_p.clone())).is_none());
        above_p[0] = 0xec;
        above_p[31] = 0x7f;
        assert!(VerifyingKey::from_jwk(&ed(above_p)).is_some());
        assert!(VerifyingKey::from_jwk(&ed(vec![7; 33])).is_none());
        assert!(VerifyingKey::from_jwk(&ed(vec![7; 31])).is_none());

        let mut ec = jwk("EC", Some("P-256"), None);
        let p256 = PrivateKey::generate(SigningAlg::Es256).unwrap().0;
        ec.x.clone_from(&p256.public_jwk().x);
        ec.y.clone_from(&p256.public_jwk().y);
        assert!(VerifyingKey::from_jwk(&ec).is_some());
        let mut long_x = ec.clone();
        long_x.x = zero_first(&long_x.x);
        assert!(VerifyingKey::from_jwk(&long_x).is_none());
        let mut long_y = ec.clone();
        long_y.y = zero_first(&long_y.y);
        assert!(VerifyingKey::from_jwk(&long_y).is_none());
        // Unpadded base64url only, without stray trailing bits.
        let mut padded = ec.clone();
        padded.x = padded.x.map(|x| format!("{x}="));
        assert!(VerifyingKey::from_jwk(&padded).is_none());
    }

    #[test]
    fn der_lengths_and_signs() {
        assert_eq!(
            rsa_public_key_der(&[0x01], &[0x01, 0x00, 0x01]),
            [0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x03, 0x01, 0x00, 0x01]
        );
        let der = rsa_public_key_der(&[0xff; 256], &[3]);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x08]);
        assert_eq!(&der[4..9], &[0x02, 0x82, 0x01, 0x01, 0x00]);
    }
}
