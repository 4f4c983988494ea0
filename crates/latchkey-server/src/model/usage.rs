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
}
