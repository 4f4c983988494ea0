//! Turning result rows into records, for both backends: the schemas use the same column
//! names, and sqlx decodes each backend's types (SQLite INTEGER or PostgreSQL BOOLEAN as
//! `bool`, BLOB or BYTEA as bytes) into the same Rust values.

use std::str::FromStr;

use latchkey_proto::{ClientAuthMethod, SigningAlg, TokenFormat};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{
    Change, ClientRecord, Federation, FeedEntry, KeyState, OpaqueTokenRecord, SecretRecord,
    StoreError, StoredKey, parse_grants, split_list,
};
use crate::protocol::mutual_tls::TlsSubject;
use crate::secret::SecretHash;

/// Column `name` as `T`; a missing column or an undecodable value is a corrupt record.
fn get<'r, R, T>(row: &'r R, name: &str) -> Result<T, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Folds joined client/secret rows (one per secret, rows of one client adjacent) into client
/// records.
pub(super) fn clients_from_rows<R>(rows: &[R]) -> Result<Vec<ClientRecord>, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut clients: Vec<ClientRecord> = Vec::new();
    for row in rows {
        let client_id: String = get(row, "client_id")?;
        if clients.last().is_none_or(|c| c.client_id != client_id) {
            let auth_method: String = get(row, "auth_method")?;
            let token_format: String = get(row, "token_format")?;
            clients.push(ClientRecord {
                client_id,
                name: get(row, "name")?,
                scope: split_list(&get::<_, String>(row, "scope")?),
                audience: split_list(&get::<_, String>(row, "audience")?),
                grant_types: parse_grants(&get::<_, String>(row, "grant_types")?)?,
                token_ttl_seconds: get(row, "token_ttl_seconds")?,
                auth_method: ClientAuthMethod::from_str(&auth_method)
                    .map_err(|e| StoreError::Corrupt(format!("auth method: {e}")))?,
                enabled: get(row, "enabled")?,
                can_introspect: get(row, "can_introspect")?,
                token_format: TokenFormat::from_str(&token_format)
                    .map_err(|e| StoreError::Corrupt(format!("token format: {e}")))?,
                token_epoch: get(row, "token_epoch")?,
                public_keys: get(row, "public_keys")?,
                jwks_uri: get(row, "jwks_uri")?,
                federation: match (
                    get::<_, Option<String>>(row, "federated_issuer")?,
                    get::<_, Option<String>>(row, "federated_subject")?,
                    get::<_, Option<String>>(row, "federated_audience")?,
                ) {
                    (Some(issuer), Some(subject), audience) => Some(Federation {
                        issuer,
                        subject,
                        audience,
                        max_token_age: get(row, "federated_max_token_age")?,
                    }),
                    (None, None, None) => None,
                    _ => return Err(StoreError::Corrupt("partial federation".into())),
                },
                tls_subject: match (
                    get::<_, Option<String>>(row, "tls_subject_kind")?,
                    get::<_, Option<String>>(row, "tls_subject")?,
                ) {
                    (Some(kind), Some(value)) => Some(
                        TlsSubject::parse(&kind, &value)
                            .map_err(|e| StoreError::Corrupt(format!("tls subject: {e}")))?,
                    ),
                    (None, None) => None,
                    _ => return Err(StoreError::Corrupt("partial tls subject".into())),
                },
                created_at: get(row, "created_at")?,
                updated_at: get(row, "updated_at")?,
                secrets: Vec::new(),
            });
        }
        let secret_id: Option<String> = get(row, "secret_id")?;
        if let (Some(secret_id), Some(client)) = (secret_id, clients.last_mut()) {
            let hash: Vec<u8> = get(row, "secret_hash")?;
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("secret hash is not 32 bytes".into()))?;
            client.secrets.push(SecretRecord {
                secret_id,
                hash: SecretHash(hash),
                created_at: get(row, "secret_created_at")?,
                expires_at: get(row, "expires_at")?,
            });
        }
    }
    Ok(clients)
}

/// A signing key from a row of `key_select!` columns.
pub(super) fn key_from_row<R>(row: &R) -> Result<StoredKey, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let alg: String = get(row, "alg")?;
    let state: String = get(row, "state")?;
    Ok(StoredKey {
        kid: get(row, "kid")?,
        alg: SigningAlg::from_str(&alg)
            .map_err(|e| StoreError::Corrupt(format!("key alg: {e}")))?,
        state: KeyState::parse(&state)?,
        private_key: get(row, "private_key")?,
        encryption: get(row, "encryption")?,
        public_jwk: get(row, "public_jwk")?,
        created_at: get(row, "created_at")?,
        activated_at: get(row, "activated_at")?,
        retired_at: get(row, "retired_at")?,
        removed_at: get(row, "removed_at")?,
    })
}

/// An opaque token record from a row of `opaque_tokens`.
pub(super) fn opaque_from_row<R>(row: &R) -> Result<OpaqueTokenRecord, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let hash: Vec<u8> = get(row, "token_hash")?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt("token hash is not 32 bytes".into()))?;
    Ok(OpaqueTokenRecord {
        token_hash: SecretHash(hash),
        jti: get(row, "jti")?,
        client_id: get(row, "client_id")?,
        scope: split_list(&get::<_, String>(row, "scope")?),
        audience: split_list(&get::<_, String>(row, "audience")?),
        issued_at: get(row, "issued_at")?,
        expires_at: get(row, "expires_at")?,
        epoch: get(row, "epoch")?,
        cnf: get::<_, Option<String>>(row, "cnf")?
            .map(|cnf| serde_json::from_str(&cnf))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("cnf: {e}")))?,
    })
}

/// A change-feed row.
pub(super) fn feed_entry_from_row<R>(row: &R) -> Result<FeedEntry, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let kind: String = get(row, "kind")?;
    Ok(FeedEntry {
        generation: get(row, "generation")?,
        change: Change::from_columns(&kind, get(row, "client_id")?)?,
    })
}
