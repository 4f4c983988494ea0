//! Private signing keys: generated or read once (PKCS#8 DER, or PEM as written by openssl),
//! held parsed, and used to sign compact JWS. Shared by the server (access tokens) and the
//! client library (`private_key_jwt` assertions, DPoP proofs).

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_proto::{Jwk, SigningAlg};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

use crate::{VerifyingKey, thumbprint};

/// Why a private key could not be read or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The bytes are not a private key of a supported kind; the text says what was expected.
    Unreadable(String),
    /// The cryptographic library refused to generate or sign.
    Crypto,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Unreadable(reason) => write!(f, "unreadable private key: {reason}"),
            KeyError::Crypto => f.write_str("the signing operation failed"),
        }
    }
}

impl std::error::Error for KeyError {}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A parsed private key with its public JWK (`kid` = the RFC 7638 thumbprint unless set with
/// [`PrivateKey::with_kid`]). `Debug` shows the kid and algorithm only.
pub struct PrivateKey {
    pair: Pair,
    jwk: Jwk,
    alg: SigningAlg,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kid", &self.jwk.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

const SUPPORTED: &str = "expected an EC P-256, Ed25519 or RSA (2048 to 8192 bits) private key \
                         in PEM (PKCS#8 \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")";

impl PrivateKey {
    /// Generates a new key; returns it with its PKCS#8 DER encoding for storage.
    pub fn generate(alg: SigningAlg) -> Result<(Self, Vec<u8>), KeyError> {
        let pkcs8 = match alg {
            SigningAlg::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|d| d.as_ref().to_vec()),
            // PKCS#8 v1, which every library reads (v2 adds the public key, and some refuse it).
            SigningAlg::EdDsa => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8v1())
                .map(|d| d.as_ref().to_vec()),
            SigningAlg::Rs256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| AsDer::<Pkcs8V1Der>::as_der(&k))
                .map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| KeyError::Crypto)?;
        let key = Self::from_pkcs8(alg, &pkcs8)?;
        Ok((key, pkcs8))
    }

    /// Parses a PKCS#8 DER key of the algorithm `alg`.
    pub fn from_pkcs8(alg: SigningAlg, der: &[u8]) -> Result<Self, KeyError> {
        let unreadable = |e: aws_lc_rs::error::KeyRejected| KeyError::Unreadable(e.to_string());
        let pair = match alg {
            SigningAlg::Es256 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(unreadable)?,
            ),
            SigningAlg::EdDsa => {
                Pair::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(unreadable)?)
            }
            SigningAlg::Rs256 => Pair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(unreadable)?),
        };
        Self::new(pair)
    }

    /// Reads a PEM private key as openssl writes it: PKCS#8 (`PRIVATE KEY`) of any supported
    /// kind, SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`). Encrypted keys are refused.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| KeyError::Unreadable(SUPPORTED.into()))?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
                    Pair::Ecdsa(pair)
                } else if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    Pair::Ed25519(pair)
                } else if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
                    Pair::Rsa(pair)
                } else {
                    return Err(KeyError::Unreadable(SUPPORTED.into()));
                }
            }
            PrivateKeyDer::Sec1(der) => Pair::Ecdsa(
                EcdsaKeyPair::from_private_key_der(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    der.secret_sec1_der(),
                )
                .map_err(|_| KeyError::Unreadable(SUPPORTED.into()))?,
            ),
            PrivateKeyDer::Pkcs1(der) => Pair::Rsa(
                RsaKeyPair::from_der(der.secret_pkcs1_der())
                    .map_err(|_| KeyError::Unreadable(SUPPORTED.into()))?,
            ),
            _ => return Err(KeyError::Unreadable(SUPPORTED.into())),
        };
        Self::new(pair)
    }

    fn new(pair: Pair) -> Result<Self, KeyError> {
        let b64 = |b: &[u8]| Some(URL_SAFE_NO_PAD.encode(b));
        let mut jwk = Jwk {
            kty: String::new(),
            kid: String::new(),
            use_: Some("sig".into()),
            alg: None,
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            x5c: None,
        };
        let alg = match &pair {
            Pair::Ecdsa(p) => {
                // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = p.public_key().as_ref();
                if point.len() != 65 || point[0] != 4 {
                    return Err(KeyError::Unreadable("not a P-256 key".into()));
                }
                jwk.kty = "EC".into();
                jwk.crv = Some("P-256".into());
                jwk.x = b64(&point[1..33]);
                jwk.y = b64(&point[33..]);
                SigningAlg::Es256
            }
            Pair::Ed25519(p) => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = b64(p.public_key().as_ref());
                SigningAlg::EdDsa
            }
            Pair::Rsa(p) => {
                let bits = p.public_modulus_len() * 8;
                if !(2048..=8192).contains(&bits) {
                    return Err(KeyError::Unreadable(format!(
                        "RSA keys must have 2048 to 8192 bits, not {bits}"
                    )));
                }
                let public = p.public_key();
                jwk.kty = "RSA".into();
                jwk.n = b64(public.modulus().big_endian_without_leading_zero());
                jwk.e = b64(public.exponent().big_endian_without_leading_zero());
                SigningAlg::Rs256
            }
        };
        jwk.alg = Some(alg.as_str().into());
        jwk.kid = thumbprint(&jwk).ok_or(KeyError::Crypto)?;
        Ok(PrivateKey { pair, jwk, alg })
    }

    /// Uses `kid` instead of the thumbprint, for a key registered under another id.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.jwk.kid = kid.into();
        self
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The one algorithm this key signs with.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public JWK, with `kid`, `use` and `alg`; never a private member.
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// A verifier for this key's signatures.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_jwk(&self.jwk).ok_or(KeyError::Crypto)
    }

    /// Signs the JWS signing input already in `jws` (`base64url(header).base64url(payload)`)
    /// and appends `.` and the base64url signature, making it a compact JWS.
    pub fn sign_compact(&self, jws: &mut String) -> Result<(), KeyError> {
        // Each signature is owned before the separator is appended, so the borrow of `jws`
        // ends first.
        match &self.pair {
            Pair::Ecdsa(pair) => {
                let sig = pair
                    .sign(&SystemRandom::new(), jws.as_bytes())
                    .map_err(|_| KeyError::Crypto)?;
                jws.push('.');
                URL_SAFE_NO_PAD.encode_string(sig.as_ref(), jws);
            }
            Pair::Ed25519(pair) => {
                let sig = pair.sign(jws.as_bytes());
                jws.push('.');
                URL_SAFE_NO_PAD.encode_string(sig.as_ref(), jws);
            }
            Pair::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    jws.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| KeyError::Crypto)?;
                jws.push('.');
                URL_SAFE_NO_PAD.encode_string(&sig, jws);
            }
        }
        Ok(())
    }

    /// A compact JWS of `payload` (JSON) under `header` (JSON), both given as bytes.
    pub fn sign_jws(&self, header: &[u8], payload: &[u8]) -> Result<String, KeyError> {
        let mut jws = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 360);
        URL_SAFE_NO_PAD.encode_string(header, &mut jws);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut jws);
        self.sign_compact(&mut jws)?;
        Ok(jws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_what_their_public_jwk_verifies() {
        for alg in SigningAlg::ALL {
            let (key, pkcs8) = PrivateKey::generate(*alg).unwrap();
            let again = PrivateKey::from_pkcs8(*alg, &pkcs8).unwrap();
            assert_eq!(key.kid(), again.kid());
            assert_eq!(key.kid(), thumbprint(key.public_jwk()).unwrap());
            let jws = key.sign_jws(br#"{"alg":"x"}"#, br#"{"a":1}"#).unwrap();
            let (signed, sig) = jws.rsplit_once('.').unwrap();
            let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
            let verifier = again.verifying_key().unwrap();
            assert_eq!(verifier.alg(), *alg);
            assert!(verifier.verify(signed.as_bytes(), &sig));
            assert!(!verifier.verify(b"other", &sig));
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(&pkcs8)
            );
            assert_eq!(
                PrivateKey::from_pem(pem.as_bytes()).unwrap().kid(),
                key.kid()
            );
            assert!(!format!("{key:?}").contains(&pem[30..60]));
        }
        assert!(PrivateKey::from_pem(b"not a key").is_err());
    }
}
