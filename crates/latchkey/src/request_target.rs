//! The request-target check of the gate and the sidecar: whether a path names the same
//! resource to the proxy and to every upstream that might read it. Plain std, with no other
//! dependency, so the fuzz crate (fuzz/, target `gate_path`) includes this file as it is.

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
    fn dot_segments_are_found_encoded_or_not() {
        for bad in ["/a/../b", "/..", "/a/./b", "/%2e%2E/x", "/a/%2E"] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for fine in ["/", "/a/b", "/a..b/", "/.well-known/x", "/a%2eb"] {
            assert!(!has_dot_segment(fine), "{fine}");
        }
    }
}
