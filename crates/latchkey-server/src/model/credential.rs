//! What authenticates a client: exactly one [`Credential`], which also decides the client's
//! authentication method, so a client with a secret and a key, or with no credential, cannot
//! be written down.

use std::net::IpAddr;

use latchkey_proto::ClientAuthMethod;

/// How a client proves who it is at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2,
/// RFC 8705 §2): one of these, never several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// RFC 6749 §2.3.1: a shared secret (the client's [`super::SecretRecord`]s), sent with
    /// HTTP Basic or in the body.
    Secret(SecretMethod),
    /// `private_key_jwt` (RFC 7523 §2.2) with public keys registered here: a JWK Set (JSON,
    /// normalized at registration).
    Keys(String),
    /// `private_key_jwt` with the keys fetched from the client's `jwks_uri` (RFC 7591 §2).
    JwksUri(String),
    /// `private_key_jwt` with workload identity tokens from a trusted external issuer.
    Federation(Federation),
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): the certificates the client registered,
    /// as a JWK Set whose keys carry them in `x5c`.
    Certificates(String),
    /// `tls_client_auth` (RFC 8705 §2.1): the subject DN or SAN its CA-issued certificate
    /// carries.
    TlsSubject(TlsSubject),
}

/// Where a client sends its secret (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMethod {
    /// `client_secret_basic`: HTTP Basic.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    Post,
}

impl Credential {
    /// The registered authentication method this credential is used with.
    pub const fn auth_method(&self) -> ClientAuthMethod {
        match self {
            Credential::Secret(SecretMethod::Basic) => ClientAuthMethod::ClientSecretBasic,
            Credential::Secret(SecretMethod::Post) => ClientAuthMethod::ClientSecretPost,
            Credential::Keys(_) | Credential::JwksUri(_) | Credential::Federation(_) => {
                ClientAuthMethod::PrivateKeyJwt
            }
            Credential::Certificates(_) => ClientAuthMethod::SelfSignedTlsClientAuth,
            Credential::TlsSubject(_) => ClientAuthMethod::TlsClientAuth,
        }
    }

    /// The credential of a secret method; `None` for a method that registers keys or a
    /// certificate, which needs them to make one.
    pub const fn secret(method: ClientAuthMethod) -> Option<Self> {
        match method {
            ClientAuthMethod::ClientSecretBasic => Some(Credential::Secret(SecretMethod::Basic)),
            ClientAuthMethod::ClientSecretPost => Some(Credential::Secret(SecretMethod::Post)),
            _ => None,
        }
    }

    /// The trusted issuer of a federated client.
    pub fn federation(&self) -> Option<&Federation> {
        match self {
            Credential::Federation(federation) => Some(federation),
            _ => None,
        }
    }

    /// Where a `private_key_jwt` client's keys are fetched from, if they are.
    pub fn jwks_uri(&self) -> Option<&str> {
        match self {
            Credential::JwksUri(uri) => Some(uri),
            _ => None,
        }
    }

    /// The registered JWK Set (JSON) of a `private_key_jwt` or `self_signed_tls_client_auth`
    /// client.
    pub fn registered_jwks(&self) -> Option<&str> {
        match self {
            Credential::Keys(jwks) | Credential::Certificates(jwks) => Some(jwks),
            _ => None,
        }
    }
}

/// A trusted external issuer, and which of its tokens authenticate a client: those with
/// exactly this `iss`, `sub` and (sole) `aud`. At the token endpoint these tokens are
/// RFC 7523 client assertions; their keys come from the issuer's JWK Set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    /// The issuer identifier; its keys come through its discovery document.
    pub issuer: String,
    /// The workload's subject, like `system:serviceaccount:ns:name`.
    pub subject: String,
    /// The audience the workload's token must be for; `None` means this server's issuer
    /// identifier.
    pub audience: Option<String>,
    /// How far from now a token's `iat` and `exp` may be, in seconds; `None` means the
    /// default of `protocol::client_assertion::DEFAULT_FEDERATED_MAX_TOKEN_AGE`.
    pub max_token_age: Option<i64>,
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
}

/// A registered subject DN: the RFC 4514 string as given, and its RDNs for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn {
    text: String,
    rdns: Vec<Vec<Attribute>>,
}

impl Dn {
    /// The RDNs in RFC 4514 order, each a sorted set of normalized attributes.
    pub fn rdns(&self) -> &[Vec<Attribute>] {
        &self.rdns
    }
}

/// One attribute of a distinguished name: its type as a dotted OID, and its value.
pub type Attribute = (String, String);

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

/// DN values compare like LDAP's caseIgnoreMatch (RFC 4517 §4.2.11, with the insignificant
/// space handling of RFC 4518 §2.6.1), restricted to ASCII case: outer spaces dropped, inner
/// runs of spaces as one, ASCII letters case-insensitive, every other character exactly (no
/// Unicode case folding, which would let look-alike names match).
pub fn normalize(value: &str) -> String {
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
}
