//! The embedded SQLite implementation of [`Store`]: WAL, a busy timeout, `BEGIN IMMEDIATE` for
//! every read-then-write transaction, and migrations compiled into the binary.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_proto::{SigningAlg, TokenFormat};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use super::jti_batch::{JtiBackend, JtiWriter, NewJti, insert_sql};
use super::rows::{clients_from_rows, feed_entry_from_row, key_from_row, opaque_from_row};
use super::{
    Change, ClientRecord, ClientUpdate, FEED_RETAINED, FeedEntry, KeyState, OpaqueTokenRecord,
    Purged, Revocation, RotationOutcome, RotationPlan, SecretAdded, SecretInfo, SecretRecord,
    Store, StoreError, StoredKey, SyncPoint, join_grants,
};
use crate::protocol::mutual_tls::TlsSubject;
use crate::secret::SecretHash;

/// Schema migrations, in order. Version `n` is `MIGRATIONS[n - 1]`; a migration is never edited
/// once released, only followed by a new one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        "token lifecycle",
        include_str!("../../migrations/sqlite/0002_token_lifecycle.sql"),
    ),
    (
        "client assertions",
        include_str!("../../migrations/sqlite/0003_client_assertions.sql"),
    ),
    (
        "jwks_uri",
        include_str!("../../migrations/sqlite/0004_jwks_uri.sql"),
    ),
    (
        "federated identity",
        include_str!("../../migrations/sqlite/0005_federated_identity.sql"),
    ),
    (
        "mutual TLS",
        include_str!("../../migrations/sqlite/0006_mutual_tls.sql"),
    ),
    (
        "federated token age",
        include_str!("../../migrations/sqlite/0007_federated_token_age.sql"),
    ),
    (
        "change feed",
        include_str!("../../migrations/sqlite/0008_change_feed.sql"),
    ),
];

/// A SQLite database file shared by the server and the admin CLI.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Writes assertion ids in batches (group commit).
    jtis: JtiWriter,
}

impl SqliteStore {
    /// Opens (creating with mode 0600 if missing) and migrates the database at `url`.
    ///
    /// Several processes opening a new file at once can see SQLITE_BUSY while one of them
    /// switches it to WAL, without SQLite's busy handler being consulted; those attempts are
    /// retried with a growing pause, for a few seconds in all.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut pause = Duration::from_millis(20);
        let mut attempts = 0;
        loop {
            match Self::open_once(url).await {
                Err(StoreError::Unavailable(why)) if attempts < 8 => {
                    tracing::debug!(%why, "database busy while opening; retrying");
                    attempts += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
    }

    async fn open_once(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("invalid sqlite URL: {e}")))?;
        create_private_file(options.get_filename())?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        let jtis = JtiWriter::start(SqliteJtis(pool.clone()));
        let store = SqliteStore { pool, jtis };
        store.migrate().await?;
        Ok(store)
    }

    /// Read-then-write transactions take the write lock up front (`BEGIN IMMEDIATE`), so two
    /// writers never both read and then fail to upgrade with SQLITE_BUSY (docs/CONFORMANCE.md,
    /// "Concurrent writers").
    async fn write_transaction(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE takes the write lock first, so two processes starting on a new file
        // cannot both apply the same migration.
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS latchkey_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                description TEXT NOT NULL
            ) STRICT",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let applied = schema_version(&mut tx).await?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Schema(format!(
                "the database is at schema version {applied}, newer than this latchkey ({}); upgrade latchkey",
                MIGRATIONS.len()
            )));
        }
        for (index, (description, sql)) in MIGRATIONS.iter().enumerate().skip(applied) {
            sqlx::raw_sql(sql.into_sql_str())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            sqlx::query("INSERT INTO latchkey_migrations (version, description) VALUES (?1, ?2)")
                .bind(i64::try_from(index + 1).unwrap_or(i64::MAX))
                .bind(*description)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }
}

async fn schema_version(conn: &mut sqlx::SqliteConnection) -> Result<usize, StoreError> {
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM latchkey_migrations")
            .fetch_one(conn)
            .await
            .map_err(map_err)?;
    Ok(usize::try_from(version).unwrap_or(0))
}

/// Creates the database file readable by its owner only, before SQLite would create it with
/// the process umask. SQLite gives the `-wal` and `-shm` files the same mode.
fn create_private_file(path: &std::path::Path) -> Result<(), StoreError> {
    if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") || path.exists() {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

async fn insert_secret(
    conn: &mut sqlx::SqliteConnection,
    client_id: &str,
    secret: &SecretRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO client_secrets (secret_id, client_id, secret_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(&secret.secret_id)
    .bind(client_id)
    .bind(&secret.hash.0[..])
    .bind(secret.created_at)
    .bind(secret.expires_at)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Inserts a client row and its secrets.
async fn insert_client(conn: &mut sqlx::SqliteConnection, client: &ClientRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO clients (client_id, name, scope, audience, grant_types,
            token_ttl_seconds, auth_method, enabled, can_introspect, token_format,
            token_epoch, created_at, updated_at, public_keys, jwks_uri, federated_issuer,
            federated_subject, federated_audience, tls_subject_kind, tls_subject,
            federated_max_token_age)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
            ?17, ?18, ?19, ?20, ?21)",
    )
    .bind(&client.client_id)
    .bind(&client.name)
    .bind(client.scope.join(" "))
    .bind(client.audience.join(" "))
    .bind(join_grants(&client.grant_types))
    .bind(client.token_ttl_seconds)
    .bind(client.auth_method.as_str())
    .bind(client.enabled)
    .bind(client.can_introspect)
    .bind(client.token_format.as_str())
    .bind(client.token_epoch)
    .bind(client.created_at)
    .bind(client.updated_at)
    .bind(client.public_keys.as_deref())
    .bind(client.jwks_uri.as_deref())
    .bind(client.federation.as_ref().map(|f| f.issuer.as_str()))
    .bind(client.federation.as_ref().map(|f| f.subject.as_str()))
    .bind(
        client
            .federation
            .as_ref()
            .and_then(|f| f.audience.as_deref()),
    )
    .bind(client.tls_subject.as_ref().map(TlsSubject::kind))
    .bind(client.tls_subject.as_ref().map(TlsSubject::value))
    .bind(client.federation.as_ref().and_then(|f| f.max_token_age))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    for secret in &client.secrets {
        insert_secret(conn, &client.client_id, secret).await?;
    }
    Ok(())
}

/// Part of every transaction that changes clients, secrets or keys: moves the generation on by
/// one and writes the change feed's row for it (migrations/sqlite/0008_change_feed.sql).
async fn record_change(
    conn: &mut sqlx::SqliteConnection,
    change: &Change,
) -> Result<(), StoreError> {
    let generation: i64 = sqlx::query_scalar(
        "UPDATE generation SET generation = generation + 1 WHERE id = 1 RETURNING generation",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    let (kind, client_id) = change.columns();
    sqlx::query("INSERT INTO changes (generation, kind, client_id) VALUES (?1, ?2, ?3)")
        .bind(generation)
        .bind(kind)
        .bind(client_id)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

fn map_err(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) => {
            if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
                return StoreError::Conflict(db.message().to_owned());
            }
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            if matches!(code & 0xff, 5 | 6) {
                StoreError::Unavailable(db.message().to_owned())
            } else {
                StoreError::Other(db.message().to_owned())
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(err.to_string())
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(err.to_string()),
        _ => StoreError::Other(err.to_string()),
    }
}

/// The client columns joined with its unrevoked secrets; a macro so `concat!` can extend it.
macro_rules! client_select {
    () => {
        "SELECT c.client_id, c.name, c.scope, c.audience, c.grant_types,
        c.token_ttl_seconds, c.auth_method, c.enabled, c.can_introspect, c.token_format,
        c.token_epoch, c.public_keys, c.jwks_uri,
        c.federated_issuer, c.federated_subject, c.federated_audience, c.federated_max_token_age,
        c.tls_subject_kind,
        c.tls_subject, c.created_at, c.updated_at,
        s.secret_id, s.secret_hash, s.created_at AS secret_created_at, s.expires_at
    FROM clients c
    LEFT JOIN client_secrets s ON s.client_id = c.client_id AND s.revoked_at IS NULL"
    };
}

/// Selects the columns [`key_from_row`] reads; a macro so `concat!` can extend it.
macro_rules! key_select {
    () => {
        "SELECT kid, alg, state, private_key, encryption, public_jwk, created_at, activated_at,
            retired_at, removed_at FROM signing_keys"
    };
}

async fn key_in_state(
    conn: &mut sqlx::SqliteConnection,
    alg: SigningAlg,
    state: KeyState,
) -> Result<Option<StoredKey>, StoreError> {
    let row = sqlx::query(concat!(key_select!(), " WHERE alg = ?1 AND state = ?2"))
        .bind(alg.as_str())
        .bind(state.as_str())
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    row.as_ref().map(key_from_row).transpose()
}

async fn insert_key(conn: &mut sqlx::SqliteConnection, key: &StoredKey) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, state, private_key, encryption, public_jwk,
            created_at, activated_at, retired_at, removed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(&key.kid)
    .bind(key.alg.as_str())
    .bind(key.state.as_str())
    .bind(&key.private_key)
    .bind(key.encryption.as_deref())
    .bind(&key.public_jwk)
    .bind(key.created_at)
    .bind(key.activated_at)
    .bind(key.retired_at)
    .bind(key.removed_at)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ready(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let version = schema_version(&mut conn).await?;
        if version == MIGRATIONS.len() {
            Ok(())
        } else {
            Err(StoreError::Schema(format!(
                "schema version {version}, expected {}",
                MIGRATIONS.len()
            )))
        }
    }

    async fn create_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        insert_client(&mut tx, client).await?;
        record_change(&mut tx, &Change::Client(client.client_id.clone())).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn create_clients(&self, clients: &[ClientRecord]) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        for client in clients {
            insert_client(&mut tx, client).await?;
        }
        record_change(&mut tx, &Change::NewClients).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            client_select!(),
            " WHERE c.client_id = ?1 ORDER BY s.created_at, s.secret_id"
        ))
        .bind(client_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(clients_from_rows(&rows)?.pop())
    }

    async fn clients_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ClientRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            client_select!(),
            " WHERE c.client_id IN (SELECT client_id FROM clients WHERE client_id > ?1
                ORDER BY client_id LIMIT ?2)
              ORDER BY c.client_id, s.created_at, s.secret_id"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        clients_from_rows(&rows)
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            client_select!(),
            " ORDER BY c.created_at, c.client_id, s.created_at, s.secret_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        clients_from_rows(&rows)
    }

    async fn update_client(
        &self,
        client_id: &str,
        update: &ClientUpdate,
        now: i64,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let mut tx = self.write_transaction().await?;
        let result = sqlx::query(
            "UPDATE clients SET
                name = COALESCE(?2, name),
                scope = COALESCE(?3, scope),
                audience = COALESCE(?4, audience),
                token_ttl_seconds = COALESCE(?5, token_ttl_seconds),
                enabled = COALESCE(?6, enabled),
                can_introspect = COALESCE(?8, can_introspect),
                token_format = COALESCE(?9, token_format),
                token_epoch = token_epoch + ?10,
                public_keys = CASE WHEN ?12 IS NOT NULL OR ?13 IS NOT NULL THEN NULL
                    ELSE COALESCE(?11, public_keys) END,
                jwks_uri = CASE WHEN ?11 IS NOT NULL OR ?13 IS NOT NULL THEN NULL
                    ELSE COALESCE(?12, jwks_uri) END,
                federated_issuer = CASE WHEN ?11 IS NOT NULL OR ?12 IS NOT NULL THEN NULL
                    ELSE COALESCE(?13, federated_issuer) END,
                federated_subject = CASE WHEN ?11 IS NOT NULL OR ?12 IS NOT NULL THEN NULL
                    ELSE COALESCE(?14, federated_subject) END,
                federated_audience = CASE WHEN ?11 IS NOT NULL OR ?12 IS NOT NULL THEN NULL
                    WHEN ?13 IS NOT NULL THEN ?15 ELSE federated_audience END,
                federated_max_token_age = CASE WHEN ?11 IS NOT NULL OR ?12 IS NOT NULL THEN NULL
                    WHEN ?13 IS NOT NULL THEN ?18 ELSE federated_max_token_age END,
                tls_subject_kind = COALESCE(?16, tls_subject_kind),
                tls_subject = COALESCE(?17, tls_subject),
                updated_at = ?7
             WHERE client_id = ?1",
        )
        .bind(client_id)
        .bind(update.name.as_deref())
        .bind(update.scope.as_ref().map(|s| s.join(" ")))
        .bind(update.audience.as_ref().map(|a| a.join(" ")))
        .bind(update.token_ttl_seconds)
        .bind(update.enabled)
        .bind(now)
        .bind(update.can_introspect)
        .bind(update.token_format.map(TokenFormat::as_str))
        .bind(i64::from(update.revoke_tokens))
        .bind(update.public_keys.as_deref())
        .bind(update.jwks_uri.as_deref())
        .bind(update.federation.as_ref().map(|f| f.issuer.as_str()))
        .bind(update.federation.as_ref().map(|f| f.subject.as_str()))
        .bind(
            update
                .federation
                .as_ref()
                .and_then(|f| f.audience.as_deref()),
        )
        .bind(update.tls_subject.as_ref().map(TlsSubject::kind))
        .bind(update.tls_subject.as_ref().map(TlsSubject::value))
        .bind(update.federation.as_ref().and_then(|f| f.max_token_age))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if result.rows_affected() == 0 {
            return Ok(None);
        }
        if update.revoke_tokens {
            sqlx::query("DELETE FROM opaque_tokens WHERE client_id = ?1")
                .bind(client_id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        record_change(&mut tx, &Change::Client(client_id.to_owned())).await?;
        tx.commit().await.map_err(map_err)?;
        self.find_client(client_id).await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let result = sqlx::query("DELETE FROM clients WHERE client_id = ?1")
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        record_change(&mut tx, &Change::Client(client_id.to_owned())).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn add_secret(
        &self,
        client_id: &str,
        secret: &SecretRecord,
        expire_others_at: Option<i64>,
        max_live: usize,
        now: i64,
    ) -> Result<SecretAdded, StoreError> {
        let mut tx = self.write_transaction().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM clients WHERE client_id = ?1")
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            return Ok(SecretAdded::NoSuchClient);
        }
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM client_secrets WHERE client_id = ?1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > ?2)",
        )
        .bind(client_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        if usize::try_from(live).unwrap_or(usize::MAX) >= max_live {
            return Ok(SecretAdded::TooMany);
        }
        if let Some(at) = expire_others_at {
            sqlx::query(
                "UPDATE client_secrets SET expires_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .bind(client_id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        insert_secret(&mut tx, client_id, secret).await?;
        record_change(&mut tx, &Change::Client(client_id.to_owned())).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(SecretAdded::Added)
    }

    async fn sync_point(&self) -> Result<SyncPoint, StoreError> {
        let row = sqlx::query(
            "SELECT generation,
                (SELECT COALESCE(MAX(seq), 0) FROM revoked_tokens) AS revocation_seq
             FROM generation WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(SyncPoint {
            generation: row.try_get("generation").map_err(map_err)?,
            revocation_seq: row.try_get("revocation_seq").map_err(map_err)?,
        })
    }

    async fn changes_since(
        &self,
        generation: i64,
        limit: u32,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT generation, kind, client_id FROM changes
             WHERE generation > ?1 ORDER BY generation LIMIT ?2",
        )
        .bind(generation)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(feed_entry_from_row).collect()
    }

    async fn acknowledge_generation(
        &self,
        server_id: &str,
        generation: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO server_acks (server_id, generation) VALUES (?1, ?2)
             ON CONFLICT (server_id) DO UPDATE SET generation = excluded.generation",
        )
        .bind(server_id)
        .bind(generation)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn servers_behind(&self, generation: i64) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT server_id FROM server_acks WHERE generation < ?1 ORDER BY server_id",
        )
        .bind(generation)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)
    }

    async fn forget_server(&self, server_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM server_acks WHERE server_id = ?1")
            .bind(server_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn list_secrets(&self, client_id: &str) -> Result<Option<Vec<SecretInfo>>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM clients WHERE client_id = ?1")
            .bind(client_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT secret_id, created_at, expires_at, last_used_at FROM client_secrets
             WHERE client_id = ?1 AND revoked_at IS NULL ORDER BY created_at, secret_id",
        )
        .bind(client_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                Ok(SecretInfo {
                    secret_id: row.try_get("secret_id").map_err(map_err)?,
                    created_at: row.try_get("created_at").map_err(map_err)?,
                    expires_at: row.try_get("expires_at").map_err(map_err)?,
                    last_used_at: row.try_get("last_used_at").map_err(map_err)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map(Some)
    }

    async fn revoke_secret(
        &self,
        client_id: &str,
        secret_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let result = sqlx::query(
            "UPDATE client_secrets SET revoked_at = ?3
             WHERE client_id = ?1 AND secret_id = ?2 AND revoked_at IS NULL",
        )
        .bind(client_id)
        .bind(secret_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        record_change(&mut tx, &Change::Client(client_id.to_owned())).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn record_secret_use(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // Not a client change: the generation does not move, so no server reloads for this.
        let mut tx = self.write_transaction().await?;
        for (secret_id, at) in uses {
            sqlx::query(
                "UPDATE client_secrets SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2)
                 WHERE secret_id = ?1",
            )
            .bind(secret_id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn insert_opaque_token(&self, token: &OpaqueTokenRecord) -> Result<(), StoreError> {
        let cnf = super::cnf_column(token.cnf.as_ref())?;
        let cnf = cnf.as_deref();
        sqlx::query(
            "INSERT INTO opaque_tokens (token_hash, jti, client_id, scope, audience, issued_at,
                expires_at, epoch, cnf)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&token.token_hash.0[..])
        .bind(&token.jti)
        .bind(&token.client_id)
        .bind(token.scope.join(" "))
        .bind(token.audience.join(" "))
        .bind(token.issued_at)
        .bind(token.expires_at)
        .bind(token.epoch)
        .bind(cnf)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn find_opaque_token(
        &self,
        token_hash: &SecretHash,
    ) -> Result<Option<OpaqueTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT token_hash, jti, client_id, scope, audience, issued_at, expires_at, epoch, cnf
             FROM opaque_tokens WHERE token_hash = ?1",
        )
        .bind(&token_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(opaque_from_row).transpose()
    }

    async fn revoke_token(
        &self,
        jti: &str,
        client_id: &str,
        expires_at: i64,
        opaque_hash: Option<&SecretHash>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, client_id, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(client_id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if let Some(hash) = opaque_hash {
            sqlx::query("DELETE FROM opaque_tokens WHERE token_hash = ?1")
                .bind(&hash.0[..])
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn revocations_since(&self, seq: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, jti, expires_at FROM revoked_tokens WHERE seq > ?1 ORDER BY seq",
        )
        .bind(seq)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                Ok(Revocation {
                    seq: row.try_get("seq").map_err(map_err)?,
                    jti: row.try_get("jti").map_err(map_err)?,
                    expires_at: row.try_get("expires_at").map_err(map_err)?,
                })
            })
            .collect()
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM revoked_tokens WHERE jti = ?1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(found.is_some())
    }

    async fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        let mut tx = self.write_transaction().await?;
        let opaque_tokens = sqlx::query("DELETE FROM opaque_tokens WHERE expires_at <= ?1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        let revocations = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= ?1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        let assertion_jtis = sqlx::query("DELETE FROM assertion_jtis WHERE expires_at <= ?1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        let changes = sqlx::query(
            "DELETE FROM changes
             WHERE generation <= (SELECT generation FROM generation WHERE id = 1) - ?1",
        )
        .bind(FEED_RETAINED)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        tx.commit().await.map_err(map_err)?;
        Ok(Purged {
            opaque_tokens,
            revocations,
            assertion_jtis,
            changes,
        })
    }

    async fn use_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.jtis.use_jti(client_id, jti, expires_at, now).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(concat!(key_select!(), " ORDER BY created_at, kid"))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn import_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        insert_key(&mut tx, key).await?;
        record_change(&mut tx, &Change::Keys).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn insert_key_if_none(&self, key: &StoredKey) -> Result<StoredKey, StoreError> {
        let mut tx = self.write_transaction().await?;
        if let Some(existing) = key_in_state(&mut tx, key.alg, key.state).await? {
            return Ok(existing);
        }
        insert_key(&mut tx, key).await?;
        record_change(&mut tx, &Change::Keys).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(key.clone())
    }

    async fn rotate_keys(&self, plan: &RotationPlan) -> Result<RotationOutcome, StoreError> {
        let mut tx = self.write_transaction().await?;
        let current = key_in_state(&mut tx, plan.alg, KeyState::Current).await?;
        let next = key_in_state(&mut tx, plan.alg, KeyState::Next).await?;
        let (Some(current), Some(next)) = (current, next) else {
            return Ok(RotationOutcome::NoKeys);
        };
        if let Some(by) = plan.only_if_current_activated_by
            && current.activated_at.unwrap_or(current.created_at) > by
        {
            return Ok(RotationOutcome::NotDue);
        }
        if next.created_at > plan.next_created_by {
            return Ok(RotationOutcome::NextTooNew {
                created_at: next.created_at,
            });
        }
        // Retire first: the unique indexes allow one current and one next key per algorithm.
        sqlx::query("UPDATE signing_keys SET state = 'retired', retired_at = ?2 WHERE kid = ?1")
            .bind(&current.kid)
            .bind(plan.now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("UPDATE signing_keys SET state = 'current', activated_at = ?2 WHERE kid = ?1")
            .bind(&next.kid)
            .bind(plan.now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_key(&mut tx, &plan.new_next).await?;
        record_change(&mut tx, &Change::Keys).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(RotationOutcome::Rotated {
            retired: current.kid,
            current: next.kid,
            next: plan.new_next.kid.clone(),
        })
    }

    async fn remove_retired_keys(
        &self,
        retired_by: i64,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.write_transaction().await?;
        let removed: Vec<String> = sqlx::query_scalar(
            "UPDATE signing_keys SET state = 'removed', removed_at = ?2, private_key = X'',
                encryption = NULL
             WHERE state = 'retired' AND retired_at <= ?1 RETURNING kid",
        )
        .bind(retired_by)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        if !removed.is_empty() {
            record_change(&mut tx, &Change::Keys).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(removed)
    }

    async fn reseal_key(
        &self,
        kid: &str,
        private_key: &[u8],
        encryption: &str,
    ) -> Result<(), StoreError> {
        // A change servers reload for: one that refused the clear row takes the sealed one.
        let mut tx = self.write_transaction().await?;
        sqlx::query("UPDATE signing_keys SET private_key = ?2, encryption = ?3 WHERE kid = ?1")
            .bind(kid)
            .bind(private_key)
            .bind(encryption)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        record_change(&mut tx, &Change::Keys).await?;
        tx.commit().await.map_err(map_err)
    }
}

/// Writes batches of assertion ids (see `jti_batch`).
struct SqliteJtis(SqlitePool);

impl JtiBackend for SqliteJtis {
    async fn insert(
        &self,
        rows: &[NewJti<'_>],
        now: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let sql = insert_sql(rows.len(), |_| "?".to_owned());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in rows {
            query = query.bind(row.client_id).bind(row.jti).bind(row.expires_at);
        }
        let returned = query.bind(now).fetch_all(&self.0).await.map_err(map_err)?;
        returned
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(map_err)?,
                    r.try_get(1).map_err(map_err)?,
                ))
            })
            .collect()
    }
}
