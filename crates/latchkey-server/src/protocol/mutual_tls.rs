//! Mutual-TLS client authentication and certificate-bound tokens (RFC 8705), without IO: what
//! a `tls_client_auth` client registers (one subject DN or subject alternative name, §2.1.2)
//! and whether a certificate carries it; which certificates a `self_signed_tls_client_auth`
//! client registered (§2.2.2); and the `x5t#S256` confirmation of a certificate (§3.1).
//!
//! The TLS handshake has already proven that the peer holds the certificate's private key;
//! for `tls_client_auth` the HTTP layer has also checked the chain against the `--client-ca`
//! roots. What is decided here is whether that certificate is this client's.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_proto::Jwk;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// The largest certificate latchkey reads (DER bytes); real client certificates are 1–3 KiB.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// RFC 8705 §3.1: the `x5t#S256` confirmation of a certificate, base64url SHA-256 of its DER.
pub fn certificate_thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Which certificate identifies a `tls_client_auth` client: exactly one of the RFC 8705
/// §2.1.2 client metadata values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSubject {
    /// `tls_client_auth_subject_dn`: the subject distinguished name, as the RFC 4514 string
    /// registered and parsed once (never per request).
    SubjectDn(Dn),
    /// `tls_client_auth_san_dns`: a dNSName SAN entry.
    SanDns(String),
    /// `tls_client_auth_san_uri`: a uniformResourceIdentifier SAN entry.
    SanUri(String),
    /// `tls_client_auth_san_ip`: an iPAddress SAN entry (IPv4 or IPv6).
    SanIp(IpAddr),
    /// `tls_client_auth_san_email`: an rfc822Name SAN entry.
    SanEmail(String),
}

impl TlsSubject {
    /// Every metadata name, as the CLI and the store spell them.
    pub const KINDS: [&'static str; 5] = [
        "tls_client_auth_subject_dn",
        "tls_client_auth_san_dns",
        "tls_client_auth_san_uri",
        "tls_client_auth_san_ip",
        "tls_client_auth_san_email",
    ];

    /// Checks a value an operator registers under the metadata name `kind`.
    pub fn parse(kind: &str, value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
            return Err(format!(
                "{kind} must be 1 to 1024 characters without control characters"
            ));
        }
        let value = value.to_owned();
        Ok(match kind {
            "tls_client_auth_subject_dn" => {
                let rdns = parse_dn(&value).map_err(|why| format!("{kind} {value:?}: {why}"))?;
                TlsSubject::SubjectDn(Dn { text: value, rdns })
            }
            "tls_client_auth_san_dns" => TlsSubject::SanDns(value),
            "tls_client_auth_san_uri" => TlsSubject::SanUri(value),
            "tls_client_auth_san_ip" => TlsSubject::SanIp(
                value
                    .parse()
                    .map_err(|_| format!("{kind} {value:?} is not an IP address"))?,
            ),
            "tls_client_auth_san_email" => TlsSubject::SanEmail(value),
            other => return Err(format!("unknown tls_client_auth metadata {other:?}")),
        })
    }

    /// The RFC 8705 §2.1.2 metadata name.
    pub fn kind(&self) -> &'static str {
        match self {
            TlsSubject::SubjectDn(_) => Self::KINDS[0],
            TlsSubject::SanDns(_) => Self::KINDS[1],
            TlsSubject::SanUri(_) => Self::KINDS[2],
            TlsSubject::SanIp(_) => Self::KINDS[3],
            TlsSubject::SanEmail(_) => Self::KINDS[4],
        }
    }

    /// The registered value, as the operator gave it.
    pub fn value(&self) -> String {
        match self {
            TlsSubject::SubjectDn(dn) => dn.text.clone(),
            TlsSubject::SanDns(v) | TlsSubject::SanUri(v) | TlsSubject::SanEmail(v) => v.clone(),
            TlsSubject::SanIp(ip) => ip.to_string(),
        }
    }

    /// RFC 8705 §2.1.2: whether the certificate (DER) carries this subject DN, or has this
    /// value among its subject alternative names of the registered type. A certificate that
    /// does not parse matches nothing.
    pub fn matches(&self, der: &[u8]) -> bool {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return false;
        };
        if let TlsSubject::SubjectDn(dn) = self {
            return certificate_dn(&cert).is_some_and(|actual| actual == dn.rdns);
        }
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return false;
        };
        san.value
            .general_names
            .iter()
            .any(|name| match (self, name) {
                // DNS names compare case-insensitively (RFC 4343); no wildcards: the
                // registered name is one client's.
                (TlsSubject::SanDns(want), GeneralName::DNSName(got)) => {
                    want.eq_ignore_ascii_case(got)
                }
                (TlsSubject::SanUri(want), GeneralName::URI(got)) => want == got,
                (TlsSubject::SanEmail(want), GeneralName::RFC822Name(got)) => want == got,
                (TlsSubject::SanIp(want), GeneralName::IPAddress(got)) => match *want {
                    IpAddr::V4(v4) => *got == v4.octets(),
                    IpAddr::V6(v6) => *got == v6.octets(),
                },
                _ => false,
            })
    }
}

/// A registered subject DN: the RFC 4514 string as given, and its RDNs for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn {
    text: String,
    rdns: Vec<Vec<Attribute>>,
}

/// One attribute of a distinguished name: its type as a dotted OID, and its value.
type Attribute = (String, String);

/// An RFC 4514 string parsed into RDNs, in the order the string gives them (the reverse of
/// the certificate's ASN.1 order, §2.1), each a set of attributes sorted for comparison.
fn parse_dn(text: &str) -> Result<Vec<Vec<Attribute>>, String> {
    let mut rdns: Vec<Vec<Attribute>> = vec![Vec::new()];
    let mut chars = text.chars().peekable();
    loop {
        // attributeType "=" attributeValue (§3)
        let mut name = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            name.push(c);
        }
        let name = name.trim();
        let oid = attribute_oid(name).ok_or_else(|| {
            format!("{name:?} is not an attribute type latchkey knows (use a dotted OID)")
        })?;
        let mut value = String::new();
        let mut raw: Vec<u8> = Vec::new();
        let mut end = None;
        while let Some(c) = chars.next() {
            match c {
                ',' | '+' => {
                    end = Some(c);
                    break;
                }
                '\\' => {
                    let next = chars.next().ok_or("ends with a lone backslash")?;
                    if next.is_ascii_hexdigit() {
                        let low = chars
                            .next()
                            .filter(char::is_ascii_hexdigit)
                            .ok_or("a \\ escape needs two hex digits or a special character")?;
                        let byte = u8::from_str_radix(&format!("{next}{low}"), 16)
                            .map_err(|e| e.to_string())?;
                        raw.push(byte);
                        continue;
                    }
                    if !" \"#+,;<=>\\".contains(next) {
                        return Err(format!("\\{next} is not an RFC 4514 escape"));
                    }
                    flush(&mut raw, &mut value)?;
                    value.push(next);
                }
                '#' if value.is_empty() && raw.is_empty() => {
                    return Err("hex-encoded (#...) values are not supported".into());
                }
                '"' | ';' | '<' | '>' => {
                    return Err(format!("{c:?} must be escaped with a backslash"));
                }
                c => {
                    flush(&mut raw, &mut value)?;
                    value.push(c);
                }
            }
        }
        flush(&mut raw, &mut value)?;
        if value.chars().any(char::is_control) {
            return Err(format!("{name} has a control character"));
        }
        if value.trim().is_empty() {
            return Err(format!("{name} has an empty value"));
        }
        rdns.last_mut()
            .ok_or("empty")?
            .push((oid, normalize(&value)));
        match end {
            Some('+') => {}
            Some(_) => rdns.push(Vec::new()),
            None => break,
        }
    }
    for rdn in &mut rdns {
        rdn.sort();
    }
    Ok(rdns)
}

/// Appends bytes from `\XX` escapes (UTF-8) to `value`.
fn flush(raw: &mut Vec<u8>, value: &mut String) -> Result<(), String> {
    if !raw.is_empty() {
        value.push_str(std::str::from_utf8(raw).map_err(|_| "escaped bytes are not UTF-8")?);
        raw.clear();
    }
    Ok(())
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

/// DN values compare like LDAP's caseIgnoreMatch (RFC 4517 §4.2.11, with the insignificant
/// space handling of RFC 4518 §2.6.1), restricted to ASCII case: outer spaces dropped, inner
/// runs of spaces as one, ASCII letters case-insensitive, every other character exactly (no
/// Unicode case folding, which would let look-alike names match).
fn normalize(value: &str) -> String {
    value
        .split(' ')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// The dotted OID of an attribute type: a short name from RFC 4514 §3 (and the ones
/// certificates commonly carry), or an OID as given.
fn attribute_oid(name: &str) -> Option<String> {
    const NAMES: &[(&str, &str)] = &[
        ("CN", "2.5.4.3"),
        ("SN", "2.5.4.4"),
        ("SERIALNUMBER", "2.5.4.5"),
        ("C", "2.5.4.6"),
        ("L", "2.5.4.7"),
        ("ST", "2.5.4.8"),
        ("STREET", "2.5.4.9"),
        ("O", "2.5.4.10"),
        ("OU", "2.5.4.11"),
        ("TITLE", "2.5.4.12"),
        ("GN", "2.5.4.42"),
        ("DC", "0.9.2342.19200300.100.1.25"),
        ("UID", "0.9.2342.19200300.100.1.1"),
        ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
    ];
    let upper = name.to_ascii_uppercase();
    if let Some((_, oid)) = NAMES.iter().find(|(short, _)| *short == upper) {
        return Some((*oid).to_owned());
    }
    let oid = name.strip_prefix("OID.").unwrap_or(name);
    let dotted = oid.split('.').count() >= 2
        && oid
            .split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
    dotted.then(|| oid.to_owned())
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
    fn rfc4514_strings_parse_into_rdns() {
        let dn = parse_dn("CN=Client One,O=Example\\, Inc.,C=US").unwrap();
        assert_eq!(
            dn,
            vec![
                vec![("2.5.4.3".to_owned(), "client one".to_owned())],
                vec![("2.5.4.10".to_owned(), "example, inc.".to_owned())],
                vec![("2.5.4.6".to_owned(), "us".to_owned())],
            ]
        );
        // Spaces around the separators and inside values are insignificant; case too.
        assert_eq!(
            parse_dn("cn = client   one , o=EXAMPLE\\2C Inc., c=us").unwrap(),
            dn
        );
        // Multi-valued RDNs compare as sets.
        assert_eq!(
            parse_dn("CN=a+UID=b").unwrap(),
            parse_dn("UID=b+CN=a").unwrap()
        );
        assert_eq!(
            parse_dn("2.5.4.3=x").unwrap(),
            parse_dn("OID.2.5.4.3=x").unwrap()
        );
        for bad in [
            "CN",
            "CN=",
            "XX=a",
            "CN=#0403616263",
            "CN=a\\",
            "CN=a;O=b",
            "CN=\\zz",
            "CN=a\\00b",
        ] {
            assert!(parse_dn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subjects_are_checked_at_registration() {
        assert!(TlsSubject::parse("tls_client_auth_san_ip", "10.0.0.1").is_ok());
        assert!(TlsSubject::parse("tls_client_auth_san_ip", "::1").is_ok());
        assert!(TlsSubject::parse("tls_client_auth_san_ip", "host").is_err());
        assert!(TlsSubject::parse("tls_client_auth_subject_dn", "CN=x").is_ok());
        assert!(TlsSubject::parse("tls_client_auth_subject_dn", "nonsense").is_err());
        assert!(TlsSubject::parse("tls_client_auth_san_dns", "").is_err());
        assert!(TlsSubject::parse("tls_client_auth_other", "x").is_err());
        let subject = TlsSubject::parse("tls_client_auth_san_dns", "svc.example").unwrap();
        assert_eq!(
            TlsSubject::parse(subject.kind(), &subject.value()).unwrap(),
            subject
        );
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert!(public_jwk(b"not a certificate").is_err());
        assert!(!TlsSubject::SanDns("a".into()).matches(b"junk"));
        assert_eq!(certificate_thumbprint(b"").len(), 43);
    }
}
