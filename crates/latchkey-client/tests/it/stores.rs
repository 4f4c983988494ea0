//! Persistent token stores: a file and Redis let separate processes (here: separate
//! `ClientCredentials` with separate memory caches) share a token while it is valid.

use std::time::{SystemTime, UNIX_EPOCH};

use latchkey_client::{FileStore, RedisStore, StoredToken, TokenStore};

use crate::helpers::{Registered, Stack, spawn_stack};

/// Two independent clients (as two processes would be) on one store: one token request.
async fn check_store_is_shared<S: TokenStore + Clone>(
    stack: &Stack,
    client: &Registered,
    store: S,
) {
    let with_store = |builder: latchkey_client::Builder| builder.store(store.clone());
    let first = with_store(stack.builder(client)).build().await.unwrap();
    let second = with_store(stack.builder(client)).build().await.unwrap();
    let a = first.token().await.unwrap();
    let b = second.token().await.unwrap();
    assert_eq!(a.secret(), b.secret());
    assert_eq!(a.expires_at(), b.expires_at());
    assert_eq!(stack.relay.token_requests(), 1);

    // A third "process" with another scope does not get that token.
    let other = with_store(stack.builder(client).scope("write"))
        .build()
        .await
        .unwrap();
    assert_ne!(other.token().await.unwrap().secret(), a.secret());
    assert_eq!(stack.relay.token_requests(), 2);

    // Past expiry the stored token is not used: a new process asks the server.
    stack.advance(900);
    let later = with_store(stack.builder(client)).build().await.unwrap();
    let c = later.token().await.unwrap();
    assert_ne!(c.secret(), a.secret());
    assert_eq!(stack.relay.token_requests(), 3);

    // The refresh one process makes is picked up by the other when its own token is due.
    let d = first.token().await.unwrap();
    assert_eq!(d.secret(), c.secret());
    assert_eq!(stack.relay.token_requests(), 3);

    // A token the API rejected is removed from the store too.
    later.invalidate(&c).await;
    let fresh = with_store(stack.builder(client)).build().await.unwrap();
    assert_ne!(fresh.token().await.unwrap().secret(), c.secret());
    assert_eq!(stack.relay.token_requests(), 4);

    // Another process that had not heard of the rejection writes the token back: the process
    // that saw the API reject it does not take it from the store again.
    let replay: StoredToken = serde_json::from_value(serde_json::json!({
        "access_token": c.secret(),
        "token_type": "Bearer",
        "received_at": millis(c.received_at()),
        "expires_at": millis(c.expires_at()),
    }))
    .unwrap();
    store.save(later.cache_key(), &replay).await.unwrap();
    later.token().await.unwrap();
    assert_eq!(stack.relay.token_requests(), 5, "asked the server instead");
}

/// A time as the stores keep it: milliseconds since the Unix epoch.
fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn a_file_store_is_shared_between_processes() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let store = FileStore::new(&path).with_clock(stack.client_clock.clone());
    check_store_is_shared(&stack, &client, store).await;

    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left behind");

    // A file others may read is not trusted.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = FileStore::new(&path);
    let any_key = stack.builder(&client).build().await.unwrap();
    let error = store.load(any_key.cache_key()).await.unwrap_err();
    assert!(error.to_string().contains("other users"), "{error}");
    // ...and then the client asks the server instead of failing.
    let tokens = stack.builder(&client).store(store).build().await.unwrap();
    tokens.token().await.unwrap();

    // Nor is a symbolic link to a private file, or a FIFO (which must not hang the reader).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(
        FileStore::new(&link)
            .load(any_key.cache_key())
            .await
            .is_err()
    );
    let fifo = dir.path().join("fifo.json");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        FileStore::new(&fifo).load(any_key.cache_key()),
    )
    .await
    .expect("reading a FIFO does not hang");
    assert!(read.unwrap_err().to_string().contains("not a regular file"));
}

#[tokio::test]
async fn a_redis_store_is_shared_between_processes() {
    let url = "redis://127.0.0.1:6379/";
    let probe = match RedisStore::connect(url).await {
        Ok(store) => store,
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "Redis is required under CI: {error}"
            );
            eprintln!("skipping: no Redis at {url} ({error})");
            return;
        }
    };
    drop(probe);
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    // A prefix of its own, so parallel runs do not meet.
    let prefix = format!("latchkey-test:{}:", fastrand::u64(..));
    let store = RedisStore::connect(url)
        .await
        .unwrap()
        .with_prefix(prefix)
        .with_clock(stack.client_clock.clone());
    check_store_is_shared(&stack, &client, store).await;
}
