//! Where the hub is and how to talk to it, from the config and the hub tools' variables:
//! `HF_ENDPOINT`, `HF_TOKEN` (else the token file `$HF_HOME/token`), `HF_HUB_CACHE`, `HF_HOME`.

use std::path::PathBuf;
use std::time::Duration;

use crate::hub::config::HubConfig;
use crate::retry::Backoff;
use crate::secret::Secret;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Everything the client needs, resolved.
#[derive(Clone, Debug)]
pub struct HubSettings {
    pub endpoint: String,
    pub token: Option<Secret>,
    pub cache_dir: PathBuf,
    pub concurrency: usize,
    pub backoff: Backoff,
    pub read_timeout: Duration,
    pub request_deadline: Duration,
    pub max_listing_pages: u32,
}

impl HubSettings {
    /// Resolves the config against the environment: `HF_ENDPOINT` and `HF_TOKEN` win over
    /// the file, as in the hub's own tools.
    pub fn resolve(cfg: &HubConfig, cache_override: Option<PathBuf>) -> Self {
        let endpoint =
            env_nonempty("HF_ENDPOINT").or_else(|| cfg.endpoint.clone()).unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()).trim_end_matches('/').to_string();
        HubSettings {
            endpoint,
            token: token_from_env(),
            cache_dir: cache_override.or_else(|| cfg.cache_dir.clone()).unwrap_or_else(default_cache_dir),
            concurrency: cfg.concurrency.max(1),
            backoff: Backoff {
                max_attempts: cfg.max_attempts.max(1),
                base: Duration::from_millis(cfg.backoff_ms),
                max: Duration::from_secs(cfg.backoff_max_s),
            },
            read_timeout: Duration::from_secs(cfg.read_timeout_s.max(1)),
            request_deadline: Duration::from_secs(cfg.request_deadline_s.max(1)),
            max_listing_pages: cfg.max_listing_pages.max(1),
        }
    }
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn hf_home() -> PathBuf {
    env_nonempty("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let base = env_nonempty("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home_dir().join(".cache"));
        base.join("huggingface")
    })
}

fn home_dir() -> PathBuf {
    env_nonempty("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_cache_dir() -> PathBuf {
    env_nonempty("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home().join("hub"))
}

/// `HF_TOKEN`, else the token file the hub's CLI writes at login.
fn token_from_env() -> Option<Secret> {
    if let Some(t) = env_nonempty("HF_TOKEN").and_then(Secret::new) {
        return Some(t);
    }
    let path = env_nonempty("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home().join("token"));
    std::fs::read_to_string(path).ok().and_then(Secret::new)
}
