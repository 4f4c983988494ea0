//! A JWK Set a client registers (through the admin API, the CLI or RFC 7591 registration): the
//! server's `normalize_jwks`, which also checks `x5c` certificates, then the stored set read
//! back into verifiers (`registered_keys`, `registered_certificates`) as the server does when
//! it loads the client. Sets fetched from a `jwks_uri` are the `jwks_response` target's.
#![no_main]

use latchkey_fuzz::explain;
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
});
