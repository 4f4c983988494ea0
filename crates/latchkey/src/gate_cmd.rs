//! `latchkey gate`: a reverse proxy that lets through only requests with a valid token, and
//! tells the unchanged upstream who called in headers it controls.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use http::{HeaderName, HeaderValue, Request, Response};
use latchkey_guard::{Caller, ClientCertificate, Guard};
use latchkey_server::connections::{self, Transport};
use latchkey_server::tls::{Tls, TlsFiles, TlsPeer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::cli::GateArgs;
use crate::gate_quota::{QuotaMetrics, QuotaTable, Quotas, Shared, Verdict};
use crate::proxy::{
    Listener, Upstream, UpstreamClient, refuse, send_with_timeout, upstream_client,
};

/// Identity headers the gate sets. Any header that arrives from outside and starts with this
/// prefix (or with `x_latchkey_`, which CGI-style servers read as the same name) is removed
/// first, so the upstream can trust them.
const PREFIX: &str = "x-latchkey-";

/// Whether a header name starts with [`PREFIX`], `_` counting as `-` (names arrive in lower
/// case). Allocates nothing: it runs for every header of every request.
fn names_identity(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.len() >= PREFIX.len()
        && name
            .iter()
            .zip(PREFIX.as_bytes())
            .all(|(&got, &want)| got == want || (got == b'_' && want == b'-'))
}

#[derive(Clone)]
struct Gate {
    upstream: Upstream,
    /// The gate's own listener, which `X-Forwarded-Proto` reports.
    listener: Listener,
    timeout: std::time::Duration,
    client: UpstreamClient,
    /// Client certificate headers never forwarded: RFC 9440's, and the one trusted here.
    certificate_headers: Vec<HeaderName>,
    /// Request quotas per client (`--quota`), if any.
    quotas: Option<Arc<Quotas>>,
}

pub async fn run(args: GateArgs) -> anyhow::Result<()> {
    let _log = crate::logging::init_logging();
    let limits = args.connections.limits()?;
    let upstream = Upstream::parse(&args.upstream)?;
    let mut builder = Guard::builder()
        .issuer(&args.issuer)
        .audience(&args.audience);
    if let Some(origin) = &args.public_origin {
        builder = builder.public_origin(origin);
    }
    if let Some(header) = &args.trust_certificate_header {
        builder = builder.trust_certificate_header(header);
    }
    let guard = builder
        .build()
        .await
        .context("setting up token validation")?;
    let mut layer = guard.layer();
    for scope in &args.require_scope {
        layer = layer.require_scope(scope);
    }
    let recorder = args
        .metrics_listen
        .map(|_| PrometheusBuilder::new().build_recorder());
    let quotas = quotas(&args, recorder.as_ref()).await?;
    // Loaded before the state is built: `X-Forwarded-Proto` follows the listener.
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(
            Tls::load(&TlsFiles {
                cert,
                key,
                client_ca: None,
            })
            .map_err(anyhow::Error::msg)
            .context("loading the TLS certificate")?,
        ),
        _ => None,
    };
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for metrics"))?,
        ),
        None => None,
    };
    let router = Router::new()
        .fallback(forward)
        .layer(layer)
        .with_state(Gate {
            upstream,
            listener: if tls.is_some() {
                Listener::Https
            } else {
                Listener::Http
            },
            timeout: std::time::Duration::from_secs(args.upstream_timeout),
            client: upstream_client()?,
            certificate_headers: certificate_headers(args.trust_certificate_header.as_deref())?,
            quotas,
        });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let listen = listener.local_addr()?;
    let metrics_addr = match (metrics_listener, recorder) {
        (Some(metrics_listener), Some(recorder)) => {
            let addr = metrics_listener.local_addr()?;
            let handle = recorder.handle();
            let router = Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let text = handle.render();
                    async move {
                        (
                            [(
                                http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text,
                        )
                    }
                }),
            );
            // Scraped over plain HTTP on an address of the operator's choosing; it stops with
            // the process.
            tokio::spawn(connections::serve(
                metrics_listener,
                Transport::Plain,
                router,
                limits,
                std::future::pending(),
            ));
            Some(addr)
        }
        _ => None,
    };
    let metrics_field = metrics_addr
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %listen, metrics = %metrics_field, upstream = %args.upstream, audience = %args.audience, tls = tls.is_some(), "latchkey gate is serving");
    let (router, transport) = match tls {
        Some(tls) => {
            // The guard finds the connection's client certificate in the request (RFC 8705
            // §3).
            let router = router.layer(axum::middleware::map_request(tls_peer));
            (router, Transport::Tls(tls.acceptor()))
        }
        None => (router, Transport::Plain),
    };
    connections::serve(
        listener,
        transport,
        router,
        limits,
        crate::serve_cmd::shutdown_signal(),
    )
    .await;
    Ok(())
}

/// The quotas of `--quota` and `--quota-file`, counted through `--quota-redis` if set; `None`
/// when no client has one. SIGHUP reads the quota file again (and, without one, is logged and
/// otherwise ignored, rather than stopping the gate).
async fn quotas(
    args: &GateArgs,
    recorder: Option<&PrometheusRecorder>,
) -> anyhow::Result<Option<Arc<Quotas>>> {
    let table = quota_table(&args.quotas, args.quota_file.as_deref())?;
    // Registered (at zero) whenever there are metrics, quotas or not.
    let metrics = quota_metrics(recorder);
    let quotas = if table.is_empty() && args.quota_file.is_none() {
        if args.quota_redis.is_some() {
            anyhow::bail!("--quota-redis needs --quota or --quota-file");
        }
        None
    } else {
        let shared = match &args.quota_redis {
            Some(url) => {
                let shared = Arc::new(Shared::new(
                    url,
                    &args.quota_redis_prefix,
                    &args.audience,
                    args.quota_redis_timeout,
                    metrics.clone(),
                )?);
                shared.connect(now_ms()).await;
                tokio::spawn(Arc::clone(&shared).watch(now_ms));
                Some(shared)
            }
            None => None,
        };
        Some(Arc::new(Quotas::new(table, shared, metrics)))
    };
    #[cfg(unix)]
    {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        let reload = quotas.clone().zip(args.quota_file.clone());
        let flags = args.quotas.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some((quotas, path)) = &reload else {
                    tracing::info!("SIGHUP: no --quota-file to read again");
                    continue;
                };
                match quota_table(&flags, Some(path)) {
                    Ok(table) => {
                        quotas.replace(table);
                        tracing::info!(file = %path.display(), "quota file read again");
                    }
                    Err(error) => {
                        tracing::error!(file = %path.display(), error = %format!("{error:#}"), "quota file not read again; the quotas stay as they were");
                    }
                }
            }
        });
    }
    Ok(quotas)
}

fn quota_table(flags: &[String], file: Option<&std::path::Path>) -> anyhow::Result<QuotaTable> {
    let mut entries = flags.to_vec();
    if let Some(path) = file {
        entries.extend(QuotaTable::read_file(path)?);
    }
    QuotaTable::parse(entries.iter().map(String::as_str))
        .map_err(|why| anyhow::anyhow!("quota {why}"))
}

fn quota_metrics(recorder: Option<&PrometheusRecorder>) -> QuotaMetrics {
    let Some(recorder) = recorder else {
        return QuotaMetrics::default();
    };
    use metrics::Recorder as _;
    static METADATA: metrics::Metadata<'static> =
        metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
    let described = [
        (
            "latchkey_gate_quota_exceeded_total",
            "Requests refused (429) over a client's quota.",
        ),
        (
            "latchkey_gate_quota_local_leases_total",
            "Quota leases counted locally because Redis was unreachable.",
        ),
        (
            "latchkey_gate_quota_redis_errors_total",
            "Calls to the quota Redis that failed or timed out.",
        ),
        (
            "latchkey_gate_quota_redis_up",
            "1 while the quota Redis answers, 0 while the gate counts locally.",
        ),
    ];
    for (name, help) in described {
        if name.ends_with("_total") {
            recorder.describe_counter(name.into(), None, help.into());
        } else {
            recorder.describe_gauge(name.into(), None, help.into());
        }
    }
    let counter = |name: &'static str| {
        recorder.register_counter(&metrics::Key::from_static_name(name), &METADATA)
    };
    QuotaMetrics {
        exceeded: counter(described[0].0),
        local_leases: counter(described[1].0),
        redis_errors: counter(described[2].0),
        redis_up: recorder
            .register_gauge(&metrics::Key::from_static_name(described[3].0), &METADATA),
    }
}

/// Now, in unix milliseconds, for quota windows.
fn now_ms() -> i64 {
    use latchkey_server::Clock as _;
    latchkey_server::SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// 429 for a client over its quota (RFC 6585), with `Retry-After` and the RateLimit headers;
/// the body is an RFC 9457 problem.
fn too_many_requests(verdict: Verdict, retry_after: u64) -> Response<Body> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": verdict.detail,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
    rate_limit_headers(headers, verdict);
    response
}

/// `RateLimit-Policy` and `RateLimit`, unless the upstream sent its own.
fn rate_limit_headers(headers: &mut http::HeaderMap, verdict: Verdict) {
    if headers.contains_key("ratelimit-policy") || headers.contains_key("ratelimit") {
        return;
    }
    headers.insert(HeaderName::from_static("ratelimit-policy"), verdict.policy);
    headers.insert(HeaderName::from_static("ratelimit"), verdict.state);
}

/// The certificate headers the gate drops before forwarding.
fn certificate_headers(trusted: Option<&str>) -> anyhow::Result<Vec<HeaderName>> {
    let mut names = vec![
        HeaderName::from_static("client-cert"),
        HeaderName::from_static("client-cert-chain"),
    ];
    if let Some(name) = trusted {
        names.push(
            HeaderName::try_from(name)
                .with_context(|| format!("--trust-certificate-header {name:?}"))?,
        );
    }
    Ok(names)
}

/// On a TLS connection: the peer's certificate (or that it presented none) as a
/// [`ClientCertificate`] for the guard.
async fn tls_peer(
    ConnectInfo(peer): ConnectInfo<TlsPeer>,
    mut request: Request<Body>,
) -> Request<Body> {
    let extensions = request.extensions_mut();
    // Always set, so the guard never looks for a certificate anywhere else.
    extensions.insert(
        match peer.certificates.as_ref().and_then(|chain| chain.first()) {
            Some(leaf) => ClientCertificate::from_der(leaf.as_ref()),
            None => ClientCertificate::none(),
        },
    );
    request
}

async fn forward(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request<Body>,
) -> Response<Body> {
    // The guard layer put the caller here; without one the request never got this far.
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return Response::builder()
            .status(500)
            .body(Body::empty())
            .unwrap_or_default();
    };
    // Counted before anything else is done for it; over a quota the upstream is not called.
    let verdict = match &gate.quotas {
        Some(quotas) => quotas.check(caller.client_id(), now_ms()).await,
        None => None,
    };
    if let Some(
        refused @ Verdict {
            retry_after: Some(retry_after),
            ..
        },
    ) = verdict
    {
        return too_many_requests(refused, retry_after);
    }
    // Hop-by-hop headers first: a `Connection` header naming the identity headers must not be
    // able to remove them after they are set.
    if let Err(why) = gate.upstream.prepare(&mut request, peer, gate.listener) {
        return refuse(why);
    }
    let headers = request.headers_mut();
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| names_identity(name))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    // The upstream trusts the gate, not the token: the token stays here. Nor does a client
    // certificate header reach it: one sent by a client would be a claim the gate never
    // checked.
    headers.remove(http::header::AUTHORIZATION);
    for name in &gate.certificate_headers {
        headers.remove(name);
    }
    let identity = [
        ("x-latchkey-client-id", caller.client_id().to_owned()),
        ("x-latchkey-scope", caller.scopes().join(" ")),
        ("x-latchkey-subject", caller.claims().sub.clone()),
    ];
    for (name, value) in identity {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let mut response = send_with_timeout(gate.timeout, gate.client.request(request)).await;
    if let Some(verdict) = verdict {
        rate_limit_headers(response.headers_mut(), verdict);
    }
    response
}
