//! `[hub]`: where the hub is and how hard to lean on it, with the defaults and checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[hub]`: how files are fetched from the Hugging Face hub (or a mirror).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's address; `HF_ENDPOINT` overrides it, as in the hub's own tools.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The hub cache; default `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Files downloaded at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts per request before giving up on retryable failures (429, 5xx, timeouts).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff delay in milliseconds; doubles per attempt, with full jitter.
    #[serde(default = "crate::config::default_backoff_ms")]
    pub backoff_ms: u64,
    /// Ceiling of one backoff delay (and of an honoured `Retry-After`), in seconds.
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: u64,
    /// Seconds without a byte before a request counts as timed out.
    #[serde(default = "default_read_timeout_s")]
    pub read_timeout_s: u64,
    /// Keep downloaded shards in the cache after sampling (false frees disk as it goes).
    #[serde(default = "crate::config::default_true")]
    pub keep_downloads: bool,
}

fn default_concurrency() -> usize {
    4
}

fn default_attempts() -> u32 {
    8
}

fn default_backoff_max_s() -> u64 {
    120
}

fn default_read_timeout_s() -> u64 {
    60
}

impl HubConfig {
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            bail!("hub.concurrency must be at least 1");
        }
        if self.max_attempts == 0 {
            bail!("hub.max_attempts must be at least 1");
        }
        Ok(())
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            endpoint: None,
            cache_dir: None,
            concurrency: default_concurrency(),
            max_attempts: default_attempts(),
            backoff_ms: crate::config::default_backoff_ms(),
            backoff_max_s: default_backoff_max_s(),
            read_timeout_s: default_read_timeout_s(),
            keep_downloads: true,
        }
    }
}
