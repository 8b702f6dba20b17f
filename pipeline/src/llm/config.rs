//! `[llm]` and `[llm.serve]`: the served model, the client's limits and a local server, with their defaults and checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[llm]`: the served model and how hard to push it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// OpenAI-compatible base URLs ending in `/v1`; requests are spread over all of them.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The model name the servers expect (vLLM: the served model name).
    #[serde(default)]
    pub model: String,
    /// The environment variable holding the API key (never written in the config itself).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// Requests in flight per endpoint at the start; adapts between min and max.
    #[serde(default = "default_llm_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_one")]
    pub min_concurrency: usize,
    #[serde(default = "default_llm_max_concurrency")]
    pub max_concurrency: usize,
    /// Seconds one request may take.
    #[serde(default = "default_llm_timeout_s")]
    pub timeout_s: u64,
    /// Attempts per request for retryable failures.
    #[serde(default = "default_llm_attempts")]
    pub max_attempts: u32,
    #[serde(default = "crate::config::default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_llm_backoff_max_s")]
    pub backoff_max_s: u64,
    /// Constrain answers to the expected format: `none`, `llama_cpp` (a GBNF `grammar`)
    /// or `vllm` (`structured_outputs.regex`). Small models need it; the study used none.
    #[serde(default = "default_structured_output")]
    pub structured_output: String,
    /// Start a local `llama-server` for the run instead of using `endpoints`.
    #[serde(default)]
    pub serve: Option<ServeConfig>,
}

/// `[llm.serve]`: a `llama-server` started and stopped by the pipeline (the offline demo).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The `llama-server` binary (`make llm-assets` builds it).
    #[serde(default = "default_llama_binary")]
    pub binary: PathBuf,
    /// The GGUF model file.
    #[serde(default = "default_llama_model")]
    pub model_file: PathBuf,
    /// Context size over all slots (`-c`).
    #[serde(default = "default_serve_context")]
    pub context: u32,
    /// Requests served at once (`-np`); each gets `context / parallel` tokens.
    #[serde(default = "default_serve_parallel")]
    pub parallel: u32,
    /// CPU threads (`-t`).
    #[serde(default = "crate::config::default_one_u32")]
    pub threads: u32,
    /// Seconds to wait for the model to load.
    #[serde(default = "default_serve_startup_s")]
    pub startup_timeout_s: u64,
}

fn default_llama_binary() -> PathBuf {
    PathBuf::from("${HABITS_CACHE}/bin/llama-server")
}

fn default_llama_model() -> PathBuf {
    PathBuf::from("${HABITS_CACHE}/models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn default_serve_context() -> u32 {
    8192
}

fn default_serve_parallel() -> u32 {
    2
}

fn default_serve_startup_s() -> u64 {
    120
}

fn default_api_key_env() -> String {
    "OPENAI_API_KEY".into()
}

fn default_llm_concurrency() -> usize {
    32
}

fn default_one() -> usize {
    1
}

fn default_llm_max_concurrency() -> usize {
    256
}

fn default_llm_timeout_s() -> u64 {
    600
}

fn default_llm_attempts() -> u32 {
    6
}

fn default_llm_backoff_max_s() -> u64 {
    60
}

fn default_structured_output() -> String {
    "none".into()
}

impl LlmConfig {
    pub fn validate(&self) -> Result<()> {
        if self.min_concurrency == 0 || self.min_concurrency > self.max_concurrency || self.max_attempts == 0 {
            bail!("llm: need 1 <= min_concurrency <= max_concurrency and max_attempts >= 1");
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bail!("llm.endpoints: `{e}` is not an http(s) URL; give the base URL ending in /v1, e.g. http://127.0.0.1:8000/v1");
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
        toml::from_str("").expect("defaults")
    }
}
