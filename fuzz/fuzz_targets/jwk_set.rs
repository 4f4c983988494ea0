//! A JWK Set, as each reader of one sees it: a client registering its keys (the server's
//! `normalize_jwks`, which also checks `x5c` certificates), the stored set read back into
//! verifiers (`registered_keys`, `registered_certificates`), and an issuer's or a client's
//! published set as the guard and the server fetch it (`JwkSet` from JSON, then each key
//! through `VerifyingKey::from_jwk` and its RFC 7638 `thumbprint`).
#![no_main]

use latchkey_fuzz::explain;
use latchkey_jose::{VerifyingKey, thumbprint};
use latchkey_proto::JwkSet;
use latchkey_server::protocol::client_keys::{normalize_jwks, registered_keys};
use latchkey_server::protocol::mutual_tls::registered_certificates;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|document: &str| {
    let normalized = normalize_jwks(document);
    explain(&normalized);
    if let Ok(stored) = normalized {
        let keys = registered_keys(Some(&stored));
        let _ = registered_certificates(Some(&stored));
        // What is stored is what the server reads back: every registered key verifies, and
        // the stored form is already normal.
        let set: JwkSet = serde_json::from_str(&stored).expect("the stored set is a JWK Set");
        assert_eq!(keys.len(), set.keys.len());
        assert_eq!(normalize_jwks(&stored).as_deref(), Ok(stored.as_str()));
    }
    if let Ok(set) = serde_json::from_str::<JwkSet>(document) {
        for jwk in &set.keys {
            let _ = thumbprint(jwk);
            if let Some(key) = VerifyingKey::from_jwk(jwk) {
                let _ = key.verify(b"message", &[0; 64]);
            }
        }
    }
});
