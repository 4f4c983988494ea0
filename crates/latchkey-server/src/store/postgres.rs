//! The PostgreSQL implementation of [`Store`], for several servers sharing one database: row
//! locks and advisory locks where SQLite takes its write lock up front, deny-list positions that
//! commit in order, serialization failures retried, and migrations compiled into the binary.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_proto::{SigningAlg, TokenFormat};
use sqlx::postgres::{PgPool, PgPoolOptions};
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
/// once released, only followed by a new one. Version 1 is the whole of SQLite's versions 1
/// and 2: PostgreSQL support started there.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        "client assertions",
        include_str!("../../migrations/postgres/0002_client_assertions.sql"),
    ),
    (
        "jwks_uri",
        include_str!("../../migrations/postgres/0003_jwks_uri.sql"),
    ),
    (
        "federated identity",
        include_str!("../../migrations/postgres/0004_federated_identity.sql"),
    ),
    (
        "mutual TLS",
        include_str!("../../migrations/postgres/0005_mutual_tls.sql"),
    ),
    (
        "federated token age",
        include_str!("../../migrations/postgres/0006_federated_token_age.sql"),
    ),
    (
        "change feed",
        include_str!("../../migrations/postgres/0007_change_feed.sql"),
    ),
];

/// The advisory lock that migrations run under ("latchkey" in ASCII). Transaction-scoped, so it
/// is released by the commit or rollback whatever happens to the process.
const MIGRATION_LOCK: i64 = 0x6c61_7463_686b_6579;

/// The first key of the two-key advisory lock that serialises the key changes of one algorithm
/// ("keys" in ASCII); the second key is `hashtext(alg)`.
const SIGNING_KEY_LOCK: i32 = 0x6b65_7973;

/// How many times a transaction runs in all when PostgreSQL aborts it as a serialization
/// failure or a deadlock victim.
const MAX_ATTEMPTS: u32 = 3;

/// A PostgreSQL database shared by every server and the admin CLI.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Writes assertion ids in batches (group commit).
    jtis: JtiWriter,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`) and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(map_err)?;
        let jtis = JtiWriter::start(PostgresJtis(pool.clone()));
        let store = PostgresStore { pool, jtis };
        retrying(|| store.migrate()).await?;
        Ok(store)
    }

    /// Every transaction runs at READ COMMITTED, whatever the database's default: the locking
    /// here relies on each statement reading what was committed before it started, including
    /// what a lock holder committed while the statement waited for its lock. (At REPEATABLE
    /// READ, `insert_key_if_none` would read the snapshot from before it got the lock, miss the
    /// winner's key, and fail on the unique index instead of returning it.)
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
    }

    async fn migrate(&self) -> Result<(), TxError> {
        let mut tx = self.begin().await?;
        // Replicas starting together queue here, so a migration is applied once; the ones that
        // wait then find it recorded. Without the lock even `CREATE TABLE IF NOT EXISTS` can fail
        // when two sessions run it at once.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS latchkey_migrations (
                version BIGINT PRIMARY KEY,
                description TEXT NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await?;
        let applied = schema_version(&mut tx).await?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Schema(format!(
                "the database is at schema version {applied}, newer than this latchkey ({}); upgrade latchkey",
                MIGRATIONS.len()
            ))
            .into());
        }
        for (index, (description, sql)) in MIGRATIONS.iter().enumerate().skip(applied) {
            sqlx::raw_sql(sql.into_sql_str()).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO latchkey_migrations (version, description) VALUES ($1, $2)")
                .bind(i64::try_from(index + 1).unwrap_or(i64::MAX))
                .bind(*description)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn schema_version(conn: &mut sqlx::PgConnection) -> Result<usize, StoreError> {
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM latchkey_migrations")
            .fetch_one(conn)
            .await
            .map_err(map_err)?;
    Ok(usize::try_from(version).unwrap_or(0))
}

/// Why one attempt at a transaction failed: PostgreSQL rolled it back as a serialization
/// failure or a deadlock victim, so running it again from the start may succeed; or for good.
enum TxError {
    Retry(String),
    Fail(StoreError),
}

impl From<sqlx::Error> for TxError {
    fn from(err: sqlx::Error) -> Self {
        if is_retryable(&err) {
            TxError::Retry(err.to_string())
        } else {
            TxError::Fail(map_err(err))
        }
    }
}

impl From<StoreError> for TxError {
    fn from(err: StoreError) -> Self {
        TxError::Fail(err)
    }
}

/// Runs a transaction, again from its start if PostgreSQL aborted it as a serialization failure
/// or deadlock victim, at most [`MAX_ATTEMPTS`] times in all; then the database counts as busy.
///
/// Deadlocks are possible at READ COMMITTED (two transactions locking the same rows in opposite
/// orders); serialization failures where an operator made SERIALIZABLE or REPEATABLE READ the
/// default, for the single statements that run without [`PostgresStore::begin`]. Either way
/// the attempt has been rolled back, so running it again is safe.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut pause = Duration::from_millis(10);
    let mut attempts = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(TxError::Fail(err)) => return Err(err),
            Err(TxError::Retry(why)) if attempts < MAX_ATTEMPTS => {
                tracing::debug!(%why, "transaction aborted by the database; running it again");
                attempts += 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(TxError::Retry(why)) => return Err(StoreError::Unavailable(why)),
        }
    }
}

/// SQLSTATE of a database error, if it is one.
fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// 40001 serialization_failure and 40P01 deadlock_detected: the transaction was rolled back and
/// may succeed if run again.
fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(sqlstate(err).as_deref(), Some("40001" | "40P01"))
}

fn map_err(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) => {
            if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
                return StoreError::Conflict(db.message().to_owned());
            }
            let code = db.code().unwrap_or_default();
            let unavailable =
                // Class 08 connection exceptions; 53 insufficient resources (too many
                // connections, disk full, out of memory).
                code.starts_with("08")
                    || code.starts_with("53")
                    // admin_shutdown, crash_shutdown, cannot_connect_now (starting up).
                    || matches!(&*code, "57P01" | "57P02" | "57P03")
                    // lock_not_available (lock_timeout), the counterpart of SQLITE_BUSY.
                    || code == "55P03"
                    // Serialization failure and deadlock, once retries are exhausted or where
                    // nothing retries.
                    || matches!(&*code, "40001" | "40P01");
            if unavailable {
                StoreError::Unavailable(format!("{} (SQLSTATE {code})", db.message()))
            } else {
                StoreError::Other(format!("{} (SQLSTATE {code})", db.message()))
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(err.to_string()),
        _ => StoreError::Other(err.to_string()),
    }
}

async fn insert_secret(
    conn: &mut sqlx::PgConnection,
    client_id: &str,
    secret: &SecretRecord,
) -> Result<(), TxError> {
    sqlx::query(
        "INSERT INTO client_secrets (secret_id, client_id, secret_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&secret.secret_id)
    .bind(client_id)
    .bind(&secret.hash.0[..])
    .bind(secret.created_at)
    .bind(secret.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a client row and its secrets.
async fn insert_client(conn: &mut sqlx::PgConnection, client: &ClientRecord) -> Result<(), TxError> {
    sqlx::query(
        "INSERT INTO clients (client_id, name, scope, audience, grant_types,
            token_ttl_seconds, auth_method, enabled, can_introspect, token_format,
            token_epoch, created_at, updated_at, public_keys, jwks_uri, federated_issuer,
            federated_subject, federated_audience, tls_subject_kind, tls_subject,
            federated_max_token_age)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
            $17, $18, $19, $20, $21)",
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
    .await?;
    for secret in &client.secrets {
        insert_secret(conn, &client.client_id, secret).await?;
    }
    Ok(())
}

/// Part of every transaction that changes clients, secrets or keys: moves the generation on by
/// one and writes the change feed's row for it (migrations/postgres/0007_change_feed.sql). The
/// generation's row stays locked until the transaction ends, so generations commit in order and
/// a server that has read generation g can read every change up to g.
async fn record_change(conn: &mut sqlx::PgConnection, change: &Change) -> Result<(), TxError> {
    let generation: i64 = sqlx::query_scalar(
        "UPDATE generation SET generation = generation + 1 WHERE id = 1 RETURNING generation",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (kind, client_id) = change.columns();
    sqlx::query("INSERT INTO changes (generation, kind, client_id) VALUES ($1, $2, $3)")
        .bind(generation)
        .bind(kind)
        .bind(client_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Serialises the key changes of one algorithm until the transaction ends, across every
/// process: what `BEGIN IMMEDIATE` gives SQLite (docs/CONFORMANCE.md, "Concurrent writers").
/// After it, each statement of the transaction reads the keys as the previous holder committed
/// them.
async fn lock_signing_keys(conn: &mut sqlx::PgConnection, alg: SigningAlg) -> Result<(), TxError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(SIGNING_KEY_LOCK)
        .bind(alg.as_str())
        .execute(conn)
        .await?;
    Ok(())
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
    conn: &mut sqlx::PgConnection,
    alg: SigningAlg,
    state: KeyState,
) -> Result<Option<StoredKey>, TxError> {
    let row = sqlx::query(concat!(key_select!(), " WHERE alg = $1 AND state = $2"))
        .bind(alg.as_str())
        .bind(state.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(key_from_row).transpose()?)
}

async fn insert_key(conn: &mut sqlx::PgConnection, key: &StoredKey) -> Result<(), TxError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, state, private_key, encryption, public_jwk,
            created_at, activated_at, retired_at, removed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
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
        retrying(|| async move {
            let mut tx = self.begin().await?;
            insert_client(&mut tx, client).await?;
            record_change(&mut tx, &Change::Client(client.client_id.clone())).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn create_clients(&self, clients: &[ClientRecord]) -> Result<(), StoreError> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            for client in clients {
                insert_client(&mut tx, client).await?;
            }
            record_change(&mut tx, &Change::NewClients).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            client_select!(),
            " WHERE c.client_id = $1 ORDER BY s.created_at, s.secret_id"
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
            " WHERE c.client_id IN (SELECT client_id FROM clients WHERE client_id > $1
                ORDER BY client_id LIMIT $2)
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
        let updated = retrying(|| async move {
            let mut tx = self.begin().await?;
            let result = sqlx::query(
                "UPDATE clients SET
                    name = COALESCE($2, name),
                    scope = COALESCE($3, scope),
                    audience = COALESCE($4, audience),
                    token_ttl_seconds = COALESCE($5, token_ttl_seconds),
                    enabled = COALESCE($6, enabled),
                    can_introspect = COALESCE($8, can_introspect),
                    token_format = COALESCE($9, token_format),
                    token_epoch = token_epoch + $10,
                    public_keys = CASE WHEN $12::TEXT IS NOT NULL OR $13::TEXT IS NOT NULL
                        THEN NULL ELSE COALESCE($11, public_keys) END,
                    jwks_uri = CASE WHEN $11::TEXT IS NOT NULL OR $13::TEXT IS NOT NULL
                        THEN NULL ELSE COALESCE($12, jwks_uri) END,
                    federated_issuer = CASE WHEN $11::TEXT IS NOT NULL OR $12::TEXT IS NOT NULL
                        THEN NULL ELSE COALESCE($13, federated_issuer) END,
                    federated_subject = CASE WHEN $11::TEXT IS NOT NULL OR $12::TEXT IS NOT NULL
                        THEN NULL ELSE COALESCE($14::TEXT, federated_subject) END,
                    federated_audience = CASE WHEN $11::TEXT IS NOT NULL OR $12::TEXT IS NOT NULL
                        THEN NULL WHEN $13::TEXT IS NOT NULL THEN $15::TEXT
                        ELSE federated_audience END,
                    federated_max_token_age = CASE WHEN $11::TEXT IS NOT NULL
                        OR $12::TEXT IS NOT NULL THEN NULL WHEN $13::TEXT IS NOT NULL THEN $18::BIGINT
                        ELSE federated_max_token_age END,
                    tls_subject_kind = COALESCE($16::TEXT, tls_subject_kind),
                    tls_subject = COALESCE($17::TEXT, tls_subject),
                    updated_at = $7
                 WHERE client_id = $1",
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
            .await?;
            if result.rows_affected() == 0 {
                return Ok(false);
            }
            if update.revoke_tokens {
                sqlx::query("DELETE FROM opaque_tokens WHERE client_id = $1")
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?;
            }
            record_change(&mut tx, &Change::Client(client_id.to_owned())).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await?;
        if updated {
            self.find_client(client_id).await
        } else {
            Ok(None)
        }
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            let result = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                .bind(client_id)
                .execute(&mut *tx)
                .await?;
            if result.rows_affected() == 0 {
                return Ok(false);
            }
            record_change(&mut tx, &Change::Client(client_id.to_owned())).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn add_secret(
        &self,
        client_id: &str,
        secret: &SecretRecord,
        expire_others_at: Option<i64>,
        max_live: usize,
        now: i64,
    ) -> Result<SecretAdded, StoreError> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            // Count-then-insert: the client's row lock makes concurrent additions to one client
            // take turns, so together they never exceed `max_live` (docs/CONFORMANCE.md,
            // "Concurrent writers"). NO KEY UPDATE leaves the foreign-key checks of token
            // inserts for this client unblocked.
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM clients WHERE client_id = $1 FOR NO KEY UPDATE")
                    .bind(client_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Ok(SecretAdded::NoSuchClient);
            }
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM client_secrets WHERE client_id = $1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(client_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if usize::try_from(live).unwrap_or(usize::MAX) >= max_live {
                return Ok(SecretAdded::TooMany);
            }
            if let Some(at) = expire_others_at {
                sqlx::query(
                    "UPDATE client_secrets SET expires_at = $2
                     WHERE client_id = $1 AND revoked_at IS NULL
                       AND (expires_at IS NULL OR expires_at > $2)",
                )
                .bind(client_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            insert_secret(&mut tx, client_id, secret).await?;
            record_change(&mut tx, &Change::Client(client_id.to_owned())).await?;
            tx.commit().await?;
            Ok(SecretAdded::Added)
        })
        .await
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
             WHERE generation > $1 ORDER BY generation LIMIT $2",
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
        retrying(|| async move {
            sqlx::query(
                "INSERT INTO server_acks (server_id, generation) VALUES ($1, $2)
                 ON CONFLICT (server_id) DO UPDATE SET generation = excluded.generation",
            )
            .bind(server_id)
            .bind(generation)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn servers_behind(&self, generation: i64) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT server_id FROM server_acks WHERE generation < $1 ORDER BY server_id",
        )
        .bind(generation)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)
    }

    async fn forget_server(&self, server_id: &str) -> Result<(), StoreError> {
        retrying(|| async move {
            sqlx::query("DELETE FROM server_acks WHERE server_id = $1")
                .bind(server_id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_secrets(&self, client_id: &str) -> Result<Option<Vec<SecretInfo>>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT secret_id, created_at, expires_at, last_used_at FROM client_secrets
             WHERE client_id = $1 AND revoked_at IS NULL ORDER BY created_at, secret_id",
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
        retrying(|| async move {
            let mut tx = self.begin().await?;
            let result = sqlx::query(
                "UPDATE client_secrets SET revoked_at = $3
                 WHERE client_id = $1 AND secret_id = $2 AND revoked_at IS NULL",
            )
            .bind(client_id)
            .bind(secret_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if result.rows_affected() == 0 {
                return Ok(false);
            }
            record_change(&mut tx, &Change::Client(client_id.to_owned())).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn record_secret_use(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // Every server writes its batch in the same order (by secret id), so two batches never
        // wait for each other's row locks in a cycle.
        let mut sorted: Vec<&(String, i64)> = uses.iter().collect();
        sorted.sort();
        let sorted = &sorted;
        // Not a client change: the generation does not move, so no server reloads for this.
        retrying(|| async move {
            let mut tx = self.begin().await?;
            for (secret_id, at) in sorted.iter().copied() {
                sqlx::query(
                    "UPDATE client_secrets SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $2)
                     WHERE secret_id = $1",
                )
                .bind(secret_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn insert_opaque_token(&self, token: &OpaqueTokenRecord) -> Result<(), StoreError> {
        let cnf = super::cnf_column(token.cnf.as_ref())?;
        let cnf = cnf.as_deref();
        retrying(|| async move {
            sqlx::query(
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
            .bind(cnf)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn find_opaque_token(
        &self,
        token_hash: &SecretHash,
    ) -> Result<Option<OpaqueTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT token_hash, jti, client_id, scope, audience, issued_at, expires_at, epoch, cnf
             FROM opaque_tokens WHERE token_hash = $1",
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
        retrying(|| async move {
            let mut tx = self.begin().await?;
            // The token record first, then the counter row: the same order as `update_client`,
            // which deletes a client's tokens before it moves the generation, so the two never
            // deadlock.
            if let Some(hash) = opaque_hash {
                sqlx::query("DELETE FROM opaque_tokens WHERE token_hash = $1")
                    .bind(&hash.0[..])
                    .execute(&mut *tx)
                    .await?;
            }
            // Servers fetch the deny list after the last `seq` they saw (ARCHITECTURE.md), so a
            // row must never become visible after a row with a higher `seq`. A PostgreSQL
            // sequence would not ensure that: its values are handed out at insert, and the
            // transactions holding them commit in any order. So `seq` is the next value of a
            // counter in the single `generation` row, taken under that row's lock: the lock is
            // held until this transaction commits or rolls back, so the next revoker waits for
            // us, reads our value (or, after a rollback, the old one: no gap) and commits after
            // us. Position order is commit order, and a poller's snapshot always holds a prefix.
            let last: i64 = sqlx::query_scalar(
                "SELECT revocation_seq FROM generation WHERE id = 1 FOR NO KEY UPDATE",
            )
            .fetch_one(&mut *tx)
            .await?;
            // Revoking twice is not an error, and takes no position.
            let inserted = sqlx::query(
                "INSERT INTO revoked_tokens (seq, jti, client_id, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(last + 1)
            .bind(jti)
            .bind(client_id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                sqlx::query("UPDATE generation SET revocation_seq = $1 WHERE id = 1")
                    .bind(last + 1)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn revocations_since(&self, seq: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, jti, expires_at FROM revoked_tokens WHERE seq > $1 ORDER BY seq",
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
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(found.is_some())
    }

    async fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            let opaque_tokens = sqlx::query("DELETE FROM opaque_tokens WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let revocations = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let assertion_jtis = sqlx::query("DELETE FROM assertion_jtis WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let changes = sqlx::query(
                "DELETE FROM changes
                 WHERE generation <= (SELECT generation FROM generation WHERE id = 1) - $1",
            )
            .bind(FEED_RETAINED)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(Purged {
                opaque_tokens,
                revocations,
                assertion_jtis,
                changes,
            })
        })
        .await
    }

    async fn use_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        // Batched with other uses (one statement each batch), so the primary key decides
        // between concurrent uses on any replicas.
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
        retrying(|| async move {
            let mut tx = self.begin().await?;
            lock_signing_keys(&mut tx, key.alg).await?;
            insert_key(&mut tx, key).await?;
            record_change(&mut tx, &Change::Keys).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn insert_key_if_none(&self, key: &StoredKey) -> Result<StoredKey, StoreError> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            // Servers starting at once queue on the algorithm's lock; the first inserts, the
            // others then read its key and return that one (docs/CONFORMANCE.md, "Signing keys
            // and rotation").
            lock_signing_keys(&mut tx, key.alg).await?;
            if let Some(existing) = key_in_state(&mut tx, key.alg, key.state).await? {
                return Ok(existing);
            }
            insert_key(&mut tx, key).await?;
            record_change(&mut tx, &Change::Keys).await?;
            tx.commit().await?;
            Ok(key.clone())
        })
        .await
    }

    async fn rotate_keys(&self, plan: &RotationPlan) -> Result<RotationOutcome, StoreError> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            // Two rotations at once (the janitors of several servers, or one and the admin CLI)
            // take turns; the second sees the first's keys and finds the rotation not due.
            lock_signing_keys(&mut tx, plan.alg).await?;
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
            sqlx::query(
                "UPDATE signing_keys SET state = 'retired', retired_at = $2 WHERE kid = $1",
            )
            .bind(&current.kid)
            .bind(plan.now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE signing_keys SET state = 'current', activated_at = $2 WHERE kid = $1",
            )
            .bind(&next.kid)
            .bind(plan.now)
            .execute(&mut *tx)
            .await?;
            insert_key(&mut tx, &plan.new_next).await?;
            record_change(&mut tx, &Change::Keys).await?;
            tx.commit().await?;
            Ok(RotationOutcome::Rotated {
                retired: current.kid,
                current: next.kid,
                next: plan.new_next.kid.clone(),
            })
        })
        .await
    }

    async fn remove_retired_keys(
        &self,
        retired_by: i64,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        retrying(|| async move {
            let mut tx = self.begin().await?;
            // A concurrent removal waits for our row locks, then finds the keys no longer
            // retired and leaves them alone.
            let removed: Vec<String> = sqlx::query_scalar(
                "WITH removed AS (
                    UPDATE signing_keys SET state = 'removed', removed_at = $2,
                        private_key = ''::BYTEA, encryption = NULL
                    WHERE state = 'retired' AND retired_at <= $1
                    RETURNING kid, created_at
                 )
                 SELECT kid FROM removed ORDER BY created_at, kid",
            )
            .bind(retired_by)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            if !removed.is_empty() {
                record_change(&mut tx, &Change::Keys).await?;
            }
            tx.commit().await?;
            Ok(removed)
        })
        .await
    }

    async fn reseal_key(
        &self,
        kid: &str,
        private_key: &[u8],
        encryption: &str,
    ) -> Result<(), StoreError> {
        // A change servers reload for: one that refused the clear row takes the sealed one.
        retrying(|| async move {
            let mut tx = self.begin().await?;
            sqlx::query("UPDATE signing_keys SET private_key = $2, encryption = $3 WHERE kid = $1")
                .bind(kid)
                .bind(private_key)
                .bind(encryption)
                .execute(&mut *tx)
                .await?;
            record_change(&mut tx, &Change::Keys).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

/// Writes batches of assertion ids (see `jti_batch`). The rows come sorted, so two replicas'
/// batches lock in one order; a deadlock or serialization failure still reruns the statement.
struct PostgresJtis(PgPool);

impl JtiBackend for PostgresJtis {
    async fn insert(
        &self,
        rows: &[NewJti<'_>],
        now: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let sql = insert_sql(rows.len(), |n| format!("${n}"));
        retrying(|| async {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for row in rows {
                query = query.bind(row.client_id).bind(row.jti).bind(row.expires_at);
            }
            let returned = query.bind(now).fetch_all(&self.0).await?;
            let mut inserted = Vec::with_capacity(returned.len());
            for r in &returned {
                inserted.push((r.try_get(0)?, r.try_get(1)?));
            }
            Ok(inserted)
        })
        .await
    }
}
