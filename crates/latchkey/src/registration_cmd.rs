//! `latchkey registration-token create | list | revoke`: initial access tokens for dynamic
//! client registration, on the database.

use anyhow::Context as _;
use latchkey_server::SystemClock;
use latchkey_server::model::RegistrationToken;
use latchkey_server::service::admin::registration_tokens::{self, NewRegistrationToken};
use latchkey_server::store;
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, RegistrationTokenCommand};
use crate::client_cmd::timestamp;
use crate::output::Output;

pub async fn run(global: &GlobalArgs, command: RegistrationTokenCommand) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let store = store::connect(&global.database)
        .await
        .context("opening the database")?;
    let actor = crate::cli_actor();
    match command {
        RegistrationTokenCommand::Create {
            expires_in,
            max_uses,
            scope_limit,
            audience_limit,
        } => {
            let new = NewRegistrationToken {
                expires_in,
                max_uses,
                scope_limit,
                audience_limit: (!audience_limit.is_empty()).then_some(audience_limit),
            };
            let (token, secret) =
                registration_tokens::create(store.as_ref(), &SystemClock, &actor, new).await?;
            let mut value = token_json(&token);
            value["registration_token"] = json!(secret);
            let mut rows = token_rows(&token);
            rows.insert(1, ("registration_token", secret));
            out.record(&value, &rows);
            if out.is_table() {
                eprintln!(
                    "note: the token is shown only now; give it to whoever registers clients \
                     (Authorization: Bearer at /oauth2/register)"
                );
            }
        }
        RegistrationTokenCommand::List => {
            let tokens = registration_tokens::list(store.as_ref()).await?;
            let values: Vec<Value> = tokens.iter().map(token_json).collect();
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| token_rows(t).into_iter().map(|(_, v)| v).collect())
                .collect();
            out.list(
                &Value::Array(values),
                &[
                    "TOKEN_ID",
                    "CREATED_AT",
                    "EXPIRES_AT",
                    "USES",
                    "MAX_USES",
                    "SCOPE_LIMIT",
                    "AUDIENCE_LIMIT",
                ],
                &rows,
            );
        }
        RegistrationTokenCommand::Revoke { token_id } => {
            registration_tokens::revoke(store.as_ref(), &SystemClock, &actor, &token_id).await?;
            out.record(
                &json!({ "token_id": token_id, "revoked": true }),
                &[("token_id", token_id.clone()), ("revoked", "true".into())],
            );
        }
    }
    Ok(())
}

fn token_json(token: &RegistrationToken) -> Value {
    json!({
        "token_id": token.token_id,
        "created_at": timestamp(token.created_at),
        "expires_at": timestamp(token.expires_at),
        "uses": token.uses,
        "max_uses": token.max_uses,
        "scope_limit": token.scope_limit.as_ref().map(|s| s.join(" ")),
        "audience_limit": token.audience_limit,
    })
}

fn token_rows(token: &RegistrationToken) -> Vec<(&'static str, String)> {
    let or_any = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        ("token_id", token.token_id.clone()),
        ("created_at", timestamp(token.created_at)),
        ("expires_at", timestamp(token.expires_at)),
        ("uses", token.uses.to_string()),
        ("max_uses", or_any(token.max_uses.map(|n| n.to_string()))),
        (
            "scope_limit",
            or_any(token.scope_limit.as_ref().map(|s| s.join(" "))),
        ),
        (
            "audience_limit",
            or_any(token.audience_limit.as_ref().map(|a| a.join(" "))),
        ),
    ]
}
