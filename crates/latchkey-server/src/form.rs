//! Strict `application/x-www-form-urlencoded` decoding (WHATWG URL §5.1, as RFC 6749
//! Appendix B uses it). Unlike lenient decoders, an invalid percent-escape (`%zz`, `%4`) or
//! bytes that are not UTF-8 after decoding are errors, not silently replaced.

/// Why a form body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// A bad percent-escape or non-UTF-8 text.
    Malformed,
    /// More parameters than the caller allows.
    TooManyParameters,
}

/// Decodes a whole body into name/value pairs, in order. Stops with an error as soon as
/// `max_pairs` is exceeded, so a huge request costs linear time.
pub fn parse(body: &[u8], max_pairs: usize) -> Result<Vec<(String, String)>, FormError> {
    let mut pairs = Vec::new();
    for segment in body.split(|&b| b == b'&') {
        if segment.is_empty() {
            continue;
        }
        if pairs.len() == max_pairs {
            return Err(FormError::TooManyParameters);
        }
        let (name, value) = match segment.iter().position(|&b| b == b'=') {
            Some(eq) => (&segment[..eq], &segment[eq + 1..]),
            None => (segment, &segment[segment.len()..]),
        };
        let name = decode_component(name).ok_or(FormError::Malformed)?;
        let value = decode_component(value).ok_or(FormError::Malformed)?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte. `None` for a bad
/// escape or a result that is not UTF-8.
pub fn decode_component(input: &[u8]) -> Option<String> {
    // Most components (grant_type, scope, ids) have nothing to decode: check and copy them.
    if !input.iter().any(|&b| b == b'+' || b == b'%') {
        return std::str::from_utf8(input).ok().map(str::to_owned);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex(*input.get(i + 1)?)?;
                let lo = hex(*input.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_strictly() {
        assert_eq!(
            parse(b"a=1+2&b=%2F%3d&&c", 8),
            Ok(vec![
                ("a".into(), "1 2".into()),
                ("b".into(), "/=".into()),
                ("c".into(), "".into())
            ])
        );
        for bad in [&b"a=%zz"[..], b"a=%4", b"a=%", b"a=%FF", b"%C3=1"] {
            assert_eq!(parse(bad, 8), Err(FormError::Malformed), "{bad:?}");
        }
        assert_eq!(parse(b"a&b&c", 2), Err(FormError::TooManyParameters));
    }
}
