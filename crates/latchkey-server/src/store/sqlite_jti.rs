//! Group commit of assertion ids for SQLite. SQLite has one writer at a time, so one insert
//! and commit per `private_key_jwt` request makes every token request queue for the write
//! lock. Instead, concurrent uses are written by one task, many per statement and one commit
//! per batch: each caller still gets its own answer only after its row is committed.

use std::collections::HashMap;

use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::sqlite::map_err;

/// Most uses written by one statement (three bound values each, far below SQLite's limit).
const MAX_BATCH: usize = 256;

struct JtiUse {
    client_id: String,
    jti: String,
    expires_at: i64,
    now: i64,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The handle the store keeps; the writer task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct JtiWriter {
    queue: mpsc::UnboundedSender<JtiUse>,
}

impl JtiWriter {
    /// Starts the writer task for `pool`.
    pub(super) fn start(pool: SqlitePool) -> Self {
        let (queue, incoming) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(pool, incoming));
        JtiWriter { queue }
    }

    /// Same contract as `Store::use_assertion_jti`.
    pub(super) async fn use_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = JtiUse {
            client_id: client_id.to_owned(),
            jti: jti.to_owned(),
            expires_at,
            now,
            reply,
        };
        let stopped = || StoreError::Unavailable("the assertion id writer has stopped".into());
        self.queue.send(request).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_batches(pool: SqlitePool, mut incoming: mpsc::UnboundedReceiver<JtiUse>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = write(&pool, &batch).await;
        for (use_, result) in batch.drain(..).zip(outcome) {
            // The caller may have gone (its request was cancelled); nothing to tell then.
            let _ = use_.reply.send(result);
        }
    }
}

/// Writes one batch in one statement and returns each use's answer, in order. A repeated
/// (client, jti) within the batch is a replay of the first.
async fn write(pool: &SqlitePool, batch: &[JtiUse]) -> Vec<Result<bool, StoreError>> {
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
    let mut unique: Vec<&JtiUse> = Vec::with_capacity(batch.len());
    for (i, u) in batch.iter().enumerate() {
        first.entry((&u.client_id, &u.jti)).or_insert_with(|| {
            unique.push(u);
            i
        });
    }
    // An earlier entry counts as expired only if it expired before every caller's `now`.
    let now = unique.iter().map(|u| u.now).min().unwrap_or(0);
    let mut sql = String::from("INSERT INTO assertion_jtis (client_id, jti, expires_at) VALUES ");
    for i in 0..unique.len() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?)");
    }
    // Inserted, or taking over an entry that has expired (not yet purged): first use. RETURNING
    // names exactly those rows.
    sql.push_str(
        " ON CONFLICT (client_id, jti) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE assertion_jtis.expires_at <= ? RETURNING client_id, jti",
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for u in &unique {
        query = query.bind(&u.client_id).bind(&u.jti).bind(u.expires_at);
    }
    let rows = match query.bind(now).fetch_all(pool).await.map_err(map_err) {
        Ok(rows) => rows,
        Err(err) => return batch.iter().map(|_| Err(err.clone())).collect(),
    };
    let mut fresh: Vec<bool> = vec![false; batch.len()];
    for row in rows {
        let (Ok(client_id), Ok(jti)) = (row.try_get::<&str, _>(0), row.try_get::<&str, _>(1))
        else {
            continue;
        };
        if let Some(&i) = first.get(&(client_id, jti)) {
            fresh[i] = true;
        }
    }
    fresh.into_iter().map(Ok).collect()
}
