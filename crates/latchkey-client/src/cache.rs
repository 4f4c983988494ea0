//! [`ClientCredentials`]: the in-memory token cache with single-flight fetching and early
//! refresh, in front of the optional persistent store and the token endpoint.
//!
//! The read path is a lock-free load (`arc-swap`) and one reference-count increment. Fetches go through a
//! single "flight": the first caller that needs a token starts it as a task, everyone else who
//! needs one meanwhile awaits the same shared result, and the result (token or error) is
//! delivered to all of them. Errors are never cached: the next call starts a new flight.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use http::HeaderValue;
use latchkey_common::RetryPolicy;
use latchkey_jose::PrivateKey;
use latchkey_proto::{TokenResponse, TokenType};
use url::Url;

use crate::builder::Builder;
use crate::clock::{Clock, unix_seconds};
use crate::error::Error;
use crate::refresh::{RefreshPolicy, Schedule};
use crate::retry;
use crate::secret::AccessToken;
use crate::store::{CacheKey, StoredToken, TokenStore};
use crate::token_request::TokenRequest;

/// After a background refresh fails, callers keep the still-valid token and the next refresh is
/// tried this much later (or when the token stops being usable, if sooner).
const REFRESH_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// A store call that takes longer is abandoned (and logged): the store only saves requests,
/// it must never hold callers up.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longer `expires_in` values are read as this (a year), so no server value can overflow the
/// clock arithmetic.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// How many rejected tokens are remembered, so that a store still holding one (another
/// process wrote it back, or removing it failed) cannot hand it out again.
const REJECTED_REMEMBERED: usize = 8;

/// Tokens for one client, scope and audience, fetched with the client credentials grant
/// (RFC 6749 §4.4) and cached while valid.
///
/// Cheap to clone; clones share the cache. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct ClientCredentials {
    inner: Arc<Inner>,
}

/// Everything the builder decided.
pub(crate) struct Settings {
    pub client_id: String,
    pub scope: Vec<String>,
    pub audience: Vec<String>,
    pub request: TokenRequest,
    pub http: reqwest::Client,
    pub clock: Arc<dyn Clock>,
    pub refresh: RefreshPolicy,
    pub retry: RetryPolicy,
    pub store: Option<Arc<dyn TokenStore>>,
    pub key: CacheKey,
    /// The DPoP key, when tokens are to be bound to it (RFC 9449).
    pub dpop: Option<Arc<PrivateKey>>,
}

struct Inner {
    settings: Settings,
    /// The token being handed out. Replaced whole, never changed in place.
    current: ArcSwapOption<Cached>,
    /// The fetch in progress, if any. Installing its result into `current` happens under this
    /// lock, so "no usable token and no flight" is never seen by two callers at once.
    flight: Mutex<Option<Flight>>,
    /// Whether `flight` holds a fetch: lets callers serving a token that is due for refresh
    /// skip the mutex while the refresh runs.
    in_flight: AtomicBool,
    /// Tokens a resource server rejected recently (newest last).
    rejected: Mutex<VecDeque<AccessToken>>,
}

type Flight = Shared<BoxFuture<'static, Result<AccessToken, Error>>>;

#[derive(Clone)]
struct Cached {
    token: AccessToken,
    schedule: Schedule,
}

/// What a caller needs from the cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Any token that may still be handed out.
    Usable,
    /// A token not yet due for refresh (a background refresh wants this).
    Fresh,
}

impl Cached {
    fn satisfies(&self, need: Need, now: SystemTime) -> bool {
        match need {
            Need::Usable => now < self.schedule.usable_until,
            Need::Fresh => now < self.schedule.refresh_at,
        }
    }
}

impl ClientCredentials {
    /// Starts configuring a client.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn new(settings: Settings) -> Self {
        ClientCredentials {
            inner: Arc::new(Inner {
                settings,
                current: ArcSwapOption::empty(),
                flight: Mutex::new(None),
                in_flight: AtomicBool::new(false),
                rejected: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// A valid access token: the cached one while it is not due for refresh; the cached one
    /// plus a background refresh once it is; otherwise the result of the one fetch in flight,
    /// shared with every other caller waiting for it.
    ///
    /// Must be called within a Tokio runtime: fetches run as Tokio tasks.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        let now = self.inner.settings.clock.now();
        if let Some(cached) = self.inner.current.load().as_deref() {
            if cached.satisfies(Need::Fresh, now) {
                return Ok(cached.token.clone());
            }
            if cached.satisfies(Need::Usable, now) {
                if !self.inner.in_flight.load(Ordering::Acquire) {
                    self.inner.refresh_in_background();
                }
                return Ok(cached.token.clone());
            }
        }
        match self.inner.join_or_start(Need::Usable) {
            Ok(token) => Ok(token),
            Err(flight) => flight.await,
        }
    }

    /// Forgets `token` because a resource server rejected it (RFC 6750 §3.1 `invalid_token`),
    /// here and in the store, so the next [`token`](Self::token) call fetches a new one. A
    /// newer token that replaced it meanwhile is kept.
    pub async fn invalidate(&self, token: &AccessToken) {
        {
            let mut rejected = self.inner.lock_rejected();
            if !rejected.iter().any(|r| r.same_as(token)) {
                if rejected.len() == REJECTED_REMEMBERED {
                    rejected.pop_front();
                }
                rejected.push_back(token.clone());
            }
        }
        let removed = {
            let _flight = self.inner.lock_flight();
            let current = self.inner.current.load();
            if current.as_ref().is_some_and(|c| c.token.same_as(token)) {
                self.inner.current.store(None);
                true
            } else {
                false
            }
        };
        if let Some(store) = &self.inner.settings.store {
            let key = &self.inner.settings.key;
            match tokio::time::timeout(STORE_TIMEOUT, store.remove(key, token.secret())).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not remove a rejected token from the token store");
                }
                Err(_) => {
                    tracing::warn!("the token store did not answer; rejected token left in it")
                }
            }
        }
        if removed {
            tracing::debug!(endpoint = %self.token_endpoint(), "cached token invalidated");
        }
    }

    /// The `DPoP` header value for sending `token` in a `method` request to `url` (RFC 9449
    /// §7.1): a fresh proof with the token's hash. `None` for a bearer token. The middleware
    /// and the tower layer add it themselves.
    pub fn dpop_proof(
        &self,
        token: &AccessToken,
        method: &str,
        url: &str,
    ) -> Result<Option<HeaderValue>, Error> {
        let (TokenType::DPoP, Some(key)) = (token.token_type(), &self.inner.settings.dpop) else {
            return Ok(None);
        };
        let iat = unix_seconds(self.inner.settings.clock.now());
        let proof =
            latchkey_jose::dpop::make_proof(key, method, url, iat, Some(token.secret()), None)
                .map_err(|e| Error::Config(format!("cannot make a DPoP proof: {e}")))?;
        HeaderValue::try_from(proof)
            .map(Some)
            .map_err(|_| Error::Config("the DPoP proof cannot be sent".into()))
    }

    /// The token endpoint in use (from discovery or as configured).
    pub fn token_endpoint(&self) -> &Url {
        self.inner.settings.request.endpoint()
    }

    /// The key this client's tokens are cached and stored under.
    pub fn cache_key(&self) -> &CacheKey {
        &self.inner.settings.key
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.inner.settings;
        f.debug_struct("ClientCredentials")
            .field("token_endpoint", &settings.request.endpoint().as_str())
            .field("client_id", &settings.client_id)
            .field("scope", &settings.scope)
            .field("audience", &settings.audience)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock_flight(&self) -> std::sync::MutexGuard<'_, Option<Flight>> {
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_rejected(&self) -> std::sync::MutexGuard<'_, VecDeque<AccessToken>> {
        self.rejected.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn was_rejected(&self, token: &AccessToken) -> bool {
        self.lock_rejected().iter().any(|r| r.same_as(token))
    }

    /// A token that meets `need` if one is cached now, or else the flight to wait for (joining
    /// the one in progress or starting one).
    fn join_or_start(self: &Arc<Self>, need: Need) -> Result<AccessToken, Flight> {
        let mut flight = self.lock_flight();
        let now = self.settings.clock.now();
        if let Some(cached) = self.current.load().as_deref()
            && cached.satisfies(need, now)
        {
            return Ok(cached.token.clone());
        }
        if let Some(running) = flight.as_ref() {
            return Err(running.clone());
        }
        let inner = Arc::clone(self);
        // The fetch runs as its own task, so a caller that gives up does not cancel it for the
        // others.
        let task = tokio::spawn(async move { inner.fetch_and_install().await });
        let owner = Arc::downgrade(self);
        let shared = async move {
            task.await.unwrap_or_else(|join| {
                // The task panicked or its runtime shut down before it could clear the slot:
                // clear it here, or every later call would get this same error.
                if let Some(inner) = owner.upgrade() {
                    inner.lock_flight().take();
                    inner.in_flight.store(false, Ordering::Release);
                }
                Err(Error::InvalidResponse(format!(
                    "the token fetch task failed: {join}"
                )))
            })
        }
        .boxed()
        .shared();
        *flight = Some(shared.clone());
        self.in_flight.store(true, Ordering::Release);
        Err(shared)
    }

    /// Starts a refresh unless one is running or another caller already finished one.
    fn refresh_in_background(self: &Arc<Self>) {
        if let Err(flight) = self.join_or_start(Need::Fresh) {
            // The task runs by itself; nobody needs to poll the shared handle.
            drop(flight);
        }
    }

    async fn fetch_and_install(self: Arc<Self>) -> Result<AccessToken, Error> {
        let result = self.obtain().await;
        {
            let mut flight = self.lock_flight();
            match &result {
                Ok((cached, _)) => self.current.store(Some(Arc::new(cached.clone()))),
                Err(error) => {
                    let now = self.settings.clock.now();
                    if let Some(cached) = self.current.load().as_deref()
                        && cached.satisfies(Need::Usable, now)
                    {
                        // Keep serving the valid token; try again a little later.
                        let mut retry = cached.clone();
                        retry.schedule.refresh_at =
                            (now + REFRESH_RETRY_INTERVAL).min(retry.schedule.usable_until);
                        self.current.store(Some(Arc::new(retry)));
                        tracing::warn!(%error, "token refresh failed; the current token is still valid");
                    }
                }
            }
            flight.take();
            self.in_flight.store(false, Ordering::Release);
        }
        let (cached, from_server) = result?;
        // Installed first, so callers arriving now already have it; saved before this flight's
        // waiters return, so a process that exits right after (`latchkey token`) has saved.
        if from_server && let Some(store) = &self.settings.store {
            let stored = StoredToken::from_token(&cached.token);
            match tokio::time::timeout(STORE_TIMEOUT, store.save(&self.settings.key, &stored)).await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not write the token to the token store");
                }
                Err(_) => tracing::warn!("the token store did not answer; token not stored"),
            }
        }
        Ok(cached.token)
    }

    /// A fresh token, and whether it came from the server: from the store if it holds one not
    /// yet due for refresh, otherwise from the token endpoint.
    async fn obtain(&self) -> Result<(Cached, bool), Error> {
        let settings = &self.settings;
        if let Some(store) = &settings.store {
            match tokio::time::timeout(STORE_TIMEOUT, store.load(&settings.key)).await {
                Ok(Ok(Some(stored))) => {
                    if let Some(cached) = self.adopt(&stored) {
                        tracing::debug!("token taken from the token store");
                        return Ok((cached, false));
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "token store unreadable; asking the server");
                }
                Err(_) => tracing::warn!("the token store did not answer; asking the server"),
            }
        }
        let response = retry::run(&settings.retry, |timeout| {
            settings
                .request
                .send(&settings.http, timeout, settings.clock.now())
        })
        .await?;
        Ok((self.receive(response)?, true))
    }

    /// A stored token, if it is another token than the one held, was not rejected by a
    /// resource server, and is not yet due for refresh.
    fn adopt(&self, stored: &StoredToken) -> Option<Cached> {
        let token = stored.to_token()?;
        if let Some(current) = self.current.load().as_deref()
            && current.token.same_as(&token)
        {
            return None;
        }
        if self.was_rejected(&token) {
            return None;
        }
        let cached = self.schedule(token);
        cached
            .satisfies(Need::Fresh, self.settings.clock.now())
            .then_some(cached)
    }

    /// RFC 6749 §5.1: expiry is `expires_in` counted from receipt; the token is never decoded
    /// (RFC 9068 §6: it is opaque to the client).
    fn receive(&self, response: TokenResponse) -> Result<Cached, Error> {
        // A DPoP token is usable only with the key it is bound to. A server that does not do
        // DPoP answers with a bearer token (RFC 9449 §5), which is used as such.
        if response.token_type == TokenType::DPoP && self.settings.dpop.is_none() {
            return Err(Error::InvalidResponse(
                "token_type DPoP, but this client has no DPoP key".into(),
            ));
        }
        let received_at = self.settings.clock.now();
        let expires_at = match response.expires_in {
            Some(seconds) => received_at + Duration::from_secs(seconds).min(MAX_LIFETIME),
            None => self.settings.refresh.assumed_expiry(received_at),
        };
        let token = AccessToken::new(
            response.access_token,
            response.token_type,
            response.scope,
            received_at,
            expires_at,
        )
        .ok_or_else(|| {
            Error::InvalidResponse(
                "the access token is empty or cannot be sent in an HTTP header".into(),
            )
        })?;
        let cached = self.schedule(token);
        // A token that is already too close to expiry (`expires_in` 0, say) is an error, not
        // a token to hand out: the caller would send an expired token.
        if !cached.satisfies(Need::Usable, received_at) {
            return Err(Error::InvalidResponse(format!(
                "the token expires too soon to be used (expires_in {:?})",
                response_expires_in(&cached)
            )));
        }
        Ok(cached)
    }

    fn schedule(&self, token: AccessToken) -> Cached {
        let schedule = self.settings.refresh.schedule(
            token.received_at(),
            token.expires_at(),
            fastrand::f64(),
        );
        Cached { token, schedule }
    }
}

/// The lifetime a cached token was given, in whole seconds (for messages).
fn response_expires_in(cached: &Cached) -> u64 {
    cached
        .token
        .expires_at()
        .duration_since(cached.token.received_at())
        .unwrap_or_default()
        .as_secs()
}
