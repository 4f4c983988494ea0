//! Introspection mode for opaque tokens (RFC 7662): the guard asks the authorization server,
//! authenticating as a client, and remembers the answer for a short while.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// At most this many introspection requests at once; more wait their turn.
    in_flight: tokio::sync::Semaphore,
    calls: AtomicU64,
}

/// Concurrent introspection requests per guard.
const MAX_IN_FLIGHT: usize = 32;
/// The largest introspection response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What a guard checks an introspected token against.
pub(crate) struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a Arc<str>,
    pub leeway: i64,
}

impl Introspector {
    pub(crate) fn new(
        endpoint: String,
        client_id: &str,
        secret: &str,
        http: reqwest::Client,
        max_positive: Duration,
        negative: Duration,
        capacity: usize,
    ) -> Option<Self> {
        // RFC 6749 §2.3.1: form-urlencode both before joining.
        let encode = |s: &str| url_encode(s);
        let pair = format!("{}:{}", encode(client_id), encode(secret));
        let mut authorization = HeaderValue::try_from(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
        .ok()?;
        authorization.set_sensitive(true);
        Some(Introspector {
            endpoint,
            authorization,
            http,
            max_positive: i64::try_from(max_positive.as_secs()).unwrap_or(i64::MAX),
            negative: i64::try_from(negative.as_secs()).unwrap_or(i64::MAX),
            active: TokenCache::new(capacity),
            inactive: TokenCache::new(capacity / 4),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            calls: AtomicU64::new(0),
        })
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
            let _turn = self
                .in_flight
                .acquire()
                .await
                .map_err(|_| Rejection::Unavailable)?;
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

    /// One introspection request (RFC 7662 §2.1). Anything but a clear answer is
    /// `Unavailable`: a token is never taken as active without one.
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
            .timeout(Duration::from_secs(5))
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
        let body = crate::jwks::read_limited(response, MAX_RESPONSE_BYTES)
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
