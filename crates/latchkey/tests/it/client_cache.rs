//! Client records on demand: a server reads a client when a request first names it, keeps a
//! bounded number of them and of unknown ids, and follows changes through the change feed —
//! also after it was cut off from the database. (A disabled client refused at once on every
//! replica: `replicas::three_replicas_on_one_database_answer_alike`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latchkey_server::cache::wait_for_servers;
use latchkey_server::model::{ClientRecord, SecretRecord};
use latchkey_server::secret::SecretHash;
use latchkey_server::service::admin;
use latchkey_server::store::{self};
use latchkey_server::{Application, ManualClock, ServerConfig};
use latchkey_testkit::PgDatabase;
use sqlx::Connection as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::helpers::{T0, TestApp, server_config, spawn_with_config, token_status};

/// A server on a fresh SQLite database that already holds `clients` clients, keeping at most
/// `cache_size` records in memory; returns the clients with their secrets.
async fn server_with_clients(
    cache_size: usize,
    clients: usize,
) -> (TestApp, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = store::connect(&database_url).await.unwrap();
    let clock = ManualClock::new(T0);
    let mut registered = Vec::new();
    for i in 0..clients {
        let (record, secret) = admin::create_client(
            store.as_ref(),
            &clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            admin::NewClient {
                name: format!("svc-{i}"),
                ..new_client()
            },
        )
        .await
        .unwrap()
        .value;
        registered.push((record.client_id, secret.expose().to_owned()));
    }
    let config = ServerConfig {
        client_cache_size: cache_size,
        ..server_config(latchkey_proto::SigningAlg::Es256, None)
    };
    let app = spawn_with_config(config, database_url, dir, store, clock).await;
    (app, registered)
}

fn new_client() -> admin::NewClient {
    admin::NewClient {
        name: "svc".into(),
        scope: vec!["read".into()],
        audience: vec!["https://api.example.com".into()],
        token_ttl_seconds: 900,
        auth_method: latchkey_proto::ClientAuthMethod::ClientSecretBasic,
        grant_types: vec![latchkey_proto::GrantType::ClientCredentials],
        can_introspect: false,
        token_format: latchkey_proto::TokenFormat::Jwt,
        reuse_tokens: false,
        limits: Default::default(),
    }
}

#[tokio::test]
async fn clients_are_read_when_first_named_and_the_cache_stays_bounded() {
    let (app, clients) = server_with_clients(50, 200).await;
    // Start-up read no client.
    assert_eq!(app.cache.cached_clients(), (0, 0));
    for (id, secret) in &clients {
        assert_eq!(token_status(&app.http, &app.base, id, secret).await, 200);
    }
    let (known, unknown) = app.cache.cached_clients();
    assert!(
        known > 0 && known <= 50,
        "{known} records held with room for 50"
    );
    assert_eq!(unknown, 0);
    // Clients pushed out are read again when they come back.
    for (id, secret) in clients.iter().take(20) {
        assert_eq!(token_status(&app.http, &app.base, id, secret).await, 200);
    }
    // A wrong secret for a cached client is still refused.
    let (id, _) = &clients[0];
    assert_eq!(token_status(&app.http, &app.base, id, "wrong").await, 401);
}

#[tokio::test]
async fn unknown_ids_are_remembered_within_the_bound_and_forgotten_once_registered() {
    let (app, _) = server_with_clients(50, 0).await;
    for i in 0..300 {
        let status = token_status(&app.http, &app.base, &format!("lk_nobody{i}"), "s").await;
        assert_eq!(status, 401);
    }
    let (known, unknown) = app.cache.cached_clients();
    assert_eq!(known, 0);
    assert!(
        unknown > 0 && unknown <= 50,
        "{unknown} unknown ids held with room for 50"
    );

    // An id the server remembers as unknown, registered afterwards (as an import keeping a
    // client's id does), works as soon as the change has reached the server.
    let id = "lk_nobody299";
    assert_eq!(
        token_status(&app.http, &app.base, id, "kept-secret").await,
        401
    );
    let (template, _) = admin::create_client(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        new_client(),
    )
    .await
    .unwrap()
    .value;
    let record = ClientRecord {
        client_id: id.into(),
        secrets: vec![SecretRecord {
            secret_id: "sec_kept".into(),
            hash: SecretHash::of(b"kept-secret"),
            created_at: T0,
            expires_at: None,
        }],
        ..template
    };
    app.store
        .create_client(&crate::helpers::audit(), &record)
        .await
        .unwrap();
    let behind = wait_for_servers(app.store.as_ref(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(behind.is_empty(), "the server confirmed the change");
    assert_eq!(
        token_status(&app.http, &app.base, id, "kept-secret").await,
        200
    );
}

#[tokio::test]
async fn a_client_changed_after_it_was_cached_is_read_again() {
    let (app, clients) = server_with_clients(50, 3).await;
    let (id, secret) = &clients[1];
    assert_eq!(token_status(&app.http, &app.base, id, secret).await, 200);
    // Through the admin API the CLI uses, which waits for every server.
    admin::update_client(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        id,
        latchkey_server::model::ClientUpdate {
            enabled: Some(false),
            ..latchkey_server::model::ClientUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(token_status(&app.http, &app.base, id, secret).await, 401);
    // The others stay cached and keep working.
    let (other, other_secret) = &clients[0];
    assert_eq!(
        token_status(&app.http, &app.base, other, other_secret).await,
        200
    );
}

/// A TCP forwarder to PostgreSQL that can be cut (every connection closed, new ones refused)
/// and restored: a replica behind it loses its database while the others keep theirs.
struct Cuttable {
    addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl Cuttable {
    async fn start(upstream: std::net::SocketAddr) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (gate, tasks) = (Arc::clone(&open), Arc::clone(&connections));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !gate.load(Ordering::SeqCst) {
                    continue; // Dropped: the connection closes at once.
                }
                tasks.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Cuttable {
            addr,
            open,
            connections,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.connections.lock().unwrap().abort_all();
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_the_database_follows_the_feed_when_it_returns() {
    let Some(database) = PgDatabase::create().await else {
        return;
    };
    let url = reqwest::Url::parse(&database.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Cuttable::start(upstream).await;
    let mut via_proxy = url.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();

    let admin_store = store::connect(&database.url).await.unwrap();
    // The clock stands still: the cut-off replica keeps trusting its memory, so only the
    // feed can tell it what changed meanwhile.
    let clock = ManualClock::new(T0);
    let (kept, kept_secret, changed, changed_secret) = {
        let mut made = Vec::new();
        for name in ["kept", "changed"] {
            let (record, secret) = admin::create_client(
                admin_store.as_ref(),
                &clock,
                &latchkey_server::model::Actor::Cli("test".into()),
                admin::NewClient {
                    name: name.into(),
                    ..new_client()
                },
            )
            .await
            .unwrap()
            .value;
            made.push((record.client_id, secret.expose().to_owned()));
        }
        let (changed, changed_secret) = made.pop().unwrap();
        let (kept, kept_secret) = made.pop().unwrap();
        (kept, kept_secret, changed, changed_secret)
    };
    let replica_store = store::connect(via_proxy.as_str()).await.unwrap();
    let config = ServerConfig {
        janitor_interval: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let app = Application::build(config, replica_store, Arc::new(clock.clone()))
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let http = reqwest::Client::new();
    assert_eq!(
        token_status(&http, &base, &changed, &changed_secret).await,
        200
    );
    assert_eq!(token_status(&http, &base, &kept, &kept_secret).await, 200);

    proxy.cut();
    // While it is cut off: the client is disabled and more than a feed batch of other changes
    // is not made, so the replica must read the entries, not drop everything.
    admin_store
        .update_client(
            &crate::helpers::audit(),
            &changed,
            &latchkey_server::model::ClientUpdate {
                enabled: Some(false),
                ..latchkey_server::model::ClientUpdate::default()
            },
            T0,
        )
        .await
        .unwrap();
    // Cached, and the feed not yet read: the replica still answers from memory.
    assert_eq!(token_status(&http, &base, &kept, &kept_secret).await, 200);

    proxy.restore();
    let started = Instant::now();
    loop {
        let status = token_status(&http, &base, &changed, &changed_secret).await;
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replica never followed the change (last answer {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(token_status(&http, &base, &kept, &kept_secret).await, 200);

    // Cut off again, and this time the entries it missed are purged before it returns (as
    // the janitor does once they are far behind): it finds the gap and drops every cached
    // client, so the change still reaches it.
    proxy.cut();
    admin_store
        .update_client(
            &crate::helpers::audit(),
            &kept,
            &latchkey_server::model::ClientUpdate {
                enabled: Some(false),
                ..latchkey_server::model::ClientUpdate::default()
            },
            T0,
        )
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::raw_sql("DELETE FROM changes")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(token_status(&http, &base, &kept, &kept_secret).await, 200);
    proxy.restore();
    let started = Instant::now();
    while token_status(&http, &base, &kept, &kept_secret).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replica never noticed the gap in the feed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    database.drop_database().await;
}
