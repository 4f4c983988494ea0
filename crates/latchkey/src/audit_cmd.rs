//! `latchkey audit list`: the audit trail, from the database or, with `--server`, the admin
//! API; printed from the admin API's JSON either way.

use latchkey_server::http::admin::wire;
use latchkey_server::service::admin;
use latchkey_server::store::AuditQuery;
use latchkey_server::{Clock as _, SystemClock};
use reqwest::Method;
use serde_json::Value;

use crate::cli::{AuditCommand, GlobalArgs};
use crate::output::Output;
use crate::remote::{Target, encode};

/// How many events one query reads.
const PAGE: u32 = 500;

pub async fn run(global: &GlobalArgs, command: AuditCommand) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let target = Target::open(global).await?;
    let AuditCommand::List {
        since,
        client,
        limit,
    } = command;
    let since = since.map_or(0, |ago| SystemClock.unix_seconds().saturating_sub(ago));
    let mut after = 0;
    let mut events: Vec<wire::AuditEvent> = Vec::new();
    while events.len() < limit as usize {
        let page_limit = PAGE.min(limit);
        let page: Vec<wire::AuditEvent> = match &target {
            Target::Database(store) => {
                let query = AuditQuery {
                    since,
                    target: client.clone(),
                    after_seq: after,
                    limit: page_limit,
                };
                admin::audit_events(store.as_ref(), &query)
                    .await?
                    .iter()
                    .map(wire::AuditEvent::from)
                    .collect()
            }
            Target::Server(remote) => {
                let mut path = format!("/audit?since={since}&after={after}&limit={page_limit}");
                if let Some(client) = &client {
                    path.push_str(&format!("&client={}", encode(client)));
                }
                let page: wire::AuditPage = remote.json(Method::GET, &path, None).await?;
                page.items
            }
        };
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full = page.len() == page_limit as usize;
        events.extend(page);
        if !full {
            break;
        }
    }
    events.truncate(limit as usize);
    let values: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut value = serde_json::to_value(e).unwrap_or(Value::Null);
            // `seq` is the trail's position, printed as before.
            if let Value::Object(map) = &mut value {
                map.insert("seq".into(), e.seq.into());
            }
            value
        })
        .collect();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.at.clone(),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone().unwrap_or_else(|| "-".into()),
                e.changes.to_string(),
            ]
        })
        .collect();
    out.list(
        &Value::Array(values),
        &["AT", "ACTOR", "ACTION", "TARGET", "CHANGES"],
        &rows,
    );
    Ok(())
}
