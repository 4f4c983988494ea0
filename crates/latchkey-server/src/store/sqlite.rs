//! Opening an embedded SQLite database file, and reading SQLite's errors by kind. Everything
//! else is shared with PostgreSQL (`sql.rs`, with the differences in `dialect.rs`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;
use super::db::{Db, TxError};
use super::sql::SqlStore;

/// Opens (creating with mode 0600 if missing) and migrates the database at `url`: WAL, a busy
/// timeout, foreign keys.
///
/// Several processes opening a new file at once can see SQLITE_BUSY while one of them switches
/// it to WAL, without SQLite's busy handler being consulted; those attempts are retried with a
/// growing pause, for a few seconds in all.
pub(super) async fn open(url: &str) -> Result<SqlStore, StoreError> {
    let mut pause = Duration::from_millis(20);
    let mut attempts = 0;
    loop {
        match open_once(url).await {
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

async fn open_once(url: &str) -> Result<SqlStore, StoreError> {
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
        .map_err(|e| StoreError::from(classify(e)))?;
    SqlStore::start(Db::Sqlite(pool)).await
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

/// A SQLite error by kind. SQLite never asks for a transaction to be run again: a busy database
/// is unavailable (after the busy timeout).
pub(super) fn classify(err: sqlx::Error) -> TxError {
    super::db::counted(kind_of(err))
}

fn kind_of(err: sqlx::Error) -> TxError {
    TxError::Fail(match &err {
        sqlx::Error::Database(db) => {
            if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
                return TxError::Fail(StoreError::Conflict(db.message().to_owned()));
            }
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes; SQLITE_FULL
            // (13, the disk is full) and SQLITE_IOERR (10, a write the disk refused): the
            // write may succeed later, and nothing was changed (the transaction rolled back).
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            if matches!(code & 0xff, 5 | 6 | 10 | 13) {
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
    })
}
