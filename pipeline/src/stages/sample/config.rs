//! `[sample]`: the sample stage's settings, their defaults and their checks.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[sample]`: the deterministic sample of documents.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Documents in the sample, over all sources.
    #[serde(default = "default_sample_size")]
    pub size: u64,
    /// Seed of the sample keys: another seed, another sample.
    #[serde(default = "crate::config::default_seed")]
    pub seed: u64,
    /// Rows decoded at a time from an input file.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Rows per output part file of the docs table.
    #[serde(default = "default_part_rows")]
    pub part_rows: usize,
    /// Input files scanned at the same time (0 = one per CPU core).
    #[serde(default)]
    pub threads: usize,
    /// Documents shorter than this many characters are skipped (0 keeps all, empty texts never count).
    #[serde(default)]
    pub min_chars: u64,
}

fn default_sample_size() -> u64 {
    200_000
}

fn default_batch_rows() -> usize {
    4096
}

fn default_part_rows() -> usize {
    50_000
}

impl SampleConfig {
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 {
            bail!("sample.size must be at least 1");
        }
        if self.batch_rows == 0 || self.part_rows == 0 {
            bail!("sample.batch_rows and sample.part_rows must be at least 1");
        }
        Ok(())
    }
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            size: default_sample_size(),
            seed: crate::config::default_seed(),
            batch_rows: default_batch_rows(),
            part_rows: default_part_rows(),
            threads: 0,
            min_chars: 0,
        }
    }
}
