//! Plumbing that the latchkey server, the client library and the guard all use, so that none
//! of them depends on another for it, and each behaves the same way where they overlap:
//!
//! - [`clock`]: the [`Clock`] (tests move time instead of sleeping).
//! - [`jwks`]: the JWK Set cache ([`Jwks`]), for an issuer's keys (guard) and the keys clients
//!   publish (server).
//! - [`retry`]: the retry policy, pure: which failures are worth another attempt
//!   ([`retry::retryable`]), how long to wait ([`RetryPolicy`], equal-jitter exponential
//!   backoff, [`retry::retry_after`]). The loop that sleeps is the caller's.
//! - [`discovery`]: where an issuer's discovery document is ([`discovery::well_known`]) and
//!   one fetch of it with a body cap and the exact-issuer check
//!   ([`discovery::fetch_document`]), with an HTTP client the caller built to its own
//!   rules.
//! - [`body`]: reading response bodies with a size cap.
//!
//! Nothing here chooses where a request may go: every function that fetches takes the
//! caller's `reqwest::Client`.

pub mod body;
pub mod clock;
pub mod discovery;
pub mod jwks;
pub mod retry;

pub use body::{BodyError, read_capped, read_limited};
pub use clock::{Clock, ManualClock, SystemClock};
pub use jwks::{Jwks, KeySet};
pub use retry::RetryPolicy;
