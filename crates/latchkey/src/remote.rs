//! `latchkey --server URL ...`: the `client`, `keys`, `audit` and `registration-token` commands
//! through a server's admin API instead of the database, as an admin client (LATCHKEY_ADMIN_CLIENT_ID and its
//! secret). Its tokens come from latchkey-client, so they are cached (in memory, or in
//! --admin-token-cache between runs) and refreshed as any client's are.

use anyhow::{Context as _, bail};
use latchkey_client::{ClientCredentials, FileStore};
use latchkey_server::http::admin::wire::Problem;
use latchkey_server::service::admin_auth::ADMIN_AUDIENCE;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::GlobalArgs;

/// Where the `client`, `keys` and `audit` commands act: the database (`--database`), or a
/// server's admin API (`--server`).
pub enum Target {
    /// The database, directly.
    Database(std::sync::Arc<dyn latchkey_server::store::Store>),
    /// A server's admin API.
    Server(Remote),
}

impl Target {
    /// The server of `--server` if given, else the database of `--database`.
    pub async fn open(global: &GlobalArgs) -> anyhow::Result<Target> {
        // `--server` from LATCHKEY_SERVER must not quietly win over a `--database` typed on
        // the command line.
        let database_typed =
            std::env::args().any(|arg| arg == "--database" || arg.starts_with("--database="));
        if global.server.is_some() && database_typed {
            bail!(
                "give --database or --server, not both (LATCHKEY_SERVER may be set: unset it \
                 to work on the database)"
            );
        }
        match &global.server {
            Some(server) => Ok(Target::Server(Remote::connect(global, server).await?)),
            None => Ok(Target::Database(
                latchkey_server::store::connect(&global.database)
                    .await
                    .context("opening the database")?,
            )),
        }
    }
}

/// How long one admin API request may take (a change waits up to 2 s for the servers).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A server's admin API, and an admin client's tokens for it.
pub struct Remote {
    /// The admin API's base URL (`.../admin/v1`), without a trailing `/`.
    api: String,
    http: reqwest::Client,
    tokens: ClientCredentials,
}

impl Remote {
    /// Connects to the server at `server` (its issuer URL) with the admin credentials the
    /// global options and environment give.
    pub async fn connect(global: &GlobalArgs, server: &str) -> anyhow::Result<Remote> {
        let server = server.trim_end_matches('/');
        let Some(client_id) = &global.admin_client_id else {
            bail!(
                "--server needs an admin client: set LATCHKEY_ADMIN_CLIENT_ID (or \
                 --admin-client-id) and its secret (LATCHKEY_ADMIN_CLIENT_SECRET or \
                 --admin-client-secret-file); `latchkey client create --admin` makes one"
            );
        };
        // Never from an argument: the process list shows those to everyone.
        let secret = crate::token_cmd::read_secret(
            global.admin_client_secret_file.as_deref(),
            "LATCHKEY_ADMIN_CLIENT_SECRET",
            "--admin-client-secret-file",
        )?;
        let mut builder = ClientCredentials::builder()
            .issuer(server)
            .client_id(client_id)
            .client_secret(secret)
            .audience(ADMIN_AUDIENCE);
        if let Some(path) = &global.admin_token_cache {
            builder = builder.store(FileStore::new(path));
        }
        let tokens = builder
            .build()
            .await
            .with_context(|| format!("reaching the server at {server}"))?;
        let api = global
            .admin_api
            .clone()
            .unwrap_or_else(|| format!("{server}{}", latchkey_server::http::admin::PREFIX));
        Ok(Remote {
            api: api.trim_end_matches('/').to_owned(),
            // No redirects (a 302 would turn a POST into a GET), and no wait without end.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(REQUEST_TIMEOUT)
                .build()
                .context("making the HTTP client")?,
            tokens,
        })
    }

    /// Sends one request to `path` (below the API's base, with its query) and returns the JSON
    /// body of a success (`None` for 204). A refusal becomes an error with the problem's
    /// detail. A token the server no longer takes is dropped and the request sent once more.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.api);
        for attempt in 0..2 {
            let token = self
                .tokens
                .token()
                .await
                .context("getting an admin token")?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.secret());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let status = response.status();
            // A change the server made but not every server confirmed: said as the CLI says it
            // on the database.
            if let Some(servers) = response
                .headers()
                .get(latchkey_server::http::admin::UNCONFIRMED_SERVERS)
                .and_then(|v| v.to_str().ok())
            {
                for server in servers.split(", ") {
                    crate::client_cmd::warn_unconfirmed(server);
                }
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.tokens.invalidate(&token).await;
                continue;
            }
            if status == StatusCode::NO_CONTENT {
                return Ok(None);
            }
            let bytes = response.bytes().await.context("reading the answer")?;
            if status.is_success() {
                let value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{method} {url}: the answer is not JSON"))?;
                return Ok(Some(value));
            }
            if let Ok(problem) = serde_json::from_slice::<Problem>(&bytes) {
                bail!("{} (HTTP {})", problem.detail, status.as_u16());
            }
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            if status.is_redirection() {
                bail!("{method} {url}: HTTP {status}, redirected; give the admin API's URL itself");
            }
            if status == StatusCode::NOT_FOUND {
                bail!(
                    "{method} {url}: HTTP 404 ({body}); is the admin API elsewhere? (--admin-api)"
                );
            }
            bail!("{method} {url}: HTTP {status}: {body}");
        }
        bail!("{method} {url}: the server refused the admin token twice (HTTP 401)")
    }

    /// [`Remote::call`], its answer read as `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let value = self
            .call(method, path, body)
            .await?
            .context("the server answered with no body")?;
        serde_json::from_value(value).context("reading the server's answer")
    }
}

/// Percent-encodes a query value or path segment.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
