//! The request target of the gate and the sidecar: whether a path names the same resource to
//! the proxy and to every upstream that might read it, and the URI it is forwarded to. Std and
//! the `http` crate's URI types only, so the fuzz crate (fuzz/, target `gate_path`) includes
//! this file as it is.

use http::Uri;
use http::uri::{Authority, Scheme};

/// Refuses a path that does not name the same resource to every reader. Dot segments could
/// climb out of the upstream's path prefix (RFC 3986 §5.2.4). An encoded `/` or `\` is data
/// to the proxy (RFC 3986 §2.2) but some upstreams decode it before routing, and a `\` is a
/// separator to some (Windows, IIS, several frameworks) and data to others: `/a/..%2fadmin`
/// and `/a/..\admin` would be `/admin` there.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    // Only origin-form targets (RFC 9112 §3.2.1): `*` (asterisk-form) names no resource of
    // the upstream.
    if !path.starts_with('/') {
        return Err("the request target is not a path");
    }
    if has_dot_segment(path) {
        return Err("the path has . or .. segments");
    }
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return Err("the path has a \\, %2F or %5C");
    }
    Ok(())
}

/// The URI a request goes to upstream: the upstream's scheme and authority, then its path
/// prefix `base_path` (no trailing `/`) followed by the request's path, the one `check_path`
/// checked, and its query. An absolute-form target with an empty path (`http://host?q`) has
/// the path `/` (RFC 9112 §3.2.1, RFC 9110 §4.2.3), as `Uri::path` gives it. `Err` when that
/// is no URI.
pub fn forwarded_uri(
    scheme: Scheme,
    authority: Authority,
    base_path: &str,
    target: &Uri,
) -> Result<Uri, &'static str> {
    let path = target.path();
    let path_and_query = match target.query() {
        Some(query) => format!("{base_path}{path}?{query}"),
        None => format!("{base_path}{path}"),
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| "the request URI cannot be forwarded")
}

/// A `.` or `..` segment, also percent-encoded, and also with path parameters after a `;`
/// (`..;/`), which servlet containers (Tomcat, Jetty) strip before they resolve dot segments.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let segment = segment.split(';').next().unwrap_or(segment);
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_path_is_the_checked_one() {
        let forward = |target: &str| {
            let target: Uri = target.parse().unwrap();
            check_path(target.path()).unwrap();
            let uri = forwarded_uri(
                Scheme::HTTP,
                Authority::from_static("upstream.example"),
                "/base",
                &target,
            );
            uri.unwrap().to_string()
        };
        assert_eq!(forward("/a/b?x=1"), "http://upstream.example/base/a/b?x=1");
        assert_eq!(forward("/a?"), "http://upstream.example/base/a?");
        assert_eq!(
            forward("http://other.example"),
            "http://upstream.example/base/"
        );
        // Found by fuzzing (fuzz/seeds/gate_path/crash-empty-path-with-query): the path
        // checked was `/`, and `/base?...` went upstream, not `/base/?...`.
        assert_eq!(
            forward("http://u?pstream.example/a/b"),
            "http://upstream.example/base/?pstream.example/a/b"
        );
    }

    #[test]
    fn dot_segments_are_found_encoded_or_not() {
        for bad in ["/a/../b", "/..", "/a/./b", "/%2e%2E/x", "/a/%2E"] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for fine in ["/", "/a/b", "/a..b/", "/.well-known/x", "/a%2eb"] {
            assert!(!has_dot_segment(fine), "{fine}");
        }
    }
}
