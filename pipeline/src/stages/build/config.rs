//! `[build]`: the build stage's settings, their defaults and their checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[build]`: the two token-matched training sets made from the rewrites.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildConfig {
    /// The Llama-3 `tokenizer.json` that counts and packs the tokens.
    pub tokenizer: PathBuf,
    /// Completion tokens per set (the study: 8.3M).
    pub budget_tokens: u64,
    /// How far below the budget a set may end, as a fraction (0.001 = 0.1%).
    pub tolerance: f64,
    /// Completions are counted (and packed) up to this many tokens.
    pub max_completion_tokens: u32,
    /// How an example counts against the budget: `completion` (its completion tokens as
    /// packed) or `study` (as the study counted: a BOS token, a leading newline and the
    /// completion, up to `max_completion_tokens` in all).
    pub count_tokens: TokenCount,
    /// Pick the two sets so that their completion lengths have the same distribution.
    pub match_lengths: bool,
    /// Length bins (quantiles of both sets together) that matching pairs examples within.
    pub length_bins: usize,
    /// Share of each set held out as its test split.
    pub test_fraction: f64,
    /// Seeds the shuffle and the test split.
    pub seed: u64,
    /// Rows per shard file (the same rows in the parquet, JSONL and Megatron shards).
    pub shard_rows: usize,
    /// Folder of `prompt.md`, the conversation template around `{{question}}`.
    pub prompts_dir: PathBuf,
    /// Token put before each packed sequence (`""`: none).
    pub bos_token: String,
    /// Token put after each packed sequence (`""`: none).
    pub eos_token: String,
    /// The license named in the dataset card (the study's sources are ODC-By).
    pub license: String,
}

/// How an example counts against the budget (`build.count_tokens`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCount {
    /// Its completion tokens, clipped at `max_completion_tokens` (what is trained on).
    #[default]
    Completion,
    /// The study's count: BOS + `"\n"` + the completion, clipped at `max_completion_tokens`.
    /// A completion starts with `<think>`, and the Llama-3 pre-tokenizer keeps a newline
    /// apart from it, so the newline is one token.
    Study,
}

impl TokenCount {
    /// The tokens an example of `completion_tokens` counts for.
    pub fn count(self, completion_tokens: usize, max_completion_tokens: usize) -> usize {
        match self {
            TokenCount::Completion => completion_tokens.min(max_completion_tokens),
            TokenCount::Study => (completion_tokens + 2).min(max_completion_tokens),
        }
    }
}

impl BuildConfig {
    pub fn validate(&self) -> Result<()> {
        if self.budget_tokens == 0 || !(0.0..0.5).contains(&self.tolerance) || self.tolerance.is_nan() {
            bail!("build.budget_tokens must be at least 1 and build.tolerance within 0..0.5 (0.001 = 0.1%)");
        }
        if self.max_completion_tokens == 0 || self.length_bins == 0 || self.shard_rows == 0 {
            bail!("build.max_completion_tokens, build.length_bins and build.shard_rows must be at least 1");
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            bail!("build.test_fraction must be within 0..1 (0.05 = 5%), got {}", self.test_fraction);
        }
        Ok(())
    }
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            tokenizer: PathBuf::from("${HABITS_CACHE}/tokenizers/llama3/tokenizer.json"),
            budget_tokens: 8_300_000,
            tolerance: 0.001,
            max_completion_tokens: 4096,
            count_tokens: Default::default(),
            match_lengths: true,
            length_bins: 32,
            test_fraction: 0.05,
            seed: 20250304,
            shard_rows: 10_000,
            prompts_dir: PathBuf::from("configs/prompts/build"),
            bos_token: "<|begin_of_text|>".into(),
            eos_token: "<|end_of_text|>".into(),
            license: "odc-by".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_study_counts_bos_and_a_newline_within_the_clip() {
        assert_eq!(TokenCount::Completion.count(10, 4096), 10);
        assert_eq!(TokenCount::Study.count(10, 4096), 12);
        assert_eq!((TokenCount::Completion.count(5000, 4096), TokenCount::Study.count(4095, 4096)), (4096, 4096));
    }
}
