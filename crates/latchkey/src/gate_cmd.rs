//! `latchkey gate`: a reverse proxy that lets through only requests with a valid token, and
//! tells the unchanged upstream who called in headers it controls.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use http::{HeaderName, HeaderValue, Request, Response};
use latchkey_guard::{Caller, ClientCertificate, Guard};
use latchkey_server::connections::{self, Transport};
use latchkey_server::tls::{Tls, TlsFiles, TlsPeer};

use crate::cli::GateArgs;
use crate::proxy::{
    Listener, Upstream, UpstreamClient, refuse, send_with_timeout, upstream_client,
};

/// Identity headers the gate sets. Any header that arrives from outside and starts with this
/// prefix (or with `x_latchkey_`, which CGI-style servers read as the same name) is removed
/// first, so the upstream can trust them.
const PREFIX: &str = "x-latchkey-";

#[derive(Clone)]
struct Gate {
    upstream: Upstream,
    /// The gate's own listener, which `X-Forwarded-Proto` reports.
    listener: Listener,
    timeout: std::time::Duration,
    client: UpstreamClient,
    /// Client certificate headers never forwarded: RFC 9440's, and the one trusted here.
    certificate_headers: Vec<HeaderName>,
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
        });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let listen = listener.local_addr()?;
    tracing::info!(listen = %listen, upstream = %args.upstream, audience = %args.audience, tls = tls.is_some(), "latchkey gate is serving");
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
    // Hop-by-hop headers first: a `Connection` header naming the identity headers must not be
    // able to remove them after they are set.
    if let Err(why) = gate.upstream.prepare(&mut request, peer, gate.listener) {
        return refuse(why);
    }
    let headers = request.headers_mut();
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().replace('_', "-").starts_with(PREFIX))
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
    send_with_timeout(gate.timeout, gate.client.request(request)).await
}
