//! What every OAuth endpoint (token, introspection, revocation) does before its use case runs:
//! transport checks and a strict parse of the form body, into a [`ClientRequest`].

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::error::OAuthError;
use crate::protocol::request::RequestParams;
use crate::service::ClientRequest;
use crate::tls::TlsPeer;

/// Bodies over 16 KiB are refused with 413 before parsing (docs/CONFORMANCE.md, "Request
/// limits and transport").
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Only POST, no parameters in the URI, a form body of at most 16 KiB, no repeated parameters
/// (RFC 6749 §2.3.1, §3.2; docs/CONFORMANCE.md, "Request limits and transport"); at most one
/// `Authorization` header (RFC 6749 §2.3).
pub async fn receive(
    request: Request,
    trusted_proxies: &[ipnet::IpNet],
) -> Result<ClientRequest, OAuthError> {
    let (parts, body) = request.into_parts();
    check_transport(&parts.method, parts.uri.query(), &parts.headers)?;
    let authorization = single_authorization(&parts.headers)?;
    // RFC 9449 §4.3 item 1: at most one DPoP header.
    let mut proofs = parts.headers.get_all("dpop").iter();
    let dpop = proofs.next().cloned();
    if proofs.next().is_some() {
        return Err(OAuthError::invalid_dpop_proof("more than one DPoP header"));
    }
    let certificates = parts
        .extensions
        .get::<ConnectInfo<TlsPeer>>()
        .and_then(|peer| peer.0.certificates.clone());
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|peer| source_address(peer.0.ip(), &parts.headers, trusted_proxies));
    let body = read_body(&parts.headers, body, MAX_BODY_BYTES).await?;
    let params = RequestParams::from_form(&body)?;
    Ok(ClientRequest {
        authorization,
        dpop,
        params,
        certificates,
        source,
    })
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the rightmost
/// address in `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address it
/// received from, so what is left of the first untrusted one is the client's say alone). A
/// header that does not parse leaves the proxy's own address.
pub fn source_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[ipnet::IpNet],
) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !trusted(&peer) {
        return peer;
    }
    let mut source = peer;
    // Every X-Forwarded-For line, as one list, read from the right (as bytes: an entry a
    // client wrote in other bytes must not hide the entries the proxies appended).
    let lines: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    for hop in lines
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(|b| *b == b','))
    {
        let Some(hop) = std::str::from_utf8(hop)
            .ok()
            .and_then(|h| hop_address(h.trim()))
        else {
            break;
        };
        source = hop.to_canonical();
        if !trusted(&source) {
            break;
        }
    }
    source
}

/// One `X-Forwarded-For` entry: an address, an address with a port (`1.2.3.4:5678`,
/// `[::1]:80`), or an IPv6 address in brackets, as proxies write them.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| {
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })
}

fn check_transport(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), OAuthError> {
    // RFC 6749 §3.2, RFC 7662 §2.1, RFC 7009 §2.1: these endpoints take POST.
    if method != Method::POST {
        return Err(OAuthError::invalid_request_with_status(
            StatusCode::METHOD_NOT_ALLOWED,
            "this endpoint accepts POST only",
        ));
    }
    // RFC 6749 §2.3.1: credentials "MUST NOT be included in the request URI". Our endpoint
    // URIs have no query of their own, so any query is refused (and never logged).
    if query.is_some() {
        return Err(OAuthError::invalid_request(
            "parameters must be sent in the request body, not the URI",
        ));
    }
    // RFC 6749 §4.4.2: the body is application/x-www-form-urlencoded.
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|media| media.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    Ok(())
}

/// Two Authorization headers are `invalid_request` (RFC 6749 §2.3: one authentication method
/// per request).
fn single_authorization(headers: &HeaderMap) -> Result<Option<HeaderValue>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    Ok(first.cloned())
}

/// The body, at most `limit` bytes (413 beyond, whether declared or chunked).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, OAuthError> {
    let too_large = || {
        OAuthError::invalid_request_with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} KiB", limit / 1024),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // A body declared far beyond the limit is refused unread. One a little over it is read up
    // to the limit first, so that a client still writing it does not find the connection
    // closed before it can read the 413.
    if declared.is_some_and(|len| len > 4 * limit as u64) {
        return Err(too_large());
    }
    // The limit also bounds chunked bodies that declare no length.
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        if err.into_inner().is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            OAuthError::invalid_request("the request body could not be read")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(peer: &str, forwarded: &[&str], trusted: &[&str]) -> IpAddr {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        source_address(peer.parse().unwrap(), &headers, &trusted)
    }

    #[test]
    fn the_client_address_is_the_rightmost_untrusted_forwarded_one() {
        let proxies = ["10.0.0.0/8"];
        // Untrusted peer: the header is ignored.
        assert_eq!(
            source("192.0.2.1", &["203.0.113.9"], &proxies),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        // Trusted peer: rightmost entry that is not a trusted proxy.
        let got = source(
            "10.0.0.1",
            &["198.51.100.1, 203.0.113.9, 10.0.0.2"],
            &proxies,
        );
        assert_eq!(got, "203.0.113.9".parse::<IpAddr>().unwrap());
        // Several header lines are one list.
        let got = source("10.0.0.1", &["198.51.100.1", "203.0.113.7"], &proxies);
        assert_eq!(got, "203.0.113.7".parse::<IpAddr>().unwrap());
        // Ports and brackets, as proxies write them.
        let got = source("10.0.0.1", &["203.0.113.9:5678"], &proxies);
        assert_eq!(got, "203.0.113.9".parse::<IpAddr>().unwrap());
        let got = source("10.0.0.1", &["[2001:db8::7]:443"], &proxies);
        assert_eq!(got, "2001:db8::7".parse::<IpAddr>().unwrap());
        let got = source("10.0.0.1", &["[2001:db8::8]"], &proxies);
        assert_eq!(got, "2001:db8::8".parse::<IpAddr>().unwrap());
        // Bytes a client wrote that are not text stop the walk there, not before.
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff, 203.0.113.5").unwrap(),
        );
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = source_address("10.0.0.1".parse().unwrap(), &headers, &trusted);
        assert_eq!(got, "203.0.113.5".parse::<IpAddr>().unwrap());
        // An entry that is no address stops the walk at the last good one.
        let got = source("10.0.0.1", &["203.0.113.9, unknown, 10.0.0.3"], &proxies);
        assert_eq!(got, "10.0.0.3".parse::<IpAddr>().unwrap());
    }
}
