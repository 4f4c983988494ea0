//! Forwarding HTTP requests to an upstream, for `latchkey gate` and `latchkey sidecar`:
//! streaming bodies both ways, any method, hop-by-hop headers dropped (RFC 9110 §7.6.1).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use axum::body::Body;
use http::header::{CONNECTION, HOST, HeaderName};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The HTTP client proxies forward with (plain HTTP/1.1 to an upstream on the same host or
/// network).
pub type UpstreamClient = Client<HttpConnector, Body>;

pub fn upstream_client() -> UpstreamClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Where requests go.
#[derive(Clone, Debug)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// A path prefix of the upstream URL, without a trailing `/`.
    base_path: String,
}

impl Upstream {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("--upstream {url:?}"))?;
        let scheme = uri.scheme().cloned().context("--upstream needs http://")?;
        if scheme != Scheme::HTTP {
            bail!("--upstream must be an http:// URL (the upstream is on a trusted network)");
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

    /// Rewrites `request` to go to the upstream: its URI, `Host`, no hop-by-hop headers, and
    /// `X-Forwarded-*` naming the original request.
    pub fn prepare(&self, request: &mut Request<Body>, peer: Option<SocketAddr>) {
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let original_host = request.headers().get(HOST).cloned();
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.base_path))
            .build();
        if let Ok(uri) = uri {
            *request.uri_mut() = uri;
        }
        let headers = request.headers_mut();
        remove_hop_by_hop(headers);
        if let Ok(host) = HeaderValue::try_from(self.authority.as_str()) {
            headers.insert(HOST, host);
        }
        if let Some(host) = original_host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        if let Some(peer) = peer
            && let Ok(value) = HeaderValue::try_from(peer.ip().to_string())
        {
            headers.append(HeaderName::from_static("x-forwarded-for"), value);
        }
        *request.version_mut() = http::Version::HTTP_11;
    }
}

/// Sends a prepared request and streams the answer back; an unreachable upstream is 502.
pub async fn send(
    response: Result<Response<hyper::body::Incoming>, impl std::fmt::Display>,
) -> Response<Body> {
    match response {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
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
fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
