//! OAuth 2.0 client credentials (RFC 6749 §4.4) for services that call APIs: tokens fetched
//! when needed, cached while valid, refreshed early, and shared by every caller.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use latchkey_client::ClientCredentials;
//!
//! let tokens = ClientCredentials::builder()
//!     .issuer("https://auth.example.com") // discovery; or .token_endpoint(url)
//!     .client_id("lk_1f3c...")
//!     .client_secret(std::env::var("LATCHKEY_CLIENT_SECRET")?) // never printed
//!     .scope("invoices:read")
//!     .audience("https://api.example.com")
//!     .build()
//!     .await?;
//!
//! let token = tokens.token().await?; // cached; fetched only when needed
//! let invoices = reqwest::Client::new()
//!     .get("https://api.example.com/invoices")
//!     .bearer_auth(token.secret())
//!     .send()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! With an issuer, `build` reads its metadata (RFC 8414, then OpenID Connect Discovery) for
//! the token endpoint, and refuses a document that names another issuer; [`discover`] does
//! the same for other uses (the guard finds the JWKS with it).
//!
//! # What `token()` does
//! - **Cache.** A token is kept for one token endpoint, client, authentication method, scope
//!   and audience ([`CacheKey`]); two configurations never share a token. Reading a cached
//!   token is a lock-free load and a reference count (tens of nanoseconds).
//! - **Single flight.** However many tasks call `token()` on an empty or expired cache, one
//!   request goes to the server and all of them get its result.
//! - **Early refresh.** Expiry is `expires_in` counted from receipt (the token itself is never
//!   decoded). When less than 20% of the lifetime remains (at least 10 s, at most 5 minutes,
//!   plus random jitter), the next caller starts a refresh in the background and every caller
//!   keeps the current token until the new one arrives. See [`RefreshPolicy`].
//! - **Retries.** Network errors, 408, 429 and 5xx are retried with exponential backoff and
//!   jitter, honouring `Retry-After`, within a deadline ([`RetryPolicy`], the policy that
//!   latchkey-common shares with the guard). A 4xx OAuth error such as `invalid_client` or
//!   `invalid_scope` is not retried: it comes back at once as [`Error::Rejected`], a
//!   configuration error. Errors are never cached.
//! - **Shared cache.** With a [`TokenStore`] ([`FileStore`], or `RedisStore` with the `redis`
//!   feature) other processes and restarts reuse a still-valid token.
//! - **Secrets stay secret.** The client secret and tokens never appear in `Debug` output or
//!   logs, and have no `Display`.
//!
//! # Calling APIs without handling tokens
//! [`BearerMiddleware`] for `reqwest-middleware` and [`BearerLayer`] for tower clients (hyper,
//! tonic) add the header, and when an API answers 401 `invalid_token` (or, for gRPC, status
//! `UNAUTHENTICATED`) they evict the token; the middleware also retries the request once with a
//! new one.
//!
//! ```no_run
//! # async fn example(tokens: latchkey_client::ClientCredentials) -> Result<(), Box<dyn std::error::Error>> {
//! use latchkey_client::{BearerLayer, BearerMiddleware};
//! use tower::Layer as _;
//!
//! // reqwest
//! let api = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(BearerMiddleware::new(tokens.clone()))
//!     .build();
//! let response = api.get("https://api.example.com/invoices").send().await?;
//!
//! // hyper (or a tonic Channel) through tower
//! let hyper_client = hyper_util::client::legacy::Client::builder(
//!     hyper_util::rt::TokioExecutor::new(),
//! )
//! .build_http::<String>();
//! let mut authenticated = BearerLayer::new(tokens).layer(hyper_client);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod builder;
mod cache;
mod challenge;
mod clock;
mod discovery;
mod error;
mod layer;
mod middleware;
mod refresh;
mod retry;
mod secret;
mod store;
mod token_request;

pub use builder::Builder;
pub use cache::ClientCredentials;
pub use clock::{Clock, ManualClock, SystemClock};
pub use discovery::discover;
pub use error::{Error, Rejection};
pub use latchkey_common::RetryPolicy;
pub use latchkey_jose::{KeyError, PrivateKey};
pub use latchkey_proto::ClientAuthMethod;
pub use layer::{BearerLayer, BearerService, BoxError};
pub use middleware::BearerMiddleware;
pub use refresh::RefreshPolicy;
pub use secret::{AccessToken, ClientSecret};
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{CacheKey, FileStore, StoreError, StoredToken, TokenStore};
