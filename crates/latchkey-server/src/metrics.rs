//! Prometheus metrics, served at `/metrics` on the `--metrics-listen` listener.
//!
//! Each server has a recorder of its own (not the process-wide one: several servers in one
//! process, as in the tests, keep their own counts), and every metric the request path records
//! is registered once at start, so recording is an atomic add on a handle already held: no
//! lookup and no allocation per request. Latencies are Prometheus histograms with buckets from
//! 100 µs to 5 s; the recorder keeps a histogram's samples until it folds them into buckets, so
//! a task does that every [`UPKEEP_INTERVAL`] and the samples held stay bounded by the requests
//! of one interval. Without a metrics listener nothing is recorded at all. Cache, change-feed
//! and database-error figures are read when the page is rendered.
//!
//! Per-client issuance has bounded cardinality: [`TopClients`] keeps a series for at most
//! `--metrics-top-clients` clients, the ones with the most tokens lately, and counts every
//! other client's tokens under `client_id="other"`. It is fed by the usage flush (so it lags
//! by at most one flush interval) and rendered by hand after the recorder's text, because a
//! client that drops out of the top must drop its series, which the recorder cannot do.

use latchkey_proto::{SigningAlg, TokenFormat};
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::cache::CacheStats;

/// Request latency, by endpoint.
pub const REQUEST_DURATION: &str = "latchkey_http_request_duration_seconds";
/// Token requests, by outcome.
pub const TOKEN_REQUESTS: &str = "latchkey_token_requests_total";
/// Tokens issued, by signing algorithm and format.
pub const TOKENS_ISSUED: &str = "latchkey_tokens_issued_total";
/// Tokens issued per client, for the top clients and `other`.
pub const CLIENT_TOKENS: &str = "latchkey_client_tokens_issued_total";
/// Clients found not caching their tokens (once per client, address and hour, cluster-wide).
pub const NOT_CACHING: &str = "latchkey_not_caching_flags_total";
/// Tokens handed out again instead of new ones (`--reuse-tokens`).
pub const TOKENS_REUSED: &str = "latchkey_tokens_reused_total";
/// Token requests past a client's rate or quota, by limit and mode.
pub const QUOTA_EXCEEDED: &str = "latchkey_quota_exceeded_total";
/// Requests refused by the brute-force throttle.
pub const THROTTLED: &str = "latchkey_auth_throttled_total";
/// Database errors, by kind.
pub const DATABASE_ERRORS: &str = "latchkey_database_errors_total";
/// The default of `--metrics-top-clients`.
pub const DEFAULT_TOP_CLIENTS: usize = 20;

/// Histogram buckets (seconds): sub-millisecond to seconds.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The endpoints latencies are kept for, by the last part of their path.
const ENDPOINTS: [(&str, &str); 8] = [
    ("token", "/oauth2/token"),
    ("introspect", "/oauth2/introspect"),
    ("revoke", "/oauth2/revoke"),
    ("register", "/oauth2/register"),
    ("metadata", "/.well-known/"),
    ("jwks", "/jwks"),
    ("admin", "/admin/v1/"),
    ("other", ""),
];

/// Every outcome of a token request: `issued`, or an OAuth error code.
const TOKEN_OUTCOMES: [&str; 12] = [
    "issued",
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "temporarily_unavailable",
    "server_error",
    "invalid_dpop_proof",
    "use_dpop_nonce",
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// How often latency samples are folded into their buckets.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// One server's metrics.
pub struct Metrics {
    /// Without a metrics listener nothing is recorded.
    enabled: bool,
    recorder: PrometheusRecorder,
    durations: Vec<(&'static str, Histogram)>,
    token_outcomes: Vec<(&'static str, Counter)>,
    issued: Vec<((SigningAlg, TokenFormat), Counter)>,
    cache_hits: Counter,
    cache_misses: Counter,
    feed_generation: Gauge,
    feed_lag: Gauge,
    not_caching: Counter,
    reused: Counter,
    throttled: Counter,
    /// By limit (rate, quota) and mode (enforce, monitor), in that order.
    quota_exceeded: Vec<Counter>,
    database_errors: Vec<Counter>,
    top_clients: std::sync::Mutex<TopClients>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A recorder with every metric registered (at zero) and described, with per-client series
    /// for at most `top_clients` clients; `enabled` false records nothing (no metrics
    /// listener).
    pub fn new(enabled: bool, top_clients: usize) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &BUCKETS)
            // Only an empty bucket list is refused, and BUCKETS is not empty.
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        recorder.describe_histogram(
            REQUEST_DURATION.into(),
            Some(Unit::Seconds),
            "Time from a request's head to its response, by endpoint.".into(),
        );
        recorder.describe_counter(
            TOKEN_REQUESTS.into(),
            None,
            "Token requests, by outcome: issued, or the OAuth error code.".into(),
        );
        recorder.describe_counter(
            TOKENS_ISSUED.into(),
            None,
            "Access tokens issued, by signing algorithm (none for opaque tokens) and format."
                .into(),
        );
        recorder.describe_counter(
            "latchkey_client_cache_lookups_total".into(),
            None,
            "Client lookups: hit (answered from memory) or miss (read from the database).".into(),
        );
        recorder.describe_gauge(
            "latchkey_change_feed_generation".into(),
            None,
            "The change-feed generation this server's cache is current to.".into(),
        );
        recorder.describe_gauge(
            "latchkey_change_feed_lag_seconds".into(),
            Some(Unit::Seconds),
            "Seconds since this server last read the change feed successfully.".into(),
        );
        recorder.describe_counter(
            NOT_CACHING.into(),
            None,
            "Clients found not caching their tokens: one per client, source address and hour, \
             counted by the server whose usage flush passed the allowance."
                .into(),
        );
        recorder.describe_counter(
            QUOTA_EXCEEDED.into(),
            None,
            "Token requests past the client's token rate or quota: limit (rate, quota) and \
             mode (enforce: refused with 429; monitor: issued)."
                .into(),
        );
        recorder.describe_counter(
            THROTTLED.into(),
            None,
            "Requests answered 429 by the brute-force throttle (too many failed client \
             authentications from an address)."
                .into(),
        );
        recorder.describe_counter(
            TOKENS_REUSED.into(),
            None,
            "Tokens handed out again instead of new ones (clients with --reuse-tokens); not in \
             latchkey_tokens_issued_total."
                .into(),
        );
        recorder.describe_counter(
            DATABASE_ERRORS.into(),
            None,
            "Database errors by kind: unavailable, retried (PostgreSQL aborted a transaction), \
             corrupt, other. Process-wide."
                .into(),
        );
        let key = |name: &'static str, labels: Vec<Label>| Key::from_parts(name, labels);
        let durations = ENDPOINTS
            .iter()
            .map(|(endpoint, _)| {
                let key = key(REQUEST_DURATION, vec![Label::new("endpoint", *endpoint)]);
                (*endpoint, recorder.register_histogram(&key, &METADATA))
            })
            .collect();
        let token_outcomes = TOKEN_OUTCOMES
            .iter()
            .map(|outcome| {
                let key = key(TOKEN_REQUESTS, vec![Label::new("outcome", *outcome)]);
                (*outcome, recorder.register_counter(&key, &METADATA))
            })
            .collect();
        let mut issued = Vec::new();
        for format in TokenFormat::ALL {
            for alg in SigningAlg::ALL {
                let alg_label = match format {
                    TokenFormat::Jwt => alg.as_str(),
                    TokenFormat::Opaque => "none",
                };
                let labels = vec![
                    Label::new("alg", alg_label),
                    Label::new("format", format.as_str()),
                ];
                issued.push((
                    (*alg, *format),
                    recorder.register_counter(&key(TOKENS_ISSUED, labels), &METADATA),
                ));
            }
        }
        let lookups = |result: &'static str| {
            let key = key(
                "latchkey_client_cache_lookups_total",
                vec![Label::new("result", result)],
            );
            recorder.register_counter(&key, &METADATA)
        };
        let cache_hits = lookups("hit");
        let cache_misses = lookups("miss");
        let feed_generation =
            recorder.register_gauge(&key("latchkey_change_feed_generation", vec![]), &METADATA);
        let feed_lag =
            recorder.register_gauge(&key("latchkey_change_feed_lag_seconds", vec![]), &METADATA);
        let not_caching = recorder.register_counter(&key(NOT_CACHING, vec![]), &METADATA);
        let reused = recorder.register_counter(&key(TOKENS_REUSED, vec![]), &METADATA);
        let throttled = recorder.register_counter(&key(THROTTLED, vec![]), &METADATA);
        let mut quota_exceeded = Vec::new();
        for limit in ["rate", "quota"] {
            for mode in ["enforce", "monitor"] {
                let labels = vec![Label::new("limit", limit), Label::new("mode", mode)];
                quota_exceeded
                    .push(recorder.register_counter(&key(QUOTA_EXCEEDED, labels), &METADATA));
            }
        }
        let database_errors = crate::store::ERROR_KINDS
            .iter()
            .map(|kind| {
                let key = key(DATABASE_ERRORS, vec![Label::new("kind", *kind)]);
                recorder.register_counter(&key, &METADATA)
            })
            .collect();
        Metrics {
            enabled,
            recorder,
            durations,
            token_outcomes,
            issued,
            cache_hits,
            cache_misses,
            feed_generation,
            feed_lag,
            not_caching,
            reused,
            throttled,
            quota_exceeded,
            database_errors,
            top_clients: std::sync::Mutex::new(TopClients::new(top_clients)),
        }
    }

    /// A client passed its token rate or quota (`limit`), in `mode`.
    pub fn quota_exceeded(&self, limit: &str, mode: crate::model::QuotaMode) {
        if !self.enabled {
            return;
        }
        let monitor = mode == crate::model::QuotaMode::Monitor;
        let index = usize::from(limit == "quota") * 2 + usize::from(monitor);
        self.quota_exceeded[index].increment(1);
    }

    /// A request was refused by the brute-force throttle (429).
    pub fn throttled(&self) {
        if self.enabled {
            self.throttled.increment(1);
        }
    }

    /// A token was handed out again (`--reuse-tokens`) instead of a new one.
    pub fn reused(&self) {
        if self.enabled {
            self.reused.increment(1);
        }
    }

    /// A client was found not caching its tokens at one address.
    pub fn not_caching(&self) {
        if self.enabled {
            self.not_caching.increment(1);
        }
    }

    /// The tokens each client was issued since the last call: `(client id, name, tokens)`.
    pub fn client_tokens<'a>(&self, counts: impl Iterator<Item = (&'a str, &'a str, u64)>) {
        if !self.enabled {
            return;
        }
        self.top_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(counts);
    }

    /// A request to `path` answered in `seconds`; `token_outcome` for a token request.
    pub fn request(&self, path: &str, seconds: f64, token_outcome: Option<&str>) {
        if !self.enabled {
            return;
        }
        let endpoint = ENDPOINTS
            .iter()
            .position(|(_, suffix)| {
                !suffix.is_empty()
                    && (path.ends_with(suffix) || (suffix.ends_with('/') && path.contains(suffix)))
            })
            .unwrap_or(ENDPOINTS.len() - 1);
        self.durations[endpoint].1.record(seconds);
        if let Some(outcome) = token_outcome
            && let Some((_, counter)) = self.token_outcomes.iter().find(|(o, _)| *o == outcome)
        {
            counter.increment(1);
        }
    }

    /// A token was issued (signed with `alg`, for a JWT).
    pub fn issued(&self, alg: SigningAlg, format: TokenFormat) {
        if !self.enabled {
            return;
        }
        let alg = match format {
            TokenFormat::Jwt => alg,
            // Opaque tokens are counted under one algorithm's entry (labelled `none`).
            TokenFormat::Opaque => SigningAlg::ALL[0],
        };
        if let Some((_, counter)) = self.issued.iter().find(|(key, _)| *key == (alg, format)) {
            counter.increment(1);
        }
    }

    /// The Prometheus text exposition of every metric, with the cache's figures as they are.
    pub fn render(&self, cache: CacheStats) -> String {
        self.cache_hits.absolute(cache.hits);
        self.cache_misses.absolute(cache.misses);
        for (counter, count) in self
            .database_errors
            .iter()
            .zip(crate::store::database_errors())
        {
            counter.absolute(count);
        }
        #[allow(clippy::cast_precision_loss)] // Generations and seconds stay far below 2^53.
        {
            self.feed_generation.set(cache.generation as f64);
            self.feed_lag.set(cache.seconds_since_poll as f64);
        }
        let mut text = self.recorder.handle().render();
        self.top_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render(&mut text);
        text
    }

    /// Folds latency samples into their buckets every [`UPKEEP_INTERVAL`] until `stop`
    /// resolves (nothing to do without a metrics listener).
    pub async fn run_upkeep(self: std::sync::Arc<Self>, stop: impl Future<Output = ()>) {
        if !self.enabled {
            stop.await;
            return;
        }
        let handle = self.recorder.handle();
        let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => handle.run_upkeep(),
            }
        }
    }
}

/// The tokens a client needs in one update to take a slot from another: below it, clients
/// that come and go with a few tokens would end a series and start one at every update.
const MIN_TOKENS_TO_EVICT: u64 = 10;

/// Per-client token counts for at most `slots` clients, the rest under `other`.
///
/// Each named client has a running total (its series, never decreasing) and a score: its
/// tokens lately, halved at every update. A client not named gets a series when a slot is
/// free, or when its tokens in one update exceed the lowest score (and are at least
/// [`MIN_TOKENS_TO_EVICT`]), which evicts that client
/// (its series ends; rate() over the series stays right). Tokens of clients without a series
/// count under `other`. The id `other` itself is never named.
#[derive(Debug)]
pub struct TopClients {
    slots: usize,
    named: Vec<NamedClient>,
    other: u64,
}

#[derive(Debug)]
struct NamedClient {
    client_id: String,
    name: String,
    total: u64,
    score: u64,
}

impl TopClients {
    /// Room for `slots` named clients.
    pub fn new(slots: usize) -> Self {
        TopClients {
            slots,
            named: Vec::new(),
            other: 0,
        }
    }

    /// Adds one update's counts: `(client id, name, tokens)`.
    pub fn add<'a>(&mut self, counts: impl Iterator<Item = (&'a str, &'a str, u64)>) {
        for named in &mut self.named {
            named.score /= 2;
        }
        for (client_id, name, tokens) in counts {
            if tokens == 0 {
                continue;
            }
            if let Some(named) = self.named.iter_mut().find(|n| n.client_id == client_id) {
                named.total += tokens;
                named.score += tokens;
                if named.name != name {
                    name.clone_into(&mut named.name);
                }
                continue;
            }
            let new = NamedClient {
                client_id: client_id.to_owned(),
                name: name.to_owned(),
                total: tokens,
                score: tokens,
            };
            if client_id == "other" || self.slots == 0 {
                self.other += tokens;
            } else if self.named.len() < self.slots {
                self.named.push(new);
            } else if let Some(lowest) = self.named.iter_mut().min_by_key(|n| n.score)
                && tokens >= MIN_TOKENS_TO_EVICT
                && lowest.score < tokens
            {
                *lowest = new;
            } else {
                self.other += tokens;
            }
        }
    }

    /// Appends the series in the Prometheus text format (0.0.4).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP {CLIENT_TOKENS} Tokens issued per client: the clients with the most tokens \
             lately by id and name, all others under client_id=\"other\". Updated with each usage \
             flush."
        );
        let _ = writeln!(out, "# TYPE {CLIENT_TOKENS} counter");
        let mut named: Vec<&NamedClient> = self.named.iter().collect();
        named.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        for client in named {
            let _ = writeln!(
                out,
                "{CLIENT_TOKENS}{{client_id=\"{}\",client_name=\"{}\"}} {}",
                escape_label(&client.client_id),
                escape_label(&client.name),
                client.total
            );
        }
        let _ = writeln!(
            out,
            "{CLIENT_TOKENS}{{client_id=\"other\",client_name=\"\"}} {}",
            self.other
        );
    }
}

/// A label value escaped for the text format: backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_clients_stay_bounded_and_never_go_back() {
        let mut top = TopClients::new(2);
        top.add([("a", "A", 10), ("b", "B", 5), ("c", "C", 1)].into_iter());
        assert_eq!(top.named.len(), 2);
        assert_eq!(top.other, 1);
        // c gets busy: it takes the lowest slot (b, score 5 / 2); b's later tokens go to other.
        // A client with a few tokens does not take a slot, even from an idle one.
        top.add([("c", "C", 50)].into_iter());
        top.add([("d", "D", 9)].into_iter());
        top.add([("d", "D", 9)].into_iter());
        let ids: Vec<&str> = top.named.iter().map(|n| n.client_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        top.add([("b", "B", 1), ("a", "A", 1), ("other", "x", 7)].into_iter());
        assert_eq!(top.other, 27);
        assert_eq!(top.named[0].total, 11);
        let mut text = String::new();
        top.render(&mut text);
        assert!(
            text.contains("client_id=\"c\",client_name=\"C\"} 50\n"),
            "{text}"
        );
        assert!(
            text.contains("client_id=\"other\",client_name=\"\"} 27\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2 + 3);
        // A renamed client's series follows its name.
        top.add([("a", "A2", 1)].into_iter());
        let mut text = String::new();
        top.render(&mut text);
        assert!(
            text.contains("client_id=\"a\",client_name=\"A2\"} 12\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
