//! Sources of documents: a dataset repo on the hub, or a local folder of parquet / JSONL
//! files. A source resolves to a sorted list of input files, each read for only the two
//! columns the pipeline needs (text and url).

pub mod config;
pub mod read;
pub mod resolve;

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::hub::RepoFile;
use crate::hub::glob::Includes;
use crate::sources::config::SourceConfig;

/// Where a source's files come from.
#[derive(Clone, Debug)]
pub enum SourceKind {
    Hub { repo: String, revision: String },
    Local { root: PathBuf },
}

/// A checked `[[sources]]` entry.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    pub includes: Includes,
    pub include_patterns: Vec<String>,
    pub weight: f64,
    pub text_column: String,
    pub url_column: String,
}

impl Source {
    /// Checks a config entry; relative local paths are resolved with `resolve_path`.
    pub fn from_config(cfg: &SourceConfig, resolve_path: impl Fn(&std::path::Path) -> PathBuf) -> Result<Self> {
        let kind = match cfg.kind.as_str() {
            "hub" => SourceKind::Hub { repo: cfg.repo.clone().unwrap_or_default(), revision: cfg.revision.clone().unwrap_or_else(|| "main".into()) },
            "local" => SourceKind::Local { root: resolve_path(cfg.path.as_deref().unwrap_or(std::path::Path::new("."))) },
            other => bail!("source `{}`: unknown kind `{other}`", cfg.name),
        };
        let include_patterns = if cfg.include.is_empty() { vec!["*.parquet".to_string(), "*.jsonl".to_string()] } else { cfg.include.clone() };
        Ok(Source {
            name: cfg.name.clone(),
            kind,
            includes: Includes::new(&include_patterns)?,
            include_patterns,
            weight: cfg.weight,
            text_column: cfg.text_column.clone(),
            url_column: cfg.url_column.clone(),
        })
    }

    /// `owner/name` for hub sources, the folder for local ones.
    pub fn origin(&self) -> String {
        match &self.kind {
            SourceKind::Hub { repo, .. } => repo.clone(),
            SourceKind::Local { root } => root.display().to_string(),
        }
    }
}

/// The file format, from the file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Jsonl,
}

impl Format {
    pub fn of(path: &str) -> Option<Format> {
        if path.ends_with(".parquet") {
            Some(Format::Parquet)
        } else if path.ends_with(".jsonl") || path.ends_with(".ndjson") {
            Some(Format::Jsonl)
        } else {
            None
        }
    }
}

/// Where an input file's bytes are.
#[derive(Clone, Debug)]
pub enum Location {
    Hub { repo: String, commit: String, file: RepoFile },
    Local(PathBuf),
}

/// One input file of one source: the unit of work of the sample stage.
#[derive(Clone, Debug)]
pub struct InputFile {
    /// Index of the source in the config.
    pub source: usize,
    /// Position in the run's sorted list of all input files (stable for a pinned revision).
    pub ordinal: usize,
    /// Path inside the repo or the local folder (the `file` lineage column).
    pub file: String,
    /// Commit sha for hub files, `local` for local ones (the `revision` lineage column).
    pub revision: String,
    pub size: u64,
    pub format: Format,
    pub location: Location,
    /// A fingerprint of the content: the hub etag, or size + mtime for local files.
    pub fingerprint: String,
}
