//! The admin API's JSON: what it answers and what it accepts. `latchkey client ... --output
//! json` prints the same shapes, so the CLI and the API agree field for field.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::keys::next_step_at;
use crate::model::{
    AuditEvent as StoredEvent, ClientRecord, Credential,
    RegistrationToken as StoredRegistrationToken, SecretInfo, TlsSubject, TokenSource, UsageCount,
    UsageKind,
};
use crate::protocol::client_assertion::DEFAULT_FEDERATED_MAX_TOKEN_AGE;
use crate::service::admin::Rotated as RotatedKeys;
use crate::store::StoredKey;

/// The last second RFC 3339's four-digit years can write: 9999-12-31T23:59:59Z.
const LAST_WRITABLE_SECOND: u64 = 253_402_300_799;

/// RFC 3339 in UTC, to the second; times before 1970 or after 9999 are written as those
/// bounds (never a failure: a formatter error would panic in `to_string`).
pub fn timestamp(unix: i64) -> String {
    let seconds = u64::try_from(unix).unwrap_or(0).min(LAST_WRITABLE_SECOND);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A registered client, never its secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Client {
    /// The server-generated identifier.
    pub client_id: String,
    /// The operator's label.
    pub name: String,
    /// The scope tokens it may request, space-separated (also its default scope).
    pub scope: String,
    /// The audiences it may request (also its default audience).
    pub audience: Vec<String>,
    /// Lifetime of its access tokens, in seconds.
    pub token_ttl_seconds: i64,
    /// How it authenticates: `client_secret_basic`, `client_secret_post`, `private_key_jwt`,
    /// `tls_client_auth` or `self_signed_tls_client_auth`.
    pub auth_method: String,
    /// Its grants: `client_credentials`.
    pub grant_types: Vec<String>,
    /// A disabled client fails authentication.
    pub enabled: bool,
    /// May call the introspection endpoint.
    pub can_introspect: bool,
    /// `jwt` or `opaque`.
    pub token_format: String,
    /// A request like its last one gets the last token back while that has more than half its
    /// lifetime left.
    #[serde(default)]
    pub reuse_tokens: bool,
    /// Its token rate, like `100/min` (a burst of 100, refilled over the minute), if any.
    #[serde(default)]
    pub token_rate: Option<String>,
    /// Its token quota, like `10000/day` (per UTC day), if any.
    #[serde(default)]
    pub token_quota: Option<String>,
    /// `enforce` (429 past a limit) or `monitor` (logged, counted and audited).
    #[serde(default = "enforce")]
    pub quota_mode: String,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// Its registered public keys (`private_key_jwt`) or certificates
    /// (`self_signed_tls_client_auth`), as a JWK Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    /// Where its public keys are fetched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `tls_client_auth`: the subject DN its certificate carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    /// `tls_client_auth`: a dNSName SAN of its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_dns: Option<String>,
    /// `tls_client_auth`: a URI SAN of its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_uri: Option<String>,
    /// `tls_client_auth`: an IP address SAN of its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_ip: Option<String>,
    /// `tls_client_auth`: an email SAN of its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_email: Option<String>,
    /// Federated identity: the trusted issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_issuer: Option<String>,
    /// Federated identity: the workload's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_subject: Option<String>,
    /// Federated identity: the audience its tokens carry (default: this server's issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_audience: Option<String>,
    /// Federated identity: how far from now its tokens' times may be, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_max_token_age_seconds: Option<i64>,
}

impl From<&ClientRecord> for Client {
    fn from(client: &ClientRecord) -> Self {
        let mut wire = Client {
            client_id: client.client_id.clone(),
            name: client.name.clone(),
            scope: client.scope.join(" "),
            audience: client.audience.clone(),
            token_ttl_seconds: client.token_ttl_seconds,
            auth_method: client.auth_method().as_str().to_owned(),
            grant_types: client
                .grant_types
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect(),
            enabled: client.enabled,
            can_introspect: client.can_introspect,
            token_format: client.token_format.as_str().to_owned(),
            reuse_tokens: client.reuse_tokens,
            token_rate: client.token_rate.map(|rate| rate.to_string()),
            token_quota: client.token_quota.map(|rate| rate.to_string()),
            quota_mode: client.quota_mode.as_str().to_owned(),
            created_at: timestamp(client.created_at),
            updated_at: timestamp(client.updated_at),
            jwks: None,
            jwks_uri: None,
            tls_client_auth_subject_dn: None,
            tls_client_auth_san_dns: None,
            tls_client_auth_san_uri: None,
            tls_client_auth_san_ip: None,
            tls_client_auth_san_email: None,
            federated_issuer: None,
            federated_subject: None,
            federated_audience: None,
            federated_max_token_age_seconds: None,
        };
        match &client.credential {
            Credential::Secret(_) => {}
            Credential::Keys(jwks) | Credential::Certificates(jwks) => {
                wire.jwks = serde_json::from_str(jwks).ok();
            }
            Credential::JwksUri(uri) => wire.jwks_uri = Some(uri.clone()),
            Credential::Federation(federation) => {
                wire.federated_issuer = Some(federation.issuer.clone());
                wire.federated_subject = Some(federation.subject.clone());
                wire.federated_audience.clone_from(&federation.audience);
                wire.federated_max_token_age_seconds = Some(
                    federation
                        .max_token_age
                        .unwrap_or(DEFAULT_FEDERATED_MAX_TOKEN_AGE),
                );
            }
            Credential::TlsSubject(subject) => {
                let value = Some(subject.value());
                match subject {
                    TlsSubject::SubjectDn(_) => wire.tls_client_auth_subject_dn = value,
                    TlsSubject::SanDns(_) => wire.tls_client_auth_san_dns = value,
                    TlsSubject::SanUri(_) => wire.tls_client_auth_san_uri = value,
                    TlsSubject::SanIp(_) => wire.tls_client_auth_san_ip = value,
                    TlsSubject::SanEmail(_) => wire.tls_client_auth_san_email = value,
                }
            }
        }
        wire
    }
}

/// A client just registered, with its secret (shown this once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedClient {
    /// The client.
    #[serde(flatten)]
    pub client: Client,
    /// Its secret, for a client that uses one: shown only here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// A client to register.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// A label (1 to 200 characters, no control characters).
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Scope tokens it may request, space-separated.
    #[serde(default)]
    pub scope: String,
    /// Audiences it may request (absolute URIs).
    #[serde(default)]
    pub audience: Vec<String>,
    /// Token lifetime in seconds (10 to 86,400; default 900).
    #[serde(default)]
    #[schema(minimum = 10, maximum = 86400)]
    pub token_ttl_seconds: Option<i64>,
    /// `client_secret_basic` (default), `client_secret_post`, `private_key_jwt`,
    /// `tls_client_auth` or `self_signed_tls_client_auth`.
    #[serde(default)]
    pub auth_method: Option<String>,
    /// May call the introspection endpoint (default false).
    #[serde(default)]
    pub can_introspect: bool,
    /// `jwt` (default) or `opaque`.
    #[serde(default)]
    pub token_format: Option<String>,
    /// Hand out its last token again while that has more than half its lifetime left
    /// (default false).
    #[serde(default)]
    pub reuse_tokens: bool,
    /// A token rate like `100/min` (`N/s`, `N/min`, `N/hour`, `N/day`); default none.
    #[serde(default)]
    pub token_rate: Option<String>,
    /// A token quota like `10000/day`; default none.
    #[serde(default)]
    pub token_quota: Option<String>,
    /// `enforce` (default) or `monitor`.
    #[serde(default)]
    pub quota_mode: Option<String>,
    /// `private_key_jwt`: its public keys, as a JWK Set (`self_signed_tls_client_auth`: keys
    /// carrying its certificates in `x5c`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    /// `private_key_jwt`: where its public keys are fetched from (https).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Its grants, space-separated: `client_credentials` (the default), or empty for a client
    /// that only introspects.
    #[serde(default)]
    pub grant_types: Option<String>,
    /// `self_signed_tls_client_auth`: its certificates, PEM.
    #[serde(default)]
    pub certificates_pem: Option<String>,
    /// `tls_client_auth`: the subject DN its certificate carries (RFC 4514).
    #[serde(default)]
    pub tls_client_auth_subject_dn: Option<String>,
    /// `tls_client_auth`: a dNSName SAN of its certificate.
    #[serde(default)]
    pub tls_client_auth_san_dns: Option<String>,
    /// `tls_client_auth`: a URI SAN of its certificate.
    #[serde(default)]
    pub tls_client_auth_san_uri: Option<String>,
    /// `tls_client_auth`: an IP address SAN of its certificate.
    #[serde(default)]
    pub tls_client_auth_san_ip: Option<String>,
    /// `tls_client_auth`: an email SAN of its certificate.
    #[serde(default)]
    pub tls_client_auth_san_email: Option<String>,
    /// `private_key_jwt` by federated identity: the trusted issuer (https).
    #[serde(default)]
    pub federated_issuer: Option<String>,
    /// Federated identity: the workload's `sub`.
    #[serde(default)]
    pub federated_subject: Option<String>,
    /// Federated identity: the audience its tokens carry (default: this server's issuer).
    #[serde(default)]
    pub federated_audience: Option<String>,
    /// Federated identity: how far from now its tokens' times may be, in seconds (60 to 30
    /// days; default a day).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 2_592_000)]
    pub federated_max_token_age_seconds: Option<i64>,
}

/// `PUT /clients/{id}/keys`: what authenticates a client without a secret, replaced (key or
/// certificate rotation). Exactly one member; the client's method stays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientKeys {
    /// `private_key_jwt` or `self_signed_tls_client_auth`: a JWK Set.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    /// `private_key_jwt`: where its public keys are fetched from (https).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// `self_signed_tls_client_auth`: its certificates, PEM.
    #[serde(default)]
    pub certificates_pem: Option<String>,
    /// `tls_client_auth`: the subject DN its certificate carries (RFC 4514).
    #[serde(default)]
    pub tls_client_auth_subject_dn: Option<String>,
    /// `tls_client_auth`: a dNSName SAN of its certificate.
    #[serde(default)]
    pub tls_client_auth_san_dns: Option<String>,
    /// `tls_client_auth`: a URI SAN of its certificate.
    #[serde(default)]
    pub tls_client_auth_san_uri: Option<String>,
    /// `tls_client_auth`: an IP address SAN of its certificate.
    #[serde(default)]
    pub tls_client_auth_san_ip: Option<String>,
    /// `tls_client_auth`: an email SAN of its certificate.
    #[serde(default)]
    pub tls_client_auth_san_email: Option<String>,
}

/// The key members a request named, borrowed: one place reads them into a key source.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyFields<'a> {
    /// `jwks`, serialised.
    pub jwks: Option<&'a Value>,
    /// `jwks_uri`.
    pub jwks_uri: Option<&'a str>,
    /// `certificates_pem`.
    pub certificates_pem: Option<&'a str>,
    /// The `tls_client_auth_*` members, by name.
    pub tls: [(&'static str, Option<&'a str>); 5],
    /// The `federated_*` members, when `federated_issuer` is given.
    pub federated: Option<FederatedFields<'a>>,
}

/// The `federated_*` members of a new client, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct FederatedFields<'a> {
    /// `federated_issuer`.
    pub issuer: &'a str,
    /// `federated_subject`.
    pub subject: Option<&'a str>,
    /// `federated_audience`.
    pub audience: Option<&'a str>,
    /// `federated_max_token_age_seconds`.
    pub max_token_age: Option<i64>,
}

impl NewClient {
    /// Its key members.
    pub fn key_fields(&self) -> KeyFields<'_> {
        KeyFields {
            jwks: self.jwks.as_ref(),
            jwks_uri: self.jwks_uri.as_deref(),
            certificates_pem: self.certificates_pem.as_deref(),
            tls: tls_fields([
                &self.tls_client_auth_subject_dn,
                &self.tls_client_auth_san_dns,
                &self.tls_client_auth_san_uri,
                &self.tls_client_auth_san_ip,
                &self.tls_client_auth_san_email,
            ]),
            federated: self
                .federated_issuer
                .as_deref()
                .map(|issuer| FederatedFields {
                    issuer,
                    subject: self.federated_subject.as_deref(),
                    audience: self.federated_audience.as_deref(),
                    max_token_age: self.federated_max_token_age_seconds,
                }),
        }
    }
}

impl ClientKeys {
    /// Its key members.
    pub fn key_fields(&self) -> KeyFields<'_> {
        KeyFields {
            jwks: self.jwks.as_ref(),
            jwks_uri: self.jwks_uri.as_deref(),
            certificates_pem: self.certificates_pem.as_deref(),
            tls: tls_fields([
                &self.tls_client_auth_subject_dn,
                &self.tls_client_auth_san_dns,
                &self.tls_client_auth_san_uri,
                &self.tls_client_auth_san_ip,
                &self.tls_client_auth_san_email,
            ]),
            federated: None,
        }
    }
}

fn tls_fields(values: [&Option<String>; 5]) -> [(&'static str, Option<&str>); 5] {
    let mut fields = [("", None); 5];
    for ((field, kind), value) in fields.iter_mut().zip(TlsSubject::KINDS).zip(values) {
        *field = (kind, value.as_deref());
    }
    fields
}

/// Changes to a client; a field left out stays as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    /// A new label (1 to 200 characters, no control characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// A new scope, space-separated.
    #[serde(default)]
    pub scope: Option<String>,
    /// New audiences.
    #[serde(default)]
    pub audience: Option<Vec<String>>,
    /// A new token lifetime in seconds (10 to 86,400).
    #[serde(default)]
    #[schema(minimum = 10, maximum = 86400)]
    pub token_ttl_seconds: Option<i64>,
    /// Enable or disable (disabling also revokes its tokens).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Allow or forbid introspection.
    #[serde(default)]
    pub can_introspect: Option<bool>,
    /// `jwt` or `opaque`, for tokens issued from now on.
    #[serde(default)]
    pub token_format: Option<String>,
    /// Hand out the last token again while it has more than half its lifetime left.
    #[serde(default)]
    pub reuse_tokens: Option<bool>,
    /// A new token rate like `100/min`, or `off`.
    #[serde(default)]
    pub token_rate: Option<String>,
    /// A new token quota like `10000/day`, or `off`.
    #[serde(default)]
    pub token_quota: Option<String>,
    /// `enforce` or `monitor`.
    #[serde(default)]
    pub quota_mode: Option<String>,
}

/// One page of clients, ordered by id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientPage {
    /// The clients.
    pub items: Vec<Client>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// An RFC 9457 problem: why a request failed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The request field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A secret of a client: never the secret, nor its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    /// Which secret.
    pub secret_id: String,
    /// When it was added (RFC 3339).
    pub created_at: String,
    /// When it stops working, if it does (RFC 3339).
    pub expires_at: Option<String>,
    /// When it last authenticated, as last written from a server's memory (RFC 3339).
    pub last_used_at: Option<String>,
}

impl From<&SecretInfo> for Secret {
    fn from(secret: &SecretInfo) -> Self {
        Secret {
            secret_id: secret.secret_id.clone(),
            created_at: timestamp(secret.created_at),
            expires_at: secret.expires_at.map(timestamp),
            last_used_at: secret.last_used_at.map(timestamp),
        }
    }
}

/// A secret just added, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewSecret {
    /// The client.
    pub client_id: String,
    /// Which secret.
    pub secret_id: String,
    /// The secret: store it now, it is not shown again.
    pub client_secret: String,
    /// When it stops working, if it does (RFC 3339).
    pub expires_at: Option<String>,
}

impl NewSecret {
    /// A secret just added to `client_id`, expiring at `expires_at` (Unix seconds) if ever.
    pub fn new(
        client_id: &str,
        secret_id: String,
        secret: &crate::secret::ClientSecret,
        expires_at: Option<i64>,
    ) -> Self {
        NewSecret {
            client_id: client_id.to_owned(),
            secret_id,
            client_secret: secret.expose().to_owned(),
            expires_at: expires_at.map(timestamp),
        }
    }
}

/// `POST /clients/{id}/secrets`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSecret {
    /// The new secret stops working this many seconds from now (1 s to 10 years; default:
    /// never).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub expires_in_seconds: Option<i64>,
}

/// `POST /clients/{id}/secrets/rotate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the client's other secrets keep working, in seconds (0 to 1 year; default
    /// 86,400).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31_536_000)]
    pub overlap_seconds: Option<i64>,
}

/// A signing key: never its private key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SigningKey {
    /// Its key id (RFC 7638 thumbprint).
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// `next` (published, not yet signing), `current`, `retired` (published for
    /// verification) or `removed`.
    pub state: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it began signing.
    pub activated_at: Option<String>,
    /// When it stopped signing.
    pub retired_at: Option<String>,
    /// When it was removed from the JWK Set.
    pub removed_at: Option<String>,
    /// When it reaches its next state: a next key may sign, a retired key is removed.
    pub next_step_at: Option<String>,
    /// Whether its private key is sealed with a key-encryption key.
    pub sealed: bool,
}

impl From<&StoredKey> for SigningKey {
    fn from(key: &StoredKey) -> Self {
        SigningKey {
            kid: key.kid.clone(),
            alg: key.alg.as_str().to_owned(),
            state: key.state.as_str().to_owned(),
            created_at: timestamp(key.created_at),
            activated_at: key.activated_at.map(timestamp),
            retired_at: key.retired_at.map(timestamp),
            removed_at: key.removed_at.map(timestamp),
            next_step_at: next_step_at(key).map(timestamp),
            sealed: key.encryption.is_some(),
        }
    }
}

/// `POST /keys/rotate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeys {
    /// Rotate only this algorithm's keys: `ES256`, `EdDSA` or `RS256` (default: every
    /// algorithm in use).
    #[serde(default)]
    #[schema(pattern = "^(ES256|EdDSA|RS256)$")]
    pub alg: Option<String>,
}

/// What a rotation did for one algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rotated {
    /// The algorithm.
    pub alg: String,
    /// The key that stopped signing (published until its tokens have expired).
    pub retired: String,
    /// The key that signs now.
    pub current: String,
    /// The new next key.
    pub next: String,
}

impl From<&RotatedKeys> for Rotated {
    fn from(rotated: &RotatedKeys) -> Self {
        Rotated {
            alg: rotated.alg.as_str().to_owned(),
            retired: rotated.retired.clone(),
            current: rotated.current.clone(),
            next: rotated.next.clone(),
        }
    }
}

/// One event of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Its position in the trail.
    pub seq: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who: `cli:USER`, `admin:CLIENT_ID`, `registration:TOKEN_ID` or `server:ID`.
    pub actor: String,
    /// What: `client.create`, `client.update`, `secret.add`, `keys.rotate`, ...
    pub action: String,
    /// The client id or key id changed, if one.
    pub target: Option<String>,
    /// The changed fields, before and after (never a secret).
    #[schema(value_type = Object)]
    pub changes: Value,
}

impl From<&StoredEvent> for AuditEvent {
    fn from(event: &StoredEvent) -> Self {
        AuditEvent {
            seq: event.seq,
            at: timestamp(event.at),
            actor: format!("{}:{}", event.actor.kind(), event.actor.id()),
            action: event.action.clone(),
            target: event.target.clone(),
            changes: event.changes.clone(),
        }
    }
}

/// One page of the audit trail, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The events.
    pub items: Vec<AuditEvent>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// An initial access token for dynamic registration: never the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationToken {
    /// Which token.
    pub token_id: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
    /// How many clients it has registered.
    pub uses: i64,
    /// How many it may register; none for no limit.
    pub max_uses: Option<i64>,
    /// The scope tokens registrations may ask for, space-separated; none for any.
    pub scope_limit: Option<String>,
    /// The audiences registrations may ask for; none for any.
    pub audience_limit: Option<Vec<String>>,
}

impl From<&StoredRegistrationToken> for RegistrationToken {
    fn from(token: &StoredRegistrationToken) -> Self {
        RegistrationToken {
            token_id: token.token_id.clone(),
            created_at: timestamp(token.created_at),
            expires_at: timestamp(token.expires_at),
            uses: token.uses,
            max_uses: token.max_uses,
            scope_limit: token.scope_limit.as_ref().map(|s| s.join(" ")),
            audience_limit: token.audience_limit.clone(),
        }
    }
}

/// An initial access token just made, with the token itself (shown this once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedRegistrationToken {
    /// The token's description.
    #[serde(flatten)]
    pub token: RegistrationToken,
    /// The token, for `Authorization: Bearer` at `/oauth2/register`: shown only here.
    pub registration_token: String,
}

/// `POST /registration-tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRegistrationToken {
    /// How long it works, in seconds (1 s to a year; default a day).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub expires_in_seconds: Option<i64>,
    /// How many clients it may register (default: no limit).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_uses: Option<i64>,
    /// The scope tokens registrations may ask for, space-separated (default: any).
    #[serde(default)]
    pub scope_limit: Option<String>,
    /// The audiences registrations may ask for (default: any).
    #[serde(default)]
    pub audience_limit: Option<Vec<String>>,
}

/// What one client did in one minute, or in total since a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// The client.
    pub client_id: String,
    /// The minute (RFC 3339), or the start of the period with `step`, or for totals the time
    /// they count from.
    pub from: String,
    /// Access tokens issued.
    pub tokens: i64,
    /// Requests refused, by OAuth error code (`invalid_client`, `invalid_scope`, ...).
    pub denied: std::collections::BTreeMap<String, i64>,
    /// Introspection requests answered.
    pub introspections: i64,
    /// Revocation requests answered.
    pub revocations: i64,
}

impl UsageRow {
    /// The rows of `counts`, one per client and minute: for totals (every count of a client
    /// under one minute) the most tokens first, for one client's minutes the oldest first.
    pub fn from_counts(counts: &[UsageCount], totals: bool) -> Vec<UsageRow> {
        let mut rows: Vec<(String, i64, UsageRow)> = Vec::new();
        let mut index: std::collections::HashMap<(String, i64), usize> =
            std::collections::HashMap::new();
        for count in counts {
            let at = *index
                .entry((count.client_id.clone(), count.minute))
                .or_insert_with(|| {
                    rows.push((
                        count.client_id.clone(),
                        count.minute,
                        UsageRow {
                            client_id: count.client_id.clone(),
                            from: timestamp(count.minute),
                            tokens: 0,
                            denied: std::collections::BTreeMap::new(),
                            introspections: 0,
                            revocations: 0,
                        },
                    ));
                    rows.len() - 1
                });
            let row = &mut rows[at].2;
            match count.kind {
                UsageKind::Tokens => row.tokens += count.count,
                UsageKind::Introspections => row.introspections += count.count,
                UsageKind::Revocations => row.revocations += count.count,
                UsageKind::Denied(code) => {
                    *row.denied.entry(code.as_str().to_owned()).or_default() += count.count;
                }
            }
        }
        if totals {
            rows.sort_by(|a, b| b.2.tokens.cmp(&a.2.tokens).then_with(|| a.0.cmp(&b.0)));
        } else {
            rows.sort_by_key(|(_, minute, _)| *minute);
        }
        rows.into_iter().map(|(_, _, row)| row).collect()
    }
}

fn enforce() -> String {
    "enforce".into()
}

/// A client that got more tokens at one address in one hour than caching them would need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotCachingRow {
    /// The client.
    pub client_id: String,
    /// The address its token requests came from.
    pub source: String,
    /// The clock hour (RFC 3339 of its start).
    pub hour: String,
    /// Tokens issued to the client at this address in the hour.
    pub tokens: i64,
    /// Their lifetime, in seconds.
    pub token_lifetime: u64,
    /// The most tokens the address may get in the hour before the client counts as not
    /// caching: the server's `--not-caching-threshold` times the token lifetimes in an hour
    /// (a client that caches needs about one per lifetime).
    pub allowed: i64,
}

impl From<&TokenSource> for NotCachingRow {
    fn from(row: &TokenSource) -> Self {
        NotCachingRow {
            client_id: row.client_id.clone(),
            source: row.source.clone(),
            hour: timestamp(row.hour),
            tokens: row.tokens,
            token_lifetime: row.lifetime,
            allowed: row.allowed,
        }
    }
}

/// The refusals every admin operation may answer with, for the OpenAPI document (never built:
/// handlers answer with [`super::ApiError`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// No valid admin token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token's scope does not allow this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The database is unavailable; retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// A parameter or field is invalid.
#[derive(utoipa::IntoResponses)]
#[response(status = 400, content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct BadInput(Problem);

/// The refusals of a JSON body, besides [`BadInput`].
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BodyRefusals {
    /// The body is over 64 KiB.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not JSON.
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
}

/// No such client (or secret).
#[derive(utoipa::IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct NotFound(Problem);

/// The client changed since the `If-Match` ETag.
#[derive(utoipa::IntoResponses)]
#[response(status = 412, content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct PreconditionFailed(Problem);

/// An admin may not disable, delete or revoke the tokens or secrets of its own client.
#[derive(utoipa::IntoResponses)]
#[response(status = 409, content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct Lockout(Problem);
