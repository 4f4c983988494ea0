//! Group commit of assertion ids (`Store::use_assertion_jti`). One insert and commit per
//! `private_key_jwt` request makes every token request wait for its own commit (a WAL flush
//! in PostgreSQL, the single write lock in SQLite). Instead, concurrent uses are written by one
//! task per store, many per statement and one commit per batch; each caller still gets its own
//! answer only after its row is committed, and the database's primary key still decides
//! between servers.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::db::{Db, retrying, sql};
use super::dialect::Dialect;

/// One assertion id to record.
struct NewJti<'a> {
    client_id: &'a str,
    jti: &'a str,
    expires_at: i64,
}

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
    /// Starts the writer task for the database.
    pub(super) fn start(db: Db) -> Self {
        let (queue, incoming) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(db, incoming));
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

async fn write_batches(db: Db, mut incoming: mpsc::UnboundedReceiver<JtiUse>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = write(&db, &batch).await;
        for (use_, result) in batch.drain(..).zip(outcome) {
            // The caller may have gone (its request was cancelled); nothing to tell then.
            let _ = use_.reply.send(result);
        }
    }
}

/// Writes one batch and returns each use's answer, in order. A repeated (client, jti) within
/// the batch is a replay of the first.
async fn write(db: &Db, batch: &[JtiUse]) -> Vec<Result<bool, StoreError>> {
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
    let mut rows: Vec<NewJti<'_>> = Vec::with_capacity(batch.len());
    for (i, u) in batch.iter().enumerate() {
        first.entry((&u.client_id, &u.jti)).or_insert_with(|| {
            rows.push(NewJti {
                client_id: &u.client_id,
                jti: &u.jti,
                expires_at: u.expires_at,
            });
            i
        });
    }
    rows.sort_unstable_by(|a, b| (a.client_id, a.jti).cmp(&(b.client_id, b.jti)));
    // An earlier entry counts as expired only if it expired before every caller's `now`.
    let now = batch.iter().map(|u| u.now).min().unwrap_or(0);
    let inserted = match insert(db, &rows, now).await {
        Ok(inserted) => inserted,
        Err(err) => return batch.iter().map(|_| Err(err.clone())).collect(),
    };
    let mut fresh: Vec<bool> = vec![false; batch.len()];
    for (client_id, jti) in &inserted {
        if let Some(&i) = first.get(&(client_id.as_str(), jti.as_str())) {
            fresh[i] = true;
        }
    }
    fresh.into_iter().map(Ok).collect()
}

/// Writes one batch: one statement that inserts every row, or takes over a row whose
/// `expires_at` is at or before `now`, and returns the (client_id, jti) of exactly those rows.
/// The rows are distinct and sorted, so concurrent batches (of several PostgreSQL replicas) lock
/// in one order; a deadlock or serialization failure still reruns the statement.
async fn insert(
    db: &Db,
    rows: &[NewJti<'_>],
    now: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let statement = insert_sql(db.dialect(), rows.len());
    retrying(|| async {
        let mut query = sql(sqlx::AssertSqlSafe(statement.clone()));
        for row in rows {
            query = query.bind(row.client_id).bind(row.jti).bind(row.expires_at);
        }
        let returned = query.bind(now).fetch_all(&mut db.acquire().await?).await?;
        let mut inserted = Vec::with_capacity(returned.len());
        for row in &returned {
            inserted.push((row.get("client_id")?, row.get("jti")?));
        }
        Ok(inserted)
    })
    .await
}

/// `INSERT ... VALUES (..),(..) ON CONFLICT ... RETURNING` for `rows`, parameters bound in
/// order (see [`Dialect::value_rows`]); the last parameter is `now`.
fn insert_sql(dialect: Dialect, rows: usize) -> String {
    let now = match dialect {
        Dialect::Sqlite => "?".to_owned(),
        Dialect::Postgres => format!("${}", rows * 3 + 1),
    };
    // Inserted, or taking over an entry that has expired (not yet purged): first use.
    // RETURNING names exactly those rows.
    format!(
        "INSERT INTO assertion_jtis (client_id, jti, expires_at) VALUES {} \
         ON CONFLICT (client_id, jti) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE assertion_jtis.expires_at <= {now} RETURNING client_id, jti",
        dialect.value_rows(rows, 3)
    )
}
