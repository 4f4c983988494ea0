//! The `token` parameter of an introspection or revocation request (RFC 7662 §2.1,
//! RFC 7009 §2.1) as the server reads it: its shape (`access_token::shape`: one of our JWTs,
//! our opaque format, or neither), then for a JWT `verify_jwt` against the server's key ring
//! (`KeyRing`, through its `PublishedKeys`: header JSON, `typ`, `kid` and `alg` against the
//! key, the signature, the claims, `iss`), and the introspection answer built from its claims.
//!
//! The key ring holds the fixed Ed25519 key (which signs) and ES256 key as server signing keys,
//! each published under its RFC 7638 thumbprint, as the server names its keys.
//!
//! Input: the token, or a template `HEADER<TAB>PAYLOAD` (starting with `{`) that is signed
//! with the fixed Ed25519 key first, so the claims are reached.
#![no_main]

use std::sync::{Arc, OnceLock};

use latchkey_fuzz::{ED25519_PKCS8, ES256_PKCS8, ISSUER, NOW, explain, jws};
use latchkey_proto::SigningAlg;
use latchkey_server::keys::{KeyRing, SigningKey};
use latchkey_server::protocol::access_token::{TokenShape, shape, verify_jwt};
use latchkey_server::protocol::introspection::{active_response, is_active};
use libfuzzer_sys::fuzz_target;

fn key_ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let key = |alg, pkcs8| Arc::new(SigningKey::from_pkcs8(alg, pkcs8).expect("fixture"));
        let ed25519 = key(SigningAlg::EdDsa, ED25519_PKCS8);
        let es256 = key(SigningAlg::Es256, ES256_PKCS8);
        KeyRing::new(Arc::clone(&ed25519), vec![ed25519, es256]).expect("a key ring")
    })
}

fuzz_target!(|input: &str| {
    let token = jws(input);
    match shape(&token) {
        TokenShape::Jwt(jwt) => {
            let claims = verify_jwt(key_ring(), ISSUER, jwt);
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
