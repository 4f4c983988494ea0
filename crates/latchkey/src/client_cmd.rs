//! `latchkey client ...`: register and manage clients, on the database or, with `--server`,
//! through a server's admin API. Both ways produce the admin API's JSON (`wire`), and one set
//! of functions prints it, so the output is the same whichever way a command went.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use latchkey_proto::{ClientAuthMethod, GrantType};
use latchkey_server::http::admin::wire;
use latchkey_server::model::{ClientRecord, ClientUpdate};
use latchkey_server::service::admin::{self, Applied, ClientKeys, NewClient};
use latchkey_server::service::admin_auth;
use latchkey_server::store::Store;
use latchkey_server::{Clock, SystemClock};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{ClientCommand, CreateArgs, GlobalArgs, SecretCommand, TlsClientArgs, UpdateArgs};
use crate::output::{Output, Row};
use crate::remote::{Remote, Target, encode};

/// How many clients one page of `client list` and `client export` reads.
pub const PAGE: u32 = 1000;

pub async fn run(global: &GlobalArgs, command: ClientCommand) -> anyhow::Result<()> {
    let out = Output::new(global.output);
    let target = Target::open(global).await?;
    let clock: &dyn Clock = &SystemClock;
    match command {
        ClientCommand::Create(args) => {
            let (client, secret) = match &target {
                Target::Database(store) => create_in_database(store.as_ref(), clock, args).await?,
                Target::Server(remote) => create_on_server(remote, args).await?,
            };
            if client.audience.is_empty() && !client.grant_types.is_empty() {
                eprintln!(
                    "warning: the client has no --audience, so it must send a `resource` with every \
                     token request (access tokens always carry an audience)"
                );
            }
            let mut value = client_value(&client);
            if let Some(secret) = &secret {
                value["client_secret"] = json!(secret);
            }
            out.record(&value, &client_row(&client, secret.as_deref()));
            if secret.is_some() && out.is_table() {
                eprintln!("Store the client_secret now: it is not shown again.");
            }
        }
        ClientCommand::Import {
            file,
            from_line,
            allow_private_jwks_uri,
        } => {
            let Target::Database(store) = &target else {
                bail!(
                    "client import writes to the database (--database): the admin API has no \
                     bulk import"
                );
            };
            crate::import_cmd::import(
                store.as_ref(),
                clock,
                &file,
                from_line,
                allow_private_jwks_uri,
            )
            .await?;
        }
        ClientCommand::Export => {
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            for_each_page(&target, |page| {
                for client in page {
                    std::io::Write::write_fmt(
                        &mut stdout,
                        format_args!("{}\n", client_value(client)),
                    )?;
                }
                Ok(())
            })
            .await?;
            std::io::Write::flush(&mut stdout)?;
        }
        ClientCommand::List => {
            let mut clients = Vec::new();
            for_each_page(&target, |page| {
                clients.extend_from_slice(page);
                Ok(())
            })
            .await?;
            print_list(&out, &clients);
        }
        ClientCommand::Show { id } => {
            let client = match &target {
                Target::Database(store) => {
                    wire::Client::from(&admin::show_client(store.as_ref(), &id).await?)
                }
                Target::Server(remote) => {
                    remote
                        .json(Method::GET, &format!("/clients/{}", encode(&id)), None)
                        .await?
                }
            };
            out.record(&client_value(&client), &client_row(&client, None));
        }
        ClientCommand::Update(args) => {
            let client = match &target {
                Target::Database(store) => update_in_database(store.as_ref(), clock, args).await?,
                Target::Server(remote) => update_on_server(remote, args).await?,
            };
            out.record(&client_value(&client), &client_row(&client, None));
        }
        ClientCommand::Disable { id } => set_enabled(&target, clock, &out, &id, false).await?,
        ClientCommand::Enable { id } => set_enabled(&target, clock, &out, &id, true).await?,
        ClientCommand::Delete { id } => {
            match &target {
                Target::Database(store) => {
                    confirmed(
                        admin::delete_client(store.as_ref(), clock, &crate::cli_actor(), &id, None)
                            .await?,
                    );
                }
                Target::Server(remote) => {
                    remote
                        .call(Method::DELETE, &format!("/clients/{}", encode(&id)), None)
                        .await?;
                }
            }
            out.record(
                &json!({ "client_id": id, "deleted": true }),
                &[("client_id", id.clone()), ("deleted", "true".into())],
            );
        }
        ClientCommand::RevokeTokens { id } => {
            match &target {
                Target::Database(store) => {
                    confirmed(
                        admin::revoke_tokens(store.as_ref(), clock, &crate::cli_actor(), &id)
                            .await?,
                    );
                }
                Target::Server(remote) => {
                    let path = format!("/clients/{}/revoke-tokens", encode(&id));
                    remote.call(Method::POST, &path, None).await?;
                }
            }
            let value = json!({ "client_id": id, "tokens_revoked": true });
            out.record(
                &value,
                &[("client_id", id.clone()), ("tokens_revoked", "true".into())],
            );
        }
        ClientCommand::Secret(command) => secret(&target, clock, &out, command).await?,
    }
    Ok(())
}

/// Calls `each` with every client, a page at a time, by id.
async fn for_each_page(
    target: &Target,
    mut each: impl FnMut(&[wire::Client]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut after = String::new();
    loop {
        let (page, next) = match target {
            Target::Database(store) => {
                let records = store.clients_after(&after, PAGE).await?;
                let next = (records.len() == PAGE as usize)
                    .then(|| records.last().map(|c| c.client_id.clone()))
                    .flatten();
                (records.iter().map(wire::Client::from).collect(), next)
            }
            Target::Server(remote) => {
                let mut path = format!("/clients?limit={PAGE}");
                if !after.is_empty() {
                    path.push_str(&format!("&after={}", encode(&after)));
                }
                let page: wire::ClientPage = remote.json(Method::GET, &path, None).await?;
                (page.items, page.next)
            }
        };
        each(&page)?;
        match next {
            Some(next) => after = next,
            None => return Ok(()),
        }
    }
}

fn print_list(out: &Output, clients: &[wire::Client]) {
    let values: Vec<Value> = clients.iter().map(client_value).collect();
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            vec![
                c.client_id.clone(),
                c.name.clone(),
                c.scope.clone(),
                c.audience.join(" "),
                format!("{}s", c.token_ttl_seconds),
                c.auth_method.clone(),
                c.enabled.to_string(),
                c.created_at.clone(),
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

/// The scope and audience of a new client: an admin client's are added to those given.
fn scope_and_audience(args: &CreateArgs) -> (String, Vec<String>) {
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
    (scope.trim().to_owned(), audience)
}

async fn create_in_database(
    store: &dyn Store,
    clock: &dyn Clock,
    args: CreateArgs,
) -> anyhow::Result<(wire::Client, Option<String>)> {
    let grant_types = args
        .grant_types
        .split(' ')
        .filter(|g| !g.is_empty())
        .map(|g| {
            g.parse::<GrantType>()
                .map_err(|e| anyhow::anyhow!("--grant-types: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (scope, audience) = scope_and_audience(&args);
    let new = NewClient {
        name: args.name,
        scope: admin::parse_scope_list(&scope)?,
        audience,
        token_ttl_seconds: args.token_ttl,
        auth_method: args.auth_method,
        grant_types,
        can_introspect: args.can_introspect,
        token_format: args.token_format,
        reuse_tokens: args.reuse_tokens,
        limits: latchkey_server::model::TokenLimits {
            rate: args.token_rate,
            quota: args.token_quota,
            mode: args.quota_mode,
        },
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
    check_keys_for(new.auth_method, keys.is_some())?;
    let actor = crate::cli_actor();
    let (client, secret): (ClientRecord, Option<String>) = match keys {
        Some(keys) => (
            confirmed(admin::create_key_client(store, clock, &actor, new, keys).await?),
            None,
        ),
        None => {
            let (client, secret) =
                confirmed(admin::create_client(store, clock, &actor, new).await?);
            (client, Some(secret.expose().to_owned()))
        }
    };
    Ok((wire::Client::from(&client), secret))
}

/// A client of `method` registers keys (or a certificate, a subject, an issuer) exactly when it
/// does not use a secret: say which flag it needs otherwise.
fn check_keys_for(method: ClientAuthMethod, has_keys: bool) -> anyhow::Result<()> {
    match (method, has_keys) {
        (ClientAuthMethod::PrivateKeyJwt, false) => bail!(
            "a private_key_jwt client needs its public keys (--jwks-file keys.json or \
             --jwks-uri https://...) or a trusted issuer (--federated-issuer URL \
             --federated-subject SUB)"
        ),
        (ClientAuthMethod::TlsClientAuth, false) => bail!(
            "a tls_client_auth client needs the subject its certificate carries \
             (--tls-subject-dn DN, --tls-san-dns NAME, --tls-san-uri URI, --tls-san-ip IP \
             or --tls-san-email EMAIL)"
        ),
        (ClientAuthMethod::SelfSignedTlsClientAuth, false) => bail!(
            "a self_signed_tls_client_auth client needs its certificate \
             (--certificate-file cert.pem) or a JWK Set whose keys carry it in x5c \
             (--jwks-file)"
        ),
        (method, true) if method.uses_secret() => bail!(
            "keys, certificates and subjects are for private_key_jwt, tls_client_auth \
             and self_signed_tls_client_auth clients; other methods use a generated \
             secret"
        ),
        _ => Ok(()),
    }
}

/// With `--server`, the server's own `--allow-private-jwks-uri` decides.
fn refuse_local_allow_private(allow_private: bool) -> anyhow::Result<()> {
    if allow_private {
        bail!(
            "--allow-private-jwks-uri is the server's setting with --server: start the server \
             with --allow-private-jwks-uri instead"
        );
    }
    Ok(())
}

async fn create_on_server(
    remote: &Remote,
    args: CreateArgs,
) -> anyhow::Result<(wire::Client, Option<String>)> {
    refuse_local_allow_private(args.allow_private_jwks_uri)?;
    let has_keys = args.jwks_file.is_some()
        || args.jwks_uri.is_some()
        || args.federated_issuer.is_some()
        || args.tls.certificate_file.is_some()
        || args.tls.subject().is_some();
    check_keys_for(args.auth_method, has_keys)?;
    let (scope, audience) = scope_and_audience(&args);
    let mut body = json!({
        "name": args.name,
        "scope": scope,
        "audience": audience,
        "token_ttl_seconds": args.token_ttl,
        "auth_method": args.auth_method.as_str(),
        "grant_types": args.grant_types,
        "can_introspect": args.can_introspect,
        "token_format": args.token_format.as_str(),
        "reuse_tokens": args.reuse_tokens,
        "token_rate": args.token_rate.map(|rate| rate.to_string()),
        "token_quota": args.token_quota.map(|rate| rate.to_string()),
        "quota_mode": args.quota_mode.as_str(),
    });
    add_key_members(
        &mut body,
        args.jwks_file.as_deref(),
        args.jwks_uri.as_deref(),
        &args.tls,
    )?;
    if let Some(issuer) = &args.federated_issuer {
        body["federated_issuer"] = json!(issuer);
        body["federated_subject"] = json!(args.federated_subject);
        if let Some(audience) = &args.federated_audience {
            body["federated_audience"] = json!(audience);
        }
        if let Some(age) = args.federated_max_token_age {
            body["federated_max_token_age_seconds"] = json!(age);
        }
    }
    let created: wire::CreatedClient = remote.json(Method::POST, "/clients", Some(&body)).await?;
    Ok((created.client, created.client_secret))
}

/// Adds the admin API's key members for `--jwks-file`, `--jwks-uri`, `--certificate-file` and
/// the `--tls-*` subject flags to `body`.
fn add_key_members(
    body: &mut Value,
    jwks_file: Option<&Path>,
    jwks_uri: Option<&str>,
    tls: &TlsClientArgs,
) -> anyhow::Result<()> {
    if let Some(path) = jwks_file {
        let text = read_jwks(path)?;
        body["jwks"] = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON JWK Set", path.display()))?;
    }
    if let Some(uri) = jwks_uri {
        body["jwks_uri"] = json!(uri);
    }
    if let Some(path) = &tls.certificate_file {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the certificate file {}", path.display()))?;
        body["certificates_pem"] = json!(pem);
    }
    if let Some((kind, value)) = tls.subject() {
        body[kind] = json!(value);
    }
    Ok(())
}

/// The settings `client update` changes, if it changes any.
fn settings_update(args: &UpdateArgs) -> anyhow::Result<Option<ClientUpdate>> {
    let update = ClientUpdate {
        name: args.name.clone(),
        scope: args
            .scope
            .as_deref()
            .map(admin::parse_scope_list)
            .transpose()?,
        audience: args.audience.clone(),
        token_ttl_seconds: args.token_ttl,
        can_introspect: args.can_introspect,
        token_format: args.token_format,
        reuse_tokens: args.reuse_tokens,
        token_rate: args.token_rate.map(|limit| limit.0),
        token_quota: args.token_quota.map(|limit| limit.0),
        quota_mode: args.quota_mode,
        ..ClientUpdate::default()
    };
    let changes = update.name.is_some()
        || update.scope.is_some()
        || update.audience.is_some()
        || update.token_ttl_seconds.is_some()
        || update.can_introspect.is_some()
        || update.token_format.is_some()
        || update.reuse_tokens.is_some()
        || update.token_rate.is_some()
        || update.token_quota.is_some()
        || update.quota_mode.is_some();
    Ok(changes.then_some(update))
}

fn has_new_keys(args: &UpdateArgs) -> bool {
    args.jwks_file.is_some()
        || args.jwks_uri.is_some()
        || args.tls.certificate_file.is_some()
        || args.tls.subject().is_some()
}

async fn update_in_database(
    store: &dyn Store,
    clock: &dyn Clock,
    args: UpdateArgs,
) -> anyhow::Result<wire::Client> {
    let actor = crate::cli_actor();
    let jwks = args.jwks_file.as_deref().map(read_jwks).transpose()?;
    let certificates = read_certificates(args.tls.certificate_file.as_deref())?;
    let keys = client_keys(
        jwks.as_deref(),
        args.jwks_uri.as_deref(),
        args.allow_private_jwks_uri,
        certificates.as_deref(),
        args.tls.subject(),
    );
    // Settings and keys in one change (one audit event); nothing to change changes nothing.
    let before = admin::show_client(store, &args.id).await?;
    let update = settings_update(&args)?.unwrap_or_default();
    let client =
        confirmed(admin::replace_client(store, clock, &actor, &before, update, keys).await?);
    Ok(wire::Client::from(&client))
}

async fn update_on_server(remote: &Remote, args: UpdateArgs) -> anyhow::Result<wire::Client> {
    refuse_local_allow_private(args.allow_private_jwks_uri)?;
    let path = format!("/clients/{}", encode(&args.id));
    let mut client = None;
    if let Some(update) = settings_update(&args)? {
        let mut patch = json!({});
        if let Some(name) = &update.name {
            patch["name"] = json!(name);
        }
        if let Some(scope) = &update.scope {
            patch["scope"] = json!(scope.join(" "));
        }
        if let Some(audience) = &update.audience {
            patch["audience"] = json!(audience);
        }
        if let Some(ttl) = update.token_ttl_seconds {
            patch["token_ttl_seconds"] = json!(ttl);
        }
        if let Some(can_introspect) = update.can_introspect {
            patch["can_introspect"] = json!(can_introspect);
        }
        if let Some(format) = update.token_format {
            patch["token_format"] = json!(format.as_str());
        }
        if let Some(reuse) = update.reuse_tokens {
            patch["reuse_tokens"] = json!(reuse);
        }
        let limit = |rate: Option<latchkey_server::model::Rate>| {
            rate.map_or_else(|| "off".to_owned(), |rate| rate.to_string())
        };
        if let Some(rate) = update.token_rate {
            patch["token_rate"] = json!(limit(rate));
        }
        if let Some(quota) = update.token_quota {
            patch["token_quota"] = json!(limit(quota));
        }
        if let Some(mode) = update.quota_mode {
            patch["quota_mode"] = json!(mode.as_str());
        }
        client = Some(remote.json(Method::PATCH, &path, Some(&patch)).await?);
    }
    if has_new_keys(&args) {
        let mut body = json!({});
        add_key_members(
            &mut body,
            args.jwks_file.as_deref(),
            args.jwks_uri.as_deref(),
            &args.tls,
        )?;
        client = Some(
            remote
                .json(Method::PUT, &format!("{path}/keys"), Some(&body))
                .await?,
        );
    }
    match client {
        Some(client) => Ok(client),
        None => remote.json(Method::GET, &path, None).await,
    }
}

async fn secret(
    target: &Target,
    clock: &dyn Clock,
    out: &Output,
    command: SecretCommand,
) -> anyhow::Result<()> {
    let actor = crate::cli_actor();
    match command {
        SecretCommand::Add { id, expires_in } => {
            // The time the service reads too (not after waiting for the servers).
            let now = clock.unix_seconds();
            let secret = match target {
                Target::Database(store) => {
                    let (secret_id, secret) = confirmed(
                        admin::add_secret(store.as_ref(), clock, &actor, &id, expires_in).await?,
                    );
                    let expires_at = expires_in.map(|s| now.saturating_add(s));
                    wire::NewSecret::new(&id, secret_id, &secret, expires_at)
                }
                Target::Server(remote) => {
                    let path = format!("/clients/{}/secrets", encode(&id));
                    let body = json!({ "expires_in_seconds": expires_in });
                    remote.json(Method::POST, &path, Some(&body)).await?
                }
            };
            print_new_secret(out, &secret);
        }
        SecretCommand::Rotate { id, overlap } => {
            let secret = match target {
                Target::Database(store) => {
                    let (secret_id, secret) = confirmed(
                        admin::rotate_secret(store.as_ref(), clock, &actor, &id, overlap).await?,
                    );
                    wire::NewSecret::new(&id, secret_id, &secret, None)
                }
                Target::Server(remote) => {
                    let path = format!("/clients/{}/secrets/rotate", encode(&id));
                    let body = json!({ "overlap_seconds": overlap });
                    remote.json(Method::POST, &path, Some(&body)).await?
                }
            };
            print_new_secret(out, &secret);
            eprintln!(
                "The client's other secrets stop working at {}.",
                timestamp(clock.unix_seconds() + overlap)
            );
        }
        SecretCommand::List { id } => {
            let secrets: Vec<wire::Secret> = match target {
                Target::Database(store) => admin::list_secrets(store.as_ref(), &id)
                    .await?
                    .iter()
                    .map(wire::Secret::from)
                    .collect(),
                Target::Server(remote) => {
                    let path = format!("/clients/{}/secrets", encode(&id));
                    remote.json(Method::GET, &path, None).await?
                }
            };
            let values: Vec<Value> = secrets
                .iter()
                .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
                .collect();
            let dash = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".to_owned());
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|s| {
                    vec![
                        s.secret_id.clone(),
                        s.created_at.clone(),
                        dash(&s.expires_at),
                        dash(&s.last_used_at),
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
            match target {
                Target::Database(store) => {
                    confirmed(
                        admin::revoke_secret(store.as_ref(), clock, &actor, &id, &secret_id)
                            .await?,
                    );
                }
                Target::Server(remote) => {
                    let path = format!("/clients/{}/secrets/{}", encode(&id), encode(&secret_id));
                    remote.call(Method::DELETE, &path, None).await?;
                }
            }
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

fn print_new_secret(out: &Output, secret: &wire::NewSecret) {
    out.record(
        &serde_json::to_value(secret).unwrap_or(Value::Null),
        &[
            ("client_id", secret.client_id.clone()),
            ("secret_id", secret.secret_id.clone()),
            ("client_secret", secret.client_secret.clone()),
            (
                "expires_at",
                secret.expires_at.clone().unwrap_or_else(|| "-".into()),
            ),
        ],
    );
    if out.is_table() {
        eprintln!("Store the client_secret now: it is not shown again.");
    }
}

/// Returns once every running server has dropped its cached copy of the client, so a
/// disabled client fails authentication on its very next request.
async fn set_enabled(
    target: &Target,
    clock: &dyn Clock,
    out: &Output,
    id: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    let client = match target {
        Target::Database(store) => {
            let update = ClientUpdate {
                enabled: Some(enabled),
                ..ClientUpdate::default()
            };
            let client = confirmed(
                admin::update_client(store.as_ref(), clock, &crate::cli_actor(), id, update)
                    .await?,
            );
            wire::Client::from(&client)
        }
        Target::Server(remote) => {
            let action = if enabled { "enable" } else { "disable" };
            let path = format!("/clients/{}/{action}", encode(id));
            remote.json(Method::POST, &path, None).await?
        }
    };
    out.record(&client_value(&client), &client_row(&client, None));
    Ok(())
}

/// Warns about running servers that did not confirm a change in time.
pub fn confirmed<T>(change: Applied<T>) -> T {
    for server in &change.unconfirmed_servers {
        warn_unconfirmed(server);
    }
    change.value
}

/// The warning for a server (by id) that did not confirm a change in time.
pub fn warn_unconfirmed(server: &str) {
    eprintln!(
        "warning: {} did not confirm the change within {} s; it may have stopped uncleanly, or \
         it may use the old client record until it next reaches the database",
        describe_server(server),
        admin::PROPAGATION_TIMEOUT.as_secs()
    );
}

/// A server by its id (`HOST/ADDRESS/ID`): `the server on web-3 at 10.0.0.5:8080 (id 3jYf...)`.
/// Ids from servers older than that are named as they are.
pub fn describe_server(id: &str) -> String {
    let mut parts = id.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(host), Some(address), Some(row_id)) => {
            format!("the server on {host} at {address} (id {row_id})")
        }
        _ => format!("server {id}"),
    }
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
pub fn client_value(client: &wire::Client) -> Value {
    serde_json::to_value(client).unwrap_or(Value::Null)
}

fn client_row(client: &wire::Client, secret: Option<&str>) -> Vec<Row> {
    let mut rows: Vec<Row> = vec![("client_id", client.client_id.clone())];
    if let Some(secret) = secret {
        rows.push(("client_secret", secret.to_owned()));
    }
    rows.extend([
        ("name", client.name.clone()),
        ("scope", client.scope.clone()),
        ("audience", client.audience.join(" ")),
        ("token_ttl_seconds", client.token_ttl_seconds.to_string()),
        ("auth_method", client.auth_method.clone()),
        ("grant_types", client.grant_types.join(" ")),
        ("enabled", client.enabled.to_string()),
        ("can_introspect", client.can_introspect.to_string()),
        ("token_format", client.token_format.clone()),
        ("reuse_tokens", client.reuse_tokens.to_string()),
        (
            "token_rate",
            client.token_rate.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "token_quota",
            client.token_quota.clone().unwrap_or_else(|| "-".into()),
        ),
        ("quota_mode", client.quota_mode.clone()),
        ("created_at", client.created_at.clone()),
        ("updated_at", client.updated_at.clone()),
    ]);
    if let Some(keys) = &client.jwks {
        let kids: Vec<&str> = keys["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        rows.push(("key_ids", kids.join(" ")));
    }
    let optional = [
        ("jwks_uri", &client.jwks_uri),
        (
            "tls_client_auth_subject_dn",
            &client.tls_client_auth_subject_dn,
        ),
        ("tls_client_auth_san_dns", &client.tls_client_auth_san_dns),
        ("tls_client_auth_san_uri", &client.tls_client_auth_san_uri),
        ("tls_client_auth_san_ip", &client.tls_client_auth_san_ip),
        (
            "tls_client_auth_san_email",
            &client.tls_client_auth_san_email,
        ),
        ("federated_issuer", &client.federated_issuer),
        ("federated_subject", &client.federated_subject),
        ("federated_audience", &client.federated_audience),
    ];
    for (label, value) in optional {
        if let Some(value) = value {
            rows.push((label, value.clone()));
        }
    }
    if let Some(age) = client.federated_max_token_age_seconds {
        rows.push(("federated_max_token_age", format!("{age} s")));
    }
    rows
}

pub use latchkey_server::http::admin::wire::timestamp;
