//! Usage figures: how much each client did, per minute.

use latchkey_proto::ErrorCode;

/// What a usage count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageKind {
    /// Access tokens issued.
    Tokens,
    /// Introspection requests answered.
    Introspections,
    /// Revocation requests answered.
    Revocations,
    /// Requests refused with this error.
    Denied(ErrorCode),
}

impl UsageKind {
    /// The stored name: `tokens`, `introspections`, `revocations`, or `denied:` and the code.
    pub fn name(self) -> String {
        match self {
            UsageKind::Tokens => "tokens".into(),
            UsageKind::Introspections => "introspections".into(),
            UsageKind::Revocations => "revocations".into(),
            UsageKind::Denied(code) => format!("denied:{}", code.as_str()),
        }
    }

    /// The kind of a stored name; `None` for one this version does not know.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "tokens" => UsageKind::Tokens,
            "introspections" => UsageKind::Introspections,
            "revocations" => UsageKind::Revocations,
            other => {
                let code = other.strip_prefix("denied:")?;
                let code: ErrorCode =
                    serde_json::from_value(serde_json::Value::String(code.to_owned())).ok()?;
                UsageKind::Denied(code)
            }
        })
    }
}

/// How many times a client did one kind of thing in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    /// The client.
    pub client_id: String,
    /// The minute (Unix seconds of its start).
    pub minute: i64,
    /// What was counted.
    pub kind: UsageKind,
    /// How many.
    pub count: i64,
}

/// The tokens one source address got for a client in one clock hour, and how many it may get
/// before the client counts as not caching its tokens.
///
/// The rule: a client that caches gets about one token per token lifetime on each host, so
/// one address getting more than `--not-caching-threshold` (default 10) tokens per token
/// lifetime within an hour is not caching. `allowed` is that threshold times the number of
/// lifetimes in an hour (rounded up), as the server that counted last applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    /// The client.
    pub client_id: String,
    /// Where the requests came from: an IPv4 address, an IPv6 /64 (`2001:db8::/64`), or
    /// `other` for the addresses beyond the first 256 of the hour (never flagged).
    pub source: String,
    /// The hour (Unix seconds of its start).
    pub hour: i64,
    /// Tokens issued to the client at this address in this hour.
    pub tokens: i64,
    /// The lifetime of those tokens, in seconds (the last one's, when they differ).
    pub lifetime: u64,
    /// Tokens it may get in the hour before it counts as not caching.
    pub allowed: i64,
}

impl TokenSource {
    /// The client is not caching its tokens at this address.
    pub fn not_caching(&self) -> bool {
        self.tokens > self.allowed
    }
}

/// How many tokens in an hour make a client with tokens of `lifetime` seconds count as not
/// caching, at `threshold` tokens per lifetime.
pub fn tokens_allowed_per_hour(threshold: u32, lifetime: u64) -> i64 {
    let lifetimes = 3600u64.div_ceil(lifetime.max(1));
    i64::try_from(u64::from(threshold).saturating_mul(lifetimes)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [
            UsageKind::Tokens,
            UsageKind::Introspections,
            UsageKind::Revocations,
            UsageKind::Denied(ErrorCode::InvalidClient),
            UsageKind::Denied(ErrorCode::UseDpopNonce),
        ] {
            assert_eq!(UsageKind::parse(&kind.name()), Some(kind));
        }
        assert_eq!(UsageKind::parse("denied:nonsense"), None);
        assert_eq!(UsageKind::parse("other"), None);
    }

    #[test]
    fn allowance_is_the_threshold_per_lifetime_in_an_hour() {
        assert_eq!(tokens_allowed_per_hour(10, 3600), 10);
        assert_eq!(tokens_allowed_per_hour(10, 300), 120);
        // A lifetime that does not divide the hour rounds the lifetimes up.
        assert_eq!(tokens_allowed_per_hour(10, 7 * 60), 90);
        // Longer than an hour: one lifetime.
        assert_eq!(tokens_allowed_per_hour(10, 86_400), 10);
        assert_eq!(tokens_allowed_per_hour(3, 0), 3 * 3600);
    }
}
