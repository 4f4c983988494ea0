//! Persistent token stores: a file and Redis let separate processes (here: separate
//! `ClientCredentials` with separate memory caches) share a token while it is valid.

use latchkey_client::{FileStore, RedisStore, TokenStore as _};

use crate::helpers::{Registered, Stack, spawn_stack};

/// Two independent clients (as two processes would be) on one store: one token request.
async fn check_store_is_shared(
    stack: &Stack,
    client: &Registered,
    store: impl Fn() -> Box<dyn Fn(latchkey_client::Builder) -> latchkey_client::Builder>,
) {
    let first = store()(stack.builder(client)).build().await.unwrap();
    let second = store()(stack.builder(client)).build().await.unwrap();
    let a = first.token().await.unwrap();
    let b = second.token().await.unwrap();
    assert_eq!(a.secret(), b.secret());
    assert_eq!(a.expires_at(), b.expires_at());
    assert_eq!(stack.relay.token_requests(), 1);

    // A third "process" with another scope does not get that token.
    let other = store()(stack.builder(client).scope("write"))
        .build()
        .await
        .unwrap();
    assert_ne!(other.token().await.unwrap().secret(), a.secret());
    assert_eq!(stack.relay.token_requests(), 2);

    // Past expiry the stored token is not used: a new process asks the server.
    stack.advance(900);
    let later = store()(stack.builder(client)).build().await.unwrap();
    let c = later.token().await.unwrap();
    assert_ne!(c.secret(), a.secret());
    assert_eq!(stack.relay.token_requests(), 3);

    // The refresh one process makes is picked up by the other when its own token is due.
    let d = first.token().await.unwrap();
    assert_eq!(d.secret(), c.secret());
    assert_eq!(stack.relay.token_requests(), 3);

    // A token the API rejected is removed from the store too.
    later.invalidate(&c).await;
    let fresh = store()(stack.builder(client)).build().await.unwrap();
    assert_ne!(fresh.token().await.unwrap().secret(), c.secret());
    assert_eq!(stack.relay.token_requests(), 4);
}

#[tokio::test]
async fn a_file_store_is_shared_between_processes() {
    let stack = spawn_stack().await;
    let client = stack.register(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let clock = stack.client_clock.clone();
    let file = path.clone();
    check_store_is_shared(&stack, &client, move || {
        let store = FileStore::new(&file).with_clock(clock.clone());
        Box::new(move |builder| builder.store(store.clone()))
    })
    .await;

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
    check_store_is_shared(&stack, &client, move || {
        let store = store.clone();
        Box::new(move |builder| builder.store(store.clone()))
    })
    .await;
}
