//! The web console at `/console/`: three files embedded in the binary (no CDN, works
//! offline), a client of the admin API and nothing else. It signs in at the token endpoint
//! with an admin client's id and secret and keeps the token in memory only (a page variable:
//! not a cookie, not local storage), so the server holds no console session and grants the
//! console nothing an admin client could not do with `curl`.
//!
//! Served wherever the admin API is (the main listener, or `--admin-listen`), with a strict
//! Content Security Policy: scripts, styles and requests go to this origin only, and no page
//! may frame it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, header};

use super::AppState;

/// Where the console lives.
pub const PREFIX: &str = "/console";

const INDEX_HTML: &str = include_str!("../../console/index.html");
const CONSOLE_JS: &str = include_str!("../../console/console.js");
const CONSOLE_CSS: &str = include_str!("../../console/console.css");

/// Scripts, styles, images and requests from this origin only; no framing, no plug-ins, no
/// form posts elsewhere.
const CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
);

/// The console's routes, at the root of a router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        // Relative, so that under an issuer's path (`/auth/console`) it stays there.
        .route(PREFIX, get(|| async { Redirect::permanent("console/") }))
        .route(
            &format!("{PREFIX}/"),
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            &format!("{PREFIX}/console.js"),
            get(|| async { asset(CONSOLE_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            &format!("{PREFIX}/console.css"),
            get(|| async { asset(CONSOLE_CSS, "text/css; charset=utf-8") }),
        )
}

/// One embedded file, with the headers every console file carries. `no-cache`: a browser
/// asks again after an upgrade of the server instead of mixing old and new files.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = Body::from(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A page that opened the console gets no handle on it (no swapping it for a fake sign-in
    // page), and no other origin may load its files.
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}
