//! `[build]`: the build stage's settings, their defaults and their checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[build]`: the two token-matched training sets made from the rewrites.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The Llama-3 `tokenizer.json` that counts and packs the tokens.
    #[serde(default = "default_build_tokenizer")]
    pub tokenizer: PathBuf,
    /// Completion tokens per set (the study: 8.3M).
    #[serde(default = "default_budget_tokens")]
    pub budget_tokens: u64,
    /// How far below the budget a set may end, as a fraction (0.001 = 0.1%).
    #[serde(default = "default_budget_tolerance")]
    pub tolerance: f64,
    /// Completions are counted (and packed) up to this many tokens.
    #[serde(default = "default_max_completion_tokens")]
    pub max_completion_tokens: u32,
    /// Pick the two sets so that their completion lengths have the same distribution.
    #[serde(default = "crate::config::default_true")]
    pub match_lengths: bool,
    /// Length bins (quantiles of both sets together) that matching pairs examples within.
    #[serde(default = "default_length_bins")]
    pub length_bins: usize,
    /// Share of each set held out as its test split.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seeds the shuffle and the test split.
    #[serde(default = "crate::config::default_seed")]
    pub seed: u64,
    /// Rows per shard file (the same rows in the parquet, JSONL and Megatron shards).
    #[serde(default = "default_shard_rows")]
    pub shard_rows: usize,
    /// Folder of `prompt.md`, the conversation template around `{{question}}`.
    #[serde(default = "default_build_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Token put before each packed sequence (`""`: none).
    #[serde(default = "default_bos_token")]
    pub bos_token: String,
    /// Token put after each packed sequence (`""`: none).
    #[serde(default = "default_eos_token")]
    pub eos_token: String,
    /// The license named in the dataset card (the study's sources are ODC-By).
    #[serde(default = "default_license")]
    pub license: String,
}

fn default_build_tokenizer() -> PathBuf {
    PathBuf::from("${HABITS_CACHE}/tokenizers/llama3/tokenizer.json")
}

fn default_budget_tokens() -> u64 {
    8_300_000
}

fn default_budget_tolerance() -> f64 {
    0.001
}

fn default_max_completion_tokens() -> u32 {
    4096
}

fn default_length_bins() -> usize {
    32
}

fn default_test_fraction() -> f64 {
    0.05
}

fn default_shard_rows() -> usize {
    10_000
}

fn default_build_prompts_dir() -> PathBuf {
    PathBuf::from("configs/prompts/build")
}

fn default_bos_token() -> String {
    "<|begin_of_text|>".into()
}

fn default_eos_token() -> String {
    "<|end_of_text|>".into()
}

fn default_license() -> String {
    "odc-by".into()
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
        toml::from_str("").expect("defaults")
    }
}
