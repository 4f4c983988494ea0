//! A `DPoP` header (RFC 9449 §4.3) as the token endpoint, the admin API and the guard check it
//! (`verify_proof`): shape, base64url, the header's JSON, `typ`, `alg`, the embedded `jwk`
//! (private members, key type, canonical members, thumbprint), the signature with that key,
//! then `jti`, `htm`, `htu` (parsed and normalised as URLs), `iat` and `ath`. Every caller
//! passes no nonce to `verify_proof`; a server that requires nonces (`--dpop-nonce`) then
//! checks the proof's `nonce` itself with `NonceKey::accepts` (base64url, the time window,
//! the MAC), with the nonce key of its signing key, which this target does too.
//!
//! Input: the proof, or a template `HEADER<TAB>PAYLOAD` (starting with `{`) that is signed
//! with the fixed Ed25519 key first; a template whose header carries that key's public `jwk`
//! reaches the checks after the signature.
#![no_main]

use std::sync::OnceLock;

use latchkey_fuzz::{ED25519_PKCS8, NOW, explain, jws};
use latchkey_jose::dpop::{PROOF_MAX_AGE_SECONDS, ProofCheck, verify_proof};
use latchkey_proto::SigningAlg;
use latchkey_server::keys::SigningKey;
use latchkey_server::protocol::dpop_nonce::NONCE_LIFETIME_SECONDS;
use libfuzzer_sys::fuzz_target;

/// The server's signing key (the fixed Ed25519 key), whose nonce key checks nonces.
fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_pkcs8(SigningAlg::EdDsa, ED25519_PKCS8).expect("fixture"))
}

fuzz_target!(|input: &str| {
    let proof = jws(input);
    // At the token endpoint (no access token; the nonce checked after, below), and at a
    // resource server or the admin API (the access token's hash).
    let token_endpoint = ProofCheck {
        method: "POST",
        url: "https://as.example/oauth2/token",
        now: NOW,
        access_token: None,
        nonce: None,
        max_age_seconds: PROOF_MAX_AGE_SECONDS,
    };
    let resource = ProofCheck {
        method: "GET",
        url: "https://api.example/v1/items?page=2",
        now: NOW,
        access_token: Some("an-access-token"),
        nonce: None,
        max_age_seconds: 60,
    };
    for (i, check) in [token_endpoint, resource].into_iter().enumerate() {
        let verified = verify_proof(&proof, &check);
        explain(&verified);
        let Ok(verified) = verified else {
            continue;
        };
        assert!(!verified.jti.is_empty());
        assert!(verified.remember_until >= check.now);
        // The token endpoint with nonces required (service/token.rs, `check_dpop_proof`).
        if i == 0
            && let Some(nonce) = verified.nonce.as_deref()
        {
            let nonce_key = signing_key().nonce_key();
            let accepted = nonce_key.accepts(nonce, NOW);
            explain(&("nonce accepted", accepted));
            if accepted {
                // A nonce is accepted for its lifetime at most, and never before its time.
                assert!(!nonce_key.accepts(nonce, NOW + NONCE_LIFETIME_SECONDS));
                assert!(!nonce_key.accepts(nonce, NOW - NONCE_LIFETIME_SECONDS));
            }
        }
    }
});
