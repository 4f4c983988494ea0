//! `latchkey registration-token create | list | revoke`: initial access tokens for dynamic
//! client registration, on the database or, with `--server`, through the admin API; printed
//! from the admin API's JSON either way.

use latchkey_server::SystemClock;
use latchkey_server::http::admin::wire;
use latchkey_server::service::admin::registration_tokens::{self, NewRegistrationToken};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, RegistrationTokenCommand};
use crate::output::Output;
use crate::remote::{Target, encode};

pub async fn run(global: &GlobalArgs, command: RegistrationTokenCommand) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let target = Target::open(global).await?;
    let actor = crate::cli_actor();
    match command {
        RegistrationTokenCommand::Create {
            expires_in,
            max_uses,
            scope_limit,
            audience_limit,
        } => {
            let audience_limit = (!audience_limit.is_empty()).then_some(audience_limit);
            let created: wire::CreatedRegistrationToken = match &target {
                Target::Database(store) => {
                    let new = NewRegistrationToken {
                        expires_in,
                        max_uses,
                        scope_limit,
                        audience_limit,
                    };
                    let (token, secret) =
                        registration_tokens::create(store.as_ref(), &SystemClock, &actor, new)
                            .await?;
                    wire::CreatedRegistrationToken {
                        token: wire::RegistrationToken::from(&token),
                        registration_token: secret,
                    }
                }
                Target::Server(remote) => {
                    let body = json!({
                        "expires_in_seconds": expires_in,
                        "max_uses": max_uses,
                        "scope_limit": scope_limit,
                        "audience_limit": audience_limit,
                    });
                    remote
                        .json(Method::POST, "/registration-tokens", Some(&body))
                        .await?
                }
            };
            let value = serde_json::to_value(&created).unwrap_or(Value::Null);
            let mut rows = token_rows(&created.token);
            rows.insert(
                1,
                ("registration_token", created.registration_token.clone()),
            );
            out.record(&value, &rows);
            if out.is_table() {
                eprintln!(
                    "note: the token is shown only now; give it to whoever registers clients \
                     (Authorization: Bearer at /oauth2/register)"
                );
            }
        }
        RegistrationTokenCommand::List => {
            let tokens: Vec<wire::RegistrationToken> = match &target {
                Target::Database(store) => registration_tokens::list(store.as_ref())
                    .await?
                    .iter()
                    .map(wire::RegistrationToken::from)
                    .collect(),
                Target::Server(remote) => {
                    remote
                        .json(Method::GET, "/registration-tokens", None)
                        .await?
                }
            };
            let values: Vec<Value> = tokens
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect();
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
            match &target {
                Target::Database(store) => {
                    registration_tokens::revoke(store.as_ref(), &SystemClock, &actor, &token_id)
                        .await?;
                }
                Target::Server(remote) => {
                    let path = format!("/registration-tokens/{}", encode(&token_id));
                    remote.call(Method::DELETE, &path, None).await?;
                }
            }
            out.record(
                &json!({ "token_id": token_id, "revoked": true }),
                &[("token_id", token_id.clone()), ("revoked", "true".into())],
            );
        }
    }
    Ok(())
}

fn token_rows(token: &wire::RegistrationToken) -> Vec<(&'static str, String)> {
    let or_any = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        ("token_id", token.token_id.clone()),
        ("created_at", token.created_at.clone()),
        ("expires_at", token.expires_at.clone()),
        ("uses", token.uses.to_string()),
        ("max_uses", or_any(token.max_uses.map(|n| n.to_string()))),
        ("scope_limit", or_any(token.scope_limit.clone())),
        (
            "audience_limit",
            or_any(token.audience_limit.as_ref().map(|a| a.join(" "))),
        ),
    ]
}
