//! The hub's cache layout, shared with the Python tools:
//! `datasets--owner--name/{blobs/<etag>, snapshots/<commit>/<path> -> ../../blobs/<etag>, refs/<revision>}`,
//! plus `.locks/datasets--owner--name/<etag>.lock` (flock, as Python's `filelock` takes it).
//! `pipeline fetch --local-dir` instead writes `<dir>/<path>` with its download state in
//! `<dir>/.cache/huggingface/download/`, as the hub's CLI does.

use std::path::{Path, PathBuf};

use super::error::HubError;

/// Where one file's bytes go and how a finished one is recognised.
#[derive(Clone, Debug)]
pub struct FileSlot {
    /// The file under its final name; it exists only when complete and verified.
    pub final_path: PathBuf,
    /// Bytes received so far (appended to on resume).
    pub partial_path: PathBuf,
    /// Taken while the file is written, so two processes never write the same slot.
    pub lock_path: PathBuf,
    /// The path a user opens: the snapshot link, or the local-dir file.
    pub visible_path: PathBuf,
    /// local-dir only: records commit and etag of the finished file.
    pub metadata_path: Option<PathBuf>,
}

/// A destination for downloads.
#[derive(Clone, Debug)]
pub enum Destination {
    /// The hub cache at this root.
    Cache(PathBuf),
    /// A plain folder.
    LocalDir(PathBuf),
}

impl Destination {
    /// The slot of `path` at `commit`, whose content has checksum `etag`.
    pub fn slot(&self, repo: &str, commit: &str, path: &str, etag: &str) -> FileSlot {
        match self {
            Destination::Cache(root) => {
                let folder = repo_folder(repo);
                let repo_dir = root.join(&folder);
                let blob = repo_dir.join("blobs").join(etag);
                FileSlot {
                    partial_path: repo_dir.join("blobs").join(format!("{etag}.incomplete")),
                    lock_path: root.join(".locks").join(&folder).join(format!("{etag}.lock")),
                    visible_path: repo_dir.join("snapshots").join(commit).join(path),
                    final_path: blob,
                    metadata_path: None,
                }
            }
            Destination::LocalDir(dir) => {
                let state = dir.join(".cache").join("huggingface").join("download");
                FileSlot {
                    final_path: dir.join(path),
                    partial_path: state.join(format!("{path}.incomplete")),
                    lock_path: state.join(format!("{path}.lock")),
                    visible_path: dir.join(path),
                    metadata_path: Some(state.join(format!("{path}.metadata"))),
                }
            }
        }
    }

    /// Records that `revision` (a branch or tag) points at `commit`, as the hub's tools do.
    pub fn record_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<(), HubError> {
        let Destination::Cache(root) = self else { return Ok(()) };
        if revision == commit {
            return Ok(());
        }
        let path = root.join(repo_folder(repo)).join("refs").join(revision);
        crate::run_dir::write_atomic(&path, commit.as_bytes()).map_err(|e| HubError::io("cannot write the cache ref", e))
    }
}

/// `datasets--owner--name`.
pub fn repo_folder(repo: &str) -> String {
    format!("datasets--{}", repo.replace('/', "--"))
}

impl FileSlot {
    /// Whether a verified file with this etag is already in place.
    pub fn is_complete(&self, etag: &str) -> bool {
        if !self.final_path.is_file() {
            return false;
        }
        match &self.metadata_path {
            None => true,
            Some(meta) => std::fs::read_to_string(meta).ok().is_some_and(|m| m.lines().nth(1).is_some_and(|l| l.trim() == etag)),
        }
    }

    /// After the verified bytes are at `final_path`: the snapshot link or the metadata.
    pub fn publish(&self, commit: &str, etag: &str) -> Result<(), HubError> {
        match &self.metadata_path {
            Some(meta) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                crate::run_dir::write_atomic(meta, format!("{commit}\n{etag}\n{now}\n").as_bytes())
                    .map_err(|e| HubError::io("cannot write download metadata", e))
            }
            None => link_snapshot(&self.visible_path, &self.final_path),
        }
    }
}

/// Points `link` at `blob` with a relative symlink (replacing an older one).
fn link_snapshot(link: &Path, blob: &Path) -> Result<(), HubError> {
    let dir = link.parent().ok_or_else(|| HubError::Io(format!("bad snapshot path {}", link.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| HubError::io(&format!("cannot create {}", dir.display()), e))?;
    let target = relative_path(dir, blob);
    if std::fs::read_link(link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    let tmp = crate::run_dir::temp_sibling(link);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| HubError::io(&format!("cannot link {}", link.display()), e))?;
    std::fs::rename(&tmp, link).map_err(|e| HubError::io(&format!("cannot link {}", link.display()), e))
}

/// `to` relative to the folder `from` (both under the same cache root).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to_c: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_c[common..] {
        out.push(c.as_os_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_links_are_relative_like_the_hub_tools() {
        let d = Destination::Cache(PathBuf::from("/c"));
        let s = d.slot("o/n", "abc", "data/x.parquet", "e1");
        assert_eq!(s.final_path, PathBuf::from("/c/datasets--o--n/blobs/e1"));
        assert_eq!(s.visible_path, PathBuf::from("/c/datasets--o--n/snapshots/abc/data/x.parquet"));
        let rel = relative_path(s.visible_path.parent().unwrap(), &s.final_path);
        assert_eq!(rel, PathBuf::from("../../../blobs/e1"));
    }
}
