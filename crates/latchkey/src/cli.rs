//! The command-line interface. This is public: flags and their environment variables are kept
//! stable across releases.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use latchkey_proto::{ClientAuthMethod, SigningAlg, TokenFormat};
use latchkey_server::connections::ConnectionLimits;

/// latchkey: OAuth 2.0 client credentials for machines.
///
/// Run the authorization server with `latchkey serve`, and register the services that may ask
/// it for access tokens with `latchkey client create`.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Database URL. SQLite files are created if missing, readable by their owner only.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_DATABASE_URL",
        default_value = "sqlite://latchkey.db",
        // A PostgreSQL URL may hold a password: `--help` must not print it.
        hide_env_values = true
    )]
    pub database: String,

    /// Output format: a table on a terminal, JSON otherwise, unless set.
    #[arg(long, global = true, value_enum)]
    pub output: Option<OutputFormat>,

    /// A file holding the key-encryption key (32 random bytes in base64, for example from
    /// `openssl rand -base64 32`) that seals private signing keys in the database. Or set
    /// LATCHKEY_KEY_ENCRYPTION_KEY to the key itself. `serve` and `keys rotate` need it once
    /// keys are sealed.
    #[arg(long, global = true, env = "LATCHKEY_KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,

    /// Run `client`, `keys`, `audit` and `registration-token` commands through this server's
    /// admin API (its issuer URL, like https://auth.example.com) instead of on the database. Needs an admin client
    /// (`client create --admin`): LATCHKEY_ADMIN_CLIENT_ID and LATCHKEY_ADMIN_CLIENT_SECRET.
    #[arg(long, global = true, env = "LATCHKEY_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// With --server: the admin client's id.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_ADMIN_CLIENT_ID",
        value_name = "ID"
    )]
    pub admin_client_id: Option<String>,

    /// With --server: a file holding the admin client's secret (`-` reads standard input);
    /// else LATCHKEY_ADMIN_CLIENT_SECRET.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_ADMIN_CLIENT_SECRET_FILE",
        value_name = "FILE"
    )]
    pub admin_client_secret_file: Option<PathBuf>,

    /// With --server: where the admin API is, when the server serves it on a listener of its
    /// own (--admin-listen), like https://admin.internal:9443/admin/v1. Default: --server
    /// followed by /admin/v1.
    #[arg(long, global = true, env = "LATCHKEY_ADMIN_API", value_name = "URL")]
    pub admin_api: Option<String>,

    /// With --server: keep the admin token in this file between runs (created readable by its
    /// owner only), so that a script of many commands asks for one token. Default: a new
    /// token per run.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_ADMIN_TOKEN_CACHE",
        value_name = "FILE"
    )]
    pub admin_token_cache: Option<PathBuf>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authorization server.
    ///
    /// Creates or migrates the database schema, creates the first signing key if there is
    /// none, and serves the token endpoint, discovery and JWKS until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    ///
    /// `serve` does this too at start; run it on its own to upgrade before rolling out new
    /// replicas. Safe to run while servers are running and from several places at once.
    Migrate,
    /// Copy clients, secrets and signing keys to another, empty database (for example from
    /// SQLite to PostgreSQL), so every client keeps working there.
    ///
    /// Opaque tokens and the deny list are not copied; so that no revoked token comes back,
    /// tokens issued before the move are revoked (clients get new ones on their next request).
    /// Stop the servers on the old database first, then start them on the new one.
    MigrateData(MigrateDataArgs),
    /// Register and manage clients (the machines that get tokens).
    #[command(subcommand)]
    Client(ClientCommand),
    /// List and rotate the keys that sign access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read the audit trail: who changed which client, secret or key, and the fields before
    /// and after (never a secret).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// How much each client did: tokens issued, requests refused (by error), introspections
    /// and revocations, counted per minute by every server.
    Usage(UsageArgs),
    /// Create, list and revoke initial access tokens: each lets its holder register clients
    /// at /oauth2/register (RFC 7591 dynamic client registration).
    #[command(subcommand)]
    RegistrationToken(RegistrationTokenCommand),
    /// Get an access token and print it, for scripts:
    /// curl -H "Authorization: Bearer $(latchkey token ...)" ...
    ///
    /// Works with any OAuth 2.0 server that offers the client credentials grant. The secret
    /// comes from --client-secret-file or LATCHKEY_CLIENT_SECRET, never from the command line
    /// (where other users could see it in the process list). With --cache-file, a token that
    /// is still valid is reused instead of asking the server again.
    Token(TokenArgs),
    /// Print the public JWK Set of PEM private keys, for registering a private_key_jwt
    /// client: latchkey public-jwks client.pem > client.jwks.json
    ///
    /// Each key gets its RFC 7638 thumbprint as kid. Nothing private is printed.
    PublicJwks {
        /// PEM private key files (EC P-256, Ed25519 or RSA; PKCS#8, SEC1 or PKCS#1).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Put token validation in front of an existing HTTP service, without changing it.
    ///
    /// A reverse proxy: requests without a valid token for --audience get the RFC 6750 error;
    /// the others go to --upstream with the caller in X-Latchkey-Client-Id, X-Latchkey-Scope
    /// and X-Latchkey-Subject (such headers from outside are removed first) and without the
    /// Authorization header.
    Gate(GateArgs),
    /// Give an existing application tokens for the APIs it calls, without changing it.
    ///
    /// The application sends plain requests to the sidecar; the sidecar adds a cached token
    /// (fetched, refreshed and shared as latchkey-client does) and forwards them to
    /// --upstream. The secret comes from --client-secret-file or LATCHKEY_CLIENT_SECRET.
    Sidecar(SidecarArgs),
}

#[derive(Debug, Args)]
pub struct MigrateDataArgs {
    /// The database to copy from (e.g. sqlite://latchkey.db).
    #[arg(long)]
    pub from: String,
    /// The empty database to copy to (e.g. postgres://latchkey@db.internal/latchkey); its
    /// schema is created first.
    #[arg(long)]
    pub to: String,
}

/// Connection limits, the same for `serve`, `gate` and `sidecar` (see README, "Connection
/// limits").
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// How long a new connection (its TLS handshake included) may take to send its first
    /// request head, and a request head may take once its first byte has arrived, like 10s or
    /// 500ms. Slower connections are closed.
    #[arg(long, env = "LATCHKEY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,

    /// How long a kept-alive connection may wait between requests; also how long a response
    /// write may make no progress.
    #[arg(long, env = "LATCHKEY_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// How long after a request's head its body may take to arrive in full.
    #[arg(long, env = "LATCHKEY_BODY_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub body_timeout: Duration,

    /// The largest request head (request line and headers) in bytes, at least 8192; larger
    /// heads get 431.
    #[arg(long, env = "LATCHKEY_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// Connections open at once (lowered to fit the open-file limit, `ulimit -n`, less 64). At
    /// the cap a new connection closes the oldest one not serving a request.
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish before the
    /// connections still open are cut.
    #[arg(long, env = "LATCHKEY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub shutdown_timeout: Duration,
}

impl ConnectionArgs {
    /// The limits these flags set, checked.
    pub fn limits(&self) -> anyhow::Result<ConnectionLimits> {
        let limits = ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            shutdown_timeout: self.shutdown_timeout,
        };
        limits.validate().map_err(anyhow::Error::msg)?;
        Ok(limits)
    }
}

/// A limit: a rate like `10/min` (also `/s`, `/hour`, `/day`), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateOrOff(pub Option<latchkey_server::throttle::Rate>);

fn parse_rate_or_off(s: &str) -> Result<RateOrOff, String> {
    if s == "off" {
        return Ok(RateOrOff(None));
    }
    latchkey_server::throttle::Rate::parse(s).map(|rate| RateOrOff(Some(rate)))
}

/// A rate like `100/min`.
fn parse_rate(s: &str) -> Result<latchkey_server::model::Rate, String> {
    latchkey_server::model::Rate::parse(s)
}

/// `enforce` or `monitor`.
fn parse_quota_mode(s: &str) -> Result<latchkey_server::model::QuotaMode, String> {
    latchkey_server::model::QuotaMode::parse(s)
}

/// An address range like `10.0.0.0/8` or `2001:db8::/32`, or one address.
fn parse_ip_range(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a range like 10.0.0.0/8"))
}

/// `on` or `off`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("must be on or off".to_owned()),
    }
}

/// A duration of more than zero, like `10s`, `500ms` or `2m`.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// Where good requests go (http://host:port[/prefix]).
    #[arg(long, env = "LATCHKEY_GATE_UPSTREAM")]
    pub upstream: String,

    /// The issuer whose tokens are accepted; its keys are found through discovery.
    #[arg(long, env = "LATCHKEY_ISSUER")]
    pub issuer: String,

    /// This API's identifier: tokens must carry it in `aud`.
    #[arg(long, env = "LATCHKEY_GATE_AUDIENCE")]
    pub audience: String,

    /// A scope every request needs; repeat for several.
    #[arg(long)]
    pub require_scope: Vec<String>,

    /// Address and port to listen on.
    #[arg(long, env = "LATCHKEY_GATE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// How long the upstream may take to start answering before the gate answers 504, like
    /// 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration_u64)]
    pub upstream_timeout: u64,

    /// The origin clients call this gate at (like https://api.example.com), for checking
    /// DPoP proofs (their htu). Default: the origin of --audience.
    #[arg(long, env = "LATCHKEY_GATE_PUBLIC_ORIGIN", value_name = "URL")]
    pub public_origin: Option<String>,

    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. Clients
    /// may present certificates, which tokens bound to a certificate (RFC 8705) need.
    #[arg(
        long,
        env = "LATCHKEY_GATE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "LATCHKEY_GATE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Behind a TLS-terminating proxy: read the client certificate from this header (like
    /// Client-Cert, RFC 9440), for certificate-bound tokens. Only if the proxy always
    /// replaces it: anyone reaching the gate directly could otherwise send any certificate.
    /// Not with --tls-cert: then the gate sees the certificate itself.
    #[arg(
        long,
        env = "LATCHKEY_GATE_TRUST_CERTIFICATE_HEADER",
        value_name = "NAME",
        conflicts_with = "tls_cert"
    )]
    pub trust_certificate_header: Option<String>,

    /// A request quota per client, per fixed UTC window: `default=1000/hour` for every client
    /// without one of its own, `CLIENT_ID=100/min` for one client, `CLIENT_ID=off` for none.
    /// Repeat for several; a client may have one per period (s, min, hour, day). Over it: 429.
    #[arg(long = "quota", value_name = "WHO=N/PERIOD")]
    pub quotas: Vec<String>,

    /// More quota entries, one per line as --quota takes them (`#` starts a comment); read
    /// again on SIGHUP.
    #[arg(long, env = "LATCHKEY_GATE_QUOTA_FILE", value_name = "PATH")]
    pub quota_file: Option<PathBuf>,

    /// Share quota counts with every gate of the same --audience through this Redis
    /// (redis://host:6379/0). Without it each gate counts alone.
    #[arg(
        long,
        env = "LATCHKEY_GATE_QUOTA_REDIS",
        value_name = "URL",
        hide_env_values = true
    )]
    pub quota_redis: Option<String>,

    /// The start of the gate's Redis keys.
    #[arg(long, default_value = "latchkey:gate:", value_name = "PREFIX")]
    pub quota_redis_prefix: String,

    /// How long Redis may take to answer before the gate counts locally (and tries Redis
    /// again a second later).
    #[arg(long, default_value = "100ms", value_parser = parse_positive_duration)]
    pub quota_redis_timeout: Duration,

    /// Serve Prometheus metrics at /metrics on this address (not on --listen, which forwards
    /// everything).
    #[arg(long, env = "LATCHKEY_GATE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub connections: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Address and port the application sends its requests to.
    #[arg(
        long,
        env = "LATCHKEY_SIDECAR_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: SocketAddr,

    /// Where requests go, with a token added (http://host:port[/prefix]).
    #[arg(long, env = "LATCHKEY_SIDECAR_UPSTREAM")]
    pub upstream: String,

    /// The issuer to get tokens from.
    #[arg(long, env = "LATCHKEY_ISSUER")]
    pub issuer: String,

    /// The client id.
    #[arg(long, env = "LATCHKEY_CLIENT_ID")]
    pub client_id: String,

    /// A file holding the client secret (`-` reads standard input); else
    /// LATCHKEY_CLIENT_SECRET.
    #[arg(long)]
    pub client_secret_file: Option<PathBuf>,

    /// Scope to request; repeat or separate with spaces.
    #[arg(long)]
    pub scope: Vec<String>,

    /// The API (absolute URI) the tokens are for; may repeat.
    #[arg(long)]
    pub audience: Vec<String>,

    /// How long the upstream may take to start answering before the sidecar answers 504.
    #[arg(long, default_value = "60s", value_parser = parse_duration_u64)]
    pub upstream_timeout: u64,

    #[command(flatten)]
    pub connections: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The issuer; its token endpoint is found through its discovery document (RFC 8414).
    #[arg(
        long,
        env = "LATCHKEY_ISSUER",
        required_unless_present = "token_endpoint",
        conflicts_with = "token_endpoint"
    )]
    pub issuer: Option<String>,

    /// The token endpoint itself, for a server without a discovery document.
    #[arg(long, env = "LATCHKEY_TOKEN_ENDPOINT")]
    pub token_endpoint: Option<String>,

    /// The client id.
    #[arg(long, env = "LATCHKEY_CLIENT_ID")]
    pub client_id: String,

    /// A file holding the client secret (a trailing newline is ignored; `-` reads standard
    /// input). Without it the secret is read from LATCHKEY_CLIENT_SECRET.
    #[arg(long)]
    pub client_secret_file: Option<PathBuf>,

    /// How the secret is sent: client_secret_basic or client_secret_post.
    #[arg(long, default_value = "client_secret_basic", value_parser = parse_auth_method)]
    pub auth_method: ClientAuthMethod,

    /// Authenticate with private_key_jwt instead of a secret: sign each request's assertion
    /// with this PEM private key (EC P-256, Ed25519 or RSA), whose public key is registered
    /// for the client. The assertion's audience is the issuer.
    #[arg(long, value_name = "FILE", conflicts_with = "client_secret_file")]
    pub private_key_file: Option<PathBuf>,

    /// With --private-key-file: the kid the key is registered under, when it is not the
    /// key's RFC 7638 thumbprint (what `latchkey public-jwks` gives it).
    #[arg(long, requires = "private_key_file")]
    pub key_id: Option<String>,

    /// With --private-key-file and --token-endpoint: the issuer identifier, which is the
    /// assertion's audience (with --issuer it is known).
    #[arg(long, requires = "private_key_file")]
    pub assertion_audience: Option<String>,

    /// Authenticate with mutual TLS (RFC 8705) instead: present this PEM certificate to the
    /// token endpoint (its key in the same file or in --client-key-file). The token is bound
    /// to it. --auth-method self_signed_tls_client_auth for a self-signed one (default
    /// tls_client_auth).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["client_secret_file", "private_key_file"])]
    pub client_certificate_file: Option<PathBuf>,

    /// With --client-certificate-file: the certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_certificate_file")]
    pub client_key_file: Option<PathBuf>,

    /// Scope to request; repeat the flag or separate scopes with spaces. Without it the server
    /// grants the client's default scope.
    #[arg(long)]
    pub scope: Vec<String>,

    /// An API (absolute URI) the token is for, sent as an RFC 8707 resource; may repeat.
    #[arg(long)]
    pub audience: Vec<String>,

    /// Reuse a still-valid token from this file, and store new tokens in it (mode 0600).
    #[arg(
        long,
        env = "LATCHKEY_TOKEN_CACHE_FILE",
        conflicts_with = "cache_redis"
    )]
    pub cache_file: Option<PathBuf>,

    /// Reuse a still-valid token from this Redis (redis://host:port/db), shared by every
    /// machine that uses it, and store new tokens there. Unreachable: a warning, and the token
    /// comes from the server. A URL with a password belongs in LATCHKEY_TOKEN_CACHE_REDIS, not
    /// on the command line.
    #[arg(long, env = "LATCHKEY_TOKEN_CACHE_REDIS")]
    pub cache_redis: Option<String>,
}

/// `latchkey usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// One client's counts, minute by minute (default: every client's totals, the most active
    /// first).
    #[arg(long = "client", value_name = "ID")]
    pub client: Option<String>,
    /// Counts this recent, like 1h or 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: i64,
    /// At most this many clients (or, with --client, the latest minutes).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// List the clients found not caching their tokens instead: per source address and clock
    /// hour, the tokens they got and the most a client that caches would need (see `latchkey
    /// serve --not-caching-threshold`). With --client, only that client's.
    #[arg(long)]
    pub not_caching: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, oldest first: time, actor (cli:USER, admin:CLIENT_ID,
    /// registration:TOKEN_ID or server:ID), action, target and changes.
    List {
        /// Only events this recent, like 1h or 7d (default: every event kept).
        #[arg(long, value_parser = parse_duration)]
        since: Option<i64>,
        /// Only events about this client.
        #[arg(long = "client", value_name = "ID")]
        client: Option<String>,
        /// At most this many events (the oldest that match).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistrationTokenCommand {
    /// Create an initial access token and print it once (only its hash is stored). Whoever
    /// holds it can register clients at /oauth2/register until it expires or is used up.
    Create {
        /// How long it works, like 24h or 30d (at most a year).
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        expires_in: i64,
        /// How many clients it may register (default: no limit until it expires).
        #[arg(long, value_name = "N")]
        max_uses: Option<i64>,
        /// The scope tokens a registration may ask for, space-separated; also the scope of a
        /// registration that asks for none (default: any).
        #[arg(long, value_name = "SCOPE")]
        scope_limit: Option<String>,
        /// An audience a registration may ask for (repeatable); also the audience of a
        /// registration that asks for none (default: any).
        #[arg(long, value_name = "URI")]
        audience_limit: Vec<String>,
    },
    /// List initial access tokens (never the tokens themselves): id, expiry, uses and limits.
    List,
    /// Revoke an initial access token: it registers nothing more. The clients it registered
    /// stay.
    Revoke {
        /// The token's id (from `registration-token list`).
        token_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys with their state: next (published, not yet signing), current
    /// (signing), retired (published for verification only) or removed.
    List,
    /// Rotate: the next key starts signing, the current key retires, and a new next key is
    /// published. Refused until the next key has been published for one JWKS max-age.
    Rotate {
        /// Rotate only this algorithm's keys (default: every algorithm in use).
        #[arg(long, value_parser = parse_alg)]
        alg: Option<SigningAlg>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "LATCHKEY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve the admin API (/admin/v1) on this address only, not on --listen: for example a
    /// port that only the operators' network reaches. Default: on --listen.
    #[arg(long, env = "LATCHKEY_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Serve Prometheus metrics at /metrics on this address (plain HTTP), like
    /// 127.0.0.1:9464. Default: no metrics listener.
    #[arg(long, env = "LATCHKEY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Failed client authentications allowed per client id and source address: a burst of N,
    /// then N more per period (a token bucket). Past it the token, introspection and
    /// revocation endpoints answer 429 with Retry-After to that id from that address only.
    /// `off`: no such limit.
    #[arg(
        long,
        env = "LATCHKEY_FAILED_AUTH_LIMIT",
        value_name = "N/PERIOD",
        default_value = "10/min",
        value_parser = parse_rate_or_off
    )]
    pub failed_auth_limit: RateOrOff,

    /// Failed client authentications allowed per source address, whatever ids it tries (IPv6
    /// by /64).
    #[arg(
        long,
        env = "LATCHKEY_FAILED_AUTH_LIMIT_PER_ADDRESS",
        value_name = "N/PERIOD",
        default_value = "100/min",
        value_parser = parse_rate_or_off
    )]
    pub failed_auth_limit_per_address: RateOrOff,

    /// A proxy in front of the server (an address or range, like 10.0.0.0/8; repeatable, or
    /// comma-separated in the env): from these peers, the client's address is taken from
    /// X-Forwarded-For (the rightmost address that is not a trusted proxy). From any other
    /// peer the header is ignored. Default: none.
    #[arg(
        long = "trusted-proxy",
        env = "LATCHKEY_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_ip_range
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Serve the web console at /console/ wherever the admin API is served: on or off. It is
    /// static files and a client of the admin API; signing in takes an admin client's secret.
    #[arg(
        long,
        env = "LATCHKEY_CONSOLE",
        default_value = "on",
        value_parser = parse_on_off,
        action = clap::ArgAction::Set
    )]
    pub console: bool,

    /// With --admin-listen: the origin clients reach the admin API by, like
    /// https://admin.example:9443 (what their DPoP proofs name). Default: the listener's
    /// address.
    #[arg(
        long,
        env = "LATCHKEY_ADMIN_URL",
        value_name = "URL",
        requires = "admin_listen"
    )]
    pub admin_url: Option<String>,

    /// Issuer identifier: the public base URL of this server, and the `iss` of every token.
    /// Defaults to http://<listen address>; set it when behind a proxy or listening on 0.0.0.0.
    #[arg(long, env = "LATCHKEY_ISSUER")]
    pub issuer: Option<String>,

    /// Algorithm access tokens are signed with.
    #[arg(long, env = "LATCHKEY_SIGNING_ALG", default_value = "ES256", value_parser = parse_alg)]
    pub signing_alg: SigningAlg,

    /// Rotate the signing key automatically once it has signed this long, like 30d (at least
    /// 1h). Off by default; `latchkey keys rotate` rotates by hand.
    #[arg(long, env = "LATCHKEY_KEY_ROTATION", value_parser = parse_duration)]
    pub key_rotation: Option<i64>,

    /// Also accept the token endpoint URL as the audience of private_key_jwt assertions, for
    /// clients that cannot be changed to send the issuer. Off by default: the issuer alone is
    /// the audience (draft-ietf-oauth-rfc7523bis), which closes the 2025 audience-injection
    /// attacks.
    #[arg(long, env = "LATCHKEY_ACCEPT_TOKEN_ENDPOINT_AUDIENCE")]
    pub accept_token_endpoint_audience: bool,

    /// Fetch clients' jwks_uri from loopback, private and link-local addresses too (for
    /// development). Off by default: every connection goes to a public address only.
    #[arg(long, env = "LATCHKEY_ALLOW_PRIVATE_JWKS_URI")]
    pub allow_private_jwks_uri: bool,

    /// Require DPoP proofs at the token endpoint to carry a nonce this server made (RFC 9449
    /// §8): a proof without one gets `400 use_dpop_nonce` and a fresh nonce in the
    /// `DPoP-Nonce` header. Proofs made in advance are then useless.
    #[arg(long, env = "LATCHKEY_DPOP_NONCE")]
    pub dpop_nonce: bool,

    /// How many client records to keep in memory, and how many unknown client ids to
    /// remember. A client not in memory is read with one indexed query when a request names
    /// it; start-up reads none. About 4 KB per client that uses a secret.
    #[arg(
        long,
        env = "LATCHKEY_CLIENT_CACHE_SIZE",
        default_value_t = latchkey_server::cache::DEFAULT_CLIENT_CACHE_SIZE,
        value_parser = parse_cache_size,
    )]
    pub client_cache_size: usize,

    /// How long audit events are kept, like 90d; the janitor deletes older ones (`latchkey
    /// audit list` shows them).
    #[arg(
        long,
        env = "LATCHKEY_AUDIT_RETENTION",
        default_value = "90d",
        value_parser = parse_duration_u64
    )]
    pub audit_retention: u64,

    /// Count each client's tokens, refusals, introspections and revocations per minute
    /// (`latchkey usage`, GET /admin/v1/usage): on or off.
    #[arg(
        long,
        env = "LATCHKEY_USAGE_ACCOUNTING",
        default_value = "on",
        value_parser = parse_on_off,
        action = clap::ArgAction::Set
    )]
    pub usage_accounting: bool,

    /// How long usage counts are kept, like 35d; older minutes are deleted.
    #[arg(
        long,
        env = "LATCHKEY_USAGE_RETENTION",
        default_value = "35d",
        value_parser = parse_duration_u64
    )]
    pub usage_retention: u64,

    /// Flag a client as not caching its tokens when one source address gets more than this
    /// many tokens per token lifetime within a clock hour (`latchkey usage --not-caching`,
    /// the metrics, one log warning per client per hour). 0 never flags.
    #[arg(
        long,
        env = "LATCHKEY_NOT_CACHING_THRESHOLD",
        value_name = "N",
        default_value_t = latchkey_server::usage::DEFAULT_NOT_CACHING_THRESHOLD
    )]
    pub not_caching_threshold: u32,

    /// Per-client issuance in the metrics (latchkey_client_tokens_issued_total): a series for
    /// at most this many clients, those with the most tokens lately; the others count under
    /// client_id="other".
    #[arg(
        long,
        env = "LATCHKEY_METRICS_TOP_CLIENTS",
        value_name = "N",
        default_value_t = latchkey_server::metrics::DEFAULT_TOP_CLIENTS
    )]
    pub metrics_top_clients: usize,

    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. Without it
    /// the server speaks plain HTTP, for use behind a TLS terminator.
    #[arg(
        long,
        env = "LATCHKEY_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "LATCHKEY_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) that issue client certificates, for clients registered with
    /// tls_client_auth (mutual TLS, RFC 8705). Needs --tls-cert.
    #[arg(
        long,
        env = "LATCHKEY_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub client_ca: Option<PathBuf>,

    #[command(flatten)]
    pub connections: ConnectionArgs,
}

fn parse_alg(s: &str) -> Result<SigningAlg, String> {
    s.parse()
        .map_err(|_| "expected one of ES256, EdDSA, RS256".to_owned())
}

fn parse_token_format(s: &str) -> Result<TokenFormat, String> {
    s.parse().map_err(|_| "expected jwt or opaque".to_owned())
}

fn parse_auth_method(s: &str) -> Result<ClientAuthMethod, String> {
    s.parse().map_err(|_| {
        "expected client_secret_basic, client_secret_post or private_key_jwt".to_owned()
    })
}

/// A cache size: a whole number of entries, at least 1.
fn parse_cache_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a number of entries (at least 1)")),
    }
}

/// A positive duration in whole seconds.
fn parse_duration_u64(s: &str) -> Result<u64, String> {
    match parse_duration(s)? {
        0 => Err("must be at least 1s".to_owned()),
        seconds => u64::try_from(seconds).map_err(|_| "duration too large".to_owned()),
    }
}

/// A duration like `15m`, `1h`, `90s`, `30d` or plain seconds, as whole seconds.
fn parse_duration(s: &str) -> Result<i64, String> {
    let seconds = match s.parse::<u64>() {
        Ok(seconds) => seconds,
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{e} (examples: 900, 15m, 1h)"))?
            .as_secs(),
    };
    i64::try_from(seconds).map_err(|_| "duration too large".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client. Prints its client_id and client_secret; the secret is shown only now.
    Create(CreateArgs),
    /// List all clients (never their secrets).
    List,
    /// Register many clients from JSON lines (one client per line, the fields `client create
    /// --output json` prints; a line may keep its client_id and client_secret, for moving
    /// from another server). Every line is checked first: with a bad line nothing is imported.
    /// Prints one JSON line per client, in input order: line, client_id and, when one was
    /// generated, client_secret (shown only now).
    Import {
        /// The file to read, or - for standard input.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
        /// Start at this line (after an import stopped by a database error: the line it names).
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        from_line: u64,
        /// Let jwks_uri and federated_issuer point inside the network (see `client create`).
        #[arg(long)]
        allow_private_jwks_uri: bool,
    },
    /// Write every client as JSON lines, in the format `client import` reads (never secrets).
    Export,
    /// Show one client.
    Show {
        /// The client_id.
        id: String,
    },
    /// Change a client's name, scope, audience or token lifetime.
    Update(UpdateArgs),
    /// Disable a client: it can no longer get tokens, at once.
    Disable {
        /// The client_id.
        id: String,
    },
    /// Enable a disabled client.
    Enable {
        /// The client_id.
        id: String,
    },
    /// Delete a client and its secrets; its tokens stop being active.
    Delete {
        /// The client_id.
        id: String,
    },
    /// Revoke every token the client holds now. Its next token request gets a new token.
    RevokeTokens {
        /// The client_id.
        id: String,
    },
    /// Add, list, rotate and revoke a client's secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Add a secret while the others keep working. Prints it; it is shown only now.
    Add {
        /// The client_id.
        id: String,
        /// Let the new secret expire after this long, like 90d.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<i64>,
    },
    /// Add a secret and let every other secret of the client expire after an overlap.
    Rotate {
        /// The client_id.
        id: String,
        /// How long the old secrets keep working, like 24h (0 ends them now).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        overlap: i64,
    },
    /// List the client's secrets: ids, creation, expiry and last use (never the secrets).
    List {
        /// The client_id.
        id: String,
    },
    /// Revoke one secret at once; it then fails like a wrong one.
    Revoke {
        /// The client_id.
        id: String,
        /// The secret_id, from `client secret list`.
        secret_id: String,
    },
}

/// What authenticates a client without a secret comes from exactly one of these.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("key_source").multiple(false).args([
    "jwks_file", "jwks_uri", "federated_issuer", "certificate_file", "tls_subject_dn",
    "tls_san_dns", "tls_san_uri", "tls_san_ip", "tls_san_email",
])))]
pub struct CreateArgs {
    /// A label for people, like the service's name.
    #[arg(long)]
    pub name: String,

    /// Space-separated scopes the client may request; also its default when it asks for none.
    #[arg(long, default_value = "")]
    pub scope: String,

    /// An API (absolute URI) the client may get tokens for; repeat for several. The `aud` of
    /// its tokens when it does not send `resource`.
    #[arg(long = "audience", value_name = "URI")]
    pub audience: Vec<String>,

    /// Lifetime of its access tokens, like 900, 15m or 1h (10 s to 24 h).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub token_ttl: i64,

    /// Make it an admin client: it may get tokens for the admin API (audience
    /// urn:latchkey:admin, scope latchkey:admin), which can do everything `latchkey client`
    /// and `latchkey keys` do. For bootstrap: the first admin is created here.
    #[arg(long, conflicts_with_all = ["admin_read", "audience"])]
    pub admin: bool,

    /// Like --admin, but for reading only (scope latchkey:admin:read).
    #[arg(long, conflicts_with = "audience")]
    pub admin_read: bool,

    /// How the client authenticates: client_secret_basic or client_secret_post (a secret is
    /// generated and shown once), private_key_jwt (signed assertions; give --jwks-file),
    /// tls_client_auth (a CA-issued client certificate; give --tls-subject-dn or a --tls-san-*)
    /// or self_signed_tls_client_auth (its own certificate; give --certificate-file).
    #[arg(long, default_value = "client_secret_basic", value_parser = parse_auth_method)]
    pub auth_method: ClientAuthMethod,

    /// For private_key_jwt: a JWK Set file (or - for stdin) with the client's public signing
    /// keys (EC P-256, Ed25519 or RSA). Private key members are refused.
    #[arg(long, value_name = "FILE", conflicts_with = "jwks_uri")]
    pub jwks_file: Option<PathBuf>,

    /// For private_key_jwt: an https URL where the client publishes its JWK Set; the server
    /// fetches it (cached, 5 s timeouts). Addresses inside the network are refused.
    #[arg(long, value_name = "URL")]
    pub jwks_uri: Option<String>,

    /// Let --jwks-uri or --federated-issuer point at loopback, private or link-local
    /// addresses, or use http (for development; `serve` needs --allow-private-jwks-uri too).
    #[arg(long)]
    pub allow_private_jwks_uri: bool,

    /// Federated workload identity (with --auth-method private_key_jwt): the client
    /// authenticates with tokens this external issuer gives the workload (a Kubernetes
    /// cluster, a CI system), found through the issuer's discovery document. No secret or key
    /// of the client's own exists.
    #[arg(long, value_name = "URL", conflicts_with_all = ["jwks_file", "jwks_uri"], requires = "federated_subject")]
    pub federated_issuer: Option<String>,

    /// With --federated-issuer: the `sub` its tokens must carry, exactly (for Kubernetes,
    /// system:serviceaccount:NAMESPACE:NAME).
    #[arg(long, value_name = "SUB", requires = "federated_issuer")]
    pub federated_subject: Option<String>,

    /// With --federated-issuer: the `aud` its tokens must carry, as the only value. Default:
    /// this server's issuer.
    #[arg(long, value_name = "AUD", requires = "federated_issuer")]
    pub federated_audience: Option<String>,

    /// With --federated-issuer: how far ahead a token's `exp` and how far back its `iat`
    /// (which it must have) may be, like 2h or 7d; at most 30d. Default: 24h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "federated_issuer")]
    pub federated_max_token_age: Option<i64>,

    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// Space-separated grant types the client may use; "" registers a client that cannot get
    /// tokens (for example a resource server that only calls introspection).
    #[arg(long, default_value = "client_credentials")]
    pub grant_types: String,

    /// Allow the client to call the introspection endpoint (for resource servers).
    #[arg(long)]
    pub can_introspect: bool,

    /// Format of its access tokens: jwt (verified offline) or opaque (validated by
    /// introspection).
    #[arg(long, default_value = "jwt", value_parser = parse_token_format)]
    pub token_format: TokenFormat,

    /// A request like the client's last one (same scope, audience and binding) gets that token
    /// back while it has more than half its lifetime left, instead of a new one (JWTs only).
    #[arg(long)]
    pub reuse_tokens: bool,
    /// At most this many tokens in a burst, refilled over the period (a token bucket), like
    /// 100/min. Past it: 429 with Retry-After (or, with --quota-mode monitor, a warning).
    #[arg(long, value_name = "N/PERIOD", value_parser = parse_rate)]
    pub token_rate: Option<latchkey_server::model::Rate>,

    /// At most this many tokens per fixed period (UTC), like 10000/day.
    #[arg(long, value_name = "N/PERIOD", value_parser = parse_rate)]
    pub token_quota: Option<latchkey_server::model::Rate>,

    /// enforce: past the rate or quota, 429; monitor: the token is issued and the overrun is
    /// logged, counted in the metrics and written to the audit trail.
    #[arg(long, default_value = "enforce", value_parser = parse_quota_mode)]
    pub quota_mode: latchkey_server::model::QuotaMode,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("new_key_source").multiple(false).args([
    "jwks_file", "jwks_uri", "certificate_file", "tls_subject_dn", "tls_san_dns",
    "tls_san_uri", "tls_san_ip", "tls_san_email",
])))]
pub struct UpdateArgs {
    /// The client_id.
    pub id: String,
    /// New label.
    #[arg(long)]
    pub name: Option<String>,
    /// New space-separated scope list (replaces the old one).
    #[arg(long)]
    pub scope: Option<String>,
    /// New audience list (replaces the old one); repeat for several.
    #[arg(long = "audience", value_name = "URI")]
    pub audience: Option<Vec<String>>,
    /// New token lifetime, like 900, 15m or 1h.
    #[arg(long, value_parser = parse_duration)]
    pub token_ttl: Option<i64>,
    /// Allow (true, or no value) or forbid (false) introspection.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub can_introspect: Option<bool>,
    /// New token format for tokens issued from now on: jwt or opaque.
    #[arg(long, value_parser = parse_token_format)]
    pub token_format: Option<TokenFormat>,
    /// Hand out the last token again while it has more than half its lifetime left (true, or
    /// no value), or always a new one (false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub reuse_tokens: Option<bool>,
    /// A new token rate like 100/min, or off.
    #[arg(long, value_name = "N/PERIOD", value_parser = parse_rate_or_off)]
    pub token_rate: Option<RateOrOff>,
    /// A new token quota like 10000/day, or off.
    #[arg(long, value_name = "N/PERIOD", value_parser = parse_rate_or_off)]
    pub token_quota: Option<RateOrOff>,
    /// enforce or monitor.
    #[arg(long, value_parser = parse_quota_mode)]
    pub quota_mode: Option<latchkey_server::model::QuotaMode>,
    /// For private_key_jwt clients: replace the registered public keys with this JWK Set file
    /// (or - for stdin). To rotate, register old and new key together, move the client to the
    /// new key, then register the new key alone.
    #[arg(long, value_name = "FILE", conflicts_with = "jwks_uri")]
    pub jwks_file: Option<PathBuf>,
    /// For private_key_jwt clients: fetch the public keys from this URL from now on (replaces
    /// registered keys).
    #[arg(long, value_name = "URL")]
    pub jwks_uri: Option<String>,
    /// Let --jwks-uri point inside the network (see `client create`).
    #[arg(long, requires = "jwks_uri")]
    pub allow_private_jwks_uri: bool,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

/// What identifies a mutual-TLS client (RFC 8705 §2): on `client create`, and on `client
/// update` to replace it (certificate rotation).
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct TlsClientArgs {
    /// For self_signed_tls_client_auth: a PEM file with the client's certificate(s); each one
    /// it presents in the TLS handshake authenticates it. Give two during a rotation.
    #[arg(long, value_name = "FILE")]
    pub certificate_file: Option<PathBuf>,
    /// For tls_client_auth: the subject DN its CA-issued certificate carries, as an RFC 4514
    /// string like "CN=billing,O=Example,C=US" (compared case-insensitively, per RDN).
    #[arg(long, value_name = "DN")]
    pub tls_subject_dn: Option<String>,
    /// For tls_client_auth: a DNS name among the certificate's subject alternative names.
    #[arg(long, value_name = "NAME")]
    pub tls_san_dns: Option<String>,
    /// For tls_client_auth: a URI among the certificate's subject alternative names (like a
    /// SPIFFE ID, spiffe://example.org/billing).
    #[arg(long, value_name = "URI")]
    pub tls_san_uri: Option<String>,
    /// For tls_client_auth: an IP address among the certificate's subject alternative names.
    #[arg(long, value_name = "IP")]
    pub tls_san_ip: Option<String>,
    /// For tls_client_auth: an email address among the certificate's subject alternative
    /// names.
    #[arg(long, value_name = "EMAIL")]
    pub tls_san_email: Option<String>,
}

impl TlsClientArgs {
    /// The RFC 8705 §2.1.2 metadata name and value given, if any.
    pub fn subject(&self) -> Option<(&'static str, &str)> {
        [
            ("tls_client_auth_subject_dn", &self.tls_subject_dn),
            ("tls_client_auth_san_dns", &self.tls_san_dns),
            ("tls_client_auth_san_uri", &self.tls_san_uri),
            ("tls_client_auth_san_ip", &self.tls_san_ip),
            ("tls_client_auth_san_email", &self.tls_san_email),
        ]
        .into_iter()
        .find_map(|(kind, value)| Some((kind, value.as_deref()?)))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command};

    fn serve(args: &[&str]) -> super::ServeArgs {
        let mut argv = vec!["latchkey", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn on_off_flags_take_their_value() {
        assert!(serve(&[]).usage_accounting);
        assert!(!serve(&["--usage-accounting", "off"]).usage_accounting);
        assert!(serve(&["--usage-accounting", "on"]).usage_accounting);
        assert!(Cli::try_parse_from(["latchkey", "serve", "--usage-accounting", "yes"]).is_err());
    }

    #[test]
    fn throttling_flags_take_a_rate_or_off() {
        let defaults = serve(&[]);
        assert_eq!(
            defaults.failed_auth_limit.0,
            Some(latchkey_server::throttle::DEFAULT_PER_CLIENT_ADDRESS)
        );
        assert_eq!(
            serve(&["--failed-auth-limit", "off"]).failed_auth_limit.0,
            None
        );
        let limited = serve(&["--failed-auth-limit-per-address", "5/hour"]);
        assert_eq!(
            limited.failed_auth_limit_per_address.0.unwrap().to_string(),
            "5/hour"
        );
        let proxies = serve(&["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::1"]);
        assert_eq!(proxies.trusted_proxies.len(), 2);
        assert!(
            Cli::try_parse_from(["latchkey", "serve", "--trusted-proxy", "10.0.0.0/33"]).is_err()
        );
    }
}
