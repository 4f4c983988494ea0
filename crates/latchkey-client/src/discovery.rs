//! Finding the token endpoint from the issuer: RFC 8414 authorization server metadata, with
//! OpenID Connect Discovery as the fallback for servers that only publish that.

use std::time::SystemTime;

use http::StatusCode;
use latchkey_proto::{AuthorizationServerMetadata, ClientAuthMethod};
use url::Url;

use crate::builder::endpoint_url;
use crate::clock::Clock;
use crate::error::Error;
use crate::retry::{Attempt, RetryPolicy};
use crate::token_request::{BodyError, network_failure, read_limited, retryable};

/// RFC 8414 §3.1: the well-known suffix goes between the host and the issuer's path; OpenID
/// Connect Discovery 1.0 §4 appends its suffix to the issuer instead.
pub(crate) fn metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut urls = Vec::with_capacity(2);
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    urls.push(rfc8414);
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    urls.push(oidc);
    urls
}

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
    let mut last_status = None;
    for candidate in metadata_urls(&url) {
        let fetched = retry
            .run(|timeout| fetch(http, &candidate, timeout, clock.now()))
            .await?;
        match fetched {
            Fetched::Found(metadata) => {
                if metadata.issuer != issuer {
                    return Err(Error::Discovery(format!(
                        "the metadata names issuer {:?}, not {issuer:?} (RFC 8414 §3.3)",
                        metadata.issuer
                    )));
                }
                return Ok(*metadata);
            }
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

async fn fetch(
    http: &reqwest::Client,
    url: &Url,
    timeout: std::time::Duration,
    now: SystemTime,
) -> Attempt<Fetched> {
    let response = match http
        .get(url.clone())
        .timeout(timeout)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return network_failure(&error),
    };
    let status = response.status();
    let headers = response.headers().clone();
    let body = match read_limited(response).await {
        Ok(body) => body,
        Err(BodyError::Network(error)) => return network_failure(&error),
        Err(BodyError::TooLarge) if retryable(status) => Vec::new(),
        Err(BodyError::TooLarge) => {
            return Attempt::Fatal(Error::Discovery(format!(
                "{url}: the document is too large"
            )));
        }
    };
    if status == StatusCode::OK {
        return match serde_json::from_slice(&body) {
            Ok(metadata) => Attempt::Done(Fetched::Found(Box::new(metadata))),
            Err(error) => Attempt::Fatal(Error::Discovery(format!(
                "{url} is not an RFC 8414 metadata document: {error}"
            ))),
        };
    }
    if status == StatusCode::NOT_FOUND {
        return Attempt::Done(Fetched::NotFound);
    }
    if retryable(status) {
        return Attempt::Retry {
            reason: format!("HTTP {} from {url}", status.as_u16()),
            retry_after: crate::retry::retry_after(&headers, now),
        };
    }
    Attempt::Fatal(Error::Discovery(format!(
        "HTTP {} from {url}",
        status.as_u16()
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_follow_rfc8414_then_oidc() {
        let urls = |issuer: &str| -> Vec<String> {
            metadata_urls(&Url::parse(issuer).unwrap())
                .into_iter()
                .map(String::from)
                .collect()
        };
        assert_eq!(
            urls("https://as.example"),
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            urls("https://as.example/tenant/a/"),
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant/a",
                "https://as.example/tenant/a/.well-known/openid-configuration"
            ]
        );
    }
}
