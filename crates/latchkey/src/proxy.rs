//! Forwarding HTTP requests to an upstream, for `latchkey gate` and `latchkey sidecar`:
//! streaming bodies both ways, any method, hop-by-hop headers dropped (RFC 9110 §7.6.1),
//! `Via` added (§7.6.3), and the `X-Forwarded-*` headers set by the proxy alone. Requests
//! that the proxy and an upstream could read differently (an ambiguous path, an ambiguous
//! body length) are refused, not forwarded.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::body::Body;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderName, TRANSFER_ENCODING, VIA};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::request_target::{check_path, forwarded_uri};

/// The HTTP client proxies forward with: HTTP/1.1, plain or TLS (rustls, platform trust
/// store), pooled keep-alive connections.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

pub fn upstream_client() -> anyhow::Result<UpstreamClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .try_with_platform_verifier()
        .context("loading the platform's trusted certificates")?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// Where requests go.
#[derive(Clone, Debug)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// A path prefix of the upstream URL, without a trailing `/`.
    base_path: String,
}

/// How clients reach the proxy: what `X-Forwarded-Proto` tells the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Http,
    Https,
}

impl Listener {
    fn proto(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Listener::Http => "http",
            Listener::Https => "https",
        })
    }
}

/// Claims about where a request came from, by whom, how and for which path, that upstreams
/// and their frameworks believe. Only the proxy makes them: any a client sends are dropped
/// first, also spelt with `_` for `-`, which CGI-style servers read as the same name. Every
/// `x-forwarded-*` header goes (by prefix: `-uri`, `-client-cert` and whatever comes next),
/// and these besides.
const FORWARDING_HEADERS: [&str; 11] = [
    "forwarded",
    "x-real-ip",
    // Read by Rack, Spring, Werkzeug's ProxyFix and others for the scheme.
    "x-url-scheme",
    "front-end-https",
    // Path overrides some frameworks (Symfony, IIS URL Rewrite) route by.
    "x-original-url",
    "x-rewrite-url",
    // The client address as CDNs and other proxies state it.
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
];

/// Whether a client-sent header `name` makes a claim only the proxy may make.
fn is_forwarding_claim(name: &HeaderName) -> bool {
    let name = name.as_str().replace('_', "-");
    name.starts_with("x-forwarded-") || FORWARDING_HEADERS.contains(&name.as_str())
}

impl Upstream {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("--upstream {url:?}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .context("--upstream needs http:// or https://")?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            bail!("--upstream must be an http:// or https:// URL");
        }
        let authority = uri
            .authority()
            .cloned()
            .context("--upstream needs a host")?;
        Ok(Upstream {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Whether requests to this upstream stay on this machine or are encrypted: bearer
    /// tokens must not cross a network in the clear (RFC 6750 §5.3).
    pub fn is_confidential(&self) -> bool {
        if self.scheme == Scheme::HTTPS {
            return true;
        }
        let host = self
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Rewrites `request` to go to the upstream: its URI (under the upstream's path), `Host`,
    /// no hop-by-hop headers, `Via`, and `X-Forwarded-*` naming the original request as it
    /// reached `listener` from `peer`. Refuses a request the upstream could read differently
    /// from the proxy: see `check_path` and `check_framing`.
    pub fn prepare(
        &self,
        request: &mut Request<Body>,
        peer: SocketAddr,
        listener: Listener,
    ) -> Result<(), &'static str> {
        check_path(request.uri().path())?;
        check_framing(request.headers())?;
        let uri = forwarded_uri(
            self.scheme.clone(),
            self.authority.clone(),
            &self.base_path,
            request.uri(),
        )?;
        let original_host = request.headers().get(HOST).cloned();
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_11;
        let headers = request.headers_mut();
        remove_hop_by_hop(headers);
        let claims: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_forwarding_claim(name))
            .cloned()
            .collect();
        for name in claims {
            headers.remove(name);
        }
        if let Ok(host) = HeaderValue::try_from(self.authority.as_str()) {
            headers.insert(HOST, host);
        }
        if let Some(host) = original_host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        if let Ok(value) = HeaderValue::try_from(peer.ip().to_string()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            listener.proto(),
        );
        headers.append(VIA, HeaderValue::from_static("1.1 latchkey"));
        Ok(())
    }
}

/// Refuses a request body whose length two parsers could read differently (request
/// smuggling, RFC 9112 §11.2). Of transfer codings only `chunked` alone is accepted (names are
/// case-insensitive, RFC 9112 §7): the proxy decodes it and frames the body anew for the
/// upstream, and anything else (`gzip, chunked`, `chunked, chunked`, two fields) is a coding
/// no client needs here. RFC 9112 §6.1 lets a server reject a request with both
/// `Content-Length` and `Transfer-Encoding`, or read it by `Transfer-Encoding` alone and close
/// the connection after answering. hyper does the latter before the request gets here, so the
/// `Content-Length` check is a second line, for a server that keeps the field (as hyper did
/// when it came first, hyperium/hyper#4123).
fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(coding), None) if coding.as_bytes().eq_ignore_ascii_case(b"chunked") => {
            if headers.contains_key(CONTENT_LENGTH) {
                return Err("the request has both Content-Length and Transfer-Encoding");
            }
            Ok(())
        }
        _ => Err("the request's Transfer-Encoding is not chunked"),
    }
}

/// A 400 for a request that cannot be forwarded.
pub fn refuse(why: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{why}\n")));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// Sends through `send`, giving up with 504 when the upstream has not started answering (its
/// status and headers) within `timeout`, so a hung upstream cannot pin connections for ever.
/// The body then streams for as long as it takes.
pub async fn send_with_timeout<E: std::fmt::Display>(
    timeout: Duration,
    send: impl std::future::Future<Output = Result<Response<hyper::body::Incoming>, E>>,
) -> Response<Body> {
    match tokio::time::timeout(timeout, send).await {
        Ok(result) => answer(result),
        Err(_) => {
            tracing::warn!("the upstream did not answer in time");
            let mut response = Response::new(Body::from("upstream timed out\n"));
            *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            response
        }
    }
}

/// Streams the upstream's answer back; an unreachable upstream is 502.
pub fn answer(
    response: Result<Response<hyper::body::Incoming>, impl std::fmt::Display>,
) -> Response<Body> {
    match response {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .append(VIA, HeaderValue::from_static("1.1 latchkey"));
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => {
            tracing::warn!(%error, "upstream request failed");
            let mut response = Response::new(Body::from("upstream unavailable\n"));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    }
}

/// RFC 9110 §7.6.1: headers for one connection only, including those `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}
