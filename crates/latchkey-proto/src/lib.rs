//! Wire types shared by the latchkey authorization server, the client library and the guard.
//!
//! Everything here is plain data with serde derives: no IO, no crypto, no HTTP. The client
//! library and the resource-server guard depend on this crate and never on the server.
//!
//! ```
//! use latchkey_proto::{ErrorCode, ErrorResponse, TokenResponse, TokenType};
//!
//! let ok: TokenResponse = serde_json::from_str(
//!     r#"{"access_token":"eyJ...","token_type":"Bearer","expires_in":900,"scope":"a b"}"#,
//! ).unwrap();
//! assert_eq!(ok.token_type, TokenType::Bearer);
//!
//! let err: ErrorResponse = serde_json::from_str(r#"{"error":"invalid_scope"}"#).unwrap();
//! assert_eq!(err.error, ErrorCode::InvalidScope);
//! ```
#![deny(missing_docs)]

mod claims;
mod error;
mod introspection;
mod jwks;
mod metadata;
mod names;
mod registration;
mod token;

pub use claims::{AccessTokenClaims, Audience, Confirmation};
pub use error::{ErrorCode, ErrorResponse};
pub use introspection::IntrospectionResponse;
pub use jwks::{Jwk, JwkSet};
pub use metadata::AuthorizationServerMetadata;
pub use names::{ClientAuthMethod, GrantType, SigningAlg, TokenFormat, UnknownName};
pub use registration::{ClientInformation, ClientMetadata, RegistrationRequest};
pub use token::{TokenResponse, TokenType, params};
