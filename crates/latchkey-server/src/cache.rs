//! What every server holds in memory so that the token and introspection paths never wait on
//! the database — all client records, the signing and verification keys, and the deny list of
//! revoked token ids — and how it follows changes made anywhere (this server, another one, the
//! admin CLI).
//!
//! How: every change to clients, secrets or keys increases a generation counter in the same
//! transaction, and every revocation appends to the deny list, whose position only grows. Each
//! server polls both every [`POLL_INTERVAL`] in one query. When the generation moves, it
//! reloads clients and keys, swaps them in and acknowledges the generation in the database;
//! admin commands wait for every registered server's acknowledgement ([`wait_for_servers`]),
//! so when `latchkey client disable` returns, no server accepts that client any more. New deny
//! list entries are fetched incrementally; the server that revokes a token adds it at once.
//!
//! Fail closed: if the poll has not succeeded for [`STALE_AFTER_SECONDS`] (by the injected
//! clock), clients and the deny list are read from the database for each request (and give
//! 503 if it is down).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use latchkey_jose::VerifyingKey;

use crate::clock::Clock;
use crate::keys::{KeyError, KeyRing, KeySource};
use crate::protocol::client_keys::registered_keys;
use crate::protocol::mutual_tls::registered_certificates;
use crate::store::{ClientRecord, Store, StoreError};

/// How often a server checks the generation counter and the deny list.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After this many seconds without a successful poll the memory copy is not trusted (with
/// whole-second clock readings, that is between 1 and 2 s).
pub const STALE_AFTER_SECONDS: i64 = 2;
/// A server re-registers this often even when nothing changed, in case an admin command that
/// timed out waiting for it has forgotten it.
const HEARTBEAT_POLLS: u32 = 20;

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
}

impl KnownClient {
    /// Parses the record's keys.
    pub fn new(record: ClientRecord) -> Self {
        let assertion_keys = registered_keys(record.public_keys.as_deref());
        let certificates = registered_certificates(record.public_keys.as_deref());
        KnownClient {
            record,
            assertion_keys,
            certificates,
        }
    }
}

/// All clients as of one generation.
struct ClientSnapshot {
    generation: i64,
    clients: HashMap<String, Arc<KnownClient>>,
}

/// Revoked token ids with their expiry, as of one deny-list position.
#[derive(Default)]
struct DenyList {
    seq: i64,
    entries: HashMap<String, i64>,
}

/// The in-memory state of one server.
pub struct Cache {
    clients: RwLock<Arc<ClientSnapshot>>,
    keys: RwLock<Arc<KeyRing>>,
    deny: RwLock<DenyList>,
    /// Secret id → the last time it authenticated, not yet written to the database.
    secret_uses: Mutex<HashMap<String, i64>>,
    /// Clock reading of the last successful poll.
    validated_at: AtomicI64,
    key_source: KeySource,
    clock: Arc<dyn Clock>,
    server_id: String,
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
    /// Loads every client, the keys and the deny list, and registers the server `server_id`;
    /// call once before serving, after the keys exist (see [`KeySource::load_or_create`]).
    pub async fn load(
        store: &dyn Store,
        keys: KeyRing,
        key_source: KeySource,
        clock: Arc<dyn Clock>,
        server_id: String,
    ) -> Result<Self, CacheError> {
        let cache = Cache {
            clients: RwLock::new(Arc::new(ClientSnapshot {
                generation: -1,
                clients: HashMap::new(),
            })),
            keys: RwLock::new(Arc::new(keys)),
            deny: RwLock::new(DenyList::default()),
            secret_uses: Mutex::new(HashMap::new()),
            validated_at: AtomicI64::new(i64::MIN),
            key_source,
            clock,
            server_id,
        };
        cache.poll(store, true).await?;
        Ok(cache)
    }

    fn fresh(&self) -> bool {
        let validated = self.validated_at.load(Ordering::Acquire);
        self.clock.unix_seconds().saturating_sub(validated) < STALE_AFTER_SECONDS
    }

    fn snapshot(&self) -> Arc<ClientSnapshot> {
        Arc::clone(&self.clients.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The keys in use now.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The client `client_id`: from memory while it is fresh, else from the store.
    pub async fn client(
        &self,
        store: &dyn Store,
        client_id: &str,
    ) -> Result<Option<Arc<KnownClient>>, StoreError> {
        if self.fresh() {
            return Ok(self.snapshot().clients.get(client_id).cloned());
        }
        Ok(store
            .find_client(client_id)
            .await?
            .map(|record| Arc::new(KnownClient::new(record))))
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

    /// One poll: on a new generation load new clients and keys, then acknowledge it; fetch new
    /// deny-list entries. Clients are read after the generation, so the snapshot is at least
    /// as new as the number it carries.
    async fn poll(&self, store: &dyn Store, heartbeat: bool) -> Result<(), CacheError> {
        let point = store.sync_point().await?;
        let changed = point.generation != self.snapshot().generation;
        if changed {
            let clients = store
                .list_clients()
                .await?
                .into_iter()
                .map(|c| (c.client_id.clone(), Arc::new(KnownClient::new(c))))
                .collect();
            let previous = self.key_ring();
            // A key the source cannot trust (in the clear while a KEK is set, sealed with
            // another KEK) is left out of the new ring and logged, without failing the
            // reload; a refused current key stops signing (see `KeySource::load`).
            let keys = self.key_source.load(store, Some(&previous)).await?;
            *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            *self.clients.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ClientSnapshot {
                generation: point.generation,
                clients,
            });
        }
        let known_seq = self.deny.read().unwrap_or_else(|p| p.into_inner()).seq;
        if point.revocation_seq > known_seq {
            let new = store.revocations_since(known_seq).await?;
            let mut deny = self.deny.write().unwrap_or_else(|p| p.into_inner());
            for revocation in new {
                deny.seq = deny.seq.max(revocation.seq);
                deny.entries.insert(revocation.jti, revocation.expires_at);
            }
        }
        if changed || heartbeat {
            store
                .acknowledge_generation(&self.server_id, point.generation)
                .await?;
        }
        self.validated_at
            .store(self.clock.unix_seconds(), Ordering::Release);
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
