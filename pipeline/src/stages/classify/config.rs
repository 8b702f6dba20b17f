//! `[classify]`: the classify stage's settings, their defaults and their checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[classify]`: the behavior classification stage.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    /// Folder of the prompt templates (`<task>.md`).
    #[serde(default = "default_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Tasks to run: any of backtracking, verification, subgoal_setting, backward_chaining,
    /// problem_solution, and `joint` (all four counts in one request, as JSON).
    #[serde(default = "default_tasks")]
    pub tasks: Vec<String>,
    /// Longest answer, in tokens (the study: 1024).
    #[serde(default = "default_classify_max_tokens")]
    pub max_tokens: u32,
    /// Sampling temperature (the study: 0, greedy).
    #[serde(default)]
    pub temperature: f64,
    /// Documents are cut to this many tokens, then back to the last newline (the study: 3072).
    #[serde(default = "default_max_doc_tokens_usize")]
    pub max_doc_tokens: usize,
    /// The served model's `tokenizer.json`; without it documents are cut at
    /// `max_doc_tokens * chars_per_token` characters.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    #[serde(default = "default_chars_per_token")]
    pub chars_per_token: usize,
    /// Counts above this are recorded as out of range, not believed.
    #[serde(default = "default_max_count")]
    pub max_count: u32,
    /// Times an unparseable answer is asked again before it is recorded as such.
    #[serde(default = "crate::config::default_one_u32")]
    pub reasks: u32,
}

fn default_prompts_dir() -> PathBuf {
    PathBuf::from("configs/prompts/classify")
}

fn default_tasks() -> Vec<String> {
    ["backtracking", "verification", "subgoal_setting", "backward_chaining", "problem_solution"].map(String::from).to_vec()
}

fn default_classify_max_tokens() -> u32 {
    1024
}

fn default_max_doc_tokens_usize() -> usize {
    3072
}

fn default_chars_per_token() -> usize {
    4
}

fn default_max_count() -> u32 {
    100
}

impl ClassifyConfig {
    pub fn validate(&self) -> Result<()> {
        let mut known = default_tasks();
        known.push("joint".into());
        for t in &self.tasks {
            if !known.contains(t) {
                bail!("classify.tasks: unknown task `{t}`; known: {}", known.join(", "));
            }
        }
        if self.max_doc_tokens == 0 {
            bail!("classify.max_doc_tokens must be at least 1");
        }
        Ok(())
    }
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
