//! The backends the conformance suite runs on: a fresh SQLite file, and a fresh PostgreSQL
//! database per test (created on the server named by `LATCHKEY_TEST_POSTGRES_URL`, dropped
//! after the test).

use std::future::Future;
use std::sync::Arc;

use latchkey_server::store::{self, Store};
use sqlx::Connection as _;

/// Runs `test` against every available backend, naming the backend in any failure.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Arc<dyn Store>, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let sqlite = store::connect(&sqlite_url).await.unwrap();
    test(sqlite, sqlite_url).await;

    if let Some(postgres) = Postgres::create().await {
        let store = store::connect(&postgres.url).await.unwrap();
        test(store, postgres.url.clone()).await;
        postgres.drop_database().await;
    }
}

/// A database of its own on the test PostgreSQL server.
pub struct Postgres {
    admin_url: String,
    name: String,
    pub url: String,
}

impl Postgres {
    /// `None` (with the reason printed) when no PostgreSQL is configured; a failure under CI.
    pub async fn create() -> Option<Postgres> {
        let Ok(admin_url) = std::env::var("LATCHKEY_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "LATCHKEY_TEST_POSTGRES_URL must be set under CI"
            );
            eprintln!("skipping PostgreSQL: LATCHKEY_TEST_POSTGRES_URL is not set");
            return None;
        };
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(admin) => admin,
            Err(error) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL is required under CI: {error}"
                );
                eprintln!("skipping PostgreSQL: cannot connect to {admin_url}: {error}");
                return None;
            }
        };
        let name = format!("lk_test_{:016x}", fastrand::u64(..));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(Postgres {
            admin_url,
            name,
            url,
        })
    }

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
