//! JWT access token validation, RFC 9068 §4 (docs/CONFORMANCE.md, "RFC 9068: JWT access
//! tokens"). Pure: the key lookup and `now` come in as arguments.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_proto::{AccessTokenClaims, SigningAlg};
use serde::Deserialize;

use latchkey_jose::VerifyingKey;

/// Longer input is refused before any decoding.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What a valid token must satisfy.
pub(crate) struct Expectations<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: i64,
}

/// Why a token is not valid. The text goes into `error_description`, so it says what is wrong
/// without echoing the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not three base64url segments of JSON.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// RFC 9068 §4: `typ` must be `at+jwt` (or `application/at+jwt`).
    #[error("the token is not a JWT access token (typ)")]
    Type,
    /// A `crit` header names extensions this guard does not understand (RFC 7515 §4.1.11).
    #[error("the token uses critical header extensions")]
    Critical,
    /// No published key has this `kid`.
    #[error("the token's signing key is unknown")]
    UnknownKey(String),
    /// The header's `alg` is not that key's algorithm, or not allowed here (`none`, HS256...).
    #[error("the token's algorithm is not allowed for its key")]
    Algorithm,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// Claims missing or of the wrong type (RFC 9068 §2.2; time claims are integers).
    #[error("the token's claims are malformed")]
    Claims,
    /// `iss` is not the configured issuer.
    #[error("the token is from another issuer")]
    Issuer,
    /// `aud` does not contain this resource.
    #[error("the token is not for this resource")]
    Audience,
    /// `exp` has passed (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The introspection endpoint says the token is not active (RFC 7662 §2.2): unknown,
    /// expired or revoked.
    #[error("the token is not active")]
    Inactive,
    /// The token is bound to a key or certificate (`DPoP`), so it cannot be used as a plain
    /// bearer token (RFC 9449 §7.1).
    #[error("the token is not a bearer token")]
    NotBearer,
    /// Sent with the DPoP scheme, but not bound to a DPoP key (RFC 9449 §7.1).
    #[error("the token is not bound to a DPoP key")]
    NotDpop,
    /// Bound to a client certificate (RFC 8705 §3), but the request came without one the
    /// guard may read.
    #[error("the token is bound to a client certificate and none was presented")]
    NoCertificate,
    /// Bound to another client certificate than the one presented (RFC 8705 §3).
    #[error("the token is bound to another client certificate")]
    OtherCertificate,
}

#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
    kid: Option<&'a str>,
    typ: Option<&'a str>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// A token split and its header read, before the key is known.
pub(crate) struct Parsed<'a> {
    signed: &'a str,
    payload: &'a str,
    signature: &'a str,
    pub kid: String,
    alg: SigningAlg,
}

/// Splits the token and checks the header: `typ` (RFC 9068 §4 step 1 and §2.1), no `crit`,
/// a `kid`, and an `alg` from the allowed list (so `none` and HMAC never get further).
pub(crate) fn parse<'a>(token: &'a str, algorithms: &[SigningAlg]) -> Result<Parsed<'a>, Invalid> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Invalid::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(Invalid::Malformed)?;
    let (header, payload) = signed.split_once('.').ok_or(Invalid::Malformed)?;
    let header_json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Invalid::Malformed)?;
    let (typ_ok, crit, kid, alg) = {
        let parsed: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|_| Invalid::Malformed)?;
        let typ_ok = parsed.typ.is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        (
            typ_ok,
            parsed.crit.is_some(),
            parsed.kid.map(str::to_owned),
            parsed.alg.to_owned(),
        )
    };
    if !typ_ok {
        return Err(Invalid::Type);
    }
    if crit {
        return Err(Invalid::Critical);
    }
    let alg = *algorithms
        .iter()
        .find(|a| a.as_str() == alg)
        .ok_or(Invalid::Algorithm)?;
    let kid = kid.ok_or(Invalid::UnknownKey(String::new()))?;
    Ok(Parsed {
        signed,
        payload,
        signature,
        kid,
        alg,
    })
}

/// Verifies the signature with `key` and checks the claims (RFC 9068 §4 steps 2-7).
pub(crate) fn verify(
    parsed: &Parsed<'_>,
    key: &VerifyingKey,
    expect: &Expectations<'_>,
    now: i64,
) -> Result<AccessTokenClaims, Invalid> {
    // The algorithm comes from the key; the header must agree with it.
    if key.alg() != parsed.alg {
        return Err(Invalid::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(parsed.signature)
        .map_err(|_| Invalid::Malformed)?;
    if !key.verify(parsed.signed.as_bytes(), &signature) {
        return Err(Invalid::Signature);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(parsed.payload)
        .map_err(|_| Invalid::Malformed)?;
    let claims: AccessTokenClaims =
        serde_json::from_slice(&payload).map_err(|_| Invalid::Claims)?;
    // A token bound to a key or certificate (`cnf`, RFC 9449 §6, RFC 8705 §3) keeps its
    // `cnf`: the caller decides with the request's proof (any `cnf` object reads as Some).
    if claims.iss != expect.issuer {
        return Err(Invalid::Issuer);
    }
    if !claims.aud.contains(expect.audience) {
        return Err(Invalid::Audience);
    }
    check_times(&claims, expect.leeway, now)?;
    Ok(claims)
}

/// `exp` and `nbf` against `now`, with `leeway` seconds of skew.
pub(crate) fn check_times(
    claims: &AccessTokenClaims,
    leeway: i64,
    now: i64,
) -> Result<(), Invalid> {
    if now >= claims.exp.saturating_add(leeway) {
        return Err(Invalid::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(leeway))
    {
        return Err(Invalid::NotYetValid);
    }
    Ok(())
}
