//! Plumbing that the latchkey server, the client library and the guard all use, so that none
//! of them depends on another for it: the [`Clock`] (tests move time instead of sleeping) and
//! the JWK Set cache ([`jwks::Jwks`]).

pub mod clock;
pub mod jwks;

pub use clock::{Clock, ManualClock, SystemClock};
pub use jwks::{Jwks, KeySet, read_limited};
