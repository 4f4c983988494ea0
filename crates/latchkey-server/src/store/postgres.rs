//! Connecting to a PostgreSQL database shared by several servers, and reading its errors by
//! SQLSTATE: which ones mean "unavailable", which ones ask for the transaction to be run again.
//! Everything else is shared with SQLite (`sql.rs`, with the differences in `dialect.rs`).

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use super::StoreError;
use super::db::{Db, TxError};
use super::sql::SqlStore;

/// Connects to the database at `url` (`postgres://` or `postgresql://`) and migrates it.
pub(super) async fn open(url: &str) -> Result<SqlStore, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| StoreError::from(classify(e)))?;
    SqlStore::start(Db::postgres(pool)).await
}

/// Whether `err` says the database cannot be reached at all (not that it is busy or refused
/// one statement): I/O and TLS failures, the pool timing out or closed, connection-class
/// SQLSTATEs (08), and an administrator's or a crash's shutdown, or a start-up under way (57P01,
/// 57P02, 57P03).
pub(super) fn is_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

/// A PostgreSQL error by kind. 40001 serialization_failure and 40P01 deadlock_detected: the
/// transaction was rolled back and may succeed if run again ([`retrying`](super::db::retrying));
/// once retries are exhausted, or where nothing retries, the database counts as unavailable.
pub(super) fn classify(err: sqlx::Error) -> TxError {
    super::db::counted(kind_of(err))
}

fn kind_of(err: sqlx::Error) -> TxError {
    let store_error = match &err {
        sqlx::Error::Database(db) => {
            if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
                return TxError::Fail(StoreError::Conflict(db.message().to_owned()));
            }
            let code = db.code().unwrap_or_default();
            if matches!(&*code, "40001" | "40P01") {
                return TxError::Retry(StoreError::Unavailable(format!(
                    "{} (SQLSTATE {code})",
                    db.message()
                )));
            }
            let unavailable =
                // Class 08 connection exceptions; 53 insufficient resources (too many
                // connections, disk full, out of memory).
                code.starts_with("08")
                    || code.starts_with("53")
                    // admin_shutdown, crash_shutdown, cannot_connect_now (starting up).
                    || matches!(&*code, "57P01" | "57P02" | "57P03")
                    // lock_not_available (lock_timeout), the counterpart of SQLITE_BUSY.
                    || code == "55P03";
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
    };
    TxError::Fail(store_error)
}
