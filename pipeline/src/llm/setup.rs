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

/// Connects `stage`; the servers are, in order of precedence: `endpoints` and `model` from
/// the command line, the stage's own (`[llm.<stage>]`), the config's `[llm]`.
pub async fn connect(cfg: &LoadedConfig, stage: &str, endpoints: &[String], model: Option<&str>, run_root: &Path) -> Result<Connection> {
    let l = &cfg.config.llm;
    let own = l.stage_server(stage);
    let mut endpoints = match (endpoints, own) {
        ([], Some(s)) if !s.endpoints.is_empty() => s.endpoints.clone(),
        ([], _) => l.endpoints.clone(),
        (given, _) => given.to_vec(),
    };
    let model = model.or(own.and_then(|s| s.model.as_deref())).unwrap_or(&l.model).to_string();
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
