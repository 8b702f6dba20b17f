//! The text side of RL: a Hugging Face `tokenizer.json` (Llama-3's by default, from the
//! cache `make llm-assets` fills) that turns prompts into ids and responses back into
//! text for the reward, decoded as the study's library decoded it: special tokens kept,
//! and `clean_up_tokenization_spaces` applied when the `tokenizer_config.json` beside it
//! says so (Llama-3's does: `4 .` reads `4.`, which the reward scores as a number).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::ppo::rollout::Detokenize;

/// A loaded tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub path: PathBuf,
    /// transformers' `clean_up_tokenization_spaces`, from `tokenizer_config.json`.
    pub clean_up_spaces: bool,
}

impl TextTokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            anyhow::bail!("no tokenizer at {}: run `make llm-assets` (it fetches Llama-3's), or set model.tokenizer", path.display());
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow!("{} is not a tokenizer.json: {e}", path.display()))?;
        Ok(TextTokenizer { inner, path: path.to_path_buf(), clean_up_spaces: clean_up_spaces(path)? })
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
        let text = self.inner.decode(ids, false).unwrap_or_default();
        if self.clean_up_spaces { clean_up_tokenization(&text) } else { text }
    }
}

/// The `clean_up_tokenization_spaces` flag of the `tokenizer_config.json` beside a
/// `tokenizer.json` (false when there is none, or it does not say).
fn clean_up_spaces(tokenizer: &Path) -> Result<bool> {
    let config = tokenizer.with_file_name("tokenizer_config.json");
    let Ok(bytes) = std::fs::read(&config) else { return Ok(false) };
    let json: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", config.display()))?;
    Ok(json.get("clean_up_tokenization_spaces").and_then(serde_json::Value::as_bool).unwrap_or(false))
}

/// transformers' `clean_up_tokenization`: the spaces English tokenizers put before
/// punctuation and contractions removed, in its order.
pub fn clean_up_tokenization(text: &str) -> String {
    let mut out = text.to_string();
    for (from, to) in
        [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]
    {
        out = out.replace(from, to);
    }
    out
}

/// `${HABITS_CACHE:-~/.cache/habits}/tokenizers/llama3/tokenizer.json`.
pub fn default_path() -> PathBuf {
    let cache = match std::env::var("HABITS_CACHE") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/habits"),
    };
    cache.join("tokenizers/llama3/tokenizer.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_is_transformers_in_its_order() {
        assert_eq!(clean_up_tokenization("<answer> (30 - 25 + 3) * 4 .</answer>"), "<answer> (30 - 25 + 3) * 4.</answer>");
        assert_eq!(clean_up_tokenization("it is n't , is it ? yes ! we 're here ' s"), "it isn't, is it? yes! we're here's");
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = dir.path().join("tokenizer.json");
        assert!(!clean_up_spaces(&tokenizer).unwrap(), "no config: as given");
        std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"clean_up_tokenization_spaces": true}"#).unwrap();
        assert!(clean_up_spaces(&tokenizer).unwrap());
    }
}
