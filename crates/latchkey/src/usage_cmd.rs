//! `latchkey usage`: what each client did (or, with `--not-caching`, which clients get far
//! more tokens than they need), from the database or, with `--server`, the admin API; printed
//! from the admin API's JSON either way.

use latchkey_server::http::admin::wire::{NotCachingRow, UsageRow};
use latchkey_server::service::admin;
use latchkey_server::store::UsageQuery;
use latchkey_server::{Clock as _, SystemClock};
use reqwest::Method;
use serde_json::Value;

use crate::cli::{GlobalArgs, UsageArgs};
use crate::output::Output;
use crate::remote::{Target, encode};

pub async fn run(global: &GlobalArgs, args: UsageArgs) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let target = Target::open(global).await?;
    let since = SystemClock.unix_seconds().saturating_sub(args.since);
    if args.not_caching {
        return not_caching(&out, &target, since, &args).await;
    }
    let rows: Vec<UsageRow> = match &target {
        Target::Database(store) => {
            let query = usage_query(since, &args);
            let counts = admin::usage(store.as_ref(), &query).await?;
            UsageRow::from_counts(&counts, args.client.is_none())
        }
        Target::Server(remote) => {
            let path = query_path("/usage", since, &args);
            remote.json(Method::GET, &path, None).await?
        }
    };
    let values = serde_json::to_value(&rows).unwrap_or(Value::Null);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let denied: Vec<String> = r
                .denied
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect();
            vec![
                r.client_id.clone(),
                r.from.clone(),
                r.tokens.to_string(),
                if denied.is_empty() {
                    "-".into()
                } else {
                    denied.join(" ")
                },
                r.introspections.to_string(),
                r.revocations.to_string(),
            ]
        })
        .collect();
    let from = if args.client.is_some() {
        "MINUTE"
    } else {
        "SINCE"
    };
    out.list(
        &values,
        &[
            "CLIENT_ID",
            from,
            "TOKENS",
            "DENIED",
            "INTROSPECTIONS",
            "REVOCATIONS",
        ],
        &table,
    );
    Ok(())
}

/// The database query of `latchkey usage`: per minute.
fn usage_query(since: i64, args: &UsageArgs) -> UsageQuery {
    UsageQuery {
        since,
        client: args.client.clone(),
        limit: args.limit,
        step: 60,
    }
}

/// The admin API path of a usage query.
fn query_path(path: &str, since: i64, args: &UsageArgs) -> String {
    let mut path = format!("{path}?since={since}&limit={}", args.limit);
    if let Some(client) = &args.client {
        path.push_str(&format!("&client={}", encode(client)));
    }
    path
}

/// `latchkey usage --not-caching`.
async fn not_caching(
    out: &Output,
    target: &Target,
    since: i64,
    args: &UsageArgs,
) -> anyhow::Result<()> {
    let rows: Vec<NotCachingRow> = match target {
        Target::Database(store) => {
            let query = usage_query(since, args);
            let found = admin::not_caching(store.as_ref(), &query).await?;
            found.iter().map(NotCachingRow::from).collect()
        }
        Target::Server(remote) => {
            let path = query_path("/usage/not-caching", since, args);
            remote.json(Method::GET, &path, None).await?
        }
    };
    let values = serde_json::to_value(&rows).unwrap_or(Value::Null);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.client_id.clone(),
                r.source.clone(),
                r.hour.clone(),
                r.tokens.to_string(),
                format!("{}s", r.token_lifetime),
                r.allowed.to_string(),
            ]
        })
        .collect();
    out.list(
        &values,
        &[
            "CLIENT_ID",
            "SOURCE",
            "HOUR",
            "TOKENS",
            "LIFETIME",
            "ALLOWED",
        ],
        &table,
    );
    Ok(())
}
