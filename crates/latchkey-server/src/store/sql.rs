//! The one implementation of [`Store`], for SQLite and PostgreSQL alike: every statement is
//! written once, with `$N` parameters, and runs through `db.rs` on either driver. Where the two
//! databases need different SQL (how a transaction begins, the locks PostgreSQL takes where
//! SQLite holds its write lock, deny-list positions) the code calls `dialect.rs`; the columns
//! of each record are in `rows.rs`, the schema migrations in `migrations.rs`.
//!
//! Every transaction runs inside [`retrying`]: PostgreSQL may abort one as a serialization
//! failure or a deadlock victim, and running it again from the start is safe. SQLite never does.

use std::collections::BTreeMap;

use async_trait::async_trait;
use latchkey_proto::SigningAlg;

use super::db::{Db, Query, Tx, TxError, retrying, sql};
use super::dialect;
use super::jti_batch::JtiWriter;
use super::migrations;
use super::rows::{
    self, client_select, clients_from_rows, feed_entry_from_row, key_from_row, key_select,
    opaque_from_row, registration_select, registration_token_select, revocation_from_row,
    secret_info_from_row,
};
use super::{
    AuditQuery, Change, FEED_RETAINED, FeedEntry, KeyState, Purged, RotationOutcome, RotationPlan,
    SecretAdded, Store, StoreError, StoredKey, SyncPoint, UsageQuery,
};
use crate::model::{
    AuditEntry, AuditEvent, ClientRecord, ClientUpdate, OpaqueTokenRecord, Registration,
    RegistrationToken, Revocation, SecretInfo, SecretRecord, TokenSource, UsageCount,
};
use crate::secret::SecretHash;

/// A database shared by the servers and the admin CLI: one SQLite file, or one PostgreSQL
/// database.
#[derive(Debug, Clone)]
pub(super) struct SqlStore {
    db: Db,
    /// Writes assertion ids in batches (group commit).
    jtis: JtiWriter,
}

impl SqlStore {
    /// Reads the shared counter `kind` of `client_id` (created at 0), lets `decide` say how
    /// many it grants, the new value and a wait, and writes a new value only if no other
    /// server changed it meanwhile (else reads again). Returns the grant and the wait.
    async fn take_shared(
        &self,
        client_id: &str,
        kind: &str,
        window_start: i64,
        decide: impl Fn(i64) -> (i64, i64, i64) + Send + Sync,
    ) -> Result<(i64, i64), StoreError> {
        for _ in 0..16 {
            let row = sql("SELECT used FROM quota_windows
                 WHERE client_id = $1 AND kind = $2 AND window_start = $3")
            .bind(client_id)
            .bind(kind)
            .bind(window_start)
            .fetch_optional(&mut self.db.acquire().await?)
            .await?;
            let Some(row) = row else {
                // The first use: the counter starts at 0 (another server may create it too).
                sql(
                    "INSERT INTO quota_windows (client_id, kind, window_start, used)
                     VALUES ($1, $2, $3, 0)
                     ON CONFLICT (client_id, kind, window_start) DO NOTHING",
                )
                .bind(client_id)
                .bind(kind)
                .bind(window_start)
                .execute(&mut self.db.acquire().await?)
                .await?;
                continue;
            };
            let old: i64 = row.get("used")?;
            let (granted, new, wait) = decide(old);
            if new == old {
                return Ok((granted, wait));
            }
            let changed = sql("UPDATE quota_windows SET used = $4
                 WHERE client_id = $1 AND kind = $2 AND window_start = $3 AND used = $5")
            .bind(client_id)
            .bind(kind)
            .bind(window_start)
            .bind(new)
            .bind(old)
            .execute(&mut self.db.acquire().await?)
            .await?;
            if changed == 1 {
                return Ok((granted, wait));
            }
        }
        Err(StoreError::Unavailable(format!(
            "the {kind} counter of client {client_id} kept changing"
        )))
    }

    /// Starts the store on an opened pool, migrating the database first.
    pub(super) async fn start(db: Db) -> Result<Self, StoreError> {
        let jtis = JtiWriter::start(db.clone());
        let store = SqlStore { db, jtis };
        retrying(|| migrations::migrate(&store.db)).await?;
        Ok(store)
    }

    /// The clients that `query`, an extension of `client_select!`, selects.
    async fn clients(&self, query: Query<'_>) -> Result<Vec<ClientRecord>, StoreError> {
        clients_from_rows(&query.fetch_all(&mut self.db.acquire().await?).await?)
    }
}

/// Inserts clients' rows and their secrets, a few hundred rows per statement.
async fn insert_clients(tx: &mut Tx, clients: &[ClientRecord]) -> Result<(), TxError> {
    let dialect = tx.dialect();
    for chunk in clients.chunks(rows::CLIENTS_PER_INSERT) {
        rows::insert_clients(dialect, chunk).execute(tx).await?;
    }
    let secrets: Vec<(&str, &SecretRecord)> = clients
        .iter()
        .flat_map(|c| c.secrets.iter().map(|s| (c.client_id.as_str(), s)))
        .collect();
    for chunk in secrets.chunks(rows::SECRETS_PER_INSERT) {
        rows::insert_secrets(dialect, chunk).execute(tx).await?;
    }
    Ok(())
}

/// Part of every transaction that changes clients, secrets or keys: moves the generation on by
/// one and writes the change feed's row for it (migrations/sqlite/0008_change_feed.sql), and
/// appends the change's audit entry (0009_audit.sql), with `outcome` (what the change turned
/// out to do, known only here) merged into its changes. On PostgreSQL the generation's row
/// stays locked until the transaction ends, so generations commit in order and a server that
/// has read generation g can read every change up to g.
async fn record_change(
    tx: &mut Tx,
    change: &Change,
    audit: &AuditEntry,
    outcome: Option<serde_json::Value>,
) -> Result<(), TxError> {
    let generation: i64 =
        sql("UPDATE generation SET generation = generation + 1 WHERE id = 1 RETURNING generation")
            .fetch_one(tx)
            .await?
            .get("generation")?;
    let (kind, client_id) = change.columns();
    sql("INSERT INTO changes (generation, kind, client_id) VALUES ($1, $2, $3)")
        .bind(generation)
        .bind(kind)
        .bind(client_id)
        .execute(tx)
        .await?;
    rows::insert_audit(audit, outcome).execute(tx).await?;
    Ok(())
}

async fn key_in_state(
    tx: &mut Tx,
    alg: SigningAlg,
    state: KeyState,
) -> Result<Option<StoredKey>, TxError> {
    let row = sql(concat!(key_select!(), " WHERE alg = $1 AND state = $2"))
        .bind(alg.as_str())
        .bind(state.as_str())
        .fetch_optional(tx)
        .await?;
    Ok(row.as_ref().map(key_from_row).transpose()?)
}

#[async_trait]
impl Store for SqlStore {
    async fn ready(&self) -> Result<(), StoreError> {
        migrations::check(&self.db).await
    }

    async fn create_client(
        &self,
        audit: &AuditEntry,
        client: &ClientRecord,
    ) -> Result<(), StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            insert_clients(&mut tx, std::slice::from_ref(client)).await?;
            record_change(
                &mut tx,
                &Change::Client(client.client_id.clone()),
                audit,
                None,
            )
            .await?;
            tx.commit().await
        })
        .await
    }

    async fn create_clients(
        &self,
        audit: &AuditEntry,
        clients: &[ClientRecord],
    ) -> Result<(), StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            dialect::bulk_insert_cache(&mut tx, true).await?;
            insert_clients(&mut tx, clients).await?;
            dialect::bulk_insert_cache(&mut tx, false).await?;
            record_change(&mut tx, &Change::NewClients, audit, None).await?;
            tx.commit().await
        })
        .await
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let query = sql(concat!(
            client_select!(),
            " WHERE c.client_id = $1 ORDER BY s.created_at, s.secret_id"
        ));
        Ok(self.clients(query.bind(client_id)).await?.pop())
    }

    async fn clients_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ClientRecord>, StoreError> {
        let query = sql(concat!(
            client_select!(),
            " WHERE c.client_id IN (SELECT client_id FROM clients WHERE client_id > $1
                ORDER BY client_id LIMIT $2)
              ORDER BY c.client_id, s.created_at, s.secret_id"
        ));
        self.clients(query.bind(after).bind(i64::from(limit))).await
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let query = sql(concat!(
            client_select!(),
            " ORDER BY c.created_at, c.client_id, s.created_at, s.secret_id"
        ));
        self.clients(query).await
    }

    async fn update_client(
        &self,
        audit: &AuditEntry,
        client_id: &str,
        update: &ClientUpdate,
        now: i64,
    ) -> Result<Option<ClientRecord>, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            if rows::update_client(client_id, update, now)
                .execute(&mut tx)
                .await?
                == 0
            {
                // No such client, another version than expected, or a credential of another
                // method (which would leave a row that cannot be read back).
                let row = sql("SELECT version FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&mut tx)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let version: i64 = row.get("version")?;
                if update.expected_version.is_some_and(|v| v != version) {
                    return Err(TxError::Fail(StoreError::Precondition(format!(
                        "client {client_id} is at version {version}"
                    ))));
                }
                return Err(TxError::Fail(StoreError::Conflict(format!(
                    "client {client_id} authenticates with another method"
                ))));
            }
            if update.revoke_tokens {
                sql("DELETE FROM opaque_tokens WHERE client_id = $1")
                    .bind(client_id)
                    .execute(&mut tx)
                    .await?;
            }
            record_change(&mut tx, &Change::Client(client_id.to_owned()), audit, None).await?;
            // The client as this change left it, read in its transaction: a change committed
            // by someone else afterwards is not what this one answers with.
            let rows = sql(concat!(
                client_select!(),
                " WHERE c.client_id = $1 ORDER BY s.created_at, s.secret_id"
            ))
            .bind(client_id)
            .fetch_all(&mut tx)
            .await?;
            let client = clients_from_rows(&rows)?.pop();
            tx.commit().await?;
            Ok(client)
        })
        .await
    }

    async fn delete_client(
        &self,
        audit: &AuditEntry,
        client_id: &str,
        expected_version: Option<i64>,
    ) -> Result<bool, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            let deleted = sql("DELETE FROM clients WHERE client_id = $1
                 AND (CAST($2 AS BIGINT) IS NULL OR version = $2)")
            .bind(client_id)
            .bind(expected_version)
            .execute(&mut tx)
            .await?;
            if deleted == 0 {
                let exists = sql("SELECT 1 FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&mut tx)
                    .await?
                    .is_some();
                if exists {
                    return Err(TxError::Fail(StoreError::Precondition(format!(
                        "client {client_id} is no longer at version {}",
                        expected_version.unwrap_or_default()
                    ))));
                }
                return Ok(false);
            }
            record_change(&mut tx, &Change::Client(client_id.to_owned()), audit, None).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn add_secret(
        &self,
        audit: &AuditEntry,
        client_id: &str,
        secret: &SecretRecord,
        expire_others_at: Option<i64>,
        max_live: usize,
        now: i64,
    ) -> Result<SecretAdded, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            // Count-then-insert: concurrent additions to one client take turns, so together
            // they never exceed `max_live`.
            if !dialect::lock_client(&mut tx, client_id).await? {
                return Ok(SecretAdded::NoSuchClient);
            }
            let live: i64 = sql("SELECT COUNT(*) AS live FROM client_secrets
                 WHERE client_id = $1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > $2)")
            .bind(client_id)
            .bind(now)
            .fetch_one(&mut tx)
            .await?
            .get("live")?;
            if usize::try_from(live).unwrap_or(usize::MAX) >= max_live {
                return Ok(SecretAdded::TooMany);
            }
            if let Some(at) = expire_others_at {
                sql("UPDATE client_secrets SET expires_at = $2
                     WHERE client_id = $1 AND revoked_at IS NULL
                       AND (expires_at IS NULL OR expires_at > $2)")
                .bind(client_id)
                .bind(at)
                .execute(&mut tx)
                .await?;
            }
            rows::insert_secrets(tx.dialect(), &[(client_id, secret)])
                .execute(&mut tx)
                .await?;
            record_change(&mut tx, &Change::Client(client_id.to_owned()), audit, None).await?;
            tx.commit().await?;
            Ok(SecretAdded::Added)
        })
        .await
    }

    async fn sync_point(&self) -> Result<SyncPoint, StoreError> {
        let row = sql("SELECT generation,
                (SELECT COALESCE(MAX(seq), 0) FROM revoked_tokens) AS revocation_seq
             FROM generation WHERE id = 1")
        .fetch_one(&mut self.db.acquire().await?)
        .await?;
        Ok(SyncPoint {
            generation: row.get("generation")?,
            revocation_seq: row.get("revocation_seq")?,
        })
    }

    async fn changes_since(
        &self,
        generation: i64,
        limit: u32,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let rows = sql("SELECT generation, kind, client_id FROM changes
             WHERE generation > $1 ORDER BY generation LIMIT $2")
        .bind(generation)
        .bind(i64::from(limit))
        .fetch_all(&mut self.db.acquire().await?)
        .await?;
        rows.iter().map(feed_entry_from_row).collect()
    }

    async fn acknowledge_generation(
        &self,
        server_id: &str,
        generation: i64,
    ) -> Result<(), StoreError> {
        retrying(|| async move {
            sql(
                "INSERT INTO server_acks (server_id, generation) VALUES ($1, $2)
                 ON CONFLICT (server_id) DO UPDATE SET generation = excluded.generation",
            )
            .bind(server_id)
            .bind(generation)
            .execute(&mut self.db.acquire().await?)
            .await?;
            Ok(())
        })
        .await
    }

    async fn servers_behind(&self, generation: i64) -> Result<Vec<String>, StoreError> {
        let rows =
            sql("SELECT server_id FROM server_acks WHERE generation < $1 ORDER BY server_id")
                .bind(generation)
                .fetch_all(&mut self.db.acquire().await?)
                .await?;
        rows.iter().map(|row| row.get("server_id")).collect()
    }

    async fn forget_server(&self, server_id: &str) -> Result<(), StoreError> {
        retrying(|| async move {
            sql("DELETE FROM server_acks WHERE server_id = $1")
                .bind(server_id)
                .execute(&mut self.db.acquire().await?)
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_secrets(&self, client_id: &str) -> Result<Option<Vec<SecretInfo>>, StoreError> {
        let mut conn = self.db.acquire().await?;
        let exists = sql("SELECT 1 FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let rows = rows::select_secret_infos(client_id)
            .fetch_all(&mut conn)
            .await?;
        rows.iter()
            .map(secret_info_from_row)
            .collect::<Result<Vec<_>, StoreError>>()
            .map(Some)
    }

    async fn revoke_secret(
        &self,
        audit: &AuditEntry,
        client_id: &str,
        secret_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            let revoked = sql("UPDATE client_secrets SET revoked_at = $3
                 WHERE client_id = $1 AND secret_id = $2 AND revoked_at IS NULL")
            .bind(client_id)
            .bind(secret_id)
            .bind(now)
            .execute(&mut tx)
            .await?;
            if revoked == 0 {
                return Ok(false);
            }
            record_change(&mut tx, &Change::Client(client_id.to_owned()), audit, None).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn record_secret_use(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // Every server writes its batch in the same order (by secret id), so two batches never
        // wait for each other's row locks in a cycle.
        let mut sorted: Vec<&(String, i64)> = uses.iter().collect();
        sorted.sort();
        let sorted = &sorted;
        // Not a client change: the generation does not move, so no server reloads for this.
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            for (secret_id, at) in sorted.iter().copied() {
                // Never moves a time back: the greater of the two, in SQL both databases speak.
                sql("UPDATE client_secrets SET last_used_at =
                        CASE WHEN COALESCE(last_used_at, 0) < $2 THEN $2
                        ELSE COALESCE(last_used_at, 0) END
                     WHERE secret_id = $1")
                .bind(secret_id)
                .bind(*at)
                .execute(&mut tx)
                .await?;
            }
            tx.commit().await
        })
        .await
    }

    async fn insert_opaque_token(&self, token: &OpaqueTokenRecord) -> Result<(), StoreError> {
        retrying(|| async move {
            rows::insert_opaque(token)?
                .execute(&mut self.db.acquire().await?)
                .await?;
            Ok(())
        })
        .await
    }

    async fn find_opaque_token(
        &self,
        token_hash: &SecretHash,
    ) -> Result<Option<OpaqueTokenRecord>, StoreError> {
        let row = rows::select_opaque(token_hash)
            .fetch_optional(&mut self.db.acquire().await?)
            .await?;
        row.as_ref().map(opaque_from_row).transpose()
    }

    async fn revoke_token(
        &self,
        jti: &str,
        client_id: &str,
        expires_at: i64,
        opaque_hash: Option<&SecretHash>,
    ) -> Result<(), StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            // The token record first, then the counter row: the same order as `update_client`,
            // which deletes a client's tokens before it moves the generation, so on PostgreSQL
            // the two never deadlock.
            if let Some(hash) = opaque_hash {
                sql("DELETE FROM opaque_tokens WHERE token_hash = $1")
                    .bind(&hash.0[..])
                    .execute(&mut tx)
                    .await?;
            }
            dialect::append_revocation(&mut tx, jti, client_id, expires_at).await?;
            tx.commit().await
        })
        .await
    }

    async fn revocations_since(&self, seq: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows =
            sql("SELECT seq, jti, expires_at FROM revoked_tokens WHERE seq > $1 ORDER BY seq")
                .bind(seq)
                .fetch_all(&mut self.db.acquire().await?)
                .await?;
        rows.iter().map(revocation_from_row).collect()
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(sql("SELECT 1 FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&mut self.db.acquire().await?)
            .await?
            .is_some())
    }

    async fn purge_expired(
        &self,
        now: i64,
        audit_before: i64,
        usage_before: i64,
    ) -> Result<Purged, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            let opaque_tokens = sql("DELETE FROM opaque_tokens WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut tx)
                .await?;
            let revocations = sql("DELETE FROM revoked_tokens WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut tx)
                .await?;
            let assertion_jtis = sql("DELETE FROM assertion_jtis WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut tx)
                .await?;
            let changes = sql("DELETE FROM changes
                 WHERE generation <= (SELECT generation FROM generation WHERE id = 1) - $1")
            .bind(FEED_RETAINED)
            .execute(&mut tx)
            .await?;
            let audit_events = sql("DELETE FROM audit_events WHERE at < $1")
                .bind(audit_before)
                .execute(&mut tx)
                .await?;
            let registration_tokens = sql("DELETE FROM registration_tokens WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut tx)
                .await?;
            let usage_counts = sql("DELETE FROM usage_counts WHERE minute < $1")
                .bind(usage_before)
                .execute(&mut tx)
                .await?;
            // Quota windows past the usage retention that have ended (rate buckets are one row
            // per client and stay).
            sql("DELETE FROM quota_windows WHERE kind = 'quota' AND window_start < $1")
                // Only windows that have ended (the longest period is a day).
                .bind(usage_before.min(now.saturating_sub(86_400)))
                .execute(&mut tx)
                .await?;
            let token_sources = sql("DELETE FROM token_sources WHERE hour < $1")
                .bind(usage_before.max(now.saturating_sub(super::SOURCES_RETAINED)))
                .execute(&mut tx)
                .await?;
            tx.commit().await?;
            Ok(Purged {
                opaque_tokens,
                revocations,
                assertion_jtis,
                changes,
                audit_events,
                registration_tokens,
                usage_counts,
                token_sources,
            })
        })
        .await
    }

    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sql(
            "SELECT seq, at, actor_kind, actor_id, action, target, changes FROM audit_events
             WHERE seq > $1 AND at >= $2 AND (CAST($3 AS TEXT) IS NULL OR target = $3)
             ORDER BY seq LIMIT $4",
        )
        .bind(query.after_seq)
        .bind(query.since)
        .bind(query.target.as_deref())
        .bind(i64::from(query.limit))
        .fetch_all(&mut self.db.acquire().await?)
        .await?;
        rows.iter().map(rows::audit_event_from_row).collect()
    }

    async fn record_usage(
        &self,
        counts: &[UsageCount],
        sources: &[TokenSource],
    ) -> Result<Vec<TokenSource>, StoreError> {
        // One row per key in a statement: PostgreSQL refuses to update a row twice in one.
        let mut merged: BTreeMap<(&str, i64, String), i64> = BTreeMap::new();
        for count in counts {
            *merged
                .entry((count.client_id.as_str(), count.minute, count.kind.name()))
                .or_default() += count.count;
        }
        let rows: Vec<(&str, i64, String, i64)> = merged
            .into_iter()
            .map(|((client_id, minute, kind), count)| (client_id, minute, kind, count))
            .collect();
        let mut merged: BTreeMap<(&str, i64, &str), (i64, i64, i64)> = BTreeMap::new();
        for source in sources {
            let entry = merged
                .entry((&source.client_id, source.hour, &source.source))
                .or_default();
            entry.0 += source.tokens;
            entry.1 = i64::try_from(source.lifetime).unwrap_or(i64::MAX);
            entry.2 = source.allowed;
        }
        let sources: Vec<rows::SourceRow<'_>> = merged
            .into_iter()
            .map(|((client_id, hour, source), (tokens, lifetime, allowed))| {
                (client_id, hour, source, tokens, lifetime, allowed)
            })
            .collect();
        if rows.is_empty() && sources.is_empty() {
            return Ok(Vec::new());
        }
        let (rows, sources) = (&rows, &sources);
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            for chunk in rows.chunks(rows::USAGE_PER_INSERT) {
                rows::add_usage(tx.dialect(), chunk)
                    .execute(&mut tx)
                    .await?;
            }
            let mut totals = Vec::with_capacity(sources.len());
            for chunk in sources.chunks(rows::USAGE_PER_INSERT) {
                for row in rows::add_token_sources(tx.dialect(), chunk)
                    .fetch_all(&mut tx)
                    .await?
                {
                    totals.push(rows::token_source_from_row(&row)?);
                }
            }
            tx.commit().await?;
            Ok(totals)
        })
        .await
    }

    async fn record_event(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            rows::insert_audit(audit, None).execute(&mut tx).await?;
            tx.commit().await
        })
        .await
    }

    async fn take_quota(
        &self,
        client_id: &str,
        window_start: i64,
        limit: i64,
        want: i64,
    ) -> Result<i64, StoreError> {
        self.take_shared(client_id, "quota", window_start, |used| {
            let granted = want.min(limit - used).max(0);
            (granted, used + granted, 0)
        })
        .await
        .map(|(granted, _)| granted)
    }

    async fn return_rate(&self, client_id: &str, us: i64) -> Result<(), StoreError> {
        sql("UPDATE quota_windows SET used = used - $2
             WHERE client_id = $1 AND kind = 'rate' AND window_start = 0")
        .bind(client_id)
        .bind(us)
        .execute(&mut self.db.acquire().await?)
        .await?;
        Ok(())
    }

    async fn take_rate(
        &self,
        client_id: &str,
        count: i64,
        period_us: i64,
        now_us: i64,
        want: i64,
    ) -> Result<(i64, i64), StoreError> {
        // GCRA: `used` is the bucket's theoretical arrival time (µs); one token moves it on by
        // `interval`, and it may run up to `count` intervals ahead of now.
        let count = count.max(1);
        let interval = (period_us / count).max(1);
        self.take_shared(client_id, "rate", 0, |arrival| {
            // Never further ahead than an empty bucket of this rate: a rate raised after a
            // slower one frees up by the new one.
            let base = arrival.max(now_us).min(now_us + count * interval);
            let room = (count * interval - (base - now_us)) / interval;
            let granted = want.min(room).max(0);
            let wait = if granted > 0 {
                0
            } else {
                ((base - now_us) - (count - 1) * interval).max(0)
            };
            (granted, base + granted * interval, wait)
        })
        .await
    }

    async fn not_caching(&self, query: &UsageQuery) -> Result<Vec<TokenSource>, StoreError> {
        let hour = query.since - query.since.rem_euclid(3600);
        let found = sql(
            "SELECT client_id, source, hour, tokens, lifetime, allowed FROM token_sources
             WHERE hour >= $1 AND tokens > allowed
               AND (CAST($2 AS TEXT) IS NULL OR client_id = $2)
             ORDER BY hour DESC, tokens DESC, client_id, source LIMIT $3",
        )
        .bind(hour)
        .bind(query.client.as_deref())
        .bind(i64::from(query.limit))
        .fetch_all(&mut self.db.acquire().await?)
        .await?;
        found.iter().map(rows::token_source_from_row).collect()
    }

    async fn usage_counts(&self, query: &UsageQuery) -> Result<Vec<UsageCount>, StoreError> {
        let limit = i64::from(query.limit);
        let found = match &query.client {
            Some(client_id) => {
                sql("SELECT client_id, minute - minute % $4 AS minute, kind,
                        CAST(SUM(count) AS BIGINT) AS count
                     FROM usage_counts
                     WHERE client_id = $1 AND minute >= $2 AND minute - minute % $4 IN (
                         SELECT DISTINCT minute - minute % $4 FROM usage_counts
                         WHERE client_id = $1 AND minute >= $2
                         ORDER BY 1 DESC LIMIT $3)
                     GROUP BY client_id, minute - minute % $4, kind
                     ORDER BY 2, kind")
                .bind(client_id.as_str())
                .bind(query.since)
                .bind(limit)
                .bind(query.step.max(60))
                .fetch_all(&mut self.db.acquire().await?)
                .await?
            }
            None => {
                sql("SELECT u.client_id, CAST($1 AS BIGINT) AS minute, u.kind,
                        CAST(SUM(u.count) AS BIGINT) AS count
                     FROM usage_counts u
                     WHERE u.minute >= $1 AND u.client_id IN (
                         SELECT client_id FROM usage_counts WHERE minute >= $1
                         GROUP BY client_id ORDER BY SUM(count) DESC, client_id LIMIT $2)
                     GROUP BY u.client_id, u.kind
                     ORDER BY u.client_id, u.kind")
                .bind(query.since)
                .bind(limit)
                .fetch_all(&mut self.db.acquire().await?)
                .await?
            }
        };
        found.iter().filter_map(rows::usage_from_row).collect()
    }

    async fn create_registration_token(
        &self,
        audit: &AuditEntry,
        token: &RegistrationToken,
    ) -> Result<(), StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            rows::insert_registration_token(token)
                .execute(&mut tx)
                .await?;
            rows::insert_audit(audit, None).execute(&mut tx).await?;
            tx.commit().await
        })
        .await
    }

    async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>, StoreError> {
        let rows = sql(concat!(
            registration_token_select!(),
            " ORDER BY created_at, token_id"
        ))
        .fetch_all(&mut self.db.acquire().await?)
        .await?;
        rows.iter().map(rows::registration_token_from_row).collect()
    }

    async fn revoke_registration_token(
        &self,
        audit: &AuditEntry,
        token_id: &str,
    ) -> Result<bool, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            let deleted = sql("DELETE FROM registration_tokens WHERE token_id = $1")
                .bind(token_id)
                .execute(&mut tx)
                .await?;
            if deleted == 0 {
                return Ok(false);
            }
            rows::insert_audit(audit, None).execute(&mut tx).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn find_registration_token(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<RegistrationToken>, StoreError> {
        let row = sql(concat!(
            registration_token_select!(),
            " WHERE token_hash = $1"
        ))
        .bind(&hash.0[..])
        .fetch_optional(&mut self.db.acquire().await?)
        .await?;
        row.as_ref()
            .map(rows::registration_token_from_row)
            .transpose()
    }

    async fn register_client(
        &self,
        audit: &AuditEntry,
        client: &ClientRecord,
        registration: &Registration,
        now: i64,
    ) -> Result<bool, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            // The use is counted by a conditional update, so concurrent registrations never
            // exceed the limit: the row lock (PostgreSQL) or the write lock (SQLite) orders them.
            let counted = sql("UPDATE registration_tokens SET uses = uses + 1
                 WHERE token_id = $1 AND expires_at > $2
                   AND (max_uses IS NULL OR uses < max_uses)")
            .bind(registration.token_id.as_str())
            .bind(now)
            .execute(&mut tx)
            .await?;
            if counted == 0 {
                return Ok(false);
            }
            insert_clients(&mut tx, std::slice::from_ref(client)).await?;
            rows::insert_registration(registration)
                .execute(&mut tx)
                .await?;
            record_change(
                &mut tx,
                &Change::Client(client.client_id.clone()),
                audit,
                None,
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn find_registration(
        &self,
        access_hash: &SecretHash,
    ) -> Result<Option<Registration>, StoreError> {
        let row = sql(concat!(
            registration_select!(),
            " WHERE access_token_hash = $1"
        ))
        .bind(&access_hash.0[..])
        .fetch_optional(&mut self.db.acquire().await?)
        .await?;
        row.as_ref().map(rows::registration_from_row).transpose()
    }

    async fn registrations(&self) -> Result<Vec<Registration>, StoreError> {
        let rows = sql(concat!(registration_select!(), " ORDER BY client_id"))
            .fetch_all(&mut self.db.acquire().await?)
            .await?;
        rows.iter().map(rows::registration_from_row).collect()
    }

    async fn import_registration(&self, registration: &Registration) -> Result<(), StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            rows::insert_registration(registration)
                .execute(&mut tx)
                .await?;
            tx.commit().await
        })
        .await
    }

    async fn use_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        // Batched with other uses (one statement each batch), so the primary key decides
        // between concurrent uses on any replicas.
        self.jtis.use_jti(client_id, jti, expires_at, now).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sql(concat!(key_select!(), " ORDER BY created_at, kid"))
            .fetch_all(&mut self.db.acquire().await?)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn import_key(&self, audit: &AuditEntry, key: &StoredKey) -> Result<(), StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            dialect::lock_signing_keys(&mut tx, key.alg).await?;
            rows::insert_key(key).execute(&mut tx).await?;
            record_change(&mut tx, &Change::Keys, audit, None).await?;
            tx.commit().await
        })
        .await
    }

    async fn insert_key_if_none(
        &self,
        audit: &AuditEntry,
        key: &StoredKey,
    ) -> Result<StoredKey, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            // Servers starting at once take turns; the first inserts, the others then read its
            // key and return that one (docs/CONFORMANCE.md, "Signing keys and rotation").
            dialect::lock_signing_keys(&mut tx, key.alg).await?;
            if let Some(existing) = key_in_state(&mut tx, key.alg, key.state).await? {
                return Ok(existing);
            }
            rows::insert_key(key).execute(&mut tx).await?;
            record_change(&mut tx, &Change::Keys, audit, None).await?;
            tx.commit().await?;
            Ok(key.clone())
        })
        .await
    }

    async fn rotate_keys(
        &self,
        audit: &AuditEntry,
        plan: &RotationPlan,
    ) -> Result<RotationOutcome, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            // Two rotations at once (the janitors of several servers, or one and the admin CLI)
            // take turns; the second sees the first's keys and finds the rotation not due.
            dialect::lock_signing_keys(&mut tx, plan.alg).await?;
            let current = key_in_state(&mut tx, plan.alg, KeyState::Current).await?;
            let next = key_in_state(&mut tx, plan.alg, KeyState::Next).await?;
            let (Some(current), Some(next)) = (current, next) else {
                return Ok(RotationOutcome::NoKeys);
            };
            if let Some(by) = plan.only_if_current_activated_by
                && current.activated_at.unwrap_or(current.created_at) > by
            {
                return Ok(RotationOutcome::NotDue);
            }
            if next.created_at > plan.next_created_by {
                return Ok(RotationOutcome::NextTooNew {
                    created_at: next.created_at,
                });
            }
            // Retire first: the unique indexes allow one current and one next key per algorithm.
            sql("UPDATE signing_keys SET state = 'retired', retired_at = $2 WHERE kid = $1")
                .bind(&current.kid)
                .bind(plan.now)
                .execute(&mut tx)
                .await?;
            sql("UPDATE signing_keys SET state = 'current', activated_at = $2 WHERE kid = $1")
                .bind(&next.kid)
                .bind(plan.now)
                .execute(&mut tx)
                .await?;
            rows::insert_key(&plan.new_next).execute(&mut tx).await?;
            let outcome = serde_json::json!({
                "retired": current.kid,
                "current": next.kid,
                "next": plan.new_next.kid,
            });
            record_change(&mut tx, &Change::Keys, audit, Some(outcome)).await?;
            tx.commit().await?;
            Ok(RotationOutcome::Rotated {
                retired: current.kid,
                current: next.kid,
                next: plan.new_next.kid.clone(),
            })
        })
        .await
    }

    async fn remove_retired_keys(
        &self,
        audit: &AuditEntry,
        retired_by: i64,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            // On PostgreSQL a concurrent removal waits for our row locks, then finds the keys
            // no longer retired and leaves them alone.
            let rows = sql("UPDATE signing_keys SET state = 'removed', removed_at = $2,
                    private_key = $3, encryption = NULL
                 WHERE state = 'retired' AND retired_at <= $1
                 RETURNING kid, created_at")
            .bind(retired_by)
            .bind(now)
            .bind(&b""[..])
            .fetch_all(&mut tx)
            .await?;
            let mut removed = rows
                .iter()
                .map(|row| Ok((row.get::<i64>("created_at")?, row.get::<String>("kid")?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            // RETURNING has no order; oldest first.
            removed.sort();
            if !removed.is_empty() {
                let kids: Vec<&str> = removed.iter().map(|(_, kid)| kid.as_str()).collect();
                let outcome = serde_json::json!({ "removed": kids });
                record_change(&mut tx, &Change::Keys, audit, Some(outcome)).await?;
            }
            tx.commit().await?;
            Ok(removed.into_iter().map(|(_, kid)| kid).collect())
        })
        .await
    }

    async fn reseal_key(
        &self,
        audit: &AuditEntry,
        kid: &str,
        private_key: &[u8],
        encryption: &str,
    ) -> Result<(), StoreError> {
        // A change servers reload for: one that refused the clear row takes the sealed one.
        retrying(|| async move {
            let mut tx = self.db.begin().await?;
            sql("UPDATE signing_keys SET private_key = $2, encryption = $3 WHERE kid = $1")
                .bind(kid)
                .bind(private_key)
                .bind(encryption)
                .execute(&mut tx)
                .await?;
            record_change(&mut tx, &Change::Keys, audit, None).await?;
            tx.commit().await
        })
        .await
    }
}
