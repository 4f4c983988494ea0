//! The `token` parameter of an introspection or revocation request (RFC 7662 §2.1,
//! RFC 7009 §2.1) as the server reads it: its shape (`access_token::shape`: one of our JWTs,
//! our opaque format, or neither), then for a JWT `verify_jwt` against the published keys
//! (header JSON, `typ`, `kid` and `alg` against the key, the signature, the claims, `iss`),
//! and the introspection answer built from its claims.
//!
//! The published keys are the fixed Ed25519 key (kid `ed`) and ES256 key (kid `es`) as
//! server signing keys, checked the way the server's key ring checks its own (`keys.rs`).
//!
//! Input: the token, or a template `HEADER<TAB>PAYLOAD` (starting with `{`) that is signed
//! with the fixed Ed25519 key first, so the claims are reached.
#![no_main]

use std::sync::OnceLock;

use latchkey_fuzz::{
    ED25519_KID, ED25519_PKCS8, ES256_KID, ES256_PKCS8, ISSUER, NOW, explain, jws,
};
use latchkey_proto::SigningAlg;
use latchkey_server::keys::SigningKey;
use latchkey_server::protocol::access_token::{PublishedKeys, TokenShape, shape, verify_jwt};
use latchkey_server::protocol::introspection::{active_response, is_active};
use libfuzzer_sys::fuzz_target;

/// Two published keys by id, verified as `KeyRing`'s `PublishedKeys` does: the key's own
/// algorithm must be the header's, then the signature.
struct Published(Vec<(&'static str, SigningKey)>);

impl PublishedKeys for Published {
    fn verify(&self, kid: &str, alg: &str, message: &[u8], signature: &[u8]) -> bool {
        self.0.iter().any(|(id, key)| {
            *id == kid && key.alg().as_str() == alg && key.verify(message, signature)
        })
    }
}

fn published() -> &'static Published {
    static KEYS: OnceLock<Published> = OnceLock::new();
    KEYS.get_or_init(|| {
        Published(vec![
            (
                ED25519_KID,
                SigningKey::from_pkcs8(SigningAlg::EdDsa, ED25519_PKCS8).expect("fixture"),
            ),
            (
                ES256_KID,
                SigningKey::from_pkcs8(SigningAlg::Es256, ES256_PKCS8).expect("fixture"),
            ),
        ])
    })
}

fuzz_target!(|input: &str| {
    let token = jws(input);
    match shape(&token) {
        TokenShape::Jwt(jwt) => {
            let claims = verify_jwt(published(), ISSUER, jwt);
            explain(&claims);
            if let Some(claims) = claims {
                assert_eq!(claims.iss, ISSUER);
                let _ = is_active(&claims, None, false, NOW);
                let answer = active_response(claims);
                let _ = serde_json::to_string(&answer);
            }
        }
        other => explain(&other),
    }
});
