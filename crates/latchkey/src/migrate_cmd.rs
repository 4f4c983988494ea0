//! `latchkey migrate`: bring the database schema up to date without serving.

use anyhow::Context as _;
use latchkey_server::store;

use crate::cli::GlobalArgs;

pub async fn run(global: &GlobalArgs) -> anyhow::Result<()> {
    // Opening migrates, under the backend's lock (BEGIN IMMEDIATE on SQLite, an advisory lock
    // on PostgreSQL), so concurrent runs and starting servers apply each migration once.
    let store = store::connect(&global.database)
        .await
        .context("opening and migrating the database")?;
    store.ready().await.context("checking the schema")?;
    // The URL is not printed: it may hold a password.
    println!("the database schema is up to date");
    Ok(())
}
