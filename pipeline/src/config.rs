//! The run configuration: one TOML file (`configs/*.toml`), every key documented in the
//! README. Unknown keys and bad values are rejected with the file, the key and the fix.
//! Each section's settings, defaults and checks live beside what they configure (a stage's
//! in `stages/<stage>/config.rs`, the hub's, the LLM client's and a source's in their
//! folders); this module composes them with `[run]` and reads the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::hub::config::HubConfig;
use crate::llm::config::LlmConfig;
use crate::sources::config::SourceConfig;
use crate::stages::build::config::BuildConfig;
use crate::stages::classify::config::ClassifyConfig;
use crate::stages::plan::config::PlanConfig;
use crate::stages::priming::config::PrimingConfig;
use crate::stages::rewrite::config::RewriteConfig;
use crate::stages::sample::config::SampleConfig;
use crate::stages::select::config::SelectConfig;

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub run: RunConfig,
    #[serde(default)]
    pub hub: HubConfig,
    #[serde(default, rename = "sources")]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub sample: SampleConfig,
    #[serde(default)]
    pub plan: PlanConfig,
    #[serde(default)]
    pub llm: LlmConfig,
    #[serde(default)]
    pub classify: ClassifyConfig,
    #[serde(default)]
    pub select: SelectConfig,
    #[serde(default)]
    pub rewrite: RewriteConfig,
    #[serde(default)]
    pub build: BuildConfig,
    #[serde(default)]
    pub priming: PrimingConfig,
}

/// `[run]`: where the run's tables live.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The run's name: its directory is `<dir>/<name>`.
    pub name: String,
    /// The parent folder of run directories, relative to the config file's folder's parent
    /// when relative (so `configs/x.toml` with `dir = "runs"` means `./runs`).
    #[serde(default = "default_runs_dir")]
    pub dir: PathBuf,
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

/// A loaded config with the folder its relative paths are taken from.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    pub base_dir: PathBuf,
}

impl LoadedConfig {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}: check the path (configs/ holds the shipped profiles)", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config {} is invalid: {}\nfix: correct the key or value above; every key is listed in the README under \"Configuration\"",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        config.validate().with_context(|| format!("config {} is invalid", path.display()))?;
        let base_dir = base_dir_of(path);
        Ok(LoadedConfig { config, path: path.to_path_buf(), base_dir })
    }

    /// Resolves a path from the config: `${HABITS_CACHE}` and a leading `~/` are expanded,
    /// then a relative path is taken from the base folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        let p = expand_path(p);
        if p.is_absolute() { p } else { self.base_dir.join(p) }
    }

    /// The run directory `<run.dir>/<run.name>`.
    pub fn run_path(&self) -> PathBuf {
        self.resolve(&self.config.run.dir).join(&self.config.run.name)
    }

    /// Points the run at another folder (`--run DIR`): its parent becomes `run.dir`, its
    /// name `run.name`.
    pub fn set_run_path(&mut self, run: &Path) -> Result<()> {
        let abs = std::path::absolute(run).with_context(|| format!("--run {}", run.display()))?;
        let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) else {
            bail!("--run {}: give a folder below another, e.g. runs/ppo-gpu", run.display());
        };
        self.config.run.dir = dir.to_path_buf();
        self.config.run.name = name.to_string_lossy().into_owned();
        Ok(())
    }
}

/// The cache of fetched assets: `$HABITS_CACHE`, else `~/.cache/habits`.
pub fn habits_cache() -> PathBuf {
    match std::env::var("HABITS_CACHE") {
        Ok(v) if !v.trim().is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/".into())).join(".cache").join("habits"),
    }
}

/// Expands `${HABITS_CACHE}` and a leading `~/` in a config path.
pub fn expand_path(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    let s = s.replace("${HABITS_CACHE}", &habits_cache().to_string_lossy());
    match s.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/".into())).join(rest),
        None => PathBuf::from(s),
    }
}

/// Relative paths in `configs/foo.toml` are relative to the project root (the folder
/// above `configs/`); elsewhere, to the config file's own folder.
fn base_dir_of(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "configs") { dir.parent().map(Path::to_path_buf).unwrap_or(dir) } else { dir }
}

impl Config {
    /// Checks what serde cannot, section by section: value ranges, required keys per source
    /// kind, uniqueness.
    pub fn validate(&self) -> Result<()> {
        let name = &self.run.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.') {
            bail!("run.name `{name}` must be non-empty and use only letters, digits, `-`, `_`, `.` (it names a folder)");
        }
        self.hub.validate()?;
        self.sample.validate()?;
        self.plan.validate()?;
        self.llm.validate()?;
        self.classify.validate()?;
        self.build.validate()?;
        self.priming.validate()?;
        let mut names = BTreeSet::new();
        for s in &self.sources {
            s.validate()?;
            if !names.insert(&s.name) {
                bail!("source name `{}` appears twice: names must be unique", s.name);
            }
        }
        if let Some(unknown) = self.select.sources.iter().find(|s| !names.contains(s)) {
            let known: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            bail!("select.sources names `{unknown}`, which is not a [[sources]] name; known: {}", known.join(", "));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config> {
        let c: Config = toml::from_str(s).map_err(|e| anyhow::anyhow!("{e}"))?;
        c.validate()?;
        Ok(c)
    }

    const OK: &str = r#"
        [run]
        name = "t"
        [[sources]]
        name = "owm"
        kind = "hub"
        repo = "open-web-math/open-web-math"
        include = ["data/*.parquet"]
    "#;

    #[test]
    fn defaults_follow_the_study() {
        let c = parse(OK).unwrap();
        assert_eq!(c.sample.size, 200_000);
        assert_eq!(c.classify.max_doc_tokens, 3072);
        assert_eq!(c.classify.tasks.len(), 5);
        assert_eq!(c.llm.max_concurrency, 256);
        assert_eq!(c.sources[0].text_column, "text");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse(&OK.replace("[run]", "[run]\nnmae = 1")).unwrap_err().to_string();
        assert!(err.contains("nmae"), "{err}");
    }

    #[test]
    fn bad_sources_are_explained() {
        let err = parse(&OK.replace("kind = \"hub\"", "kind = \"ftp\"")).unwrap_err().to_string();
        assert!(err.contains("unknown kind `ftp`"), "{err}");
        let err = parse(&OK.replace("open-web-math/open-web-math", "owm")).unwrap_err().to_string();
        assert!(err.contains("owner/name"), "{err}");
    }
}
