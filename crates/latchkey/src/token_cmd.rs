//! `latchkey token`: one access token on standard output, through `latchkey-client` (so with
//! its retries, discovery checks and, with `--cache-file` or `--cache-redis`, a shared cache).

use std::io::Read as _;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use latchkey_client::{ClientCredentials, ClientSecret, FileStore, PrivateKey, RedisStore};
use latchkey_proto::{TokenResponse, TokenType};

use crate::cli::{GlobalArgs, OutputFormat, TokenArgs};

pub async fn run(global: &GlobalArgs, args: TokenArgs) -> anyhow::Result<()> {
    let mut builder = ClientCredentials::builder().client_id(&args.client_id);
    builder = match (&args.private_key_file, &args.client_certificate_file) {
        (_, Some(certificate)) => {
            let mut pem = std::fs::read(certificate)
                .with_context(|| format!("reading {}", certificate.display()))?;
            if let Some(key) = &args.client_key_file {
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
                );
            }
            let method = if args.auth_method.is_mutual_tls() {
                args.auth_method
            } else {
                latchkey_proto::ClientAuthMethod::TlsClientAuth
            };
            builder.client_certificate_pem(pem).auth_method(method)
        }
        (Some(path), None) => {
            let mut key = read_private_key(path)?;
            if let Some(kid) = &args.key_id {
                key = key.with_kid(kid);
            }
            let builder = builder.private_key(key);
            match &args.assertion_audience {
                Some(audience) => builder.assertion_audience(audience),
                None => builder,
            }
        }
        (None, None) => builder
            .client_secret(read_secret_from(args.client_secret_file.as_deref())?)
            .auth_method(args.auth_method),
    };
    builder = match (&args.issuer, &args.token_endpoint) {
        (Some(issuer), _) => builder.issuer(issuer),
        (None, Some(endpoint)) => builder.token_endpoint(endpoint),
        (None, None) => bail!("give --issuer or --token-endpoint"),
    };
    for scope in &args.scope {
        builder = builder.scope(scope);
    }
    for audience in &args.audience {
        builder = builder.audience(audience);
    }
    if let Some(path) = &args.cache_file {
        builder = builder.store(FileStore::new(path));
    }
    if let Some(url) = &args.cache_redis {
        match RedisStore::connect(url).await {
            Ok(store) => builder = builder.store(store),
            // The cache saves a request; without it the token still comes from the server.
            Err(error) => eprintln!("warning: not using the Redis token cache: {error}"),
        }
    }
    let tokens = builder.build().await?;
    let token = tokens.token().await?;
    // Plain by default, even when piped: the point is `$(latchkey token ...)`.
    if global.output == Some(OutputFormat::Json) {
        #[allow(clippy::disallowed_methods)] // Remaining lifetime for the user, not a decision.
        let now = SystemTime::now();
        let remaining = token
            .expires_at()
            .duration_since(now)
            .unwrap_or_default()
            .as_secs();
        let response = TokenResponse {
            access_token: token.secret().to_owned(),
            token_type: TokenType::Bearer,
            expires_in: Some(remaining),
            scope: token.scope().map(str::to_owned),
        };
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        println!("{}", token.secret());
    }
    Ok(())
}

/// A PEM private key file.
pub fn read_private_key(path: &std::path::Path) -> anyhow::Result<PrivateKey> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the private key {}", path.display()))?;
    PrivateKey::from_pem(&pem).with_context(|| format!("{}", path.display()))
}

/// `latchkey public-jwks`: the public halves of PEM keys, as a JWK Set.
pub fn public_jwks(files: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let keys = files
        .iter()
        .map(|path| read_private_key(path).map(|key| key.public_jwk().clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&latchkey_proto::JwkSet { keys })?
    );
    Ok(())
}

/// The secret from `--client-secret-file` (or standard input for `-`), else from LATCHKEY_CLIENT_SECRET.
pub fn read_secret_from(file: Option<&std::path::Path>) -> anyhow::Result<ClientSecret> {
    read_secret(file, "LATCHKEY_CLIENT_SECRET", "--client-secret-file")
}

/// A secret from `file` (standard input for `-`), else from the environment variable `env`.
/// Never from an argument: the process list shows those to everyone. `flag` names the file
/// option in the error.
pub fn read_secret(
    file: Option<&std::path::Path>,
    env: &str,
    flag: &str,
) -> anyhow::Result<ClientSecret> {
    let secret = match file {
        Some(path) if path.as_os_str() == "-" => {
            let mut secret = String::new();
            std::io::stdin()
                .read_to_string(&mut secret)
                .context("reading the secret from standard input")?;
            secret
        }
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret from {}", path.display()))?,
        None => match std::env::var(env) {
            Ok(secret) => secret,
            Err(_) => bail!("no secret: give {flag} FILE or set {env}"),
        },
    };
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    Ok(ClientSecret::new(secret))
}
