//! `[classify]`: the classify stage's settings, their defaults and their checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[classify]`: the behavior classification stage.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyConfig {
    /// Folder of the prompt templates (`<task>.md`).
    pub prompts_dir: PathBuf,
    /// Tasks to run: any of backtracking, verification, subgoal_setting, backward_chaining,
    /// problem_solution, and `joint` (all four counts in one request, as JSON).
    pub tasks: Vec<String>,
    /// Longest answer, in tokens (the study: 1024).
    pub max_tokens: u32,
    /// Sampling temperature (the study: 0, greedy).
    pub temperature: f64,
    /// Documents are cut to this many tokens, then back to the last newline (the study: 3072).
    pub max_doc_tokens: usize,
    /// The served model's `tokenizer.json`; without it documents are cut at
    /// `max_doc_tokens * chars_per_token` characters.
    pub tokenizer: Option<PathBuf>,
    pub chars_per_token: usize,
    /// Counts above this are recorded as out of range, not believed.
    pub max_count: u32,
    /// Times an unparseable answer is asked again before it is recorded as such.
    pub reasks: u32,
}

fn default_tasks() -> Vec<String> {
    ["backtracking", "verification", "subgoal_setting", "backward_chaining", "problem_solution"].map(String::from).to_vec()
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
        Self {
            prompts_dir: PathBuf::from("configs/prompts/classify"),
            tasks: ["backtracking", "verification", "subgoal_setting", "backward_chaining", "problem_solution"].map(String::from).to_vec(),
            max_tokens: 1024,
            temperature: Default::default(),
            max_doc_tokens: 3072,
            tokenizer: Default::default(),
            chars_per_token: 4,
            max_count: 100,
            reasks: 1,
        }
    }
}
