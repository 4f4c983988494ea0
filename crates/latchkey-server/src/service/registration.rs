//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592): register a
//! client with an initial access token, then read, replace or delete it with the registration
//! access token the registration returned. The metadata is judged by
//! `protocol::registration`; clients are built and stored as the admin operations do, with
//! the registration as the actor of their audit entries. Tokens are checked before a request's
//! body is read: without one, nothing is said about the metadata.

use latchkey_proto::{ClientAuthMethod, ClientMetadata, RegistrationRequest};

use super::Services;
use super::admin::{
    self, AdminError, ClientKeys, NewClient, PROPAGATION_TIMEOUT, entry, log_audit,
    new_client_record,
};
use crate::cache::wait_for_servers;
use crate::error::OAuthError;
use crate::model::audit::{self, action};
use crate::model::{Actor, ClientRecord, ClientUpdate, Registration, RegistrationToken};
use crate::protocol::registration::{Limits, Refusal, Requested, RequestedKeys, requested};
use crate::secret::{ClientSecret, REGISTRATION_ACCESS_PREFIX, SecretHash, new_bearer_token};
use crate::store::StoreError;

/// A client just registered.
#[derive(Debug)]
pub struct Registered {
    /// The client.
    pub client: ClientRecord,
    /// Its secret, for a client that uses one: shown only in the registration's answer.
    pub secret: Option<ClientSecret>,
    /// Its registration access token (RFC 7592 §1), likewise.
    pub access_token: String,
}

/// A registered client and its registration, as its registration access token reaches them.
#[derive(Debug)]
pub struct Configured {
    /// What is kept about the registration.
    pub registration: Registration,
    /// The client as it is now.
    pub client: ClientRecord,
}

/// The bearer token of an `Authorization` header (RFC 6750 §2.1), or `invalid_token`.
fn bearer(authorization: Option<&[u8]>) -> Result<&str, OAuthError> {
    authorization
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| OAuthError::invalid_token("send the token as Authorization: Bearer"))
}

/// An admin error as the registration endpoint answers it: bad input is
/// `invalid_client_metadata`.
fn metadata_error(err: AdminError) -> OAuthError {
    match err {
        AdminError::Invalid(message) | AdminError::Field { message, .. } => {
            OAuthError::invalid_client_metadata(message)
        }
        // Whoever holds an initial access token learns nothing of what a host resolves to (it
        // could map the internal network's names with it).
        AdminError::HostAddress(_) => OAuthError::invalid_client_metadata(
            "jwks_uri: its host must resolve, to public addresses only",
        ),
        AdminError::NotFound(_) => OAuthError::invalid_token("the client no longer exists"),
        AdminError::Store(StoreError::Precondition(_)) => OAuthError::invalid_request_with_status(
            http::StatusCode::CONFLICT,
            "the client changed while this request ran; read it again",
        ),
        AdminError::Store(err) => err.into(),
        AdminError::Key(err) => {
            tracing::error!(error = %err, "registration: key error");
            OAuthError::server_error()
        }
    }
}

/// A refusal of the metadata as an OAuth error.
fn refused(refusal: Refusal) -> OAuthError {
    match refusal {
        Refusal::RedirectUri(description) => OAuthError::invalid_redirect_uri(description),
        Refusal::Metadata(description) => OAuthError::invalid_client_metadata(description),
    }
}

fn new_client(requested: &Requested) -> NewClient {
    NewClient {
        name: requested.name.clone(),
        scope: requested.scope.clone(),
        audience: requested.audience.clone(),
        token_ttl_seconds: admin::DEFAULT_TOKEN_TTL,
        auth_method: requested.auth_method,
        grant_types: vec![latchkey_proto::GrantType::ClientCredentials],
        can_introspect: false,
        token_format: latchkey_proto::TokenFormat::Jwt,
        reuse_tokens: false,
        limits: Default::default(),
    }
}

fn client_keys<'a>(services: &Services, keys: Option<&'a RequestedKeys>) -> Option<ClientKeys<'a>> {
    keys.map(|keys| match keys {
        RequestedKeys::Jwks(jwks) => ClientKeys::Jwks(jwks),
        // The SSRF rules of every jwks_uri apply (`--allow-private-jwks-uri` included).
        RequestedKeys::JwksUri(uri) => ClientKeys::JwksUri {
            uri,
            allow_private: services.remote_keys.allows_private(),
        },
        RequestedKeys::TlsSubject(kind, value) => ClientKeys::TlsSubject { kind, value },
    })
}

/// The usable initial access token in `authorization`.
pub async fn initial_token(
    services: &Services,
    authorization: Option<&[u8]>,
) -> Result<RegistrationToken, OAuthError> {
    let now = services.clock.unix_seconds();
    let presented = SecretHash::of(bearer(authorization)?.as_bytes());
    match services.store.find_registration_token(&presented).await? {
        Some(token) if token.hash.matches(&presented) && token.usable(now) => Ok(token),
        _ => Err(OAuthError::invalid_token(
            "the initial access token is unknown, expired, revoked or used up",
        )),
    }
}

/// Registers a client (RFC 7591 §3) with the initial access token `token`, for the metadata of
/// `request`. `supported` are the authentication methods this server takes.
pub async fn register(
    services: &Services,
    supported: &[ClientAuthMethod],
    token: &RegistrationToken,
    request: &RegistrationRequest,
) -> Result<Registered, OAuthError> {
    let now = services.clock.unix_seconds();
    let limits = Limits {
        scope: token.scope_limit.as_deref(),
        audience: token.audience_limit.as_deref(),
    };
    let requested = requested(&request.metadata, supported, limits).map_err(refused)?;
    let keys = client_keys(services, requested.keys.as_ref());
    let (client, secret) = new_client_record(new_client(&requested), keys, now)
        .await
        .map_err(metadata_error)?;
    let (access_token, access_hash) = new_bearer_token(REGISTRATION_ACCESS_PREFIX);
    let registration = Registration {
        client_id: client.client_id.clone(),
        access_hash,
        token_id: token.token_id.clone(),
        scope_limit: token.scope_limit.clone(),
        audience_limit: token.audience_limit.clone(),
    };
    let audit = entry(
        services.clock.as_ref(),
        &Actor::Registration(token.token_id.clone()),
        action::CLIENT_CREATE,
        Some(&client.client_id),
        audit::created(&client),
    );
    if !services
        .store
        .register_client(&audit, &client, &registration, now)
        .await?
    {
        return Err(OAuthError::invalid_token(
            "the initial access token is unknown, expired, revoked or used up",
        ));
    }
    log_audit(&audit);
    warn_unconfirmed(services).await;
    Ok(Registered {
        client,
        secret,
        access_token,
    })
}

/// Waits for running servers to know of a change, as an admin change does; a server that does
/// not confirm is logged (the registration's answer cannot carry a warning).
async fn warn_unconfirmed(services: &Services) {
    match wait_for_servers(services.store.as_ref(), PROPAGATION_TIMEOUT).await {
        Ok(servers) if servers.is_empty() => {}
        Ok(servers) => tracing::warn!(?servers, "servers did not confirm a registration"),
        Err(err) => tracing::warn!(error = %err, "could not wait for servers after a registration"),
    }
}

/// The registration and client that the registration access token in `authorization` manages,
/// if it is the one of `client_id` (RFC 7592 §2: anything else is `invalid_token`) and the
/// client is enabled: disabling a client also stops it from managing itself.
pub async fn configured(
    services: &Services,
    client_id: &str,
    authorization: Option<&[u8]>,
) -> Result<Configured, OAuthError> {
    let presented = SecretHash::of(bearer(authorization)?.as_bytes());
    let invalid =
        || OAuthError::invalid_token("the registration access token is not valid for this client");
    let registration = services
        .store
        .find_registration(&presented)
        .await?
        .filter(|r| r.access_hash.matches(&presented) && r.client_id == client_id)
        .ok_or_else(invalid)?;
    let client = services
        .store
        .find_client(client_id)
        .await?
        .ok_or_else(invalid)?;
    if !client.enabled {
        return Err(OAuthError::invalid_token(
            "the client is disabled; an operator can enable it again",
        ));
    }
    Ok(Configured {
        registration,
        client,
    })
}

/// RFC 7592 §2.2: replaces the client's metadata with `request`'s; what it leaves out returns
/// to its default. The authentication method cannot change (register a new client instead),
/// and the initial access token's limits still apply.
pub async fn update(
    services: &Services,
    supported: &[ClientAuthMethod],
    configured: Configured,
    request: &RegistrationRequest,
) -> Result<ClientRecord, OAuthError> {
    let Configured {
        registration,
        client: before,
    } = configured;
    let client_id = before.client_id.as_str();
    if request.client_id.as_deref() != Some(client_id) {
        return Err(OAuthError::invalid_request(
            "client_id must be sent, and be the client's own (RFC 7592 section 2.2)",
        ));
    }
    let server_set = [
        (
            "registration_access_token",
            request.registration_access_token.is_some(),
        ),
        (
            "registration_client_uri",
            request.registration_client_uri.is_some(),
        ),
        ("client_id_issued_at", request.client_id_issued_at.is_some()),
        (
            "client_secret_expires_at",
            request.client_secret_expires_at.is_some(),
        ),
    ];
    if let Some((name, _)) = server_set.iter().find(|(_, sent)| *sent) {
        return Err(OAuthError::invalid_request(format!(
            "{name} is set by the server and must not be sent (RFC 7592 section 2.2)"
        )));
    }
    if let Some(secret) = &request.client_secret {
        let presented = SecretHash::of(secret.as_bytes());
        let now = services.clock.unix_seconds();
        let current = before
            .secrets
            .iter()
            .any(|s| s.hash.matches(&presented) && s.expires_at.is_none_or(|at| at > now));
        if !current {
            return Err(OAuthError::invalid_request(
                "client_secret, when sent, must be the client's current secret",
            ));
        }
    }
    let limits = Limits {
        scope: registration.scope_limit.as_deref(),
        audience: registration.audience_limit.as_deref(),
    };
    let requested = requested(&request.metadata, supported, limits).map_err(refused)?;
    if requested.auth_method != before.auth_method() {
        return Err(OAuthError::invalid_client_metadata(format!(
            "token_endpoint_auth_method: the client uses {}; register a new client to change it",
            before.auth_method()
        )));
    }
    // Held to the version `configured` checked (enabled, its token): a change an operator
    // made meanwhile (disabling it, say) makes this one fail rather than be applied over it.
    let update = ClientUpdate {
        name: Some(requested.name.clone()),
        scope: Some(requested.scope.clone()),
        audience: Some(requested.audience.clone()),
        expected_version: Some(before.version),
        ..ClientUpdate::default()
    };
    let keys = client_keys(services, requested.keys.as_ref());
    let applied = admin::replace_client(
        services.store.as_ref(),
        services.clock.as_ref(),
        &Actor::Registration(registration.token_id),
        &before,
        update,
        keys,
    )
    .await
    .map_err(metadata_error)?;
    Ok(applied.value)
}

/// RFC 7592 §2.3: deletes the client; its registration access token goes with it.
pub async fn delete(services: &Services, configured: Configured) -> Result<(), OAuthError> {
    admin::delete_client(
        services.store.as_ref(),
        services.clock.as_ref(),
        &Actor::Registration(configured.registration.token_id),
        &configured.client.client_id,
        Some(configured.client.version),
    )
    .await
    .map_err(metadata_error)?;
    Ok(())
}

/// The metadata of a registered client, for the client information response.
pub fn metadata(client: &ClientRecord) -> ClientMetadata {
    crate::protocol::registration::metadata_of(client)
}
