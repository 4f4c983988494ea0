//! Protocol decisions without IO: each function takes the parsed request, the stored client
//! and `now`, and returns a decision. HTTP and SQL stay at the edges.

pub mod access_token;
pub mod client_assertion;
pub mod client_auth;
pub mod client_credentials;
pub mod client_keys;
pub mod dpop_nonce;
pub mod introspection;
pub mod mutual_tls;
pub mod registration;
pub mod request;
pub mod syntax;
