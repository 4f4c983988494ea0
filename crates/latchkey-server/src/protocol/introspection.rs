//! Whether a token is active (RFC 7662 §2.2), and what the introspection response says about
//! it. Shared by introspection and revocation.

use latchkey_proto::{AccessTokenClaims, Audience, IntrospectionResponse, TokenType};

use crate::model::{ClientRecord, OpaqueTokenRecord};

/// The claims an opaque token stands for: the same as a JWT issued with that grant would carry.
pub fn opaque_claims(issuer: &str, record: &OpaqueTokenRecord) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: issuer.to_owned(),
        sub: record.client_id.clone(),
        client_id: record.client_id.clone(),
        aud: Audience::from_list(record.audience.clone()),
        iat: record.issued_at,
        exp: record.expires_at,
        nbf: None,
        jti: record.jti.clone(),
        scope: (!record.scope.is_empty()).then(|| record.scope.join(" ")),
        epoch: record.epoch,
        cnf: record.cnf.clone(),
    }
}

/// RFC 7662 §2.2: active means issued by us (the caller has verified that), not expired, not
/// revoked — neither on the deny list nor of an older token epoch than its client's — and
/// belonging to a client that still exists and is enabled.
pub fn is_active(
    claims: &AccessTokenClaims,
    client: Option<&ClientRecord>,
    on_deny_list: bool,
    now: i64,
) -> bool {
    now < claims.exp
        && !on_deny_list
        && client.is_some_and(|c| {
            c.client_id == claims.client_id && c.enabled && claims.epoch >= c.token_epoch
        })
}

/// The response for an active token: RFC 7662 §2.2 members, from the token's own claims.
pub fn active_response(claims: AccessTokenClaims) -> IntrospectionResponse {
    IntrospectionResponse {
        active: true,
        scope: claims.scope,
        client_id: Some(claims.client_id),
        // RFC 9449 §6.2: a token bound to a DPoP key is of type DPoP, and says which key.
        token_type: Some(
            token_type_name(if claims.cnf.as_ref().is_some_and(|c| c.jkt.is_some()) {
                TokenType::DPoP
            } else {
                TokenType::Bearer
            })
            .to_owned(),
        ),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        sub: Some(claims.sub),
        aud: Some(claims.aud),
        iss: Some(claims.iss),
        jti: Some(claims.jti),
        cnf: claims.cnf,
    }
}

fn token_type_name(token_type: TokenType) -> &'static str {
    match token_type {
        TokenType::Bearer => "Bearer",
        TokenType::DPoP => "DPoP",
    }
}
