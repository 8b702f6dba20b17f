//! `[[sources]]`: one source of documents (a hub dataset or a local folder), with its checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// One `[[sources]]` entry as written; [`crate::sources::Source`] is the checked form.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Short name, unique in the file; it is the `source` column of the docs table.
    pub name: String,
    /// `hub` (a dataset repo on the hub) or `local` (a folder of parquet or JSONL files).
    pub kind: String,
    /// hub: `owner/name` of the dataset repo.
    #[serde(default)]
    pub repo: Option<String>,
    /// hub: branch, tag or commit; pinned to its commit sha when the run starts.
    #[serde(default)]
    pub revision: Option<String>,
    /// hub and local: glob patterns of files to read (`*` also crosses `/`, as in the hub's tools).
    #[serde(default)]
    pub include: Vec<String>,
    /// local: the folder (relative paths are taken from the config file's folder's parent).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Share of the sample; quotas are proportional to the weights of all sources.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Column holding the document text.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column holding the document URL (optional in the data: missing values are null).
    #[serde(default = "default_url_column")]
    pub url_column: String,
}

fn default_weight() -> f64 {
    1.0
}

fn default_text_column() -> String {
    "text".into()
}

fn default_url_column() -> String {
    "url".into()
}

impl SourceConfig {
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            bail!("source name `{n}` must use only letters, digits, `-`, `_`, `.`");
        }
        if !self.weight.is_finite() || self.weight <= 0.0 {
            bail!("source `{n}`: weight must be a positive number, got {}", self.weight);
        }
        match self.kind.as_str() {
            "hub" => {
                let repo = self.repo.as_deref().unwrap_or("");
                if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
                    bail!("source `{n}`: kind = \"hub\" needs repo = \"owner/name\", got `{repo}`");
                }
                if self.path.is_some() {
                    bail!("source `{n}`: `path` is for kind = \"local\"; a hub source uses repo/revision/include");
                }
                if self.include.is_empty() {
                    bail!("source `{n}`: a hub source needs include = [\"glob\", ...], e.g. [\"data/train-*.parquet\"]");
                }
            }
            "local" => {
                if self.path.is_none() {
                    bail!("source `{n}`: kind = \"local\" needs path = \"folder of parquet or jsonl files\"");
                }
                if self.repo.is_some() || self.revision.is_some() {
                    bail!("source `{n}`: repo/revision are for kind = \"hub\"");
                }
            }
            other => bail!("source `{n}`: unknown kind `{other}`; use \"hub\" or \"local\""),
        }
        Ok(())
    }
}
