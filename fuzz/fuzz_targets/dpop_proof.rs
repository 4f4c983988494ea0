//! A `DPoP` header (RFC 9449 §4.3) as the token endpoint and the guard check it
//! (`verify_proof`): shape, base64url, the header's JSON, `typ`, `alg`, the embedded `jwk`
//! (private members, key type, canonical members, thumbprint), the signature with that key,
//! then `jti`, `htm`, `htu` (parsed and normalised as URLs), `nonce`, `iat` and `ath`.
//!
//! Input: the proof, or a template `HEADER<TAB>PAYLOAD` (starting with `{`) that is signed
//! with the fixed Ed25519 key first; a template whose header carries that key's public `jwk`
//! reaches the checks after the signature.
#![no_main]

use latchkey_fuzz::{NOW, explain, jws};
use latchkey_jose::dpop::{PROOF_MAX_AGE_SECONDS, ProofCheck, verify_proof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let proof = jws(input);
    // At the token endpoint (no access token, a nonce required), and at a resource server
    // (the access token's hash, no nonce).
    let token_endpoint = ProofCheck {
        method: "POST",
        url: "https://as.example/oauth2/token",
        now: NOW,
        access_token: None,
        nonce: Some("n-1"),
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
    for check in [token_endpoint, resource] {
        let verified = verify_proof(&proof, &check);
        explain(&verified);
        if let Ok(verified) = verified {
            assert!(!verified.jti.is_empty());
            assert!(verified.remember_until >= check.now);
        }
    }
});
