//! Dynamic client registration (RFC 7591 §2): which client a registration's metadata asks for,
//! and the metadata that describes a registered client. Pure: the service layer stores.
//!
//! latchkey registers `client_credentials` clients only, so it fills in what such a client
//! needs and refuses what it cannot honour, rather than registering something else silently:
//! - `grant_types` absent means `["client_credentials"]` (RFC 7591's default of
//!   `authorization_code` is for clients with a user); any other grant is refused.
//! - `response_types` and `redirect_uris` must be absent or empty.
//! - `token_endpoint_auth_method` absent means `client_secret_basic` (RFC 7591 §2); `none`
//!   is refused (a client with no credentials cannot use `client_credentials`).
//! - `audience` (latchkey's extension) is the list of resource URIs its tokens are for.
//! - `scope` and `audience` absent mean the initial access token's limits, if it has them,
//!   else none; given, they must stay within those limits.
//! - `client_name` absent means "registered client".
//! - The admin API's audience and scopes are never registered this way, whatever the initial
//!   access token allows: only an operator makes an admin client.

use latchkey_proto::{ClientAuthMethod, ClientMetadata, GrantType};

use crate::model::{
    ADMIN_AUDIENCE, ADMIN_READ_SCOPE, ADMIN_SCOPE, ClientRecord, Credential, TlsSubject,
};

/// The name a registration that sends no `client_name` gets.
pub const DEFAULT_NAME: &str = "registered client";

/// What an initial access token lets registrations ask for (`None`: anything).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits<'a> {
    /// The scope tokens allowed.
    pub scope: Option<&'a [String]>,
    /// The audiences allowed.
    pub audience: Option<&'a [String]>,
}

/// Where the keys or certificate of a client without a secret are, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestedKeys {
    /// A JWK Set document.
    Jwks(String),
    /// A `jwks_uri`.
    JwksUri(String),
    /// A `tls_client_auth_*` member: its name, and value.
    TlsSubject(&'static str, String),
}

/// Why a registration's metadata is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `invalid_redirect_uri` (RFC 7591 §3.2.2): `redirect_uris` were sent.
    RedirectUri(String),
    /// `invalid_client_metadata`: any other member.
    Metadata(String),
}

impl From<String> for Refusal {
    fn from(description: String) -> Self {
        Refusal::Metadata(description)
    }
}

impl From<&str> for Refusal {
    fn from(description: &str) -> Self {
        Refusal::Metadata(description.to_owned())
    }
}

/// The client a registration asks for; its values are checked further (syntax, keys) when it
/// is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// Its name.
    pub name: String,
    /// Its scope tokens.
    pub scope: Vec<String>,
    /// Its audiences.
    pub audience: Vec<String>,
    /// How it authenticates.
    pub auth_method: ClientAuthMethod,
    /// Its keys or certificate subject, for a client without a secret.
    pub keys: Option<RequestedKeys>,
}

/// The client that `metadata` asks for, given the authentication methods this server takes
/// and the initial access token's `limits`; otherwise why not.
pub fn requested(
    metadata: &ClientMetadata,
    supported: &[ClientAuthMethod],
    limits: Limits<'_>,
) -> Result<Requested, Refusal> {
    if let Some(grants) = &metadata.grant_types
        && (grants.is_empty()
            || grants
                .iter()
                .any(|g| g != GrantType::ClientCredentials.as_str()))
    {
        return Err(
            "grant_types: latchkey registers clients of the client_credentials grant \
                    only; send [\"client_credentials\"] or leave it out"
                .into(),
        );
    }
    if metadata
        .response_types
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return Err(
            "response_types: a client_credentials client has none; send [] or leave \
                    it out"
                .into(),
        );
    }
    if metadata
        .redirect_uris
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return Err(Refusal::RedirectUri(
            "redirect_uris: a client_credentials client has none; send [] or leave it out".into(),
        ));
    }
    let auth_method = match metadata.token_endpoint_auth_method.as_deref() {
        None => ClientAuthMethod::ClientSecretBasic,
        Some(method) => method
            .parse::<ClientAuthMethod>()
            .ok()
            .filter(|m| supported.contains(m))
            .ok_or_else(|| {
                let names: Vec<&str> = supported.iter().map(|m| m.as_str()).collect();
                format!(
                    "token_endpoint_auth_method: {method:?} is not one this server takes ({})",
                    names.join(", ")
                )
            })?,
    };
    let keys = requested_keys(metadata, auth_method)?;
    let scope = within(
        "scope",
        metadata.scope.as_deref().map(|s| {
            s.split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        limits.scope,
    )?;
    let audience = within("audience", metadata.audience.clone(), limits.audience)?;
    if let Some(reserved) = scope
        .iter()
        .find(|s| *s == ADMIN_SCOPE || *s == ADMIN_READ_SCOPE)
    {
        return Err(format!(
            "scope: {reserved} is for admin clients, which only an operator registers"
        )
        .into());
    }
    if audience.iter().any(|a| a == ADMIN_AUDIENCE) {
        return Err(format!(
            "audience: {ADMIN_AUDIENCE} is for admin clients, which only an operator registers"
        )
        .into());
    }
    Ok(Requested {
        name: metadata
            .client_name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned()),
        scope,
        audience,
        auth_method,
        keys,
    })
}

/// The requested values, or the limit when none were requested; an error names what is
/// beyond the limit.
fn within(
    member: &str,
    requested: Option<Vec<String>>,
    limit: Option<&[String]>,
) -> Result<Vec<String>, String> {
    match (requested, limit) {
        (None, limit) => Ok(limit.map(<[String]>::to_vec).unwrap_or_default()),
        (Some(values), None) => Ok(values),
        (Some(values), Some(limit)) => {
            let beyond: Vec<&str> = values
                .iter()
                .filter(|v| !limit.contains(v))
                .map(String::as_str)
                .collect();
            if beyond.is_empty() {
                Ok(values)
            } else {
                Err(format!(
                    "{member}: {} not allowed by the initial access token (allowed: {})",
                    beyond.join(" "),
                    limit.join(" ")
                ))
            }
        }
    }
}

/// The key members of `metadata`, which must be those of `method` and no others.
fn requested_keys(
    metadata: &ClientMetadata,
    method: ClientAuthMethod,
) -> Result<Option<RequestedKeys>, String> {
    let mut given: Vec<(&'static str, RequestedKeys)> = Vec::new();
    if let Some(jwks) = &metadata.jwks {
        given.push(("jwks", RequestedKeys::Jwks(jwks.to_string())));
    }
    if let Some(uri) = &metadata.jwks_uri {
        given.push(("jwks_uri", RequestedKeys::JwksUri(uri.clone())));
    }
    let subjects = [
        &metadata.tls_client_auth_subject_dn,
        &metadata.tls_client_auth_san_dns,
        &metadata.tls_client_auth_san_uri,
        &metadata.tls_client_auth_san_ip,
        &metadata.tls_client_auth_san_email,
    ];
    for (kind, value) in TlsSubject::KINDS.into_iter().zip(subjects) {
        if let Some(value) = value {
            given.push((kind, RequestedKeys::TlsSubject(kind, value.clone())));
        }
    }
    if given.len() > 1 {
        let names: Vec<&str> = given.iter().map(|(name, _)| *name).collect();
        return Err(format!("send one of {}, not several", names.join(", ")));
    }
    let keys = given.pop();
    let wanted: &[&str] = match method {
        ClientAuthMethod::PrivateKeyJwt => &["jwks", "jwks_uri"],
        ClientAuthMethod::SelfSignedTlsClientAuth => &["jwks"],
        ClientAuthMethod::TlsClientAuth => &TlsSubject::KINDS,
        _ => &[],
    };
    match keys {
        Some((name, keys)) if wanted.contains(&name) => Ok(Some(keys)),
        Some((name, _)) => Err(format!("{name}: not used by a {method} client")),
        None if wanted.is_empty() => Ok(None),
        None => Err(format!(
            "a {method} client registers {}",
            wanted.join(" or ")
        )),
    }
}

/// The metadata of a registered client, as the client information response shows it.
pub fn metadata_of(client: &ClientRecord) -> ClientMetadata {
    let mut metadata = ClientMetadata {
        client_name: Some(client.name.clone()),
        scope: (!client.scope.is_empty()).then(|| client.scope.join(" ")),
        grant_types: Some(
            client
                .grant_types
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect(),
        ),
        response_types: Some(Vec::new()),
        redirect_uris: None,
        token_endpoint_auth_method: Some(client.auth_method().as_str().to_owned()),
        audience: Some(client.audience.clone()),
        ..ClientMetadata::default()
    };
    match &client.credential {
        Credential::Secret(_) | Credential::Federation(_) => {}
        Credential::Keys(jwks) | Credential::Certificates(jwks) => {
            metadata.jwks = serde_json::from_str(jwks).ok();
        }
        Credential::JwksUri(uri) => metadata.jwks_uri = Some(uri.clone()),
        Credential::TlsSubject(subject) => {
            let value = Some(subject.value());
            match subject {
                TlsSubject::SubjectDn(_) => metadata.tls_client_auth_subject_dn = value,
                TlsSubject::SanDns(_) => metadata.tls_client_auth_san_dns = value,
                TlsSubject::SanUri(_) => metadata.tls_client_auth_san_uri = value,
                TlsSubject::SanIp(_) => metadata.tls_client_auth_san_ip = value,
                TlsSubject::SanEmail(_) => metadata.tls_client_auth_san_email = value,
            }
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[ClientAuthMethod] = ClientAuthMethod::ALL;

    fn metadata(json: &str) -> ClientMetadata {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_empty_registration_gets_a_client_credentials_client_with_a_secret() {
        let r = requested(&metadata("{}"), ALL, Limits::default()).unwrap();
        assert_eq!(r.auth_method, ClientAuthMethod::ClientSecretBasic);
        assert_eq!(r.name, DEFAULT_NAME);
        assert!(r.scope.is_empty() && r.audience.is_empty() && r.keys.is_none());
    }

    #[test]
    fn other_grants_response_types_and_redirect_uris_are_refused() {
        for body in [
            r#"{"grant_types":["authorization_code"]}"#,
            r#"{"grant_types":[]}"#,
            r#"{"response_types":["code"]}"#,
            r#"{"redirect_uris":["https://app.example/cb"]}"#,
            r#"{"token_endpoint_auth_method":"none"}"#,
        ] {
            assert!(
                requested(&metadata(body), ALL, Limits::default()).is_err(),
                "{body}"
            );
        }
        let ok = r#"{"grant_types":["client_credentials"],"response_types":[],"redirect_uris":[]}"#;
        assert!(requested(&metadata(ok), ALL, Limits::default()).is_ok());
    }

    #[test]
    fn a_method_the_server_does_not_take_is_refused() {
        let body = metadata(
            r#"{"token_endpoint_auth_method":"tls_client_auth",
            "tls_client_auth_subject_dn":"CN=a"}"#,
        );
        assert!(
            requested(
                &body,
                &[ClientAuthMethod::ClientSecretBasic],
                Limits::default()
            )
            .is_err()
        );
        let r = requested(&body, ALL, Limits::default()).unwrap();
        assert_eq!(
            r.keys,
            Some(RequestedKeys::TlsSubject(
                "tls_client_auth_subject_dn",
                "CN=a".into()
            ))
        );
    }

    #[test]
    fn keys_must_fit_the_method() {
        for body in [
            r#"{"jwks":{"keys":[]}}"#,
            r#"{"token_endpoint_auth_method":"private_key_jwt"}"#,
            r#"{"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[]},"jwks_uri":"https://a.example/jwks"}"#,
            r#"{"token_endpoint_auth_method":"self_signed_tls_client_auth","jwks_uri":"https://a.example/jwks"}"#,
        ] {
            assert!(
                requested(&metadata(body), ALL, Limits::default()).is_err(),
                "{body}"
            );
        }
        let body = metadata(
            r#"{"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://a.example/jwks"}"#,
        );
        assert_eq!(
            requested(&body, ALL, Limits::default()).unwrap().keys,
            Some(RequestedKeys::JwksUri("https://a.example/jwks".into()))
        );
    }

    #[test]
    fn scope_and_audience_stay_within_the_limits_and_default_to_them() {
        let scope = vec!["a".to_owned(), "b".to_owned()];
        let audience = vec!["https://api.example".to_owned()];
        let limits = Limits {
            scope: Some(&scope),
            audience: Some(&audience),
        };
        let r = requested(&metadata("{}"), ALL, limits).unwrap();
        assert_eq!((r.scope, r.audience), (scope.clone(), audience.clone()));
        let r = requested(&metadata(r#"{"scope":"b"}"#), ALL, limits).unwrap();
        assert_eq!(r.scope, vec!["b".to_owned()]);
        let err = requested(&metadata(r#"{"scope":"a c"}"#), ALL, limits).unwrap_err();
        assert!(
            matches!(&err, Refusal::Metadata(m) if m.starts_with("scope: c not allowed")),
            "{err:?}"
        );
        let err = requested(
            &metadata(r#"{"audience":["https://other.example"]}"#),
            ALL,
            limits,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Refusal::Metadata(m) if m.starts_with("audience:")),
            "{err:?}"
        );
    }

    #[test]
    fn admin_scopes_and_the_admin_audience_are_never_registered() {
        for body in [
            r#"{"scope":"read latchkey:admin"}"#,
            r#"{"scope":"latchkey:admin:read"}"#,
            r#"{"audience":["urn:latchkey:admin"]}"#,
        ] {
            assert!(
                requested(&metadata(body), ALL, Limits::default()).is_err(),
                "{body}"
            );
        }
        // Not even when the initial access token's limits name them.
        let scope = vec!["latchkey:admin".to_owned()];
        let limits = Limits {
            scope: Some(&scope),
            audience: None,
        };
        assert!(requested(&metadata("{}"), ALL, limits).is_err());
    }

    #[test]
    fn redirect_uris_are_their_own_refusal() {
        let err = requested(
            &metadata(r#"{"redirect_uris":["https://app.example/cb"]}"#),
            ALL,
            Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::RedirectUri(_)));
    }
}
