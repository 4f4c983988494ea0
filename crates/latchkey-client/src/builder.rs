//! Configuring a [`ClientCredentials`]: where the server is, who the client is, what it asks
//! for. Everything is checked in `build`, before the first token is needed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use latchkey_common::RetryPolicy;
use latchkey_proto::ClientAuthMethod;
use url::Url;

use crate::cache::{ClientCredentials, Settings};
use crate::clock::{Clock, SystemClock};
use crate::discovery;
use crate::error::Error;
use crate::refresh::RefreshPolicy;
use crate::secret::ClientSecret;
use crate::store::{CacheKey, TokenStore};
use crate::token_request::{Credential, TokenRequest};
use latchkey_jose::PrivateKey;

/// Builds a [`ClientCredentials`]; start with [`ClientCredentials::builder`].
#[must_use]
pub struct Builder {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<ClientSecret>,
    auth_method: Option<ClientAuthMethod>,
    private_key: Option<Result<PrivateKey, String>>,
    assertion_audience: Option<String>,
    dpop: Option<Arc<PrivateKey>>,
    /// For mutual TLS: the client certificate and key (PEM), and its fingerprint.
    identity: Option<Result<(reqwest::Identity, String), String>>,
    scope: Vec<String>,
    audience: Vec<String>,
    refresh: RefreshPolicy,
    retry: RetryPolicy,
    store: Option<Arc<dyn TokenStore>>,
    http: Option<reqwest::Client>,
    clock: Arc<dyn Clock>,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            issuer: None,
            token_endpoint: None,
            client_id: None,
            client_secret: None,
            auth_method: None,
            private_key: None,
            assertion_audience: None,
            dpop: None,
            identity: None,
            scope: Vec::new(),
            audience: Vec::new(),
            refresh: RefreshPolicy::default(),
            retry: RetryPolicy::default(),
            store: None,
            http: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The issuer: `build` reads its metadata (RFC 8414, then OpenID Connect Discovery) for the
    /// token endpoint and checks the document names this exact issuer.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The token endpoint, when there is no discovery document to read it from.
    pub fn token_endpoint(mut self, url: impl Into<String>) -> Self {
        self.token_endpoint = Some(url.into());
        self
    }

    /// The client id.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The client secret; kept out of `Debug` output and logs.
    pub fn client_secret(mut self, secret: impl Into<ClientSecret>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// How the secret is sent: `client_secret_basic` (the default, RFC 6749 §2.3.1) or
    /// `client_secret_post`. For `private_key_jwt`, give the key with
    /// [`Builder::private_key`] instead.
    pub fn auth_method(mut self, method: ClientAuthMethod) -> Self {
        self.auth_method = Some(method);
        self
    }

    /// Authenticates with `private_key_jwt` (RFC 7523 §2.2) instead of a secret: each token
    /// request carries a fresh assertion signed with `key`, whose public key is registered
    /// for the client (`latchkey client create --auth-method private_key_jwt --jwks-file`).
    /// The key's `kid` is its RFC 7638 thumbprint unless set with [`PrivateKey::with_kid`].
    pub fn private_key(mut self, key: PrivateKey) -> Self {
        self.private_key = Some(Ok(key));
        self.auth_method = Some(ClientAuthMethod::PrivateKeyJwt);
        self
    }

    /// [`Builder::private_key`] from a PEM file as openssl writes it (PKCS#8, SEC1 or
    /// PKCS#1; EC P-256, Ed25519 or RSA). A key that does not parse fails `build`.
    pub fn private_key_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.private_key = Some(PrivateKey::from_pem(pem.as_ref()).map_err(|e| e.to_string()));
        self.auth_method = Some(ClientAuthMethod::PrivateKeyJwt);
        self
    }

    /// The audience of `private_key_jwt` assertions when the client is configured with a
    /// token endpoint and no issuer: the server's issuer identifier
    /// (draft-ietf-oauth-rfc7523bis §5 — never the token endpoint URL). With
    /// [`Builder::issuer`], the issuer is used and this need not be set.
    pub fn assertion_audience(mut self, issuer: impl Into<String>) -> Self {
        self.assertion_audience = Some(issuer.into());
        self
    }

    /// Authenticates with mutual TLS (RFC 8705 §2) instead of a secret: the HTTP client
    /// presents this certificate to the token endpoint, and the server binds every token to it
    /// (`cnf.x5t#S256`). `pem` holds the certificate (chain, leaf first) and its private key,
    /// PEM encoded. The method is `tls_client_auth` unless [`Builder::auth_method`] says
    /// `self_signed_tls_client_auth`. Resource servers check the binding, so call them with a
    /// reqwest client that presents the same certificate (`reqwest::Identity`). With
    /// [`Builder::http_client`], that client is used as it is and must present this same
    /// certificate; the PEM then only names it in the cache key.
    pub fn client_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject as _;
        let pem = pem.as_ref();
        let identity = CertificateDer::pem_slice_iter(pem)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| "the client certificate PEM holds no certificate".to_owned())
            .and_then(|leaf| {
                // A token is bound to the leaf certificate (RFC 8705 §3.1), so its thumbprint
                // keeps tokens of different certificates apart in a shared cache.
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
                let thumbprint = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    digest.as_ref(),
                );
                reqwest::Identity::from_pem(pem)
                    .map(|identity| (identity, thumbprint))
                    .map_err(|e| format!("the client certificate and key PEM: {e}"))
            });
        self.identity = Some(identity);
        self
    }

    /// Asks for DPoP-bound tokens (RFC 9449): token requests carry a proof made with `key`, and
    /// the server binds the token to it. The middleware and the tower layer then send the
    /// token with the DPoP scheme and a fresh proof per request; a stolen token is useless
    /// without the key. Use a key of its own for DPoP, not the private_key_jwt key.
    pub fn dpop(mut self, key: PrivateKey) -> Self {
        self.dpop = Some(Arc::new(key));
        self
    }

    /// Adds scope tokens; a string may hold several, separated by spaces. Without any, the
    /// server grants the client's default scope.
    pub fn scope(mut self, scope: impl AsRef<str>) -> Self {
        self.scope.extend(
            scope
                .as_ref()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        self
    }

    /// Adds an audience: the absolute URI of an API the token is for, sent as an RFC 8707
    /// `resource` parameter.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience.push(audience.into());
        self
    }

    /// When tokens are refreshed ahead of expiry; see [`RefreshPolicy`] for the defaults.
    pub fn refresh_policy(mut self, policy: RefreshPolicy) -> Self {
        self.refresh = policy;
        self
    }

    /// How failed requests are retried; see [`RetryPolicy`] for the defaults.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// A persistent cache shared with other processes and restarts
    /// ([`FileStore`](crate::FileStore), `RedisStore`, or your own [`TokenStore`]).
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The HTTP client for talking to the authorization server. By default a client of its own
    /// that follows no redirects (credentials are never re-sent elsewhere) and gives up
    /// connecting after 5 s.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The clock expiry is computed with (for tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the configuration, runs discovery when an issuer was given, and returns the
    /// client. No token is fetched yet.
    pub async fn build(self) -> Result<ClientCredentials, Error> {
        let client_id = self
            .client_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::Config("a client id is required".into()))?;
        if client_id.chars().any(char::is_control) {
            return Err(Error::Config(
                "the client id contains control characters".into(),
            ));
        }
        let key = match self.private_key {
            Some(Ok(key)) => Some(Arc::new(key)),
            Some(Err(reason)) => return Err(Error::Config(reason)),
            None => None,
        };
        let identity = self.identity.transpose().map_err(Error::Config)?;
        let auth_method = match (self.auth_method, &identity) {
            (Some(method), Some(_)) if !method.is_mutual_tls() => {
                return Err(Error::Config(format!(
                    "a client certificate is for tls_client_auth or \
                     self_signed_tls_client_auth, not {method}"
                )));
            }
            (Some(method), _) => method,
            (None, Some(_)) => ClientAuthMethod::TlsClientAuth,
            (None, None) => ClientAuthMethod::ClientSecretBasic,
        };
        let mutual_tls = auth_method.is_mutual_tls();
        if mutual_tls && identity.is_none() {
            return Err(Error::Config(
                "mutual TLS needs the client certificate: .client_certificate_pem(..)".into(),
            ));
        }
        if mutual_tls && (key.is_some() || self.client_secret.is_some()) {
            return Err(Error::Config(
                "mutual TLS authenticates with the certificate: give no secret or private key"
                    .into(),
            ));
        }
        let secret = match (&key, self.client_secret) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give a client secret or a private key, not both".into(),
                ));
            }
            (Some(_), None) => None,
            (None, None) if mutual_tls => None,
            (None, secret) => Some(
                secret
                    .filter(|s| !s.expose().is_empty())
                    .ok_or_else(|| Error::Config("a client secret is required".into()))?,
            ),
        };
        if key.is_none() && auth_method == ClientAuthMethod::PrivateKeyJwt {
            return Err(Error::Config(
                "private_key_jwt needs a private key: use .private_key(..) or .private_key_pem(..)"
                    .into(),
            ));
        }
        let mut scope = self.scope;
        for token in &scope {
            check_scope_token(token)?;
        }
        // One canonical order, so the same set of scopes is one cache entry.
        scope.sort();
        scope.dedup();
        let mut audience = self.audience;
        for uri in &audience {
            check_audience(uri)?;
        }
        audience.sort();
        audience.dedup();
        let fingerprint = identity.as_ref().map(|(_, f)| f.clone());
        let http = match self.http {
            Some(http) => http,
            None => default_http_client(identity.map(|(identity, _)| identity))?,
        };
        let mut issuer_id = self.assertion_audience;
        let token_endpoint = match (self.issuer, self.token_endpoint) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give either an issuer or a token endpoint, not both".into(),
                ));
            }
            (None, None) => {
                return Err(Error::Config(
                    "an issuer or a token endpoint is required".into(),
                ));
            }
            (None, Some(endpoint)) => endpoint_url("token endpoint", &endpoint)?,
            (Some(issuer), None) => {
                let metadata =
                    discovery::discover(&http, &issuer, &self.retry, self.clock.as_ref()).await?;
                discovery::check_offers(&metadata, auth_method)?;
                issuer_id.get_or_insert(metadata.issuer);
                endpoint_url("token endpoint", &metadata.token_endpoint)
                    .map_err(|e| Error::Discovery(e.to_string()))?
            }
        };
        let credential = match (key, secret) {
            (Some(key), _) => Credential::PrivateKey {
                key,
                audience: issuer_id.ok_or_else(|| {
                    Error::Config(
                        "private_key_jwt assertions are addressed to the issuer: configure \
                         .issuer(..), or .assertion_audience(..) next to .token_endpoint(..)"
                            .into(),
                    )
                })?,
            },
            (None, Some(secret)) => Credential::Secret(secret, auth_method),
            (None, None) if mutual_tls => Credential::Certificate {
                method: auth_method,
                fingerprint: fingerprint.unwrap_or_default(),
            },
            (None, None) => return Err(Error::Config("a client secret is required".into())),
        };
        // A DPoP token is only good with its key, so the key is part of the cache key.
        let mut fingerprint = credential.fingerprint();
        if let Some(dpop) = &self.dpop {
            fingerprint.push_str(" dpop ");
            fingerprint.push_str(dpop.kid());
        }
        let key = CacheKey::new(
            token_endpoint.as_str(),
            &client_id,
            &fingerprint,
            credential.method(),
            &scope,
            &audience,
        );
        let request = TokenRequest::new(
            token_endpoint,
            &credential,
            &client_id,
            &scope,
            &audience,
            self.dpop.clone(),
        )?;
        Ok(ClientCredentials::new(Settings {
            client_id,
            scope,
            audience,
            request,
            http,
            clock: self.clock,
            refresh: self.refresh,
            retry: self.retry,
            store: self.store,
            key,
            dpop: self.dpop,
        }))
    }
}

fn default_http_client(identity: Option<reqwest::Identity>) -> Result<reqwest::Client, Error> {
    let builder = match identity {
        Some(identity) => reqwest::Client::builder().identity(identity),
        None => reqwest::Client::builder(),
    };
    builder
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("latchkey-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))
}

/// An issuer or endpoint URL: `https`, or `http` only on a loopback address, so credentials
/// never cross a network in the clear (RFC 6749 §2.3.1 requires TLS); no fragment.
pub(crate) fn endpoint_url(what: &str, value: &str) -> Result<Url, Error> {
    let url = Url::parse(value).map_err(|e| Error::Config(format!("the {what} {value:?}: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(Error::Config(format!(
                "the {what} {value:?} must use https (plain http only on loopback)"
            )));
        }
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(format!(
            "the {what} {value:?} may not have a fragment or user information"
        )));
    }
    Ok(url)
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn check_scope_token(token: &str) -> Result<(), Error> {
    let valid = |b: u8| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b);
    if token.bytes().all(valid) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{token:?} is not a valid scope token (RFC 6749 §3.3)"
        )))
    }
}

/// RFC 8707 §2: an absolute URI without a fragment.
fn check_audience(uri: &str) -> Result<(), Error> {
    match Url::parse(uri) {
        Ok(url) if url.fragment().is_none() && !uri.contains(' ') => Ok(()),
        _ => Err(Error::Config(format!(
            "the audience {uri:?} must be an absolute URI without a fragment (RFC 8707 §2)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in [
            "https://as.example",
            "http://127.0.0.1:8080",
            "http://[::1]/x",
            "http://localhost:1",
        ] {
            assert!(endpoint_url("issuer", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://as.example",
            "ftp://as.example",
            "https://as.example/#f",
            "https://u:p@as.example",
            "as.example",
        ] {
            assert!(endpoint_url("issuer", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_tokens_follow_rfc6749() {
        assert!(check_scope_token("invoices:read").is_ok());
        assert!(check_scope_token("a\"b").is_err());
        assert!(check_scope_token("a\\b").is_err());
        assert!(check_scope_token("é").is_err());
    }
}
