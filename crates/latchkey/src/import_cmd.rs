//! `latchkey client import`: clients as JSON lines, one per line, in the shape `client create
//! --output json` (and `client export`) prints.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;

use anyhow::Context as _;
use latchkey_server::Clock;
use latchkey_server::service::admin::import::{
    IMPORT_BATCH, confirm_import, prepare_client, store_batch,
};
use latchkey_server::store::Store;
use serde_json::json;

use crate::client_cmd::confirmed;

/// The longest line an import reads (a client with a large JWK Set fits many times over).
const MAX_LINE_BYTES: usize = 1 << 20;
/// How many bad lines an import reports one by one before it only counts them.
const MAX_REPORTED: usize = 100;

pub async fn import(
    store: &dyn Store,
    clock: &dyn Clock,
    file: &Path,
    from_line: u64,
    allow_private: bool,
) -> anyhow::Result<()> {
    // Standard input, a pipe or a FIFO can be read once only: such input goes to a private
    // temporary file first, so every line is checked before any is stored and the lines
    // stored are the lines checked.
    let spooled;
    let regular = file != Path::new("-")
        && std::fs::metadata(file)
            .with_context(|| format!("reading {}", file.display()))?
            .is_file();
    let path = if regular {
        file
    } else {
        let mut spool = tempfile::NamedTempFile::new().context("creating a temporary file")?;
        if file == Path::new("-") {
            std::io::copy(&mut std::io::stdin().lock(), &mut spool)
                .context("reading standard input")?;
        } else {
            let mut input =
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            std::io::copy(&mut input, &mut spool)
                .with_context(|| format!("reading {}", file.display()))?;
        }
        spooled = spool;
        spooled.path()
    };
    let now = clock.unix_seconds();

    // Pass 1: check every line; nothing is stored if one is bad.
    let mut bad = 0usize;
    let mut total = 0usize;
    // Kept ids only: a generated one is 128 random bits and clashes with nothing.
    let mut kept_ids: HashSet<String> = HashSet::new();
    for_each_line(path, from_line, async |number, line| {
        total += 1;
        let problem = match prepare_client(line, now, allow_private).await {
            Ok(client) => {
                let id = client.record.client_id;
                if !client.kept_id {
                    None
                } else if store.find_client(&id).await?.is_some() {
                    Some(format!(
                        "a client with client_id {id:?} is registered already"
                    ))
                } else if !kept_ids.insert(id) {
                    Some("the client_id appears on an earlier line too".to_owned())
                } else {
                    None
                }
            }
            Err(err) => Some(err.to_string()),
        };
        if let Some(problem) = problem {
            bad += 1;
            if bad <= MAX_REPORTED {
                eprintln!("line {number}: {problem}");
            }
        }
        Ok(())
    })
    .await?;
    drop(kept_ids);
    if bad > MAX_REPORTED {
        eprintln!("... and {} more bad lines", bad - MAX_REPORTED);
    }
    if bad > 0 {
        anyhow::bail!("{bad} of {total} lines are bad; nothing was imported");
    }

    // Pass 2: store in batches, each in one transaction; print each batch once it is stored.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut printed = Vec::with_capacity(IMPORT_BATCH);
    let mut first_line = from_line;
    let mut imported = 0usize;
    let mut flush =
        async |batch: &mut Vec<_>,
               printed: &mut Vec<String>,
               first_line: u64,
               last_line: u64|
               -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            store_batch(store, clock, &crate::cli_actor(), batch).await.with_context(|| {
            format!(
                "lines {first_line}-{last_line} could not be stored, nor any line after them; \
                 the lines before {first_line} are imported (printed above). Run again with \
                 --from-line {first_line} to import the rest"
            )
        })?;
            imported += batch.len();
            batch.clear();
            for line in printed.drain(..) {
                writeln!(stdout, "{line}")?;
            }
            stdout.flush()?;
            Ok(())
        };
    let mut last_line = from_line;
    for_each_line(path, from_line, async |number, line| {
        // Checked in pass 1; only what needs the network (a jwks_uri's or an issuer's
        // address) can fail here.
        let client = prepare_client(line, now, allow_private)
            .await
            .with_context(|| {
                let resume = if batch.is_empty() { number } else { first_line };
                format!(
                    "line {number}; the lines before {resume} are imported (printed above). Run \
                     again with --from-line {resume} to import the rest"
                )
            })?;
        if batch.is_empty() {
            first_line = number;
        }
        last_line = number;
        let mut out = json!({ "line": number, "client_id": client.record.client_id });
        if let Some(secret) = &client.generated_secret {
            out["client_secret"] = json!(secret.expose());
        }
        printed.push(out.to_string());
        batch.push(client.record);
        if batch.len() == IMPORT_BATCH {
            flush(&mut batch, &mut printed, first_line, last_line).await?;
        }
        Ok(())
    })
    .await?;
    flush(&mut batch, &mut printed, first_line, last_line).await?;
    confirmed(confirm_import(store).await?);
    eprintln!("imported {imported} clients");
    Ok(())
}

/// Calls `each` with every line's number (from 1) and text, from line `from_line` on,
/// skipping blank lines.
async fn for_each_line(
    path: &Path,
    from_line: u64,
    mut each: impl AsyncFnMut(u64, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_line(&mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        if line.len() > MAX_LINE_BYTES {
            anyhow::bail!("line {number}: longer than {MAX_LINE_BYTES} bytes");
        }
        if number < from_line || line.trim().is_empty() {
            continue;
        }
        each(number, line.trim_end_matches(['\n', '\r'])).await?;
    }
}
