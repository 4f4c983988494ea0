//! What every server holds in memory so that the token and introspection paths rarely wait on
//! the database — the client records in use, the signing and verification keys, and the deny
//! list of revoked token ids — and how it follows changes made anywhere (this server, another
//! one, the admin CLI).
//!
//! Clients are cached on demand: a bounded cache of the records requests asked for, filled by
//! one indexed read on a miss, and a bounded negative cache of ids that do not exist, so that
//! repeated unknown ids do not reach the database. Start-up reads no client at all.
//!
//! Changes arrive through the change feed (`store::FeedEntry`): every change to a client, its
//! secrets or the keys moves the generation on by one and names what changed. Each server polls
//! the generation and the deny list every [`POLL_INTERVAL`] in one query; when the generation
//! moved it reads the feed entries after the one it holds, drops just the clients they name
//! (or reloads the keys), and acknowledges the new generation in the database. One change costs
//! every server the same work with 10 clients or 10 million. Admin commands wait for every
//! registered server's acknowledgement ([`wait_for_servers`]), so when `latchkey client
//! disable` returns, no server accepts that client any more. A server that finds a gap in the
//! feed (it was cut off long enough for the entries to be purged) or too many entries at once
//! drops every cached client instead. New deny-list entries are fetched incrementally; the
//! server that revokes a token adds it at once.
//!
//! Fail closed: if the poll has not succeeded for [`STALE_AFTER_SECONDS`] (by the injected
//! clock), clients and the deny list are read from the database for each request (and give
//! 503 if it is down).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use latchkey_jose::VerifyingKey;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::keys::{KeyError, KeyRing, KeySource};
use crate::model::ClientRecord;
use crate::protocol::client_keys::registered_keys;
use crate::protocol::mutual_tls::registered_certificates;
use crate::store::{Change, Store, StoreError};
use crate::usage::ClientUsage;

/// How often a server checks the generation counter and the deny list.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After this many seconds without a successful poll the memory copy is not trusted (with
/// whole-second clock readings, that is between 1 and 2 s).
pub const STALE_AFTER_SECONDS: i64 = 2;
/// A server re-registers this often even when nothing changed, in case an admin command that
/// timed out waiting for it has forgotten it.
const HEARTBEAT_POLLS: u32 = 20;
/// The default number of client records a server keeps (`--client-cache-size`); the negative
/// cache of unknown ids holds as many ids.
pub const DEFAULT_CLIENT_CACHE_SIZE: usize = 100_000;
/// Feed entries read per poll. More pending than this (a bulk change, or a server that was
/// cut off) and the server drops every cached client instead of reading them all.
const FEED_BATCH: u32 = 1_000;
/// Client reads on a miss that may wait on the database at once; more wait for a turn, so a
/// flood of unknown ids cannot take every database connection.
const CONCURRENT_MISSES: usize = 32;

/// A client as the request path uses it: the stored record and, for `private_key_jwt`, its
/// registered public keys parsed once when the record is loaded (never per request).
#[derive(Debug)]
pub struct KnownClient {
    /// The stored record.
    pub record: ClientRecord,
    /// Verifiers for its registered keys; empty for clients that use a secret.
    pub assertion_keys: Vec<VerifyingKey>,
    /// For `self_signed_tls_client_auth`: the certificates (DER) it registered.
    pub certificates: Vec<Vec<u8>>,
    /// What it did since the last usage flush.
    pub usage: Arc<ClientUsage>,
    /// Its tokens that may be handed out again (`--reuse-tokens`); gone with the record.
    pub reusable: crate::reuse::ReusableTokens,
    /// What this server holds of its token rate and quota (`crate::quota`).
    pub leases: crate::quota::Leases,
}

impl KnownClient {
    /// Parses the record's keys.
    pub fn new(record: ClientRecord) -> Self {
        let jwks = record.credential.registered_jwks();
        let assertion_keys = registered_keys(jwks);
        let certificates = registered_certificates(jwks);
        KnownClient {
            usage: Arc::new(ClientUsage::new(&record.client_id, &record.name)),
            reusable: crate::reuse::ReusableTokens::default(),
            leases: crate::quota::Leases::default(),
            record,
            assertion_keys,
            certificates,
        }
    }
}

/// The client records in use and the ids known not to exist, both bounded, and the feed
/// generation they are current to.
struct ClientCache {
    known: quick_cache::sync::Cache<String, Arc<KnownClient>>,
    unknown: quick_cache::sync::Cache<String, ()>,
    /// The last feed entry applied; -1 before the first poll. Held while entries are applied
    /// and while a record read on a miss is put in, so that a record read before a change is
    /// never cached after the change was applied (see [`Cache::client`]).
    generation: Mutex<i64>,
    misses: Semaphore,
}

impl ClientCache {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ClientCache {
            known: quick_cache::sync::Cache::new(capacity),
            unknown: quick_cache::sync::Cache::new(capacity),
            generation: Mutex::new(-1),
            misses: Semaphore::new(CONCURRENT_MISSES),
        }
    }

    fn generation(&self) -> std::sync::MutexGuard<'_, i64> {
        self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drop_all(&self) {
        self.known.clear();
        self.unknown.clear();
    }
}

/// Revoked token ids with their expiry, as of one deny-list position.
#[derive(Default)]
struct DenyList {
    seq: i64,
    entries: HashMap<String, i64>,
}

/// The in-memory state of one server.
pub struct Cache {
    clients: ClientCache,
    keys: RwLock<Arc<KeyRing>>,
    deny: RwLock<DenyList>,
    /// Secret id → the last time it authenticated, not yet written to the database.
    secret_uses: Mutex<HashMap<String, i64>>,
    /// Clock reading of the last successful poll.
    validated_at: AtomicI64,
    /// A feed entry said the keys changed and they have not been reloaded since.
    keys_stale: AtomicBool,
    /// Held for a whole poll: the poller and the janitor's refresh never poll at once (two
    /// polls interleaved could see the generation go back, or acknowledge a key change the
    /// other has not reloaded yet).
    polling: tokio::sync::Mutex<()>,
    key_source: KeySource,
    clock: Arc<dyn Clock>,
    server_id: String,
    /// Client lookups answered from memory (a record or a known-unknown id).
    hits: AtomicU64,
    /// Client lookups that read the database.
    misses: AtomicU64,
}

/// What the cache has done, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Client lookups answered from memory.
    pub hits: u64,
    /// Client lookups that read the database.
    pub misses: u64,
    /// The change-feed generation the cache is current to.
    pub generation: i64,
    /// Seconds since the last successful poll of the change feed (its lag).
    pub seconds_since_poll: i64,
}

/// Why the cache could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keys could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl Cache {
    /// Loads the keys and the deny list and registers the server `server_id`; call once before
    /// serving, after the keys exist (see [`KeySource::load_or_create`]). No client is read:
    /// each is read when a request first names it, and at most `client_cache_size` are kept.
    pub async fn load(
        store: &dyn Store,
        keys: KeyRing,
        key_source: KeySource,
        clock: Arc<dyn Clock>,
        server_id: String,
        client_cache_size: usize,
    ) -> Result<Self, CacheError> {
        let cache = Cache {
            clients: ClientCache::new(client_cache_size),
            keys: RwLock::new(Arc::new(keys)),
            deny: RwLock::new(DenyList::default()),
            secret_uses: Mutex::new(HashMap::new()),
            validated_at: AtomicI64::new(i64::MIN),
            keys_stale: AtomicBool::new(false),
            polling: tokio::sync::Mutex::new(()),
            key_source,
            clock,
            server_id,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        cache.poll(store, true).await?;
        Ok(cache)
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        let validated = self.validated_at.load(Ordering::Acquire);
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            generation: *self.clients.generation(),
            seconds_since_poll: self.clock.unix_seconds().saturating_sub(validated).max(0),
        }
    }

    fn fresh(&self) -> bool {
        let validated = self.validated_at.load(Ordering::Acquire);
        self.clock.unix_seconds().saturating_sub(validated) < STALE_AFTER_SECONDS
    }

    /// The keys in use now.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The client `client_id`: from memory while it is fresh, else from the store.
    ///
    /// On a miss the record is read with one indexed query and kept (or the id is remembered as
    /// unknown) unless a feed entry was applied while it was being read: that entry may be
    /// about this client and older than the read, so the record is used for this request only.
    pub async fn client(
        &self,
        store: &dyn Store,
        client_id: &str,
    ) -> Result<Option<Arc<KnownClient>>, StoreError> {
        if !self.fresh() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(store
                .find_client(client_id)
                .await?
                .map(|record| Arc::new(KnownClient::new(record))));
        }
        if let Some(client) = self.clients.known.get(client_id) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(client));
        }
        if self.clients.unknown.get(client_id).is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let read_at = *self.clients.generation();
        let found = {
            let _turn = self
                .clients
                .misses
                .acquire()
                .await
                .map_err(|_| StoreError::Unavailable("server stopping".into()))?;
            store.find_client(client_id).await?
        };
        let client = found.map(|record| Arc::new(KnownClient::new(record)));
        let generation = self.clients.generation();
        if *generation == read_at {
            match &client {
                Some(client) => self
                    .clients
                    .known
                    .insert(client_id.to_owned(), Arc::clone(client)),
                None => self.clients.unknown.insert(client_id.to_owned(), ()),
            }
        }
        drop(generation);
        Ok(client)
    }

    /// How many client records and unknown ids this server holds now.
    pub fn cached_clients(&self) -> (usize, usize) {
        (self.clients.known.len(), self.clients.unknown.len())
    }

    /// Whether the token `jti` is on the deny list: from memory while it is fresh, else from
    /// the store.
    pub async fn is_revoked(&self, store: &dyn Store, jti: &str) -> Result<bool, StoreError> {
        if self.fresh() {
            let deny = self.deny.read().unwrap_or_else(|p| p.into_inner());
            return Ok(deny.entries.contains_key(jti));
        }
        store.is_revoked(jti).await
    }

    /// Adds a revocation this server has just stored, so it takes effect here at once rather
    /// than at the next poll.
    pub fn note_revoked(&self, jti: &str, expires_at: i64) {
        let mut deny = self.deny.write().unwrap_or_else(|p| p.into_inner());
        deny.entries.insert(jti.to_owned(), expires_at);
    }

    /// Notes that a secret authenticated now; written to the database by the janitor.
    pub fn note_secret_use(&self, secret_id: &str, now: i64) {
        let mut uses = self.secret_uses.lock().unwrap_or_else(|p| p.into_inner());
        match uses.get_mut(secret_id) {
            Some(at) => *at = (*at).max(now),
            None => {
                uses.insert(secret_id.to_owned(), now);
            }
        }
    }

    /// Takes the secret uses noted since the last call.
    pub fn take_secret_uses(&self) -> Vec<(String, i64)> {
        let mut uses = self.secret_uses.lock().unwrap_or_else(|p| p.into_inner());
        uses.drain().collect()
    }

    /// Puts back uses that could not be written, so they are tried again.
    pub fn restore_secret_uses(&self, failed: Vec<(String, i64)>) {
        for (secret_id, at) in failed {
            self.note_secret_use(&secret_id, at);
        }
    }

    /// Drops deny-list entries of tokens that have expired: an expired token is inactive
    /// whether revoked or not.
    pub fn forget_expired_revocations(&self, now: i64) {
        let mut deny = self.deny.write().unwrap_or_else(|p| p.into_inner());
        deny.entries.retain(|_, expires_at| *expires_at > now);
    }

    /// Follows the database now rather than at the next poll: for changes this server made
    /// itself (the janitor's key rotation and removal).
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), CacheError> {
        self.poll(store, false).await
    }

    /// One poll: follow the change feed to the current generation (dropping the clients it
    /// names, reloading the keys if they changed), then acknowledge it; fetch new deny-list
    /// entries.
    async fn poll(&self, store: &dyn Store, heartbeat: bool) -> Result<(), CacheError> {
        let _polling = self.polling.lock().await;
        let point = store.sync_point().await?;
        let held = *self.clients.generation();
        let changed = point.generation != held;
        if changed && self.follow_feed(store, held, point.generation).await? {
            self.keys_stale.store(true, Ordering::Release);
        }
        let reload_keys = self.keys_stale.load(Ordering::Acquire);
        if reload_keys {
            let previous = self.key_ring();
            // A key the source cannot trust (in the clear while a KEK is set, sealed with
            // another KEK) is left out of the new ring and logged, without failing the
            // reload; a refused current key stops signing (see `KeySource::load`). If the
            // reload fails, it is tried again at the next poll, and nothing is acknowledged
            // until it succeeds.
            let keys = self.key_source.load(store, Some(&previous)).await?;
            *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            self.keys_stale.store(false, Ordering::Release);
        }
        let mut known_seq = self.deny.read().unwrap_or_else(|p| p.into_inner()).seq;
        if point.revocation_seq < known_seq {
            // The deny list went back: a database restored from a backup. Its positions
            // will be handed out again, so read it all from the start.
            *self.deny.write().unwrap_or_else(|p| p.into_inner()) = DenyList::default();
            known_seq = 0;
        }
        if point.revocation_seq > known_seq {
            let new = store.revocations_since(known_seq).await?;
            let mut deny = self.deny.write().unwrap_or_else(|p| p.into_inner());
            for revocation in new {
                deny.seq = deny.seq.max(revocation.seq);
                deny.entries.insert(revocation.jti, revocation.expires_at);
            }
        }
        if changed || reload_keys || heartbeat {
            let generation = *self.clients.generation();
            store
                .acknowledge_generation(&self.server_id, generation)
                .await?;
        }
        self.validated_at
            .store(self.clock.unix_seconds(), Ordering::Release);
        Ok(())
    }

    /// Reads the feed after `held` and drops the cached clients it names, moving the cache's
    /// generation on in the same critical section (so a record read on a miss before these
    /// changes is not put in after them). Returns whether the keys changed.
    async fn follow_feed(
        &self,
        store: &dyn Store,
        held: i64,
        current: i64,
    ) -> Result<bool, StoreError> {
        // The first poll, or a database that went back in time (restored from a backup):
        // nothing cached can be trusted to match it. The keys are read again too: at start,
        // they were loaded before this generation was read.
        if held < 0 || current < held {
            let mut generation = self.clients.generation();
            self.clients.drop_all();
            *generation = current;
            return Ok(true);
        }
        let entries = store.changes_since(held, FEED_BATCH).await?;
        let contiguous = entries.first().is_some_and(|e| e.generation == held + 1);
        let mut generation = self.clients.generation();
        if !contiguous || entries.len() >= FEED_BATCH as usize {
            // A gap (purged entries) or a flood: drop everything rather than read it all.
            tracing::debug!(held, current, "cache: dropping every client record");
            self.clients.drop_all();
            *generation = current;
            return Ok(true);
        }
        let mut keys_changed = false;
        for entry in &entries {
            match &entry.change {
                Change::Client(client_id) => {
                    self.clients.known.remove(client_id.as_str());
                    self.clients.unknown.remove(client_id.as_str());
                }
                Change::Keys => keys_changed = true,
                Change::NewClients => self.clients.unknown.clear(),
            }
            *generation = entry.generation;
        }
        Ok(keys_changed)
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
            // A poll waiting on a slow database does not hold up the stop.
            let polled = tokio::select! {
                () = &mut stop => break,
                polled = self.poll(store.as_ref(), polls.is_multiple_of(HEARTBEAT_POLLS)) => polled,
            };
            match polled {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("cache: database reachable again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cache: cannot follow the database; reading clients and revocations from the database until it answers");
                }
                Err(_) => {}
            }
        }
        if let Err(err) = store.forget_server(&self.server_id).await {
            tracing::warn!(error = %err, "could not unregister this server");
        }
    }
}

/// After a change to clients or keys: waits until every registered server has acknowledged
/// the current generation, at most `timeout`. Servers that did not answer in time are
/// forgotten (a live one registers again within a second) and returned, so the caller can warn.
pub async fn wait_for_servers(
    store: &dyn Store,
    timeout: Duration,
) -> Result<Vec<String>, StoreError> {
    let generation = store.sync_point().await?.generation;
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

impl Cache {
    /// How this server makes and loads signing keys (its algorithm and KEK).
    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// The id this server acknowledges changes under (and acts under in the audit trail).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }
}
