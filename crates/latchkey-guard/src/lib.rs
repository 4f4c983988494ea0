//! Resource-server guard for OAuth 2.0 access tokens: validates JWT access tokens (RFC 9068
//! §4) against the issuer's published keys and enforces scopes, as a tower layer and an axum
//! extractor, for HTTP and gRPC services.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use latchkey_guard::{Caller, Guard};
//!
//! let guard = Guard::builder()
//!     .issuer("https://auth.example.com")     // discovery finds the JWKS
//!     .audience("https://api.example.com")    // tokens must be for this API
//!     .build()
//!     .await?;
//!
//! async fn invoices(caller: Caller) -> String {
//!     format!("invoices for {}", caller.client_id())
//! }
//!
//! let app: Router = Router::new()
//!     .route("/invoices", get(invoices).route_layer(guard.require_scope("invoices:read")))
//!     .layer(guard.layer());
//! # Ok(()) }
//! ```
//!
//! A gRPC service (tonic) takes the same layer; rejected calls get the gRPC status
//! (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNAVAILABLE`) as a trailers-only response:
//!
//! ```no_run
//! # async fn example(guard: latchkey_guard::Guard) -> Result<(), Box<dyn std::error::Error>> {
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! tonic::transport::Server::builder()
//!     .layer(guard.require_scope("health:read"))
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Opaque tokens are checked by introspection (RFC 7662) when the guard has client
//! credentials for it: `.introspection(client_id, secret)`. Active answers are reused for at
//! most a minute and never past the token's expiry; inactive ones for 5 s. Only strings in
//! latchkey's opaque format (`lkat_...`) are sent (other servers' formats only after
//! `.introspect_any_opaque_format()`, and never beyond 4 KiB); at most 64 calls run at once
//! and 256 wait, and requests beyond that get 503 at once.
//!
//! DPoP proofs (RFC 9449) are remembered against replay for about two minutes, at most
//! 10,000 per key (`.dpop_proofs_per_key(n)`): a key beyond that has its proofs refused, and
//! other keys keep working.
//!
//! What is checked, in order (RFC 6750 §2 and §3, RFC 9068 §4; docs/CONFORMANCE.md): one
//! `Authorization: Bearer` header and no token in the query (else 400 `invalid_request`);
//! `typ` is `at+jwt`; no `crit`; `alg` is allowed and is the algorithm of the key named by
//! `kid` in the JWKS (never `none`, never HMAC); the signature; `iss` exactly; `aud` contains
//! this resource; `exp` and `nbf` within a small leeway; then the route's scopes (else 403
//! `insufficient_scope` naming them). Failures are 401 with `WWW-Authenticate: Bearer
//! realm=..., error="invalid_token"`; a request without a token gets the challenge without an
//! error code (RFC 6750 §3.1).
//!
//! The JWKS is found through the issuer's discovery document (RFC 8414, then OpenID Connect
//! Discovery; the document must name exactly the issuer), read once by `build` with
//! `latchkey_client::discover` and retried per `.retry_policy(..)`, unless `.jwks_uri(..)`
//! names it. It is cached per its `Cache-Control: max-age` and refreshed in the background
//! when stale; an unknown `kid` triggers at most one refetch per interval; when the JWKS
//! endpoint is down the keys held are kept. Without any key, requests get 503, never access.
//! Verified tokens are remembered (by SHA-256) until they expire, so a reused token costs no
//! signature verification.
#![deny(missing_docs)]

mod cache;
mod caller;
mod certificate;
mod guard;
mod introspect;
mod layer;
mod rejection;
mod replay;
mod verify;

pub use caller::Caller;
pub use certificate::ClientCertificate;
pub use guard::{Guard, GuardBuilder};
pub use latchkey_common::{Jwks, KeySet, read_limited};
pub use latchkey_jose::VerifyingKey;
pub use layer::{GuardLayer, GuardService};
pub use rejection::Rejection;
pub use verify::Invalid;
