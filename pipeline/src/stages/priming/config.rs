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
    /// Where `all_strategies_wrong` comes from: `sampled` (the study's: replies of a
    /// sampled model, `[llm.priming_sample]`, that the reward does not score 1.0) or
    /// `asked` (the LLM is asked for a well-formed equation that misses the target).
    pub wrong_answers: WrongAnswers,
    /// `[priming.sampled]`: how the wrong-answer condition is sampled.
    pub sampled: SampledConfig,
}

/// Where the wrong-answer condition's traces come from (`priming.wrong_answers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WrongAnswers {
    #[default]
    Sampled,
    Asked,
}

/// `[priming.sampled]`: the study drew 4 puzzles per trace wanted (targets 10..100, 3 or 4
/// numbers in 1..99), sampled a model once per puzzle at temperature 1 with up to 1024
/// tokens, and kept the first replies that were not correct.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampledConfig {
    /// Puzzles drawn per trace wanted (`priming.tasks`).
    pub draws_per_trace: usize,
    pub temperature: f64,
    pub max_tokens: u32,
    /// The puzzles sampled.
    pub generate: countdown::task::TaskSpec,
}

impl Default for SampledConfig {
    fn default() -> Self {
        let generate = countdown::task::TaskSpec { max_number: 99, max_target: 100, ..Default::default() };
        Self { draws_per_trace: 4, temperature: 1.0, max_tokens: 1024, generate }
    }
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
        for (key, g) in [("priming.generate", &self.generate), ("priming.sampled.generate", &self.sampled.generate)] {
            if g.min_numbers < 2 || g.min_numbers > g.max_numbers || g.max_numbers > 6 || g.min_number > g.max_number || g.min_target > g.max_target {
                bail!("{key}: need 2 <= min_numbers <= max_numbers <= 6, min_number <= max_number and min_target <= max_target");
            }
        }
        let s = &self.sampled;
        if s.draws_per_trace == 0 || s.max_tokens == 0 || !(s.temperature >= 0.0 && s.temperature.is_finite()) {
            bail!("priming.sampled: draws_per_trace and max_tokens must be at least 1, temperature a number >= 0 (the study: 4, 1024, 1.0)");
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
            max_tokens: 1024,
            temperature: 0.5,
            keep: Default::default(),
            reasks: 2,
            tasks_file: Default::default(),
            generate: Default::default(),
            placeholder: "...".into(),
            wrong_answers: Default::default(),
            sampled: Default::default(),
        }
    }
}
