//! Encryption of private signing keys at rest with a key-encryption key (KEK): AES-256-GCM with
//! a random nonce, the key id as associated data (so a sealed key cannot be moved to another
//! row), and a short KEK identifier stored beside each sealed key so that a wrong KEK is named
//! as such at start-up instead of failing as "corrupt data". With a KEK configured, only keys
//! sealed with it are opened: a key stored in the clear is refused ([`check_stored`]) unless
//! start-up seals it first.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The stored marker of a key sealed with a KEK: `A256GCM:<kek id>`.
const SCHEME: &str = "A256GCM";

/// Why a KEK could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// The configured KEK is not 32 bytes of base64.
    #[error(
        "the key-encryption key must be 32 random bytes in base64 (for example the output of `openssl rand -base64 32`)"
    )]
    Malformed,
    /// A stored key was sealed with another KEK than the one configured.
    #[error(
        "signing key {kid} is encrypted with key-encryption key {stored}, but the configured key-encryption key is {configured}"
    )]
    WrongKek {
        /// The signing key.
        kid: String,
        /// The KEK id stored with it.
        stored: String,
        /// The id of the configured KEK.
        configured: String,
    },
    /// A stored key is encrypted and no KEK is configured.
    #[error(
        "signing key {kid} is encrypted with key-encryption key {stored}; set LATCHKEY_KEY_ENCRYPTION_KEY or --key-encryption-key-file"
    )]
    Missing {
        /// The signing key.
        kid: String,
        /// The KEK id stored with it.
        stored: String,
    },
    /// A stored key is in the clear although a KEK is configured. Only the one-time sealing at
    /// start-up ([`crate::keys::KeySource::load_or_create`]) takes such a key, and it seals it
    /// before loading it; everywhere else it is refused, whoever wrote it (someone with access
    /// to the database, a replica started without the KEK, a restored backup).
    #[error(
        "signing key {kid} is stored in the clear although a key-encryption key is configured; it is refused (only start-up seals keys stored in the clear)"
    )]
    Clear {
        /// The signing key.
        kid: String,
    },
    /// The sealed bytes do not decrypt (tampered with, or damaged).
    #[error("signing key {kid} does not decrypt: the stored ciphertext is damaged")]
    Damaged {
        /// The signing key.
        kid: String,
    },
    /// The cryptographic library failed.
    #[error("encryption failed")]
    Crypto,
}

/// A key-encryption key, held only in memory. `Debug` shows its id, never the key.
pub struct KeyEncryptionKey {
    key: RandomizedNonceKey,
    id: String,
}

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl KeyEncryptionKey {
    /// Reads a KEK from base64 text (standard or URL-safe alphabet, padding optional,
    /// surrounding whitespace ignored) that decodes to exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, KekError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| KekError::Malformed)?;
        if bytes.len() != 32 {
            return Err(KekError::Malformed);
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, &bytes).map_err(|_| KekError::Crypto)?;
        // The id names the KEK without revealing it: a domain-separated hash, shortened.
        let mut input = b"latchkey key-encryption key id\0".to_vec();
        input.extend_from_slice(&bytes);
        let digest = digest::digest(&digest::SHA256, &input);
        let id = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..6]);
        Ok(KeyEncryptionKey { key, id })
    }

    /// A short public identifier of this KEK.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The marker stored beside keys sealed with this KEK.
    pub fn marker(&self) -> String {
        format!("{SCHEME}:{}", self.id)
    }

    /// Seals `plaintext` (a PKCS#8 private key) bound to `kid`: `nonce || ciphertext || tag`.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut in_out = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| KekError::Crypto)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + in_out.len());
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        let damaged = || KekError::Damaged {
            kid: kid.to_owned(),
        };
        if sealed.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| damaged())?;
        Ok(plaintext.to_vec())
    }
}

/// Whether a stored key may be opened under `kek`, from what is stored beside it (`None` for a
/// key in the clear, `Some("A256GCM:<kek id>")` for a sealed one): without a KEK only clear
/// keys, with one only keys sealed with that very KEK. A clear key with a KEK configured is
/// refused, never used as it is: anyone who can write the database could otherwise plant a
/// signing key of their choosing.
pub fn check_stored(
    kek: Option<&KeyEncryptionKey>,
    kid: &str,
    marker: Option<&str>,
) -> Result<(), KekError> {
    let stored_id = marker.map(|marker| {
        marker
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(':'))
            .unwrap_or(marker)
            .to_owned()
    });
    match (kek, stored_id) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(KekError::Clear {
            kid: kid.to_owned(),
        }),
        (None, Some(stored)) => Err(KekError::Missing {
            kid: kid.to_owned(),
            stored,
        }),
        (Some(kek), Some(stored)) if kek.id != stored => Err(KekError::WrongKek {
            kid: kid.to_owned(),
            stored,
            configured: kek.id.clone(),
        }),
        (Some(_), Some(_)) => Ok(()),
    }
}

/// Returns the PKCS#8 bytes of a stored key, after [`check_stored`]. `marker` is what is
/// stored beside it: `None` for a key stored in the clear, `Some("A256GCM:<kek id>")` for a
/// sealed one.
pub fn unseal(
    kek: Option<&KeyEncryptionKey>,
    kid: &str,
    marker: Option<&str>,
    stored: &[u8],
) -> Result<Vec<u8>, KekError> {
    check_stored(kek, kid, marker)?;
    match kek {
        Some(kek) => kek.open(kid, stored),
        None => Ok(stored.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK_A: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    const KEK_B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn seals_and_opens_bound_to_the_kid() {
        let a = KeyEncryptionKey::from_base64(KEK_A).unwrap();
        let sealed = a.seal("kid-1", b"pkcs8 bytes").unwrap();
        assert_ne!(&sealed[NONCE_LEN..NONCE_LEN + 11], b"pkcs8 bytes");
        let marker = a.marker();
        assert_eq!(
            unseal(Some(&a), "kid-1", Some(&marker), &sealed).unwrap(),
            b"pkcs8 bytes"
        );
        // Moved to another row: refused.
        assert!(matches!(
            unseal(Some(&a), "kid-2", Some(&marker), &sealed),
            Err(KekError::Damaged { .. })
        ));
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(unseal(Some(&a), "kid-1", Some(&marker), &flipped).is_err());
    }

    #[test]
    fn a_wrong_or_missing_kek_is_named() {
        let a = KeyEncryptionKey::from_base64(KEK_A).unwrap();
        let b = KeyEncryptionKey::from_base64(KEK_B).unwrap();
        let sealed = a.seal("k", b"x").unwrap();
        let marker = a.marker();
        assert!(matches!(
            unseal(Some(&b), "k", Some(&marker), &sealed),
            Err(KekError::WrongKek { .. })
        ));
        assert!(matches!(
            unseal(None, "k", Some(&marker), &sealed),
            Err(KekError::Missing { .. })
        ));
        assert_eq!(unseal(None, "k", None, b"clear").unwrap(), b"clear");
        // With a KEK, a key in the clear is refused rather than used as it is.
        assert!(matches!(
            unseal(Some(&a), "k", None, b"clear"),
            Err(KekError::Clear { .. })
        ));
        // An unknown scheme or an empty marker names no KEK we hold.
        for marker in ["", "A256GCM:", "other:xyz"] {
            assert!(matches!(
                unseal(Some(&a), "k", Some(marker), &sealed),
                Err(KekError::WrongKek { .. })
            ));
        }
        assert!(!format!("{a:?}").contains(KEK_A));
    }

    #[test]
    fn only_32_byte_base64_keys_are_accepted() {
        for bad in ["", "not base64!", "AAAA", &"A".repeat(64)] {
            assert!(KeyEncryptionKey::from_base64(bad).is_err(), "{bad}");
        }
        assert!(KeyEncryptionKey::from_base64(&format!(" {KEK_A}\n")).is_ok());
    }
}
