//! [`Guard`]: validates bearer tokens for one resource (API) of one issuer.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap, HeaderName, Method, Uri};
use latchkey_common::{Clock, RetryPolicy, SystemClock};
use latchkey_jose::dpop::{ProofCheck, verify_proof};
use latchkey_proto::SigningAlg;

use crate::cache::{TokenCache, token_hash};
use crate::caller::Caller;
use crate::certificate;
use crate::introspect::{self, Introspector, OpaqueFormat};
use crate::rejection::Rejection;
use crate::replay::{Refused, ReplayCache};
use crate::verify::{self, Expectations, Invalid};
use latchkey_common::Jwks;

/// Validates access tokens for one resource server. Cheap to clone; clones share the JWKS
/// and the verified-token cache. Build one with [`Guard::builder`].
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audience: Arc<str>,
    realm: String,
    algorithms: Vec<SigningAlg>,
    leeway: i64,
    clock: Arc<dyn Clock>,
    jwks: Arc<Jwks>,
    /// Verified JWTs, until `exp` plus the leeway.
    verified: TokenCache<Caller>,
    /// For opaque tokens, when configured.
    introspector: Option<Introspector>,
    /// `scheme://host[:port]` of this resource as clients call it: DPoP proofs' `htu` is this
    /// plus the request path. `None`: DPoP is refused.
    origin: Option<String>,
    /// DPoP proof ids seen, until they are too old to be accepted anyway (RFC 9449 §11.1).
    proofs: ReplayCache,
    /// The header a TLS-terminating proxy puts the client certificate in, when trusted.
    certificate_header: Option<HeaderName>,
}

/// At resource servers a DPoP proof may be this old (seconds), so remembering every proof id
/// costs at most two minutes of them.
const PROOF_MAX_AGE_SECONDS: i64 = 60;

/// The DPoP proof ids one guard remembers at most, in 16 shards of 62,500; when a key's shard
/// is full, new proofs of its keys are refused (fail closed) until old ones age out. A
/// million ids (about 2 minutes at 8,000 requests/s) take some 150 MB at the very worst.
const MAX_REMEMBERED_PROOFS: usize = 1_000_000;

/// Default for [`GuardBuilder::dpop_proofs_per_key`]: an honest proof is remembered about
/// 120 s, so one key may make about 80 requests/s; a flooding key holds at most a sixth of
/// its shard.
const DEFAULT_PROOFS_PER_KEY: usize = 10_000;

/// How a request presents its token.
enum Credentials<'a> {
    /// `Authorization: Bearer` (RFC 6750 §2.1).
    Bearer(&'a str),
    /// `Authorization: DPoP`, with the proof in the `DPoP` header (RFC 9449 §7.1).
    Dpop(&'a str),
}

/// Configures a [`Guard`].
#[must_use]
pub struct GuardBuilder {
    issuer: Option<String>,
    audience: Option<String>,
    realm: Option<String>,
    jwks_uri: Option<String>,
    algorithms: Vec<SigningAlg>,
    leeway: Duration,
    min_refetch_interval: Duration,
    cache_capacity: usize,
    http: Option<reqwest::Client>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    introspection: Option<(String, latchkey_client::ClientSecret)>,
    introspection_endpoint: Option<String>,
    introspection_cache: (Duration, Duration),
    introspection_format: OpaqueFormat,
    introspection_concurrency: (usize, usize),
    public_origin: Option<String>,
    certificate_header: Option<String>,
    dpop_proofs_per_key: usize,
}

impl Guard {
    /// Starts configuring a guard.
    pub fn builder() -> GuardBuilder {
        GuardBuilder {
            issuer: None,
            audience: None,
            realm: None,
            jwks_uri: None,
            algorithms: vec![SigningAlg::Es256, SigningAlg::EdDsa, SigningAlg::Rs256],
            leeway: Duration::from_secs(5),
            min_refetch_interval: Duration::from_secs(10),
            cache_capacity: 100_000,
            http: None,
            clock: Arc::new(SystemClock),
            retry: RetryPolicy::default(),
            introspection: None,
            introspection_endpoint: None,
            introspection_cache: (Duration::from_secs(60), Duration::from_secs(5)),
            introspection_format: OpaqueFormat::Latchkey,
            introspection_concurrency: (
                introspect::DEFAULT_MAX_IN_FLIGHT,
                introspect::DEFAULT_MAX_WAITING,
            ),
            public_origin: None,
            certificate_header: None,
            dpop_proofs_per_key: DEFAULT_PROOFS_PER_KEY,
        }
    }

    /// Validates the token of a request with this method, headers, URI and extensions: a
    /// bearer token (RFC 6750 §2.1), or a DPoP-bound token with its proof (RFC 9449 §7). A
    /// token bound to a client certificate (RFC 8705 §3) also needs that certificate: a
    /// [`ClientCertificate`](crate::ClientCertificate) in `extensions`, or in the header set
    /// with [`GuardBuilder::trust_certificate_header`]. A valid token gives the [`Caller`];
    /// anything else the RFC 6750 / RFC 9449 rejection.
    pub async fn authenticate_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
        uri: &Uri,
        extensions: &Extensions,
    ) -> Result<Caller, Rejection> {
        let caller = match credentials(headers, uri)? {
            Credentials::Bearer(token) => {
                let caller = self.verify_token(token).await?;
                // RFC 9449 §7.2: a DPoP-bound token alone proves nothing. A `cnf` that names
                // neither a DPoP key nor a certificate is a binding this guard cannot check.
                if caller
                    .claims()
                    .cnf
                    .as_ref()
                    .is_some_and(|c| c.jkt.is_some() || c.x5t_s256.is_none())
                {
                    return Err(Rejection::InvalidToken(Invalid::NotBearer));
                }
                caller
            }
            Credentials::Dpop(token) => self.authenticate_dpop(token, method, headers, uri).await?,
        };
        self.check_certificate(&caller, headers, extensions)?;
        Ok(caller)
    }

    /// RFC 8705 §3: a token bound to a certificate (`cnf.x5t#S256`) is accepted only from a
    /// client presenting that certificate; anything else is `invalid_token`.
    fn check_certificate(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<(), Rejection> {
        let Some(x5t) = caller
            .claims()
            .cnf
            .as_ref()
            .and_then(|c| c.x5t_s256.as_deref())
        else {
            return Ok(());
        };
        let presented =
            certificate::presented(extensions, headers, self.inner.certificate_header.as_ref());
        match presented {
            Some(der) if certificate::thumbprint(&der) == x5t => Ok(()),
            Some(_) => Err(Rejection::InvalidToken(Invalid::OtherCertificate)),
            None => Err(Rejection::InvalidToken(Invalid::NoCertificate)),
        }
    }

    /// Validates one bearer access token (RFC 9068 §4). A token bound to a key or certificate
    /// is refused: alone it proves nothing (RFC 9449 §7.2).
    pub async fn authenticate(&self, token: &str) -> Result<Caller, Rejection> {
        let caller = self.verify_token(token).await?;
        if caller.claims().cnf.is_some() {
            return Err(Rejection::InvalidToken(Invalid::NotBearer));
        }
        Ok(caller)
    }

    /// RFC 9449 §7.1: the token must be bound to a DPoP key, and the request's one proof must
    /// be valid for this request (`htm`, `htu`, `ath`), fresh, unused, and made with that key.
    async fn authenticate_dpop(
        &self,
        token: &str,
        method: &Method,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Caller, Rejection> {
        let inner = &self.inner;
        let proof_error = |why: &str| Rejection::InvalidDpopProof(why.to_owned());
        let mut proofs = headers.get_all("dpop").iter();
        let proof = proofs.next().ok_or_else(|| proof_error("no DPoP proof"))?;
        if proofs.next().is_some() {
            return Err(proof_error("more than one DPoP proof"));
        }
        let proof = proof
            .to_str()
            .map_err(|_| proof_error("the DPoP proof is not a JWT"))?;
        let caller = self
            .verify_token(token)
            .await
            .map_err(|rejection| match rejection {
                Rejection::InvalidToken(why) => Rejection::InvalidDpopToken(why),
                other => other,
            })?;
        let Some(jkt) = caller.claims().cnf.as_ref().and_then(|c| c.jkt.as_deref()) else {
            return Err(Rejection::InvalidDpopToken(Invalid::NotDpop));
        };
        let Some(origin) = &inner.origin else {
            return Err(proof_error("this resource does not accept DPoP"));
        };
        let now = unix_now(inner.clock.as_ref());
        let url = format!("{origin}{}", uri.path());
        let check = ProofCheck {
            method: method.as_str(),
            url: &url,
            now,
            access_token: Some(token),
            nonce: None,
            max_age_seconds: PROOF_MAX_AGE_SECONDS,
        };
        let verified = verify_proof(proof, &check)
            .map_err(|err| Rejection::InvalidDpopProof(err.to_string()))?;
        if verified.jkt != jkt {
            return Err(proof_error(
                "the DPoP proof is not signed with the token's key",
            ));
        }
        // RFC 9449 §11.1: each proof once. A key over its quota is refused alone.
        match inner
            .proofs
            .remember(jkt, &verified.jti, verified.remember_until, now)
        {
            Ok(()) => Ok(caller),
            Err(Refused::Replay) => Err(proof_error("the DPoP proof was used before")),
            Err(Refused::KeyQuota) => Err(proof_error(
                "too many recent DPoP proofs with this key; retry later",
            )),
            Err(Refused::Full) => {
                tracing::warn!("the DPoP replay cache is full; refusing new proofs");
                Err(Rejection::Unavailable)
            }
        }
    }

    /// Validates one access token (RFC 9068 §4), bound or not: a verified token seen before
    /// costs a hash and a lookup; a new one, a signature verification.
    async fn verify_token(&self, token: &str) -> Result<Caller, Rejection> {
        let inner = &self.inner;
        let now = unix_now(inner.clock.as_ref());
        if token.len() > verify::MAX_TOKEN_LEN {
            return Err(Rejection::InvalidToken(Invalid::Malformed));
        }
        let hash = token_hash(token);
        // A JWT has two dots; anything else can only be checked by introspection, and only
        // if it may be a token of the server: made-up strings cost no network call.
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            let Some(introspector) = inner
                .introspector
                .as_ref()
                .filter(|introspector| introspector.admits(token))
            else {
                return Err(Rejection::InvalidToken(Invalid::Malformed));
            };
            let expect = introspect::Expect {
                issuer: &inner.issuer,
                audience: &inner.audience,
                leeway: inner.leeway,
            };
            return introspector.check(token, hash, &expect, now).await;
        }
        if let Some(caller) = inner.verified.get(&hash, now) {
            // Cached answers must not keep an outdated key set alive.
            inner.jwks.refresh_if_stale();
            // Still signed by a published key (a removed key takes its tokens with it)...
            let published = inner
                .jwks
                .current()
                .is_some_and(|set| caller.kid().is_some_and(|kid| set.get(kid).is_some()));
            if published {
                // ...and still within its lifetime.
                verify::check_times(caller.claims(), inner.leeway, now)
                    .map_err(Rejection::InvalidToken)?;
                return Ok(caller);
            }
            inner.verified.remove(&hash);
        }
        let parsed = verify::parse(token, &inner.algorithms).map_err(Rejection::InvalidToken)?;
        let key = match inner.jwks.key(&parsed.kid).await {
            Ok(Some(key)) => key,
            Ok(None) => return Err(Rejection::InvalidToken(Invalid::UnknownKey(parsed.kid))),
            Err(()) => return Err(Rejection::Unavailable),
        };
        let expect = Expectations {
            issuer: &inner.issuer,
            audience: &inner.audience,
            leeway: inner.leeway,
        };
        let claims =
            verify::verify(&parsed, &key, &expect, now).map_err(Rejection::InvalidToken)?;
        let until = claims.exp.saturating_add(inner.leeway);
        let caller = Caller::new(claims, Some(parsed.kid), Arc::clone(&inner.audience));
        inner.verified.insert(hash, caller.clone(), until, now);
        Ok(caller)
    }

    /// Whether `caller` was verified by this guard (or a clone of it) and is still within its
    /// lifetime, so an inner layer of the same guard need not verify again.
    pub(crate) fn verified(&self, caller: &Caller) -> bool {
        caller.verified_by(&self.inner.audience)
            && verify::check_times(
                caller.claims(),
                self.inner.leeway,
                unix_now(self.inner.clock.as_ref()),
            )
            .is_ok()
    }

    /// The realm in challenges.
    pub fn realm(&self) -> &str {
        &self.inner.realm
    }

    /// The resource (audience) tokens must be for.
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// How many times the JWKS was fetched (for monitoring and tests).
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.jwks.fetches()
    }

    /// How many introspection requests were made (for monitoring and tests).
    pub fn introspections(&self) -> u64 {
        self.inner
            .introspector
            .as_ref()
            .map_or(0, Introspector::calls)
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

impl GuardBuilder {
    /// The issuer whose tokens are accepted; its JWKS is found through discovery.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// This resource server's identifier: tokens must carry it in `aud`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The `realm` in challenges (default: the audience).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// This resource's origin (`https://api.example.com`) as clients call it, for checking
    /// the `htu` of DPoP proofs (RFC 9449 §4.3). Default: the origin of the audience when that
    /// is an http(s) URL. Behind a proxy, give the public origin.
    pub fn public_origin(mut self, origin: impl Into<String>) -> Self {
        self.public_origin = Some(origin.into());
        self
    }

    /// Trusts this header (like `Client-Cert`, RFC 9440) for the client certificate of
    /// requests, for tokens bound to one (RFC 8705 §3). Set it only behind a TLS-terminating
    /// proxy that always replaces the header with the certificate of the connection it
    /// received: anyone reaching the service directly could otherwise send any certificate.
    /// Accepts `:BASE64-DER:` (RFC 9440) and URL-encoded PEM (nginx's
    /// `$ssl_client_escaped_cert`).
    pub fn trust_certificate_header(mut self, name: impl Into<String>) -> Self {
        self.certificate_header = Some(name.into());
        self
    }

    /// The JWKS URL, skipping discovery.
    pub fn jwks_uri(mut self, uri: impl Into<String>) -> Self {
        self.jwks_uri = Some(uri.into());
        self
    }

    /// The algorithms accepted (default ES256, EdDSA, RS256). A key is still used only with
    /// its own algorithm.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = SigningAlg>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (default 5 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// An unknown `kid` refetches the JWKS at most once per this interval (default 10 s).
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// How many verified tokens to remember (default 100,000; 0 turns the cache off).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The HTTP client for discovery and the JWKS.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The clock tokens are checked against (for tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks opaque tokens (anything that is not a JWT) by introspection (RFC 7662),
    /// authenticating as this client (`client_secret_basic`; the client needs
    /// `--can-introspect`). JWTs are still verified locally.
    ///
    /// Only tokens in latchkey's opaque format (`lkat_` and 43 base64url characters) are
    /// sent; any other string is `invalid_token` at once, without a network call. For another
    /// authorization server, see [`introspect_any_opaque_format`](Self::introspect_any_opaque_format).
    pub fn introspection(
        mut self,
        client_id: impl Into<String>,
        secret: impl Into<latchkey_client::ClientSecret>,
    ) -> Self {
        self.introspection = Some((client_id.into(), secret.into()));
        self
    }

    /// Introspects opaque tokens of any format, not only latchkey's (`lkat_...`): for an
    /// authorization server whose opaque tokens look different. Opt in only then: every
    /// string that is not a JWT, up to 4 KiB, then costs an introspection call unless its
    /// answer is cached (an inactive answer for the time set with
    /// [`introspection_cache`](Self::introspection_cache)), so anyone can make the guard
    /// call the server by sending made-up tokens; the calls stay bounded by
    /// [`introspection_concurrency`](Self::introspection_concurrency). Longer strings are
    /// never sent.
    pub fn introspect_any_opaque_format(mut self) -> Self {
        self.introspection_format = OpaqueFormat::Any;
        self
    }

    /// At most `in_flight` introspection requests at once (default 64), and at most
    /// `waiting` requests waiting for a turn (default 256), each for at most 5 s. A request
    /// beyond that, or one that waited 5 s, gets 503 with `Retry-After`
    /// ([`Rejection::Unavailable`]) rather than waiting without bound. Answers already cached
    /// never wait.
    pub fn introspection_concurrency(mut self, in_flight: usize, waiting: usize) -> Self {
        self.introspection_concurrency = (in_flight, waiting);
        self
    }

    /// How many DPoP proof ids one key (one `cnf.jkt`) may have remembered at once for
    /// replay detection (RFC 9449 §11.1); default 10,000. An id is remembered until its proof
    /// is too old to be accepted (60 s) plus the clock skew allowed (60 s), about two
    /// minutes, so a key may make about this many requests per two minutes. Beyond that,
    /// that key's proofs are refused (`invalid_dpop_proof`) until older ones expire. The
    /// quota is per key: a client with tokens bound to several keys can still fill one of
    /// the 16 shards, after which new proofs of every key in that shard get 503 (fail
    /// closed). Clamped to 1 ..= 62,500 (one shard of the 1,000,000 ids a guard remembers at
    /// most).
    pub fn dpop_proofs_per_key(mut self, per_key: usize) -> Self {
        self.dpop_proofs_per_key = per_key;
        self
    }

    /// The introspection endpoint, instead of the one discovery names.
    pub fn introspection_endpoint(mut self, url: impl Into<String>) -> Self {
        self.introspection_endpoint = Some(url.into());
        self
    }

    /// How long introspection answers are reused: an active one at most `active` (default
    /// 60 s, and never past the token's `exp`), so a revocation takes at most that long to
    /// bite; an inactive one `inactive` (default 5 s).
    pub fn introspection_cache(mut self, active: Duration, inactive: Duration) -> Self {
        self.introspection_cache = (active, inactive);
        self
    }

    /// How discovery retries (see [`RetryPolicy`]; `latchkey_client::RetryPolicy` is the same
    /// type).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Runs discovery (unless a JWKS URL was given) and the first JWKS fetch. A JWKS that
    /// cannot be fetched yet is not fatal: requests get 503 until it can.
    pub async fn build(self) -> Result<Guard, latchkey_client::Error> {
        let issuer = self
            .issuer
            .ok_or_else(|| latchkey_client::Error::Config("an issuer is required".into()))?;
        let audience = self.audience.ok_or_else(|| {
            latchkey_client::Error::Config("the resource's audience is required".into())
        })?;
        if self.algorithms.is_empty() {
            return Err(latchkey_client::Error::Config(
                "at least one algorithm must be allowed".into(),
            ));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| latchkey_client::Error::Config(e.to_string()))?,
        };
        let needs_discovery = self.jwks_uri.is_none()
            || (self.introspection.is_some() && self.introspection_endpoint.is_none());
        let metadata = if needs_discovery {
            Some(latchkey_client::discover(&http, &issuer, &self.retry, self.clock.as_ref()).await?)
        } else {
            None
        };
        let from_metadata =
            |field: fn(&latchkey_proto::AuthorizationServerMetadata) -> Option<String>,
             name: &str| {
                metadata.as_ref().and_then(field).ok_or_else(|| {
                    latchkey_client::Error::Discovery(format!("the metadata has no {name}"))
                })
            };
        let jwks_uri = match self.jwks_uri {
            Some(uri) => uri,
            None => from_metadata(|m| m.jwks_uri.clone(), "jwks_uri")?,
        };
        let introspector = match self.introspection {
            None => None,
            Some((client_id, secret)) => {
                let endpoint = match self.introspection_endpoint {
                    Some(endpoint) => endpoint,
                    None => from_metadata(
                        |m| m.introspection_endpoint.clone(),
                        "introspection_endpoint",
                    )?,
                };
                let (max_positive, negative) = self.introspection_cache;
                let (max_in_flight, max_waiting) = self.introspection_concurrency;
                let settings = introspect::Settings {
                    endpoint,
                    http: http.clone(),
                    max_positive,
                    negative,
                    capacity: self.cache_capacity,
                    format: self.introspection_format,
                    max_in_flight,
                    max_waiting,
                };
                Some(
                    Introspector::new(settings, &client_id, secret.expose()).ok_or_else(|| {
                        latchkey_client::Error::Config("unusable introspection credentials".into())
                    })?,
                )
            }
        };
        let jwks = Arc::new(Jwks::new(
            jwks_uri,
            http,
            Arc::clone(&self.clock),
            self.min_refetch_interval,
        ));
        jwks.prime().await;
        let origin = origin_of(self.public_origin.as_deref().unwrap_or(&audience));
        if self.public_origin.is_some() && origin.is_none() {
            return Err(latchkey_client::Error::Config(
                "the public origin must be an http(s) URL like https://api.example.com".into(),
            ));
        }
        let certificate_header = self
            .certificate_header
            .map(|name| HeaderName::try_from(name.as_str()))
            .transpose()
            .map_err(|_| {
                latchkey_client::Error::Config("the certificate header is not a header name".into())
            })?;
        Ok(Guard {
            inner: Arc::new(Inner {
                origin,
                certificate_header,
                proofs: ReplayCache::new(MAX_REMEMBERED_PROOFS, self.dpop_proofs_per_key),
                realm: self.realm.unwrap_or_else(|| audience.clone()),
                issuer,
                audience: Arc::from(audience),
                algorithms: self.algorithms,
                leeway: i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX),
                clock: self.clock,
                jwks,
                verified: TokenCache::new(self.cache_capacity),
                introspector,
            }),
        })
    }
}

/// `scheme://host[:port]` of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    (origin != "null").then_some(origin)
}

fn unix_now(clock: &dyn Clock) -> i64 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The token of a request and its scheme (RFC 6750 §2.1, RFC 9449 §7.1). Only the
/// `Authorization` header is accepted: a token in the query (§2.3) is refused as
/// `invalid_request`, so a token never sits in access logs and a request never carries two.
fn credentials<'a>(headers: &'a HeaderMap, uri: &Uri) -> Result<Credentials<'a>, Rejection> {
    if uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    }) {
        return Err(Rejection::InvalidRequest(
            "send the access token in the Authorization header only",
        ));
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Rejection::MissingToken);
    };
    if values.next().is_some() {
        return Err(Rejection::InvalidRequest("several Authorization headers"));
    }
    let value = value
        .to_str()
        .map_err(|_| Rejection::InvalidRequest("malformed Authorization header"))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(Rejection::MissingToken);
    };
    // RFC 6750 §2.1: `"Bearer" 1*SP b64token`; RFC 9449 §7.1: `"DPoP" 1*SP token68`.
    let token = token.trim_start_matches(' ');
    let dpop = scheme.eq_ignore_ascii_case("DPoP");
    if !dpop && !scheme.eq_ignore_ascii_case("Bearer") {
        // Another scheme carries no token of ours: a challenge without an error (§3.1).
        return Err(Rejection::MissingToken);
    }
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = token.trim_end_matches('=');
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
    if body.is_empty() || !body.bytes().all(b64token) {
        return Err(Rejection::InvalidRequest("malformed Bearer credentials"));
    }
    Ok(if dpop {
        Credentials::Dpop(token)
    } else {
        Credentials::Bearer(token)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(values: &[&str], uri: &str) -> Result<String, Rejection> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, value.parse().unwrap());
        }
        match credentials(&headers, &uri.parse().unwrap())? {
            Credentials::Bearer(token) => Ok(token.to_owned()),
            Credentials::Dpop(token) => Ok(format!("DPoP {token}")),
        }
    }

    #[test]
    fn the_token_comes_from_one_authorization_header_only() {
        assert_eq!(
            extract(&["Bearer abc.def-_~+/=="], "/").unwrap(),
            "abc.def-_~+/=="
        );
        assert_eq!(extract(&["bearer abc"], "/").unwrap(), "abc");
        assert_eq!(extract(&["Bearer   abc"], "/").unwrap(), "abc");
        assert_eq!(extract(&["DPoP abc"], "/").unwrap(), "DPoP abc");
        assert_eq!(extract(&["dpop abc"], "/").unwrap(), "DPoP abc");
        assert_eq!(extract(&[], "/"), Err(Rejection::MissingToken));
        assert_eq!(
            extract(&["Basic dXNlcg=="], "/"),
            Err(Rejection::MissingToken)
        );
        assert!(matches!(
            extract(&["Bearer a", "Bearer b"], "/"),
            Err(Rejection::InvalidRequest(_))
        ));
        assert!(matches!(
            extract(&["Bearer a"], "/x?access_token=a"),
            Err(Rejection::InvalidRequest(_))
        ));
        assert!(matches!(
            extract(&[], "/x?b=1&access_token=a"),
            Err(Rejection::InvalidRequest(_))
        ));
        assert!(matches!(
            extract(&["Bearer a b"], "/"),
            Err(Rejection::InvalidRequest(_))
        ));
        assert!(matches!(
            extract(&["Bearer "], "/"),
            Err(Rejection::InvalidRequest(_))
        ));
    }
}
