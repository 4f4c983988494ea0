//! Server-generated identifiers and secrets, and how secrets are hashed and compared.
//!
//! Client secrets carry 256 random bits, so a fast hash is enough: nobody can brute-force the
//! preimage, and a slow password hash would only cost latency on the token path (RFC 6819
//! §5.1.4.1.3 asks that credentials be stored hashed, not that the hash be slow).

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// Opaque tokens start with this, so that they are told apart from JWTs at a glance and
/// secret scanners can recognise a leaked one.
pub const OPAQUE_PREFIX: &str = "lkat_";

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// Never in practice: aws-lc aborts the process itself if the system RNG fails, so an error
/// here would mean a broken platform; we fail closed rather than hand out a weak secret.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    #[allow(clippy::expect_used)] // Failing closed is the only safe answer to a broken RNG.
    aws_lc_rs::rand::fill(&mut buf).expect("the system random number generator failed");
    buf
}

/// A new client id: 128 random bits, base64url. Only unreserved characters (RFC 3986 §2.3),
/// so its form-urlencoded form (RFC 6749 §2.3.1) equals the raw one.
pub fn new_client_id() -> String {
    typeable_id::<16>()
}

/// `N` random bytes in base64url, never starting with `-`: command-line parsers would take
/// `-x...` for an option (`latchkey token --client-id -x...` and `client secret revoke ID
/// -x...` failed about once in 64). Drawing again until the first character is alphanumeric
/// costs under 0.05 bits.
fn typeable_id<const N: usize>() -> String {
    loop {
        let id = URL_SAFE_NO_PAD.encode(random_bytes::<N>());
        if id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return id;
        }
    }
}

/// A new token identifier (`jti`): 128 random bits, base64url.
pub fn new_jti() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

/// Initial access tokens (RFC 7591 §3) start with this.
pub const REGISTRATION_TOKEN_PREFIX: &str = "lkrt_";

/// Registration access tokens (RFC 7592 §1) start with this.
pub const REGISTRATION_ACCESS_PREFIX: &str = "lkra_";

/// A new opaque access token: a recognisable prefix and 256 random bits, base64url; returned
/// with the hash that is stored in its place.
pub fn new_opaque_token() -> (String, SecretHash) {
    new_bearer_token(OPAQUE_PREFIX)
}

/// A new bearer token: `prefix` (so that secret scanners can recognise a leaked one) and 256
/// random bits, base64url; returned with the hash that is stored in its place.
pub fn new_bearer_token(prefix: &str) -> (String, SecretHash) {
    let mut token = String::with_capacity(prefix.len() + 43);
    token.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(random_bytes::<32>(), &mut token);
    let hash = SecretHash::of(token.as_bytes());
    (token, hash)
}

/// A new identifier for a stored secret or key row: 64 random bits, base64url, typed on the
/// command line like a client id.
pub fn new_row_id() -> String {
    typeable_id::<8>()
}

/// A client secret in the clear. It exists only between generation and the moment it is shown
/// once to the operator; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// A new secret: 256 random bits, base64url without padding (43 characters).
    pub fn generate() -> Self {
        ClientSecret(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
    }

    /// The secret itself, to show the operator exactly once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash stored in the database.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(self.0.as_bytes())
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// SHA-256 of a secret, as stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Hashes a presented secret.
    pub fn of(secret: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        SecretHash(out)
    }

    /// Compares in constant time.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// How an unknown client id appears in logs: `unknown:` and the first 8 bytes of its SHA-256
/// in hex. An unknown id may be a secret pasted into the wrong field, so it is never logged
/// as sent; the same wrong id still gives the same tag, so repeated attempts can be followed.
pub fn unknown_id_tag(claimed: &str) -> String {
    id_tag("unknown:", claimed)
}

/// `prefix` and the first 8 bytes of the SHA-256 of `id` in hex: how an id that was not looked
/// up appears in logs (see [`unknown_id_tag`]).
pub fn id_tag(prefix: &str, id: &str) -> String {
    use std::fmt::Write as _;
    let hash = SecretHash::of(id.as_bytes());
    let mut tag = String::with_capacity(prefix.len() + 16);
    tag.push_str(prefix);
    for byte in &hash.0[..8] {
        let _ = write!(tag, "{byte:02x}");
    }
    tag
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_look_like_command_line_options() {
        for _ in 0..5_000 {
            let id = new_client_id();
            assert_eq!(id.len(), 22);
            assert!(id.starts_with(|c: char| c.is_ascii_alphanumeric()), "{id}");
            let row = new_row_id();
            assert_eq!(row.len(), 11);
            assert!(
                row.starts_with(|c: char| c.is_ascii_alphanumeric()),
                "{row}"
            );
        }
    }

    #[test]
    fn secrets_are_long_unreserved_and_unique() {
        let a = ClientSecret::generate();
        let b = ClientSecret::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(!format!("{a:?}").contains(a.expose()));
        assert!(a.hash().matches(&SecretHash::of(a.expose().as_bytes())));
        assert!(!a.hash().matches(&b.hash()));
    }
}
