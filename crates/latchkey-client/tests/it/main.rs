//! Integration tests of latchkey-client against the real latchkey server, started on port 0
//! with a temporary SQLite database. The only binary of this crate's tests.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod caching;
mod faults;
mod helpers;
mod middleware;
mod private_key_jwt;
mod secrecy;
mod stores;
