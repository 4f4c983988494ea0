//! Housekeeping every server does on a timer: purge expired opaque tokens and deny-list
//! entries (so storage does not grow without bound under steady issuance), audit events and
//! usage counts past their retention, write when secrets
//! were last used, remove retired keys once no token they signed can still be valid, and
//! rotate keys when automatic rotation is on. Every step is idempotent and atomic in the
//! database, so any number of servers may run it at once.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Cache, CacheError};
use crate::clock::Clock;
use crate::keys::{KeySource, RETIRED_KEY_PUBLISHED_FOR};
use crate::model::audit::action;
use crate::model::{Actor, AuditEntry};
use crate::store::{Purged, RotationOutcome, Store};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JanitorReport {
    /// Expired rows deleted.
    pub purged: Purged,
    /// Keys removed from the JWK Set.
    pub removed_keys: Vec<String>,
    /// The new current key, if the pass rotated.
    pub rotated_to: Option<String>,
}

/// The housekeeping of one server.
#[derive(Clone)]
pub struct Janitor {
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    clock: Arc<dyn Clock>,
    key_source: KeySource,
    /// Rotate when the current key has signed this long (seconds).
    key_rotation: Option<i64>,
    /// Delete audit events older than this (seconds).
    audit_retention: i64,
    /// Delete usage counts older than this (seconds).
    usage_retention: i64,
}

impl Janitor {
    /// A janitor for one server.
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<Cache>,
        clock: Arc<dyn Clock>,
        key_source: KeySource,
        key_rotation: Option<i64>,
        audit_retention: i64,
        usage_retention: i64,
    ) -> Self {
        Janitor {
            store,
            cache,
            clock,
            key_source,
            key_rotation,
            audit_retention,
            usage_retention,
        }
    }

    /// One pass over every task.
    pub async fn run_once(&self) -> Result<JanitorReport, CacheError> {
        let now = self.clock.unix_seconds();
        let store = self.store.as_ref();
        let uses = self.cache.take_secret_uses();
        if let Err(err) = store.record_secret_use(&uses).await {
            self.cache.restore_secret_uses(uses);
            return Err(CacheError::Store(err));
        }
        let purged = store
            .purge_expired(
                now,
                now.saturating_sub(self.audit_retention),
                now.saturating_sub(self.usage_retention),
            )
            .await?;
        let actor = Actor::Server(self.cache.server_id().to_owned());
        self.cache.forget_expired_revocations(now);
        let removed_keys = store
            .remove_retired_keys(
                &AuditEntry {
                    at: now,
                    actor: actor.clone(),
                    action: action::KEYS_REMOVE,
                    target: None,
                    changes: serde_json::json!({}),
                },
                now - RETIRED_KEY_PUBLISHED_FOR,
                now,
            )
            .await?;
        let mut rotated_to = None;
        if let Some(period) = self.key_rotation {
            let alg = self.key_source.alg;
            match self
                .key_source
                .rotate(store, &actor, alg, now, Some(period))
                .await?
            {
                RotationOutcome::Rotated {
                    retired, current, ..
                } => {
                    tracing::info!(%retired, %current, "rotated the signing key");
                    rotated_to = Some(current);
                }
                RotationOutcome::NextTooNew { .. } => {
                    tracing::warn!("automatic key rotation is due but the next key is too new");
                }
                RotationOutcome::NotDue | RotationOutcome::NoKeys => {}
            }
        }
        if rotated_to.is_some() || !removed_keys.is_empty() {
            // This server serves the new JWK Set and signs with the new key at once.
            self.cache.refresh(store).await?;
        }
        Ok(JanitorReport {
            purged,
            removed_keys,
            rotated_to,
        })
    }

    /// Runs a pass every `interval` until `stop` resolves.
    pub async fn run(self, interval: Duration, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => {}
            }
            match self.run_once().await {
                Ok(report) if report.purged != Purged::default() => {
                    tracing::debug!(
                        opaque_tokens = report.purged.opaque_tokens,
                        revocations = report.purged.revocations,
                        assertion_jtis = report.purged.assertion_jtis,
                        changes = report.purged.changes,
                        "janitor purged expired rows"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "janitor pass failed; will retry"),
            }
        }
        // Write the last secret uses before the server stops.
        let uses = self.cache.take_secret_uses();
        if let Err(err) = self.store.record_secret_use(&uses).await {
            tracing::warn!(error = %err, "could not write secret last-use times");
        }
    }
}
