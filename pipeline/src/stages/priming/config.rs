//! `[priming]`: the priming stage's settings, their defaults and their checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::conditions;

/// `[priming]`: Countdown priming sets, one per condition, written by the LLM (the sets'
/// tokenizer, special tokens, clip, shard size and test split come from `[build]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrimingConfig {
    /// Puzzles per condition (the study: about 1000); the same puzzles for every condition.
    pub tasks: usize,
    /// Seeds the puzzle generator.
    pub seed: u64,
    /// The conditions to write (default: all eight; `empty_cot` and `placeholder` are made
    /// from the `all_strategies` traces, which are then asked for too).
    pub conditions: Vec<String>,
    /// Folder of one prompt per LLM condition (`<condition>.md`, with `{{puzzle}}`).
    pub prompts_dir: PathBuf,
    /// Longest reply, in tokens.
    pub max_tokens: u32,
    pub temperature: f64,
    /// Which replies become rows: `as_given` (every answered reply, the study's way) or
    /// `checked` (format and answer checked by the study's reward).
    pub keep: conditions::Keep,
    /// Times a rejected reply is asked again (with the reason); `keep = "checked"` only.
    pub reasks: u32,
    /// Puzzles from a TinyZero task file (`target`, `nums`) instead of the generator: its
    /// first `tasks` rows.
    pub tasks_file: Option<PathBuf>,
    /// The generator's puzzles (default: the study's: a target in 10..=25, then 3 or 4 numbers in
    /// 1..=24 that an integer-only search brings to it, no 24-game set).
    pub generate: countdown::task::TaskSpec,
    /// The `placeholder` condition's token (must be one token of the build tokenizer).
    pub placeholder: String,
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
        Self {
            tasks: 1000,
            seed: Default::default(),
            conditions: conditions::names().into_iter().map(String::from).collect(),
            prompts_dir: PathBuf::from("configs/prompts/priming"),
            max_tokens: 2048,
            temperature: 0.7,
            keep: Default::default(),
            reasks: 2,
            tasks_file: Default::default(),
            generate: Default::default(),
            placeholder: "...".into(),
        }
    }
}
