//! Client records held in memory, so the token path does not wait on the database for a
//! client it has seen, while a change made anywhere (this server, another one, the admin CLI)
//! still takes effect at once.
//!
//! How: every write to clients increases a generation counter in the same transaction. Each
//! server polls the counter every [`POLL_INTERVAL`], drops its cache when the counter moves,
//! and acknowledges the generation in the database. The admin commands wait for every
//! registered server's acknowledgement before they return ([`wait_for_servers`]), so when
//! `latchkey client disable` returns, no server accepts that client any more.
//!
//! Fail closed: if the poll has not succeeded for [`STALE_AFTER`], the cache is bypassed and
//! every request reads the database (and gets 503 if it is down).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{ClientRecord, Store, StoreError};

/// How often a server checks the generation counter.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After this long without a successful poll the cache is not trusted.
pub const STALE_AFTER: Duration = Duration::from_secs(1);
/// A server re-registers this often even when nothing changed, in case an admin command that
/// timed out waiting for it has forgotten it.
const HEARTBEAT_POLLS: u32 = 20;
/// At most this many client records are held; past it the cache starts over.
const MAX_ENTRIES: usize = 100_000;

/// Cached client records, tagged with the generation they were read under.
pub struct ClientCache {
    entries: RwLock<HashMap<String, Arc<ClientRecord>>>,
    /// The generation the entries belong to; changed only under the `entries` write lock.
    generation: AtomicI64,
    /// Milliseconds since `epoch` of the last successful poll.
    validated_ms: AtomicU64,
    epoch: Instant,
    server_id: String,
}

impl ClientCache {
    /// An empty cache for the server `server_id`, valid for `generation`.
    pub fn new(server_id: String, generation: i64) -> Self {
        ClientCache {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicI64::new(generation),
            validated_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            server_id,
        }
    }

    fn fresh(&self) -> bool {
        let validated = Duration::from_millis(self.validated_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(validated) < STALE_AFTER
    }

    fn mark_validated(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.validated_ms.store(now, Ordering::Release);
    }

    /// The client `client_id`, from memory when fresh, else from the store.
    pub async fn get(
        &self,
        store: &dyn Store,
        client_id: &str,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        if self.fresh()
            && let Some(hit) = read(&self.entries).get(client_id)
        {
            return Ok(Some(Arc::clone(hit)));
        }
        // Tag the read with the generation before it: if the counter moves while we read, the
        // record may be stale and must not enter the cache.
        let tag = self.generation.load(Ordering::Acquire);
        let Some(record) = store.find_client(client_id).await? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        if self.fresh() {
            let mut entries = write(&self.entries);
            if self.generation.load(Ordering::Acquire) == tag {
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert(client_id.to_owned(), Arc::clone(&record));
            }
        }
        Ok(Some(record))
    }

    /// One poll: invalidate on a new generation, then acknowledge it.
    async fn poll(&self, store: &dyn Store, heartbeat: bool) -> Result<(), StoreError> {
        let generation = store.client_generation().await?;
        let changed = generation != self.generation.load(Ordering::Acquire);
        if changed {
            let mut entries = write(&self.entries);
            entries.clear();
            self.generation.store(generation, Ordering::Release);
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
            let heartbeat = polls.is_multiple_of(HEARTBEAT_POLLS);
            polls = polls.wrapping_add(1);
            match self.poll(store.as_ref(), heartbeat).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("client cache: database reachable again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "client cache: cannot poll the database; bypassing the cache");
                }
                Err(_) => {}
            }
        }
        if let Err(err) = store.forget_server(&self.server_id).await {
            tracing::warn!(error = %err, "could not unregister this server");
        }
    }

    /// Registers the server and marks the cache valid; call once before serving.
    pub async fn start(&self, store: &dyn Store) -> Result<(), StoreError> {
        self.poll(store, true).await
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            for server in &behind {
                store.forget_server(server).await?;
            }
            return Ok(behind);
        }
        tokio::time::sleep(POLL_INTERVAL / 5).await;
    }
}
