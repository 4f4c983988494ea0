//! Where the SQL of SQLite and PostgreSQL differs. Every other statement in `store/` is written
//! once, in `sql.rs` and `rows.rs`; each difference is named here, both sides together. (Opening
//! a database and reading its errors are the drivers' own, in `sqlite.rs` and `postgres.rs`;
//! each database's schema migrations are listed in `migrations.rs`.)
//!
//! SQLite is one file with one writer at a time: `BEGIN IMMEDIATE` takes the write lock up
//! front, so every transaction that reads and then writes runs alone (docs/CONFORMANCE.md,
//! "Concurrent writers"). PostgreSQL serves many replicas at once: transactions run at READ
//! COMMITTED and take row or advisory locks exactly where they read and then write.

use latchkey_proto::SigningAlg;

use super::db::{Tx, TxError, sql};

/// Which SQL a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// The first key of the two-key advisory lock that serialises the key changes of one algorithm
/// on PostgreSQL ("keys" in ASCII); the second key is `hashtext(alg)`.
const SIGNING_KEY_LOCK: i32 = 0x6b65_7973;

impl Dialect {
    /// How every transaction begins.
    ///
    /// SQLite: read-then-write transactions take the write lock up front, so two writers never
    /// both read and then fail to upgrade with SQLITE_BUSY.
    ///
    /// PostgreSQL: READ COMMITTED, whatever the database's default. The locking relies on each
    /// statement reading what was committed before it started, including what a lock holder
    /// committed while the statement waited for its lock. (At REPEATABLE READ,
    /// `insert_key_if_none` would read the snapshot from before it got the lock, miss the
    /// winner's key, and fail on the unique index instead of returning it.)
    pub(super) fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL READ COMMITTED",
        }
    }

    /// `(p, p, ..), (p, ..)`: the placeholders of a multi-row `VALUES`, `rows` rows of
    /// `per_row` parameters bound in order.
    ///
    /// PostgreSQL: `$1, $2, ...`. SQLite: plain `?`, bound by position. sqlx asks SQLite for
    /// the name of every parameter, and SQLite finds a named one (`$N` or `?N`) by scanning
    /// the statement's list of names, so binding a statement of n named parameters costs n²:
    /// with 420 parameters that was a quarter of a bulk import's time.
    pub(super) fn value_rows(self, rows: usize, per_row: usize) -> String {
        let mut out = String::with_capacity(rows * per_row * 5);
        for row in 0..rows {
            out.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..per_row {
                if column > 0 {
                    out.push_str(", ");
                }
                match self {
                    Dialect::Sqlite => out.push('?'),
                    Dialect::Postgres => {
                        out.push('$');
                        out.push_str(&(row * per_row + column + 1).to_string());
                    }
                }
            }
            out.push(')');
        }
        out
    }
}

/// Serialises the key changes of one algorithm until the transaction ends, across every
/// process (docs/CONFORMANCE.md, "Concurrent writers"): after it, each statement of the
/// transaction reads the keys as the previous holder committed them.
///
/// SQLite: `BEGIN IMMEDIATE` already did. PostgreSQL: a two-key advisory lock.
pub(super) async fn lock_signing_keys(tx: &mut Tx, alg: SigningAlg) -> Result<(), TxError> {
    match tx.dialect() {
        Dialect::Sqlite => Ok(()),
        Dialect::Postgres => {
            sql("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(SIGNING_KEY_LOCK)
                .bind(alg.as_str())
                .execute(tx)
                .await?;
            Ok(())
        }
    }
}

/// The page cache of a SQLite connection during a bulk insert, in KiB: 64 MiB. Rows with
/// random ids land on a different index page each, so with SQLite's default of 2 MiB a
/// 10,000-client transaction spilled dirty pages to the WAL again and again (13 page writes
/// per client; 200,000 clients wrote 2.6 million pages).
const BULK_CACHE_KIB: i64 = 64 * 1024;

/// SQLite's default page cache, in KiB, which every pooled connection returns to.
const DEFAULT_CACHE_KIB: i64 = 2000;

/// Gives a bulk insert (`create_clients`) room to keep every page it dirties in memory until
/// it commits (`on`), and gives the memory back (`!on`, before the commit: dirty pages stay
/// until they are written, the rest is released).
///
/// SQLite: `PRAGMA cache_size` on this connection. PostgreSQL: nothing; its buffers are the
/// server's.
pub(super) async fn bulk_insert_cache(tx: &mut Tx, on: bool) -> Result<(), TxError> {
    if tx.dialect() == Dialect::Sqlite {
        let kib = if on {
            BULK_CACHE_KIB
        } else {
            DEFAULT_CACHE_KIB
        };
        // A constant, formatted: PRAGMA takes no parameters.
        sql(sqlx::AssertSqlSafe(format!("PRAGMA cache_size = -{kib}")))
            .execute(tx)
            .await?;
    }
    Ok(())
}

/// Whether the client exists, locking its row until the transaction ends so that
/// count-then-insert transactions on one client take turns (docs/CONFORMANCE.md, "Concurrent
/// writers").
///
/// SQLite: `BEGIN IMMEDIATE` already serialises them. PostgreSQL: `FOR NO KEY UPDATE`, which
/// leaves the foreign-key checks of token inserts for this client unblocked.
pub(super) async fn lock_client(tx: &mut Tx, client_id: &str) -> Result<bool, TxError> {
    let statement = match tx.dialect() {
        Dialect::Sqlite => "SELECT 1 FROM clients WHERE client_id = $1",
        Dialect::Postgres => "SELECT 1 FROM clients WHERE client_id = $1 FOR NO KEY UPDATE",
    };
    Ok(sql(statement)
        .bind(client_id)
        .fetch_optional(tx)
        .await?
        .is_some())
}

/// Puts `jti` on the deny list at the next position (`seq`); revoking twice is not an error,
/// and takes no position.
///
/// Servers fetch the deny list after the last `seq` they saw (ARCHITECTURE.md), so a row must
/// never become visible after a row with a higher `seq`.
///
/// SQLite: `seq` is `INTEGER PRIMARY KEY AUTOINCREMENT`; writers commit one at a time, in `seq`
/// order.
///
/// PostgreSQL: a sequence would not do: its values are handed out at insert, and the
/// transactions holding them commit in any order. So `seq` is the next value of a counter in
/// the single `generation` row, taken under that row's lock: the lock is held until this
/// transaction commits or rolls back, so the next revoker waits for us, reads our value (or,
/// after a rollback, the old one: no gap) and commits after us. Position order is commit
/// order, and a poller's snapshot always holds a prefix.
pub(super) async fn append_revocation(
    tx: &mut Tx,
    jti: &str,
    client_id: &str,
    expires_at: i64,
) -> Result<(), TxError> {
    match tx.dialect() {
        Dialect::Sqlite => {
            sql(
                "INSERT INTO revoked_tokens (jti, client_id, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(client_id)
            .bind(expires_at)
            .execute(tx)
            .await?;
        }
        Dialect::Postgres => {
            let last: i64 =
                sql("SELECT revocation_seq FROM generation WHERE id = 1 FOR NO KEY UPDATE")
                    .fetch_one(tx)
                    .await?
                    .get("revocation_seq")?;
            let inserted = sql(
                "INSERT INTO revoked_tokens (seq, jti, client_id, expires_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
            )
            .bind(last + 1)
            .bind(jti)
            .bind(client_id)
            .bind(expires_at)
            .execute(tx)
            .await?;
            if inserted == 1 {
                sql("UPDATE generation SET revocation_seq = $1 WHERE id = 1")
                    .bind(last + 1)
                    .execute(tx)
                    .await?;
            }
        }
    }
    Ok(())
}
