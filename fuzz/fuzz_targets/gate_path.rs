//! The request target of a request to `latchkey gate` or `latchkey sidecar`: hyper parses it
//! into a URI (`http::Uri`, as the proxy receives it), then `check_path` decides whether the
//! path may be forwarded (no dot segments, also encoded or with `;` parameters, no `\`, no
//! encoded `/` or `\`), and `forwarded_uri` builds the URI it goes to, under the path prefix
//! of an upstream `http://upstream.example/base`.
//!
//! A differential check: a path the gate forwards must keep its segments, under the
//! upstream's prefix, when a standard URL parser (WHATWG, the `url` crate) resolves the
//! forwarded URI, or the upstream could serve another resource than the one the gate checked.
#![no_main]

#[path = "../../crates/latchkey/src/request_target.rs"]
mod request_target;

use http::Uri;
use http::uri::{Authority, Scheme};
use latchkey_fuzz::explain;
use libfuzzer_sys::fuzz_target;
use request_target::{check_path, forwarded_uri};

/// The upstream's path prefix, as `Upstream::parse` keeps it (no trailing `/`).
const BASE_PATH: &str = "/base";

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = check_path(text);
    }
    let Ok(uri) = Uri::try_from(input) else {
        return;
    };
    let path = uri.path();
    explain(&(path, check_path(path)));
    if check_path(path).is_err() {
        return;
    }
    let forwarded = forwarded_uri(
        Scheme::HTTP,
        Authority::from_static("upstream.example"),
        BASE_PATH,
        &uri,
    );
    explain(&forwarded);
    let Ok(forwarded) = forwarded else {
        return;
    };
    // The path and query the gate checked, under the prefix, and nothing else.
    assert_eq!(forwarded.path(), format!("{BASE_PATH}{path}"));
    assert_eq!(forwarded.query(), uri.query());
    assert_eq!(forwarded.host(), Some("upstream.example"));
    if let Ok(url) = url::Url::parse(&forwarded.to_string()) {
        assert_eq!(
            url.path().split('/').count(),
            forwarded.path().split('/').count(),
            "{forwarded} resolves to {:?}",
            url.path()
        );
        assert!(
            url.path().starts_with("/base/"),
            "{forwarded} resolves to {:?}",
            url.path()
        );
    }
});
