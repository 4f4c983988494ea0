//! A token cache in one JSON file, shared by the processes of one user.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{CacheKey, StoreError, StoredToken, TokenStore};
use crate::clock::{Clock, SystemClock, to_millis};

/// Tokens in a JSON file readable only by its owner.
///
/// Every write replaces the file atomically (a new file with mode 0600 in the same directory,
/// synced, then renamed over the old one), so a reader never sees half a file. Only a regular
/// file that no one else may read or write is read, never through a symbolic link, and at most
/// 1 MiB of it: anyone who could write the file could hand this process their token. Keep it
/// in a directory of your own (`~/.cache/...`), not a shared one like `/tmp`. Writes drop
/// expired entries. Two processes writing different keys at the same moment can lose one
/// entry, which only costs one extra token request.
#[derive(Clone)]
pub struct FileStore {
    path: Arc<PathBuf>,
    clock: Arc<dyn Clock>,
    /// One writer at a time within this process.
    write: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    /// Format version: 1.
    version: u32,
    tokens: BTreeMap<String, StoredToken>,
}

const VERSION: u32 = 1;

impl FileStore {
    /// A store in the file at `path`, created on first write. The directory must exist.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore {
            path: Arc::new(path.into()),
            clock: Arc::new(SystemClock),
            write: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Uses `clock` to decide which entries have expired (for tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || work(&path)).await?
    }

    async fn rewrite(
        &self,
        edit: impl FnOnce(&mut CacheFile) + Send + 'static,
    ) -> Result<(), StoreError> {
        let _one_writer = self.write.lock().await;
        let now = to_millis(self.clock.now());
        self.blocking(move |path| {
            let mut file = read(path)?.unwrap_or_default();
            file.version = VERSION;
            file.tokens.retain(|_, token| token.expires_at > now);
            edit(&mut file);
            write_atomically(path, &serde_json::to_vec_pretty(&file)?)
        })
        .await
    }
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish()
    }
}

#[async_trait::async_trait]
impl TokenStore for FileStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<StoredToken>, StoreError> {
        let key = key.as_str().to_owned();
        self.blocking(move |path| Ok(read(path)?.and_then(|mut file| file.tokens.remove(&key))))
            .await
    }

    async fn save(&self, key: &CacheKey, token: &StoredToken) -> Result<(), StoreError> {
        let (key, token) = (key.as_str().to_owned(), token.clone());
        self.rewrite(move |file| {
            file.tokens.insert(key, token);
        })
        .await
    }

    async fn remove(&self, key: &CacheKey, access_token: &str) -> Result<(), StoreError> {
        let (key, access_token) = (key.as_str().to_owned(), access_token.to_owned());
        self.rewrite(move |file| {
            if file
                .tokens
                .get(&key)
                .is_some_and(|t| t.access_token == access_token)
            {
                file.tokens.remove(&key);
            }
        })
        .await
    }
}

/// The largest cache file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The file's contents; `None` when there is no file yet.
fn read(path: &Path) -> Result<Option<CacheFile>, StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Never through a link, and never blocking on a FIFO someone put in its place.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let opened = match options.open(path) {
        Ok(opened) => opened,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: {error}", path.display()).into()),
    };
    // Checked on the open file, so it cannot be swapped between the check and the read.
    let metadata = opened.metadata()?;
    if !metadata.is_file() {
        return Err(format!("{} is not a regular file; not using it", path.display()).into());
    }
    check_private(path, &metadata)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(opened, MAX_FILE_BYTES + 1),
        &mut bytes,
    )?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{} is larger than {MAX_FILE_BYTES} bytes", path.display()).into());
    }
    let file: CacheFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a latchkey token cache: {e}", path.display()))?;
    if file.version != VERSION {
        return Err(format!(
            "{} has unknown format version {}",
            path.display(),
            file.version
        )
        .into());
    }
    Ok(Some(file))
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt as _;
    let mode = metadata.mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is accessible to other users (mode {:o}); not using it",
            path.display(),
            mode & 0o777
        )
        .into());
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), StoreError> {
    Ok(())
}

/// Writes `bytes` to a fresh owner-only file beside `path` and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy();
    let temporary = directory.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| -> std::io::Result<()> {
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    Ok(result?)
}
