//! Who is calling: what a handler learns from a valid token.

use std::sync::Arc;

use latchkey_proto::{AccessTokenClaims, Audience};

/// The authenticated caller of a request: the client the token was issued to, its scopes and
/// the token's claims. Cheap to clone. Handlers get it with the axum extractor (it implements
/// `FromRequestParts`) or from the request extensions.
#[derive(Clone)]
pub struct Caller(Arc<Inner>);

struct Inner {
    claims: AccessTokenClaims,
    scopes: Box<[String]>,
    /// The key that verified a JWT; a cached caller is dropped once the key is gone. `None`
    /// when the token was introspected.
    kid: Option<String>,
    /// The resource (audience) it was verified for, so a caller verified by one guard is not
    /// taken as verified by another guard of another resource.
    resource: Arc<str>,
}

impl Caller {
    pub(crate) fn new(claims: AccessTokenClaims, kid: Option<String>, resource: Arc<str>) -> Self {
        let scopes = claims
            .scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Caller(Arc::new(Inner {
            claims,
            scopes,
            kid,
            resource,
        }))
    }

    /// The `client_id` claim: which client is calling.
    pub fn client_id(&self) -> &str {
        &self.0.claims.client_id
    }

    /// The granted scopes.
    pub fn scopes(&self) -> &[String] {
        &self.0.scopes
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.iter().any(|s| s == scope)
    }

    /// The token's audience.
    pub fn audience(&self) -> &Audience {
        &self.0.claims.aud
    }

    /// Every claim of the token.
    pub fn claims(&self) -> &AccessTokenClaims {
        &self.0.claims
    }

    pub(crate) fn kid(&self) -> Option<&str> {
        self.0.kid.as_deref()
    }

    /// Whether this caller was verified by the guard whose audience is `resource` (the very
    /// same allocation: clones of one guard share it, other guards do not).
    pub(crate) fn verified_by(&self, resource: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.0.resource, resource)
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("client_id", &self.client_id())
            .field("scopes", &self.scopes())
            .field("exp", &self.0.claims.exp)
            .finish_non_exhaustive()
    }
}
