//! A JWK Set response from a `jwks_uri`, as the guard fetches an issuer's keys and the server
//! fetches a client's or a trusted issuer's (latchkey-common's JWK Set cache, `jwks.rs`): the
//! `Cache-Control` header read for how long the set is used (`freshness_lifetime`: `max-age`,
//! clamped), and the body read key by key (`KeySet::from_json`): a key that is not a JWK this
//! code can verify with is skipped, and every later key still goes through
//! `VerifyingKey::from_jwk`.
//!
//! Input: the `Cache-Control` value on the first line (none when the line is empty or not a
//! valid header value), the body after it.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header::CACHE_CONTROL};
use latchkey_common::KeySet;
use latchkey_common::jwks::freshness_lifetime;
use latchkey_fuzz::{NOW, explain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (cache_control, body) = match input.iter().position(|&b| b == b'\n') {
        Some(end) => (&input[..end], &input[end + 1..]),
        None => (input, &[][..]),
    };
    let mut headers = HeaderMap::new();
    if !cache_control.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(cache_control)
    {
        headers.insert(CACHE_CONTROL, value);
    }
    let lifetime = freshness_lifetime(&headers);
    explain(&lifetime);
    // However the header reads, the set is used from 30 s to a day.
    assert!((Duration::from_secs(30)..=Duration::from_secs(24 * 3600)).contains(&lifetime));
    let now = UNIX_EPOCH + Duration::from_secs(NOW.unsigned_abs());
    let set = KeySet::from_json(body, now + lifetime);
    explain(
        &set.as_ref()
            .map(|set| set.keys().count())
            .map_err(ToString::to_string),
    );
    if let Ok(set) = set {
        for key in set.keys() {
            // Each key is found under its own kid.
            assert!(set.get(key.kid()).is_some());
            let _ = key.verify(b"message", &[0; 64]);
        }
    }
});
