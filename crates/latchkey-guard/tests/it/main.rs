//! Integration tests of latchkey-guard with tokens from the real latchkey server (started on
//! port 0 with a temporary SQLite database) and an axum API guarded by it. The only test
//! binary of this crate.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checklist;
mod dpop;
mod grpc;
mod helpers;
mod introspection;
mod jwks;
