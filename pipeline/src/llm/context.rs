//! Whether a stage's requests fit its server's context, checked before the first request.
//! A stage needs room for its prompt (the template, plus the document cut at the stage's
//! `max_doc_tokens`) and the `max_tokens` it asks for. The server says how much it has:
//! vLLM's `/v1/models` gives `max_model_len`, llama.cpp's `/props` the `n_ctx` of a slot.
//! When even a prompt without document and `max_tokens` cannot fit, the stage stops with
//! the fix; when only the longest documents cannot, it warns that they will fail as
//! `context_overflow`. A server that reports nothing is not checked.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::origin::printable;
use crate::secret::Secret;

/// What one request of a stage may take, in tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextNeed {
    /// The longest prompt without its document (template, instructions).
    pub template: u64,
    /// The document at its cut (0 for stages whose prompt holds no document).
    pub document: u64,
    /// `max_tokens` of the stage.
    pub answer: u64,
}

impl ContextNeed {
    /// A stage's need from its longest prompt without document (`template_chars`, at
    /// `chars_per_token`), its document cut and its `max_tokens`.
    pub fn new(template_chars: usize, chars_per_token: usize, document: usize, answer: u32) -> Self {
        ContextNeed { template: template_chars.div_ceil(chars_per_token.max(1)) as u64, document: document as u64, answer: u64::from(answer) }
    }

    /// Tokens of the largest request.
    pub fn largest(&self) -> u64 {
        self.template + self.document + self.answer
    }

    /// Tokens of the smallest request (no document).
    pub fn smallest(&self) -> u64 {
        self.template + self.answer
    }
}

/// The context a server reports for `model`, and where it said so.
pub async fn server_context(http: &reqwest::Client, endpoint: &str, model: &str, key: Option<&Secret>) -> Option<(u64, &'static str)> {
    let get = |url: String| {
        let mut req = http.get(url).timeout(Duration::from_secs(10));
        if let Some(k) = key {
            req = req.bearer_auth(k.expose());
        }
        req.send()
    };
    if let Ok(resp) = get(format!("{endpoint}/models")).await
        && let Some(json) = json_of(resp).await
    {
        let models = json["data"].as_array().cloned().unwrap_or_default();
        let entry = models.iter().find(|m| m["id"] == model).or(models.first());
        if let Some(n) = entry.and_then(|m| m["max_model_len"].as_u64()) {
            return Some((n, "max_model_len on /v1/models"));
        }
    }
    let base = endpoint.trim_end_matches('/').trim_end_matches("/v1");
    let json = json_of(get(format!("{base}/props")).await.ok()?).await?;
    json["default_generation_settings"]["n_ctx"].as_u64().map(|n| (n, "n_ctx of a slot on /props"))
}

/// A successful answer's JSON (at most 1 MiB).
async fn json_of(resp: reqwest::Response) -> Option<serde_json::Value> {
    if !resp.status().is_success() {
        return None;
    }
    let body = crate::http_client::body_up_to(resp, 1 << 20).await.ok()?;
    if body.over_cap { None } else { serde_json::from_slice(&body.bytes).ok() }
}

/// The verdict for `stage` against a server's context: an error when no request can fit,
/// a warning when the longest documents cannot.
pub fn judge(stage: &str, need: ContextNeed, endpoint: &str, (context, source): (u64, &str)) -> Result<Option<String>> {
    let endpoint = printable(endpoint);
    if need.smallest() > context {
        bail!(
            "{stage} asks for up to {} new tokens after a prompt of ~{} tokens (more with its document), but {endpoint} has a context of {context} ({source}): \
             no request can fit. Serve the model with a larger context (vLLM: --max-model-len {}), give {stage} its own server ([llm.{stage}] endpoints), \
             or lower {stage}.max_tokens",
            need.answer,
            need.template,
            need.largest()
        );
    }
    if need.largest() > context {
        return Ok(Some(format!(
            "{stage}: {endpoint} has a context of {context} ({source}); a request with a document near the cut ({} tokens) needs {}: \
             documents longer than ~{} tokens will fail as context_overflow (serve with --max-model-len {} to fit them all)",
            need.document,
            need.largest(),
            context - need.smallest(),
            need.largest()
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_fit_is_an_error_a_partial_fit_a_warning() {
        let rewrite = ContextNeed { template: 600, document: 2560, answer: 5120 };
        let err = judge("rewrite", rewrite, "http://h:8000/v1", (4096, "max_model_len")).unwrap_err().to_string();
        assert!(err.contains("5120") && err.contains("--max-model-len 8280") && err.contains("[llm.rewrite]"), "{err}");
        assert_eq!(judge("rewrite", rewrite, "http://h:8000/v1", (8192, "max_model_len")).unwrap().map(|w| w.contains("~2472")), Some(true));
        assert_eq!(judge("rewrite", rewrite, "http://h:8000/v1", (8280, "max_model_len")).unwrap(), None);
    }
}
