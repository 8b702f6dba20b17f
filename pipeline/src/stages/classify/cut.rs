//! Cutting documents to the classifier's budget, as the study did: at most `max_tokens`
//! tokens of the served model's tokenizer, then back to the last newline (when there is
//! one). Without a tokenizer file, an approximation by characters is used and said so.

use std::path::Path;

use anyhow::{Result, anyhow};

/// How documents are measured.
pub enum Cutter {
    Tokenizer { tokenizer: Box<tokenizers::Tokenizer>, max_tokens: usize },
    Chars { max_chars: usize },
}

impl Cutter {
    pub fn from_tokenizer_file(path: &Path, max_tokens: usize) -> Result<Self> {
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}; point classify.tokenizer at a HF tokenizer.json", path.display()))?;
        Ok(Cutter::Tokenizer { tokenizer: Box::new(tokenizer), max_tokens })
    }

    /// The cutter a stage's config asks for: by the tokenizer file when one is given, else
    /// by characters (`max_tokens * chars_per_token`, with a warning that says so).
    pub fn for_stage(stage: &str, tokenizer: Option<&Path>, max_tokens: usize, chars_per_token: usize) -> Result<Self> {
        match tokenizer {
            Some(t) => Self::from_tokenizer_file(t, max_tokens),
            None => {
                tracing::warn!("{stage}: no tokenizer set: documents are cut at {} characters instead of {max_tokens} tokens", max_tokens * chars_per_token);
                Ok(Cutter::Chars { max_chars: max_tokens * chars_per_token })
            }
        }
    }

    /// Returns the document, cut if it is over the budget.
    pub fn cut<'a>(&self, text: &'a str) -> Result<&'a str> {
        let end = match self {
            Cutter::Chars { max_chars } => match text.char_indices().nth(*max_chars) {
                Some((i, _)) => i,
                None => return Ok(text),
            },
            Cutter::Tokenizer { tokenizer, max_tokens } => {
                // Cheap exit: no tokenizer here makes more than one token per byte.
                if text.len() <= *max_tokens {
                    return Ok(text);
                }
                let enc = tokenizer.encode(text, false).map_err(|e| anyhow!("tokenizer failed: {e}"))?;
                if enc.len() <= *max_tokens {
                    return Ok(text);
                }
                let (_, end) = enc.get_offsets()[*max_tokens - 1];
                end.min(text.len())
            }
        };
        let mut end = end;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let head = &text[..end];
        Ok(match head.rfind('\n') {
            Some(i) if i > 0 => &head[..i],
            _ => head,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_back_to_the_last_newline() {
        let c = Cutter::Chars { max_chars: 12 };
        assert_eq!(c.cut("short").unwrap(), "short");
        assert_eq!(c.cut("line one\nline two\nline three").unwrap(), "line one");
        assert_eq!(c.cut("no newline at all here").unwrap(), "no newline a");
        assert_eq!(Cutter::Chars { max_chars: 2 }.cut("äöü").unwrap(), "äö");
    }
}
