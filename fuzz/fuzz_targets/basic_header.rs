//! The `Authorization` header of a request to an OAuth endpoint, as client authentication
//! reads it (`presented_credentials`, RFC 6749 §2.3.1 and RFC 7617): the Basic scheme, base64
//! with or without padding, and a form-urlencoded client id and secret joined by `:`.
#![no_main]

use latchkey_fuzz::explain;
use latchkey_server::protocol::client_auth::{Presented, presented_credentials};
use latchkey_server::protocol::request::RequestParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|header: &[u8]| {
    // Alone, and beside a body `client_id` that must then name the same client.
    let alone = presented_credentials(Some(header), &RequestParams::default());
    explain(&alone);
    if let Ok(Presented::Secret(secret)) = &alone {
        assert!(!secret.client_id.is_empty());
        let body = RequestParams {
            client_id: Some(secret.client_id.clone()),
            ..RequestParams::default()
        };
        assert!(presented_credentials(Some(header), &body).is_ok());
    }
    let other = RequestParams {
        client_id: Some("another-client".to_owned()),
        ..RequestParams::default()
    };
    let _ = presented_credentials(Some(header), &other);
});
