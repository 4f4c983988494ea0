//! Mutual-TLS client authentication and certificate-bound tokens (RFC 8705), without IO:
//! whether a certificate carries the subject DN or subject alternative name a
//! `tls_client_auth` client registered (§2.1.2; the registered value is a
//! `model::TlsSubject`); which certificates a `self_signed_tls_client_auth` client registered
//! (§2.2.2); and the `x5t#S256` confirmation of a certificate (§3.1).
//!
//! The TLS handshake has already proven that the peer holds the certificate's private key;
//! for `tls_client_auth` the service layer (`service/authenticate.rs`) has also checked the
//! chain against the `--client-ca` roots. What is decided here is whether that certificate is
//! this client's.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_proto::Jwk;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::model::TlsSubject;
use crate::model::credential::{Attribute, normalize};

/// The largest certificate latchkey reads (DER bytes); real client certificates are 1–3 KiB.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// RFC 8705 §3.1: the `x5t#S256` confirmation of a certificate, base64url SHA-256 of its DER.
pub fn certificate_thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// RFC 8705 §2.1.2: whether the certificate (DER) carries this subject DN, or has this value
/// among its subject alternative names of the registered type. A certificate that does not
/// parse matches nothing.
pub fn subject_matches(subject: &TlsSubject, der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    if let TlsSubject::SubjectDn(dn) = subject {
        return certificate_dn(&cert).is_some_and(|actual| actual == dn.rdns());
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|name| match (subject, name) {
            // DNS names compare case-insensitively (RFC 4343); no wildcards: the
            // registered name is one client's.
            (TlsSubject::SanDns(want), GeneralName::DNSName(got)) => want.eq_ignore_ascii_case(got),
            (TlsSubject::SanUri(want), GeneralName::URI(got)) => want == got,
            (TlsSubject::SanEmail(want), GeneralName::RFC822Name(got)) => want == got,
            (TlsSubject::SanIp(want), GeneralName::IPAddress(got)) => match *want {
                IpAddr::V4(v4) => *got == v4.octets(),
                IpAddr::V6(v6) => *got == v6.octets(),
            },
            _ => false,
        })
}

/// The certificate's subject in RFC 4514 order, or `None` if a value is not a string.
fn certificate_dn(cert: &X509Certificate<'_>) -> Option<Vec<Vec<Attribute>>> {
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let mut set = Vec::new();
        for attribute in rdn.iter() {
            let value = attribute.as_str().ok()?;
            set.push((attribute.attr_type().to_id_string(), normalize(value)));
        }
        set.sort();
        rdns.push(set);
    }
    rdns.reverse();
    Some(rdns)
}

/// The public JWK of a certificate's key, with the certificate as its `x5c` (RFC 7517 §4.7):
/// how a `self_signed_tls_client_auth` client's certificate is registered (RFC 8705 §2.2.2).
/// Keys latchkey could not verify with (other curves, DSA) are refused.
pub fn certificate_jwk(der: &[u8]) -> Result<Jwk, String> {
    let mut jwk = public_jwk(der)?;
    jwk.x5c = Some(vec![STANDARD.encode(der)]);
    Ok(jwk)
}

/// The public JWK of a certificate's key, without `kid` or `x5c`.
pub fn public_jwk(der: &[u8]) -> Result<Jwk, String> {
    use x509_parser::public_key::PublicKey;
    if der.len() > MAX_CERTIFICATE_BYTES {
        return Err("the certificate is larger than 16 KiB".into());
    }
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let b64 = |bytes: &[u8]| Some(URL_SAFE_NO_PAD.encode(bytes));
    let mut jwk = Jwk::default();
    match spki.parsed() {
        Ok(PublicKey::EC(point)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            let data = point.data();
            if curve.as_deref() != Some("1.2.840.10045.3.1.7") || data.len() != 65 || data[0] != 4 {
                return Err("only P-256 EC keys (uncompressed) are supported".into());
            }
            jwk.kty = "EC".into();
            jwk.crv = Some("P-256".into());
            jwk.x = b64(&data[1..33]);
            jwk.y = b64(&data[33..]);
        }
        Ok(PublicKey::RSA(rsa)) => {
            let strip = |bytes: &[u8]| {
                let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
                bytes[start..].to_vec()
            };
            jwk.kty = "RSA".into();
            jwk.n = b64(&strip(rsa.modulus));
            jwk.e = b64(&strip(rsa.exponent));
        }
        Ok(PublicKey::Unknown(key)) if algorithm == "1.3.101.112" && key.len() == 32 => {
            jwk.kty = "OKP".into();
            jwk.crv = Some("Ed25519".into());
            jwk.x = b64(key);
        }
        _ => {
            return Err(
                "the certificate's key is not EC P-256, Ed25519 or RSA, which latchkey supports"
                    .into(),
            );
        }
    }
    Ok(jwk)
}

/// The DER certificates of a stored JWK Set's keys (the first of each `x5c`): the
/// certificates a `self_signed_tls_client_auth` client registered (RFC 8705 §2.2.2).
pub fn registered_certificates(stored: Option<&str>) -> Vec<Vec<u8>> {
    let Some(set) = stored.and_then(|s| serde_json::from_str::<latchkey_proto::JwkSet>(s).ok())
    else {
        return Vec::new();
    };
    set.keys
        .iter()
        .filter_map(|key| key.x5c.as_ref()?.first())
        .filter_map(|cert| STANDARD.decode(cert).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_no_certificate() {
        assert!(public_jwk(b"not a certificate").is_err());
        assert!(!subject_matches(&TlsSubject::SanDns("a".into()), b"junk"));
        assert_eq!(certificate_thumbprint(b"").len(), 43);
    }
}
