//! `latchkey keys ...`: list and rotate the signing keys, on the database or, with `--server`,
//! through the admin API; printed from the admin API's JSON either way.

use latchkey_proto::SigningAlg;
use latchkey_server::http::admin::wire;
use latchkey_server::keys::KeySource;
use latchkey_server::service::admin;
use latchkey_server::{Clock, SystemClock};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, KeysCommand};
use crate::client_cmd::confirmed;
use crate::output::Output;
use crate::remote::Target;

pub async fn run(global: &GlobalArgs, command: KeysCommand) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let target = Target::open(global).await?;
    let clock: &dyn Clock = &SystemClock;
    match command {
        KeysCommand::List => {
            let keys: Vec<wire::SigningKey> = match &target {
                Target::Database(store) => admin::list_keys(store.as_ref())
                    .await?
                    .iter()
                    .map(wire::SigningKey::from)
                    .collect(),
                Target::Server(remote) => remote.json(Method::GET, "/keys", None).await?,
            };
            let values: Vec<Value> = keys
                .iter()
                .map(|k| serde_json::to_value(k).unwrap_or(Value::Null))
                .collect();
            let dash = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".to_owned());
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.kid.clone(),
                        k.alg.clone(),
                        k.state.clone(),
                        k.created_at.clone(),
                        dash(&k.activated_at),
                        dash(&k.retired_at),
                        dash(&k.next_step_at),
                        if k.sealed { "sealed" } else { "clear" }.to_owned(),
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
            let rotated: Vec<wire::Rotated> = match &target {
                Target::Database(store) => {
                    let source = KeySource {
                        // The algorithm here only chooses what a new next key is made for;
                        // rotation makes each new next key with the algorithm it replaces.
                        alg: alg.unwrap_or(SigningAlg::Es256),
                        kek: crate::kek::load(global)?,
                    };
                    let rotated = confirmed(
                        admin::rotate_keys(
                            store.as_ref(),
                            clock,
                            &crate::cli_actor(),
                            &source,
                            alg,
                        )
                        .await?,
                    );
                    rotated.iter().map(wire::Rotated::from).collect()
                }
                Target::Server(remote) => {
                    let body = json!({ "alg": alg.map(SigningAlg::as_str) });
                    remote
                        .json(Method::POST, "/keys/rotate", Some(&body))
                        .await?
                }
            };
            let values = serde_json::to_value(&rotated).unwrap_or(Value::Null);
            let rows: Vec<Vec<String>> = rotated
                .iter()
                .map(|r| {
                    vec![
                        r.alg.clone(),
                        r.retired.clone(),
                        r.current.clone(),
                        r.next.clone(),
                    ]
                })
                .collect();
            out.list(&values, &["ALG", "RETIRED", "CURRENT", "NEXT"], &rows);
        }
    }
    Ok(())
}
