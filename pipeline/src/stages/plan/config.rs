//! `[plan]`: the assumptions of the dry run's estimates, with their defaults and checks.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[plan]`: assumptions of the dry run's cost estimate for the LLM stages.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Bytes of UTF-8 text per model token, for estimates before a tokenizer has run.
    #[serde(default = "default_bytes_per_token")]
    pub bytes_per_token: f64,
    /// Prompt tokens of one classification template without the document.
    #[serde(default = "default_template_tokens")]
    pub template_tokens: u64,
    /// Share of sampled documents expected to reach the rewrite stage.
    #[serde(default = "default_rewrite_share")]
    pub rewrite_share: f64,
}

fn default_bytes_per_token() -> f64 {
    3.6
}

fn default_template_tokens() -> u64 {
    700
}

fn default_rewrite_share() -> f64 {
    0.35
}

impl PlanConfig {
    pub fn validate(&self) -> Result<()> {
        if !self.bytes_per_token.is_finite() || self.bytes_per_token <= 0.0 || !(0.0..=1.0).contains(&self.rewrite_share) {
            bail!("plan.bytes_per_token must be > 0 and plan.rewrite_share within 0..=1");
        }
        Ok(())
    }
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig { bytes_per_token: default_bytes_per_token(), template_tokens: default_template_tokens(), rewrite_share: default_rewrite_share() }
    }
}
