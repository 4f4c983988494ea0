//! Start-up: validate the configuration, open keys, bind the listener, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use latchkey_proto::{AuthorizationServerMetadata, GrantType, SigningAlg};
use tokio::net::TcpListener;

use crate::cache::{Cache, CacheError};
use crate::clock::Clock;
use crate::connections::{self, ConnectionLimits, Transport};
use crate::http::{self, AppState, paths};
use crate::janitor::Janitor;
use crate::kek::KeyEncryptionKey;
use crate::keys::{JWKS_MAX_AGE_SECONDS, KeyError, KeySource};
use crate::metrics::Metrics;
use crate::model::Actor;
use crate::remote_keys::RemoteKeys;
use crate::service::Services;
use crate::store::{Store, StoreError};
use crate::tls::{Tls, TlsFiles};
use crate::usage::Usage;

/// What `latchkey serve` is told at start-up. Every field is a choice the operator can see.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Issuer identifier; `None` means `http://<bound address>`.
    pub issuer: Option<String>,
    /// Algorithm new tokens are signed with.
    pub signing_alg: SigningAlg,
    /// Seals private keys at rest; `None` stores them in the clear.
    pub key_encryption_key: Option<Arc<KeyEncryptionKey>>,
    /// Rotate the signing key automatically once it has signed this long (seconds).
    pub key_rotation: Option<i64>,
    /// How often the janitor runs.
    pub janitor_interval: Duration,
    /// Also accept the token endpoint URL as the sole audience of a `private_key_jwt`
    /// assertion, for clients that cannot be changed to send the issuer. Off by default
    /// (draft-ietf-oauth-rfc7523bis §5: the issuer is the one audience).
    pub accept_token_endpoint_audience: bool,
    /// Let clients' `jwks_uri` point at loopback, private and link-local addresses (for
    /// development). Off by default: the server never fetches from inside the network.
    pub allow_private_jwks_uri: bool,
    /// Terminate TLS with these files (and take client certificates); `None` serves plain
    /// HTTP, for use behind a TLS terminator.
    pub tls: Option<TlsFiles>,
    /// Require a server-provided nonce in DPoP proofs at the token endpoint (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Timeouts, the request head limit and the connection cap.
    pub connections: ConnectionLimits,
    /// How many client records the server keeps in memory (and how many unknown ids it
    /// remembers); others are read from the database when a request names them.
    pub client_cache_size: usize,
    /// How long audit events are kept (seconds); the janitor deletes older ones.
    pub audit_retention: i64,
    /// Count each client's tokens, refusals, introspections and revocations per minute
    /// (`crate::usage`).
    pub usage_accounting: bool,
    /// How long usage counts are kept (seconds); the janitor deletes older minutes.
    pub usage_retention: i64,
    /// A client that gets more than this many tokens per token lifetime at one source address
    /// within an hour is flagged as not caching its tokens; 0 never flags.
    pub not_caching_threshold: u32,
    /// Per-client issuance series in the metrics: at most this many clients, the rest `other`.
    pub metrics_top_clients: usize,
    /// Serve the admin API on this address, and not on `listen`; `None` serves it on `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics at `/metrics` on this address; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Failed client authentications allowed per client id and source address before 429;
    /// `None`: no such limit.
    pub failed_auth_limit: Option<crate::throttle::Rate>,
    /// Failed client authentications allowed per source address, whatever the ids.
    pub failed_auth_limit_per_address: Option<crate::throttle::Rate>,
    /// Peers whose `X-Forwarded-For` names the client's address (proxies in front of the
    /// server); from any other peer the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve the web console at `/console/`, wherever the admin API is served.
    pub console: bool,
    /// How often usage counts are written to the database (`crate::usage::FLUSH_INTERVAL`
    /// by default; tests shorten it).
    pub usage_flush_interval: Duration,
    /// With `admin_listen`: the origin clients reach the admin API by (`https://host[:port]`),
    /// which DPoP proofs name; `None` means the listener's own address.
    pub admin_url: Option<String>,
}

/// How long audit events are kept by default: 90 days.
pub const DEFAULT_AUDIT_RETENTION: i64 = 90 * 24 * 3600;

/// How long usage counts are kept by default: 35 days (a month's bill and some).
pub const DEFAULT_USAGE_RETENTION: i64 = 35 * 24 * 3600;

impl Default for ServerConfig {
    /// Loopback on a free port, the issuer from the bound address, ES256, keys in the clear,
    /// no automatic rotation, the janitor every minute, strict assertion audiences, 100,000
    /// cached clients, audit events kept 90 days, usage counted and kept 35 days.
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            issuer: None,
            signing_alg: SigningAlg::Es256,
            key_encryption_key: None,
            key_rotation: None,
            janitor_interval: Duration::from_secs(60),
            accept_token_endpoint_audience: false,
            allow_private_jwks_uri: false,
            tls: None,
            dpop_nonce: false,
            connections: ConnectionLimits::DEFAULT,
            client_cache_size: crate::cache::DEFAULT_CLIENT_CACHE_SIZE,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            usage_accounting: true,
            usage_retention: DEFAULT_USAGE_RETENTION,
            not_caching_threshold: crate::usage::DEFAULT_NOT_CACHING_THRESHOLD,
            metrics_top_clients: crate::metrics::DEFAULT_TOP_CLIENTS,
            admin_listen: None,
            admin_url: None,
            metrics_listen: None,
            failed_auth_limit: Some(crate::throttle::DEFAULT_PER_CLIENT_ADDRESS),
            failed_auth_limit_per_address: Some(crate::throttle::DEFAULT_PER_ADDRESS),
            trusted_proxies: Vec::new(),
            console: true,
            usage_flush_interval: crate::usage::FLUSH_INTERVAL,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signing keys could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<CacheError> for StartError {
    fn from(err: CacheError) -> Self {
        match err {
            CacheError::Store(e) => StartError::Store(e),
            CacheError::Key(e) => StartError::Key(e),
        }
    }
}

/// A server bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The admin API's own listener, its address and router, with `--admin-listen`.
    admin: Option<(TcpListener, SocketAddr, Router)>,
    /// The metrics listener, its address and router, with `--metrics-listen`.
    metrics: Option<(TcpListener, SocketAddr, Router)>,
    state: Arc<AppState>,
    router: Router,
    janitor: Janitor,
    janitor_interval: Duration,
    connections: ConnectionLimits,
}

impl Application {
    /// Validates `config`, loads (or creates) the signing key and binds the listener.
    pub async fn build(
        config: ServerConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let admin_listener = bind_optional(config.admin_listen).await?;
        let metrics_listener = bind_optional(config.metrics_listen).await?;
        config.connections.validate().map_err(StartError::Config)?;
        let tls = config
            .tls
            .as_ref()
            .map(Tls::load)
            .transpose()
            .map_err(StartError::Config)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let issuer = config
            .issuer
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{local_addr}"));
        let (issuer, issuer_path) = normalize_issuer(&issuer)?;
        if config
            .key_rotation
            .is_some_and(|p| p < MIN_KEY_ROTATION_SECONDS)
        {
            return Err(StartError::Config(format!(
                "the key rotation period must be at least {MIN_KEY_ROTATION_SECONDS} s, so that each next key is published long enough before it signs"
            )));
        }
        let key_source = KeySource {
            alg: config.signing_alg,
            kek: config.key_encryption_key.clone(),
        };
        // This server's id: how it acknowledges changes, and who it is in the audit trail when
        // it changes keys itself. It names the host and address, so an operator told that a
        // server did not confirm a change knows which one: `web-3/10.0.0.5:8080/3jYfVorMa3U`.
        let server_id = format!(
            "{}/{local_addr}/{}",
            host_name(),
            crate::secret::new_row_id()
        );
        let keys = key_source
            .load_or_create(
                store.as_ref(),
                &Actor::Server(server_id.clone()),
                clock.unix_seconds(),
            )
            .await?;
        let metadata = metadata(&issuer, tls.as_ref());
        let metadata_json = Bytes::from(
            serde_json::to_vec(&metadata).map_err(|e| StartError::Config(e.to_string()))?,
        );
        let cache = Arc::new(
            Cache::load(
                store.as_ref(),
                keys,
                key_source.clone(),
                Arc::clone(&clock),
                server_id,
                config.client_cache_size,
            )
            .await?,
        );
        let janitor = Janitor::new(
            Arc::clone(&store),
            Arc::clone(&cache),
            Arc::clone(&clock),
            key_source,
            config.key_rotation,
            config.audit_retention,
            config.usage_retention,
        );
        let max_age = u32::try_from(JWKS_MAX_AGE_SECONDS).unwrap_or(300);
        let compatible_assertion_audience = config
            .accept_token_endpoint_audience
            .then(|| metadata.token_endpoint.clone());
        let remote_keys = RemoteKeys::new(Arc::clone(&clock), config.allow_private_jwks_uri)
            .map_err(StartError::Config)?;
        let admin_origin = match (&admin_listener, &config.admin_url) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(StartError::Config(
                    "--admin-url is for an admin API on a listener of its own (--admin-listen)"
                        .into(),
                ));
            }
            (Some(_), Some(url)) => Some(admin_origin(url)?),
            (Some((_, addr)), None) => Some(format!(
                "{}://{addr}",
                if tls.is_some() { "https" } else { "http" }
            )),
        };
        let metrics = Arc::new(Metrics::new(
            config.metrics_listen.is_some(),
            config.metrics_top_clients,
        ));
        let services = Services {
            cache,
            store,
            clock,
            issuer,
            compatible_assertion_audience,
            token_endpoint: metadata.token_endpoint.clone(),
            remote_keys,
            client_ca: tls.as_ref().and_then(|tls| tls.client_ca.clone()),
            dpop_nonce: config.dpop_nonce,
            usage: Arc::new(
                Usage::new(
                    config.usage_accounting,
                    config.not_caching_threshold,
                    Arc::clone(&metrics),
                )
                .flushing_every(config.usage_flush_interval),
            ),
            metrics,
            throttle: crate::throttle::Throttle::new(
                config.failed_auth_limit,
                config.failed_auth_limit_per_address,
                crate::throttle::DEFAULT_CAPACITY,
            ),
        };
        let state = Arc::new(AppState {
            services,
            tls,
            metadata_json,
            metadata_max_age: max_age,
            jwks_max_age: max_age,
            shutting_down: AtomicBool::new(false),
            admin_token_endpoint: admin_origin
                .as_ref()
                .map(|origin| format!("{origin}{}", http::paths::TOKEN)),
            admin_origin,
            console: config.console,
            trusted_proxies: config.trusted_proxies.clone(),
        });
        let router = http::router(
            Arc::clone(&state),
            &issuer_path,
            state.admin_origin.is_some(),
        );
        let admin = admin_listener
            .map(|(listener, addr)| (listener, addr, http::admin_router(Arc::clone(&state))));
        let metrics = metrics_listener
            .map(|(listener, addr)| (listener, addr, http::metrics_router(Arc::clone(&state))));
        Ok(Application {
            listener,
            local_addr,
            admin,
            metrics,
            state,
            router,
            janitor,
            janitor_interval: config.janitor_interval,
            connections: config.connections,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics listener's address, when there is one (`metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr, _)| *addr)
    }

    /// The admin API's own address, when it has one (`admin_listen`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr, _)| *addr)
    }

    /// The issuer identifier in use.
    pub fn issuer(&self) -> &str {
        &self.state.services.issuer
    }

    /// The key id tokens are signed with now.
    pub fn signing_kid(&self) -> String {
        self.state
            .services
            .cache
            .key_ring()
            .signing_key()
            .kid()
            .to_owned()
    }

    /// The server's in-memory state (client records, keys, deny list), to see what it holds.
    pub fn cache(&self) -> Arc<Cache> {
        Arc::clone(&self.state.services.cache)
    }

    /// The server's usage accounting, to flush on demand (tests, tools); it also flushes by
    /// itself every `usage::FLUSH_INTERVAL` while the server runs, and once more at the end.
    pub fn usage(&self) -> Arc<Usage> {
        Arc::clone(&self.state.services.usage)
    }

    /// The server's janitor, to run a pass on demand (tests, tools); it also runs by itself
    /// every `janitor_interval` while the server runs.
    pub fn janitor(&self) -> Janitor {
        self.janitor.clone()
    }

    /// Serves until `shutdown` completes; then readiness turns false, the listener closes and
    /// in-flight requests finish (within the shutdown timeout) before this returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let state = Arc::clone(&self.state);
        let (stopped, stop) = tokio::sync::watch::channel(false);
        let until_stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        let poller = tokio::spawn(Arc::clone(&state.services.cache).run_poller(
            Arc::clone(&state.services.store),
            until_stopped(stop.clone()),
        ));
        let upkeep = tokio::spawn(
            Arc::clone(&state.services.metrics).run_upkeep(until_stopped(stop.clone())),
        );
        let usage = tokio::spawn(Arc::clone(&state.services.usage).run(
            Arc::clone(&state.services.store),
            Arc::clone(&state.services.clock),
            until_stopped(stop.clone()),
        ));
        let janitor = tokio::spawn(self.janitor.run(self.janitor_interval, until_stopped(stop)));
        // Shutdown reaches every listener at once.
        let (draining_now, draining_signal) = tokio::sync::watch::channel(false);
        let drain_when = |mut signal: tokio::sync::watch::Receiver<bool>| async move {
            let _ = signal.wait_for(|draining| *draining).await;
        };
        {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                shutdown.await;
                state.shutting_down.store(true, Ordering::SeqCst);
                tracing::info!("shutting down: no longer ready, draining in-flight requests");
                let _ = draining_now.send(true);
            });
        }
        // Handlers find the peer in `ConnectInfo<SocketAddr>` and, with TLS, its certificate
        // chain in `ConnectInfo<TlsPeer>`.
        let transport = match &state.tls {
            Some(tls) => Transport::Tls(tls.acceptor()),
            None => Transport::Plain,
        };
        let admin = self.admin.map(|(listener, _, router)| {
            tokio::spawn(connections::serve(
                listener,
                transport.clone(),
                router,
                self.connections,
                drain_when(draining_signal.clone()),
            ))
        });
        // Metrics are scraped over plain HTTP (a scraper rarely holds a client certificate),
        // on an address of the operator's choosing.
        let metrics = self.metrics.map(|(listener, _, router)| {
            tokio::spawn(connections::serve(
                listener,
                Transport::Plain,
                router,
                self.connections,
                drain_when(draining_signal.clone()),
            ))
        });
        connections::serve(
            self.listener,
            transport,
            self.router,
            self.connections,
            drain_when(draining_signal),
        )
        .await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        let _ = stopped.send(true);
        let _ = poller.await;
        let _ = janitor.await;
        // After the last request: its counts are written too.
        let _ = usage.await;
        let _ = upkeep.await;
    }
}

/// This machine's host name (Linux's, or `HOSTNAME`), for the server's id; `unknown-host`
/// when neither says.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().replace('/', "-"))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// A listener of its own (`--admin-listen`, `--metrics-listen`) and the address it got, if one
/// was asked for.
async fn bind_optional(
    addr: Option<SocketAddr>,
) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let bound = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bound)?;
    let local = listener.local_addr().map_err(bound)?;
    Ok(Some((listener, local)))
}

/// `--admin-url`: `http(s)://host[:port]`, nothing after it; without a trailing `/`.
fn admin_origin(url: &str) -> Result<String, StartError> {
    let bad = || {
        StartError::Config(format!(
            "--admin-url {url:?} must be an origin like https://admin.example:9443, without a path"
        ))
    };
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(bad)?;
    if rest.is_empty()
        || rest.contains(['/', '?', '#', '@'])
        || !rest.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(url.to_owned())
}

/// RFC 8414 §2: the issuer is an `https` (or, for local use, `http`) URL with no query or
/// fragment. A trailing `/` is removed so `iss` is the same however it was typed. Returns the
/// issuer and its path part.
pub fn normalize_issuer(issuer: &str) -> Result<(String, String), StartError> {
    let bad = |why: &str| StartError::Config(format!("issuer {issuer:?} {why}"));
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with https:// (or http:// for local use)"))?;
    if issuer.contains(['?', '#']) || !issuer.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "must not contain a query, a fragment, spaces or control characters",
        ));
    }
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let path = path.trim_end_matches('/');
    let scheme_len = issuer.len() - rest.len();
    Ok((
        format!("{}{host}{path}", &issuer[..scheme_len]),
        path.to_owned(),
    ))
}

fn metadata(issuer: &str, tls: Option<&Tls>) -> AuthorizationServerMetadata {
    let auth_methods = auth_methods(tls);
    AuthorizationServerMetadata {
        issuer: issuer.to_owned(),
        token_endpoint: format!("{issuer}{}", paths::TOKEN),
        jwks_uri: Some(format!("{issuer}{}", paths::JWKS)),
        grant_types_supported: GrantType::ALL
            .iter()
            .map(|g| g.as_str().to_owned())
            .collect(),
        token_endpoint_auth_methods_supported: auth_methods.clone(),
        token_endpoint_auth_signing_alg_values_supported: Some(assertion_algs()),
        dpop_signing_alg_values_supported: Some(assertion_algs()),
        tls_client_certificate_bound_access_tokens: tls.map(|_| true),
        response_types_supported: Vec::new(),
        introspection_endpoint: Some(format!("{issuer}{}", paths::INTROSPECT)),
        introspection_endpoint_auth_methods_supported: Some(auth_methods.clone()),
        introspection_endpoint_auth_signing_alg_values_supported: Some(assertion_algs()),
        revocation_endpoint: Some(format!("{issuer}{}", paths::REVOKE)),
        revocation_endpoint_auth_methods_supported: Some(auth_methods),
        revocation_endpoint_auth_signing_alg_values_supported: Some(assertion_algs()),
        registration_endpoint: Some(format!("{issuer}{}", paths::REGISTER)),
    }
}

/// The names of the client authentication methods this server takes.
fn auth_methods(tls: Option<&Tls>) -> Vec<String> {
    crate::tls::client_auth_methods(tls)
        .iter()
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// RFC 8414 §2 and RFC 9449 §5.1: the algorithms a `private_key_jwt` assertion or a DPoP
/// proof may be signed with — those of the keys latchkey verifies. Never `none` or a MAC.
fn assertion_algs() -> Vec<String> {
    SigningAlg::ALL
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect()
}

/// The shortest automatic rotation period: a next key must be published for a JWKS max-age
/// before it signs, and rotating much faster than that only churns keys.
pub const MIN_KEY_ROTATION_SECONDS: i64 = 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_normalised() {
        assert_eq!(
            normalize_issuer("https://a.example/").unwrap(),
            ("https://a.example".into(), "".into())
        );
        assert_eq!(
            normalize_issuer("http://127.0.0.1:8080/t/").unwrap(),
            ("http://127.0.0.1:8080/t".into(), "/t".into())
        );
        for bad in [
            "a.example",
            "ftp://a",
            "https://",
            "https://a?x=1",
            "https://a#f",
            "https://a b",
        ] {
            assert!(normalize_issuer(bad).is_err(), "{bad}");
        }
    }
}
