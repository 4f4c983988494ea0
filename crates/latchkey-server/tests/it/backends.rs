//! The backends the conformance suite runs on: a fresh SQLite file, and a fresh PostgreSQL
//! database per test (created on the server named by `LATCHKEY_TEST_POSTGRES_URL`, dropped
//! after the test).

use std::future::Future;
use std::sync::Arc;

use latchkey_server::store::{self, Store};
use latchkey_testkit::PgDatabase;

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

    if let Some(postgres) = PgDatabase::create().await {
        let store = store::connect(&postgres.url).await.unwrap();
        test(store, postgres.url.clone()).await;
        postgres.drop_database().await;
    }
}
