//! Test support shared by latchkey's test suites and benchmarks: a fresh PostgreSQL database
//! per test. A dev-dependency only; nothing here ships.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Connection as _;

/// A database of its own on the PostgreSQL server named by `LATCHKEY_TEST_POSTGRES_URL`,
/// dropped by [`PgDatabase::drop_database`] (connections and all).
pub struct PgDatabase {
    /// The server URL the database was created through.
    pub admin_url: String,
    /// The database's name.
    pub name: String,
    /// A URL for the new database.
    pub url: String,
}

impl PgDatabase {
    /// A fresh database, or `None` with the reason printed when no PostgreSQL is configured or
    /// reachable. Under CI (`CI` set) a missing PostgreSQL is a failure instead.
    pub async fn create() -> Option<PgDatabase> {
        let Ok(admin_url) = std::env::var("LATCHKEY_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "LATCHKEY_TEST_POSTGRES_URL must be set under CI"
            );
            eprintln!("skipping PostgreSQL: LATCHKEY_TEST_POSTGRES_URL is not set");
            return None;
        };
        if let Err(error) = sqlx::PgConnection::connect(&admin_url).await {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is required under CI: {error}"
            );
            eprintln!("skipping PostgreSQL: cannot connect to {admin_url}: {error}");
            return None;
        }
        Some(Self::create_on(&admin_url).await)
    }

    /// A fresh database on the server at `admin_url` (panics if it cannot be made).
    pub async fn create_on(admin_url: &str) -> PgDatabase {
        let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
        let name = format!("lk_test_{:016x}", fastrand::u64(..));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        PgDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Drops the database, closing whatever connections it still has.
    pub async fn drop_database(&self) {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}
