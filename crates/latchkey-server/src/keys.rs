//! Signing keys: generation, the public JWK with an RFC 7638 thumbprint as `kid`, and JWT
//! signing. A key is parsed once when loaded and held in memory; signing never re-parses it.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use latchkey_proto::{Jwk, JwkSet, SigningAlg};
use serde::Serialize;

use crate::store::{KeyState, Store, StoreError, StoredKey};

/// Why a key could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The cryptographic library refused to generate or sign.
    #[error("signing failed")]
    Crypto,
    /// Stored key material does not parse as the algorithm it is stored under.
    #[error("stored signing key {kid} is unreadable: {reason}")]
    Unreadable {
        /// The key id.
        kid: String,
        /// What was wrong.
        reason: String,
    },
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A parsed private key, ready to sign access tokens.
pub struct SigningKey {
    kid: String,
    alg: SigningAlg,
    /// `base64url(header) + "."`, computed once: the header never changes for a key.
    header_prefix: String,
    pair: Pair,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl SigningKey {
    /// Generates a new key; returns it with its PKCS#8 DER encoding for storage.
    pub fn generate(alg: SigningAlg) -> Result<(Self, Vec<u8>), KeyError> {
        let pkcs8 = match alg {
            SigningAlg::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|d| d.as_ref().to_vec()),
            SigningAlg::EdDsa => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8())
                .map(|d| d.as_ref().to_vec()),
            SigningAlg::Rs256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k))
                .map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| KeyError::Crypto)?;
        let key = Self::from_pkcs8(alg, &pkcs8)?;
        Ok((key, pkcs8))
    }

    /// Parses a stored key.
    pub fn from_pkcs8(alg: SigningAlg, der: &[u8]) -> Result<Self, KeyError> {
        let unreadable = |reason: String| KeyError::Unreadable {
            kid: String::new(),
            reason,
        };
        let (pair, jwk) = match alg {
            SigningAlg::Es256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|e| unreadable(e.to_string()))?;
                // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = pair.public_key().as_ref();
                if point.len() != 65 || point[0] != 4 {
                    return Err(unreadable("unexpected P-256 public key encoding".into()));
                }
                let jwk = public_jwk(
                    "EC",
                    Some("P-256"),
                    Some(&point[1..33]),
                    Some(&point[33..]),
                    None,
                    None,
                );
                (Pair::Ecdsa(pair), jwk)
            }
            SigningAlg::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| unreadable(e.to_string()))?;
                let jwk = public_jwk(
                    "OKP",
                    Some("Ed25519"),
                    Some(pair.public_key().as_ref()),
                    None,
                    None,
                    None,
                );
                (Pair::Ed25519(pair), jwk)
            }
            SigningAlg::Rs256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| unreadable(e.to_string()))?;
                let public = pair.public_key();
                let jwk = public_jwk(
                    "RSA",
                    None,
                    None,
                    None,
                    Some(public.modulus().big_endian_without_leading_zero()),
                    Some(public.exponent().big_endian_without_leading_zero()),
                );
                (Pair::Rsa(pair), jwk)
            }
        };
        let kid = thumbprint(&jwk);
        let jwk = Jwk {
            kid: kid.clone(),
            use_: Some("sig".into()),
            alg: Some(alg.as_str().into()),
            ..jwk
        };
        // RFC 9068 §2.1: access tokens carry `typ: at+jwt`.
        let header = serde_json::json!({ "alg": alg.as_str(), "kid": kid, "typ": "at+jwt" });
        let mut header_prefix = URL_SAFE_NO_PAD.encode(header.to_string());
        header_prefix.push('.');
        Ok(SigningKey {
            kid,
            alg,
            header_prefix,
            pair,
            jwk,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public JWK (no private members).
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs `claims` as a compact JWS with this key's cached header.
    pub fn sign_jwt(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Crypto)?;
        let mut jwt = String::with_capacity(self.header_prefix.len() + payload.len() * 4 / 3 + 360);
        jwt.push_str(&self.header_prefix);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        // Each signature is computed over the whole `header.payload` and owned before the
        // separator is appended, so the borrow of `jwt` ends first.
        match &self.pair {
            Pair::Ecdsa(pair) => {
                let sig = pair
                    .sign(&SystemRandom::new(), jwt.as_bytes())
                    .map_err(|_| KeyError::Crypto)?;
                jwt.push('.');
                URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut jwt);
            }
            Pair::Ed25519(pair) => {
                let sig = pair.sign(jwt.as_bytes());
                jwt.push('.');
                URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut jwt);
            }
            Pair::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    jwt.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| KeyError::Crypto)?;
                jwt.push('.');
                URL_SAFE_NO_PAD.encode_string(&sig, &mut jwt);
            }
        }
        Ok(jwt)
    }
}

fn public_jwk(
    kty: &str,
    crv: Option<&str>,
    x: Option<&[u8]>,
    y: Option<&[u8]>,
    n: Option<&[u8]>,
    e: Option<&[u8]>,
) -> Jwk {
    let b64 = |v: Option<&[u8]>| v.map(|b| URL_SAFE_NO_PAD.encode(b));
    Jwk {
        kty: kty.into(),
        kid: String::new(),
        use_: None,
        alg: None,
        crv: crv.map(Into::into),
        x: b64(x),
        y: b64(y),
        n: b64(n),
        e: b64(e),
    }
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace.
fn thumbprint(jwk: &Jwk) -> String {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let canonical = match jwk.kty.as_str() {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s(&jwk.crv),
            s(&jwk.x),
            s(&jwk.y)
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            s(&jwk.crv),
            s(&jwk.x)
        ),
        _ => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s(&jwk.e), s(&jwk.n)),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The keys a running server uses: the one it signs with and the set it publishes.
#[derive(Debug)]
pub struct KeyRing {
    signing: Arc<SigningKey>,
    jwks_json: Bytes,
}

impl KeyRing {
    /// Loads the current key for `alg`, creating it if the database has none (several servers
    /// starting at once agree on one, see [`Store::insert_current_key_if_none`]).
    pub async fn load_or_create(
        store: &dyn Store,
        alg: SigningAlg,
        now: i64,
    ) -> Result<Self, KeyError> {
        let mut stored = store.signing_keys().await?;
        if !stored
            .iter()
            .any(|k| k.alg == alg && k.state == KeyState::Current)
        {
            let (key, pkcs8) = SigningKey::generate(alg)?;
            let candidate = StoredKey {
                kid: key.kid.clone(),
                alg,
                state: KeyState::Current,
                private_key: pkcs8,
                public_jwk: serde_json::to_string(&key.jwk).map_err(|_| KeyError::Crypto)?,
                created_at: now,
            };
            let winner = store.insert_current_key_if_none(&candidate).await?;
            if winner.kid == candidate.kid {
                tracing::info!(kid = %winner.kid, alg = %alg, "created a new signing key");
            }
            stored = store.signing_keys().await?;
        }
        Self::from_stored(&stored, alg)
    }

    fn from_stored(stored: &[StoredKey], alg: SigningAlg) -> Result<Self, KeyError> {
        let current = stored
            .iter()
            .find(|k| k.alg == alg && k.state == KeyState::Current)
            .ok_or_else(|| KeyError::Unreadable {
                kid: String::new(),
                reason: "no current key".into(),
            })?;
        let signing = SigningKey::from_pkcs8(alg, &current.private_key).map_err(|e| match e {
            KeyError::Unreadable { reason, .. } => KeyError::Unreadable {
                kid: current.kid.clone(),
                reason,
            },
            other => other,
        })?;
        if signing.kid != current.kid {
            return Err(KeyError::Unreadable {
                kid: current.kid.clone(),
                reason: "the private key does not match its key id".into(),
            });
        }
        let mut keys = Vec::with_capacity(stored.len());
        for key in stored {
            let jwk: Jwk =
                serde_json::from_str(&key.public_jwk).map_err(|e| KeyError::Unreadable {
                    kid: key.kid.clone(),
                    reason: format!("public JWK: {e}"),
                })?;
            keys.push(jwk);
        }
        let jwks_json = serde_json::to_vec(&JwkSet { keys }).map_err(|_| KeyError::Crypto)?;
        Ok(KeyRing {
            signing: Arc::new(signing),
            jwks_json: Bytes::from(jwks_json),
        })
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> &Arc<SigningKey> {
        &self.signing
    }

    /// The published JWK Set, serialised once.
    pub fn jwks_json(&self) -> &Bytes {
        &self.jwks_json
    }
}
