//! Syntax of scope tokens (RFC 6749 §3.3) and resource indicators (RFC 8707 §2).

/// RFC 6749 §3.3 / Appendix A.4: `scope-token = 1*NQCHAR`,
/// `NQCHAR = %x21 / %x23-5B / %x5D-7E` (visible ASCII except `"` and `\`).
pub fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// The most scope tokens a request or a registration may name (duplicates included). RFC
/// 6749 sets no limit; clients ask for a handful, and a bound keeps a request's cost fixed.
pub const MAX_SCOPE_TOKENS: usize = 64;

/// The client ids a server looks up: 1 to 128 unreserved characters (RFC 3986 §2.3), which
/// every id latchkey generates is and which an import may keep. Anything else is refused
/// without a database read (and never logged as given).
pub fn is_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// Splits a scope string, strictly: `scope = scope-token *( SP scope-token )`, so a leading,
/// trailing or double space, a tab or any other separator is an error. Returns `None` when the
/// syntax is wrong or there are more than [`MAX_SCOPE_TOKENS`]. Repeated tokens are kept once,
/// in first-seen order (with at most 64 tokens, the scan for repeats stays bounded).
pub fn parse_scope(scope: &str) -> Option<Vec<&str>> {
    if scope.bytes().filter(|&b| b == b' ').count() >= MAX_SCOPE_TOKENS {
        return None;
    }
    let mut tokens: Vec<&str> = Vec::new();
    for token in scope.split(' ') {
        if !is_scope_token(token) {
            return None;
        }
        if !tokens.contains(&token) {
            tokens.push(token);
        }
    }
    Some(tokens)
}

/// RFC 8707 §2: a resource indicator is an absolute URI (RFC 3986 §4.3) without a fragment.
/// We check the parts that matter for matching: a valid scheme, something after it, and no
/// fragment, whitespace or control characters.
pub fn is_resource_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut scheme_bytes = scheme.bytes();
    let scheme_ok = scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    scheme_ok
        && !rest.is_empty()
        && uri.len() <= 2048
        && !uri.contains('#')
        && uri.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_syntax_is_strict() {
        assert_eq!(parse_scope("a b:c a"), Some(vec!["a", "b:c"]));
        let most = vec!["s"; MAX_SCOPE_TOKENS].join(" ");
        assert_eq!(parse_scope(&most), Some(vec!["s"]));
        assert_eq!(parse_scope(&format!("{most} s")), None, "one too many");
        for bad in ["", " a", "a ", "a  b", "a\tb", "a\"b", "a\\b", "é"] {
            assert_eq!(parse_scope(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resource_uris_are_absolute_without_fragment() {
        assert!(is_resource_uri("https://api.example.com"));
        assert!(is_resource_uri("urn:example:api"));
        for bad in [
            "api.example.com",
            "/relative",
            "https://a#frag",
            "https://a b",
            "1http://x",
            "https:",
        ] {
            assert!(!is_resource_uri(bad), "{bad:?}");
        }
    }
}
