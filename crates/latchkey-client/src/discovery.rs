//! Finding the token endpoint from the issuer: RFC 8414 authorization server metadata, with
//! OpenID Connect Discovery as the fallback for servers that only publish that. Each document
//! is fetched and checked by latchkey-common's `discovery::fetch_document` (body cap, exact
//! issuer); this module adds the issuer's syntax, the order, and retries per the
//! [`RetryPolicy`].

use std::time::{Duration, SystemTime};

use http::StatusCode;
use latchkey_common::RetryPolicy;
use latchkey_common::body::BodyError;
use latchkey_common::discovery::{FetchError, fetch_document, well_known};
use latchkey_common::retry::{retry_after, retryable};
use latchkey_proto::{AuthorizationServerMetadata, ClientAuthMethod};
use url::Url;

use crate::builder::endpoint_url;
use crate::clock::Clock;
use crate::error::Error;
use crate::retry::{self, Attempt};
use crate::token_request::network_failure;

/// Reads the authorization server metadata of `issuer`: RFC 8414 §3 first, then OpenID
/// Connect Discovery. Checks that the issuer is `https` (plain `http` only on loopback) without
/// a query, and that the document names exactly this issuer (RFC 8414 §3.3), or an attacker's
/// document could point the caller elsewhere. Failures worth another try are retried per
/// `retry`. Resource servers use it too, to find the JWKS.
pub async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    retry: &RetryPolicy,
    clock: &dyn Clock,
) -> Result<AuthorizationServerMetadata, Error> {
    let url = endpoint_url("issuer", issuer)?;
    if url.query().is_some() {
        return Err(Error::Config(
            "an issuer has no query component (RFC 8414 §2)".into(),
        ));
    }
    let documents = well_known(&url);
    let mut last_status = None;
    for candidate in [documents.rfc8414, documents.openid] {
        let fetched = retry::run(retry, |timeout| {
            fetch(http, &candidate, issuer, timeout, clock.now())
        })
        .await?;
        match fetched {
            Fetched::Found(metadata) => return Ok(*metadata),
            Fetched::NotFound => last_status = Some(candidate),
        }
    }
    Err(Error::Discovery(format!(
        "no metadata at {} or its OpenID Connect equivalent",
        last_status.map_or_else(String::new, |u| u.to_string())
    )))
}

enum Fetched {
    Found(Box<AuthorizationServerMetadata>),
    NotFound,
}

/// One attempt at the document at `url`: found, not there (404: try the next place), worth
/// retrying (no answer, 408, 429, 5xx), or a failure for good.
async fn fetch(
    http: &reqwest::Client,
    url: &Url,
    issuer: &str,
    timeout: Duration,
    now: SystemTime,
) -> Attempt<Fetched> {
    match fetch_document::<AuthorizationServerMetadata>(http, url, issuer, timeout).await {
        Ok(metadata) => Attempt::Done(Fetched::Found(Box::new(metadata))),
        Err(FetchError::Unreachable(error) | FetchError::Body(BodyError::Network(error))) => {
            network_failure(&error)
        }
        Err(FetchError::Status(StatusCode::NOT_FOUND, _)) => Attempt::Done(Fetched::NotFound),
        Err(FetchError::Status(status, headers)) if retryable(status) => Attempt::Retry {
            reason: format!("HTTP {} from {url}", status.as_u16()),
            retry_after: retry_after(&headers, now),
        },
        Err(FetchError::Status(status, _)) => Attempt::Fatal(Error::Discovery(format!(
            "HTTP {} from {url}",
            status.as_u16()
        ))),
        Err(FetchError::Body(BodyError::TooLarge { .. })) => Attempt::Fatal(Error::Discovery(
            format!("{url}: the document is too large"),
        )),
        Err(FetchError::Malformed(error)) => Attempt::Fatal(Error::Discovery(format!(
            "{url} is not an RFC 8414 metadata document: {error}"
        ))),
        Err(FetchError::WrongIssuer(named)) => Attempt::Fatal(Error::Discovery(format!(
            "the metadata names issuer {named:?}, not {issuer:?} (RFC 8414 §3.3)"
        ))),
    }
}

/// Checks that the server offers the client credentials grant with `method`.
pub(crate) fn check_offers(
    metadata: &AuthorizationServerMetadata,
    method: ClientAuthMethod,
) -> Result<(), Error> {
    // RFC 8414 §2 reads an absent list as authorization_code and implicit only; many servers
    // that do offer client_credentials leave it out, so only a list that names grants and
    // leaves client_credentials out is refused. The token request settles the rest.
    let grants = &metadata.grant_types_supported;
    if !grants.is_empty() && !grants.iter().any(|g| g == "client_credentials") {
        return Err(Error::Discovery(
            "the server does not list client_credentials in grant_types_supported".into(),
        ));
    }
    // RFC 8414 §2: an absent list means client_secret_basic only.
    let methods = &metadata.token_endpoint_auth_methods_supported;
    let supported = if methods.is_empty() {
        method == ClientAuthMethod::ClientSecretBasic
    } else {
        methods.iter().any(|m| m == method.as_str())
    };
    if !supported {
        return Err(Error::Discovery(format!(
            "the server does not accept {} at its token endpoint",
            method.as_str()
        )));
    }
    Ok(())
}
