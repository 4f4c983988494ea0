//! `latchkey audit list`: the audit trail, read from the database.

use anyhow::Context as _;
use latchkey_server::store::{self, AuditQuery};
use latchkey_server::{Clock as _, SystemClock};
use serde_json::{Value, json};

use crate::cli::{AuditCommand, GlobalArgs};
use crate::client_cmd::timestamp;
use crate::output::Output;

/// How many events one query reads.
const PAGE: u32 = 500;

pub async fn run(global: &GlobalArgs, command: AuditCommand) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let store = store::connect(&global.database)
        .await
        .context("opening the database")?;
    let AuditCommand::List {
        since,
        client,
        limit,
    } = command;
    let mut query = AuditQuery {
        since: since.map_or(0, |ago| SystemClock.unix_seconds().saturating_sub(ago)),
        target: client,
        after_seq: 0,
        limit: PAGE.min(limit),
    };
    let mut events = Vec::new();
    while events.len() < limit as usize {
        let page = store.audit_events(&query).await?;
        let Some(last) = page.last() else { break };
        query.after_seq = last.seq;
        let full = page.len() == query.limit as usize;
        events.extend(page);
        if !full {
            break;
        }
    }
    events.truncate(limit as usize);
    let values: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "at": timestamp(e.at),
                "actor": format!("{}:{}", e.actor.kind(), e.actor.id()),
                "action": e.action,
                "target": e.target,
                "changes": e.changes,
            })
        })
        .collect();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                timestamp(e.at),
                format!("{}:{}", e.actor.kind(), e.actor.id()),
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
