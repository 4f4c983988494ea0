//! Request quotas at the gate: `latchkey gate --quota default=1000/hour --quota ID=100/min`
//! (or `--quota-file`), shared by several gates through Redis with `--quota-redis`.
//!
//! A quota is N requests per fixed window aligned to UTC (an hour starts on the hour, a day
//! at midnight UTC), counted per client. Every request the guard lets through counts before it
//! is forwarded; past a quota the gate answers 429 and the upstream is not called.
//!
//! Without Redis each gate counts alone, in memory, exactly. With Redis the count of a client
//! in a window is one Redis key, shared by every gate with the same `--audience` and
//! `--quota-redis-prefix`. A gate takes requests from it in leases, by the server's rule
//! ([`next_lease`]: 1 for quotas up to 20, growing for a busy client up to a twentieth of the
//! quota), through one Lua script that never grants past the quota, and hands them out from
//! memory. So while Redis answers a quota is never passed, and with G gates a client may get
//! up to (G − 1) twentieths of it fewer: leases other gates hold when the count runs out.
//!
//! When Redis fails or does not answer within `--quota-redis-timeout`, the gate says so once
//! in its log and in `latchkey_gate_quota_redis_up`, and goes on counting locally from the
//! last count Redis gave it, trying Redis again at most once a second. What it admitted
//! meanwhile is added to the Redis count when Redis answers again. While Redis is away each
//! gate enforces what was left alone, so G gates may admit up to G times that.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::HeaderValue;
use latchkey_server::model::Rate;
use latchkey_server::quota::next_lease;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Clients whose counts a gate keeps in memory at most. Past it the least used are dropped:
/// with Redis their leases are lost (the client may get fewer, never more); without it their
/// counts restart.
const MAX_CLIENTS: usize = 100_000;

/// How long after a failure the gate counts locally before trying Redis again.
const RETRY_REDIS_MS: i64 = 1_000;

/// Which clients get which quotas: `--quota` entries and the lines of `--quota-file`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QuotaTable {
    /// For every client without entries of its own.
    default: Arc<Limits>,
    /// A client's own quotas (none for `ID=off`).
    clients: HashMap<String, Arc<Limits>>,
}

/// One client's quotas, shortest period first, and their `RateLimit-Policy` value, made once
/// rather than for every request.
#[derive(Debug, Default, PartialEq)]
struct Limits {
    rates: Box<[Rate]>,
    policy: Option<HeaderValue>,
}

impl Limits {
    fn new(rates: Vec<Rate>) -> Limits {
        let policy = rates
            .iter()
            .map(|rate| {
                let period = seconds(*rate);
                format!("\"{}\";q={};w={period}", period_name(period), rate.count)
            })
            .collect::<Vec<_>>()
            .join(", ");
        Limits {
            rates: rates.into(),
            policy: HeaderValue::try_from(policy).ok(),
        }
    }

    fn policy(&self) -> HeaderValue {
        self.policy
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static(""))
    }
}

impl QuotaTable {
    /// The table of `entries`, each `WHO=N/PERIOD` or `WHO=off`, where WHO is `default` or a
    /// client id. A client may have one quota per period (`ID=100/min` and `ID=10000/day`).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<QuotaTable, String> {
        let mut table: HashMap<String, (Vec<Rate>, bool)> = HashMap::new();
        for entry in entries {
            let (who, spec) = entry
                .split_once('=')
                .map(|(who, spec)| (who.trim(), spec.trim()))
                .filter(|(who, _)| !who.is_empty())
                .ok_or_else(|| {
                    format!("{entry:?}: expected default=N/PERIOD or CLIENT_ID=N/PERIOD (or =off)")
                })?;
            let (rates, off) = table.entry(who.to_owned()).or_default();
            if spec == "off" {
                *off = true;
            } else {
                let rate = Rate::parse(spec).map_err(|why| format!("{entry:?}: {why}"))?;
                if rates.iter().any(|r| r.period == rate.period) {
                    return Err(format!(
                        "{entry:?}: {who} already has a quota for that period"
                    ));
                }
                rates.push(rate);
            }
            if *off && !rates.is_empty() {
                return Err(format!("{who}: both off and a quota"));
            }
        }
        let mut quotas = QuotaTable::default();
        for (who, (mut rates, _)) in table {
            rates.sort_by_key(|rate| rate.period);
            if who == "default" {
                quotas.default = Arc::new(Limits::new(rates));
            } else {
                quotas.clients.insert(who, Arc::new(Limits::new(rates)));
            }
        }
        Ok(quotas)
    }

    /// The entries of a quota file: one per line, blank lines and `#` comments skipped.
    pub fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the quota file {}", path.display()))?;
        Ok(text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Whether no client has a quota.
    pub fn is_empty(&self) -> bool {
        self.default.rates.is_empty() && self.clients.values().all(|l| l.rates.is_empty())
    }

    fn limits(&self, client_id: &str) -> &Arc<Limits> {
        self.clients.get(client_id).unwrap_or(&self.default)
    }
}

/// What a quota check decided, and the headers that say so (draft-ietf-httpapi-ratelimit-
/// headers): `RateLimit-Policy: "minute";q=100;w=60, "day";q=10000;w=86400` and
/// `RateLimit: "minute";r=42;t=17`, the quota with the fewest requests left (or the one
/// passed, `r=0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `None`: admitted. Else refused, and seconds until the quotas passed free up.
    pub retry_after: Option<u64>,
    /// The `RateLimit-Policy` value: every quota the client has.
    pub policy: HeaderValue,
    /// The `RateLimit` value.
    pub state: HeaderValue,
    /// For a refusal: which quota, in words.
    pub detail: String,
}

/// The gate's quota figures in `/metrics`; no-ops without `--metrics-listen`.
#[derive(Debug, Clone)]
pub struct QuotaMetrics {
    /// Requests refused over a quota.
    pub exceeded: metrics::Counter,
    /// Leases counted locally because Redis was unreachable.
    pub local_leases: metrics::Counter,
    /// Redis calls that failed or timed out.
    pub redis_errors: metrics::Counter,
    /// 1 while Redis answers, 0 while the gate counts locally.
    pub redis_up: metrics::Gauge,
}

impl Default for QuotaMetrics {
    fn default() -> Self {
        QuotaMetrics {
            exceeded: metrics::Counter::noop(),
            local_leases: metrics::Counter::noop(),
            redis_errors: metrics::Counter::noop(),
            redis_up: metrics::Gauge::noop(),
        }
    }
}

/// A gate's quotas and its counts.
pub struct Quotas {
    table: RwLock<Arc<QuotaTable>>,
    counts: quick_cache::sync::Cache<String, Arc<Counts>>,
    shared: Option<Arc<Shared>>,
    metrics: QuotaMetrics,
}

/// One client's windows. A request takes from the leases held under a short lock; fetching
/// leases is done by one request at a time, the others waiting for it.
#[derive(Debug, Default)]
struct Counts {
    held: Mutex<Vec<Window>>,
    fetching: tokio::sync::Mutex<()>,
}

/// A client's count in the current window of one quota.
#[derive(Debug, Clone, Default)]
struct Window {
    limit: i64,
    /// Window length (s).
    period: i64,
    /// Window start (unix s).
    start: i64,
    /// Requests leased and not yet admitted.
    left: i64,
    /// The count of all gates as of this gate's last lease (that lease included).
    seen: i64,
    /// The last lease's size and when it was taken (ms).
    lease: i64,
    leased_at_ms: i64,
    /// Nothing was granted: refused until the window ends, or until `retry_at_ms` when that
    /// was decided locally while Redis was away (then Redis decides again).
    spent: bool,
    retry_at_ms: i64,
    /// Leased locally while Redis was unreachable, not yet added to Redis's count.
    unshared: i64,
}

impl Window {
    fn end(&self) -> i64 {
        self.start + self.period
    }
}

impl Quotas {
    /// Quotas counted in memory, or through `shared` (Redis).
    pub fn new(table: QuotaTable, shared: Option<Arc<Shared>>, metrics: QuotaMetrics) -> Self {
        Quotas {
            table: RwLock::new(Arc::new(table)),
            counts: quick_cache::sync::Cache::new(MAX_CLIENTS),
            shared,
            metrics,
        }
    }

    /// Replaces the table (the quota file was read again); counts of unchanged quotas go on.
    pub fn replace(&self, table: QuotaTable) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// Counts one request of `client_id` at `now_ms`: `None` when the client has no quota.
    pub async fn check(&self, client_id: &str, now_ms: i64) -> Option<Verdict> {
        let limits = Arc::clone(
            self.table
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .limits(client_id),
        );
        if limits.rates.is_empty() {
            return None;
        }
        let counts = self
            .counts
            .get_or_insert_with(client_id, || Ok::<_, Infallible>(Arc::default()))
            .unwrap_or_else(|never| match never {});
        if let Some(verdict) = decide(&mut lock(&counts), &limits, now_ms) {
            return Some(self.counted(verdict));
        }
        let _fetching = counts.fetching.lock().await;
        // Another request may have fetched meanwhile. If not, no request admits anything until
        // this one writes back what it fetched: a window without a lease stops them all at the
        // `left == 0` check, and they wait for the lock above. (One may roll a window to a new
        // period meanwhile; this one rolls it too, so the write-back loses nothing.)
        let mut held = {
            let mut held = lock(&counts);
            if let Some(verdict) = decide(&mut held, &limits, now_ms) {
                return Some(self.counted(verdict));
            }
            held.clone()
        };
        for window in held.iter_mut().filter(|w| w.left == 0 && !w.spent) {
            self.lease(client_id, window, now_ms).await;
        }
        // Every window now holds a lease or is spent, so this decides.
        let verdict = decide(&mut held, &limits, now_ms);
        *lock(&counts) = held;
        // (Fail closed all the same.)
        Some(
            self.counted(verdict.unwrap_or_else(|| {
                refusal(&limits, seconds(limits.rates[0]), 1, "no quota lease")
            })),
        )
    }

    fn counted(&self, verdict: Verdict) -> Verdict {
        if verdict.retry_after.is_some() {
            self.metrics.exceeded.increment(1);
        }
        verdict
    }

    /// Fills `window` with a lease (from Redis, or counted locally), or marks it spent.
    async fn lease(&self, client_id: &str, window: &mut Window, now_ms: i64) {
        // When the decision is local while Redis is away, Redis decides again once it may be
        // tried; else the window is spent until it ends.
        let mut decided_alone_for_now = false;
        let granted = match &self.shared {
            // Alone, the gate leases all that is left: nothing to share.
            None => local(window, window.limit),
            Some(shared) => {
                let want = next_lease(
                    window.lease,
                    u32::try_from(window.limit).unwrap_or(u32::MAX),
                    now_ms - window.leased_at_ms,
                );
                window.lease = want;
                match shared.grant(client_id, window, want, now_ms).await {
                    Some((granted, count)) => {
                        window.seen = count;
                        window.unshared = 0;
                        // What Redis answered is trusted no further than asked.
                        granted.clamp(0, want)
                    }
                    None => {
                        decided_alone_for_now = true;
                        self.metrics.local_leases.increment(1);
                        let granted = local(window, want);
                        window.unshared += granted;
                        granted
                    }
                }
            }
        };
        if granted == 0 {
            window.spent = true;
            window.retry_at_ms = if decided_alone_for_now {
                now_ms.saturating_add(RETRY_REDIS_MS)
            } else {
                i64::MAX
            };
        } else {
            window.left = granted;
            window.leased_at_ms = now_ms;
        }
    }
}

fn lock(counts: &Counts) -> std::sync::MutexGuard<'_, Vec<Window>> {
    counts.held.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lease counted locally: up to `want` of what is left after the last count known.
fn local(window: &mut Window, want: i64) -> i64 {
    let granted = want.min(window.limit - window.seen).max(0);
    window.seen += granted;
    granted
}

/// What the gate can decide from what it holds, under its lock: a refusal (a quota spent), or
/// an admission with one request taken from every window; `None` when a lease must be
/// fetched first.
fn decide(held: &mut Vec<Window>, limits: &Limits, now_ms: i64) -> Option<Verdict> {
    let now = now_ms.div_euclid(1000);
    let same = held.len() == limits.rates.len()
        && held
            .iter()
            .zip(&limits.rates)
            .all(|(w, rate)| w.limit == i64::from(rate.count) && w.period == seconds(*rate));
    if !same {
        *held = windows(std::mem::take(held), &limits.rates);
    }
    for window in held.iter_mut() {
        let start = now - now.rem_euclid(window.period);
        // Never backwards: a request stamped just before a window began, or a clock stepped
        // back, counts in the current window rather than starting an old one afresh.
        if start > window.start {
            // A new window: nothing held, nothing spent. The lease size carries over.
            *window = Window {
                limit: window.limit,
                period: window.period,
                start,
                lease: window.lease,
                leased_at_ms: window.leased_at_ms,
                ..Window::default()
            };
        }
    }
    for window in held.iter_mut() {
        if window.spent && now_ms >= window.retry_at_ms {
            window.spent = false;
        }
    }
    if let Some(spent) = held.iter().filter(|w| w.spent).max_by_key(|w| w.end()) {
        let retry_after = u64::try_from(spent.end() - now).unwrap_or(1).max(1);
        let detail = format!(
            "this client's quota of {} requests per {} is used up",
            spent.limit,
            period_name(spent.period)
        );
        return Some(refusal(limits, spent.period, retry_after, &detail));
    }
    if held.iter().any(|w| w.left == 0) {
        return None;
    }
    for window in held.iter_mut() {
        window.left -= 1;
    }
    // The quota with the fewest requests left (a client with quotas has windows).
    let fewest = held.iter().min_by_key(|w| w.limit - w.seen + w.left)?;
    let remaining = (fewest.limit - fewest.seen + fewest.left).max(0);
    Some(Verdict {
        retry_after: None,
        policy: limits.policy(),
        state: header_value(format!(
            "\"{}\";r={remaining};t={}",
            period_name(fewest.period),
            fewest.end() - now
        )),
        detail: String::new(),
    })
}

/// The windows of `limits`, for a first request or after the quota file changed a client's
/// quotas. A quota whose period the client had keeps its window and what was used of it,
/// against its new limit; a new period starts at nothing.
fn windows(old: Vec<Window>, limits: &[Rate]) -> Vec<Window> {
    limits
        .iter()
        .map(|rate| {
            let limit = i64::from(rate.count);
            let period = seconds(*rate);
            match old.iter().find(|w| w.period == period) {
                Some(w) => {
                    // Admitted (or given to other gates) so far: what was counted less what is
                    // still held. What is held is cut to what the new limit leaves.
                    let used = w.seen - w.left;
                    let left = w.left.min((limit - used).max(0));
                    Window {
                        limit,
                        left,
                        seen: used + left,
                        spent: false,
                        retry_at_ms: 0,
                        ..w.clone()
                    }
                }
                None => Window {
                    limit,
                    period,
                    start: i64::MIN,
                    ..Window::default()
                },
            }
        })
        .collect()
}

/// A refusal: the quota of `period` is used up for `retry_after` seconds.
fn refusal(limits: &Limits, period: i64, retry_after: u64, detail: &str) -> Verdict {
    Verdict {
        retry_after: Some(retry_after),
        policy: limits.policy(),
        state: header_value(format!("\"{}\";r=0;t={retry_after}", period_name(period))),
        detail: detail.to_owned(),
    }
}

/// A header value of text made here (digits, letters, quotes and punctuation), which is
/// always valid; the string's buffer becomes the value's.
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn seconds(rate: Rate) -> i64 {
    i64::try_from(rate.period.as_secs())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// A quota's name in the RateLimit headers: its period.
fn period_name(period: i64) -> &'static str {
    match period {
        1 => "second",
        60 => "minute",
        3600 => "hour",
        86_400 => "day",
        _ => "window",
    }
}

/// Counts shared by several gates in Redis.
pub struct Shared {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    /// `{--quota-redis-prefix}{audience length}:{--audience}:`; a key adds
    /// `{client}:{period}:{start}`.
    prefix: String,
    timeout: Duration,
    /// Until when (ms) the gate counts locally without trying Redis.
    down_until_ms: AtomicI64,
    /// [`UNKNOWN`] until the first call, then [`UP`] or [`DOWN`].
    state: AtomicU8,
    metrics: QuotaMetrics,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Adds what was admitted locally (ARGV[3]), then grants up to ARGV[1] of what is left of
/// the quota ARGV[2]; returns the grant and the count. Never grants past the quota.
const TAKE: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local unshared = tonumber(ARGV[3])
if unshared > 0 then count = redis.call('INCRBY', KEYS[1], unshared) end
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - count)
if grant > 0 then count = redis.call('INCRBY', KEYS[1], grant) else grant = 0 end
redis.call('EXPIREAT', KEYS[1], ARGV[4])
return {grant, count}
";

impl Shared {
    /// Counts in the Redis at `url`, under `prefix` and the gate's audience. Nothing is
    /// connected yet: see [`Shared::connect`].
    pub fn new(
        url: &str,
        prefix: &str,
        audience: &str,
        timeout: Duration,
        metrics: QuotaMetrics,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("--quota-redis: {e}"))?;
        metrics.redis_up.set(0.0);
        Ok(Shared {
            client,
            connection: Mutex::new(None),
            prefix: format!("{prefix}{}:{audience}:", audience.len()),
            timeout,
            down_until_ms: AtomicI64::new(i64::MIN),
            state: AtomicU8::new(UNKNOWN),
            metrics,
        })
    }

    /// Where Redis is (never its password), for the log.
    pub fn address(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    /// Connects now, so the log says at start whether Redis answers.
    pub async fn connect(&self, now_ms: i64) {
        if self.connection(now_ms).await.is_some() {
            self.answered();
        }
    }

    /// While Redis is away, asks it every second whether it is back (`PING`), so the log and
    /// `latchkey_gate_quota_redis_up` say so even when no client needs a lease. Runs for
    /// as long as the gate; `now_ms` reads the clock.
    pub async fn watch(self: Arc<Self>, now_ms: fn() -> i64) {
        let mut ticks = tokio::time::interval(Duration::from_millis(
            u64::try_from(RETRY_REDIS_MS).unwrap_or(1_000),
        ));
        loop {
            ticks.tick().await;
            let now = now_ms();
            if self.state.load(Ordering::Relaxed) == UP
                || now < self.down_until_ms.load(Ordering::Relaxed)
            {
                continue;
            }
            let _: Option<String> = self.call(&redis::cmd("PING"), now).await;
        }
    }

    /// Sends `command` within the timeout: its answer, or `None` once the failure is counted
    /// and the connection dropped (the next try connects afresh rather than wait on this
    /// connection's own retries).
    async fn call<T: redis::FromRedisValue>(&self, command: &redis::Cmd, now_ms: i64) -> Option<T> {
        let mut connection = self.connection(now_ms).await?;
        let sent = tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection));
        let answer = self.settled(now_ms, sent.await);
        match answer {
            Some(_) => self.answered(),
            None => *lock_connection(&self.connection) = None,
        }
        answer
    }

    /// What a step bounded by the timeout came to; a failure is counted and logged.
    fn settled<T>(
        &self,
        now_ms: i64,
        outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        match outcome {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(error)) => {
                self.failed(now_ms, &error.to_string());
                None
            }
            Err(_) => {
                self.failed(now_ms, "no answer in time");
                None
            }
        }
    }

    async fn connection(&self, now_ms: i64) -> Option<ConnectionManager> {
        if now_ms < self.down_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(connection) = lock_connection(&self.connection).clone() {
            return Some(connection);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One attempt: the gate retries by itself, a second later.
            .set_number_of_retries(0);
        let connecting = ConnectionManager::new_with_config(self.client.clone(), config);
        let connection =
            self.settled(now_ms, tokio::time::timeout(self.timeout, connecting).await)?;
        *lock_connection(&self.connection) = Some(connection.clone());
        Some(connection)
    }

    /// Takes a lease of up to `want` for `window`: the grant and the count of all gates, or
    /// `None` when Redis did not answer.
    async fn grant(
        &self,
        client_id: &str,
        window: &Window,
        want: i64,
        now_ms: i64,
    ) -> Option<(i64, i64)> {
        // The audience is length-prefixed and the last two parts are numbers, so no client id
        // and audience make another pair's key.
        let key = format!(
            "{}{client_id}:{}:{}",
            self.prefix, window.period, window.start
        );
        let mut call = redis::cmd("EVAL");
        call.arg(TAKE)
            .arg(1)
            .arg(key)
            .arg(want)
            .arg(window.limit)
            .arg(window.unshared)
            // Kept a minute past the window's end, for gates whose clocks are behind.
            .arg(window.end() + 60);
        self.call(&call, now_ms).await
    }

    fn answered(&self) {
        if self.state.swap(UP, Ordering::Relaxed) != UP {
            self.metrics.redis_up.set(1.0);
            tracing::info!(redis = %self.address(), "quota counts are shared through Redis");
        }
    }

    fn failed(&self, now_ms: i64, why: &str) {
        self.metrics.redis_errors.increment(1);
        self.down_until_ms
            .store(now_ms.saturating_add(RETRY_REDIS_MS), Ordering::Relaxed);
        // Said once per outage, and at start when Redis is not there.
        if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
            self.metrics.redis_up.set(0.0);
            tracing::warn!(redis = %self.address(), error = why, "Redis for quota counts is unreachable; counting locally until it answers");
        }
    }
}

fn lock_connection(
    connection: &Mutex<Option<ConnectionManager>>,
) -> std::sync::MutexGuard<'_, Option<ConnectionManager>> {
    connection.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(entries: &[&str]) -> Quotas {
        Quotas::new(
            QuotaTable::parse(entries.iter().copied()).unwrap(),
            None,
            QuotaMetrics::default(),
        )
    }

    /// Whether `client`'s request at `at` is admitted.
    async fn admitted(quotas: &Quotas, client: &str, at: i64) -> bool {
        quotas
            .check(client, at)
            .await
            .unwrap()
            .retry_after
            .is_none()
    }

    /// 2026-12-07 10:00:00 UTC, in ms.
    const TEN_AM: i64 = 1_796_637_600_000;

    #[test]
    fn entries_parse_and_bad_ones_are_named() {
        let table =
            QuotaTable::parse(["default=1000/hour", "a=100/min", "a=10000/day", "b=off"]).unwrap();
        assert_eq!(table.limits("x").rates.len(), 1);
        assert_eq!(table.limits("a").rates.len(), 2);
        assert!(table.limits("b").rates.is_empty());
        assert!(!table.is_empty());
        for bad in [
            "a",
            "=5/min",
            "a=5/week",
            "a=0/min",
            "a=off|a=5/min",
            "a=5/min|a=6/min",
        ] {
            let error = QuotaTable::parse(bad.split('|')).unwrap_err();
            assert!(error.contains('a') || error.contains('='), "{bad}: {error}");
        }
        assert!(QuotaTable::parse([]).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_quota_admits_exactly_its_count_per_window_and_says_what_is_left() {
        let quotas = quotas(&["default=3/hour", "vip=off"]);
        let mut states = Vec::new();
        for _ in 0..3 {
            let verdict = quotas.check("a", TEN_AM + 1_000).await.unwrap();
            assert_eq!(verdict.retry_after, None);
            assert_eq!(verdict.policy, "\"hour\";q=3;w=3600");
            states.push(verdict.state);
        }
        assert_eq!(
            states,
            [
                "\"hour\";r=2;t=3599",
                "\"hour\";r=1;t=3599",
                "\"hour\";r=0;t=3599"
            ]
        );
        let refused = quotas.check("a", TEN_AM + 1_000).await.unwrap();
        assert_eq!(refused.retry_after, Some(3599));
        assert_eq!(refused.state, "\"hour\";r=0;t=3599");
        assert!(admitted(&quotas, "b", TEN_AM).await);
        assert!(quotas.check("vip", TEN_AM).await.is_none());
        // The next hour starts afresh.
        let next = quotas.check("a", TEN_AM + 3_600_000).await.unwrap();
        assert_eq!(next.state, "\"hour\";r=2;t=3600");
    }

    #[tokio::test]
    async fn every_quota_of_a_client_counts_and_the_latest_to_free_up_is_named() {
        let quotas = quotas(&["a=2/min", "a=3/day"]);
        let at = |s: i64| TEN_AM + s * 1000;
        assert!(
            quotas
                .check("a", at(0))
                .await
                .unwrap()
                .retry_after
                .is_none()
        );
        let second = quotas.check("a", at(1)).await.unwrap();
        assert_eq!(second.policy, "\"minute\";q=2;w=60, \"day\";q=3;w=86400");
        assert_eq!(second.state, "\"minute\";r=0;t=59");
        let refused = quotas.check("a", at(2)).await.unwrap();
        assert_eq!(refused.retry_after, Some(58));
        // A minute later the minute frees up, and the day's third request is the last.
        assert!(
            quotas
                .check("a", at(60))
                .await
                .unwrap()
                .retry_after
                .is_none()
        );
        let refused = quotas.check("a", at(120)).await.unwrap();
        assert_eq!(refused.state, "\"day\";r=0;t=50280");
        assert_eq!(refused.retry_after, Some(50_280));
    }

    #[tokio::test]
    async fn a_new_quota_file_keeps_what_was_used_against_the_new_limit() {
        let quotas = quotas(&["default=1/hour"]);
        assert!(admitted(&quotas, "a", TEN_AM).await);
        assert!(!admitted(&quotas, "a", TEN_AM).await);
        // Raised to 3: 2 more this hour.
        quotas.replace(QuotaTable::parse(["default=3/hour"]).unwrap());
        for _ in 0..2 {
            assert!(admitted(&quotas, "a", TEN_AM).await);
        }
        assert!(!admitted(&quotas, "a", TEN_AM).await);
        // Lowered to 2, and a minute quota added: the hour stays spent.
        quotas.replace(QuotaTable::parse(["default=2/hour", "default=5/min"]).unwrap());
        assert!(!admitted(&quotas, "a", TEN_AM).await);
        quotas.replace(QuotaTable::parse(["a=off"]).unwrap());
        assert!(quotas.check("a", TEN_AM).await.is_none());
    }

    #[tokio::test]
    async fn a_request_stamped_before_the_window_began_counts_in_the_current_one() {
        let quotas = quotas(&["default=2/min"]);
        let minute = TEN_AM + 60_000;
        assert!(admitted(&quotas, "a", minute + 1).await);
        assert!(admitted(&quotas, "a", minute - 1).await);
        // Had the late one started the old minute afresh, this one would start the new
        // minute afresh too.
        assert!(!admitted(&quotas, "a", minute + 2).await);
    }
}
