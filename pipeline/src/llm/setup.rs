//! Connecting a stage to its LLM: the endpoints and model from the command line or the
//! config, or a local `llama-server` started for the stage (`[llm.serve]`), and the client
//! with the config's windows, timeout and retries.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use super::local_server::LocalServer;
use super::{LlmClient, LlmSettings};
use crate::config::LoadedConfig;
use crate::retry::Backoff;
use crate::secret::Secret;

/// A connected client; a local server, if one was started, stops when this is dropped.
pub struct Connection {
    pub client: LlmClient,
    pub model: String,
    _server: Option<LocalServer>,
}

/// Connects `stage` (for messages); `endpoints` and `model` override the config when given.
pub async fn connect(cfg: &LoadedConfig, stage: &str, endpoints: &[String], model: Option<&str>, run_root: &Path) -> Result<Connection> {
    let l = &cfg.config.llm;
    let mut endpoints = if endpoints.is_empty() { l.endpoints.clone() } else { endpoints.to_vec() };
    let model = model.map(str::to_string).unwrap_or_else(|| l.model.clone());
    let server = match (&l.serve, endpoints.is_empty()) {
        (Some(serve), true) => {
            let s = LocalServer::start(serve, &cfg.resolve(&serve.binary), &cfg.resolve(&serve.model_file), &run_root.join("work").join("llama-server.log"))
                .await?;
            endpoints.push(s.endpoint.clone());
            Some(s)
        }
        _ => None,
    };
    if endpoints.is_empty() {
        bail!("{stage} needs an LLM: set llm.endpoints (and llm.model) in {} or pass --endpoint URL --model NAME", cfg.path.display());
    }
    if model.is_empty() {
        bail!("{stage} needs the served model's name: set llm.model or pass --model NAME");
    }
    let client = LlmClient::new(LlmSettings {
        endpoints,
        model: model.clone(),
        api_key: std::env::var(&l.api_key_env).ok().and_then(Secret::new),
        start_concurrency: l.concurrency,
        min_concurrency: l.min_concurrency,
        max_concurrency: l.max_concurrency,
        timeout: Duration::from_secs(l.timeout_s),
        backoff: Backoff { max_attempts: l.max_attempts, base: Duration::from_millis(l.backoff_ms), max: Duration::from_secs(l.backoff_max_s) },
        breaker_after: l.breaker_after,
        api_key_env: l.api_key_env.clone(),
    })?;
    Ok(Connection { client, model, _server: server })
}
