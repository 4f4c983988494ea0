//! `latchkey keys ...`: list and rotate the signing keys.

use anyhow::Context as _;
use latchkey_proto::SigningAlg;
use latchkey_server::keys::{KeySource, RETIRED_KEY_PUBLISHED_FOR, next_key_ready_at};
use latchkey_server::service::admin;
use latchkey_server::store::{self, KeyState, StoredKey};
use latchkey_server::{Clock, SystemClock};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, KeysCommand};
use crate::client_cmd::{confirmed, timestamp};
use crate::output::Output;

pub async fn run(global: &GlobalArgs, command: KeysCommand) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let store = store::connect(&global.database)
        .await
        .context("opening the database")?;
    let store = store.as_ref();
    let clock: &dyn Clock = &SystemClock;
    match command {
        KeysCommand::List => {
            let keys = store.signing_keys().await?;
            let values: Vec<Value> = keys.iter().map(key_json).collect();
            let dash = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), timestamp);
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.kid.clone(),
                        k.alg.to_string(),
                        k.state.as_str().to_owned(),
                        timestamp(k.created_at),
                        dash(k.activated_at),
                        dash(k.retired_at),
                        dash(milestone(k)),
                        if k.encryption.is_some() {
                            "sealed"
                        } else {
                            "clear"
                        }
                        .to_owned(),
                    ]
                })
                .collect();
            out.list(
                &Value::Array(values),
                &[
                    "KID",
                    "ALG",
                    "STATE",
                    "CREATED_AT",
                    "ACTIVATED_AT",
                    "RETIRED_AT",
                    "NEXT_STEP_AT",
                    "PRIVATE_KEY",
                ],
                &rows,
            );
        }
        KeysCommand::Rotate { alg } => {
            let source = KeySource {
                // The algorithm here only chooses what a new next key is made for; rotation
                // makes each new next key with the algorithm it replaces.
                alg: alg.unwrap_or(SigningAlg::Es256),
                kek: crate::kek::load(global)?,
            };
            let rotated = confirmed(
                admin::rotate_keys(store, clock, &crate::cli_actor(), &source, alg).await?,
            );
            let values: Vec<Value> = rotated
                .iter()
                .map(|r| json!({ "alg": r.alg, "retired": r.retired, "current": r.current, "next": r.next }))
                .collect();
            let rows: Vec<Vec<String>> = rotated
                .iter()
                .map(|r| {
                    vec![
                        r.alg.to_string(),
                        r.retired.clone(),
                        r.current.clone(),
                        r.next.clone(),
                    ]
                })
                .collect();
            out.list(
                &Value::Array(values),
                &["ALG", "RETIRED", "CURRENT", "NEXT"],
                &rows,
            );
        }
    }
    Ok(())
}

/// When the key reaches its next state: a next key may sign; a retired key is removed.
fn milestone(key: &StoredKey) -> Option<i64> {
    match key.state {
        KeyState::Next => Some(next_key_ready_at(key.created_at)),
        KeyState::Retired => key.retired_at.map(|t| t + RETIRED_KEY_PUBLISHED_FOR),
        KeyState::Current | KeyState::Removed => None,
    }
}

fn key_json(key: &StoredKey) -> Value {
    let optional = |t: Option<i64>| t.map(timestamp);
    json!({
        "kid": key.kid,
        "alg": key.alg,
        "state": key.state.as_str(),
        "created_at": timestamp(key.created_at),
        "activated_at": optional(key.activated_at),
        "retired_at": optional(key.retired_at),
        "removed_at": optional(key.removed_at),
        "next_step_at": optional(milestone(key)),
        "sealed": key.encryption.is_some(),
    })
}
