//! `latchkey serve`.

use std::sync::Arc;

use anyhow::Context as _;
use latchkey_server::{Application, ServerConfig, SystemClock, store};

use crate::cli::{GlobalArgs, ServeArgs};

/// How often expired tokens and revocations are purged, secret use is written, and key
/// rotation and removal are checked.
const JANITOR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    let _log = crate::logging::init_logging();

    let store = store::connect(&global.database)
        .await
        .context("opening the database")?;
    if args.issuer.is_none() && args.listen.ip().is_unspecified() {
        tracing::warn!(
            "listening on {} without --issuer: tokens will name http://{} as their issuer; \
             set --issuer to the URL clients and APIs use to reach this server",
            args.listen,
            args.listen
        );
    }
    let key_encryption_key = crate::kek::load(global)?;
    if key_encryption_key.is_none() {
        tracing::warn!(
            "private signing keys are stored unencrypted in the database; protect the database \
             file like a private key, or set LATCHKEY_KEY_ENCRYPTION_KEY (see README)"
        );
    }
    let config = ServerConfig {
        listen: args.listen,
        admin_listen: args.admin_listen,
        metrics_listen: args.metrics_listen,
        console: args.console,
        failed_auth_limit: args.failed_auth_limit.0,
        failed_auth_limit_per_address: args.failed_auth_limit_per_address.0,
        trusted_proxies: args.trusted_proxies,
        usage_flush_interval: latchkey_server::usage::FLUSH_INTERVAL,
        admin_url: args.admin_url,
        issuer: args.issuer,
        signing_alg: args.signing_alg,
        key_encryption_key,
        key_rotation: args.key_rotation,
        janitor_interval: JANITOR_INTERVAL,
        accept_token_endpoint_audience: args.accept_token_endpoint_audience,
        allow_private_jwks_uri: args.allow_private_jwks_uri,
        dpop_nonce: args.dpop_nonce,
        client_cache_size: args.client_cache_size,
        audit_retention: i64::try_from(args.audit_retention).unwrap_or(i64::MAX),
        usage_accounting: args.usage_accounting,
        usage_retention: i64::try_from(args.usage_retention).unwrap_or(i64::MAX),
        not_caching_threshold: args.not_caching_threshold,
        metrics_top_clients: args.metrics_top_clients,
        connections: args.connections.limits()?,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(latchkey_server::tls::TlsFiles {
                cert,
                key,
                client_ca: args.client_ca,
            }),
            _ => None,
        },
    };
    let app = Application::build(config, Arc::clone(&store), Arc::new(SystemClock))
        .await
        .context("starting the server")?;
    // One indexed read, whatever the number of clients.
    if store
        .clients_after("", 1)
        .await
        .map(|c| c.is_empty())
        .unwrap_or(false)
    {
        tracing::info!(
            "no clients yet; create one with: latchkey client create --name my-service \
             --scope \"read\" --audience https://api.example.com"
        );
    }
    let issuer = app.issuer().to_owned();
    tracing::info!(
        issuer = %issuer,
        discovery = %format!("{issuer}/.well-known/oauth-authorization-server"),
        listen = %app.local_addr(),
        admin = %app.admin_addr().map_or_else(|| "on listen".to_owned(), |a| a.to_string()),
        metrics = %app.metrics_addr().map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics")),
        kid = %app.signing_kid(),
        "latchkey is serving"
    );
    app.run_until(shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
