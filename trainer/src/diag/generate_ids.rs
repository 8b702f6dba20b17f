//! Generation from token-id prompts with the engine PPO's rollouts run on, for comparison
//! with another implementation on the same weights (transformers' greedy `generate` on the
//! GPU machine: `scripts/gpu/greedy_parity.py`): `trainer generate --model DIR --prompts
//! PROMPTS.json`. Prints one JSON line a prompt: its new tokens and, at each step, the gap
//! between the two largest logits (a parting at a near-tie is rounding, not a defect).

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde_json::json;

use crate::ModelBackend;
use crate::diag::logits::read_rows;
use crate::diag::model_source::ModelSource;
use crate::generate::{Sampling, generate};
use crate::model::precision::Compute;
use crate::ops::kernels::Kernels;

/// What to generate.
pub struct GenerateJob {
    pub source: ModelSource,
    /// A JSON file of prompts, rows of token ids of any lengths: `[[1, 2, 3], [4, 5]]`.
    pub prompts: PathBuf,
    pub new_tokens: usize,
    /// 0: greedy.
    pub temperature: f64,
    pub seed: u64,
    pub compute: Compute,
    pub kernels: Kernels,
}

/// Generates and prints one JSON line a prompt: `{"row", "tokens", "top2_gaps"}`.
pub fn generate_ids<B: ModelBackend>(job: &GenerateJob, device: &B::Device) -> Result<()> {
    let rows = read_rows(&job.prompts)?;
    if job.new_tokens == 0 {
        bail!("--new-tokens must be at least 1");
    }
    let model = job.source.load::<B>(device)?.with_compute(job.compute).with_kernels(job.kernels);
    let vocab = model.config.vocab_size;
    let mut prompts = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(bad) = row.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            bail!("{}: token id {bad} is outside the model's vocabulary of {vocab}", job.prompts.display());
        }
        prompts.push(row.into_iter().map(|id| id as u32).collect::<Vec<u32>>());
    }
    let sampling = Sampling { max_new_tokens: job.new_tokens, temperature: job.temperature, top_p: 1.0, seed: job.seed, eos: None };
    let out = generate(&model, &prompts, &sampling, true)?;
    for (row, (tokens, logits)) in out.tokens.iter().zip(&out.logits).enumerate() {
        let gaps: Vec<f32> = logits.iter().map(|step| top_two_gap(step)).collect();
        println!("{}", json!({ "row": row, "tokens": tokens, "top2_gaps": gaps }));
    }
    Ok(())
}

/// The largest logit minus the second largest.
fn top_two_gap(logits: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > first {
            (first, second) = (x, first);
        } else if x > second {
            second = x;
        }
    }
    first - second
}

#[cfg(test)]
mod tests {
    use super::top_two_gap;

    #[test]
    fn the_gap_is_between_the_two_largest() {
        assert_eq!(top_two_gap(&[0.5, 3.0, -1.0, 2.25]), 0.75);
        assert_eq!(top_two_gap(&[1.0, 1.0]), 0.0);
    }
}
