//! The run directory `runs/<name>/`: where each stage's tables and manifests live, and the
//! one way files are written there (to a temporary name, synced, then renamed), so that a
//! file under its final name is always complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Serialize, de::DeserializeOwned};

/// A run's folder and the names inside it.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// `runs/<name>/<stage>/`: the stage's output table and its `_manifest.json`.
    pub fn stage(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// `runs/<name>/work/<stage>/<key>/`: scratch state that makes a stage resumable.
    pub fn work(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("work").join(stage).join(key)
    }
}

/// A fresh, empty staging folder beside a table folder: `<table>` is written there whole,
/// then swapped in by [`publish_table`], so readers never see half a table.
pub fn staging_for(table_dir: &Path) -> Result<PathBuf> {
    let name = table_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = table_dir.with_file_name(format!(".{name}.staging"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    Ok(staging)
}

/// Writes the manifest into the staging folder and swaps the folder in for the table.
pub fn publish_table<T: Serialize>(staging: &Path, table_dir: &Path, manifest: &T) -> Result<()> {
    write_json(&staging.join(run_contract::TABLE_MANIFEST), manifest)?;
    if table_dir.exists() {
        std::fs::remove_dir_all(table_dir).with_context(|| format!("cannot replace {}", table_dir.display()))?;
    }
    std::fs::rename(staging, table_dir).with_context(|| format!("cannot move {} to {}", staging.display(), table_dir.display()))
}

pub use run_contract::part_name;

/// A temporary sibling of `path` in the same folder (so the rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let tmp = temp_sibling(path);
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    commit_temp(&tmp, path)
}

/// Moves a finished temporary file to its final name.
pub fn commit_temp(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON file if it exists.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not valid JSON for this version; delete it to redo the stage", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Removes leftover temporary files (`.*.tmp`) of an interrupted writer in `dir`.
pub fn remove_stale_temps(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path()).ok();
        }
    }
    Ok(())
}

/// The sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}
