//! Usage accounting: per client and per minute, the tokens it was issued, the requests of its
//! that were refused (by OAuth error code), its introspections and its revocations.
//!
//! Counting costs the request path two atomic operations and no lock: each client record in
//! the cache carries its [`ClientUsage`] counters. The first count after a flush also queues
//! the counters (one short lock per client per flush interval, not per request). A background
//! task ([`Usage::run`]) takes the queued counters every [`FLUSH_INTERVAL`] and adds them to
//! the database's per-minute rows with one statement per batch, so servers sharing a database
//! add up to cluster-wide totals. Counts that could not be written are put back and written
//! with the next flush: nothing is lost while the database is down, and nothing is counted
//! twice. A count is filed under the minute of the flush that writes it, so it may land up to
//! one flush interval later than the request.
//!
//! The same flush finds clients that do not cache their tokens. Each token is also counted
//! under the address it was asked from (a short lock on that client's own list; at most
//! [`MAX_SOURCES`] addresses per client per hour, IPv6 by /64, the rest as `other`), and the
//! flush adds those counts to
//! per-hour rows with the allowance of [`tokens_allowed_per_hour`]; a row whose cluster-wide
//! total passes its allowance flags the client. The flush that passes it logs one warning
//! (at most one per client per hour from each server) and counts it in the metrics. Each flush
//! also hands the clients' token counts to the metrics' top-clients series.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_proto::ErrorCode;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::{TokenSource, UsageCount, UsageKind, tokens_allowed_per_hour};
use crate::store::{Store, StoreError};

/// How often counts are written to the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Queued counters beyond this wake the flush early, so the queue stays small under a burst of
/// many distinct clients.
const EARLY_FLUSH_AT: usize = 100_000;

/// The most source addresses counted apart per client in one clock hour; tokens from further
/// addresses count under one `other` row.
pub const MAX_SOURCES: usize = 256;

/// The source name of the tokens from addresses beyond [`MAX_SOURCES`].
pub const OTHER_SOURCES: &str = "other";

/// The most clients warned about per hour by one server (the warnings are bounded too).
const MAX_WARNED: usize = 10_000;

/// The default of `--not-caching-threshold`: tokens per token lifetime per address.
pub const DEFAULT_NOT_CACHING_THRESHOLD: u32 = 10;

/// The refusals counted, by OAuth error code; the order is the counters' order.
const DENIALS: [ErrorCode; 8] = [
    ErrorCode::InvalidClient,
    ErrorCode::InvalidRequest,
    ErrorCode::InvalidScope,
    ErrorCode::InvalidTarget,
    ErrorCode::UnauthorizedClient,
    ErrorCode::UnsupportedGrantType,
    ErrorCode::InvalidDpopProof,
    ErrorCode::UseDpopNonce,
];

/// What a client's request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An access token was issued to it.
    Token,
    /// It introspected a token.
    Introspection,
    /// It revoked a token.
    Revocation,
    /// Its request was refused with this error (server trouble is not counted).
    Denied(ErrorCode),
}

/// One client's counters since the last flush.
#[derive(Debug)]
pub struct ClientUsage {
    client_id: String,
    /// The client's name when it was loaded (for the metrics' top-clients series).
    client_name: String,
    tokens: AtomicU64,
    introspections: AtomicU64,
    revocations: AtomicU64,
    denied: [AtomicU64; DENIALS.len()],
    /// In the flush queue.
    queued: AtomicBool,
    /// Tokens per source address since the last flush, and the addresses seen this hour.
    sources: Mutex<Sources>,
}

/// A client's per-address counts. At most [`MAX_SOURCES`] addresses are counted apart in one
/// clock hour; tokens from further addresses count under one `other` row, which is never
/// flagged. So a client writes at most `MAX_SOURCES + 1` rows per hour from each server, however
/// many addresses it uses.
#[derive(Debug, Default)]
struct Sources {
    /// Since the last flush; `None` is `other`.
    tallies: Vec<SourceTally>,
    /// The hour `seen` is for (the last flush's; 0 before the first).
    hour: i64,
    /// The addresses counted apart this hour.
    seen: Vec<IpAddr>,
}

/// Tokens issued to one client at one address (or `other`) since the last flush.
#[derive(Debug, Clone, Copy)]
struct SourceTally {
    address: Option<IpAddr>,
    tokens: u32,
    lifetime: u64,
}

/// How a source is written: an IPv4 address, an IPv6 /64 (one host usually holds a whole
/// /64), or `other`.
fn source_name(address: Option<IpAddr>) -> String {
    match address {
        Some(IpAddr::V6(v6)) => format!("{v6}/64"),
        Some(v4) => v4.to_string(),
        None => OTHER_SOURCES.to_owned(),
    }
}

/// The source of a written name (see [`source_name`]).
fn source_of(name: &str) -> Option<Option<IpAddr>> {
    if name == OTHER_SOURCES {
        return Some(None);
    }
    name.strip_suffix("/64")
        .unwrap_or(name)
        .parse()
        .ok()
        .map(Some)
}

/// An address as counted: IPv4 as is, IPv6 by its /64.
fn counted_address(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) >> 64 << 64).into()),
        v4 => v4,
    }
}

impl Sources {
    fn add(&mut self, address: Option<IpAddr>, tokens: u32, lifetime: u64) {
        if let Some(tally) = self.tallies.iter_mut().find(|t| t.address == address) {
            tally.tokens = tally.tokens.saturating_add(tokens);
            tally.lifetime = lifetime;
        } else {
            self.tallies.push(SourceTally {
                address,
                tokens,
                lifetime,
            });
        }
    }
}

impl ClientUsage {
    /// New counters for `client_id` (named `client_name`), all zero.
    pub fn new(client_id: &str, client_name: &str) -> Self {
        ClientUsage {
            client_id: client_id.to_owned(),
            client_name: client_name.to_owned(),
            tokens: AtomicU64::new(0),
            introspections: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
            denied: std::array::from_fn(|_| AtomicU64::new(0)),
            queued: AtomicBool::new(false),
            sources: Mutex::new(Sources::default()),
        }
    }

    /// Counts a token of `lifetime` seconds issued at `address`: under the address if it is
    /// one of the first [`MAX_SOURCES`] this hour, else under `other`.
    fn tally(&self, address: IpAddr, lifetime: u64) {
        let address = counted_address(address);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let apart = sources.seen.contains(&address) || {
            let room = sources.seen.len() < MAX_SOURCES;
            if room {
                sources.seen.push(address);
            }
            room
        };
        sources.add(apart.then_some(address), 1, lifetime);
    }

    /// Takes the per-address counts (leaving none) as rows for `hour`; a new hour starts a new
    /// list of addresses counted apart.
    fn take_sources(&self, hour: i64, threshold: u32, into: &mut Vec<TokenSource>) {
        let taken = {
            let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
            let taken = std::mem::take(&mut sources.tallies);
            // A new hour: its list starts with the addresses filed under it now (counted at
            // the end of the last hour, before this flush), so no hour gets more than
            // MAX_SOURCES rows. Before the first flush the addresses seen count as this hour's.
            if sources.hour != hour {
                if sources.hour != 0 {
                    sources.seen = taken.iter().filter_map(|tally| tally.address).collect();
                }
                sources.hour = hour;
            }
            taken
        };
        into.extend(taken.into_iter().map(|tally| TokenSource {
            client_id: self.client_id.clone(),
            source: source_name(tally.address),
            hour,
            tokens: i64::from(tally.tokens),
            lifetime: tally.lifetime,
            // `other` is many addresses together: never judged as one.
            allowed: match tally.address {
                Some(_) => tokens_allowed_per_hour(threshold, tally.lifetime),
                None => i64::MAX,
            },
        }));
    }

    /// Adds per-address counts back (a flush that could not be written).
    fn restore_sources(&self, rows: &[TokenSource]) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            if let Some(address) = source_of(&row.source) {
                let tokens = u32::try_from(row.tokens).unwrap_or(u32::MAX);
                sources.add(address, tokens, row.lifetime);
            }
        }
    }

    fn counter(&self, event: Event) -> Option<&AtomicU64> {
        match event {
            Event::Token => Some(&self.tokens),
            Event::Introspection => Some(&self.introspections),
            Event::Revocation => Some(&self.revocations),
            Event::Denied(code) => DENIALS
                .iter()
                .position(|c| *c == code)
                .map(|i| &self.denied[i]),
        }
    }

    /// Takes the counts (leaving zeros) as rows for `minute`.
    fn take(&self, minute: i64, into: &mut Vec<UsageCount>) {
        let mut push = |kind: UsageKind, counter: &AtomicU64| {
            let count = counter.swap(0, Ordering::SeqCst);
            if count > 0 {
                into.push(UsageCount {
                    client_id: self.client_id.clone(),
                    minute,
                    kind,
                    count: i64::try_from(count).unwrap_or(i64::MAX),
                });
            }
        };
        push(UsageKind::Tokens, &self.tokens);
        push(UsageKind::Introspections, &self.introspections);
        push(UsageKind::Revocations, &self.revocations);
        for (code, counter) in DENIALS.iter().zip(&self.denied) {
            push(UsageKind::Denied(*code), counter);
        }
    }

    /// Adds counts back (a flush that could not be written).
    fn restore(&self, count: &UsageCount) {
        let counter = match count.kind {
            UsageKind::Tokens => &self.tokens,
            UsageKind::Introspections => &self.introspections,
            UsageKind::Revocations => &self.revocations,
            UsageKind::Denied(code) => match DENIALS.iter().position(|c| *c == code) {
                Some(i) => &self.denied[i],
                None => return,
            },
        };
        counter.fetch_add(u64::try_from(count.count).unwrap_or(0), Ordering::SeqCst);
    }
}

/// The server's usage accounting: the queue of counters to flush.
#[derive(Debug)]
pub struct Usage {
    enabled: bool,
    /// Tokens per token lifetime per address beyond which a client is not caching; 0 turns the
    /// per-address counting off.
    not_caching_threshold: u32,
    queue: Mutex<Vec<Arc<ClientUsage>>>,
    wake: Notify,
    metrics: Arc<Metrics>,
    /// The hour and the clients warned about in it as not caching.
    warned: Mutex<(i64, HashSet<String>)>,
    flush_interval: Duration,
}

/// What one flush wrote.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Usage rows written.
    pub rows: usize,
    /// The addresses whose tokens passed their allowance with this flush: each client and
    /// address is in one flush's list per hour, cluster-wide.
    pub newly_not_caching: Vec<TokenSource>,
}

impl Usage {
    /// Accounting that counts (`enabled`) or does nothing at all; flags clients that get more
    /// than `not_caching_threshold` tokens per token lifetime at one address (0: never), and
    /// feeds `metrics`.
    pub fn new(enabled: bool, not_caching_threshold: u32, metrics: Arc<Metrics>) -> Self {
        Usage {
            enabled,
            not_caching_threshold,
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            metrics,
            warned: Mutex::new((0, HashSet::new())),
            flush_interval: FLUSH_INTERVAL,
        }
    }

    /// The same, flushing every `interval` instead of every [`FLUSH_INTERVAL`].
    #[must_use]
    pub fn flushing_every(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Counts a token of `lifetime` seconds issued to the client whose counters `usage` are,
    /// asked for from `source`.
    pub fn count_token(&self, usage: &Arc<ClientUsage>, source: Option<IpAddr>, lifetime: u64) {
        if !self.enabled {
            return;
        }
        // Before the count that queues the counters: a flush that takes this tally also finds
        // them queued, or the count below queues them again.
        if self.not_caching_threshold > 0
            && let Some(address) = source
        {
            usage.tally(address.to_canonical(), lifetime);
        }
        self.count(usage, Event::Token);
    }

    /// Counts `event` for the client whose counters `usage` are.
    pub fn count(&self, usage: &Arc<ClientUsage>, event: Event) {
        if !self.enabled {
            return;
        }
        let Some(counter) = usage.counter(event) else {
            return;
        };
        counter.fetch_add(1, Ordering::SeqCst);
        // The count comes first: a flush that dequeued these counters and then takes them
        // either sees it, or leaves `queued` false so that this queues them again.
        if !usage.queued.swap(true, Ordering::SeqCst) {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.push(Arc::clone(usage));
            if queue.len() >= EARLY_FLUSH_AT {
                self.wake.notify_one();
            }
        }
    }

    /// Writes every count taken so far to the database, filed under the minute (and the
    /// hour) of `now`, and hands each client's tokens to the metrics. On a database error the
    /// counts are put back.
    pub async fn flush(&self, store: &dyn Store, now: i64) -> Result<Flushed, StoreError> {
        let queued = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        if queued.is_empty() {
            // Idle clients' scores decay too.
            self.metrics.client_tokens(std::iter::empty());
            return Ok(Flushed::default());
        }
        let minute = now - now.rem_euclid(60);
        let hour = now - now.rem_euclid(3600);
        let mut rows = Vec::with_capacity(queued.len());
        let mut sources = Vec::new();
        // Each client's rows and source rows, in `rows` and `sources`.
        let mut taken = Vec::with_capacity(queued.len());
        for usage in &queued {
            // Unqueued before the counts are taken: a count made after this queues again.
            usage.queued.store(false, Ordering::SeqCst);
            let (first_row, first_source) = (rows.len(), sources.len());
            usage.take(minute, &mut rows);
            usage.take_sources(hour, self.not_caching_threshold, &mut sources);
            taken.push((first_row..rows.len(), first_source..sources.len()));
        }
        match store.record_usage(&rows, &sources).await {
            Ok(totals) => {
                self.metrics
                    .client_tokens(queued.iter().zip(&taken).filter_map(|(usage, (own, _))| {
                        let tokens = rows[own.clone()]
                            .iter()
                            .find(|r| r.kind == UsageKind::Tokens)?
                            .count;
                        Some((
                            usage.client_id.as_str(),
                            usage.client_name.as_str(),
                            u64::try_from(tokens).unwrap_or(0),
                        ))
                    }));
                let newly_not_caching = newly_flagged(&sources, totals);
                self.warn(hour, &newly_not_caching);
                Ok(Flushed {
                    rows: rows.len(),
                    newly_not_caching,
                })
            }
            Err(err) => {
                for (usage, (own, own_sources)) in queued.iter().zip(taken) {
                    for row in &rows[own] {
                        usage.restore(row);
                    }
                    usage.restore_sources(&sources[own_sources]);
                    if !usage.queued.swap(true, Ordering::SeqCst) {
                        self.queue
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Arc::clone(usage));
                    }
                }
                Err(err)
            }
        }
    }

    /// One warning per client per hour (from this server) for clients newly found not caching,
    /// and their count in the metrics.
    fn warn(&self, hour: i64, flagged: &[TokenSource]) {
        if flagged.is_empty() {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.0 != hour {
            *warned = (hour, HashSet::new());
        }
        for row in flagged {
            self.metrics.not_caching();
            if warned.1.len() >= MAX_WARNED || !warned.1.insert(row.client_id.clone()) {
                continue;
            }
            tracing::warn!(
                client_id = %row.client_id,
                source = %row.source,
                tokens = row.tokens,
                allowed = row.allowed,
                "client {} is not caching its access tokens: {} tokens to {} within the hour, \
                 more than the {} allowed; reuse each token until shortly before it expires, \
                 with a token cache such as latchkey-client or `latchkey token --cache-file`",
                row.client_id,
                row.tokens,
                row.source,
                row.allowed,
            );
        }
    }

    /// Flushes every flush interval (or sooner when the queue is long) until `stop`
    /// resolves, then once more.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        stop: impl Future<Output = ()>,
    ) {
        if !self.enabled {
            stop.await;
            return;
        }
        let mut ticks = tokio::time::interval(self.flush_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            let stopping = tokio::select! {
                () = &mut stop => true,
                _ = ticks.tick() => false,
                () = self.wake.notified() => false,
            };
            if let Err(err) = self.flush(store.as_ref(), clock.unix_seconds()).await {
                tracing::warn!(error = %err, "usage counts not written yet; kept for the next flush");
            }
            if stopping {
                break;
            }
        }
    }
}

/// The rows of `totals` that passed their allowance with the counts in `added`.
fn newly_flagged(added: &[TokenSource], totals: Vec<TokenSource>) -> Vec<TokenSource> {
    let mut by_key: HashMap<(&str, &str), i64> = HashMap::with_capacity(added.len());
    for row in added {
        *by_key.entry((&row.client_id, &row.source)).or_default() += row.tokens;
    }
    totals
        .into_iter()
        .filter(|total| {
            let added = by_key
                .get(&(total.client_id.as_str(), total.source.as_str()))
                .copied()
                .unwrap_or(0);
            total.not_caching() && total.tokens - added <= total.allowed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_once_and_requeue_after_a_flush() {
        let usage = Usage::new(true, 10, Arc::new(Metrics::new(false, 0)));
        let client = Arc::new(ClientUsage::new("c1", "one"));
        for _ in 0..3 {
            usage.count(&client, Event::Token);
        }
        usage.count(&client, Event::Denied(ErrorCode::InvalidScope));
        usage.count(&client, Event::Denied(ErrorCode::ServerError));
        assert_eq!(usage.queue.lock().unwrap().len(), 1, "queued once");
        let queued = std::mem::take(&mut *usage.queue.lock().unwrap());
        let mut rows = Vec::new();
        for q in &queued {
            q.queued.store(false, Ordering::SeqCst);
            q.take(120, &mut rows);
        }
        let kinds: Vec<(UsageKind, i64)> = rows.iter().map(|r| (r.kind, r.count)).collect();
        assert_eq!(
            kinds,
            [
                (UsageKind::Tokens, 3),
                (UsageKind::Denied(ErrorCode::InvalidScope), 1)
            ]
        );
        usage.count(&client, Event::Introspection);
        assert_eq!(usage.queue.lock().unwrap().len(), 1, "queued again");
    }

    #[test]
    fn addresses_beyond_the_hours_limit_count_as_other_and_ipv6_by_64() {
        let client = ClientUsage::new("c1", "one");
        for i in 0..(MAX_SOURCES as u32 + 50) {
            client.tally(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), 900);
        }
        client.tally("2001:db8::1".parse().unwrap(), 900);
        client.tally("2001:db8::2".parse().unwrap(), 900);
        let mut rows = Vec::new();
        client.take_sources(3600, 10, &mut rows);
        assert_eq!(rows.len(), MAX_SOURCES + 1, "the first 256, then other");
        let other = rows.iter().find(|r| r.source == OTHER_SOURCES).unwrap();
        assert_eq!((other.tokens, other.allowed), (52, i64::MAX));
        assert!(!other.not_caching());
        // Seen addresses stay apart within the hour; a new hour starts again.
        client.tally("10.0.0.5".parse().unwrap(), 900);
        client.tally("2001:db8::3".parse().unwrap(), 900);
        let mut rows = Vec::new();
        client.take_sources(3600, 10, &mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(names, ["10.0.0.5", "other"]);
        // The first flush of the next hour starts a new list with what it files under the new
        // hour (counted against the old list): 10.0.0.9 was among the first 256, 10.0.1.40
        // was not (it went to `other`).
        client.tally("10.0.0.9".parse().unwrap(), 900);
        client.tally("10.0.1.40".parse().unwrap(), 900);
        client.take_sources(7200, 10, &mut Vec::new());
        let seen = client.sources.lock().unwrap().seen.clone();
        assert_eq!(seen, ["10.0.0.9".parse::<IpAddr>().unwrap()]);
        client.tally("2001:db8::3".parse().unwrap(), 900);
        let mut rows = Vec::new();
        client.take_sources(7200, 10, &mut rows);
        assert_eq!(rows[0].source, "2001:db8::/64");
        assert_eq!(
            source_of(&rows[0].source),
            Some(Some("2001:db8::".parse().unwrap()))
        );
    }

    #[test]
    fn many_threads_lose_no_count() {
        let usage = Arc::new(Usage::new(true, 10, Arc::new(Metrics::new(false, 0))));
        let client = Arc::new(ClientUsage::new("c1", "one"));
        let total = std::thread::scope(|scope| {
            for _ in 0..4 {
                let (usage, client) = (Arc::clone(&usage), Arc::clone(&client));
                scope.spawn(move || {
                    for _ in 0..10_000 {
                        usage.count(&client, Event::Token);
                    }
                });
            }
            let mut taken = 0;
            for _ in 0..200 {
                let queued = std::mem::take(&mut *usage.queue.lock().unwrap());
                let mut rows = Vec::new();
                for q in &queued {
                    q.queued.store(false, Ordering::SeqCst);
                    q.take(0, &mut rows);
                }
                taken += rows.iter().map(|r| r.count).sum::<i64>();
            }
            taken
        });
        let mut rows = Vec::new();
        client.take(0, &mut rows);
        let rest: i64 = rows.iter().map(|r| r.count).sum();
        assert_eq!(total + rest, 40_000);
    }
}
