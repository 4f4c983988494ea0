//! Initial access tokens for dynamic client registration (RFC 7591 §3): `latchkey
//! registration-token create | list | revoke`. A token is shown once when created; only its
//! hash is stored.

use serde_json::json;

use super::{AdminError, check_audience, entry, log_audit, parse_scope_list};
use crate::clock::Clock;
use crate::model::audit::action;
use crate::model::{ADMIN_AUDIENCE, ADMIN_READ_SCOPE, ADMIN_SCOPE, Actor, RegistrationToken};
use crate::secret::{REGISTRATION_TOKEN_PREFIX, new_bearer_token, new_row_id};
use crate::store::Store;

/// The longest an initial access token may live: a year.
pub const MAX_LIFETIME_SECONDS: i64 = 365 * 24 * 3600;

/// The default lifetime of an initial access token: a day.
pub const DEFAULT_LIFETIME_SECONDS: i64 = 24 * 3600;

/// An initial access token to create.
#[derive(Debug, Clone, Default)]
pub struct NewRegistrationToken {
    /// Lifetime in seconds (1 s to a year).
    pub expires_in: i64,
    /// How many clients it may register; `None` for no limit.
    pub max_uses: Option<i64>,
    /// The scope tokens registrations may ask for (space-separated); `None` for any.
    pub scope_limit: Option<String>,
    /// The audiences registrations may ask for; `None` for any.
    pub audience_limit: Option<Vec<String>>,
}

/// Creates an initial access token. Returns it with the token in the clear, shown this once.
pub async fn create(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    new: NewRegistrationToken,
) -> Result<(RegistrationToken, String), AdminError> {
    if !(1..=MAX_LIFETIME_SECONDS).contains(&new.expires_in) {
        return Err(AdminError::field(
            "expires_in_seconds",
            "an initial access token lives from 1 second to a year",
        ));
    }
    if new.max_uses.is_some_and(|n| n < 1) {
        return Err(AdminError::field("max_uses", "max uses must be at least 1"));
    }
    let scope_limit = new
        .scope_limit
        .as_deref()
        .map(parse_scope_list)
        .transpose()?;
    let audience_limit = new
        .audience_limit
        .as_deref()
        .map(check_audience)
        .transpose()?;
    // Only an operator makes admin clients: registration never grants the admin API.
    if scope_limit
        .iter()
        .flatten()
        .any(|s| s == ADMIN_SCOPE || s == ADMIN_READ_SCOPE)
    {
        return Err(AdminError::field(
            "scope_limit",
            "the admin scopes cannot be registered dynamically",
        ));
    }
    if audience_limit.iter().flatten().any(|a| a == ADMIN_AUDIENCE) {
        return Err(AdminError::field(
            "audience_limit",
            "the admin audience cannot be registered dynamically",
        ));
    }
    let now = clock.unix_seconds();
    let (secret, hash) = new_bearer_token(REGISTRATION_TOKEN_PREFIX);
    let token = RegistrationToken {
        token_id: new_row_id(),
        hash,
        created_at: now,
        expires_at: now.saturating_add(new.expires_in),
        max_uses: new.max_uses,
        uses: 0,
        scope_limit,
        audience_limit,
    };
    let audit = entry(
        clock,
        actor,
        action::REGISTRATION_TOKEN_CREATE,
        Some(&token.token_id),
        created(&token),
    );
    store.create_registration_token(&audit, &token).await?;
    log_audit(&audit);
    Ok((token, secret))
}

/// The audit trail's changes for a new initial access token (or one copied by `migrate-data`,
/// with the uses it had).
pub(super) fn created(token: &RegistrationToken) -> serde_json::Value {
    let mut changes = json!({
        "expires_at": { "after": token.expires_at },
        "max_uses": { "after": token.max_uses },
        "scope_limit": { "after": token.scope_limit.as_ref().map(|s| s.join(" ")) },
        "audience_limit": { "after": token.audience_limit },
    });
    if token.uses > 0 {
        changes["uses"] = json!({ "after": token.uses });
    }
    changes
}

/// The initial access tokens, expired ones included until the janitor removes them.
pub async fn list(store: &dyn Store) -> Result<Vec<RegistrationToken>, AdminError> {
    Ok(store.registration_tokens().await?)
}

/// Revokes an initial access token: it registers nothing more. The clients it registered stay.
pub async fn revoke(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    token_id: &str,
) -> Result<(), AdminError> {
    let audit = entry(
        clock,
        actor,
        action::REGISTRATION_TOKEN_REVOKE,
        Some(token_id),
        json!({}),
    );
    if !store.revoke_registration_token(&audit, token_id).await? {
        return Err(AdminError::field(
            "token_id",
            format!("no registration token with id {token_id:?}"),
        ));
    }
    log_audit(&audit);
    Ok(())
}
