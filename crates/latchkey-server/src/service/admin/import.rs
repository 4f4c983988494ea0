//! Bulk import of clients (`latchkey client import`): JSON lines, one client per line, in the
//! shape `latchkey client create --output json` and `latchkey client export` print.
//!
//! A line is checked exactly as `client create` checks its flags; in addition it may keep the
//! `client_id` and the `client_secret` a client already has elsewhere (for moving from another
//! server). The caller checks every line first and imports only a file without bad lines; the
//! clients are then stored in batches, each batch in one transaction with one change-feed
//! entry ([`store_batch`]).

use latchkey_proto::{ClientAuthMethod, GrantType, TokenFormat};
use serde::Deserialize;

use super::{AdminError, Applied, ClientKeys, NewClient, applied, client_record, parse_scope_list};
use crate::clock::Clock;
use crate::model::audit::action;
use crate::model::{Actor, ClientRecord, Credential, SecretRecord};
use crate::protocol::syntax::is_client_id;
use crate::secret::{ClientSecret, SecretHash, new_row_id};
use crate::store::Store;

/// Clients per transaction. Random ids put each insert on a different index page, and SQLite
/// writes every page a transaction touched to its log at commit: 10,000 clients per commit
/// write about a third of what 1,000 per commit do (a 300,000-client experiment: 12 s against
/// 46 s). A batch holds SQLite's write lock for a fraction of a second; servers' writes wait
/// for it (they wait up to 5 s).
pub const IMPORT_BATCH: usize = 10_000;

/// The shortest secret an import keeps. latchkey's own are 43 characters (256 bits); other
/// servers' are 26 (Ory Hydra) to 64 (Auth0). Rotate kept secrets with `client secret rotate`.
pub const MIN_KEPT_SECRET_CHARS: usize = 24;

/// One line of an import. Optional fields take the defaults of `client create`; the
/// timestamps of an export are accepted and ignored (an imported client is created now).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    client_id: Option<String>,
    client_secret: Option<KeptSecret>,
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default = "default_ttl")]
    token_ttl_seconds: i64,
    #[serde(default = "default_auth_method")]
    auth_method: ClientAuthMethod,
    #[serde(default = "default_grant_types")]
    grant_types: Vec<GrantType>,
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default)]
    can_introspect: bool,
    #[serde(default = "default_token_format")]
    token_format: TokenFormat,
    #[serde(default)]
    reuse_tokens: bool,
    token_rate: Option<String>,
    token_quota: Option<String>,
    quota_mode: Option<String>,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<String>,
    federated_issuer: Option<String>,
    federated_subject: Option<String>,
    federated_audience: Option<String>,
    federated_max_token_age_seconds: Option<i64>,
    tls_client_auth_subject_dn: Option<String>,
    tls_client_auth_san_dns: Option<String>,
    tls_client_auth_san_uri: Option<String>,
    tls_client_auth_san_ip: Option<String>,
    tls_client_auth_san_email: Option<String>,
    #[allow(dead_code)] // Accepted so that an export imports as it is; not kept.
    created_at: Option<serde::de::IgnoredAny>,
    #[allow(dead_code)]
    updated_at: Option<serde::de::IgnoredAny>,
}

/// A secret given in an import line; never printed by `Debug`.
#[derive(Deserialize)]
#[serde(transparent)]
struct KeptSecret(String);

fn default_ttl() -> i64 {
    900
}
fn default_auth_method() -> ClientAuthMethod {
    ClientAuthMethod::ClientSecretBasic
}
fn default_grant_types() -> Vec<GrantType> {
    vec![GrantType::ClientCredentials]
}
fn default_true() -> bool {
    true
}
fn default_token_format() -> TokenFormat {
    TokenFormat::Jwt
}

/// A checked line: the client to store, and its secret when one was generated for it.
pub struct PreparedClient {
    /// The record, ready for [`store_batch`].
    pub record: ClientRecord,
    /// The generated secret, to print once; `None` when the line kept its own or the client
    /// has no secret.
    pub generated_secret: Option<ClientSecret>,
    /// The line kept its client_id (so it may clash with a registered client).
    pub kept_id: bool,
}

/// Checks one import line and builds its client, as `client create` would at `now`.
/// `allow_private` lets a `jwks_uri` or federated issuer point inside the network.
pub async fn prepare_client(
    line: &str,
    now: i64,
    allow_private: bool,
) -> Result<PreparedClient, AdminError> {
    let mut line: ImportLine = serde_json::from_str(line)
        .map_err(|e| AdminError::Invalid(format!("not a client: {e}")))?;
    let kept_secret = line.client_secret.take();
    let new = NewClient {
        name: line.name.clone(),
        scope: parse_scope_list(&line.scope)?,
        audience: line.audience.clone(),
        token_ttl_seconds: line.token_ttl_seconds,
        auth_method: line.auth_method,
        grant_types: line.grant_types.clone(),
        can_introspect: line.can_introspect,
        token_format: line.token_format,
        reuse_tokens: line.reuse_tokens,
        limits: crate::model::TokenLimits {
            rate: line_rate("token_rate", line.token_rate.as_deref())?,
            quota: line_rate("token_quota", line.token_quota.as_deref())?,
            mode: line
                .quota_mode
                .as_deref()
                .map(crate::model::QuotaMode::parse)
                .transpose()
                .map_err(|why| AdminError::field("quota_mode", why))?
                .unwrap_or_default(),
        },
    };
    let jwks = line.jwks.as_ref().map(serde_json::Value::to_string);
    let keys = key_source(&line, jwks.as_deref(), allow_private)?;
    let mut generated_secret = None;
    let mut secrets = Vec::new();
    let credential = match (Credential::secret(line.auth_method), keys, kept_secret) {
        (Some(credential), None, Some(KeptSecret(secret))) => {
            if secret.chars().count() < MIN_KEPT_SECRET_CHARS
                || !secret.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(AdminError::Invalid(format!(
                    "client_secret must be at least {MIN_KEPT_SECRET_CHARS} visible ASCII \
                     characters"
                )));
            }
            secrets.push(secret_record(SecretHash::of(secret.as_bytes()), now));
            credential
        }
        (Some(credential), None, None) => {
            let secret = ClientSecret::generate();
            secrets.push(secret_record(secret.hash(), now));
            generated_secret = Some(secret);
            credential
        }
        (Some(_), Some(_), _) => {
            return Err(AdminError::Invalid(format!(
                "a {} client uses a secret, not keys, a certificate or a subject",
                line.auth_method
            )));
        }
        (None, _, Some(_)) => {
            return Err(AdminError::Invalid(format!(
                "a {} client has no client_secret",
                line.auth_method
            )));
        }
        (None, None, None) => {
            return Err(AdminError::Invalid(format!(
                "a {} client needs jwks, jwks_uri, a federated_issuer or a tls_client_auth_* \
                 subject",
                line.auth_method
            )));
        }
        (None, Some(keys), None) => keys.checked(line.auth_method).await?,
    };
    let mut record = client_record(new, credential, now)?;
    record.enabled = line.enabled;
    record.secrets = secrets;
    if let Some(client_id) = &line.client_id {
        record.client_id = check_kept_id(client_id)?;
    }
    Ok(PreparedClient {
        record,
        generated_secret,
        kept_id: line.client_id.is_some(),
    })
}

/// Stores one batch of checked clients in one transaction (all or none), with one change-feed
/// entry for the batch. Does not wait for the servers; call [`confirm_import`] once at the end.
pub async fn store_batch(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    batch: &[ClientRecord],
) -> Result<(), AdminError> {
    // One entry per batch, not per client: an import of a million clients is one operator
    // action, and the ids are in the import's own output.
    let changes = serde_json::json!({
        "clients": batch.len(),
        "first_client_id": batch.first().map(|c| &c.client_id),
        "last_client_id": batch.last().map(|c| &c.client_id),
    });
    let audit = super::entry(clock, actor, action::CLIENT_IMPORT, None, changes);
    store.create_clients(&audit, batch).await?;
    super::log_audit(&audit);
    Ok(())
}

/// After the last batch: returns once every running server has forgotten the ids it
/// remembered as unknown (so the imported clients work everywhere).
pub async fn confirm_import(store: &dyn Store) -> Result<Applied<()>, AdminError> {
    applied(store, ()).await
}

fn secret_record(hash: SecretHash, now: i64) -> SecretRecord {
    SecretRecord {
        secret_id: new_row_id(),
        hash,
        created_at: now,
        expires_at: None,
    }
}

/// A client id kept from another server: one a server looks up (1 to 128 letters, digits,
/// `-`, `_`, `.` or `~`; see [`is_client_id`]).
fn check_kept_id(client_id: &str) -> Result<String, AdminError> {
    if !is_client_id(client_id) {
        return Err(AdminError::Invalid(
            "client_id must be 1 to 128 letters, digits, '-', '_', '.' or '~'".into(),
        ));
    }
    Ok(client_id.to_owned())
}

/// Where a client without a secret gets its keys from, as `client create`'s flags would say.
fn key_source<'a>(
    line: &'a ImportLine,
    jwks: Option<&'a str>,
    allow_private: bool,
) -> Result<Option<ClientKeys<'a>>, AdminError> {
    let subjects = [
        (
            "tls_client_auth_subject_dn",
            &line.tls_client_auth_subject_dn,
        ),
        ("tls_client_auth_san_dns", &line.tls_client_auth_san_dns),
        ("tls_client_auth_san_uri", &line.tls_client_auth_san_uri),
        ("tls_client_auth_san_ip", &line.tls_client_auth_san_ip),
        ("tls_client_auth_san_email", &line.tls_client_auth_san_email),
    ];
    let mut sources = Vec::new();
    if let Some(jwks) = jwks {
        sources.push(ClientKeys::Jwks(jwks));
    }
    if let Some(uri) = &line.jwks_uri {
        sources.push(ClientKeys::JwksUri { uri, allow_private });
    }
    match (&line.federated_issuer, &line.federated_subject) {
        (Some(issuer), Some(subject)) => sources.push(ClientKeys::Federated {
            issuer,
            subject,
            audience: line.federated_audience.as_deref(),
            max_token_age: line.federated_max_token_age_seconds,
            allow_private,
        }),
        (None, None)
            if line.federated_audience.is_none()
                && line.federated_max_token_age_seconds.is_none() => {}
        _ => {
            return Err(AdminError::Invalid(
                "federated_issuer and federated_subject go together".into(),
            ));
        }
    }
    for (kind, value) in subjects {
        if let Some(value) = value {
            sources.push(ClientKeys::TlsSubject { kind, value });
        }
    }
    if sources.len() > 1 {
        return Err(AdminError::Invalid(
            "give one of jwks, jwks_uri, federated_issuer or a tls_client_auth_* subject".into(),
        ));
    }
    Ok(sources.pop())
}

/// A rate member of an import line (`100/min`; absent, null or `off` for none).
fn line_rate(
    name: &'static str,
    value: Option<&str>,
) -> Result<Option<crate::model::Rate>, AdminError> {
    match value {
        None | Some("off") => Ok(None),
        Some(text) => crate::model::Rate::parse(text)
            .map(Some)
            .map_err(|why| AdminError::field(name, why)),
    }
}
