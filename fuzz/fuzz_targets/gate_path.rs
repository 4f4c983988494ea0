//! The request target of a request to `latchkey gate` or `latchkey sidecar`: hyper parses it
//! into a URI (`http::Uri`, as the proxy receives it), then `check_path` decides whether the
//! path may be forwarded (no dot segments, also encoded or with `;` parameters, no `\`, no
//! encoded `/` or `\`).
//!
//! A differential check: a path the gate forwards must keep its segments when a standard URL
//! parser (WHATWG, the `url` crate) resolves it, or the upstream could serve another resource
//! than the one the gate checked.
#![no_main]

#[path = "../../crates/latchkey/src/request_target.rs"]
mod request_target;

use latchkey_fuzz::explain;
use libfuzzer_sys::fuzz_target;
use request_target::check_path;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = check_path(text);
    }
    let Ok(uri) = http::Uri::try_from(input) else {
        return;
    };
    let path = uri.path();
    explain(&(path, check_path(path)));
    if check_path(path).is_err() {
        return;
    }
    if let Ok(url) = url::Url::parse(&format!("http://upstream.example{path}")) {
        assert_eq!(
            url.path().split('/').count(),
            path.split('/').count(),
            "{path:?} resolves to {:?}",
            url.path()
        );
    }
});
