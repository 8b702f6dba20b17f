//! Turning sources into input files: hub sources are pinned to a commit and listed;
//! local folders are walked. The list is sorted, so ordinals are the same on every machine.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Format, InputFile, Location, Source, SourceKind};
use crate::hub::HubClient;

/// A source with its pinned revision and files.
#[derive(Clone, Debug)]
pub struct ResolvedSource {
    pub source: Source,
    /// The commit sha (hub) or `local`.
    pub commit: String,
    pub files: Vec<InputFile>,
}

/// Resolves every source; `pins` maps a source name to a commit recorded by an earlier
/// run, so that a resumed run keeps reading the same revision even if a branch moved.
pub async fn resolve_sources(
    sources: &[Source],
    client: Option<&HubClient>,
    pins: &std::collections::BTreeMap<String, (String, String)>,
) -> Result<Vec<ResolvedSource>> {
    let mut out = Vec::new();
    let mut ordinal = 0;
    for (index, source) in sources.iter().enumerate() {
        let (commit, mut files) = match &source.kind {
            SourceKind::Hub { repo, revision } => {
                let client = client.context("internal: a hub source needs a hub client")?;
                let commit = match pins.get(&source.name) {
                    Some((rev, commit)) if rev == revision => commit.clone(),
                    _ => client.commit_sha(repo, revision).await?,
                };
                let listed = client.list_files(repo, &commit, &source.includes).await?;
                let mut files = Vec::new();
                for f in listed {
                    let Some(format) = Format::of(&f.path) else { continue };
                    files.push(InputFile {
                        source: index,
                        ordinal: 0,
                        file: f.path.clone(),
                        revision: commit.clone(),
                        size: f.size,
                        format,
                        fingerprint: f.etag().to_string(),
                        location: Location::Hub { repo: repo.clone(), commit: commit.clone(), file: f },
                    });
                }
                (commit, files)
            }
            SourceKind::Local { root } => ("local".to_string(), list_local(index, source, root)?),
        };
        if files.is_empty() {
            bail!(
                "source `{}` ({}) has no parquet or jsonl files matching {:?}; check `include` and the {}",
                source.name,
                source.origin(),
                source.include_patterns,
                if matches!(source.kind, SourceKind::Hub { .. }) { "revision" } else { "folder (for the demo: make demo-source)" }
            );
        }
        files.sort_by(|a, b| a.file.cmp(&b.file));
        for f in &mut files {
            f.ordinal = ordinal;
            ordinal += 1;
        }
        out.push(ResolvedSource { source: source.clone(), commit, files });
    }
    Ok(out)
}

fn list_local(index: usize, source: &Source, root: &Path) -> Result<Vec<InputFile>> {
    if !root.is_dir() {
        bail!("source `{}`: folder {} does not exist (for the demo source run `make demo-source`)", source.name, root.display());
    }
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry?;
            let path: PathBuf = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let Some(format) = Format::of(&rel) else { continue };
            if !source.includes.matches(&rel) {
                continue;
            }
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
            files.push(InputFile {
                source: index,
                ordinal: 0,
                file: rel,
                revision: "local".into(),
                size: meta.len(),
                format,
                fingerprint: format!("size={} mtime_ns={}", meta.len(), mtime),
                location: Location::Local(path),
            });
        }
    }
    Ok(files)
}
