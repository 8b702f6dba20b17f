//! `[rewrite]`: the rewrite stage's settings and their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[rewrite]`: the question / thoughts / answer rewrite of the selected documents.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewriteConfig {
    /// Folder of `rich.md` and `control.md`.
    pub prompts_dir: PathBuf,
    /// Longest answer, in tokens (the study: 5120 of a 8192 context).
    pub max_tokens: u32,
    pub temperature: f64,
    /// Documents are cut to this many tokens (leaving room for the answer in the context).
    pub max_doc_tokens: usize,
    /// The served model's `tokenizer.json` for that cut; default: `classify.tokenizer`.
    pub tokenizer: Option<PathBuf>,
    /// Times an unparseable answer is asked again.
    pub reasks: u32,
    /// Thoughts + answer longer than this many times the document are refused as `too_long`.
    pub max_length_ratio: f64,
}

impl Default for RewriteConfig {
    fn default() -> Self {
        Self {
            prompts_dir: PathBuf::from("configs/prompts/rewrite"),
            max_tokens: 5120,
            temperature: Default::default(),
            max_doc_tokens: 2560,
            tokenizer: Default::default(),
            reasks: 1,
            max_length_ratio: 10.0,
        }
    }
}
