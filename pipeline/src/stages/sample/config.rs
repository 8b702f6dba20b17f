//! `[sample]`: the sample stage's settings, their defaults and their checks.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[sample]`: the deterministic sample of documents.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleConfig {
    /// Documents in the sample, over all sources.
    pub size: u64,
    /// Seed of the sample keys: another seed, another sample.
    pub seed: u64,
    /// Rows decoded at a time from an input file.
    pub batch_rows: usize,
    /// Rows per output part file of the docs table.
    pub part_rows: usize,
    /// Input files scanned at the same time (0 = one per CPU core).
    pub threads: usize,
    /// Documents shorter than this many characters are skipped (0 keeps all, empty texts never count).
    pub min_chars: u64,
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
        Self { size: 200_000, seed: 20250304, batch_rows: 4096, part_rows: 50_000, threads: Default::default(), min_chars: Default::default() }
    }
}
