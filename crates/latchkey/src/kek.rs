//! Reading the key-encryption key from LATCHKEY_KEY_ENCRYPTION_KEY or a file.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use latchkey_server::kek::KeyEncryptionKey;

use crate::cli::GlobalArgs;

/// The environment variable that holds the key itself.
const ENV: &str = "LATCHKEY_KEY_ENCRYPTION_KEY";

/// The configured KEK, if any. Both sources at once is an error, so there is never a doubt
/// which key is in use.
pub fn load(global: &GlobalArgs) -> anyhow::Result<Option<Arc<KeyEncryptionKey>>> {
    let from_env = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty());
    let text = match (&global.key_encryption_key_file, from_env) {
        (Some(_), Some(_)) => {
            bail!("both {ENV} and --key-encryption-key-file are set; use one")
        }
        (Some(path), None) => {
            warn_if_readable_by_others(path);
            std::fs::read_to_string(path).with_context(|| {
                format!("reading the key-encryption key from {}", path.display())
            })?
        }
        (None, Some(value)) => value,
        (None, None) => return Ok(None),
    };
    let kek = KeyEncryptionKey::from_base64(&text).context("the key-encryption key")?;
    Ok(Some(Arc::new(kek)))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} can be read by other users; `chmod 600` it",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &std::path::Path) {}
