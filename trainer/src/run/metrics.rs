//! Per-step metrics as JSON lines (`<output>/metrics.jsonl`): `kind` (`train` or `eval`),
//! `step`, and the values. On resume, lines after the checkpoint's step are dropped, so
//! the file always tells one continuous run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
}

impl Metrics {
    /// Opens the file, keeping only the lines of steps `<= keep_through`.
    pub fn open(path: &Path, keep_through: usize) -> Result<Self> {
        let kept: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s as usize <= keep_through))
            .map(str::to_string)
            .collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Metrics { path: path.to_path_buf(), file })
    }

    pub fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}").with_context(|| format!("cannot write {}", self.path.display()))
    }
}
