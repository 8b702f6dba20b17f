//! `[hub]`: where the hub is and how hard to lean on it, with the defaults and checks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[hub]`: how files are fetched from the Hugging Face hub (or a mirror).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's address; `HF_ENDPOINT` overrides it, as in the hub's own tools.
    pub endpoint: Option<String>,
    /// The hub cache; default `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Files downloaded at the same time.
    pub concurrency: usize,
    /// Attempts per request before giving up on retryable failures (429, 5xx, timeouts).
    pub max_attempts: u32,
    /// First backoff delay in milliseconds; doubles per attempt, with full jitter.
    pub backoff_ms: u64,
    /// Ceiling of one backoff delay (and of an honoured `Retry-After`), in seconds.
    pub backoff_max_s: u64,
    /// Seconds without a byte before a request counts as timed out.
    pub read_timeout_s: u64,
    /// Seconds one API request (a revision, a listing page, a footer read) may take in
    /// all; downloads are bounded by `read_timeout_s` and resume instead.
    pub request_deadline_s: u64,
    /// Pages one listing may have before it counts as a server that never ends.
    pub max_listing_pages: u32,
    /// Keep downloaded shards in the cache after sampling (false frees disk as it goes).
    pub keep_downloads: bool,
}

impl HubConfig {
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            bail!("hub.concurrency must be at least 1");
        }
        if self.max_attempts == 0 {
            bail!("hub.max_attempts must be at least 1");
        }
        if self.request_deadline_s == 0 || self.max_listing_pages == 0 {
            bail!("hub.request_deadline_s and hub.max_listing_pages must be at least 1");
        }
        Ok(())
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            endpoint: Default::default(),
            cache_dir: Default::default(),
            concurrency: 4,
            max_attempts: 8,
            backoff_ms: 1000,
            backoff_max_s: 120,
            read_timeout_s: 60,
            request_deadline_s: 300,
            max_listing_pages: 10_000,
            keep_downloads: true,
        }
    }
}
