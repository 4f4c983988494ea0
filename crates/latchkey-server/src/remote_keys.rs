//! Public keys that `private_key_jwt` clients publish at a `jwks_uri` (RFC 7591 §2), fetched
//! by the server with timeouts and a cache, and never from an address inside the network
//! unless the operator allows it (checklist D: SSRF). The check is made when the client is
//! registered and again on every connection, so a name that later resolves to a private
//! address (DNS rebinding) is refused too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey_guard::{Jwks, read_limited};
use url::Url;

use crate::clock::Clock;

/// Unknown kids refetch a client's JWKS at most this often.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Whether `ip` is a public unicast address: not loopback, private, link-local, shared
/// (CGNAT), unique-local, multicast, unspecified, broadcast or documentation space.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Checks a `jwks_uri` an operator registers: an absolute `https` URL (plain `http` only when
/// private addresses are allowed, for development), without credentials or fragment, whose
/// host resolves only to public addresses unless `allow_private`.
pub async fn check_jwks_uri(uri: &str, allow_private: bool) -> Result<String, String> {
    let url = Url::parse(uri).map_err(|e| format!("jwks_uri {uri:?}: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err(format!("jwks_uri {uri:?} must use https")),
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(format!(
            "jwks_uri {uri:?} may not hold user information or a fragment"
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("jwks_uri {uri:?} has no host"))?;
    if !allow_private {
        let port = url.port_or_known_default().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("jwks_uri {uri:?}: cannot resolve {host}: {e}"))?
            .collect();
        if addresses.is_empty() {
            return Err(format!("jwks_uri {uri:?}: {host} has no address"));
        }
        if let Some(inner) = addresses.iter().find(|a| !is_public(a.ip())) {
            return Err(format!(
                "jwks_uri {uri:?} points inside the network ({}); the server would fetch it \
                 from there. Use a public address, or --allow-private-jwks-uri if this is \
                 intended",
                inner.ip()
            ));
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

/// How long a trusted issuer's discovered `jwks_uri` is used before it is read again.
const DISCOVERY_MAX_AGE_SECONDS: i64 = 3600;

/// The largest discovery document read.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// The JWK Sets of every client registered with a `jwks_uri`, and of every trusted external
/// issuer (federated identity), one cache per URL, kept across reloads of the client list.
pub struct RemoteKeys {
    http: reqwest::Client,
    allow_private: bool,
    clock: Arc<dyn latchkey_client::Clock>,
    seconds: Arc<dyn Clock>,
    sets: Mutex<HashMap<String, Arc<Jwks>>>,
    /// Issuer → its jwks_uri and when it was discovered.
    issuers: Mutex<HashMap<String, (String, i64)>>,
    /// One discovery at a time.
    discovering: tokio::sync::Mutex<()>,
}

impl RemoteKeys {
    /// Fetches with a 5 s connect timeout (the Jwks adds a 5 s request timeout), no
    /// redirects, and, unless `allow_private`, only public addresses.
    pub fn new(clock: Arc<dyn Clock>, allow_private: bool) -> Result<Self, String> {
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            http = http.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(RemoteKeys {
            http: http.build().map_err(|e| e.to_string())?,
            allow_private,
            clock: Arc::new(SecondsClock(Arc::clone(&clock))),
            seconds: clock,
            sets: Mutex::new(HashMap::new()),
            issuers: Mutex::new(HashMap::new()),
            discovering: tokio::sync::Mutex::new(()),
        })
    }

    /// The key source of the external issuer `issuer`, through its discovery document
    /// (OpenID Connect Discovery, then RFC 8414), which must name exactly this issuer. The
    /// `jwks_uri` found is used for an hour; while discovery fails, the last one found stays.
    /// `None` when no key source could ever be found.
    pub async fn for_issuer(&self, issuer: &str) -> Option<Arc<Jwks>> {
        let now = self.seconds.now();
        let known = self.known_issuer(issuer);
        if let Some((uri, at)) = &known
            && now - at < DISCOVERY_MAX_AGE_SECONDS
        {
            return self.for_uri(uri);
        }
        let _one = self.discovering.lock().await;
        // Another request may have discovered it meanwhile.
        if let Some((uri, at)) = self.known_issuer(issuer)
            && now - at < DISCOVERY_MAX_AGE_SECONDS
        {
            return self.for_uri(&uri);
        }
        match self.discover(issuer).await {
            Ok(uri) => {
                self.issuers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(issuer.to_owned(), (uri.clone(), now));
                self.for_uri(&uri)
            }
            Err(error) => {
                tracing::warn!(%issuer, %error, "discovery of a trusted issuer failed");
                known.and_then(|(uri, _)| self.for_uri(&uri))
            }
        }
    }

    fn known_issuer(&self, issuer: &str) -> Option<(String, i64)> {
        self.issuers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(issuer)
            .cloned()
    }

    /// The `jwks_uri` of `issuer`'s discovery document.
    async fn discover(&self, issuer: &str) -> Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = Url::parse(issuer).map_err(|e| e.to_string())?;
        let base = issuer.trim_end_matches('/');
        // OpenID Connect Discovery §4 appends; RFC 8414 §3.1 inserts before the path.
        let rfc8414 = format!(
            "{}://{}/.well-known/oauth-authorization-server{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.path().trim_end_matches('/')
        );
        let rfc8414 = match url.port() {
            Some(port) => rfc8414.replacen(
                url.host_str().unwrap_or_default(),
                &format!("{}:{port}", url.host_str().unwrap_or_default()),
                1,
            ),
            None => rfc8414,
        };
        let mut last_error = String::new();
        for document in [format!("{base}/.well-known/openid-configuration"), rfc8414] {
            if self.for_uri(&document).is_none() {
                return Err(format!(
                    "{document} is not an address this server may fetch"
                ));
            }
            let response = match self
                .http
                .get(&document)
                .timeout(Duration::from_secs(5))
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    last_error = format!("{document}: HTTP {}", r.status().as_u16());
                    continue;
                }
                Err(e) => {
                    last_error = format!("{document}: {e}");
                    continue;
                }
            };
            let body = read_limited(response, MAX_DISCOVERY_BYTES).await?;
            let found: Discovery =
                serde_json::from_slice(&body).map_err(|e| format!("{document}: {e}"))?;
            // OIDC Discovery §4.3, RFC 8414 §3.3: the document must name this very issuer.
            if found.issuer != issuer {
                return Err(format!(
                    "{document} names the issuer {:?}, not {issuer:?}",
                    found.issuer
                ));
            }
            return Ok(found.jwks_uri);
        }
        Err(last_error)
    }

    /// The key source for `uri`. `None` for a URL this server must not fetch (an address
    /// literal inside the network while that is not allowed).
    pub fn for_uri(&self, uri: &str) -> Option<Arc<Jwks>> {
        if !self.allow_private {
            let url = Url::parse(uri).ok()?;
            let literal = match url.host()? {
                url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
                url::Host::Domain(_) => None,
            };
            if literal.is_some_and(|ip| !is_public(ip)) || url.scheme() != "https" {
                return None;
            }
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

/// The server's clock (seconds) as the clock the JWKS cache reads.
struct SecondsClock(Arc<dyn Clock>);

impl latchkey_client::Clock for SecondsClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(self.0.now()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(!is_public(inner.parse().unwrap()), "{inner}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
