//! Client management, as the admin CLI does it: validation of what an operator registers,
//! generation of ids and secrets, and waiting for running servers after a change. Every
//! change the CLI makes goes through here.

pub mod import;
pub mod registration_tokens;

use latchkey_proto::{ClientAuthMethod, GrantType, SigningAlg, TokenFormat};

use std::collections::HashMap;
use std::time::Duration;

use crate::cache::wait_for_servers;
use crate::clock::Clock;
use crate::keys::{KeyError, KeySource, next_key_ready_at};
pub use crate::model::TlsSubject;
use crate::model::audit::{self, action};
use crate::model::{
    Actor, AuditEntry, AuditEvent, ClientRecord, ClientUpdate, Credential, Federation,
    Registration, SecretInfo, SecretRecord,
};
pub use crate::protocol::client_keys::MAX_JWKS_BYTES;
use crate::protocol::client_keys::{MAX_KEYS, normalize_jwks, registered_keys};
use crate::protocol::mutual_tls::{certificate_jwk, registered_certificates};
use crate::protocol::syntax::{MAX_SCOPE_TOKENS, is_resource_uri, is_scope_token};
pub use crate::remote_keys::{JwksUriError, check_jwks_uri};
use crate::secret::{ClientSecret, new_client_id, new_row_id};
use crate::store::{
    AuditQuery, KeyState, RotationOutcome, SecretAdded, Store, StoreError, StoredKey, UsageQuery,
};

pub use crate::model::{DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL, MIN_TOKEN_TTL};

/// How long a change waits for running servers to confirm they dropped cached records.
pub const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of a change, and the servers that did not confirm it within
/// [`PROPAGATION_TIMEOUT`] (empty when every running server applies it already).
#[derive(Debug)]
pub struct Applied<T> {
    /// What the change produced.
    pub value: T,
    /// Server ids that did not confirm; the caller should warn about them.
    pub unconfirmed_servers: Vec<String>,
}

/// The change is committed: waits for the servers to confirm it. Never an error from here on
/// (a caller that saw one would retry a change that was made): when the wait itself fails,
/// the servers are reported as unconfirmed.
async fn applied<T>(store: &dyn Store, value: T) -> Result<Applied<T>, AdminError> {
    let unconfirmed_servers = match wait_for_servers(store, PROPAGATION_TIMEOUT).await {
        Ok(servers) => servers,
        Err(err) => {
            tracing::warn!(error = %err, "could not wait for the servers after a change");
            vec![format!("(any: the database did not answer: {err})")]
        }
    };
    Ok(Applied {
        value,
        unconfirmed_servers,
    })
}

/// The audit entry of a change `actor` makes now.
pub(crate) fn entry(
    clock: &dyn Clock,
    actor: &Actor,
    action: &'static str,
    target: Option<&str>,
    changes: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        at: clock.unix_seconds(),
        actor: actor.clone(),
        action,
        target: target.map(str::to_owned),
        changes,
    }
}

/// Writes a stored audit entry as one JSON log line too (target `latchkey::audit`), for log
/// pipelines; the database keeps the trail itself.
pub fn log_audit(entry: &AuditEntry) {
    let line = serde_json::json!({
        "at": entry.at,
        "actor": { "kind": entry.actor.kind(), "id": entry.actor.id() },
        "action": entry.action,
        "target": entry.target,
        "changes": entry.changes,
    });
    tracing::info!(target: "latchkey::audit", "{line}");
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The operator's input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// One field of the operator's input is invalid: its name (as the admin API and
    /// `client import` spell it), and why.
    #[error("{message}")]
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// A URL's host (a `jwks_uri`, a federated issuer) does not resolve, or resolves inside
    /// the network. The text names what it resolves to: for operators only.
    #[error("{0}")]
    HostAddress(String),
    /// No client with that id.
    #[error("no client with id {0:?}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be made or read.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<JwksUriError> for AdminError {
    fn from(err: JwksUriError) -> Self {
        match err {
            JwksUriError::Url(message) => AdminError::Invalid(message),
            JwksUriError::Address(message) => AdminError::HostAddress(message),
        }
    }
}

impl AdminError {
    /// An invalid `field`.
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        AdminError::Field {
            field,
            message: message.into(),
        }
    }
}

/// A client to register.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// Operator-chosen label.
    pub name: String,
    /// Scope tokens the client may request.
    pub scope: Vec<String>,
    /// Audiences (resource URIs) the client may request.
    pub audience: Vec<String>,
    /// Token lifetime in seconds.
    pub token_ttl_seconds: i64,
    /// The one authentication method it will use.
    pub auth_method: ClientAuthMethod,
    /// Grants it may use.
    pub grant_types: Vec<GrantType>,
    /// May call the introspection endpoint.
    pub can_introspect: bool,
    /// JWT or opaque access tokens.
    pub token_format: TokenFormat,
    /// Hand out its last token again while that has more than half its lifetime left.
    pub reuse_tokens: bool,
    /// Its token rate, quota and their mode.
    pub limits: crate::model::TokenLimits,
}

/// Splits and checks a space-separated scope list (RFC 6749 §3.3 syntax).
pub fn parse_scope_list(scope: &str) -> Result<Vec<String>, AdminError> {
    let mut out: Vec<String> = Vec::new();
    if scope.split(' ').filter(|t| !t.is_empty()).count() > MAX_SCOPE_TOKENS {
        return Err(AdminError::field(
            "scope",
            format!("at most {MAX_SCOPE_TOKENS} scope tokens"),
        ));
    }
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if !is_scope_token(token) {
            return Err(AdminError::field(
                "scope",
                format!(
                    "scope token {token:?} may only contain visible ASCII other than '\"' and '\\'"
                ),
            ));
        }
        if !out.iter().any(|t| t == token) {
            out.push(token.to_owned());
        }
    }
    Ok(out)
}

/// Checks audience values: absolute URIs without fragment (RFC 8707 §2).
pub fn check_audience(audience: &[String]) -> Result<Vec<String>, AdminError> {
    if audience.len() > MAX_AUDIENCES {
        return Err(AdminError::field(
            "audience",
            format!("at most {MAX_AUDIENCES} audiences"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for aud in audience {
        if !is_resource_uri(aud) {
            return Err(AdminError::field(
                "audience",
                format!(
                    "audience {aud:?} must be an absolute URI without a fragment, like https://api.example.com"
                ),
            ));
        }
        if !out.contains(aud) {
            out.push(aud.clone());
        }
    }
    Ok(out)
}

fn check_ttl(ttl: i64) -> Result<i64, AdminError> {
    if (MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(AdminError::field(
            "token_ttl_seconds",
            format!(
                "token TTL must be between {MIN_TOKEN_TTL} s and {MAX_TOKEN_TTL} s (24h), got {ttl} s"
            ),
        ))
    }
}

fn check_name(name: &str) -> Result<String, AdminError> {
    let name = name.trim();
    // Control characters, and the invisible ones that reorder or hide text around them
    // (bidirectional overrides and isolates, marks, zero-width characters, line and paragraph
    // separators), which could make a name read as something else in a table or a log.
    let hidden = |c: char| {
        c.is_control()
            || matches!(c,
                '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{061C}'
                | '\u{FEFF}')
    };
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(hidden) {
        return Err(AdminError::field(
            "name",
            "name must be 1 to 200 characters without control, bidirectional or invisible \
             formatting characters",
        ));
    }
    Ok(name.to_owned())
}

/// Registers a client with a fresh id and secret. The secret is returned in the clear exactly
/// this once; only its hash is stored. Returns once every running server knows the client.
pub async fn create_client(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    new: NewClient,
) -> Result<Applied<(ClientRecord, ClientSecret)>, AdminError> {
    let (client, secret) = new_client_record(new, None, clock.unix_seconds()).await?;
    let Some(secret) = secret else {
        return Err(AdminError::Invalid(
            "a client without a secret is created with create_key_client".into(),
        ));
    };
    store_new_client(store, clock, actor, &client).await?;
    applied(store, (client, secret)).await
}

/// A new client record with a fresh id, after checking `new` and what authenticates it: for a
/// client that uses a secret (`keys` is `None`), a fresh secret, returned in the clear with the
/// record holding only its hash; otherwise the keys, certificates or subject of `keys`, checked
/// for the client's method. Nothing is stored.
pub async fn new_client_record(
    new: NewClient,
    keys: Option<ClientKeys<'_>>,
    now: i64,
) -> Result<(ClientRecord, Option<ClientSecret>), AdminError> {
    let method = new.auth_method;
    match (keys, Credential::secret(method)) {
        (None, Some(credential)) => {
            let secret = ClientSecret::generate();
            let mut client = client_record(new, credential, now)?;
            client.secrets.push(SecretRecord {
                secret_id: new_row_id(),
                hash: secret.hash(),
                created_at: now,
                expires_at: None,
            });
            Ok((client, Some(secret)))
        }
        (Some(keys), None) => {
            let credential = keys.checked(method).await?;
            Ok((client_record(new, credential, now)?, None))
        }
        (Some(_), Some(_)) => Err(AdminError::Invalid(format!(
            "a {method} client authenticates with a secret, not registered keys"
        ))),
        (None, None) => Err(AdminError::Invalid(format!(
            "a {method} client registers keys or a certificate, not a secret"
        ))),
    }
}

/// Stores a new client with its audit entry.
async fn store_new_client(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client: &ClientRecord,
) -> Result<(), AdminError> {
    let audit = entry(
        clock,
        actor,
        action::CLIENT_CREATE,
        Some(&client.client_id),
        audit::created(client),
    );
    store.create_client(&audit, client).await?;
    log_audit(&audit);
    Ok(())
}

/// What authenticates a client that has no secret: where a `private_key_jwt` client's public
/// keys come from, the certificates a `self_signed_tls_client_auth` client registers, or the
/// certificate subject of a `tls_client_auth` client.
#[derive(Debug, Clone, Copy)]
pub enum ClientKeys<'a> {
    /// A JWK Set document, registered (see [`normalize_jwks`] for what is accepted).
    Jwks(&'a str),
    /// A URL the server fetches the client's JWK Set from (RFC 7591 §2 `jwks_uri`).
    /// `allow_private` lets it point inside the network (see [`check_jwks_uri`]).
    JwksUri {
        /// The URL.
        uri: &'a str,
        /// Allow loopback, private and link-local addresses.
        allow_private: bool,
    },
    /// Federated workload identity: tokens that an external issuer gave the workload, with
    /// exactly this issuer, subject and audience (default: this server's issuer). The
    /// issuer's keys are found through its discovery document.
    Federated {
        /// The external issuer identifier (https).
        issuer: &'a str,
        /// The workload's `sub`.
        subject: &'a str,
        /// The `aud` its tokens must carry alone; `None` for this server's issuer.
        audience: Option<&'a str>,
        /// How far from now its tokens' `iat` and `exp` may be (seconds); `None` for the
        /// default of 24 hours.
        max_token_age: Option<i64>,
        /// Allow the issuer at loopback, private and link-local addresses.
        allow_private: bool,
    },
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): the client's certificates (DER), stored
    /// as a JWK Set whose keys carry them in `x5c`.
    Certificates(&'a [Vec<u8>]),
    /// `tls_client_auth` (RFC 8705 §2.1): the subject DN or SAN its CA-issued certificate
    /// carries, by metadata name (`tls_client_auth_san_dns`, ...) and value.
    TlsSubject {
        /// One of [`TlsSubject::KINDS`].
        kind: &'a str,
        /// The DN (RFC 4514 string) or SAN value.
        value: &'a str,
    },
}

/// The certificates (DER) of a PEM document, for [`ClientKeys::Certificates`].
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, AdminError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let certificates = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AdminError::Invalid(format!("not a PEM certificate file: {e}")))?;
    if certificates.is_empty() || certificates.len() > MAX_KEYS {
        return Err(AdminError::Invalid(format!(
            "give 1 to {MAX_KEYS} PEM certificates (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certificates)
}

/// The longest federated token age a client may be registered with: 30 days.
pub const MAX_FEDERATED_TOKEN_AGE: i64 = 30 * 24 * 3600;

impl ClientKeys<'_> {
    /// Checks the key source for a client of `method` and returns it as stored.
    async fn checked(self, method: ClientAuthMethod) -> Result<Credential, AdminError> {
        use ClientAuthMethod::{PrivateKeyJwt, SelfSignedTlsClientAuth, TlsClientAuth};
        let fits = match self {
            ClientKeys::Jwks(_) => matches!(method, PrivateKeyJwt | SelfSignedTlsClientAuth),
            ClientKeys::JwksUri { .. } | ClientKeys::Federated { .. } => method == PrivateKeyJwt,
            ClientKeys::Certificates(_) => method == SelfSignedTlsClientAuth,
            ClientKeys::TlsSubject { .. } => method == TlsClientAuth,
        };
        if !fits {
            return Err(AdminError::Invalid(match method {
                PrivateKeyJwt => "a private_key_jwt client registers a JWK Set, a jwks_uri or a \
                                  federated issuer"
                    .into(),
                SelfSignedTlsClientAuth => "a self_signed_tls_client_auth client registers its \
                                            certificates (or a JWK Set whose keys carry them in \
                                            x5c)"
                    .into(),
                TlsClientAuth => "a tls_client_auth client registers the subject DN or a subject \
                                  alternative name of its certificate"
                    .into(),
                other => format!("a {other} client uses a secret"),
            }));
        }
        Ok(match self {
            ClientKeys::Jwks(jwks) => {
                let stored = normalize_jwks(jwks).map_err(AdminError::Invalid)?;
                if method == SelfSignedTlsClientAuth
                    && registered_certificates(Some(&stored)).len()
                        != registered_keys(Some(&stored)).len()
                {
                    return Err(AdminError::Invalid(
                        "every key of a self_signed_tls_client_auth client carries its \
                         certificate in \"x5c\" (RFC 8705 §2.2.2)"
                            .into(),
                    ));
                }
                if method == SelfSignedTlsClientAuth {
                    Credential::Certificates(stored)
                } else {
                    Credential::Keys(stored)
                }
            }
            ClientKeys::Certificates(certificates) => {
                let keys = certificates
                    .iter()
                    .enumerate()
                    .map(|(i, der)| {
                        certificate_jwk(der).map_err(|why| {
                            AdminError::Invalid(format!("certificate {}: {why}", i + 1))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let set = serde_json::to_string(&latchkey_proto::JwkSet { keys })
                    .map_err(|e| AdminError::Invalid(e.to_string()))?;
                Credential::Certificates(normalize_jwks(&set).map_err(AdminError::Invalid)?)
            }
            ClientKeys::TlsSubject { kind, value } => {
                Credential::TlsSubject(TlsSubject::parse(kind, value).map_err(AdminError::Invalid)?)
            }
            ClientKeys::JwksUri { uri, allow_private } => {
                Credential::JwksUri(check_jwks_uri(uri, allow_private).await?)
            }
            ClientKeys::Federated {
                issuer,
                subject,
                audience,
                max_token_age,
                allow_private,
            } => {
                if max_token_age.is_some_and(|age| !(60..=MAX_FEDERATED_TOKEN_AGE).contains(&age)) {
                    return Err(AdminError::Invalid(
                        "the federated token age must be from 1 minute to 30 days".into(),
                    ));
                }
                // The issuer is compared exactly with `iss`, so it is kept as given, once
                // checked to be a URL the server may fetch from.
                check_jwks_uri(issuer, allow_private)
                    .await
                    .map_err(|e| match e {
                        JwksUriError::Url(m) => {
                            AdminError::Invalid(m.replace("jwks_uri", "federated issuer"))
                        }
                        JwksUriError::Address(m) => {
                            AdminError::HostAddress(m.replace("jwks_uri", "federated issuer"))
                        }
                    })?;
                let text = |what: &str, v: &str| {
                    if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
                        Err(AdminError::Invalid(format!(
                            "the federated {what} must be 1 to 1024 characters without control \
                             characters"
                        )))
                    } else {
                        Ok(v.to_owned())
                    }
                };
                let federation = Federation {
                    issuer: issuer.to_owned(),
                    subject: text("subject", subject)?,
                    audience: audience.map(|a| text("audience", a)).transpose()?,
                    max_token_age,
                };
                Credential::Federation(federation)
            }
        })
    }
}

/// Registers a client that authenticates without a secret: `private_key_jwt` (RFC 7523 §2.2)
/// or mutual TLS (RFC 8705 §2), with `keys` saying what authenticates it. No secret exists
/// for it. Returns once every running server knows the client.
pub async fn create_key_client(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    new: NewClient,
    keys: ClientKeys<'_>,
) -> Result<Applied<ClientRecord>, AdminError> {
    let (client, _) = new_client_record(new, Some(keys), clock.unix_seconds()).await?;
    store_new_client(store, clock, actor, &client).await?;
    applied(store, client).await
}

/// Replaces the keys, certificates or certificate subject of a client without a secret, or
/// where its keys come from: rotation. With `expected_version`, only if the client is still
/// at that version. Returns once every running server uses the new ones.
pub async fn replace_client_keys(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client_id: &str,
    keys: ClientKeys<'_>,
    expected_version: Option<i64>,
) -> Result<Applied<ClientRecord>, AdminError> {
    let client = show_client(store, client_id).await?;
    if client.auth_method().uses_secret() {
        return Err(AdminError::Invalid(format!(
            "client {client_id} authenticates with a secret ({}), not registered keys",
            client.auth_method()
        )));
    }
    let update = ClientUpdate {
        credential: Some(keys.checked(client.auth_method()).await?),
        expected_version,
        ..ClientUpdate::default()
    };
    change_client(store, clock, actor, action::CLIENT_KEYS, &client, &update).await
}

/// A new client record with a fresh id and no secrets, after validating `new`.
fn client_record(
    new: NewClient,
    credential: Credential,
    now: i64,
) -> Result<ClientRecord, AdminError> {
    Ok(ClientRecord {
        scope: parse_scope_list(&new.scope.join(" "))?,
        audience: check_audience(&new.audience)?,
        grant_types: new.grant_types,
        token_ttl_seconds: check_ttl(new.token_ttl_seconds)?,
        can_introspect: new.can_introspect,
        token_format: new.token_format,
        reuse_tokens: new.reuse_tokens,
        token_rate: new.limits.rate,
        token_quota: new.limits.quota,
        quota_mode: new.limits.mode,
        ..ClientRecord::new(new_client_id(), check_name(&new.name)?, credential, now)
    })
}

/// Changes a client after validating the new values. Returns once every running server has
/// stopped using the old record.
///
/// Disabling a client also revokes every token it holds: otherwise its tokens would turn
/// active again if it were enabled before they expire.
pub async fn update_client(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client_id: &str,
    update: ClientUpdate,
) -> Result<Applied<ClientRecord>, AdminError> {
    let update = checked_update(update)?;
    let before = show_client(store, client_id).await?;
    change_client(store, clock, actor, action::CLIENT_UPDATE, &before, &update).await
}

/// `update` with its values checked and normalized, as [`update_client`] stores it. Disabling
/// a client also revokes every token it holds. Needs nothing but the update, so a caller can
/// refuse bad input before anything else.
pub fn checked_update(mut update: ClientUpdate) -> Result<ClientUpdate, AdminError> {
    if update.enabled == Some(false) {
        update.revoke_tokens = true;
    }
    update.name = update.name.as_deref().map(check_name).transpose()?;
    update.scope = update
        .scope
        .map(|s| parse_scope_list(&s.join(" ")))
        .transpose()?;
    update.audience = update.audience.as_deref().map(check_audience).transpose()?;
    update.token_ttl_seconds = update.token_ttl_seconds.map(check_ttl).transpose()?;
    if update.credential.is_some() {
        return Err(AdminError::Invalid(
            "keys are replaced with replace_client_keys, which checks them".into(),
        ));
    }
    Ok(update)
}

/// How many times a change is tried when the client changes between reading it and changing
/// it (and the caller did not ask for a version: one who did gets the 412 at once).
const CHANGE_ATTEMPTS: usize = 5;

/// A change without a version asked for that lost [`CHANGE_ATTEMPTS`] races in a row: a
/// conflict (409) to try again, not a failed precondition the caller never set.
fn kept_changing(client_id: &str) -> AdminError {
    StoreError::Conflict(format!(
        "client {client_id} kept changing while this change was tried {CHANGE_ATTEMPTS} times; \
         try again"
    ))
    .into()
}

/// Stores `update` to `before` with its audit entry (the fields it changes, before and
/// after), and waits for the servers. The change is held to the version `before` was read at,
/// so the audit's "before" is exactly what the change replaced; if another change came in
/// between, the client is read again and the change tried again.
async fn change_client(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    action: &'static str,
    before: &ClientRecord,
    update: &ClientUpdate,
) -> Result<Applied<ClientRecord>, AdminError> {
    let mut before = before.clone();
    let mut attempt = 1;
    loop {
        let now = clock.unix_seconds();
        let held = ClientUpdate {
            expected_version: Some(update.expected_version.unwrap_or(before.version)),
            ..update.clone()
        };
        let changes = audit::updated(&before, &before.with_update(&held, now));
        // A change that changes nothing is not made: no event, no new version, no cache drop.
        let nothing = changes.as_object().is_some_and(serde_json::Map::is_empty);
        if nothing && !held.revoke_tokens {
            if held.expected_version != Some(before.version) {
                return Err(StoreError::Precondition(format!(
                    "client {} is at version {}",
                    before.client_id, before.version
                ))
                .into());
            }
            return Ok(Applied {
                value: before,
                unconfirmed_servers: Vec::new(),
            });
        }
        let audit = entry(clock, actor, action, Some(&before.client_id), changes);
        match store
            .update_client(&audit, &before.client_id, &held, now)
            .await
        {
            Ok(Some(client)) => {
                log_audit(&audit);
                return applied(store, client).await;
            }
            Ok(None) => return Err(AdminError::NotFound(before.client_id.clone())),
            Err(StoreError::Precondition(_)) if update.expected_version.is_none() => {
                if attempt == CHANGE_ATTEMPTS {
                    return Err(kept_changing(&before.client_id));
                }
                attempt += 1;
                before = show_client(store, &before.client_id).await?;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Changes a client's settings and, for a client without a secret, what authenticates it, as
/// one change (a registration replaced whole, RFC 7592 §2.2). Its method stays the same.
/// Returns once every running server uses the new record.
pub async fn replace_client(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    before: &ClientRecord,
    update: ClientUpdate,
    keys: Option<ClientKeys<'_>>,
) -> Result<Applied<ClientRecord>, AdminError> {
    let mut update = checked_update(update)?;
    // New keys and nothing else is a key rotation in the audit trail.
    let settings = update.name.is_some()
        || update.scope.is_some()
        || update.audience.is_some()
        || update.token_ttl_seconds.is_some()
        || update.enabled.is_some()
        || update.can_introspect.is_some()
        || update.token_format.is_some()
        || update.reuse_tokens.is_some()
        || update.token_rate.is_some()
        || update.token_quota.is_some()
        || update.quota_mode.is_some()
        || update.revoke_tokens;
    let action = if keys.is_some() && !settings {
        action::CLIENT_KEYS
    } else {
        action::CLIENT_UPDATE
    };
    if let Some(keys) = keys {
        update.credential = Some(keys.checked(before.auth_method()).await?);
    }
    change_client(store, clock, actor, action, before, &update).await
}

/// Revokes every token the client holds now (`latchkey client revoke-tokens`): the client's
/// token epoch moves on, so every token carrying an older one is inactive (opaque ones are
/// deleted too). Unlike a time cut-off, this has no window: a token issued a moment before
/// is revoked, one issued a moment after is not. Returns once every running server applies it.
pub async fn revoke_tokens(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client_id: &str,
) -> Result<Applied<ClientRecord>, AdminError> {
    let update = ClientUpdate {
        revoke_tokens: true,
        ..ClientUpdate::default()
    };
    update_client(store, clock, actor, client_id, update).await
}

/// The most audiences a client may have (each is in every default token's `aud`).
pub const MAX_AUDIENCES: usize = 32;

/// The longest a rotated-out secret keeps working: a year.
pub const MAX_OVERLAP_SECONDS: i64 = 365 * 24 * 3600;

/// The longest lifetime a secret added with an expiry may have: 10 years.
pub const MAX_SECRET_LIFETIME_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// A client holds at most this many live secrets.
pub const MAX_SECRETS: usize = 5;

/// Rotates a client's secret: adds a new one and lets every older live secret work for
/// `overlap_seconds` more, so deployments can switch without downtime (docs/CONFORMANCE.md,
/// "Secret rotation"). The new secret is returned in the clear this once, with its id.
pub async fn rotate_secret(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client_id: &str,
    overlap_seconds: i64,
) -> Result<Applied<(String, ClientSecret)>, AdminError> {
    if !(0..=MAX_OVERLAP_SECONDS).contains(&overlap_seconds) {
        return Err(AdminError::Invalid(
            "the overlap must be from 0 to a year".into(),
        ));
    }
    new_secret(store, clock, actor, client_id, None, Some(overlap_seconds)).await
}

/// Adds a secret to a client while its other secrets keep working, so a deployment can move
/// to the new one and the old one can be revoked afterwards. `expires_in` bounds its life.
/// The new secret is returned in the clear this once, with its id.
pub async fn add_secret(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client_id: &str,
    expires_in: Option<i64>,
) -> Result<Applied<(String, ClientSecret)>, AdminError> {
    if expires_in.is_some_and(|s| !(1..=MAX_SECRET_LIFETIME_SECONDS).contains(&s)) {
        return Err(AdminError::Invalid(
            "the expiry must be from 1 second to 10 years from now".into(),
        ));
    }
    new_secret(store, clock, actor, client_id, expires_in, None).await
}

async fn new_secret(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client_id: &str,
    expires_in: Option<i64>,
    others_expire_in: Option<i64>,
) -> Result<Applied<(String, ClientSecret)>, AdminError> {
    let client = show_client(store, client_id).await?;
    if !client.auth_method().uses_secret() {
        return Err(AdminError::Invalid(format!(
            "client {client_id} authenticates with keys or a certificate ({}) and has no \
             secrets; replace them with `latchkey client update`",
            client.auth_method()
        )));
    }
    let now = clock.unix_seconds();
    let secret = ClientSecret::generate();
    let record = SecretRecord {
        secret_id: new_row_id(),
        hash: secret.hash(),
        created_at: now,
        expires_at: expires_in.map(|s| now.saturating_add(s)),
    };
    let expire_others_at = others_expire_in.map(|s| now.saturating_add(s));
    // The secret by its id only, never the secret or its hash.
    let changes = serde_json::json!({
        "secret_id": { "after": record.secret_id },
        "expires_at": { "after": record.expires_at },
        "other_secrets_expire_at": expire_others_at,
    });
    let audit = entry(clock, actor, action::SECRET_ADD, Some(client_id), changes);
    match store
        .add_secret(
            &audit,
            client_id,
            &record,
            expire_others_at,
            MAX_SECRETS,
            now,
        )
        .await?
    {
        SecretAdded::Added => {
            log_audit(&audit);
            applied(store, (record.secret_id, secret)).await
        }
        SecretAdded::NoSuchClient => Err(AdminError::NotFound(client_id.to_owned())),
        SecretAdded::TooMany => Err(too_many_secrets()),
    }
}

fn too_many_secrets() -> AdminError {
    AdminError::Invalid(format!(
        "the client already holds {MAX_SECRETS} live secrets; revoke one first"
    ))
}

/// A client's live secrets (ids and times, never the secrets).
pub async fn list_secrets(
    store: &dyn Store,
    client_id: &str,
) -> Result<Vec<SecretInfo>, AdminError> {
    store
        .list_secrets(client_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(client_id.to_owned()))
}

/// Revokes one secret. From the moment this returns it fails on every running server exactly
/// like a wrong secret.
pub async fn revoke_secret(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client_id: &str,
    secret_id: &str,
) -> Result<Applied<()>, AdminError> {
    let changes = serde_json::json!({ "secret_id": { "before": secret_id } });
    let audit = entry(
        clock,
        actor,
        action::SECRET_REVOKE,
        Some(client_id),
        changes,
    );
    if !store
        .revoke_secret(&audit, client_id, secret_id, clock.unix_seconds())
        .await?
    {
        return Err(AdminError::Invalid(format!(
            "client {client_id:?} has no live secret {secret_id:?}"
        )));
    }
    log_audit(&audit);
    applied(store, ()).await
}

/// What `keys rotate` did for one algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The algorithm.
    pub alg: SigningAlg,
    /// The key that stopped signing (still published until its tokens have expired).
    pub retired: String,
    /// The key that signs now.
    pub current: String,
    /// The new next key, published from now on.
    pub next: String,
}

/// Rotates the signing keys of `alg`, or of every algorithm that has a current key: the next
/// key signs, the current one retires, a new next key is published. Refused while the next key
/// has not been published for a JWKS max-age (docs/CONFORMANCE.md, "Signing keys and
/// rotation"). Returns once every running server signs with the new key.
pub async fn rotate_keys(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    source: &KeySource,
    alg: Option<SigningAlg>,
) -> Result<Applied<Vec<Rotated>>, AdminError> {
    let keys = store.signing_keys().await?;
    // A new key is sealed like the ones already stored: never a clear key beside sealed ones,
    // never one sealed with another KEK.
    let marker = source.kek.as_ref().map(|k| k.marker());
    if let Some(key) = keys
        .iter()
        .find(|k| k.state != KeyState::Removed && k.encryption.is_some() && k.encryption != marker)
    {
        return Err(AdminError::Invalid(format!(
            "signing key {} is sealed with {}; give the same key-encryption key (LATCHKEY_KEY_ENCRYPTION_KEY or --key-encryption-key-file)",
            key.kid,
            key.encryption.as_deref().unwrap_or_default()
        )));
    }
    let algs: Vec<SigningAlg> = keys
        .iter()
        .filter(|k| k.state == KeyState::Current && alg.is_none_or(|a| a == k.alg))
        .map(|k| k.alg)
        .collect();
    if algs.is_empty() {
        return Err(AdminError::Invalid(
            "there is no signing key to rotate yet; `latchkey serve` creates the first keys".into(),
        ));
    }
    let now = clock.unix_seconds();
    let mut rotated = Vec::new();
    for alg in algs {
        match source.rotate(store, actor, alg, now, None).await? {
            RotationOutcome::Rotated {
                retired,
                current,
                next,
            } => rotated.push(Rotated {
                alg,
                retired,
                current,
                next,
            }),
            RotationOutcome::NextTooNew { created_at } => {
                return Err(AdminError::Invalid(format!(
                    "the next {alg} key was published {} s ago; it may sign from {} s after publication, so that every verifier has seen it (one JWKS max-age plus skew). Try again in {} s",
                    now - created_at,
                    next_key_ready_at(created_at) - created_at,
                    next_key_ready_at(created_at) - now
                )));
            }
            RotationOutcome::NoKeys | RotationOutcome::NotDue => {
                return Err(AdminError::Invalid(format!(
                    "there is no next {alg} key; start `latchkey serve --signing-alg {alg}` once to create it"
                )));
            }
        }
    }
    applied(store, rotated).await
}

/// How many clients one listing request reads at most while filtering by name, so that a
/// filter that matches little costs a bounded amount per request (the page then holds fewer
/// clients, and `next` goes on from where the reading stopped).
pub const MAX_SCANNED_PER_PAGE: u32 = 10_000;

/// One page of clients ordered by id, after `after` (`""` first): up to `limit` of them, only
/// those whose name contains `name` (ignoring case) when given. Returns them with the id to
/// continue after, or `None` at the end. One indexed range read per 1,000 clients read.
pub async fn list_clients_page(
    store: &dyn Store,
    after: &str,
    limit: u32,
    name: Option<&str>,
) -> Result<(Vec<ClientRecord>, Option<String>), AdminError> {
    let limit = limit.clamp(1, 1000);
    let Some(name) = name.map(str::to_lowercase) else {
        let page = store.clients_after(after, limit).await?;
        let next = (page.len() == limit as usize)
            .then(|| page.last().map(|c| c.client_id.clone()))
            .flatten();
        return Ok((page, next));
    };
    let mut found = Vec::new();
    let mut cursor = after.to_owned();
    let mut scanned = 0;
    loop {
        let page = store.clients_after(&cursor, 1000).await?;
        let at_end = page.len() < 1000;
        for client in page {
            scanned += 1;
            cursor.clone_from(&client.client_id);
            if client.name.to_lowercase().contains(&name) {
                found.push(client);
                if found.len() == limit as usize {
                    return Ok((found, Some(cursor)));
                }
            }
        }
        if at_end {
            return Ok((found, None));
        }
        if scanned >= MAX_SCANNED_PER_PAGE {
            return Ok((found, Some(cursor)));
        }
    }
}

/// Every signing key, removed ones included, oldest first.
pub async fn list_keys(store: &dyn Store) -> Result<Vec<StoredKey>, AdminError> {
    Ok(store.signing_keys().await?)
}

/// One page of the audit trail.
pub async fn audit_events(
    store: &dyn Store,
    query: &AuditQuery,
) -> Result<Vec<AuditEvent>, AdminError> {
    Ok(store.audit_events(query).await?)
}

/// One client.
pub async fn show_client(store: &dyn Store, client_id: &str) -> Result<ClientRecord, AdminError> {
    // An id no client can have is not looked up (a NUL would be a database error).
    if !crate::protocol::syntax::is_client_id(client_id) {
        return Err(AdminError::NotFound(client_id.to_owned()));
    }
    store
        .find_client(client_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(client_id.to_owned()))
}

/// Deletes a client; with `expected_version`, only if it is still at that version. Returns
/// once no running server issues tokens to it any more.
pub async fn delete_client(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    client_id: &str,
    expected_version: Option<i64>,
) -> Result<Applied<()>, AdminError> {
    // Held to the version read, so the audit's "before" is what was deleted (read again if
    // the client changed in between, unless the caller asked for a version).
    for _ in 0..CHANGE_ATTEMPTS {
        let before = show_client(store, client_id).await?;
        let audit = entry(
            clock,
            actor,
            action::CLIENT_DELETE,
            Some(client_id),
            audit::deleted(&before),
        );
        let held = expected_version.unwrap_or(before.version);
        match store.delete_client(&audit, client_id, Some(held)).await {
            Ok(true) => {
                log_audit(&audit);
                return applied(store, ()).await;
            }
            Ok(false) => return Err(AdminError::NotFound(client_id.to_owned())),
            Err(StoreError::Precondition(_)) if expected_version.is_none() => {}
            Err(err) => return Err(err.into()),
        }
    }
    Err(kept_changing(client_id))
}

/// The most clients (or one client's minutes) one usage query reads.
pub const MAX_USAGE_ROWS: u32 = 10_000;

/// Usage counts (`latchkey usage`, `GET /admin/v1/usage`).
pub async fn usage(
    store: &dyn Store,
    query: &UsageQuery,
) -> Result<Vec<crate::model::UsageCount>, AdminError> {
    check_usage_limit(query)?;
    Ok(store.usage_counts(query).await?)
}

/// The clients found not caching their tokens, per address and hour (`latchkey usage
/// --not-caching`, `GET /admin/v1/usage/not-caching`).
pub async fn not_caching(
    store: &dyn Store,
    query: &UsageQuery,
) -> Result<Vec<crate::model::TokenSource>, AdminError> {
    check_usage_limit(query)?;
    Ok(store.not_caching(query).await?)
}

/// A usage query reads 1 to [`MAX_USAGE_ROWS`] rows.
fn check_usage_limit(query: &UsageQuery) -> Result<(), AdminError> {
    if (1..=MAX_USAGE_ROWS).contains(&query.limit) {
        Ok(())
    } else {
        Err(AdminError::field(
            "limit",
            format!("limit must be from 1 to {MAX_USAGE_ROWS}"),
        ))
    }
}

/// What [`migrate_data`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataMoved {
    /// Clients, with their settings.
    pub clients: usize,
    /// Live (unrevoked) secrets, as hashes.
    pub secrets: usize,
    /// Signing keys in every state, sealed ones still sealed.
    pub keys: usize,
    /// Initial access tokens for dynamic registration (as hashes), with their uses.
    pub registration_tokens: usize,
    /// Registrations of clients registered dynamically (RFC 7591), so their registration
    /// access tokens keep working and their initial token's limits keep applying.
    pub registrations: usize,
}

/// Copies every client (with its unrevoked secrets), every signing key, every initial access
/// token and every client registration from `from` to `to`, which must be empty, so that each
/// client keeps working with its secret, tokens signed before the move still verify against
/// the published keys, and dynamically registered clients keep their registration access
/// tokens (RFC 7592). The audit trail and usage counts stay behind.
///
/// Tokens themselves are not moved: opaque tokens and the deny list stay behind. So that a
/// revoked token cannot come back to life in the new database, every client's token epoch
/// moves on, which makes all tokens issued before the move inactive at introspection and
/// revocation; clients simply get new ones. (Resource servers that verify JWTs offline keep
/// accepting them until they expire, as before the move.) Secret last-use times start afresh.
pub async fn migrate_data(
    from: &dyn Store,
    to: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
) -> Result<DataMoved, AdminError> {
    if !to.list_clients().await?.is_empty() || !to.signing_keys().await?.is_empty() {
        return Err(AdminError::Invalid(
            "the target database already holds clients or keys; migrate into an empty one".into(),
        ));
    }
    let clients = from.list_clients().await?;
    let keys = from.signing_keys().await?;
    let registration_tokens = from.registration_tokens().await?;
    let mut registrations: HashMap<String, Registration> = from
        .registrations()
        .await?
        .into_iter()
        .map(|registration| (registration.client_id.clone(), registration))
        .collect();
    let mut moved = DataMoved {
        clients: 0,
        secrets: 0,
        keys: 0,
        registration_tokens: 0,
        registrations: 0,
    };
    // Keys first: a server started on the target during the move finds them and creates none.
    for key in &keys {
        let audit = entry(
            clock,
            actor,
            action::KEY_IMPORT,
            Some(&key.kid),
            serde_json::json!({ "alg": key.alg, "state": key.state.as_str() }),
        );
        to.import_key(&audit, key).await?;
        moved.keys += 1;
    }
    for token in &registration_tokens {
        let audit = entry(
            clock,
            actor,
            action::REGISTRATION_TOKEN_CREATE,
            Some(&token.token_id),
            registration_tokens::created(token),
        );
        to.create_registration_token(&audit, token).await?;
        moved.registration_tokens += 1;
    }
    for client in clients {
        let secrets = client.secrets.len();
        let moved_client = ClientRecord {
            token_epoch: client.token_epoch.saturating_add(1),
            ..client
        };
        let audit = entry(
            clock,
            actor,
            action::CLIENT_CREATE,
            Some(&moved_client.client_id),
            audit::created(&moved_client),
        );
        to.create_client(&audit, &moved_client).await?;
        moved.clients += 1;
        moved.secrets += secrets;
        if let Some(registration) = registrations.remove(&moved_client.client_id) {
            to.import_registration(&registration).await?;
            moved.registrations += 1;
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_may_not_hide_or_reorder_text() {
        assert_eq!(check_name("  billing svc ").unwrap(), "billing svc");
        assert!(check_name("Zahlungsdienst · ünïcödé ✓").is_ok());
        for bad in [
            "",
            "a\nb",
            "billing\u{202E}cvs",
            "x\u{2066}y",
            "zero\u{200B}width",
            "line\u{2028}sep",
            "bom\u{FEFF}",
            "arabic\u{061C}mark",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
