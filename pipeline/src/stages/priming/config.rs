//! `[priming]`: the priming stage's settings, their defaults and their checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::conditions;

/// `[priming]`: Countdown priming sets, one per condition, written by the LLM (the sets'
/// tokenizer, special tokens, clip, shard size and test split come from `[build]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrimingConfig {
    /// Puzzles per condition (the study: about 1000); the same puzzles for every condition.
    #[serde(default = "default_priming_tasks")]
    pub tasks: usize,
    /// Seeds the puzzle generator.
    #[serde(default)]
    pub seed: u64,
    /// The conditions to write (default: all eight; `empty_cot` and `placeholder` are made
    /// from the `all_strategies` traces, which are then asked for too).
    #[serde(default = "default_priming_conditions")]
    pub conditions: Vec<String>,
    /// Folder of one prompt per LLM condition (`<condition>.md`, with `{{puzzle}}`).
    #[serde(default = "default_priming_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Longest reply, in tokens.
    #[serde(default = "default_priming_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_priming_temperature")]
    pub temperature: f64,
    /// Times a rejected reply is asked again (with the reason).
    #[serde(default = "default_priming_reasks")]
    pub reasks: u32,
    /// Puzzles from a TinyZero task file (`target`, `nums`) instead of the generator: its
    /// first `tasks` rows.
    #[serde(default)]
    pub tasks_file: Option<PathBuf>,
    /// The generator's puzzles (default: the study's, 3 or 4 numbers up to 99, targets 10..=25).
    #[serde(default)]
    pub generate: countdown::task::TaskSpec,
    /// The `placeholder` condition's token (must be one token of the build tokenizer).
    #[serde(default = "default_placeholder")]
    pub placeholder: String,
}

fn default_priming_tasks() -> usize {
    1000
}

fn default_priming_conditions() -> Vec<String> {
    conditions::names().into_iter().map(String::from).collect()
}

fn default_priming_prompts_dir() -> PathBuf {
    PathBuf::from("configs/prompts/priming")
}

fn default_priming_max_tokens() -> u32 {
    2048
}

fn default_priming_temperature() -> f64 {
    0.7
}

fn default_priming_reasks() -> u32 {
    2
}

fn default_placeholder() -> String {
    "...".into()
}

impl PrimingConfig {
    pub fn validate(&self) -> Result<()> {
        if self.tasks == 0 || self.max_tokens == 0 {
            bail!("priming.tasks and priming.max_tokens must be at least 1");
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.conditions {
            if conditions::source(c).is_none() {
                bail!("priming.conditions: unknown condition `{c}`; known: {}", conditions::names().join(", "));
            }
            if !seen.insert(c) {
                bail!("priming.conditions: `{c}` is listed twice");
            }
        }
        let g = &self.generate;
        if g.min_numbers < 2 || g.min_numbers > g.max_numbers || g.max_numbers > 6 || g.min_number > g.max_number || g.min_target > g.max_target {
            bail!("priming.generate: need 2 <= min_numbers <= max_numbers <= 6, min_number <= max_number and min_target <= max_target");
        }
        Ok(())
    }
}

impl Default for PrimingConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
