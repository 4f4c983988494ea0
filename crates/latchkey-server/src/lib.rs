//! The latchkey authorization server as a library: the `latchkey` binary is a thin CLI over it,
//! and integration tests start it on port 0 with [`Application::build`].
//!
//! Layout: `protocol` decides (no IO), `store` persists (the only SQL), `http` speaks HTTP
//! (the only axum routes), `connections` runs HTTP/1.1 connections within their limits, `keys`
//! signs, `admin` manages clients for the CLI.

pub mod admin;
pub mod app;
pub mod cache;
pub mod clock;
pub mod connections;
pub mod error;
pub mod form;
pub mod http;
pub mod janitor;
pub mod kek;
pub mod keys;
pub mod model;
pub mod protocol;
pub mod remote_keys;
pub mod secret;
pub mod store;
pub mod tls;

pub use app::{Application, ServerConfig, StartError};
pub use clock::{Clock, ManualClock, SystemClock};
