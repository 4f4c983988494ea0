//! Every client record held in memory, so the token path never waits on the database —
//! neither for a known client nor for an unknown id (which would otherwise cost a query, a
//! timing difference and a lever to exhaust the pool) — while a change made anywhere (this
//! server, another one, the admin CLI) still takes effect at once.
//!
//! How: every write to clients increases a generation counter in the same transaction. Each
//! server polls the counter every [`POLL_INTERVAL`]; when it moves, the server reloads all
//! clients into a new snapshot, swaps it in, and acknowledges the generation in the database.
//! The admin commands wait for every registered server's acknowledgement before they return
//! ([`wait_for_servers`]), so when `latchkey client disable` returns, no server accepts that
//! client any more.
//!
//! Fail closed: if the poll has not succeeded for [`STALE_AFTER_SECONDS`] (by the injected
//! clock), the snapshot is bypassed and every request reads the database (and gets 503 if it is
//! down).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{ClientRecord, Store, StoreError};

/// How often a server checks the generation counter.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After this many seconds without a successful poll the snapshot is not trusted (with
/// whole-second clock readings, that is between 1 and 2 s).
pub const STALE_AFTER_SECONDS: i64 = 2;
/// A server re-registers this often even when nothing changed, in case an admin command that
/// timed out waiting for it has forgotten it.
const HEARTBEAT_POLLS: u32 = 20;

/// All clients as of one generation.
struct Snapshot {
    generation: i64,
    clients: HashMap<String, Arc<ClientRecord>>,
}

/// The in-memory client snapshot of one server.
pub struct ClientCache {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Clock reading of the last successful poll.
    validated_at: AtomicI64,
    clock: Arc<dyn Clock>,
    server_id: String,
}

impl ClientCache {
    /// Loads every client and registers the server `server_id`; call once before serving.
    pub async fn load(
        store: &dyn Store,
        clock: Arc<dyn Clock>,
        server_id: String,
    ) -> Result<Self, StoreError> {
        let cache = ClientCache {
            snapshot: RwLock::new(Arc::new(Snapshot {
                generation: -1,
                clients: HashMap::new(),
            })),
            validated_at: AtomicI64::new(i64::MIN),
            clock,
            server_id,
        };
        cache.poll(store, true).await?;
        Ok(cache)
    }

    fn fresh(&self) -> bool {
        let validated = self.validated_at.load(Ordering::Acquire);
        self.clock.now().saturating_sub(validated) < STALE_AFTER_SECONDS
    }

    fn mark_validated(&self) {
        self.validated_at.store(self.clock.now(), Ordering::Release);
    }

    fn current(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .snapshot
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The client `client_id`: from the snapshot while it is fresh, else from the store.
    pub async fn get(
        &self,
        store: &dyn Store,
        client_id: &str,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        if self.fresh() {
            return Ok(self.current().clients.get(client_id).cloned());
        }
        Ok(store.find_client(client_id).await?.map(Arc::new))
    }

    /// One poll: on a new generation load a new snapshot, then acknowledge it. The clients are
    /// read after the generation, so the snapshot is at least as new as the number it carries.
    async fn poll(&self, store: &dyn Store, heartbeat: bool) -> Result<(), StoreError> {
        let generation = store.client_generation().await?;
        let changed = generation != self.current().generation;
        if changed {
            let clients = store
                .list_clients()
                .await?
                .into_iter()
                .map(|c| (c.client_id.clone(), Arc::new(c)))
                .collect();
            let snapshot = Arc::new(Snapshot {
                generation,
                clients,
            });
            *self
                .snapshot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        }
        if changed || heartbeat {
            store
                .acknowledge_generation(&self.server_id, generation)
                .await?;
        }
        self.mark_validated();
        Ok(())
    }

    /// Polls until `stop` resolves, then unregisters this server.
    pub async fn run_poller(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        stop: impl Future<Output = ()>,
    ) {
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls: u32 = 0;
        let mut failing = false;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = interval.tick() => {}
            }
            polls = polls.wrapping_add(1);
            match self
                .poll(store.as_ref(), polls.is_multiple_of(HEARTBEAT_POLLS))
                .await
            {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("client cache: database reachable again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "client cache: cannot poll the database; reading clients from the database until it answers");
                }
                Err(_) => {}
            }
        }
        if let Err(err) = store.forget_server(&self.server_id).await {
            tracing::warn!(error = %err, "could not unregister this server");
        }
    }
}

/// After a change to clients: waits until every registered server has acknowledged the
/// current generation, at most `timeout`. Servers that did not answer in time are forgotten
/// (a live one registers again within a second) and returned, so the caller can warn.
pub async fn wait_for_servers(
    store: &dyn Store,
    timeout: Duration,
) -> Result<Vec<String>, StoreError> {
    let generation = store.client_generation().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let behind = store.servers_behind(generation).await?;
        if behind.is_empty() {
            return Ok(behind);
        }
        if tokio::time::Instant::now() >= deadline {
            // Ask once more, so a server that confirmed at the last moment is not forgotten.
            let behind = store.servers_behind(generation).await?;
            for server in &behind {
                store.forget_server(server).await?;
            }
            return Ok(behind);
        }
        tokio::time::sleep(POLL_INTERVAL / 5).await;
    }
}
