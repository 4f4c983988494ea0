//! The audit trail: who changed what, with the changed fields before and after. Never a secret
//! or its hash: a secret appears by its `secret_id` only.

use serde_json::{Map, Value, json};

use super::{ClientRecord, ClientUpdate, Credential};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// `latchkey` run against the database directly, by this OS user.
    Cli(String),
    /// The admin API, with a token of this admin client.
    Admin(String),
    /// Dynamic client registration (RFC 7591/7592): a registration made with the initial
    /// access token of this id, or the client it registered managing itself.
    Registration(String),
    /// A server on its own (a key created at start, rotated or removed on schedule): its id.
    Server(String),
}

impl Actor {
    /// The stored kind: `cli`, `admin`, `registration` or `server`.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Cli(_) => "cli",
            Actor::Admin(_) => "admin",
            Actor::Registration(_) => "registration",
            Actor::Server(_) => "server",
        }
    }

    /// The OS user, admin client id, initial access token id or server id.
    pub fn id(&self) -> &str {
        match self {
            Actor::Cli(id) | Actor::Admin(id) | Actor::Registration(id) | Actor::Server(id) => id,
        }
    }

    /// The actor from its stored kind and id.
    pub fn from_parts(kind: &str, id: String) -> Option<Self> {
        Some(match kind {
            "cli" => Actor::Cli(id),
            "admin" => Actor::Admin(id),
            "registration" => Actor::Registration(id),
            "server" => Actor::Server(id),
            _ => return None,
        })
    }
}

/// What was changed: the `action` of an audit entry.
pub mod action {
    /// A client was registered.
    pub const CLIENT_CREATE: &str = "client.create";
    /// Clients were registered in bulk (`client import`): one entry per stored batch.
    pub const CLIENT_IMPORT: &str = "client.import";
    /// A client's settings changed (disabling, enabling and revoking its tokens included).
    pub const CLIENT_UPDATE: &str = "client.update";
    /// What authenticates a client without a secret was replaced.
    pub const CLIENT_KEYS: &str = "client.keys";
    /// A client was deleted.
    pub const CLIENT_DELETE: &str = "client.delete";
    /// A secret was added (or rotated in, the others set to expire).
    pub const SECRET_ADD: &str = "secret.add";
    /// A secret was revoked.
    pub const SECRET_REVOKE: &str = "secret.revoke";
    /// The signing keys rotated.
    pub const KEYS_ROTATE: &str = "keys.rotate";
    /// A signing key was created (at a server's first start, or as the next key).
    pub const KEY_CREATE: &str = "key.create";
    /// Retired signing keys were removed.
    pub const KEYS_REMOVE: &str = "keys.remove";
    /// A signing key was copied in from another database, or sealed with a KEK.
    pub const KEY_IMPORT: &str = "key.import";
    /// An initial access token for dynamic registration was created.
    pub const REGISTRATION_TOKEN_CREATE: &str = "registration_token.create";
    /// An initial access token was revoked.
    pub const REGISTRATION_TOKEN_REVOKE: &str = "registration_token.revoke";
    /// A client in monitor mode passed its token rate or quota (and got its token).
    pub const CLIENT_QUOTA_EXCEEDED: &str = "client.quota_exceeded";
}

/// One change, as the service layer records it (in the same transaction as the change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When (Unix seconds).
    pub at: i64,
    /// Who.
    pub actor: Actor,
    /// What: one of [`action`].
    pub action: &'static str,
    /// The client id or key id changed, if one.
    pub target: Option<String>,
    /// The changed fields: `{"field": {"before": .., "after": ..}}` (only `after` for a
    /// creation, only `before` for a deletion), or what the action needs to be understood.
    pub changes: Value,
}

/// An audit entry as stored, with its position in the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in the trail; only grows.
    pub seq: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: String,
    /// The client id or key id changed, if one.
    pub target: Option<String>,
    /// The changed fields (see [`AuditEntry::changes`]).
    pub changes: Value,
}

/// A client's settings as the audit trail shows them: everything but its secrets; a
/// registered JWK Set by its key ids.
pub fn client_fields(client: &ClientRecord) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("name".into(), json!(client.name));
    fields.insert("scope".into(), json!(client.scope.join(" ")));
    fields.insert("audience".into(), json!(client.audience));
    fields.insert("grant_types".into(), json!(client.grant_types));
    fields.insert("token_ttl_seconds".into(), json!(client.token_ttl_seconds));
    fields.insert("auth_method".into(), json!(client.auth_method()));
    fields.insert("enabled".into(), json!(client.enabled));
    fields.insert("can_introspect".into(), json!(client.can_introspect));
    fields.insert("token_format".into(), json!(client.token_format));
    fields.insert("reuse_tokens".into(), json!(client.reuse_tokens));
    fields.insert(
        "token_rate".into(),
        json!(client.token_rate.map(|rate| rate.to_string())),
    );
    fields.insert(
        "token_quota".into(),
        json!(client.token_quota.map(|rate| rate.to_string())),
    );
    fields.insert("quota_mode".into(), json!(client.quota_mode.as_str()));
    fields.insert("token_epoch".into(), json!(client.token_epoch));
    fields.insert("credential".into(), credential_summary(&client.credential));
    fields
}

/// What authenticates a client, without anything secret (a secret client: its method only).
fn credential_summary(credential: &Credential) -> Value {
    match credential {
        Credential::Secret(_) => json!("secret"),
        Credential::Keys(jwks) => json!({ "key_ids": key_ids(jwks) }),
        Credential::Certificates(jwks) => json!({ "certificate_key_ids": key_ids(jwks) }),
        Credential::JwksUri(uri) => json!({ "jwks_uri": uri }),
        Credential::Federation(federation) => json!({
            "federated_issuer": federation.issuer,
            "federated_subject": federation.subject,
            "federated_audience": federation.audience,
            "federated_max_token_age": federation.max_token_age,
        }),
        Credential::TlsSubject(subject) => json!({ subject.kind(): subject.value() }),
    }
}

/// The `kid`s of a stored JWK Set.
fn key_ids(jwks: &str) -> Vec<String> {
    serde_json::from_str::<Value>(jwks)
        .ok()
        .and_then(|set| {
            set["keys"].as_array().map(|keys| {
                keys.iter()
                    .filter_map(|key| key["kid"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The changes of a creation: every field, `after` only.
pub fn created(client: &ClientRecord) -> Value {
    side_by_side(None, Some(client))
}

/// The changes of a deletion: every field, `before` only.
pub fn deleted(client: &ClientRecord) -> Value {
    side_by_side(Some(client), None)
}

/// The changes between two versions of a client: the fields that differ, before and after.
pub fn updated(before: &ClientRecord, after: &ClientRecord) -> Value {
    side_by_side(Some(before), Some(after))
}

fn side_by_side(before: Option<&ClientRecord>, after: Option<&ClientRecord>) -> Value {
    let before = before.map(client_fields);
    let after = after.map(client_fields);
    let names = before
        .as_ref()
        .or(after.as_ref())
        .map(|f| f.keys().cloned().collect::<Vec<_>>());
    let mut changes = Map::new();
    for name in names.unwrap_or_default() {
        let old = before.as_ref().and_then(|f| f.get(&name));
        let new = after.as_ref().and_then(|f| f.get(&name));
        if old == new {
            continue;
        }
        let mut change = Map::new();
        if let Some(old) = old {
            change.insert("before".into(), old.clone());
        }
        if let Some(new) = new {
            change.insert("after".into(), new.clone());
        }
        changes.insert(name, Value::Object(change));
    }
    Value::Object(changes)
}

impl ClientRecord {
    /// The client as `update` leaves it at `now` (what the store writes).
    pub fn with_update(&self, update: &ClientUpdate, now: i64) -> ClientRecord {
        let mut after = self.clone();
        if let Some(name) = &update.name {
            after.name.clone_from(name);
        }
        if let Some(scope) = &update.scope {
            after.scope.clone_from(scope);
        }
        if let Some(audience) = &update.audience {
            after.audience.clone_from(audience);
        }
        if let Some(ttl) = update.token_ttl_seconds {
            after.token_ttl_seconds = ttl;
        }
        if let Some(enabled) = update.enabled {
            after.enabled = enabled;
        }
        if let Some(can_introspect) = update.can_introspect {
            after.can_introspect = can_introspect;
        }
        if let Some(token_format) = update.token_format {
            after.token_format = token_format;
        }
        if let Some(reuse_tokens) = update.reuse_tokens {
            after.reuse_tokens = reuse_tokens;
        }
        if let Some(rate) = update.token_rate {
            after.token_rate = rate;
        }
        if let Some(quota) = update.token_quota {
            after.token_quota = quota;
        }
        if let Some(mode) = update.quota_mode {
            after.quota_mode = mode;
        }
        if update.revoke_tokens {
            after.token_epoch += 1;
        }
        if let Some(credential) = &update.credential {
            after.credential = credential.clone();
        }
        after.updated_at = now;
        after.version += 1;
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SecretMethod, SecretRecord};
    use crate::secret::SecretHash;

    #[test]
    fn changes_name_the_fields_that_moved_and_never_a_secret() {
        let mut before = ClientRecord::new(
            "c1".into(),
            "billing".into(),
            Credential::Secret(SecretMethod::Basic),
            100,
        );
        before.secrets.push(SecretRecord {
            secret_id: "s1".into(),
            hash: SecretHash::of(b"the-secret"),
            created_at: 100,
            expires_at: None,
        });
        let update = ClientUpdate {
            enabled: Some(false),
            revoke_tokens: true,
            name: Some("billing".into()),
            ..ClientUpdate::default()
        };
        let after = before.with_update(&update, 200);
        assert_eq!(
            updated(&before, &after),
            json!({
                "enabled": { "before": true, "after": false },
                "token_epoch": { "before": 0, "after": 1 },
            })
        );
        let created = created(&before).to_string();
        assert!(
            created.contains(r#""name":{"after":"billing"}"#),
            "{created}"
        );
        let hash = format!("{:?}", SecretHash::of(b"the-secret").0);
        assert!(!created.contains("the-secret") && !created.contains(&hash));
        assert_eq!(deleted(&before)["enabled"], json!({ "before": true }));
    }

    #[test]
    fn actors_are_stored_by_kind_and_id() {
        for actor in [
            Actor::Cli("alice".into()),
            Actor::Admin("lk_admin".into()),
            Actor::Registration("lk_reg".into()),
            Actor::Server("srv".into()),
        ] {
            assert_eq!(
                Actor::from_parts(actor.kind(), actor.id().to_owned()),
                Some(actor)
            );
        }
        assert_eq!(Actor::from_parts("root", "x".into()), None);
    }
}
