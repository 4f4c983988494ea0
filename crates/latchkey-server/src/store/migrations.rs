//! The schema migrations of both databases (migrations/sqlite, migrations/postgres), compiled
//! into the binary, and how they are applied: in one transaction, by one process at a time.

use super::StoreError;
use super::db::{Connection, Db, Tx, TxError, sql};
use super::dialect::Dialect;

/// SQLite's schema migrations, in order. Version `n` is `MIGRATIONS[n - 1]`; a migration is never edited
/// once released, only followed by a new one.
const SQLITE_MIGRATIONS: &[(&str, &str)] = &[
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
    (
        "audit trail",
        include_str!("../../migrations/sqlite/0009_audit.sql"),
    ),
    (
        "client registration",
        include_str!("../../migrations/sqlite/0010_registration.sql"),
    ),
    (
        "client version",
        include_str!("../../migrations/sqlite/0011_client_version.sql"),
    ),
    (
        "usage",
        include_str!("../../migrations/sqlite/0012_usage.sql"),
    ),
    (
        "token sources",
        include_str!("../../migrations/sqlite/0013_token_sources.sql"),
    ),
    (
        "token reuse",
        include_str!("../../migrations/sqlite/0014_reuse_tokens.sql"),
    ),
    (
        "token quotas",
        include_str!("../../migrations/sqlite/0015_token_quotas.sql"),
    ),
];

/// PostgreSQL's migrations, likewise. Version 1 is the whole of SQLite's versions 1 and 2:
/// PostgreSQL support started there.
const POSTGRES_MIGRATIONS: &[(&str, &str)] = &[
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
    (
        "audit trail",
        include_str!("../../migrations/postgres/0008_audit.sql"),
    ),
    (
        "client registration",
        include_str!("../../migrations/postgres/0009_registration.sql"),
    ),
    (
        "client version",
        include_str!("../../migrations/postgres/0010_client_version.sql"),
    ),
    (
        "usage",
        include_str!("../../migrations/postgres/0011_usage.sql"),
    ),
    (
        "token sources",
        include_str!("../../migrations/postgres/0012_token_sources.sql"),
    ),
    (
        "token reuse",
        include_str!("../../migrations/postgres/0013_reuse_tokens.sql"),
    ),
    (
        "token quotas",
        include_str!("../../migrations/postgres/0014_token_quotas.sql"),
    ),
];

/// The migrations of a database, in order.
fn migrations(dialect: Dialect) -> &'static [(&'static str, &'static str)] {
    match dialect {
        Dialect::Sqlite => SQLITE_MIGRATIONS,
        Dialect::Postgres => POSTGRES_MIGRATIONS,
    }
}

/// The advisory lock that PostgreSQL migrations run under ("latchkey" in ASCII).
/// Transaction-scoped, so it is released by the commit or rollback whatever happens to the
/// process.
const MIGRATION_LOCK: i64 = 0x6c61_7463_686b_6579;

/// Applies the migrations a database lacks. Processes starting on one new database take turns,
/// so a migration is applied once; the ones that wait then find it recorded.
pub(super) async fn migrate(db: &Db) -> Result<(), TxError> {
    let migrations = migrations(db.dialect());
    let mut tx = db.begin().await?;
    lock(&mut tx).await?;
    sql(match tx.dialect() {
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS latchkey_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                description TEXT NOT NULL
            ) STRICT"
        }
        Dialect::Postgres => {
            "CREATE TABLE IF NOT EXISTS latchkey_migrations (
                version BIGINT PRIMARY KEY,
                description TEXT NOT NULL
            )"
        }
    })
    .execute(&mut tx)
    .await?;
    let applied = schema_version(&mut tx).await?;
    if applied > migrations.len() {
        return Err(StoreError::Schema(format!(
            "the database is at schema version {applied}, newer than this latchkey ({}); upgrade latchkey",
            migrations.len()
        ))
        .into());
    }
    for (index, (description, script)) in migrations.iter().enumerate().skip(applied) {
        tx.run_script(script).await?;
        sql("INSERT INTO latchkey_migrations (version, description) VALUES ($1, $2)")
            .bind(i64::try_from(index + 1).unwrap_or(i64::MAX))
            .bind(*description)
            .execute(&mut tx)
            .await?;
    }
    tx.commit().await
}

/// Succeeds when the database's schema is the one this binary expects.
pub(super) async fn check(db: &Db) -> Result<(), StoreError> {
    let version = schema_version(&mut db.acquire().await?).await?;
    let expected = migrations(db.dialect()).len();
    if version == expected {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "schema version {version}, expected {expected}"
        )))
    }
}

/// Makes the migrating processes take turns. SQLite: `BEGIN IMMEDIATE` already did.
/// PostgreSQL: an advisory lock; without it even `CREATE TABLE IF NOT EXISTS` can fail when two
/// sessions run it at once.
async fn lock(tx: &mut Tx) -> Result<(), TxError> {
    match tx.dialect() {
        Dialect::Sqlite => Ok(()),
        Dialect::Postgres => {
            sql("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(tx)
                .await?;
            Ok(())
        }
    }
}

async fn schema_version(conn: &mut impl Connection) -> Result<usize, TxError> {
    let version: i64 = sql("SELECT COALESCE(MAX(version), 0) AS version FROM latchkey_migrations")
        .fetch_one(conn)
        .await?
        .get("version")?;
    Ok(usize::try_from(version).unwrap_or(0))
}
