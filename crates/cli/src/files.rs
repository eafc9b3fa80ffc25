//! Files the commands write: new private files (certificates, keys, key shares), never over an
//! existing one, and JSON lines (ground truth, labels).

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// Writes a new file (never over an existing one), synced; `private` makes it readable by its
/// owner only (keys and other secrets).
pub fn create_new(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists; not overwriting it", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Writes `rows` as JSON lines to `path`.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut out = String::new();
    for row in rows {
        out.push_str(&serde_json::to_string(row)?);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
