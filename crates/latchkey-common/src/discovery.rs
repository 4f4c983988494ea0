//! Reading an issuer's discovery document: where it is (RFC 8414 §3.1, OpenID Connect
//! Discovery 1.0 §4), one fetch with a body cap, and the exact-issuer check (RFC 8414 §3.3,
//! OpenID Connect Discovery 1.0 §4.3), without which an attacker's document could point the
//! caller at other keys or another token endpoint.
//!
//! What stays with each caller: which of the two documents to ask first, whether and how to
//! retry, and the HTTP client, which decides where a request may go (the server's allows no
//! proxy, no redirect and only public addresses). Nothing here builds a client.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use latchkey_proto::AuthorizationServerMetadata;
use serde::de::DeserializeOwned;
use url::Url;

use crate::body::{BodyError, read_capped};

/// The largest discovery document read.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// A discovery document: whatever else it holds, it names its issuer.
pub trait IssuerDocument: DeserializeOwned {
    /// The `issuer` member.
    fn issuer(&self) -> &str;
}

impl IssuerDocument for AuthorizationServerMetadata {
    fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// Where an issuer publishes its discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WellKnown {
    /// RFC 8414 §3.1: the well-known suffix goes between the host and the issuer's path.
    pub rfc8414: Url,
    /// OpenID Connect Discovery 1.0 §4: the suffix is appended to the issuer.
    pub openid: Url,
}

/// The two places `issuer` may publish its discovery document.
pub fn well_known(issuer: &Url) -> WellKnown {
    let path = issuer.path().trim_end_matches('/');
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut openid = issuer.clone();
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    WellKnown { rfc8414, openid }
}

/// Why no document came from one URL.
#[derive(Debug)]
pub enum FetchError {
    /// No answer: the connection failed or timed out before a status line.
    Unreachable(reqwest::Error),
    /// An answer other than 200 OK, the only success RFC 8414 §3.2 and OpenID Connect
    /// Discovery 1.0 §4.2 allow. Its body is not read.
    Status(StatusCode, HeaderMap),
    /// A 200 whose body could not be read: larger than [`MAX_DOCUMENT_BYTES`], or the
    /// connection failed.
    Body(BodyError),
    /// A 200 that is not a document of the expected shape.
    Malformed(serde_json::Error),
    /// A document that names another issuer (given here). Not to be used.
    WrongIssuer(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unreachable(error) => error.fmt(f),
            FetchError::Status(status, _) => write!(f, "HTTP {}", status.as_u16()),
            FetchError::Body(error) => error.fmt(f),
            FetchError::Malformed(error) => error.fmt(f),
            FetchError::WrongIssuer(found) => write!(f, "the document names the issuer {found:?}"),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Unreachable(error) => Some(error),
            FetchError::Body(error) => Some(error),
            FetchError::Malformed(error) => Some(error),
            FetchError::Status(..) | FetchError::WrongIssuer(_) => None,
        }
    }
}

/// Fetches the discovery document at `url` with `http`, within `timeout`, and returns it only
/// when it is a 200, at most [`MAX_DOCUMENT_BYTES`], parses as `T`, and names exactly `issuer`
/// (RFC 8414 §3.3: identical, not "equivalent"; a trailing slash is another issuer).
pub async fn fetch_document<T: IssuerDocument>(
    http: &reqwest::Client,
    url: &Url,
    issuer: &str,
    timeout: Duration,
) -> Result<T, FetchError> {
    let response = http
        .get(url.clone())
        .timeout(timeout)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(FetchError::Unreachable)?;
    let status = response.status();
    if status != StatusCode::OK {
        return Err(FetchError::Status(status, response.headers().clone()));
    }
    let body = read_capped(response, MAX_DOCUMENT_BYTES)
        .await
        .map_err(FetchError::Body)?;
    let document: T = serde_json::from_slice(&body).map_err(FetchError::Malformed)?;
    if document.issuer() != issuer {
        return Err(FetchError::WrongIssuer(document.issuer().to_owned()));
    }
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_follow_rfc8414_and_oidc() {
        let urls = |issuer: &str| -> [String; 2] {
            let found = well_known(&Url::parse(issuer).unwrap());
            [found.rfc8414.into(), found.openid.into()]
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
        assert_eq!(
            urls("http://127.0.0.1:8080/t"),
            [
                "http://127.0.0.1:8080/.well-known/oauth-authorization-server/t",
                "http://127.0.0.1:8080/t/.well-known/openid-configuration"
            ]
        );
    }

    /// An HTTP/1.1 server on loopback that answers every request with `status` and `body`.
    async fn serve(status: u16, body: String) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nretry-after: 7\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        url
    }

    async fn fetch(
        status: u16,
        body: String,
        issuer: &str,
    ) -> Result<AuthorizationServerMetadata, FetchError> {
        let url = serve(status, body).await;
        fetch_document(
            &reqwest::Client::new(),
            &url,
            issuer,
            Duration::from_secs(5),
        )
        .await
    }

    #[tokio::test]
    async fn a_document_is_a_200_naming_exactly_the_issuer_within_the_cap() {
        let document =
            |issuer: &str| format!(r#"{{"issuer":"{issuer}","token_endpoint":"{issuer}/token"}}"#);
        let found = fetch(200, document("https://as.example"), "https://as.example").await;
        assert_eq!(found.unwrap().token_endpoint, "https://as.example/token");
        // RFC 8414 §3.3: identical, not equivalent.
        let slash = fetch(200, document("https://as.example"), "https://as.example/").await;
        assert!(matches!(slash, Err(FetchError::WrongIssuer(ref i)) if i == "https://as.example"));
        let evil = fetch(200, document("https://evil.example"), "https://as.example").await;
        assert!(matches!(evil, Err(FetchError::WrongIssuer(_))));
        // Any other status is reported with its headers, the body unread.
        for status in [201, 404, 503] {
            let answer = fetch(status, document("https://as.example"), "https://as.example").await;
            let Err(FetchError::Status(got, headers)) = answer else {
                panic!("{status}: {answer:?}");
            };
            assert_eq!(got.as_u16(), status);
            assert_eq!(headers["retry-after"], "7");
        }
        let huge = format!(
            r#"{{"issuer":"https://as.example","token_endpoint":"x","pad":"{}"}}"#,
            "x".repeat(MAX_DOCUMENT_BYTES)
        );
        let too_large = fetch(200, huge, "https://as.example").await;
        assert!(matches!(
            too_large,
            Err(FetchError::Body(BodyError::TooLarge { .. }))
        ));
        let html = fetch(200, "<html>".into(), "https://as.example").await;
        assert!(matches!(html, Err(FetchError::Malformed(_))));
        // A document without what the caller needs (here, token_endpoint) is malformed too.
        let partial = fetch(
            200,
            r#"{"issuer":"https://as.example"}"#.into(),
            "https://as.example",
        )
        .await;
        assert!(matches!(partial, Err(FetchError::Malformed(_))));
    }

    #[tokio::test]
    async fn no_answer_is_unreachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let answer: Result<AuthorizationServerMetadata, _> =
            fetch_document(&reqwest::Client::new(), &url, "x", Duration::from_secs(5)).await;
        assert!(matches!(answer, Err(FetchError::Unreachable(_))));
    }
}
