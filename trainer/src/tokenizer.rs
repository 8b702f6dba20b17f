//! The text side of RL: a Hugging Face `tokenizer.json` (Llama-3's by default, from the
//! cache `make llm-assets` fills) that turns prompts into ids and responses back into
//! text for the reward.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::ppo::rollout::Detokenize;

/// A loaded tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub path: PathBuf,
}

impl TextTokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            anyhow::bail!("no tokenizer at {}: run `make llm-assets` (it fetches Llama-3's), or set model.tokenizer", path.display());
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow!("{} is not a tokenizer.json: {e}", path.display()))?;
        Ok(TextTokenizer { inner, path: path.to_path_buf() })
    }

    /// Ids of `text`, without special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(|e| anyhow!("cannot tokenize: {e}")).context("tokenizing a prompt")?.get_ids().to_vec())
    }

    /// The id of a special token such as `<|begin_of_text|>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The sha256 of the tokenizer file.
    pub fn sha256(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(&self.path).with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

impl Detokenize for TextTokenizer {
    fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }
}

/// `${HABITS_CACHE:-~/.cache/habits}/tokenizers/llama3/tokenizer.json`.
pub fn default_path() -> PathBuf {
    let cache = match std::env::var("HABITS_CACHE") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/habits"),
    };
    cache.join("tokenizers/llama3/tokenizer.json")
}
