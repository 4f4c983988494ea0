//! Client management, as the admin CLI does it: validation of what an operator registers,
//! generation of ids and secrets, and waiting for running servers after a change. Every
//! change the CLI makes goes through here.

use latchkey_proto::{ClientAuthMethod, GrantType};

use std::time::Duration;

use crate::client_cache::wait_for_servers;
use crate::clock::Clock;
use crate::protocol::syntax::{is_resource_uri, is_scope_token};
use crate::secret::{ClientSecret, new_client_id, new_row_id};
use crate::store::{ClientRecord, ClientUpdate, SecretAdded, SecretRecord, Store, StoreError};

/// Shortest token lifetime a client may have (seconds).
pub const MIN_TOKEN_TTL: i64 = 10;
/// Longest token lifetime a client may have (seconds): a day.
pub const MAX_TOKEN_TTL: i64 = 24 * 60 * 60;
/// The default token lifetime (seconds): 15 minutes.
pub const DEFAULT_TOKEN_TTL: i64 = 15 * 60;

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

async fn applied<T>(store: &dyn Store, value: T) -> Result<Applied<T>, AdminError> {
    let unconfirmed_servers = wait_for_servers(store, PROPAGATION_TIMEOUT).await?;
    Ok(Applied {
        value,
        unconfirmed_servers,
    })
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The operator's input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No client with that id.
    #[error("no client with id {0:?}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
}

/// Splits and checks a space-separated scope list (RFC 6749 §3.3 syntax).
pub fn parse_scope_list(scope: &str) -> Result<Vec<String>, AdminError> {
    let mut out: Vec<String> = Vec::new();
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if !is_scope_token(token) {
            return Err(AdminError::Invalid(format!(
                "scope token {token:?} may only contain visible ASCII other than '\"' and '\\'"
            )));
        }
        if !out.iter().any(|t| t == token) {
            out.push(token.to_owned());
        }
    }
    Ok(out)
}

/// Checks audience values: absolute URIs without fragment (RFC 8707 §2).
pub fn check_audience(audience: &[String]) -> Result<Vec<String>, AdminError> {
    let mut out: Vec<String> = Vec::new();
    for aud in audience {
        if !is_resource_uri(aud) {
            return Err(AdminError::Invalid(format!(
                "audience {aud:?} must be an absolute URI without a fragment, like https://api.example.com"
            )));
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
        Err(AdminError::Invalid(format!(
            "token TTL must be between {MIN_TOKEN_TTL} s and {MAX_TOKEN_TTL} s (24h), got {ttl} s"
        )))
    }
}

fn check_name(name: &str) -> Result<String, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "name must be 1 to 200 characters without control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Registers a client with a fresh id and secret. The secret is returned in the clear exactly
/// this once; only its hash is stored. Returns once every running server knows the client.
pub async fn create_client(
    store: &dyn Store,
    clock: &dyn Clock,
    new: NewClient,
) -> Result<Applied<(ClientRecord, ClientSecret)>, AdminError> {
    let now = clock.now();
    let secret = ClientSecret::generate();
    let client = ClientRecord {
        client_id: new_client_id(),
        name: check_name(&new.name)?,
        scope: parse_scope_list(&new.scope.join(" "))?,
        audience: check_audience(&new.audience)?,
        grant_types: new.grant_types,
        token_ttl_seconds: check_ttl(new.token_ttl_seconds)?,
        auth_method: new.auth_method,
        enabled: true,
        created_at: now,
        updated_at: now,
        secrets: vec![SecretRecord {
            secret_id: new_row_id(),
            hash: secret.hash(),
            created_at: now,
            expires_at: None,
        }],
    };
    store.create_client(&client).await?;
    applied(store, (client, secret)).await
}

/// Changes a client after validating the new values. Returns once every running server has
/// stopped using the old record.
pub async fn update_client(
    store: &dyn Store,
    clock: &dyn Clock,
    client_id: &str,
    mut update: ClientUpdate,
) -> Result<Applied<ClientRecord>, AdminError> {
    update.name = update.name.as_deref().map(check_name).transpose()?;
    update.scope = update
        .scope
        .map(|s| parse_scope_list(&s.join(" ")))
        .transpose()?;
    update.audience = update.audience.as_deref().map(check_audience).transpose()?;
    update.token_ttl_seconds = update.token_ttl_seconds.map(check_ttl).transpose()?;
    let client = store
        .update_client(client_id, &update, clock.now())
        .await?
        .ok_or_else(|| AdminError::NotFound(client_id.to_owned()))?;
    applied(store, client).await
}

/// A client holds at most this many live secrets.
pub const MAX_SECRETS: usize = 5;

/// Rotates a client's secret: adds a new one and lets every older live secret work for
/// `overlap_seconds` more, so deployments can switch without downtime (checklist C). The new
/// secret is returned in the clear this once.
pub async fn rotate_secret(
    store: &dyn Store,
    clock: &dyn Clock,
    client_id: &str,
    overlap_seconds: i64,
) -> Result<Applied<ClientSecret>, AdminError> {
    if overlap_seconds < 0 {
        return Err(AdminError::Invalid(
            "the overlap must not be negative".into(),
        ));
    }
    let now = clock.now();
    let secret = ClientSecret::generate();
    let record = SecretRecord {
        secret_id: new_row_id(),
        hash: secret.hash(),
        created_at: now,
        expires_at: None,
    };
    match store
        .add_secret(
            client_id,
            &record,
            Some(now.saturating_add(overlap_seconds)),
            MAX_SECRETS,
            now,
        )
        .await?
    {
        SecretAdded::Added => applied(store, secret).await,
        SecretAdded::NoSuchClient => Err(AdminError::NotFound(client_id.to_owned())),
        SecretAdded::TooMany => Err(AdminError::Invalid(format!(
            "the client already holds {MAX_SECRETS} live secrets; revoke one first"
        ))),
    }
}

/// One client.
pub async fn show_client(store: &dyn Store, client_id: &str) -> Result<ClientRecord, AdminError> {
    store
        .find_client(client_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(client_id.to_owned()))
}

/// Deletes a client. Returns once no running server issues tokens to it any more.
pub async fn delete_client(store: &dyn Store, client_id: &str) -> Result<Applied<()>, AdminError> {
    if !store.delete_client(client_id).await? {
        return Err(AdminError::NotFound(client_id.to_owned()));
    }
    applied(store, ()).await
}
