//! Server-provided DPoP nonces (RFC 9449 §8), without IO and without shared state: a nonce is
//! a time window and a MAC over it, so any replica that holds the same key accepts what
//! another issued. The key is derived from the current signing key (shared by every replica
//! through the database); after a rotation, older nonces fail once and the client retries
//! with the new one that the error response carries.
//!
//! A nonce is valid for the window it was made in and the next few, [`NONCE_LIFETIME_SECONDS`]
//! at most: a proof's freshness then rests on the server's clock, not the client's `iat`.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A new nonce every minute.
const WINDOW_SECONDS: i64 = 60;
/// Nonces of the current window and the four before it are accepted.
const WINDOWS_ACCEPTED: i64 = 5;
/// The longest a nonce is accepted.
pub const NONCE_LIFETIME_SECONDS: i64 = WINDOW_SECONDS * WINDOWS_ACCEPTED;
/// MAC bytes kept in a nonce.
const MAC_BYTES: usize = 16;

/// Makes and checks nonces with one key.
pub struct NonceKey(hmac::Key);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl NonceKey {
    /// The nonce key of a signing key, from its private key (PKCS#8): every replica with the
    /// same signing key derives the same nonce key, and nothing about the signing key can be
    /// learnt from a nonce.
    pub fn derive(private_key: &[u8]) -> Self {
        let parent = hmac::Key::new(hmac::HMAC_SHA256, private_key);
        let derived = hmac::sign(&parent, b"latchkey DPoP nonce key v1");
        NonceKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The nonce for `now`: base64url of the window number and its MAC (32 characters).
    pub fn issue(&self, now: i64) -> String {
        let window = now.div_euclid(WINDOW_SECONDS).to_be_bytes();
        let tag = hmac::sign(&self.0, &window);
        let mut raw = [0u8; 8 + MAC_BYTES];
        raw[..8].copy_from_slice(&window);
        raw[8..].copy_from_slice(&tag.as_ref()[..MAC_BYTES]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// RFC 9449 §4.3 item 10: whether `nonce` is one this key issued, at most
    /// [`NONCE_LIFETIME_SECONDS`] ago and not in the future.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 8 + MAC_BYTES {
            return false;
        }
        let mut window = [0u8; 8];
        window.copy_from_slice(&raw[..8]);
        // The window comes from the client: checked arithmetic, never an overflow.
        let age = now
            .div_euclid(WINDOW_SECONDS)
            .checked_sub(i64::from_be_bytes(window));
        if !age.is_some_and(|age| (0..WINDOWS_ACCEPTED).contains(&age)) {
            return false;
        }
        let tag = hmac::sign(&self.0, &window);
        subtle::ConstantTimeEq::ct_eq(&tag.as_ref()[..MAC_BYTES], &raw[8..]).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn nonces_last_five_windows_and_need_the_key() {
        let key = NonceKey::derive(b"pkcs8 bytes of one key");
        let nonce = key.issue(NOW);
        assert_eq!(nonce.len(), 32);
        assert!(key.accepts(&nonce, NOW));
        assert!(key.accepts(&nonce, NOW + 60 * 4));
        assert!(!key.accepts(&nonce, NOW + 60 * 5 + 60));
        assert!(!key.accepts(&nonce, NOW - 60), "from the future");
        // Another replica with the same signing key accepts it; another key does not.
        assert!(NonceKey::derive(b"pkcs8 bytes of one key").accepts(&nonce, NOW));
        assert!(!NonceKey::derive(b"another key").accepts(&nonce, NOW));
        // Any change is refused.
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        raw[20] ^= 1;
        assert!(!key.accepts(&URL_SAFE_NO_PAD.encode(&raw), NOW));
        for bad in ["", "x", "not base64!", &nonce[..20]] {
            assert!(!key.accepts(bad, NOW), "{bad}");
        }
        // A window far in the past or future is refused without overflowing.
        for window in [i64::MIN, i64::MAX] {
            let mut raw = [0u8; 24];
            raw[..8].copy_from_slice(&window.to_be_bytes());
            assert!(!key.accepts(&URL_SAFE_NO_PAD.encode(raw), NOW));
        }
    }
}
