//! The two sqlx drivers behind one small interface, so that each statement is written once (with
//! `$N` parameters, which sqlx accepts on SQLite and PostgreSQL alike) and each [`Store`] method
//! is ordinary async code over concrete types.
//!
//! A statement is SQL plus a list of [`Arg`]s, bound on whichever driver the connection or
//! transaction belongs to; rows come back as [`DbRow`], which decodes a column the same way on
//! both. Errors are read by the driver that raised them (`sqlite::classify`,
//! `postgres::classify`). Two simpler-looking designs were not taken: `sqlx::Any` cannot decode
//! SQLite's INTEGER booleans and loses `SqliteConnectOptions`, and a `SqlStore<DB>` generic over
//! `sqlx::Database` repeats sqlx's bounds on every impl and meets higher-ranked lifetime errors
//! inside `async_trait` futures.
//!
//! [`Store`]: super::Store

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Database, Decode, Encode, Postgres, Row, SqlSafeStr, SqlStr, Sqlite, Type};

use super::dialect::Dialect;
use super::{StoreError, postgres, sqlite};

/// How many times a transaction runs in all when the database aborts it as a serialization
/// failure or a deadlock victim (only PostgreSQL does).
const MAX_ATTEMPTS: u32 = 3;

/// A pool of connections to one database.
#[derive(Debug, Clone)]
pub(super) enum Db {
    Sqlite(SqlitePool),
    /// With what the server knows of whether the database can be reached, shared by every
    /// connection from the pool.
    Postgres(PgPool, Arc<Reachability>),
}

impl Db {
    /// A PostgreSQL pool, taken as reachable.
    pub(super) fn postgres(pool: PgPool) -> Db {
        Db::Postgres(pool, Arc::default())
    }

    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(..) => Dialect::Postgres,
        }
    }

    /// A connection for statements outside a transaction.
    pub(super) async fn acquire(&self) -> Result<Conn, TxError> {
        match self {
            Db::Sqlite(pool) => pool
                .acquire()
                .await
                .map(Conn::Sqlite)
                .map_err(sqlite::classify),
            Db::Postgres(pool, reach) => reach
                .connect(pool, pool.acquire())
                .await
                .map(|conn| Conn::Postgres(conn, Arc::clone(reach)))
                .map_err(postgres::classify),
        }
    }

    /// Begins a transaction the way the dialect writes ([`Dialect::begin`]). Dropping it
    /// without [`Tx::commit`] rolls it back.
    pub(super) async fn begin(&self) -> Result<Tx, TxError> {
        let begin = self.dialect().begin();
        match self {
            Db::Sqlite(pool) => pool
                .begin_with(begin)
                .await
                .map(Tx::Sqlite)
                .map_err(sqlite::classify),
            Db::Postgres(pool, reach) => reach
                .connect(pool, pool.begin_with(begin))
                .await
                .map(|tx| Tx::Postgres(tx, Arc::clone(reach)))
                .map_err(postgres::classify),
        }
    }
}

/// How long a probe of an unreachable database may take to get a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a request waits for a pooled connection before one request checks whether the
/// database can be reached at all.
const SLOW_CONNECT: Duration = Duration::from_millis(100);

/// Whether the database can be reached, as far as this server knows. Without it, every request
/// while PostgreSQL is down or restarting waits out the pool's acquire timeout (5 s: sqlx
/// keeps retrying the connection) before its 503. Once a connection fails as unreachable (an
/// I/O error, a connection-class SQLSTATE, an administrator's shutdown, or the pool timing out),
/// requests are answered at once (503 with `Retry-After`), while one request at a time
/// probes: it opens a connection of its own (refused at once while PostgreSQL is down, at most
/// [`PROBE_TIMEOUT`] when nothing answers), and the first that gets one ends the outage. So
/// service comes back within about one probe of the database.
#[derive(Debug, Default)]
pub(super) struct Reachability {
    down: AtomicBool,
    probing: AtomicBool,
    /// Wakes the requests waiting for a connection when an outage starts, so they answer then
    /// rather than at the pool's timeout.
    outage: tokio::sync::Notify,
}

impl Reachability {
    /// Runs `connect` (a pool acquire or begin), or answers at once while the database is
    /// unreachable and another request is probing it.
    async fn connect<T>(
        &self,
        pool: &PgPool,
        connect: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        if self.down.load(Ordering::Acquire) {
            if self.probing.swap(true, Ordering::AcqRel) {
                return Err(unreachable(
                    "the database is unreachable; another request is checking",
                ));
            }
            // Cleared however the probe ends, also when its request is dropped.
            let _probe = Probe(&self.probing);
            self.reachable(pool).await?;
            if self.down.swap(false, Ordering::AcqRel) {
                tracing::info!("the database answers again");
            }
        }
        // Made before the wait, so an outage noticed meanwhile wakes it.
        let outage = self.outage.notified();
        let mut connect = std::pin::pin!(connect);
        let result = tokio::select! {
            result = &mut connect => result,
            () = outage => Err(unreachable("the database became unreachable")),
            // A wait this long is a busy pool or a database that is gone (sqlx retries a
            // refused connection until its timeout, silently): one request finds out which.
            () = tokio::time::sleep(SLOW_CONNECT) => {
                let outage = self.outage.notified();
                if !self.probing.swap(true, Ordering::AcqRel) {
                    let _probe = Probe(&self.probing);
                    // An unreachable database starts an outage, which the select below
                    // hears; any other answer leaves the request to the pool.
                    let _ = self.reachable(pool).await;
                }
                tokio::select! {
                    result = &mut connect => result,
                    () = outage => Err(unreachable("the database became unreachable")),
                }
            }
        };
        if let Err(error) = &result {
            self.saw(error);
        }
        result
    }

    /// Opens a connection of its own, outside the pool (which retries a refused connection
    /// silently until its timeout), to tell a busy pool from a database that cannot be
    /// reached; the latter starts an outage.
    async fn reachable(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        use sqlx::ConnectOptions as _;
        let options = pool.connect_options();
        let error = match tokio::time::timeout(PROBE_TIMEOUT, options.connect()).await {
            Ok(Ok(connection)) => {
                // Closed politely, so the server logs no broken connection.
                let _ = sqlx::Connection::close(connection).await;
                return Ok(());
            }
            Ok(Err(error)) => error,
            Err(_) => unreachable("no connection to the database within 500 ms"),
        };
        self.saw(&error);
        Err(error)
    }

    /// Notes an error of a connection or statement: one that says the database cannot be
    /// reached starts an outage.
    fn saw(&self, error: &sqlx::Error) {
        if postgres::is_unreachable(error) && !self.down.swap(true, Ordering::AcqRel) {
            self.outage.notify_waiters();
            tracing::warn!(%error, "the database is unreachable; answering 503 at once while one request at a time checks whether it is back");
        }
    }
}

/// Clears the probing flag when dropped.
struct Probe<'a>(&'a AtomicBool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn unreachable(why: &'static str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::NotConnected, why))
}

/// A pooled connection, outside any transaction.
pub(super) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>, Arc<Reachability>),
}

/// A transaction.
pub(super) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>, Arc<Reachability>),
}

impl Tx {
    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(..) => Dialect::Postgres,
        }
    }

    pub(super) async fn commit(self) -> Result<(), TxError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await.map_err(sqlite::classify),
            Tx::Postgres(tx, reach) => tx.commit().await.map_err(|error| {
                reach.saw(&error);
                postgres::classify(error)
            }),
        }
    }

    /// Runs a script of several statements without parameters (a migration).
    pub(super) async fn run_script(&mut self, script: &'static str) -> Result<(), TxError> {
        let script = sqlx::raw_sql(script);
        match self {
            Tx::Sqlite(tx) => {
                script.execute(&mut **tx).await.map_err(sqlite::classify)?;
            }
            Tx::Postgres(tx, _) => {
                script
                    .execute(&mut **tx)
                    .await
                    .map_err(postgres::classify)?;
            }
        }
        Ok(())
    }
}

/// The connection a statement runs on.
pub(super) enum Raw<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection, &'c Reachability),
}

/// What a statement can run on: a [`Conn`] or a [`Tx`].
pub(super) trait Connection: Send {
    fn raw(&mut self) -> Raw<'_>;
}

impl Connection for Conn {
    fn raw(&mut self) -> Raw<'_> {
        match self {
            Conn::Sqlite(conn) => Raw::Sqlite(conn),
            Conn::Postgres(conn, reach) => Raw::Postgres(conn, reach),
        }
    }
}

impl Connection for Tx {
    fn raw(&mut self) -> Raw<'_> {
        match self {
            Tx::Sqlite(tx) => Raw::Sqlite(tx),
            Tx::Postgres(tx, reach) => Raw::Postgres(tx, reach),
        }
    }
}

/// A value bound to a statement: the few types the schemas use.
pub(super) enum Arg<'a> {
    Text(Option<Cow<'a, str>>),
    Int(Option<i64>),
    /// PostgreSQL `INTEGER`, for the two-key advisory lock.
    Int4(i32),
    Bool(Option<bool>),
    Bytes(Option<&'a [u8]>),
}

/// `impl From<T> for Arg`, one line each.
macro_rules! arg_from {
    ($($t:ty => |$v:ident| $arg:expr;)*) => {
        $(impl<'a> From<$t> for Arg<'a> {
            fn from($v: $t) -> Self {
                $arg
            }
        })*
    };
}

arg_from! {
    &'a str => |v| Arg::Text(Some(Cow::Borrowed(v)));
    &'a String => |v| Arg::Text(Some(Cow::Borrowed(v)));
    Option<&'a str> => |v| Arg::Text(v.map(Cow::Borrowed));
    String => |v| Arg::Text(Some(Cow::Owned(v)));
    Option<String> => |v| Arg::Text(v.map(Cow::Owned));
    i64 => |v| Arg::Int(Some(v));
    Option<i64> => |v| Arg::Int(v);
    i32 => |v| Arg::Int4(v);
    bool => |v| Arg::Bool(Some(v));
    Option<bool> => |v| Arg::Bool(v);
    &'a [u8] => |v| Arg::Bytes(Some(v));
}

/// A statement and its arguments: `sql("... $1 ...").bind(x).execute(&mut tx)`.
pub(super) struct Query<'a> {
    sql: SqlStr,
    args: Vec<Arg<'a>>,
}

/// A statement, with `$1`, `$2`, ... for its arguments in the order they are bound.
pub(super) fn sql<'a>(sql: impl SqlSafeStr) -> Query<'a> {
    Query {
        sql: sql.into_sql_str(),
        args: Vec::new(),
    }
}

impl<'a> Query<'a> {
    /// Binds the next `$N`.
    pub(super) fn bind(mut self, value: impl Into<Arg<'a>>) -> Self {
        self.args.push(value.into());
        self
    }

    /// The statement for one driver, its arguments bound (sqlx encodes them here).
    fn on<DB: Database>(self) -> sqlx::query::Query<'static, DB, DB::Arguments>
    where
        for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<&'t [u8]>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
        for<'t> i32: Encode<'t, DB> + Type<DB>,
    {
        let Query { sql, args } = self;
        let mut query = sqlx::query(sql);
        for arg in &args {
            query = match arg {
                Arg::Text(v) => query.bind(v.as_deref()),
                Arg::Int(v) => query.bind(*v),
                Arg::Int4(v) => query.bind(*v),
                Arg::Bool(v) => query.bind(*v),
                Arg::Bytes(v) => query.bind(*v),
            };
        }
        query
    }

    /// Runs the statement; the number of rows it changed.
    pub(super) async fn execute(self, on: &mut impl Connection) -> Result<u64, TxError> {
        match on.raw() {
            Raw::Sqlite(conn) => self
                .on::<Sqlite>()
                .execute(conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(sqlite::classify),
            Raw::Postgres(conn, reach) => self
                .on::<Postgres>()
                .execute(conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(|error| {
                    reach.saw(&error);
                    postgres::classify(error)
                }),
        }
    }

    /// Every row the statement returns.
    pub(super) async fn fetch_all(self, on: &mut impl Connection) -> Result<Vec<DbRow>, TxError> {
        match on.raw() {
            Raw::Sqlite(conn) => self
                .on::<Sqlite>()
                .fetch_all(conn)
                .await
                .map(|rows| rows.into_iter().map(DbRow::Sqlite).collect())
                .map_err(sqlite::classify),
            Raw::Postgres(conn, reach) => self
                .on::<Postgres>()
                .fetch_all(conn)
                .await
                .map(|rows| rows.into_iter().map(DbRow::Postgres).collect())
                .map_err(|error| {
                    reach.saw(&error);
                    postgres::classify(error)
                }),
        }
    }

    /// The first row, if any (for statements that return at most one).
    pub(super) async fn fetch_optional(
        self,
        on: &mut impl Connection,
    ) -> Result<Option<DbRow>, TxError> {
        Ok(self.fetch_all(on).await?.into_iter().next())
    }

    /// The one row the statement returns.
    pub(super) async fn fetch_one(self, on: &mut impl Connection) -> Result<DbRow, TxError> {
        self.fetch_optional(on)
            .await?
            .ok_or_else(|| TxError::Fail(StoreError::Other("no row returned".into())))
    }
}

/// A result row of either driver.
pub(super) enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl DbRow {
    /// Column `name` as `T`; a missing column or an undecodable value is a corrupt record.
    /// (sqlx decodes SQLite INTEGER and PostgreSQL BOOLEAN as `bool`, BLOB and BYTEA as bytes.)
    pub(super) fn get<T>(&self, name: &str) -> Result<T, StoreError>
    where
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>,
    {
        match self {
            DbRow::Sqlite(row) => row.try_get(name),
            DbRow::Postgres(row) => row.try_get(name),
        }
        .map_err(|e| {
            ERRORS[CORRUPT].fetch_add(1, Ordering::Relaxed);
            StoreError::Corrupt(e.to_string())
        })
    }
}

/// Why one attempt at a transaction failed: the database rolled it back as a serialization
/// failure or a deadlock victim, so running it again from the start may succeed; or for good.
pub(super) enum TxError {
    Retry(StoreError),
    Fail(StoreError),
}

impl From<StoreError> for TxError {
    fn from(err: StoreError) -> Self {
        TxError::Fail(err)
    }
}

impl From<TxError> for StoreError {
    fn from(err: TxError) -> Self {
        match err {
            TxError::Retry(err) | TxError::Fail(err) => err,
        }
    }
}

/// Database errors since the process started, by kind: `unavailable` (cannot connect, busy,
/// pool timed out), `retried` (a transaction PostgreSQL aborted and asked to run again),
/// `corrupt` (a value that does not decode) and `other`. Uniqueness conflicts are outcomes, not
/// errors, and are not counted. Process-wide: every store in the process counts here.
static ERRORS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// The kinds [`ERRORS`] counts, in its order.
pub const ERROR_KINDS: [&str; 4] = ["unavailable", "retried", "corrupt", "other"];
const UNAVAILABLE: usize = 0;
const RETRIED: usize = 1;
const CORRUPT: usize = 2;
const OTHER: usize = 3;

/// Counts `err` in [`ERRORS`] and hands it on.
pub(super) fn counted(err: TxError) -> TxError {
    let kind = match &err {
        TxError::Retry(_) => Some(RETRIED),
        TxError::Fail(StoreError::Unavailable(_)) => Some(UNAVAILABLE),
        TxError::Fail(StoreError::Corrupt(_)) => Some(CORRUPT),
        TxError::Fail(StoreError::Conflict(_) | StoreError::Precondition(_)) => None,
        TxError::Fail(StoreError::Schema(_) | StoreError::Other(_)) => Some(OTHER),
    };
    if let Some(kind) = kind {
        ERRORS[kind].fetch_add(1, Ordering::Relaxed);
    }
    err
}

/// The database errors counted so far, by kind (in [`ERROR_KINDS`]' order).
pub fn database_errors() -> [u64; 4] {
    std::array::from_fn(|i| ERRORS[i].load(Ordering::Relaxed))
}

/// Runs a transaction, again from its start if PostgreSQL aborted it as a serialization failure
/// or deadlock victim, at most [`MAX_ATTEMPTS`] times in all; then the database counts as busy.
/// (SQLite never asks for this: it answers SQLITE_BUSY, which is not retried here.)
///
/// Deadlocks are possible at READ COMMITTED (two transactions locking the same rows in opposite
/// orders); serialization failures where an operator made SERIALIZABLE or REPEATABLE READ the
/// default, for the single statements that run outside [`Db::begin`]. Either way the attempt
/// has been rolled back, so running it again is safe.
pub(super) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut pause = Duration::from_millis(10);
    let mut attempts = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(TxError::Retry(why)) if attempts < MAX_ATTEMPTS => {
                tracing::debug!(%why, "transaction aborted by the database; running it again");
                attempts += 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(err) => return Err(err.into()),
        }
    }
}
