//! Records and rows, both ways, for both databases: the columns each statement selects, the
//! statements that write a record's columns, and the decoding of rows into records. The schemas
//! use the same column names, and sqlx decodes each database's types (SQLite INTEGER or
//! PostgreSQL BOOLEAN as `bool`, BLOB or BYTEA as bytes) into the same Rust values. A new
//! column is written and read here, and nowhere else in `store/`.

use std::str::FromStr;

use latchkey_proto::{ClientAuthMethod, Confirmation, GrantType, SigningAlg, TokenFormat};

use super::db::{DbRow, Query, sql};
use super::dialect::Dialect;
use super::{Change, FeedEntry, KeyState, StoreError, StoredKey};
use crate::model::{
    Actor, AuditEntry, AuditEvent, ClientRecord, ClientUpdate, Credential, Federation,
    OpaqueTokenRecord, QuotaMode, Rate, Registration, RegistrationToken, Revocation, SecretInfo,
    SecretRecord, TlsSubject, TokenSource, UsageCount, UsageKind,
};
use crate::secret::SecretHash;

/// The client columns joined with its unrevoked secrets, as [`clients_from_rows`] reads them; a
/// macro so `concat!` can extend it.
macro_rules! client_select {
    () => {
        "SELECT c.client_id, c.name, c.scope, c.audience, c.grant_types,
        c.token_ttl_seconds, c.auth_method, c.enabled, c.can_introspect, c.token_format,
        c.reuse_tokens, c.token_rate, c.token_quota, c.quota_mode, c.token_epoch, c.version, c.public_keys, c.jwks_uri,
        c.federated_issuer, c.federated_subject, c.federated_audience, c.federated_max_token_age,
        c.tls_subject_kind,
        c.tls_subject, c.created_at, c.updated_at,
        s.secret_id, s.secret_hash, s.created_at AS secret_created_at, s.expires_at
    FROM clients c
    LEFT JOIN client_secrets s ON s.client_id = c.client_id AND s.revoked_at IS NULL"
    };
}
pub(super) use client_select;

/// Selects the columns [`registration_token_from_row`] reads; a macro so `concat!` can extend
/// it.
macro_rules! registration_token_select {
    () => {
        "SELECT token_id, token_hash, created_at, expires_at, max_uses, uses, scope_limit,
        audience_limit FROM registration_tokens"
    };
}
pub(super) use registration_token_select;

/// Selects the columns [`registration_from_row`] reads; a macro so `concat!` can extend it.
macro_rules! registration_select {
    () => {
        "SELECT client_id, access_token_hash, token_id, scope_limit, audience_limit
        FROM client_registrations"
    };
}
pub(super) use registration_select;

/// Selects the columns [`key_from_row`] reads; a macro so `concat!` can extend it.
macro_rules! key_select {
    () => {
        "SELECT kid, alg, state, private_key, encryption, public_jwk, created_at, activated_at,
            retired_at, removed_at FROM signing_keys"
    };
}
pub(super) use key_select;

/// The opaque token with this hash, as [`opaque_from_row`] reads it.
pub(super) fn select_opaque(token_hash: &SecretHash) -> Query<'_> {
    sql(
        "SELECT token_hash, jti, client_id, scope, audience, issued_at, expires_at, epoch, cnf
         FROM opaque_tokens WHERE token_hash = $1",
    )
    .bind(&token_hash.0[..])
}

/// A client's unrevoked secrets, as [`secret_info_from_row`] reads them.
pub(super) fn select_secret_infos(client_id: &str) -> Query<'_> {
    sql(
        "SELECT secret_id, created_at, expires_at, last_used_at FROM client_secrets
         WHERE client_id = $1 AND revoked_at IS NULL ORDER BY created_at, secret_id",
    )
    .bind(client_id)
}

/// The columns of a client row, in the order [`bind_client`] binds them.
const CLIENT_COLUMNS: &str = "client_id, name, scope, audience, grant_types, token_ttl_seconds,
    auth_method, enabled, can_introspect, token_format, token_epoch, created_at, updated_at,
    public_keys, jwks_uri, federated_issuer, federated_subject, federated_audience,
    tls_subject_kind, tls_subject, federated_max_token_age, reuse_tokens, token_rate,
    token_quota, quota_mode";
const CLIENT_VALUES: usize = 25;

/// The most client rows one [`insert_clients`] statement takes. Small on purpose: SQLite
/// compiles each statement's text, and larger statements gained nothing once parameters were
/// bound by position (see [`Dialect::value_rows`]).
pub(super) const CLIENTS_PER_INSERT: usize = 20;
/// The most secrets one [`insert_secrets`] statement takes (5 parameters each).
pub(super) const SECRETS_PER_INSERT: usize = 80;

/// Inserts clients' rows, all in one statement (their secrets are [`insert_secrets`]); at
/// most [`CLIENTS_PER_INSERT`].
pub(super) fn insert_clients(dialect: Dialect, clients: &[ClientRecord]) -> Query<'_> {
    // Only placeholders are formatted into the statement; every value is a parameter.
    let statement = format!(
        "INSERT INTO clients ({CLIENT_COLUMNS}) VALUES {}",
        dialect.value_rows(clients.len(), CLIENT_VALUES)
    );
    clients
        .iter()
        .fold(sql(sqlx::AssertSqlSafe(statement)), bind_client)
}

/// Binds one client row's values, in the order of [`CLIENT_COLUMNS`].
fn bind_client<'a>(query: Query<'a>, client: &'a ClientRecord) -> Query<'a> {
    let columns = CredentialColumns::of(&client.credential);
    let query = query
        .bind(&client.client_id)
        .bind(&client.name)
        .bind(client.scope.join(" "))
        .bind(client.audience.join(" "))
        .bind(join_grants(&client.grant_types))
        .bind(client.token_ttl_seconds)
        .bind(client.auth_method().as_str())
        .bind(client.enabled)
        .bind(client.can_introspect)
        .bind(client.token_format.as_str())
        .bind(client.token_epoch)
        .bind(client.created_at)
        .bind(client.updated_at);
    columns
        .bind(query)
        .bind(client.reuse_tokens)
        .bind(client.token_rate.map(|rate| rate.to_string()))
        .bind(client.token_quota.map(|rate| rate.to_string()))
        .bind(client.quota_mode.as_str())
}

/// How a [`Credential`] is stored: the method in `auth_method`, and at most one of these set.
#[derive(Default)]
struct CredentialColumns<'a> {
    /// `public_keys`: the JWK Set of a `Keys` or `Certificates` credential.
    public_keys: Option<&'a str>,
    jwks_uri: Option<&'a str>,
    /// The `federated_*` columns.
    federation: Option<&'a Federation>,
    /// `tls_subject_kind` and `tls_subject`.
    tls_subject: Option<&'a TlsSubject>,
}

impl<'a> CredentialColumns<'a> {
    /// Binds the eight credential columns, in the order of [`CLIENT_COLUMNS`] from
    /// `public_keys` on.
    fn bind(&self, query: Query<'a>) -> Query<'a> {
        query
            .bind(self.public_keys)
            .bind(self.jwks_uri)
            .bind(self.federation.map(|f| f.issuer.as_str()))
            .bind(self.federation.map(|f| f.subject.as_str()))
            .bind(self.federation.and_then(|f| f.audience.as_deref()))
            .bind(self.tls_subject.map(TlsSubject::kind))
            .bind(self.tls_subject.map(TlsSubject::value))
            .bind(self.federation.and_then(|f| f.max_token_age))
    }

    fn of(credential: &'a Credential) -> Self {
        let none = CredentialColumns::default();
        match credential {
            Credential::Secret(_) => none,
            Credential::Keys(jwks) | Credential::Certificates(jwks) => CredentialColumns {
                public_keys: Some(jwks),
                ..none
            },
            Credential::JwksUri(uri) => CredentialColumns {
                jwks_uri: Some(uri),
                ..none
            },
            Credential::Federation(federation) => CredentialColumns {
                federation: Some(federation),
                ..none
            },
            Credential::TlsSubject(subject) => CredentialColumns {
                tls_subject: Some(subject),
                ..none
            },
        }
    }
}

/// The credential of a client row: its `auth_method` and the one credential column group
/// that method uses. Any other combination is corrupt.
fn credential_from_row(row: &DbRow) -> Result<Credential, StoreError> {
    use latchkey_proto::ClientAuthMethod::{PrivateKeyJwt, SelfSignedTlsClientAuth, TlsClientAuth};
    let method: String = row.get("auth_method")?;
    let method = ClientAuthMethod::from_str(&method)
        .map_err(|e| StoreError::Corrupt(format!("auth method: {e}")))?;
    let public_keys: Option<String> = row.get("public_keys")?;
    let jwks_uri: Option<String> = row.get("jwks_uri")?;
    let federation = match (
        row.get::<Option<String>>("federated_issuer")?,
        row.get::<Option<String>>("federated_subject")?,
        row.get::<Option<String>>("federated_audience")?,
    ) {
        (Some(issuer), Some(subject), audience) => Some(Federation {
            issuer,
            subject,
            audience,
            max_token_age: row.get("federated_max_token_age")?,
        }),
        (None, None, None) => None,
        _ => return Err(StoreError::Corrupt("partial federation".into())),
    };
    let tls_subject = match (
        row.get::<Option<String>>("tls_subject_kind")?,
        row.get::<Option<String>>("tls_subject")?,
    ) {
        (Some(kind), Some(value)) => Some(
            TlsSubject::parse(&kind, &value)
                .map_err(|e| StoreError::Corrupt(format!("tls subject: {e}")))?,
        ),
        (None, None) => None,
        _ => return Err(StoreError::Corrupt("partial tls subject".into())),
    };
    let corrupt = || {
        let client_id = row.get::<String>("client_id").unwrap_or_default();
        StoreError::Corrupt(format!(
            "the credential columns of client {client_id:?} ({method})"
        ))
    };
    Ok(
        match (method, public_keys, jwks_uri, federation, tls_subject) {
            (method, None, None, None, None) if method.uses_secret() => {
                Credential::secret(method).ok_or_else(corrupt)?
            }
            (PrivateKeyJwt, Some(jwks), None, None, None) => Credential::Keys(jwks),
            (PrivateKeyJwt, None, Some(uri), None, None) => Credential::JwksUri(uri),
            (PrivateKeyJwt, None, None, Some(federation), None) => {
                Credential::Federation(federation)
            }
            (SelfSignedTlsClientAuth, Some(jwks), None, None, None) => {
                Credential::Certificates(jwks)
            }
            (TlsClientAuth, None, None, None, Some(subject)) => Credential::TlsSubject(subject),
            _ => return Err(corrupt()),
        },
    )
}

/// Applies a [`ClientUpdate`] to a client's row and moves its version on. A new credential is
/// written only over one of the same authentication method (`$20`), and an update with an
/// expected version only to a row at that version (`$21`): no row changes otherwise. The casts give
/// PostgreSQL the type of parameters it cannot infer; SQLite reads them as no-ops.
pub(super) fn update_client<'a>(
    client_id: &'a str,
    update: &'a ClientUpdate,
    now: i64,
) -> Query<'a> {
    // A new credential replaces every credential column; the method stays the same.
    let columns = update
        .credential
        .as_ref()
        .map(CredentialColumns::of)
        .unwrap_or_default();
    let query = sql("UPDATE clients SET
            name = COALESCE($2, name),
            scope = COALESCE($3, scope),
            audience = COALESCE($4, audience),
            token_ttl_seconds = COALESCE($5, token_ttl_seconds),
            enabled = COALESCE($6, enabled),
            can_introspect = COALESCE($8, can_introspect),
            token_format = COALESCE($9, token_format),
            reuse_tokens = COALESCE($22, reuse_tokens),
            token_rate = CASE WHEN $23 THEN CAST($24 AS TEXT) ELSE token_rate END,
            token_quota = CASE WHEN $25 THEN CAST($26 AS TEXT) ELSE token_quota END,
            quota_mode = COALESCE($27, quota_mode),
            token_epoch = token_epoch + $10,
            public_keys = CASE WHEN $19 THEN CAST($11 AS TEXT) ELSE public_keys END,
            jwks_uri = CASE WHEN $19 THEN CAST($12 AS TEXT) ELSE jwks_uri END,
            federated_issuer = CASE WHEN $19 THEN CAST($13 AS TEXT) ELSE federated_issuer END,
            federated_subject = CASE WHEN $19 THEN CAST($14 AS TEXT) ELSE federated_subject END,
            federated_audience = CASE WHEN $19 THEN CAST($15 AS TEXT)
                ELSE federated_audience END,
            tls_subject_kind = CASE WHEN $19 THEN CAST($16 AS TEXT) ELSE tls_subject_kind END,
            tls_subject = CASE WHEN $19 THEN CAST($17 AS TEXT) ELSE tls_subject END,
            federated_max_token_age = CASE WHEN $19 THEN CAST($18 AS BIGINT)
                ELSE federated_max_token_age END,
            updated_at = $7,
            version = version + 1
         WHERE client_id = $1 AND (NOT $19 OR auth_method = $20)
           AND (CAST($21 AS BIGINT) IS NULL OR version = $21)")
    .bind(client_id)
    .bind(update.name.as_deref())
    .bind(update.scope.as_ref().map(|s| s.join(" ")))
    .bind(update.audience.as_ref().map(|a| a.join(" ")))
    .bind(update.token_ttl_seconds)
    .bind(update.enabled)
    .bind(now)
    .bind(update.can_introspect)
    .bind(update.token_format.map(TokenFormat::as_str))
    .bind(i64::from(update.revoke_tokens));
    columns
        .bind(query)
        .bind(update.credential.is_some())
        .bind(
            update
                .credential
                .as_ref()
                .map(|credential| credential.auth_method().as_str()),
        )
        .bind(update.expected_version)
        .bind(update.reuse_tokens)
        .bind(update.token_rate.is_some())
        .bind(update.token_rate.flatten().map(|rate| rate.to_string()))
        .bind(update.token_quota.is_some())
        .bind(update.token_quota.flatten().map(|rate| rate.to_string()))
        .bind(update.quota_mode.map(QuotaMode::as_str))
}

/// Inserts secrets (`(client_id, secret)`), all in one statement; at most
/// [`SECRETS_PER_INSERT`].
pub(super) fn insert_secrets<'a>(
    dialect: Dialect,
    secrets: &[(&'a str, &'a SecretRecord)],
) -> Query<'a> {
    let statement = format!(
        "INSERT INTO client_secrets (secret_id, client_id, secret_hash, created_at, expires_at)
         VALUES {}",
        dialect.value_rows(secrets.len(), 5)
    );
    secrets.iter().fold(
        sql(sqlx::AssertSqlSafe(statement)),
        |query, (client_id, secret)| {
            query
                .bind(&secret.secret_id)
                .bind(*client_id)
                .bind(&secret.hash.0[..])
                .bind(secret.created_at)
                .bind(secret.expires_at)
        },
    )
}

/// Inserts a signing key.
pub(super) fn insert_key(key: &StoredKey) -> Query<'_> {
    sql(
        "INSERT INTO signing_keys (kid, alg, state, private_key, encryption, public_jwk,
            created_at, activated_at, retired_at, removed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&key.kid)
    .bind(key.alg.as_str())
    .bind(key.state.as_str())
    .bind(&key.private_key[..])
    .bind(key.encryption.as_deref())
    .bind(&key.public_jwk)
    .bind(key.created_at)
    .bind(key.activated_at)
    .bind(key.retired_at)
    .bind(key.removed_at)
}

/// Inserts an opaque token. A binding that cannot be written is an error, never a token stored
/// unbound.
pub(super) fn insert_opaque(token: &OpaqueTokenRecord) -> Result<Query<'_>, StoreError> {
    let cnf = token
        .cnf
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("cnf: {e}")))?;
    Ok(sql(
        "INSERT INTO opaque_tokens (token_hash, jti, client_id, scope, audience, issued_at,
            expires_at, epoch, cnf)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&token.token_hash.0[..])
    .bind(&token.jti)
    .bind(&token.client_id)
    .bind(token.scope.join(" "))
    .bind(token.audience.join(" "))
    .bind(token.issued_at)
    .bind(token.expires_at)
    .bind(token.epoch)
    .bind(cnf))
}

/// Folds joined client/secret rows (one per secret, rows of one client adjacent) into client
/// records.
pub(super) fn clients_from_rows(rows: &[DbRow]) -> Result<Vec<ClientRecord>, StoreError> {
    let mut clients: Vec<ClientRecord> = Vec::new();
    for row in rows {
        let client_id: String = row.get("client_id")?;
        if clients.last().is_none_or(|c| c.client_id != client_id) {
            let token_format: String = row.get("token_format")?;
            clients.push(ClientRecord {
                client_id,
                name: row.get("name")?,
                scope: split_list(&row.get::<String>("scope")?),
                audience: split_list(&row.get::<String>("audience")?),
                grant_types: parse_grants(&row.get::<String>("grant_types")?)?,
                token_ttl_seconds: row.get("token_ttl_seconds")?,
                credential: credential_from_row(row)?,
                enabled: row.get("enabled")?,
                can_introspect: row.get("can_introspect")?,
                reuse_tokens: row.get("reuse_tokens")?,
                token_rate: rate_from_row(row, "token_rate")?,
                token_quota: rate_from_row(row, "token_quota")?,
                quota_mode: QuotaMode::parse(&row.get::<String>("quota_mode")?)
                    .map_err(StoreError::Corrupt)?,
                token_format: TokenFormat::from_str(&token_format)
                    .map_err(|e| StoreError::Corrupt(format!("token format: {e}")))?,
                token_epoch: row.get("token_epoch")?,
                version: row.get("version")?,
                created_at: row.get("created_at")?,
                updated_at: row.get("updated_at")?,
                secrets: Vec::new(),
            });
        }
        let secret_id: Option<String> = row.get("secret_id")?;
        if let (Some(secret_id), Some(client)) = (secret_id, clients.last_mut()) {
            client.secrets.push(SecretRecord {
                secret_id,
                hash: hash_from_row(row, "secret_hash")?,
                created_at: row.get("secret_created_at")?,
                expires_at: row.get("expires_at")?,
            });
        }
    }
    Ok(clients)
}

/// Appends an audit entry, `outcome` merged into its changes.
pub(super) fn insert_audit(entry: &AuditEntry, outcome: Option<serde_json::Value>) -> Query<'_> {
    let mut changes = entry.changes.clone();
    if let (Some(serde_json::Value::Object(outcome)), serde_json::Value::Object(fields)) =
        (outcome, &mut changes)
    {
        fields.extend(outcome);
    }
    sql(
        "INSERT INTO audit_events (at, actor_kind, actor_id, action, target, changes)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.at)
    .bind(entry.actor.kind())
    .bind(entry.actor.id())
    .bind(entry.action)
    .bind(entry.target.as_deref())
    .bind(changes.to_string())
}

/// An audit event, from a row of `audit_events`.
pub(super) fn audit_event_from_row(row: &DbRow) -> Result<AuditEvent, StoreError> {
    let kind: String = row.get("actor_kind")?;
    let actor = Actor::from_parts(&kind, row.get("actor_id")?)
        .ok_or_else(|| StoreError::Corrupt(format!("audit actor kind {kind:?}")))?;
    let changes: String = row.get("changes")?;
    Ok(AuditEvent {
        seq: row.get("seq")?,
        at: row.get("at")?,
        actor,
        action: row.get("action")?,
        target: row.get("target")?,
        changes: serde_json::from_str(&changes)
            .map_err(|e| StoreError::Corrupt(format!("audit changes: {e}")))?,
    })
}

/// A secret as listed, from a row of [`select_secret_infos`].
pub(super) fn secret_info_from_row(row: &DbRow) -> Result<SecretInfo, StoreError> {
    Ok(SecretInfo {
        secret_id: row.get("secret_id")?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        last_used_at: row.get("last_used_at")?,
    })
}

/// A signing key from a row of `key_select!` columns.
pub(super) fn key_from_row(row: &DbRow) -> Result<StoredKey, StoreError> {
    let alg: String = row.get("alg")?;
    let state: String = row.get("state")?;
    Ok(StoredKey {
        kid: row.get("kid")?,
        alg: SigningAlg::from_str(&alg)
            .map_err(|e| StoreError::Corrupt(format!("key alg: {e}")))?,
        state: KeyState::parse(&state)?,
        private_key: row.get("private_key")?,
        encryption: row.get("encryption")?,
        public_jwk: row.get("public_jwk")?,
        created_at: row.get("created_at")?,
        activated_at: row.get("activated_at")?,
        retired_at: row.get("retired_at")?,
        removed_at: row.get("removed_at")?,
    })
}

/// An opaque token record from a row of [`select_opaque`].
pub(super) fn opaque_from_row(row: &DbRow) -> Result<OpaqueTokenRecord, StoreError> {
    Ok(OpaqueTokenRecord {
        token_hash: hash_from_row(row, "token_hash")?,
        jti: row.get("jti")?,
        client_id: row.get("client_id")?,
        scope: split_list(&row.get::<String>("scope")?),
        audience: split_list(&row.get::<String>("audience")?),
        issued_at: row.get("issued_at")?,
        expires_at: row.get("expires_at")?,
        epoch: row.get("epoch")?,
        cnf: row
            .get::<Option<String>>("cnf")?
            .map(|cnf| serde_json::from_str::<Confirmation>(&cnf))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("cnf: {e}")))?,
    })
}

/// A deny-list entry from a row of `seq, jti, expires_at`.
pub(super) fn revocation_from_row(row: &DbRow) -> Result<Revocation, StoreError> {
    Ok(Revocation {
        seq: row.get("seq")?,
        jti: row.get("jti")?,
        expires_at: row.get("expires_at")?,
    })
}

/// A change-feed row.
pub(super) fn feed_entry_from_row(row: &DbRow) -> Result<FeedEntry, StoreError> {
    let kind: String = row.get("kind")?;
    Ok(FeedEntry {
        generation: row.get("generation")?,
        change: Change::from_columns(&kind, row.get("client_id")?)?,
    })
}

/// A SHA-256 hash column.
/// Inserts an initial access token.
pub(super) fn insert_registration_token(token: &RegistrationToken) -> Query<'_> {
    sql(
        "INSERT INTO registration_tokens (token_id, token_hash, created_at, expires_at, max_uses,
            uses, scope_limit, audience_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(token.token_id.as_str())
    .bind(&token.hash.0[..])
    .bind(token.created_at)
    .bind(token.expires_at)
    .bind(token.max_uses)
    .bind(token.uses)
    .bind(token.scope_limit.as_ref().map(|scope| scope.join(" ")))
    .bind(
        token
            .audience_limit
            .as_ref()
            .map(|audience| audience.join(" ")),
    )
}

/// An initial access token, from the columns of `registration_token_select!`.
pub(super) fn registration_token_from_row(row: &DbRow) -> Result<RegistrationToken, StoreError> {
    let scope_limit: Option<String> = row.get("scope_limit")?;
    let audience_limit: Option<String> = row.get("audience_limit")?;
    Ok(RegistrationToken {
        token_id: row.get("token_id")?,
        hash: hash_from_row(row, "token_hash")?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        max_uses: row.get("max_uses")?,
        uses: row.get("uses")?,
        scope_limit: scope_limit.as_deref().map(split_list),
        audience_limit: audience_limit.as_deref().map(split_list),
    })
}

/// Inserts what is kept about a registered client.
pub(super) fn insert_registration(registration: &Registration) -> Query<'_> {
    sql(
        "INSERT INTO client_registrations (client_id, access_token_hash, token_id, scope_limit,
            audience_limit) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(registration.client_id.as_str())
    .bind(&registration.access_hash.0[..])
    .bind(registration.token_id.as_str())
    .bind(
        registration
            .scope_limit
            .as_ref()
            .map(|scope| scope.join(" ")),
    )
    .bind(
        registration
            .audience_limit
            .as_ref()
            .map(|audience| audience.join(" ")),
    )
}

/// A registration, from a row of `client_registrations`.
pub(super) fn registration_from_row(row: &DbRow) -> Result<Registration, StoreError> {
    let scope_limit: Option<String> = row.get("scope_limit")?;
    let audience_limit: Option<String> = row.get("audience_limit")?;
    Ok(Registration {
        client_id: row.get("client_id")?,
        access_hash: hash_from_row(row, "access_token_hash")?,
        token_id: row.get("token_id")?,
        scope_limit: scope_limit.as_deref().map(split_list),
        audience_limit: audience_limit.as_deref().map(split_list),
    })
}

/// The most usage rows one [`add_usage`] statement takes (4 parameters each).
pub(super) const USAGE_PER_INSERT: usize = 100;

/// Adds usage counts (`(client_id, minute, kind, count)`, each key once) to the stored ones.
pub(super) fn add_usage<'a>(
    dialect: Dialect,
    rows: &'a [(&'a str, i64, String, i64)],
) -> Query<'a> {
    let statement = format!(
        "INSERT INTO usage_counts (client_id, minute, kind, count) VALUES {}
         ON CONFLICT (client_id, minute, kind)
         DO UPDATE SET count = usage_counts.count + excluded.count",
        dialect.value_rows(rows.len(), 4)
    );
    rows.iter().fold(
        sql(sqlx::AssertSqlSafe(statement)),
        |query, (client_id, minute, kind, count)| {
            query
                .bind(*client_id)
                .bind(*minute)
                .bind(kind.as_str())
                .bind(*count)
        },
    )
}

/// A token-source row to add: client id, hour, address, tokens, lifetime, allowance.
pub(super) type SourceRow<'a> = (&'a str, i64, &'a str, i64, i64, i64);

/// Adds token counts per client, hour and address (each key once) to the stored ones, and
/// returns the rows as they stand after the addition.
pub(super) fn add_token_sources<'a>(dialect: Dialect, rows: &'a [SourceRow<'a>]) -> Query<'a> {
    let statement = format!(
        "INSERT INTO token_sources (client_id, hour, source, tokens, lifetime, allowed)
         VALUES {}
         ON CONFLICT (client_id, hour, source)
         DO UPDATE SET tokens = token_sources.tokens + excluded.tokens,
                       lifetime = excluded.lifetime, allowed = excluded.allowed
         RETURNING client_id, source, hour, tokens, lifetime, allowed",
        dialect.value_rows(rows.len(), 6)
    );
    rows.iter().fold(
        sql(sqlx::AssertSqlSafe(statement)),
        |query, (client_id, hour, source, tokens, lifetime, allowed)| {
            query
                .bind(*client_id)
                .bind(*hour)
                .bind(*source)
                .bind(*tokens)
                .bind(*lifetime)
                .bind(*allowed)
        },
    )
}

/// A token-source row.
pub(super) fn token_source_from_row(row: &DbRow) -> Result<TokenSource, StoreError> {
    Ok(TokenSource {
        client_id: row.get("client_id")?,
        source: row.get("source")?,
        hour: row.get("hour")?,
        tokens: row.get("tokens")?,
        lifetime: u64::try_from(row.get::<i64>("lifetime")?)
            .map_err(|_| StoreError::Corrupt("negative token lifetime".into()))?,
        allowed: row.get("allowed")?,
    })
}

/// A usage count from a row; `None` (skipped) for a kind this version does not know, which a
/// newer server may write.
pub(super) fn usage_from_row(row: &DbRow) -> Option<Result<UsageCount, StoreError>> {
    let read = || -> Result<Option<UsageCount>, StoreError> {
        let kind: String = row.get("kind")?;
        let Some(kind) = UsageKind::parse(&kind) else {
            return Ok(None);
        };
        Ok(Some(UsageCount {
            client_id: row.get("client_id")?,
            minute: row.get("minute")?,
            kind,
            count: row.get("count")?,
        }))
    };
    read().transpose()
}

/// A rate column (`100/min`, or NULL).
fn rate_from_row(row: &DbRow, column: &str) -> Result<Option<Rate>, StoreError> {
    row.get::<Option<String>>(column)?
        .map(|text| Rate::parse(&text).map_err(StoreError::Corrupt))
        .transpose()
}

fn hash_from_row(row: &DbRow, column: &str) -> Result<SecretHash, StoreError> {
    let hash: Vec<u8> = row.get(column)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{column} is not 32 bytes")))?;
    Ok(SecretHash(hash))
}

fn split_list(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_grants(s: &str) -> Result<Vec<GrantType>, StoreError> {
    split_list(s)
        .iter()
        .map(|g| {
            g.parse()
                .map_err(|e| StoreError::Corrupt(format!("grant type: {e}")))
        })
        .collect()
}

fn join_grants(grants: &[GrantType]) -> String {
    grants
        .iter()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
