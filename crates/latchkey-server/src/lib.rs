//! The latchkey authorization server as a library: the `latchkey` binary is a thin CLI over it,
//! and integration tests start it on port 0 with [`Application::build`].
//!
//! Layers, top down (ARCHITECTURE.md has the codemap and what each may import): `http` speaks
//! HTTP (the only axum routes) and calls `service`, which owns each use case (the OAuth
//! endpoints, and the admin operations in `service::admin`); `protocol` decides without IO;
//! `store` persists (the only SQL); `model` is the domain every layer shares. Beside them:
//! `cache` (records, keys and the deny list in memory), `keys` (signing), `connections`
//! (HTTP/1.1 connections within their limits).

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
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod quota;
pub mod remote_keys;
pub mod reuse;
pub mod secret;
pub mod service;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod usage;

pub use app::{Application, ServerConfig, StartError};
pub use clock::{Clock, ManualClock, SystemClock};
