//! A `client_assertion` (RFC 7523 §2.2) as the token endpoint reads it: the unverified `sub`
//! and `kid` it reads first to find the client and its keys (`unverified_subject`,
//! `unverified_kid`), then the whole check against that client's registered keys
//! (`verify_assertion`) and, for a federated client, against its issuer's keys
//! (`verify_federated_assertion`): shape, base64url, the header's JSON, `typ`, `crit`, `alg`
//! and `kid` against the keys, the signature, and every claim.
//!
//! Input: the assertion, or a template `HEADER<TAB>PAYLOAD` (starting with `{`) that is
//! signed with the fixed Ed25519 key first, so the checks after the signature are reached.
#![no_main]

use latchkey_fuzz::{ISSUER, NOW, explain, jws, verifying_keys};
use latchkey_server::protocol::client_assertion::{
    AssertionPolicy, FederatedPolicy, unverified_kid, unverified_subject, verify_assertion,
    verify_federated_assertion,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let assertion = jws(input);
    let _ = unverified_kid(&assertion);
    let client_id = unverified_subject(&assertion).unwrap_or_else(|| "client-1".to_owned());
    let keys = verifying_keys();
    let policy = AssertionPolicy {
        issuer: ISSUER,
        compatible_audience: Some("https://as.example/oauth2/token"),
    };
    let verified = verify_assertion(&assertion, &client_id, keys, &policy, NOW);
    explain(&verified);
    if let Ok(verified) = verified {
        assert!(!verified.jti.is_empty());
        assert!(verified.expires_at > NOW);
    }
    let federated = FederatedPolicy {
        issuer: "https://ci.example",
        subject: &client_id,
        audience: ISSUER,
        max_token_age: 3600,
    };
    explain(&verify_federated_assertion(
        &assertion, keys, &federated, NOW,
    ));
});
