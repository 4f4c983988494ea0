//! Reading back the access tokens this server issues: a JWT is verified against the server's
//! own published keys; an opaque token is recognised by its shape and hashed for lookup.
//! Everything here is computation on values already in memory.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_proto::AccessTokenClaims;
use serde::Deserialize;

use crate::secret::{OPAQUE_PREFIX, SecretHash};

/// No token we issue is longer than this; longer input is refused before any decoding.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The keys this server publishes, as verifying its own tokens needs them (the key ring in
/// `keys.rs` implements this; protocol code never reaches for keys itself).
pub trait PublishedKeys {
    /// Whether the published key `kid` signs with `alg` and `signature` is its signature of
    /// `message`. An unknown or removed `kid`, or another algorithm, is `false`: the algorithm
    /// comes from the key, never from the token alone.
    fn verify(&self, kid: &str, alg: &str, message: &[u8], signature: &[u8]) -> bool;
}

/// What a presented token looks like.
#[derive(Debug)]
pub enum TokenShape<'a> {
    /// Three base64url segments: one of our JWTs, if the signature verifies.
    Jwt(&'a str),
    /// Our opaque format; the hash is what the database holds.
    Opaque(SecretHash),
    /// Neither: certainly not a token of ours.
    Unknown,
}

/// Tells a JWT from an opaque token by shape alone.
pub fn shape(token: &str) -> TokenShape<'_> {
    if token.len() > MAX_TOKEN_LEN {
        return TokenShape::Unknown;
    }
    if let Some(random) = token.strip_prefix(OPAQUE_PREFIX) {
        let b64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if random.len() == 43 && random.bytes().all(b64url) {
            return TokenShape::Opaque(SecretHash::of(token.as_bytes()));
        }
        return TokenShape::Unknown;
    }
    if token.bytes().filter(|&b| b == b'.').count() == 2 {
        return TokenShape::Jwt(token);
    }
    TokenShape::Unknown
}

#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: Option<&'a str>,
}

/// Verifies a JWT access token issued by this server and returns its claims, or `None` if it
/// is not one: bad encoding, a `typ` other than `at+jwt` (RFC 9068 §2.1), a `kid` that is not
/// published now (unknown or removed key), an `alg` other than that key's, a signature that
/// does not verify, claims that do not parse (time claims must be integers), or another `iss`.
/// Expiry and revocation are decided by the caller.
pub fn verify_jwt(
    keys: &impl PublishedKeys,
    issuer: &str,
    token: &str,
) -> Option<AccessTokenClaims> {
    let (signed, signature) = token.rsplit_once('.')?;
    let (header, payload) = signed.split_once('.')?;
    let header_json = URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: Header<'_> = serde_json::from_slice(&header_json).ok()?;
    if header.typ != Some("at+jwt") {
        return None;
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    if !keys.verify(header.kid, header.alg, signed.as_bytes(), &signature) {
        return None;
    }
    let claims: AccessTokenClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.iss == issuer).then_some(claims)
}
