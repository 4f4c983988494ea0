//! `latchkey sidecar`: the outgoing direction. An application that cannot be changed sends
//! plain requests to the sidecar, which adds a cached token and forwards them.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use http::{Request, Response};
use latchkey_client::{BearerLayer, BearerService, ClientCredentials};
use latchkey_server::connections::{self, Transport};
use tower::{Layer as _, Service as _};

use crate::cli::SidecarArgs;
use crate::proxy::{
    Listener, Upstream, UpstreamClient, answer, refuse, send_with_timeout, upstream_client,
};

#[derive(Clone)]
struct Sidecar {
    upstream: Upstream,
    timeout: std::time::Duration,
    client: BearerService<UpstreamClient>,
}

pub async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    let _log = crate::logging::init_logging();
    let limits = args.connections.limits()?;
    let upstream = Upstream::parse(&args.upstream)?;
    if !upstream.is_confidential() {
        anyhow::bail!(
            "--upstream {} would carry bearer tokens over plain HTTP across the network \
             (RFC 6750 §5.3): use https://, or http:// only to this machine",
            args.upstream
        );
    }
    let secret = crate::token_cmd::read_secret_from(args.client_secret_file.as_deref())?;
    let mut builder = ClientCredentials::builder()
        .issuer(&args.issuer)
        .client_id(&args.client_id)
        .client_secret(secret);
    for scope in &args.scope {
        builder = builder.scope(scope);
    }
    for audience in &args.audience {
        builder = builder.audience(audience);
    }
    let tokens = builder
        .build()
        .await
        .context("setting up the token client")?;
    // Fetch once now, so a wrong secret stops the sidecar at start, not at the first request.
    tokens.token().await.context("getting a first token")?;
    let router = Router::new().fallback(forward).with_state(Sidecar {
        upstream,
        timeout: std::time::Duration::from_secs(args.upstream_timeout),
        client: BearerLayer::new(tokens).layer(upstream_client()?),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let listen = listener.local_addr()?;
    tracing::info!(listen = %listen, upstream = %args.upstream, "latchkey sidecar is serving");
    connections::serve(
        listener,
        Transport::Plain,
        router,
        limits,
        crate::serve_cmd::shutdown_signal(),
    )
    .await;
    Ok(())
}

async fn forward(
    State(mut sidecar): State<Sidecar>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request<Body>,
) -> Response<Body> {
    // The application's own credentials, if any, are replaced by the sidecar's token.
    request.headers_mut().remove(http::header::AUTHORIZATION);
    // The same rules as the gate's: its applications are local, but what they send is still
    // read twice, by the sidecar and by the upstream.
    if let Err(why) = sidecar.upstream.prepare(&mut request, peer, Listener::Http) {
        return refuse(why);
    }
    let ready = std::future::poll_fn(|cx| sidecar.client.poll_ready(cx)).await;
    match ready {
        Ok(()) => send_with_timeout(sidecar.timeout, sidecar.client.call(request)).await,
        Err(error) => answer(Err(error)),
    }
}
