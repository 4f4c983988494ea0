//! Public keys that `private_key_jwt` clients publish at a `jwks_uri` (RFC 7591 §2), fetched
//! by the server with timeouts and a cache, and never from an address inside the network
//! unless the operator allows it (SSRF; docs/CONFORMANCE.md, "Client keys at a jwks_uri").
//! The check is made when the client is registered and again on every connection, so a name
//! that later resolves to a private address (DNS rebinding) is refused too.
//!
//! Trusted external issuers (federated identity) are found here too: their discovery
//! documents are fetched and checked (body cap, exact issuer) by latchkey-common's
//! `discovery::fetch_document`, with this module's HTTP client, so the same rules apply.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use latchkey_common::Jwks;
use latchkey_common::discovery::{FetchError, IssuerDocument, fetch_document, well_known};
use latchkey_common::retry::exponential_backoff;
use tokio::sync::watch;
use url::Url;

use crate::clock::Clock;

/// Unknown kids refetch a client's JWKS at most this often.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Whether `ip` is a public unicast address, one this server may fetch from: outside every
/// special-purpose range of the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC
/// 6890 and its updates), whether or not the registry calls a range globally reachable, and
/// outside the deprecated ranges that still route somewhere (6to4 relays, site-local). An
/// IPv6 address must be global unicast (`2000::/3`), so IPv4-compatible (`::/96`, including
/// `[::127.0.0.1]`), NAT64 (`64:ff9b::/96`), discard, unique-local, link-local, site-local
/// and multicast addresses are refused; an IPv4-mapped address is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let bits = u128::from(v6);
            let within = |prefix: u128, len: u32| bits >> (128 - len) == prefix >> (128 - len);
            within(0x2000 << 112, 3)
                && !within(0x2001 << 112, 23) // IETF protocol assignments: Teredo, benchmarking, ORCHID
                && !within(0x2001_0db8 << 96, 32) // documentation
                && !within(0x2002 << 112, 16) // 6to4
                && !within(0x3fff << 112, 20) // documentation (RFC 9637)
        }
    }
}

fn is_public_v4(v4: std::net::Ipv4Addr) -> bool {
    let bits = u32::from(v4);
    let within = |prefix: u32, len: u32| bits >> (32 - len) == prefix >> (32 - len);
    const SPECIAL: [(u32, u32); 15] = [
        (0x0000_0000, 8),  // "this network"
        (0x0a00_0000, 8),  // private
        (0x6440_0000, 10), // shared address space (CGNAT)
        (0x7f00_0000, 8),  // loopback
        (0xa9fe_0000, 16), // link-local (cloud metadata)
        (0xac10_0000, 12), // private
        (0xc000_0000, 24), // IETF protocol assignments
        (0xc000_0200, 24), // documentation
        (0xc058_6300, 24), // 6to4 relay anycast (deprecated)
        (0xc0a8_0000, 16), // private
        (0xc612_0000, 15), // benchmarking
        (0xc633_6400, 24), // documentation
        (0xcb00_7100, 24), // documentation
        (0xe000_0000, 4),  // multicast
        (0xf000_0000, 4),  // reserved, and the broadcast address
    ];
    !SPECIAL.iter().any(|&(prefix, len)| within(prefix, len))
}

/// Why a `jwks_uri` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksUriError {
    /// The URL itself is not one the server fetches from (scheme, credentials, no host).
    #[error("{0}")]
    Url(String),
    /// Its host does not resolve, or resolves inside the network. The text names the
    /// addresses: fine for an operator, not for an untrusted caller (who could map the
    /// internal network's names with it).
    #[error("{0}")]
    Address(String),
}

/// Checks a `jwks_uri` an operator registers: an absolute `https` URL (plain `http` only when
/// private addresses are allowed, for development), without credentials or fragment, whose
/// host resolves only to public addresses unless `allow_private`.
pub async fn check_jwks_uri(uri: &str, allow_private: bool) -> Result<String, JwksUriError> {
    use JwksUriError::{Address, Url as BadUrl};
    let url = Url::parse(uri).map_err(|e| BadUrl(format!("jwks_uri {uri:?}: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err(BadUrl(format!("jwks_uri {uri:?} must use https"))),
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(BadUrl(format!(
            "jwks_uri {uri:?} may not hold user information or a fragment"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| BadUrl(format!("jwks_uri {uri:?} has no host")))?;
    if !allow_private {
        let port = url.port_or_known_default().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Address(format!("jwks_uri {uri:?}: cannot resolve {host}: {e}")))?
            .collect();
        if addresses.is_empty() {
            return Err(Address(format!("jwks_uri {uri:?}: {host} has no address")));
        }
        if let Some(inner) = addresses.iter().find(|a| !is_public(a.ip())) {
            return Err(Address(format!(
                "jwks_uri {uri:?} points inside the network ({}); the server would fetch it \
                 from there. Use a public address, or --allow-private-jwks-uri if this is \
                 intended",
                inner.ip()
            )));
        }
    }
    Ok(url.to_string())
}

/// Resolves names to their public addresses only (when private ones are not allowed).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{} has no public address", name.as_str()).into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// How long a trusted issuer's discovered `jwks_uri` is used before it is read again (in the
/// background: the one found stays in use meanwhile, and while discovery fails).
const DISCOVERY_MAX_AGE_SECONDS: i64 = 3600;

/// The longest a token request waits for an issuer's first discovery before it gets 503
/// (the discovery itself goes on in the background for later requests).
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// After a failed discovery, the next waits this long, doubling with each failure in a row...
const FIRST_DISCOVERY_BACKOFF: Duration = Duration::from_secs(1);
/// ...up to this long.
const MAX_DISCOVERY_BACKOFF: Duration = Duration::from_secs(300);

/// Each discovery document request is given this long.
const DISCOVERY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The JWK Sets of every client registered with a `jwks_uri`, and of every trusted external
/// issuer (federated identity), one cache per URL, kept across reloads of the client list.
pub struct RemoteKeys {
    http: reqwest::Client,
    allow_private: bool,
    clock: Arc<dyn Clock>,
    sets: Mutex<HashMap<String, Arc<Jwks>>>,
    /// Each trusted issuer's discovery, on its own: one issuer never waits for another. Only
    /// registered issuers are ever looked up, so the map grows with registrations, not with
    /// requests.
    issuers: Mutex<HashMap<String, Arc<Mutex<Discovery>>>>,
}

/// What is known of one trusted issuer's discovery document.
#[derive(Default)]
struct Discovery {
    /// Its `jwks_uri` and when it was read.
    found: Option<(String, i64)>,
    /// Failures in a row; no new attempt before `retry_at` (backoff).
    failures: u32,
    retry_at: i64,
    /// A discovery in flight, and when it began: becomes `true` when it ends. One at a
    /// time per issuer.
    running: Option<(watch::Receiver<bool>, tokio::time::Instant)>,
}

impl RemoteKeys {
    /// Whether key URLs may point inside the network (`--allow-private-jwks-uri`): registering
    /// a `jwks_uri` over the admin API follows the same rule as fetching it.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Fetches with a 5 s connect timeout (the Jwks adds a 5 s request timeout), no
    /// redirects (so none to an inner address), no proxy, bodies read up to a cap (256 KiB
    /// for a JWK Set, 64 KiB for a discovery document), and, unless `allow_private`, only
    /// public addresses.
    pub fn new(clock: Arc<dyn Clock>, allow_private: bool) -> Result<Self, String> {
        let mut http = reqwest::Client::builder()
            // A proxy would resolve the name itself, out of reach of the address check; so
            // HTTPS_PROXY and the like are never read here.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            http = http.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(RemoteKeys {
            http: http.build().map_err(|e| e.to_string())?,
            allow_private,
            clock,
            sets: Mutex::new(HashMap::new()),
            issuers: Mutex::new(HashMap::new()),
        })
    }

    /// The key source of the external issuer `issuer`, through its discovery document
    /// (OpenID Connect Discovery, then RFC 8414), which must name exactly this issuer.
    ///
    /// Per issuer, one discovery at a time (single flight). A `jwks_uri` found is used for an
    /// hour, then read again in the background while the old one stays in use
    /// (stale-while-revalidate), as it does while discovery fails. A failure is retried only
    /// after a backoff (1 s doubling to 5 min); meanwhile requests get `None` at once. A
    /// first discovery is waited for until [`DISCOVERY_WAIT`] after it began, so requests
    /// that come later while a dead issuer holds it up get `None` at once. `None` when no key
    /// source is known.
    pub async fn for_issuer(&self, issuer: &str) -> Option<Arc<Jwks>> {
        let entry = Arc::clone(
            self.issuers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(issuer.to_owned())
                .or_default(),
        );
        let now = self.clock.unix_seconds();
        let (mut running, started) = {
            let mut discovery = entry.lock().unwrap_or_else(PoisonError::into_inner);
            let fresh = discovery
                .found
                .as_ref()
                .is_some_and(|(_, at)| now - at < DISCOVERY_MAX_AGE_SECONDS);
            if !fresh && discovery.running.is_none() && now >= discovery.retry_at {
                discovery.running = Some(self.start_discovery(issuer, &entry));
            }
            match &discovery.found {
                // Fresh, or stale and being read again: use it now.
                Some((uri, _)) => return self.for_uri(uri),
                None => discovery.running.clone()?,
            }
        };
        let _ =
            tokio::time::timeout_at(started + DISCOVERY_WAIT, running.wait_for(|done| *done)).await;
        let found = entry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .found
            .clone();
        found.and_then(|(uri, _)| self.for_uri(&uri))
    }

    /// Discovers `issuer` in a task of its own, which records what it found (or the failure
    /// and the next time to try) in `entry`.
    fn start_discovery(
        &self,
        issuer: &str,
        entry: &Arc<Mutex<Discovery>>,
    ) -> (watch::Receiver<bool>, tokio::time::Instant) {
        let (done, running) = watch::channel(false);
        let http = self.http.clone();
        let allow_private = self.allow_private;
        let issuer = issuer.to_owned();
        let entry = Arc::clone(entry);
        let clock = Arc::clone(&self.clock);
        tokio::spawn(async move {
            // Whatever happens to this task, the discovery ends and waiters are told.
            let _end = EndDiscovery {
                entry: Arc::clone(&entry),
                done,
            };
            let result = discover(&http, allow_private, &issuer).await;
            let now = clock.unix_seconds();
            let mut discovery = entry.lock().unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(uri) => {
                    discovery.found = Some((uri, now));
                    discovery.failures = 0;
                    discovery.retry_at = now;
                }
                Err(error) => {
                    discovery.failures = discovery.failures.saturating_add(1);
                    let backoff = discovery_backoff(discovery.failures);
                    discovery.retry_at = now.saturating_add(backoff);
                    tracing::warn!(
                        %issuer,
                        %error,
                        retry_in_seconds = backoff,
                        "discovery of a trusted issuer failed"
                    );
                }
            }
        });
        (running, tokio::time::Instant::now())
    }

    /// The key source for `uri`. `None` for a URL this server must not fetch (an address
    /// literal inside the network while that is not allowed).
    pub fn for_uri(&self, uri: &str) -> Option<Arc<Jwks>> {
        if !fetchable(uri, self.allow_private) {
            return None;
        }
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        let jwks = sets.entry(uri.to_owned()).or_insert_with(|| {
            Arc::new(Jwks::new(
                uri.to_owned(),
                self.http.clone(),
                Arc::clone(&self.clock),
                MIN_REFETCH_INTERVAL,
            ))
        });
        Some(Arc::clone(jwks))
    }
}

/// The seconds to wait after `failures` failed discoveries in a row: latchkey-common's
/// exponential backoff (1 s doubling to 5 min), without the jitter of its `RetryPolicy` and
/// without its deadline. The semantics differ there: one task per issuer rediscovers, so
/// there is no crowd of clients to spread out; the wait is counted in whole seconds on the
/// server's clock (which tests move), where a jittered second would round to none; and
/// discovery is never given up, only tried less often.
fn discovery_backoff(failures: u32) -> i64 {
    let wait = exponential_backoff(failures, FIRST_DISCOVERY_BACKOFF, MAX_DISCOVERY_BACKOFF);
    i64::try_from(wait.as_secs()).unwrap_or(i64::MAX)
}

/// What the server reads of a discovery document: the issuer it names and its keys. (A
/// workload identity issuer, like a Kubernetes cluster's, has no token endpoint, so this is
/// not `AuthorizationServerMetadata`.)
#[derive(serde::Deserialize)]
struct IssuerKeys {
    issuer: String,
    jwks_uri: String,
}

impl IssuerDocument for IssuerKeys {
    fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// The `jwks_uri` of `issuer`'s discovery document: OpenID Connect Discovery first (what
/// workload identity issuers publish), then RFC 8414. No answer or a status other than 200
/// moves on to the next document; a document that is too large, malformed, names another
/// issuer (OIDC Discovery §4.3, RFC 8414 §3.3) or a `jwks_uri` this server may not fetch
/// ends the discovery. Never retried here: a failure is tried again after the backoff.
async fn discover(
    http: &reqwest::Client,
    allow_private: bool,
    issuer: &str,
) -> Result<String, String> {
    let url = Url::parse(issuer).map_err(|e| e.to_string())?;
    let documents = well_known(&url);
    let mut last_error = String::new();
    for document in [documents.openid, documents.rfc8414] {
        if !fetchable(document.as_str(), allow_private) {
            return Err(format!(
                "{document} is not an address this server may fetch"
            ));
        }
        let found: IssuerKeys =
            match fetch_document(http, &document, issuer, DISCOVERY_REQUEST_TIMEOUT).await {
                Ok(found) => found,
                Err(error @ (FetchError::Unreachable(_) | FetchError::Status(..))) => {
                    last_error = format!("{document}: {error}");
                    continue;
                }
                Err(FetchError::WrongIssuer(named)) => {
                    return Err(format!(
                        "{document} names the issuer {named:?}, not {issuer:?}"
                    ));
                }
                Err(error) => return Err(format!("{document}: {error}")),
            };
        if !fetchable(&found.jwks_uri, allow_private) {
            return Err(format!(
                "{document} names the jwks_uri {:?}, which this server may not fetch",
                found.jwks_uri
            ));
        }
        return Ok(found.jwks_uri);
    }
    Err(last_error)
}

/// Whether this server may fetch `uri` at all: `https` to a name or a public address literal,
/// unless private addresses are allowed. (Names are checked again when they resolve.)
fn fetchable(uri: &str, allow_private: bool) -> bool {
    if allow_private {
        return true;
    }
    let Ok(url) = Url::parse(uri) else {
        return false;
    };
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return false,
    };
    url.scheme() == "https" && literal.is_none_or(is_public)
}

/// Ends an issuer's discovery when its task ends, normally or not: no discovery is running
/// any more, and its waiters are woken.
struct EndDiscovery {
    entry: Arc<Mutex<Discovery>>,
    done: watch::Sender<bool>,
}

impl Drop for EndDiscovery {
    fn drop(&mut self) {
        self.entry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running = None;
        let _ = self.done.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_backs_off_from_a_second_to_five_minutes() {
        let waits: Vec<i64> = (1..=11).map(discovery_backoff).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(discovery_backoff(u32::MAX), 300);
    }

    #[test]
    fn inner_addresses_are_not_public() {
        for inner in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2001::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "3fff::1",
            "fec0::1",
            "100::1",
            "ff02::1",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.255",
            "192.88.99.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(inner.parse().unwrap()), "{inner}");
        }
        for public in [
            "93.184.216.34",
            "2606:4700::1111",
            "8.8.8.8",
            "2a00:1450::1",
            "198.17.255.255",
            "198.20.0.1",
            "192.0.1.1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
