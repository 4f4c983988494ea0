//! The domain model: clients, their credentials and secrets, and issued tokens, with their
//! invariants as types. Everything else (protocol, service, store, http) uses these; this
//! module imports none of them (only `secret` for the hash type). `audit` says who changed
//! what, with the fields before and after; `registration` holds dynamic registration's tokens.

pub mod audit;
mod client;
pub mod credential;
mod rate;
mod registration;
mod token;
mod usage;

pub use audit::{Actor, AuditEntry, AuditEvent};
pub use client::{
    ADMIN_AUDIENCE, ADMIN_READ_SCOPE, ADMIN_SCOPE, ClientRecord, ClientUpdate, DEFAULT_TOKEN_TTL,
    MAX_TOKEN_TTL, MIN_TOKEN_TTL, SecretInfo, SecretRecord,
};
pub use credential::{Credential, Federation, SecretMethod, TlsSubject};
pub use rate::{QuotaMode, Rate, TokenLimits};
pub use registration::{Registration, RegistrationToken};
pub use token::{OpaqueTokenRecord, Revocation};
pub use usage::{TokenSource, UsageCount, UsageKind, tokens_allowed_per_hour};
