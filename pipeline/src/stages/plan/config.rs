//! `[plan]`: the assumptions of the dry run's estimates, with their defaults and checks.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[plan]`: assumptions of the dry run's cost estimate for the LLM stages.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanConfig {
    /// Bytes of UTF-8 text per model token, for estimates before a tokenizer has run.
    pub bytes_per_token: f64,
    /// Prompt tokens of one classification template without the document.
    pub template_tokens: u64,
    /// Share of sampled documents expected to reach the rewrite stage.
    pub rewrite_share: f64,
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
        Self { bytes_per_token: 3.6, template_tokens: 700, rewrite_share: 0.35 }
    }
}
