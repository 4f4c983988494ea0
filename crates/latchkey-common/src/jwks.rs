//! The issuer's JWK Set, cached per its `Cache-Control: max-age`, refreshed in the background
//! when stale, refetched at most once per interval for an unknown `kid`, and kept as it is
//! when the JWKS endpoint is down. Never fails open: without keys, nothing verifies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::body::read_limited;
use crate::clock::Clock;
use arc_swap::ArcSwapOption;
use http::header::CACHE_CONTROL;
use latchkey_proto::Jwk;

use latchkey_jose::VerifyingKey;

/// A JWKS without `max-age` is refreshed after this long.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// A `max-age` shorter than this is read as this, so a JWKS endpoint cannot make every
/// request a refetch.
const MIN_MAX_AGE: Duration = Duration::from_secs(30);
/// A `max-age` longer than this is read as this, so rotated keys are picked up within a day.
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The largest JWKS read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The keys as last fetched.
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    /// When to fetch again in the background.
    stale_at: SystemTime,
}

impl KeySet {
    /// The keys of a fetched JWK Set document (RFC 7517 §5), used until `stale_at`. The body
    /// must be a JSON object with a `keys` array; each member that is not a JWK this crate can
    /// verify with (another key type, an encryption key, a malformed key) is skipped, not
    /// fatal, and the keys after it are still read. Of two keys with one `kid`, the later
    /// wins. The body is the endpoint's, so anyone who runs a `jwks_uri` writes it; the caller
    /// caps its size ([`Jwks`] reads at most 256 KiB).
    pub fn from_json(body: &[u8], stale_at: SystemTime) -> Result<Self, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(body)?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| VerifyingKey::from_jwk(&jwk))
            .map(|key| (key.kid().to_owned(), Arc::new(key)))
            .collect();
        Ok(KeySet { keys, stale_at })
    }

    /// The key `kid`.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.get(kid)
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<VerifyingKey>> {
        self.keys.values()
    }
}

/// The JWK Set at one URL, kept fresh: cached per its `max-age` (30 s to 24 h), refreshed in
/// the background when stale, refetched at most once per interval for an unknown `kid`, and
/// kept as it is while the URL fails. The guard uses it for an issuer's keys; the server for
/// keys that clients publish (`jwks_uri`). The HTTP client decides where it may connect.
pub struct Jwks {
    uri: String,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// At most one fetch for unknown kids per this interval.
    min_refetch_interval: Duration,
    current: ArcSwapOption<KeySet>,
    /// When the last fetch started; guards the rate limit.
    last_fetch: Mutex<Option<SystemTime>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    background: AtomicBool,
    /// No background refresh before this (one attempt per `MIN_MAX_AGE` while failing).
    next_background: Mutex<Option<SystemTime>>,
    /// Fetches made (for tests and metrics).
    fetches: AtomicU64,
}

impl Jwks {
    /// A source for `uri`, fetched with `http` on demand; `min_refetch_interval` bounds
    /// refetches for unknown kids.
    pub fn new(
        uri: String,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        min_refetch_interval: Duration,
    ) -> Self {
        Jwks {
            uri,
            http,
            clock,
            min_refetch_interval,
            current: ArcSwapOption::empty(),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            background: AtomicBool::new(false),
            next_background: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many fetches were made.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The current key set, if any was ever fetched.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// The key `kid`: from the cached set; for an unknown kid, after one refetch if the rate
    /// limit allows. `Err` when no key set was ever fetched.
    pub async fn key(self: &Arc<Self>, kid: &str) -> Result<Option<Arc<VerifyingKey>>, ()> {
        let now = self.clock.now();
        if let Some(set) = self.current.load().as_deref() {
            if now >= set.stale_at {
                self.refresh_in_background(now);
            }
            if let Some(key) = set.get(kid) {
                return Ok(Some(Arc::clone(key)));
            }
        }
        // Unknown kid (perhaps a new key after rotation) or no keys yet: one refetch at most
        // per interval, however many requests ask.
        if self.claim_fetch(now) {
            let _one = self.fetching.lock().await;
            self.fetch().await;
        } else if self.fetching.try_lock().is_err() {
            // A fetch is running (perhaps for this very kid): its result is worth waiting for.
            let _wait = self.fetching.lock().await;
        }
        match self.current.load().as_deref() {
            Some(set) => Ok(set.get(kid).cloned()),
            None => Err(()),
        }
    }

    /// Fetches now (at start-up), unless a fetch was made within the refetch interval.
    /// Errors are logged; later calls try again.
    pub async fn prime(&self) {
        if self.claim_fetch(self.clock.now()) {
            let _one = self.fetching.lock().await;
            self.fetch().await;
        }
    }

    /// Whether a fetch may start now; if so, records that it did.
    fn claim_fetch(&self, now: SystemTime) -> bool {
        let mut last = self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let allowed = last.is_none_or(|at| {
            now.duration_since(at)
                .is_ok_and(|since| since >= self.min_refetch_interval)
                // A clock that moved backwards does not block fetching for ever.
                || now < at
        });
        if allowed {
            *last = Some(now);
        }
        allowed
    }

    /// Starts a background refresh if the key set is past its max-age.
    pub fn refresh_if_stale(self: &Arc<Self>) {
        let now = self.clock.now();
        if self
            .current
            .load()
            .as_deref()
            .is_some_and(|set| now >= set.stale_at)
        {
            self.refresh_in_background(now);
        }
    }

    /// One refresh at a time, and at most one attempt per `MIN_MAX_AGE` (so a JWKS endpoint
    /// that is down is not asked on every request). Independent of the unknown-kid limit.
    ///
    /// A fixed interval, not [`crate::retry`]'s backoff: nobody waits for this attempt (the
    /// keys held stay in use meanwhile), and 30 s is already the shortest a `max-age` may
    /// make the cache, so growing it would only delay picking up rotated keys once the
    /// endpoint is back.
    fn refresh_in_background(self: &Arc<Self>, now: SystemTime) {
        {
            let mut next = self
                .next_background
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if next.is_some_and(|at| now < at) {
                return;
            }
            if self.background.swap(true, Ordering::AcqRel) {
                return;
            }
            *next = Some(now + MIN_MAX_AGE);
        }
        let jwks = Arc::clone(self);
        tokio::spawn(async move {
            {
                let _one = jwks.fetching.lock().await;
                jwks.fetch().await;
            }
            jwks.background.store(false, Ordering::Release);
        });
    }

    /// One fetch: on success the new set replaces the old; on failure the old set stays.
    async fn fetch(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.download().await {
            Ok(set) => self.current.store(Some(Arc::new(set))),
            Err(error) => {
                tracing::warn!(uri = %self.uri, %error, "JWKS fetch failed; keeping the keys held");
            }
        }
    }

    async fn download(&self) -> Result<KeySet, String> {
        let response = self
            .http
            .get(&self.uri)
            .timeout(Duration::from_secs(5))
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        let max_age = freshness_lifetime(response.headers());
        let body = read_limited(response, MAX_JWKS_BYTES).await?;
        KeySet::from_json(&body, self.clock.now() + max_age).map_err(|e| e.to_string())
    }
}

/// How long a fetched JWK Set is used before it is fetched again: its `Cache-Control`
/// `max-age` (the first such header's), else 5 minutes, within 30 s to 24 h. The headers are
/// the JWKS endpoint's, so anyone who runs a `jwks_uri` writes them.
pub fn freshness_lifetime(headers: &http::HeaderMap) -> Duration {
    headers
        .get(CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age)
        .unwrap_or(DEFAULT_MAX_AGE)
        .clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

/// `max-age=N` from a `Cache-Control` value (RFC 9111 §5.2.2.1), unclamped. N is digits
/// only (`delta-seconds`); one too large to represent counts as the largest (§1.2.2).
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let (name, seconds) = directive.trim().split_once('=')?;
        let seconds = seconds.trim_matches('"');
        (name.eq_ignore_ascii_case("max-age")
            && !seconds.is_empty()
            && seconds.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Duration::from_secs(seconds.parse().unwrap_or(u64::MAX)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("MAX-AGE=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=-1"), None);
        assert_eq!(max_age("max-age=+5"), None);
        assert_eq!(max_age("max-age="), None);
        // RFC 9111 §1.2.2: too large to represent is the largest.
        assert_eq!(
            max_age("max-age=99999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn the_freshness_lifetime_stays_within_bounds() {
        let lifetime = |value: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(CACHE_CONTROL, value.parse().unwrap());
            }
            freshness_lifetime(&headers)
        };
        assert_eq!(lifetime(None), DEFAULT_MAX_AGE);
        assert_eq!(lifetime(Some("no-cache")), DEFAULT_MAX_AGE);
        assert_eq!(lifetime(Some("max-age=600")), Duration::from_secs(600));
        assert_eq!(lifetime(Some("max-age=1")), MIN_MAX_AGE);
        assert_eq!(lifetime(Some("max-age=99999999999")), MAX_MAX_AGE);
        assert_eq!(lifetime(Some("max-age=99999999999999999999")), MAX_MAX_AGE);
    }

    #[test]
    fn a_fetched_set_skips_the_keys_it_cannot_use() {
        // RFC 8037 §A.2's public key, under two ids.
        let ed = |kid: &str| {
            format!(
                r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}"#
            )
        };
        let body = format!(
            r#"{{"keys":[{},42,{{"kty":"oct","k":"AAAA","kid":"h"}},{{"kty":"EC"}},{}]}}"#,
            ed("a"),
            ed("b")
        );
        let set = KeySet::from_json(body.as_bytes(), SystemTime::UNIX_EPOCH).unwrap();
        assert!(set.get("a").is_some());
        assert!(set.get("b").is_some(), "keys after a bad one are read");
        assert_eq!(set.keys().count(), 2);
        for bad in [&b"{\"keys\":{}}"[..], &b"[]"[..], &b"not json"[..]] {
            assert!(KeySet::from_json(bad, SystemTime::UNIX_EPOCH).is_err());
        }
    }
}
