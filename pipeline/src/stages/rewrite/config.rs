//! `[rewrite]`: the rewrite stage's settings and their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[rewrite]`: the question / thoughts / answer rewrite of the selected documents.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Folder of `rich.md` and `control.md`.
    #[serde(default = "default_rewrite_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Longest answer, in tokens (the study: 5120 of a 8192 context).
    #[serde(default = "default_rewrite_max_tokens")]
    pub max_tokens: u32,
    #[serde(default)]
    pub temperature: f64,
    /// Documents are cut to this many tokens (leaving room for the answer in the context).
    #[serde(default = "default_rewrite_doc_tokens")]
    pub max_doc_tokens: usize,
    /// The served model's `tokenizer.json` for that cut; default: `classify.tokenizer`.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Times an unparseable answer is asked again.
    #[serde(default = "crate::config::default_one_u32")]
    pub reasks: u32,
    /// Thoughts + answer longer than this many times the document are refused as `too_long`.
    #[serde(default = "default_length_ratio")]
    pub max_length_ratio: f64,
}

fn default_rewrite_prompts_dir() -> PathBuf {
    PathBuf::from("configs/prompts/rewrite")
}

fn default_rewrite_max_tokens() -> u32 {
    5120
}

fn default_rewrite_doc_tokens() -> usize {
    2560
}

fn default_length_ratio() -> f64 {
    10.0
}

impl Default for RewriteConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
