//! Signing keys: generation, the public JWK with an RFC 7638 thumbprint as `kid`, JWT signing
//! and verification, and the key lifecycle (docs/CONFORMANCE.md, "Signing keys and rotation").
//! A key is parsed once when loaded and held in memory; signing and verifying never re-parse it.
//! With a key-encryption key (KEK) configured, only keys sealed with it are ever loaded; a key
//! stored in the clear is sealed once at start-up and refused everywhere else (see
//! [`KeySource::load`]).
//!
//! Lifecycle: `next` (published, not signing) → `current` (signing) → `retired` (published for
//! verification only) → `removed` (private key erased, unpublished). The timing rules are
//! [`next_key_ready_at`] and [`RETIRED_KEY_PUBLISHED_FOR`].

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use latchkey_jose::{PrivateKey, VerifyingKey};
use latchkey_proto::{Jwk, JwkSet, SigningAlg};
use serde::Serialize;

use crate::kek::{KekError, KeyEncryptionKey, check_stored, unseal};
use crate::model::audit::action;
use crate::model::{Actor, AuditEntry, MAX_TOKEN_TTL};
use crate::protocol::access_token::PublishedKeys;
use crate::protocol::dpop_nonce::NonceKey;
use crate::store::{KeyState, RotationOutcome, RotationPlan, Store, StoreError, StoredKey};

/// How long verifiers may cache the JWK Set (the `max-age` of `/jwks`, seconds).
pub const JWKS_MAX_AGE_SECONDS: i64 = 300;
/// Margin for clock skew between servers and verifiers, and for servers to reload (seconds).
pub const ROTATION_SKEW_SECONDS: i64 = 60;

/// A next key may sign once it has been published for at least one JWKS max-age (plus skew),
/// so that every verifier that refreshes by the max-age already knows it (docs/CONFORMANCE.md,
/// "Signing keys and rotation").
pub fn next_key_ready_at(next_created_at: i64) -> i64 {
    next_created_at + JWKS_MAX_AGE_SECONDS + ROTATION_SKEW_SECONDS
}

/// A retired key stays published until every token it signed has expired (no token lives
/// longer than [`MAX_TOKEN_TTL`]), plus one max-age and skew (docs/CONFORMANCE.md, "Signing
/// keys and rotation").
pub const RETIRED_KEY_PUBLISHED_FOR: i64 =
    MAX_TOKEN_TTL + JWKS_MAX_AGE_SECONDS + ROTATION_SKEW_SECONDS;

/// Why a key could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The cryptographic library refused to generate or sign.
    #[error("signing failed")]
    Crypto,
    /// A stored key is encrypted and cannot be decrypted with the configured KEK.
    #[error(transparent)]
    Kek(#[from] KekError),
    /// A rotation could not happen.
    #[error("{0}")]
    Rotation(String),
    /// Stored key material does not parse as the algorithm it is stored under.
    #[error("stored signing key {kid} is unreadable: {reason}")]
    Unreadable {
        /// The key id.
        kid: String,
        /// What was wrong.
        reason: String,
    },
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database names a current key this server refused to load (see [`KeySource::load`]),
    /// so no token is signed: 503 rather than a token signed with an untrusted key.
    #[error(
        "the current signing key {kid} was refused when the keys were reloaded; no token is signed until it is replaced by a key this server can trust"
    )]
    Withdrawn {
        /// The refused current key.
        kid: String,
    },
}

/// A parsed private key, ready to sign access tokens.
pub struct SigningKey {
    material: Arc<KeyMaterial>,
    /// Set when the database's current key was refused at a reload: this key then stays only
    /// for what does not sign (its kid, DPoP nonces), and [`SigningKey::sign_jwt`] fails.
    withdrawn_for: Option<String>,
}

/// What a key is parsed into, once.
struct KeyMaterial {
    key: PrivateKey,
    /// Makes and checks DPoP nonces (RFC 9449 §8); derived from the private key, so every
    /// replica with this key has the same.
    nonce_key: NonceKey,
    /// `base64url(header) + "."`, computed once: the header never changes for a key.
    header_prefix: String,
    verifier: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .field("alg", &self.alg())
            .field("withdrawn_for", &self.withdrawn_for)
            .finish()
    }
}

impl SigningKey {
    /// Generates a new key; returns it with its PKCS#8 DER encoding for storage.
    pub fn generate(alg: SigningAlg) -> Result<(Self, Vec<u8>), KeyError> {
        let (key, pkcs8) = PrivateKey::generate(alg).map_err(|_| KeyError::Crypto)?;
        Ok((Self::new(key, &pkcs8)?, pkcs8))
    }

    /// Parses a stored key.
    pub fn from_pkcs8(alg: SigningAlg, der: &[u8]) -> Result<Self, KeyError> {
        let key = PrivateKey::from_pkcs8(alg, der).map_err(|e| KeyError::Unreadable {
            kid: String::new(),
            reason: e.to_string(),
        })?;
        Self::new(key, der)
    }

    fn new(key: PrivateKey, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let verifier = key.verifying_key().map_err(|_| KeyError::Crypto)?;
        // RFC 9068 §2.1: access tokens carry `typ: at+jwt`.
        let header =
            serde_json::json!({ "alg": key.alg().as_str(), "kid": key.kid(), "typ": "at+jwt" });
        let mut header_prefix = URL_SAFE_NO_PAD.encode(header.to_string());
        header_prefix.push('.');
        Ok(SigningKey {
            material: Arc::new(KeyMaterial {
                key,
                nonce_key: NonceKey::derive(pkcs8),
                header_prefix,
                verifier,
            }),
            withdrawn_for: None,
        })
    }

    /// The same key, no longer allowed to sign because the current key `refused` could not be
    /// trusted.
    fn withdrawn(&self, refused: &str) -> Self {
        SigningKey {
            material: Arc::clone(&self.material),
            withdrawn_for: Some(refused.to_owned()),
        }
    }

    /// Checks a JWS signature made with this key over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.material.verifier.verify(message, signature)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        self.material.key.kid()
    }

    /// The DPoP nonce key that goes with this signing key.
    pub fn nonce_key(&self) -> &NonceKey {
        &self.material.nonce_key
    }

    /// The algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.material.key.alg()
    }

    /// The public JWK (no private members).
    pub fn public_jwk(&self) -> &Jwk {
        self.material.key.public_jwk()
    }

    /// Signs `claims` as a compact JWS with this key's cached header; fails with
    /// [`KeyError::Withdrawn`] while the database's current key is refused.
    pub fn sign_jwt(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        if let Some(refused) = &self.withdrawn_for {
            return Err(KeyError::Withdrawn {
                kid: refused.clone(),
            });
        }
        let material = &self.material;
        // Claims are a few hundred bytes: one allocation rather than growing from 128 bytes.
        let mut payload = Vec::with_capacity(512);
        serde_json::to_writer(&mut payload, claims).map_err(|_| KeyError::Crypto)?;
        let mut jwt =
            String::with_capacity(material.header_prefix.len() + payload.len() * 4 / 3 + 360);
        jwt.push_str(&material.header_prefix);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        material
            .key
            .sign_compact(&mut jwt)
            .map_err(|_| KeyError::Crypto)?;
        Ok(jwt)
    }
}

/// The keys a running server uses: the one it signs with, every published key by id (for
/// verifying its own tokens), and the JWK Set it serves.
pub struct KeyRing {
    signing: Arc<SigningKey>,
    published: HashMap<String, Arc<SigningKey>>,
    jwks_json: Bytes,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing", &self.signing.kid())
            .field("withdrawn_for", &self.signing.withdrawn_for)
            .field("published", &self.published.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where a server's keys come from: the algorithm it signs with and the KEK, if any.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// The algorithm new tokens are signed with.
    pub alg: SigningAlg,
    /// Seals new private keys and opens stored ones; `None` stores them in the clear.
    pub kek: Option<Arc<KeyEncryptionKey>>,
}

impl KeySource {
    /// A new key in `state`, sealed with the KEK if there is one.
    pub fn new_stored_key(
        &self,
        alg: SigningAlg,
        state: KeyState,
        now: i64,
    ) -> Result<StoredKey, KeyError> {
        let (key, pkcs8) = SigningKey::generate(alg)?;
        let (private_key, encryption) = match &self.kek {
            Some(kek) => (kek.seal(key.kid(), &pkcs8)?, Some(kek.marker())),
            None => (pkcs8, None),
        };
        Ok(StoredKey {
            kid: key.kid().to_owned(),
            alg,
            state,
            private_key,
            encryption,
            public_jwk: serde_json::to_string(key.public_jwk()).map_err(|_| KeyError::Crypto)?,
            created_at: now,
            activated_at: (state == KeyState::Current).then_some(now),
            retired_at: None,
            removed_at: None,
        })
    }

    /// A stored key as this server may use it: its stored form allowed by [`check_stored`]
    /// (only keys sealed with the KEK, when there is one), and parsed, or taken from
    /// `previous` if it was parsed before. The stored form is checked even then, so a row
    /// rewritten in the clear under a known kid is refused like a new one.
    fn trusted(
        &self,
        stored: &StoredKey,
        previous: Option<&KeyRing>,
    ) -> Result<Arc<SigningKey>, KeyError> {
        check_stored(
            self.kek.as_deref(),
            &stored.kid,
            stored.encryption.as_deref(),
        )?;
        match previous.and_then(|p| p.published.get(&stored.kid)) {
            Some(known) => Ok(Arc::clone(known)),
            None => Ok(Arc::new(self.parse(stored)?)),
        }
    }

    fn parse(&self, stored: &StoredKey) -> Result<SigningKey, KeyError> {
        let pkcs8 = unseal(
            self.kek.as_deref(),
            &stored.kid,
            stored.encryption.as_deref(),
            &stored.private_key,
        )?;
        let key = SigningKey::from_pkcs8(stored.alg, &pkcs8).map_err(|e| match e {
            KeyError::Unreadable { reason, .. } => KeyError::Unreadable {
                kid: stored.kid.clone(),
                reason,
            },
            other => other,
        })?;
        if key.kid() != stored.kid {
            return Err(KeyError::Unreadable {
                kid: stored.kid.clone(),
                reason: "the private key does not match its key id".into(),
            });
        }
        Ok(key)
    }

    /// Start-up: makes sure a current and a next key exist for the algorithm (several servers
    /// starting at once agree on one of each, see [`Store::insert_key_if_none`]); seals keys
    /// stored in the clear when a KEK is configured; loads the ring. A key that cannot be
    /// decrypted fails here, loudly (docs/CONFORMANCE.md, "Signing keys and rotation").
    ///
    /// The sealing here is the one place where a key stored in the clear is taken while a KEK
    /// is configured, so that a database from before the KEK keeps working: it is sealed
    /// first and then loaded in its sealed form like any other. A running server refuses
    /// clear keys instead ([`KeySource::load`]); its error log names them, so an operator can
    /// look at them (`latchkey keys list`, column PRIVATE_KEY) before a restart seals them.
    pub async fn load_or_create(
        &self,
        store: &dyn Store,
        actor: &Actor,
        now: i64,
    ) -> Result<KeyRing, KeyError> {
        for state in [KeyState::Current, KeyState::Next] {
            let stored = store.signing_keys().await?;
            if !stored.iter().any(|k| k.alg == self.alg && k.state == state) {
                let candidate = self.new_stored_key(self.alg, state, now)?;
                let audit = key_entry(actor, action::KEY_CREATE, &candidate, now);
                let winner = store.insert_key_if_none(&audit, &candidate).await?;
                if winner.kid == candidate.kid {
                    tracing::info!(kid = %winner.kid, alg = %self.alg, state = state.as_str(), "created a signing key");
                }
            }
        }
        if let Some(kek) = &self.kek {
            for key in store.signing_keys().await? {
                if key.state != KeyState::Removed && key.encryption.is_none() {
                    let sealed = kek.seal(&key.kid, &key.private_key)?;
                    let audit = key_entry(actor, action::KEY_IMPORT, &key, now);
                    store
                        .reseal_key(&audit, &key.kid, &sealed, &kek.marker())
                        .await?;
                    tracing::info!(kid = %key.kid, kek = kek.id(), "sealed a signing key with the key-encryption key");
                }
            }
        }
        self.load(store, None).await
    }

    /// Loads the ring from the database: the first time (`previous` is `None`, at start-up)
    /// or again after a change (`previous` is the ring in use, whose parsed keys are reused).
    ///
    /// Only keys this server can trust are loaded, for signing or for publishing: with a KEK,
    /// keys sealed with that KEK; without one, keys in the clear ([`check_stored`]); and each
    /// must decrypt and parse as the key its kid names. At start-up any other key fails the
    /// load, loudly. At a reload it is refused on its own: it is neither published in the JWK
    /// Set nor used to sign or verify, and an error naming its kid (never its key material) is
    /// logged at every reload while it stays. The rest of the reload goes on, so client
    /// changes and the other keys still take effect.
    ///
    /// If the refused key is the current key of the algorithm this server signs with, the
    /// server fails closed for signing: JWT requests get 503 (`KeyError::Withdrawn`, mapped to
    /// `temporarily_unavailable` by the token endpoint) until the current key is one it trusts
    /// again (for example after `latchkey keys rotate` with the KEK, or once a restart has
    /// sealed it and the keys reload). It neither signs with the refused key nor keeps
    /// signing with the previous one, which the database no longer names current: other
    /// replicas may have moved on, and quietly signing with it would hide the problem.
    /// Opaque tokens need no signature and are still issued; the previous key stays only for
    /// DPoP nonces, so proofs made with its nonces keep working.
    pub async fn load(
        &self,
        store: &dyn Store,
        previous: Option<&KeyRing>,
    ) -> Result<KeyRing, KeyError> {
        let stored = store.signing_keys().await?;
        let mut published = Vec::new();
        let mut signing = None;
        let mut refused_signing = None;
        for key in stored.iter().filter(|k| k.state != KeyState::Removed) {
            let signs = key.alg == self.alg && key.state == KeyState::Current;
            let parsed = match self.trusted(key, previous) {
                Ok(parsed) => parsed,
                Err(err) if previous.is_none() => return Err(err),
                Err(err) => {
                    tracing::error!(
                        kid = %key.kid,
                        state = key.state.as_str(),
                        error = %err,
                        "refused a stored signing key: it is neither published nor used to sign"
                    );
                    if signs {
                        refused_signing = Some(key.kid.clone());
                    }
                    continue;
                }
            };
            if signs {
                signing = Some(Arc::clone(&parsed));
            }
            published.push(parsed);
        }
        let signing = match (signing, refused_signing, previous) {
            (Some(signing), _, _) => signing,
            (None, Some(refused), Some(previous)) => Arc::new(previous.signing.withdrawn(&refused)),
            _ => {
                return Err(KeyError::Unreadable {
                    kid: String::new(),
                    reason: format!("no current {} key", self.alg),
                });
            }
        };
        KeyRing::new(signing, published)
    }

    /// Promotes the next key of `alg` and creates a new next key (docs/CONFORMANCE.md,
    /// "Signing keys and rotation"). With `only_if_older_than`, rotates only if the current key
    /// has signed at least that long (automatic rotation); otherwise now, as long as the next
    /// key is ready.
    ///
    /// A next key this server could not load (in the clear with a KEK, sealed with another
    /// KEK, damaged) is not promoted: the rotation fails with its error and logs its kid, so
    /// the current key keeps signing. This is checked before the store's rotation, so a
    /// rotation by someone else in between is not covered; every server refuses such a key at
    /// its reload anyway ([`KeySource::load`]).
    pub async fn rotate(
        &self,
        store: &dyn Store,
        actor: &Actor,
        alg: SigningAlg,
        now: i64,
        only_if_older_than: Option<i64>,
    ) -> Result<RotationOutcome, KeyError> {
        let plan = RotationPlan {
            alg,
            now,
            next_created_by: now - JWKS_MAX_AGE_SECONDS - ROTATION_SKEW_SECONDS,
            only_if_current_activated_by: only_if_older_than.map(|age| now - age),
            new_next: self.new_stored_key(alg, KeyState::Next, now)?,
        };
        debug_assert_eq!(next_key_ready_at(plan.next_created_by), now);
        let keys = store.signing_keys().await?;
        let in_state = |state| keys.iter().find(|k| k.alg == alg && k.state == state);
        if let (Some(current), Some(next)) = (in_state(KeyState::Current), in_state(KeyState::Next))
        {
            // Only when the store would rotate now: the janitor asks on every pass.
            let due = plan
                .only_if_current_activated_by
                .is_none_or(|by| current.activated_at.unwrap_or(current.created_at) <= by);
            if due
                && next.created_at <= plan.next_created_by
                && let Err(err) = self.parse(next)
            {
                tracing::error!(kid = %next.kid, error = %err, "refused to rotate to a stored signing key this server cannot trust");
                return Err(err);
            }
        }
        let audit = AuditEntry {
            at: now,
            actor: actor.clone(),
            action: action::KEYS_ROTATE,
            target: None,
            changes: serde_json::json!({ "alg": alg }),
        };
        Ok(store.rotate_keys(&audit, &plan).await?)
    }
}

impl KeyRing {
    /// A ring of parsed keys: `signing` signs new tokens, and each key of `published` is
    /// published in the JWK Set, in this order, and verifies this server's tokens under its
    /// kid. [`KeySource::load`] builds every running server's ring with it, from the keys it
    /// trusts; the fuzz crate (`fuzz/fuzz_targets/introspection_token.rs`) with fixed keys.
    pub fn new(
        signing: Arc<SigningKey>,
        published: Vec<Arc<SigningKey>>,
    ) -> Result<KeyRing, KeyError> {
        let jwks = published
            .iter()
            .map(|key| key.public_jwk().clone())
            .collect();
        let jwks_json = serde_json::to_vec(&JwkSet { keys: jwks }).map_err(|_| KeyError::Crypto)?;
        let published = published
            .into_iter()
            .map(|key| (key.kid().to_owned(), key))
            .collect();
        Ok(KeyRing {
            signing,
            published,
            jwks_json: Bytes::from(jwks_json),
        })
    }

    /// The key new tokens are signed with. If the database's current key was refused at a
    /// reload, this is the previous one, withdrawn: it refuses to sign ([`KeySource::load`]).
    pub fn signing_key(&self) -> &Arc<SigningKey> {
        &self.signing
    }

    /// A published key (next, current or retired), by id.
    pub fn published_key(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.published.get(kid)
    }

    /// The published JWK Set, serialised once.
    pub fn jwks_json(&self) -> &Bytes {
        &self.jwks_json
    }
}

/// When a key reaches its next state: a next key may sign from then; a retired key is removed
/// then. `None` for a current or removed key.
pub fn next_step_at(key: &StoredKey) -> Option<i64> {
    match key.state {
        KeyState::Next => Some(next_key_ready_at(key.created_at)),
        KeyState::Retired => key.retired_at.map(|t| t + RETIRED_KEY_PUBLISHED_FOR),
        KeyState::Current | KeyState::Removed => None,
    }
}

/// The audit entry of a change to one signing key: its algorithm and state, never its key.
fn key_entry(actor: &Actor, action: &'static str, key: &StoredKey, now: i64) -> AuditEntry {
    AuditEntry {
        at: now,
        actor: actor.clone(),
        action,
        target: Some(key.kid.clone()),
        changes: serde_json::json!({ "alg": key.alg, "state": key.state.as_str() }),
    }
}

/// Verifying this server's own tokens (introspection, revocation).
impl PublishedKeys for KeyRing {
    fn verify(&self, kid: &str, alg: &str, message: &[u8], signature: &[u8]) -> bool {
        self.published_key(kid)
            .is_some_and(|key| key.alg().as_str() == alg && key.verify(message, signature))
    }
}
