//! `latchkey client ...`: register and manage clients.

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use latchkey_proto::{ClientAuthMethod, GrantType};
use latchkey_server::http::admin::wire;
use latchkey_server::model::{ClientRecord, ClientUpdate, Credential, Federation};
use latchkey_server::service::admin::{self, Applied, ClientKeys, NewClient};
use latchkey_server::service::admin_auth;
use latchkey_server::store;
use latchkey_server::{Clock, SystemClock};
use serde_json::{Value, json};

use crate::cli::{ClientCommand, GlobalArgs, SecretCommand};
use crate::output::{Output, Row};

pub async fn run(global: &GlobalArgs, command: ClientCommand) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let store = store::connect(&global.database)
        .await
        .context("opening the database")?;
    let store = store.as_ref();
    let clock: &dyn Clock = &SystemClock;
    match command {
        ClientCommand::Create(args) => {
            let grant_types = args
                .grant_types
                .split(' ')
                .filter(|g| !g.is_empty())
                .map(|g| {
                    g.parse::<GrantType>()
                        .map_err(|e| anyhow::anyhow!("--grant-types: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut scope = args.scope.clone();
            let mut audience = args.audience.clone();
            let admin_scope = if args.admin {
                Some(admin_auth::ADMIN_SCOPE)
            } else if args.admin_read {
                Some(admin_auth::ADMIN_READ_SCOPE)
            } else {
                None
            };
            if let Some(admin_scope) = admin_scope {
                scope = format!("{scope} {admin_scope}");
                audience.push(admin_auth::ADMIN_AUDIENCE.to_owned());
            }
            let new = NewClient {
                name: args.name,
                scope: admin::parse_scope_list(&scope)?,
                audience,
                token_ttl_seconds: args.token_ttl,
                auth_method: args.auth_method,
                grant_types,
                can_introspect: args.can_introspect,
                token_format: args.token_format,
            };
            let jwks = args.jwks_file.as_deref().map(read_jwks).transpose()?;
            let certificates = read_certificates(args.tls.certificate_file.as_deref())?;
            let keys = match (&args.federated_issuer, &args.federated_subject) {
                (Some(issuer), Some(subject)) => Some(ClientKeys::Federated {
                    issuer,
                    subject,
                    audience: args.federated_audience.as_deref(),
                    max_token_age: args.federated_max_token_age,
                    allow_private: args.allow_private_jwks_uri,
                }),
                _ => client_keys(
                    jwks.as_deref(),
                    args.jwks_uri.as_deref(),
                    args.allow_private_jwks_uri,
                    certificates.as_deref(),
                    args.tls.subject(),
                ),
            };
            let (client, secret) = match (new.auth_method, keys) {
                (method, Some(keys)) if !method.uses_secret() => {
                    let client = confirmed(
                        admin::create_key_client(store, clock, &crate::cli_actor(), new, keys)
                            .await?,
                    );
                    (client, None)
                }
                (ClientAuthMethod::PrivateKeyJwt, None) => anyhow::bail!(
                    "a private_key_jwt client needs its public keys (--jwks-file keys.json or \
                     --jwks-uri https://...) or a trusted issuer (--federated-issuer URL \
                     --federated-subject SUB)"
                ),
                (ClientAuthMethod::TlsClientAuth, None) => anyhow::bail!(
                    "a tls_client_auth client needs the subject its certificate carries \
                     (--tls-subject-dn DN, --tls-san-dns NAME, --tls-san-uri URI, --tls-san-ip IP \
                     or --tls-san-email EMAIL)"
                ),
                (ClientAuthMethod::SelfSignedTlsClientAuth, None) => anyhow::bail!(
                    "a self_signed_tls_client_auth client needs its certificate \
                     (--certificate-file cert.pem) or a JWK Set whose keys carry it in x5c \
                     (--jwks-file)"
                ),
                (_, Some(_)) => anyhow::bail!(
                    "keys, certificates and subjects are for private_key_jwt, tls_client_auth \
                     and self_signed_tls_client_auth clients; other methods use a generated \
                     secret"
                ),
                (_, None) => {
                    let (client, secret) = confirmed(
                        admin::create_client(store, clock, &crate::cli_actor(), new).await?,
                    );
                    (client, Some(secret))
                }
            };
            if client.audience.is_empty() && !client.grant_types.is_empty() {
                eprintln!(
                    "warning: the client has no --audience, so it must send a `resource` with every \
                     token request (access tokens always carry an audience)"
                );
            }
            let mut value = client_json(&client);
            if let Some(secret) = &secret {
                value["client_secret"] = json!(secret.expose());
            }
            let secret_text = secret.as_ref().map(|s| s.expose());
            out.record(&value, &client_row(&client, secret_text));
            if secret.is_some() && out.is_table() {
                eprintln!("Store the client_secret now: it is not shown again.");
            }
        }
        ClientCommand::Import {
            file,
            from_line,
            allow_private_jwks_uri,
        } => {
            crate::import_cmd::import(store, clock, &file, from_line, allow_private_jwks_uri)
                .await?;
        }
        ClientCommand::Export => crate::import_cmd::export(store).await?,
        ClientCommand::List => {
            let clients = store.list_clients().await?;
            let values: Vec<Value> = clients.iter().map(client_json).collect();
            let rows: Vec<Vec<String>> = clients
                .iter()
                .map(|c| {
                    vec![
                        c.client_id.clone(),
                        c.name.clone(),
                        c.scope.join(" "),
                        c.audience.join(" "),
                        format!("{}s", c.token_ttl_seconds),
                        c.auth_method().to_string(),
                        c.enabled.to_string(),
                        timestamp(c.created_at),
                    ]
                })
                .collect();
            out.list(
                &Value::Array(values),
                &[
                    "CLIENT_ID",
                    "NAME",
                    "SCOPE",
                    "AUDIENCE",
                    "TTL",
                    "AUTH_METHOD",
                    "ENABLED",
                    "CREATED_AT",
                ],
                &rows,
            );
        }
        ClientCommand::Show { id } => {
            let client = admin::show_client(store, &id).await?;
            out.record(&client_json(&client), &client_row(&client, None));
        }
        ClientCommand::Update(args) => {
            let update = ClientUpdate {
                name: args.name,
                scope: args
                    .scope
                    .as_deref()
                    .map(admin::parse_scope_list)
                    .transpose()?,
                audience: args.audience,
                token_ttl_seconds: args.token_ttl,
                can_introspect: args.can_introspect,
                token_format: args.token_format,
                ..ClientUpdate::default()
            };
            let jwks = args.jwks_file.as_deref().map(read_jwks).transpose()?;
            let certificates = read_certificates(args.tls.certificate_file.as_deref())?;
            let keys = client_keys(
                jwks.as_deref(),
                args.jwks_uri.as_deref(),
                args.allow_private_jwks_uri,
                certificates.as_deref(),
                args.tls.subject(),
            );
            let mut client = confirmed(
                admin::update_client(store, clock, &crate::cli_actor(), &args.id, update).await?,
            );
            if let Some(keys) = keys {
                client = confirmed(
                    admin::replace_client_keys(store, clock, &crate::cli_actor(), &args.id, keys)
                        .await?,
                );
            }
            out.record(&client_json(&client), &client_row(&client, None));
        }
        ClientCommand::Disable { id } => set_enabled(store, clock, &out, &id, false).await?,
        ClientCommand::Enable { id } => set_enabled(store, clock, &out, &id, true).await?,
        ClientCommand::Delete { id } => {
            confirmed(admin::delete_client(store, clock, &crate::cli_actor(), &id).await?);
            out.record(
                &json!({ "client_id": id, "deleted": true }),
                &[("client_id", id.clone()), ("deleted", "true".into())],
            );
        }
        ClientCommand::RevokeTokens { id } => {
            let client =
                confirmed(admin::revoke_tokens(store, clock, &crate::cli_actor(), &id).await?);
            let value = json!({ "client_id": client.client_id, "tokens_revoked": true });
            out.record(
                &value,
                &[
                    ("client_id", client.client_id.clone()),
                    ("tokens_revoked", "true".into()),
                ],
            );
        }
        ClientCommand::Secret(command) => secret(store, clock, &out, command).await?,
    }
    Ok(())
}

async fn secret(
    store: &dyn store::Store,
    clock: &dyn Clock,
    out: &Output,
    command: SecretCommand,
) -> anyhow::Result<()> {
    match command {
        SecretCommand::Add { id, expires_in } => {
            let (secret_id, secret) = confirmed(
                admin::add_secret(store, clock, &crate::cli_actor(), &id, expires_in).await?,
            );
            let expires_at = expires_in.map(|s| timestamp(clock.unix_seconds() + s));
            print_new_secret(out, &id, &secret_id, secret.expose(), expires_at);
        }
        SecretCommand::Rotate { id, overlap } => {
            let (secret_id, secret) = confirmed(
                admin::rotate_secret(store, clock, &crate::cli_actor(), &id, overlap).await?,
            );
            print_new_secret(out, &id, &secret_id, secret.expose(), None);
            eprintln!(
                "The client's other secrets stop working at {}.",
                timestamp(clock.unix_seconds() + overlap)
            );
        }
        SecretCommand::List { id } => {
            let secrets = admin::list_secrets(store, &id).await?;
            let optional = |t: Option<i64>| t.map(timestamp);
            let values: Vec<Value> = secrets
                .iter()
                .map(|s| {
                    json!({
                        "secret_id": s.secret_id,
                        "created_at": timestamp(s.created_at),
                        "expires_at": optional(s.expires_at),
                        "last_used_at": optional(s.last_used_at),
                    })
                })
                .collect();
            let dash = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), timestamp);
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|s| {
                    vec![
                        s.secret_id.clone(),
                        timestamp(s.created_at),
                        dash(s.expires_at),
                        dash(s.last_used_at),
                    ]
                })
                .collect();
            out.list(
                &Value::Array(values),
                &["SECRET_ID", "CREATED_AT", "EXPIRES_AT", "LAST_USED_AT"],
                &rows,
            );
        }
        SecretCommand::Revoke { id, secret_id } => {
            confirmed(
                admin::revoke_secret(store, clock, &crate::cli_actor(), &id, &secret_id).await?,
            );
            out.record(
                &json!({ "client_id": id, "secret_id": secret_id, "revoked": true }),
                &[
                    ("client_id", id.clone()),
                    ("secret_id", secret_id.clone()),
                    ("revoked", "true".into()),
                ],
            );
        }
    }
    Ok(())
}

fn print_new_secret(
    out: &Output,
    client_id: &str,
    secret_id: &str,
    secret: &str,
    expires_at: Option<String>,
) {
    let value = json!({
        "client_id": client_id,
        "secret_id": secret_id,
        "client_secret": secret,
        "expires_at": expires_at,
    });
    out.record(
        &value,
        &[
            ("client_id", client_id.to_owned()),
            ("secret_id", secret_id.to_owned()),
            ("client_secret", secret.to_owned()),
            ("expires_at", expires_at.unwrap_or_else(|| "-".into())),
        ],
    );
    if out.is_table() {
        eprintln!("Store the client_secret now: it is not shown again.");
    }
}

/// Returns once every running server has dropped its cached copy of the client, so a
/// disabled client fails authentication on its very next request.
async fn set_enabled(
    store: &dyn store::Store,
    clock: &dyn Clock,
    out: &Output,
    id: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    let update = ClientUpdate {
        enabled: Some(enabled),
        ..ClientUpdate::default()
    };
    let client =
        confirmed(admin::update_client(store, clock, &crate::cli_actor(), id, update).await?);
    out.record(&client_json(&client), &client_row(&client, None));
    Ok(())
}

/// Warns about running servers that did not confirm a change in time.
pub fn confirmed<T>(change: Applied<T>) -> T {
    for server in &change.unconfirmed_servers {
        eprintln!(
            "warning: server {server} did not confirm the change within {} s; it may have stopped \
             uncleanly, or it may use the old client record until it next reaches the database",
            admin::PROPAGATION_TIMEOUT.as_secs()
        );
    }
    change.value
}

/// What `--jwks-file` (already read), `--jwks-uri`, `--certificate-file` (already read) or a
/// `--tls-*` subject say authenticates a client.
fn client_keys<'a>(
    jwks: Option<&'a str>,
    uri: Option<&'a str>,
    allow_private: bool,
    certificates: Option<&'a [Vec<u8>]>,
    subject: Option<(&'a str, &'a str)>,
) -> Option<ClientKeys<'a>> {
    if let Some(certificates) = certificates {
        return Some(ClientKeys::Certificates(certificates));
    }
    if let Some((kind, value)) = subject {
        return Some(ClientKeys::TlsSubject { kind, value });
    }
    match (jwks, uri) {
        (Some(jwks), _) => Some(ClientKeys::Jwks(jwks)),
        (None, Some(uri)) => Some(ClientKeys::JwksUri { uri, allow_private }),
        (None, None) => None,
    }
}

/// The certificates (DER) of a `--certificate-file`, if one was given.
fn read_certificates(path: Option<&Path>) -> anyhow::Result<Option<Vec<Vec<u8>>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the certificate file {}", path.display()))?;
    let certificates =
        admin::certificates_from_pem(&pem).with_context(|| path.display().to_string())?;
    Ok(Some(certificates))
}

/// A JWK Set document from a file, or stdin for `-`.
fn read_jwks(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(admin::MAX_JWKS_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .context("reading the JWK Set from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(admin::MAX_JWKS_BYTES as u64 + 1)
                    .read_to_string(&mut text)
            })
            .with_context(|| format!("reading the JWK Set {}", path.display()))?;
    }
    Ok(text)
}

/// A client as JSON: the admin API's representation, field for field.
pub fn client_json(client: &ClientRecord) -> Value {
    serde_json::to_value(wire::Client::from(client)).unwrap_or(Value::Null)
}

/// The registered public keys of a private_key_jwt client, as stored.
fn public_keys(client: &ClientRecord) -> Option<Value> {
    serde_json::from_str(client.credential.registered_jwks()?).ok()
}

fn client_row(client: &ClientRecord, secret: Option<&str>) -> Vec<Row> {
    let mut rows: Vec<Row> = vec![("client_id", client.client_id.clone())];
    if let Some(secret) = secret {
        rows.push(("client_secret", secret.to_owned()));
    }
    rows.extend([
        ("name", client.name.clone()),
        ("scope", client.scope.join(" ")),
        ("audience", client.audience.join(" ")),
        ("token_ttl_seconds", client.token_ttl_seconds.to_string()),
        ("auth_method", client.auth_method().to_string()),
        (
            "grant_types",
            client
                .grant_types
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ("enabled", client.enabled.to_string()),
        ("can_introspect", client.can_introspect.to_string()),
        ("token_format", client.token_format.to_string()),
        ("created_at", timestamp(client.created_at)),
        ("updated_at", timestamp(client.updated_at)),
    ]);
    if let Some(keys) = public_keys(client) {
        let kids: Vec<&str> = keys["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        rows.push(("key_ids", kids.join(" ")));
    }
    if let Some(uri) = client.credential.jwks_uri() {
        rows.push(("jwks_uri", uri.to_owned()));
    }
    if let Credential::TlsSubject(subject) = &client.credential {
        rows.push((subject.kind(), subject.value()));
    }
    if let Some(federation) = client.credential.federation() {
        rows.push(("federated_issuer", federation.issuer.clone()));
        rows.push(("federated_subject", federation.subject.clone()));
        if let Some(audience) = &federation.audience {
            rows.push(("federated_audience", audience.clone()));
        }
        rows.push((
            "federated_max_token_age",
            format!("{} s", federated_max_token_age(federation)),
        ));
    }
    rows
}

/// The token age limit a federated client has, its own or the default.
fn federated_max_token_age(federation: &Federation) -> i64 {
    federation
        .max_token_age
        .unwrap_or(latchkey_server::protocol::client_assertion::DEFAULT_FEDERATED_MAX_TOKEN_AGE)
}

pub use latchkey_server::http::admin::wire::timestamp;
