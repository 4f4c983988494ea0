//! Reading a resource server's `WWW-Authenticate` challenge (RFC 9110 §11.6.1, RFC 6750 §3).

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, StatusCode};

/// True for `401` with a `Bearer` challenge whose `error` is `invalid_token` (RFC 6750 §3.1):
/// the token is expired, revoked or otherwise bad, and a new one may succeed.
pub(crate) fn rejects_token(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(bearer_error_is_invalid_token)
}

/// True for a gRPC response whose headers carry `grpc-status: 16` (UNAUTHENTICATED): the
/// trailers-only response a gRPC server sends when it rejects a call before running it.
pub(crate) fn grpc_unauthenticated(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"16")
}

/// Walks one header value, which may hold several challenges:
/// `challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`.
fn bearer_error_is_invalid_token(value: &str) -> bool {
    let mut in_bearer = false;
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let name_end = rest.find(['=', ' ', '\t', ',']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        let after = rest[name_end..].trim_start_matches([' ', '\t']);
        if let Some(after_equals) = after.strip_prefix('=')
            && !after_equals.starts_with('=')
        {
            // An auth-param of the current challenge.
            let (param_value, remainder) =
                param_value(after_equals.trim_start_matches([' ', '\t']));
            if in_bearer && name.eq_ignore_ascii_case("error") && param_value == "invalid_token" {
                return true;
            }
            rest = remainder;
        } else {
            // A new challenge starts with its scheme; a token68 or a stray character is
            // skipped (always by at least one character, so the walk ends).
            in_bearer = name.eq_ignore_ascii_case("Bearer");
            let skip = if name_end == 0 {
                rest.chars().next().map_or(1, char::len_utf8)
            } else {
                name_end
            };
            rest = &rest[skip..];
        }
    }
}

/// A token or quoted-string value, and what follows it.
fn param_value(input: &str) -> (String, &str) {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                _ => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = input.find([',', ' ', '\t']).unwrap_or(input.len());
        (input[..end].to_owned(), &input[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_invalid_token_in_bearer_challenges_only() {
        let yes = [
            r#"Bearer realm="api", error="invalid_token", error_description="expired""#,
            r#"bearer error=invalid_token"#,
            r#"Basic realm="x", Bearer error="invalid_token""#,
            r#"Bearer realm="a, error=\"invalid_token\"", error="invalid_token""#,
        ];
        for value in yes {
            assert!(bearer_error_is_invalid_token(value), "{value}");
        }
        let no = [
            r#"Bearer realm="api""#,
            r#"Bearer error="insufficient_scope", scope="a""#,
            r#"Basic error="invalid_token""#,
            r#"Bearer realm="error=\"invalid_token\"""#,
            r#"DPoP error="invalid_token""#,
            "Basic dXNlcg==, Negotiate",
            "===,,é=\"",
            "",
        ];
        for value in no {
            assert!(!bearer_error_is_invalid_token(value), "{value}");
        }
    }
}
