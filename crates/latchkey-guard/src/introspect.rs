//! Introspection mode for opaque tokens (RFC 7662): the guard asks the authorization server,
//! authenticating as a client, and remembers the answer for a short while. Only strings that
//! can be tokens of the server are sent, and only so many at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use latchkey_proto::{AccessTokenClaims, IntrospectionResponse, params};

use crate::cache::TokenCache;
use crate::caller::Caller;
use crate::rejection::Rejection;
use crate::verify::{self, Invalid};

/// How an opaque token is checked.
pub(crate) struct Introspector {
    endpoint: String,
    /// `Basic ...` for the guard's own client credentials, marked sensitive.
    authorization: HeaderValue,
    http: reqwest::Client,
    /// Longest an active answer is reused (revocation takes at most this long to bite).
    max_positive: i64,
    /// How long an inactive answer is reused.
    negative: i64,
    /// Active answers. Kept apart from inactive ones, so a flood of made-up tokens cannot
    /// push the real ones out.
    active: TokenCache<Caller>,
    inactive: TokenCache<()>,
    /// Which strings are sent at all.
    format: OpaqueFormat,
    /// At most this many introspection requests at once...
    in_flight: tokio::sync::Semaphore,
    /// ...and at most `max_waiting` requests waiting for a turn; more are refused at once.
    waiting: AtomicUsize,
    max_waiting: usize,
    calls: AtomicU64,
}

/// Which opaque tokens are worth an introspection call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpaqueFormat {
    /// latchkey's own: [`LATCHKEY_PREFIX`] and 43 base64url characters (256 random bits), as
    /// latchkey-server issues them. Anything else cannot be one of its tokens.
    Latchkey,
    /// Any string of at most [`MAX_INTROSPECTED_LEN`] bytes, for servers whose opaque tokens
    /// look different.
    Any,
}

/// How latchkey's opaque access tokens start (latchkey-server `OPAQUE_PREFIX`).
const LATCHKEY_PREFIX: &str = "lkat_";
/// The base64url characters after the prefix: 256 bits without padding.
const LATCHKEY_RANDOM_LEN: usize = 43;
/// Longer opaque tokens are never sent for introspection, whatever the format.
pub(crate) const MAX_INTROSPECTED_LEN: usize = 4 * 1024;

/// Default: introspection requests in flight at once per guard.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default: requests waiting for a turn; beyond this they get 503 at once.
pub(crate) const DEFAULT_MAX_WAITING: usize = 256;
/// The longest a request waits for its turn, and the longest one introspection call takes.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest introspection response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How a guard introspects, as configured on its builder.
pub(crate) struct Settings {
    pub endpoint: String,
    pub http: reqwest::Client,
    /// Longest an active answer is reused, and how long an inactive one is.
    pub max_positive: Duration,
    pub negative: Duration,
    /// Answers remembered.
    pub capacity: usize,
    pub format: OpaqueFormat,
    pub max_in_flight: usize,
    pub max_waiting: usize,
}

impl OpaqueFormat {
    /// Whether `token` (not a JWT) may be an access token of this format.
    pub(crate) fn admits(self, token: &str) -> bool {
        match self {
            OpaqueFormat::Latchkey => token.strip_prefix(LATCHKEY_PREFIX).is_some_and(|random| {
                random.len() == LATCHKEY_RANDOM_LEN
                    && random
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }),
            OpaqueFormat::Any => !token.is_empty() && token.len() <= MAX_INTROSPECTED_LEN,
        }
    }
}

/// A place in the queue for a turn; leaving it (also by cancellation) frees it.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a guard checks an introspected token against.
pub(crate) struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a Arc<str>,
    pub leeway: i64,
}

impl Introspector {
    /// `None` when the credentials cannot be put in a header.
    pub(crate) fn new(settings: Settings, client_id: &str, secret: &str) -> Option<Self> {
        // RFC 6749 §2.3.1: form-urlencode both before joining.
        let encode = |s: &str| url_encode(s);
        let pair = format!("{}:{}", encode(client_id), encode(secret));
        let mut authorization = HeaderValue::try_from(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
        .ok()?;
        authorization.set_sensitive(true);
        let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Some(Introspector {
            endpoint: settings.endpoint,
            authorization,
            http: settings.http,
            max_positive: seconds(settings.max_positive),
            negative: seconds(settings.negative),
            active: TokenCache::new(settings.capacity),
            inactive: TokenCache::new(settings.capacity / 4),
            format: settings.format,
            in_flight: tokio::sync::Semaphore::new(
                settings
                    .max_in_flight
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            ),
            waiting: AtomicUsize::new(0),
            max_waiting: settings.max_waiting,
            calls: AtomicU64::new(0),
        })
    }

    /// Whether `token` (not a JWT) is worth asking about; anything else is refused without
    /// a network call.
    pub(crate) fn admits(&self, token: &str) -> bool {
        self.format.admits(token)
    }

    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The caller behind an opaque token, from the cache or from the introspection endpoint.
    pub(crate) async fn check(
        &self,
        token: &str,
        hash: [u8; 32],
        expect: &Expect<'_>,
        now: i64,
    ) -> Result<Caller, Rejection> {
        if let Some(caller) = self.active.get(&hash, now) {
            verify::check_times(caller.claims(), expect.leeway, now)
                .map_err(Rejection::InvalidToken)?;
            return Ok(caller);
        }
        if self.inactive.get(&hash, now).is_some() {
            return Err(Rejection::InvalidToken(Invalid::Inactive));
        }
        let answer = {
            let _turn = self.turn().await?;
            self.ask(token).await?
        };
        let decided = decide(answer, expect, now);
        match &decided {
            Ok(caller) => {
                let until = caller
                    .claims()
                    .exp
                    .min(now.saturating_add(self.max_positive));
                self.active.insert(hash, caller.clone(), until, now);
            }
            Err(_) => {
                self.inactive
                    .insert(hash, (), now.saturating_add(self.negative), now);
            }
        }
        decided
    }

    /// A turn to introspect: at once if one is free, else after waiting in a bounded queue
    /// for at most [`TIMEOUT`]. A full queue or a wait that times out is `Unavailable` (503
    /// with `Retry-After`): the token may be fine, but nobody waits without bound.
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Rejection> {
        if let Ok(permit) = self.in_flight.try_acquire() {
            return Ok(permit);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _place = Waiting(&self.waiting);
        if ahead >= self.max_waiting {
            return Err(Rejection::Unavailable);
        }
        match tokio::time::timeout(TIMEOUT, self.in_flight.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(Rejection::Unavailable),
        }
    }

    /// One introspection request (RFC 7662 §2.1). Anything but a clear answer is
    /// `Unavailable`: a token is never taken as active without one.
    ///
    /// Never retried, so latchkey-common's retry policy has no place here: a request is
    /// waiting on this answer, and a backoff of seconds would hold it (and its turn) longer
    /// than the 503 with `Retry-After` that sends its caller back later.
    async fn ask(&self, token: &str) -> Result<IntrospectionResponse, Rejection> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let body = format!(
            "{}={}&{}=access_token",
            params::TOKEN,
            url_encode(token),
            params::TOKEN_TYPE_HINT
        );
        let response = self
            .http
            .post(&self.endpoint)
            .timeout(TIMEOUT)
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| {
                tracing::warn!(%error, "introspection request failed");
                Rejection::Unavailable
            })?;
        let status = response.status();
        if !status.is_success() {
            if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
                tracing::error!(
                    status = status.as_u16(),
                    "the introspection endpoint refused the guard's client credentials"
                );
            } else {
                tracing::warn!(status = status.as_u16(), "introspection failed");
            }
            return Err(Rejection::Unavailable);
        }
        let unreadable = |error: String| {
            tracing::warn!(%error, "unreadable introspection response");
            Rejection::Unavailable
        };
        let body = latchkey_common::read_limited(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(unreadable)?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| unreadable(e.to_string()))?;
        let answer = serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?;
        Ok(answer)
    }
}

/// RFC 7662 §2.2 and RFC 9068-like checks on an introspection answer.
fn decide(
    answer: IntrospectionResponse,
    expect: &Expect<'_>,
    now: i64,
) -> Result<Caller, Rejection> {
    let invalid = |why| Err(Rejection::InvalidToken(why));
    if !answer.active {
        return invalid(Invalid::Inactive);
    }
    // Bearer, or DPoP with the key it is bound to (RFC 9449 §6.2); the caller checks the
    // binding against the request's proof.
    let dpop = answer
        .token_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("DPoP"));
    let bearer = answer
        .token_type
        .as_deref()
        .is_none_or(|t| t.eq_ignore_ascii_case("Bearer"));
    let jkt = answer.cnf.as_ref().and_then(|c| c.jkt.as_ref());
    if !(bearer || (dpop && jkt.is_some())) {
        return invalid(Invalid::NotBearer);
    }
    if answer
        .iss
        .as_deref()
        .is_some_and(|iss| iss != expect.issuer)
    {
        return invalid(Invalid::Issuer);
    }
    // A token must name this resource: an answer without `aud` could be for any API.
    let Some(aud) = answer.aud else {
        return invalid(Invalid::Audience);
    };
    if !aud.contains(expect.audience) {
        return invalid(Invalid::Audience);
    }
    let client_id = answer.client_id.unwrap_or_default();
    let claims = AccessTokenClaims {
        iss: answer.iss.unwrap_or_else(|| expect.issuer.to_owned()),
        sub: answer.sub.unwrap_or_else(|| client_id.clone()),
        client_id,
        aud,
        iat: answer.iat.unwrap_or(now),
        exp: answer.exp.unwrap_or(i64::MAX),
        nbf: None,
        jti: answer.jti.unwrap_or_default(),
        scope: answer.scope,
        epoch: 0,
        cnf: answer.cnf,
    };
    verify::check_times(&claims, expect.leeway, now).map_err(Rejection::InvalidToken)?;
    Ok(Caller::new(claims, None, Arc::clone(expect.audience)))
}

/// application/x-www-form-urlencoded for one value.
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_latchkey_shaped_tokens_are_introspected_by_default() {
        let random = "A".repeat(LATCHKEY_RANDOM_LEN);
        let cases = [
            (format!("lkat_{random}"), true, true),
            (format!("lkat_{}-_9z", &random[4..]), true, true),
            (format!("lkat_{}", &random[1..]), false, true),
            (format!("lkat_{random}A"), false, true),
            (format!("LKAT_{random}"), false, true),
            (format!("lkat_{}+/", &random[2..]), false, true),
            (format!("lkat_{}==", &random[..41]), false, true),
            ("hello".to_owned(), false, true),
            (String::new(), false, false),
            ("x".repeat(MAX_INTROSPECTED_LEN), false, true),
            ("x".repeat(MAX_INTROSPECTED_LEN + 1), false, false),
        ];
        for (token, latchkey, any) in cases {
            assert_eq!(OpaqueFormat::Latchkey.admits(&token), latchkey, "{token}");
            assert_eq!(OpaqueFormat::Any.admits(&token), any, "{token}");
        }
    }
}
