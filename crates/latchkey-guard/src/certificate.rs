//! The client certificate of a request, for certificate-bound tokens (RFC 8705 §3): from the
//! TLS connection (a [`ClientCertificate`] request extension that the TLS-terminating server
//! inserts) or, behind a TLS-terminating proxy, from a header that proxy sets (RFC 9440
//! `Client-Cert`), read only when the guard is configured to trust it.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Extensions, HeaderMap, HeaderName};

/// The largest certificate read from a header (DER bytes).
const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// The client certificate (DER) of this request's TLS connection, as the TLS-terminating
/// server saw it: a server that terminates TLS itself inserts one into each request's
/// extensions — [`ClientCertificate::from_der`] when the client presented a certificate (the
/// handshake proved it holds the key), [`ClientCertificate::none`] when it did not. The guard
/// checks certificate-bound tokens against it, and never reads a certificate header on such a
/// request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate(Option<Arc<[u8]>>);

impl ClientCertificate {
    /// The certificate the client presented, from its DER bytes.
    pub fn from_der(der: impl Into<Arc<[u8]>>) -> Self {
        ClientCertificate(Some(der.into()))
    }

    /// A TLS connection on which the client presented no certificate.
    pub fn none() -> Self {
        ClientCertificate(None)
    }

    /// The DER bytes, if the client presented a certificate.
    pub fn der(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

/// RFC 8705 §3.1: base64url SHA-256 of a certificate's DER, as in a token's `cnf.x5t#S256`.
pub(crate) fn thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The client certificate (DER) of a request: its TLS connection's when the server says so
/// (then no header is read, so a client on that connection cannot claim another one), else
/// the trusted header's. A header that is not configured is never read.
pub(crate) fn presented(
    extensions: &Extensions,
    headers: &HeaderMap,
    trusted_header: Option<&HeaderName>,
) -> Option<Arc<[u8]>> {
    if let Some(connection) = extensions.get::<ClientCertificate>() {
        return connection.0.clone();
    }
    let name = trusted_header?;
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        // Two certificates: the proxy did not set this header alone.
        return None;
    }
    from_header(value.to_str().ok()?).map(Arc::from)
}

/// RFC 9440 §2.2: `:BASE64-DER:` (a structured-field byte sequence); also the URL-encoded PEM
/// that nginx's `$ssl_client_escaped_cert` gives.
fn from_header(value: &str) -> Option<Vec<u8>> {
    let value = value.trim();
    let body = match value.strip_prefix(':').and_then(|v| v.strip_suffix(':')) {
        Some(b64) => b64.to_owned(),
        None => {
            let pem = percent_decode(value)?;
            let start = pem.find("-----BEGIN CERTIFICATE-----")? + 27;
            let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
            pem[start..end].split_whitespace().collect()
        }
    };
    if body.len() > MAX_CERTIFICATE_BYTES * 4 / 3 + 4 {
        return None;
    }
    STANDARD.decode(body).ok().filter(|der| !der.is_empty())
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_header_forms_decode() {
        let der = b"\x30\x03\x02\x01\x05";
        let b64 = STANDARD.encode(der);
        assert_eq!(from_header(&format!(":{b64}:")).unwrap(), der);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        let escaped = pem.replace('\n', "%0A").replace(' ', "%20");
        assert_eq!(from_header(&escaped).unwrap(), der);
        assert!(from_header("garbage").is_none());
        assert!(from_header("::").is_none());
        assert!(from_header(":not base64!:").is_none());
    }

    #[test]
    fn a_header_counts_only_when_trusted() {
        let der = STANDARD.encode(b"cert");
        let mut headers = HeaderMap::new();
        headers.insert("client-cert", format!(":{der}:").parse().unwrap());
        let name = HeaderName::from_static("client-cert");
        let none = Extensions::new();
        assert!(presented(&none, &headers, None).is_none());
        assert_eq!(&*presented(&none, &headers, Some(&name)).unwrap(), b"cert");
        // The connection's certificate wins over any header...
        let mut extensions = Extensions::new();
        extensions.insert(ClientCertificate::from_der(&b"tls"[..]));
        assert_eq!(
            &*presented(&extensions, &headers, Some(&name)).unwrap(),
            b"tls"
        );
        // ...and a TLS connection without one reads no header either.
        let mut extensions = Extensions::new();
        extensions.insert(ClientCertificate::none());
        assert!(presented(&extensions, &headers, Some(&name)).is_none());
        headers.append("client-cert", format!(":{der}:").parse().unwrap());
        assert!(presented(&none, &headers, Some(&name)).is_none());
    }
}
