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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_proto::ErrorCode;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::model::{UsageCount, UsageKind};
use crate::store::{Store, StoreError};

/// How often counts are written to the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Queued counters beyond this wake the flush early, so the queue stays small under a burst of
/// many distinct clients.
const EARLY_FLUSH_AT: usize = 100_000;

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
    tokens: AtomicU64,
    introspections: AtomicU64,
    revocations: AtomicU64,
    denied: [AtomicU64; DENIALS.len()],
    /// In the flush queue.
    queued: AtomicBool,
}

impl ClientUsage {
    /// New counters for `client_id`, all zero.
    pub fn new(client_id: &str) -> Self {
        ClientUsage {
            client_id: client_id.to_owned(),
            tokens: AtomicU64::new(0),
            introspections: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
            denied: std::array::from_fn(|_| AtomicU64::new(0)),
            queued: AtomicBool::new(false),
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
    queue: Mutex<Vec<Arc<ClientUsage>>>,
    wake: Notify,
}

impl Usage {
    /// Accounting that counts (`enabled`) or does nothing at all.
    pub fn new(enabled: bool) -> Self {
        Usage {
            enabled,
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
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

    /// Writes every count taken so far to the database, filed under the minute of `now`.
    /// Returns how many rows were written. On a database error the counts are put back.
    pub async fn flush(&self, store: &dyn Store, now: i64) -> Result<usize, StoreError> {
        let queued = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        if queued.is_empty() {
            return Ok(0);
        }
        let minute = now - now.rem_euclid(60);
        let mut rows = Vec::with_capacity(queued.len());
        for usage in &queued {
            // Unqueued before the counts are taken: a count made after this queues again.
            usage.queued.store(false, Ordering::SeqCst);
            usage.take(minute, &mut rows);
        }
        match store.record_usage(&rows).await {
            Ok(()) => Ok(rows.len()),
            Err(err) => {
                let mut next = 0;
                for usage in &queued {
                    while next < rows.len() && rows[next].client_id == usage.client_id {
                        usage.restore(&rows[next]);
                        next += 1;
                    }
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

    /// Flushes every [`FLUSH_INTERVAL`] (or sooner when the queue is long) until `stop`
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
        let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_once_and_requeue_after_a_flush() {
        let usage = Usage::new(true);
        let client = Arc::new(ClientUsage::new("c1"));
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
    fn many_threads_lose_no_count() {
        let usage = Arc::new(Usage::new(true));
        let client = Arc::new(ClientUsage::new("c1"));
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
