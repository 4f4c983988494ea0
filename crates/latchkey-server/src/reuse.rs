//! Token reuse (`client update --reuse-tokens`): a client that asks again for the same scope,
//! audience and binding while its last such token has more than half its lifetime left gets
//! that token back, with what is left of its lifetime, instead of a new one. Signing and
//! downstream caches see fewer tokens.
//!
//! Each server keeps the last few JWTs of a client on the client's cached record, so whatever
//! changes the client (disable, `revoke-tokens`, any update) drops them with the record. A
//! token is handed out again only while the key that signed it is still the signing key and
//! the database's deny list does not name it (RFC 7009 revocation, on any server); otherwise
//! the client gets a new one.
//! Opaque tokens are not reused: the server keeps only their hashes.

use std::sync::Mutex;

use latchkey_proto::{Confirmation, TokenType};

/// The most tokens kept per client (one per scope, audience and binding asked for lately).
const KEPT_PER_CLIENT: usize = 8;

/// What a token was asked for: a request with the same gets it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReuseKey {
    /// The granted scope tokens.
    pub scope: Vec<String>,
    /// The granted audiences.
    pub audience: Vec<String>,
    /// The binding (DPoP key, certificate), if any.
    pub cnf: Option<Confirmation>,
}

/// A token that may be handed out again.
#[derive(Debug, Clone)]
pub struct Reusable {
    /// What it was asked for.
    pub key: ReuseKey,
    /// The token.
    pub access_token: String,
    /// Its `jti`, for the deny list.
    pub jti: String,
    /// The `kid` of the key that signed it.
    pub kid: String,
    /// `Bearer` or `DPoP`.
    pub token_type: TokenType,
    /// The scope as the response gave it.
    pub scope: Option<String>,
    /// Issued at.
    pub issued_at: i64,
    /// Expires at.
    pub expires_at: i64,
}

impl Reusable {
    /// More than half its lifetime is left at `now`.
    pub fn fresh_at(&self, now: i64) -> bool {
        let lifetime = self.expires_at - self.issued_at;
        (self.expires_at - now) * 2 > lifetime
    }
}

/// A client's tokens that may be handed out again, on its cached record.
#[derive(Debug, Default)]
pub struct ReusableTokens(Mutex<Vec<Reusable>>);

impl ReusableTokens {
    /// The token for `key` that is still fresh at `now` and signed by `kid`, if any. Tokens
    /// past half their lifetime, or signed by another key, are dropped.
    pub fn find(&self, key: &ReuseKey, now: i64, kid: &str) -> Option<Reusable> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|token| token.fresh_at(now) && token.kid == kid);
        kept.iter().find(|token| token.key == *key).cloned()
    }

    /// Keeps `token` for its key, in place of an older one (and of the oldest when full).
    pub fn keep(&self, token: Reusable) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|kept| kept.key != token.key);
        if kept.len() == KEPT_PER_CLIENT {
            kept.remove(0);
        }
        kept.push(token);
    }

    /// Forgets the token `jti` (it was found revoked).
    pub fn forget(&self, jti: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|token| token.jti != jti);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(key: &ReuseKey, jti: &str, issued_at: i64) -> Reusable {
        Reusable {
            key: key.clone(),
            access_token: format!("token-{jti}"),
            jti: jti.into(),
            kid: "k1".into(),
            token_type: TokenType::Bearer,
            scope: None,
            issued_at,
            expires_at: issued_at + 900,
        }
    }

    #[test]
    fn a_token_is_reused_for_its_key_until_half_its_lifetime() {
        let tokens = ReusableTokens::default();
        let read = ReuseKey {
            scope: vec!["read".into()],
            audience: vec!["https://api".into()],
            cnf: None,
        };
        let write = ReuseKey {
            scope: vec!["write".into()],
            ..read.clone()
        };
        tokens.keep(token(&read, "a", 1000));
        assert_eq!(tokens.find(&read, 1449, "k1").unwrap().jti, "a");
        assert!(tokens.find(&read, 1450, "k1").is_none(), "half gone");
        assert!(tokens.find(&write, 1000, "k1").is_none(), "another scope");
        tokens.keep(token(&read, "b", 1000));
        assert!(
            tokens.find(&read, 1000, "k2").is_none(),
            "signed by another key"
        );
        tokens.keep(token(&read, "c", 1000));
        tokens.forget("c");
        assert!(tokens.find(&read, 1000, "k1").is_none());
        for i in 0..20 {
            let key = ReuseKey {
                scope: vec![format!("s{i}")],
                ..read.clone()
            };
            tokens.keep(token(&key, &i.to_string(), 1000));
        }
        assert_eq!(tokens.0.lock().unwrap().len(), KEPT_PER_CLIENT);
    }
}
