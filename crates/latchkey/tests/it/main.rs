//! The one integration-test binary of the workspace: the real server on port 0 with a temp
//! SQLite database, driven over HTTP, and the real `latchkey` binary run as a user runs it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_api;
mod audit;
mod cli;
mod client_cache;
mod connections;
mod console;
mod discovery;
mod dpop;
mod faults;
mod federated;
mod gate_quota;
mod gateways;
mod helpers;
mod import_export;
mod interop;
mod issuance;
mod keys;
mod lifecycle;
mod metrics;
mod mtls;
mod private_key_jwt;
mod quota;
mod registration;
mod remote_cli;
mod replicas;
mod reuse;
mod throttle;
mod token_endpoint;
mod usage;
