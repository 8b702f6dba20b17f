//! `[llm]` and `[llm.serve]`: the served model, the client's limits and a local server, with their defaults and checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[llm]`: the served model and how hard to push it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// OpenAI-compatible base URLs ending in `/v1`; requests are spread over all of them.
    pub endpoints: Vec<String>,
    /// The model name the servers expect (vLLM: the served model name).
    pub model: String,
    /// The environment variable holding the API key (never written in the config itself).
    pub api_key_env: String,
    /// Requests in flight per endpoint at the start; adapts between min and max.
    pub concurrency: usize,
    pub min_concurrency: usize,
    pub max_concurrency: usize,
    /// Seconds one request may take.
    pub timeout_s: u64,
    /// Attempts per request for retryable failures.
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub backoff_max_s: u64,
    /// Stop a stage after this many requests in a row to one endpoint failed with a
    /// failure only a configuration fix cures (401/403, 404, a rejected request); 0: never.
    pub breaker_after: u32,
    /// A stage whose failed requests exceed this share of its requests writes its table
    /// with state `incomplete` and exits non-zero (0 to 1).
    pub max_failed_share: f64,
    /// Constrain answers to the expected format: `none`, `llama_cpp` (a GBNF `grammar`)
    /// or `vllm` (`structured_outputs.regex`). Small models need it; the study used none.
    pub structured_output: String,
    /// Start a local `llama-server` for the run instead of using `endpoints`.
    pub serve: Option<ServeConfig>,
    /// `[llm.classify]`, `[llm.rewrite]`, `[llm.priming]`: a stage's own servers (the
    /// study classified at a 4,096-token context and rewrote at 8,192).
    pub classify: Option<StageServer>,
    pub rewrite: Option<StageServer>,
    pub priming: Option<StageServer>,
    /// `[llm.priming_sample]`: the model sampled for the wrong-answer priming condition
    /// (served with `/v1/completions`: a base or primed model, not a chat model).
    pub priming_sample: Option<StageServer>,
}

/// A stage's own servers, in place of `llm.endpoints` and `llm.model`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageServer {
    pub endpoints: Vec<String>,
    pub model: Option<String>,
}

/// `[llm.serve]`: a `llama-server` started and stopped by the pipeline (the offline demo).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The `llama-server` binary (`make llm-assets` builds it).
    pub binary: PathBuf,
    /// The GGUF model file.
    pub model_file: PathBuf,
    /// Context size over all slots (`-c`).
    pub context: u32,
    /// Requests served at once (`-np`); each gets `context / parallel` tokens.
    pub parallel: u32,
    /// CPU threads (`-t`).
    pub threads: u32,
    /// Seconds to wait for the model to load.
    pub startup_timeout_s: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("${HABITS_CACHE}/bin/llama-server"),
            model_file: PathBuf::from("${HABITS_CACHE}/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            context: 8192,
            parallel: 2,
            threads: 1,
            startup_timeout_s: 120,
        }
    }
}

impl LlmConfig {
    /// The servers of LLM stage `stage` (its journal's name), if it has its own.
    pub fn stage_server(&self, stage: &str) -> Option<&StageServer> {
        match stage {
            "classify" => self.classify.as_ref(),
            "rewrite" => self.rewrite.as_ref(),
            "priming" => self.priming.as_ref(),
            "priming_sample" => self.priming_sample.as_ref(),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.min_concurrency == 0 || self.min_concurrency > self.max_concurrency || self.max_attempts == 0 {
            bail!("llm: need 1 <= min_concurrency <= max_concurrency and max_attempts >= 1");
        }
        if !(0.0..=1.0).contains(&self.max_failed_share) {
            bail!("llm.max_failed_share = {}: give a share from 0 to 1 (0.1 lets a tenth of the requests fail)", self.max_failed_share);
        }
        let stages = [("classify", &self.classify), ("rewrite", &self.rewrite), ("priming", &self.priming), ("priming_sample", &self.priming_sample)];
        let stage_endpoints = stages.iter().filter_map(|(name, s)| s.as_ref().map(|s| (format!("llm.{name}.endpoints"), &s.endpoints)));
        for (key, endpoints) in std::iter::once(("llm.endpoints".to_string(), &self.endpoints)).chain(stage_endpoints) {
            if let Some(e) = endpoints.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
                bail!("{key}: `{e}` is not an http(s) URL; give the base URL ending in /v1, e.g. http://127.0.0.1:8000/v1");
            }
        }
        if !["none", "llama_cpp", "vllm"].contains(&self.structured_output.as_str()) {
            bail!("llm.structured_output `{}`: use \"none\", \"llama_cpp\" or \"vllm\"", self.structured_output);
        }
        Ok(())
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            endpoints: Default::default(),
            model: Default::default(),
            api_key_env: "OPENAI_API_KEY".into(),
            concurrency: 32,
            min_concurrency: 1,
            max_concurrency: 256,
            timeout_s: 600,
            max_attempts: 6,
            backoff_ms: 1000,
            backoff_max_s: 60,
            breaker_after: 8,
            max_failed_share: 0.1,
            structured_output: "none".into(),
            serve: Default::default(),
            classify: Default::default(),
            rewrite: Default::default(),
            priming: Default::default(),
            priming_sample: Default::default(),
        }
    }
}
