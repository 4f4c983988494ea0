//! The storage conformance suite: every `Store` operation, concurrency included, run against
//! each backend — SQLite always, PostgreSQL when `LATCHKEY_TEST_POSTGRES_URL` is set (and,
//! under CI, required). The only test binary of this crate.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod store;
