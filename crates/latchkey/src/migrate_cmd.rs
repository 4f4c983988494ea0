//! `latchkey migrate` (bring the schema up to date without serving) and `latchkey
//! migrate-data` (move clients, secrets and keys to another database).

use anyhow::Context as _;
use latchkey_server::service::admin;
use latchkey_server::store;

use crate::cli::{GlobalArgs, MigrateDataArgs};
use crate::output::Output;

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

/// `latchkey migrate-data --from URL --to URL`.
pub async fn run_data(global: &GlobalArgs, args: MigrateDataArgs) -> anyhow::Result<()> {
    let from = store::connect(&args.from)
        .await
        .context("opening the --from database")?;
    let to = store::connect(&args.to)
        .await
        .context("opening the --to database")?;
    let moved = admin::migrate_data(
        from.as_ref(),
        to.as_ref(),
        &latchkey_server::SystemClock,
        &crate::cli_actor(),
    )
    .await?;
    let output = Output::new(global.output);
    output.record(
        &serde_json::json!({
            "clients": moved.clients,
            "secrets": moved.secrets,
            "keys": moved.keys,
            "registration_tokens": moved.registration_tokens,
            "registrations": moved.registrations,
        }),
        &[
            ("clients", moved.clients.to_string()),
            ("secrets", moved.secrets.to_string()),
            ("keys", moved.keys.to_string()),
            ("registration tokens", moved.registration_tokens.to_string()),
            ("registrations", moved.registrations.to_string()),
        ],
    );
    Ok(())
}
