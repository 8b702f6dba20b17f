//! What a PPO run will hold in the card's memory, estimated from the model's shape and the
//! run's settings before anything is loaded, and checked against the card's free memory:
//! a run that cannot fit stops with one error naming the keys that make it fit.
//!
//! A run holds, throughout: the actor and the critic (each the model's f32 parameters and
//! AdamW's two moments; the critic's value head is a rounding error) and the frozen
//! reference (f32 parameters). Then two phases, one at a time:
//! - **rollouts**: the generation engine's copy of the actor's weights in the compute
//!   dtype and its key/value cache, which takes what is free (`generate::slots_that_fit`);
//!   counted here at one slot, the least it runs with;
//! - **the update**: each model's gradient sums and one micro-batch's gradients beside them,
//!   and for a micro-batch of `micro_batch` rows of prompt + response the actor's and the
//!   critic's graphs at once (the weight copies and per-token activations of
//!   `run::memory_plan`, every layer kept: PPO does not recompute), plus the actor's
//!   logits over the responses: in the compute dtype, in f32, their log-softmax and the
//!   softmax of the entropy bonus, and the f32 gradient.
//!
//! The memory options that would fit the study's 3B run on one card (a bf16 reference,
//! recomputation, optimizer state off the card or in fewer bits) are not built yet; the
//! error says what can be changed today.

use anyhow::Result;

use crate::model::config::ModelConfig;
use crate::run::memory_plan::{MemoryPlan, RESERVE, Settings, fits_surely, gb, judge_fit, with_card};

/// The settings of a PPO run that decide its memory.
#[derive(Clone, Copy, Debug)]
pub struct PpoSettings {
    /// Rows per forward/backward pass of the update (`ppo.micro_batch`).
    pub micro_batch: usize,
    /// The longest prompt, in tokens.
    pub prompt: usize,
    /// `ppo.max_response_tokens`.
    pub response: usize,
    /// Bytes of an element in the compute dtype (4 for f32 matmuls).
    pub compute_bytes: usize,
}

/// Bytes of each part, estimated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpoMemoryPlan {
    /// Actor and critic: f32 parameters and AdamW's moments.
    pub models: u64,
    pub reference: u64,
    /// The engine's weights in the compute dtype and one slot of cache.
    pub rollout: u64,
    /// Actor and critic: gradient sums and one micro-batch's beside them.
    pub gradients: u64,
    /// The actor's and the critic's graphs for one micro-batch: weight copies and activations.
    pub graphs: u64,
    /// The actor's logits over one micro-batch's responses, with their f32 companions.
    pub logits: u64,
}

impl PpoMemoryPlan {
    pub fn new(m: &ModelConfig, s: &PpoSettings) -> Self {
        const F32: u64 = 4;
        let c = s.compute_bytes as u64;
        let params = m.num_parameters() as u64;
        let sequence = s.prompt + s.response;
        // One model's update as a pretraining micro-batch of the same rows that accumulates.
        let one =
            MemoryPlan::new(m, &Settings { batch: s.micro_batch.max(1), seq_len: sequence, grad_accum: 2, recomputed: 0, compute_bytes: s.compute_bytes });
        let cache_per_row = (2 * m.num_layers * m.num_kv_heads * m.head_dim * sequence) as u64 * c;
        let response_logits = (s.micro_batch.max(1) * s.response * m.vocab_size) as u64;
        PpoMemoryPlan {
            models: 2 * (one.parameters + one.optimizer),
            reference: params * F32,
            rollout: params * c + cache_per_row,
            gradients: 2 * one.gradients,
            graphs: 2 * (one.weight_copies + one.activations),
            logits: response_logits * (c + 4 * F32),
        }
    }

    /// The larger of the two phases, with what a run holds throughout and the reserve.
    pub fn needed(&self) -> u64 {
        let update = self.gradients + self.graphs + self.logits;
        self.models + self.reference + self.rollout.max(update) + RESERVE
    }

    /// One line: every part, the total, and the card's `(free, total)` where known.
    pub fn describe(&self, card: Option<(u64, u64)>) -> String {
        let line = format!(
            "memory plan: actor and critic with AdamW {}, reference {}; rollouts {} (weights in the compute dtype, one slot of cache; the cache takes what is free); update: gradients {}, graphs {}, logits {}: {} with the reserve",
            gb(self.models),
            gb(self.reference),
            gb(self.rollout),
            gb(self.gradients),
            gb(self.graphs),
            gb(self.logits),
            gb(self.needed())
        );
        with_card(line, card)
    }
}

/// Whether the run fits in `free` bytes (`run::memory_plan::judge_fit`, the pretraining
/// plan's margin: the estimate has not been measured against a 3B PPO run yet); what would
/// fit: a smaller `ppo.micro_batch`, then shorter responses.
pub fn check_ppo_fits(m: &ModelConfig, s: &PpoSettings, free: u64) -> Result<()> {
    judge_fit(PpoMemoryPlan::new(m, s).needed(), free, || fit_error(m, s, free))
}

fn fit_error(m: &ModelConfig, s: &PpoSettings, free: u64) -> anyhow::Error {
    let plan = PpoMemoryPlan::new(m, s);
    let fits = |s: &PpoSettings| fits_surely(PpoMemoryPlan::new(m, s).needed(), free);
    let least = PpoSettings { micro_batch: 1, ..*s };
    let fix = if let Some(micro_batch) = (1..s.micro_batch).rev().find(|&n| fits(&PpoSettings { micro_batch: n, ..*s })) {
        format!("set ppo.micro_batch = {micro_batch} (it does not change what a step computes)")
    } else if let Some(response) = (1..s.response).rev().find(|&r| fits(&PpoSettings { response: r, ..least })) {
        format!("set ppo.micro_batch = 1 and ppo.max_response_tokens = {response} or fewer (this changes the study's setting)")
    } else {
        format!(
            "the actor, the critic, their optimizer state and the reference alone need {}: use a card with more memory (a bf16 reference, recomputation and optimizer state off the card are not built yet)",
            gb(plan.models + plan.reference + RESERVE)
        )
    };
    anyhow::anyhow!(
        "this PPO run needs about {} of the card's memory and {} is free ({}): {fix}",
        gb(plan.needed()),
        gb(free),
        plan.describe(None).trim_start_matches("memory plan: ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(name: &str) -> ModelConfig {
        let path = format!("{}/../configs/models/{name}", env!("CARGO_MANIFEST_DIR"));
        ModelConfig::from_hf(&serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()).unwrap()
    }

    /// The study's run: 3B, micro-batches of 4, prompts of up to 256 tokens, responses of
    /// up to 1,024, bf16 matmuls.
    fn study() -> PpoSettings {
        PpoSettings { micro_batch: 4, prompt: 256, response: 1024, compute_bytes: 2 }
    }

    /// Actor and critic are 12 bytes a parameter each, the reference 4, the gradients at
    /// least 8 each (sums and a micro-batch's), and the update outweighs the rollouts.
    #[test]
    fn the_study_plan_counts_three_models() {
        let m = shape("llama-3.2-3b-shape.json");
        let n = m.num_parameters() as u64;
        let plan = PpoMemoryPlan::new(&m, &study());
        assert_eq!(plan.models, 24 * n);
        assert_eq!(plan.reference, 4 * n);
        assert!(plan.gradients >= 16 * n - 8 * (m.vocab_size * m.hidden_size) as u64);
        assert!(plan.gradients + plan.graphs + plan.logits > plan.rollout);
        // Halving the micro-batch halves the graphs and the logits.
        let half = PpoMemoryPlan::new(&m, &PpoSettings { micro_batch: 2, ..study() });
        assert_eq!(half.logits * 2, plan.logits);
        assert!(half.graphs < plan.graphs);
    }

    /// An 80 GB card cannot hold the study's three 3B models with f32 state at all: the
    /// error says so. A smaller model that fits only with a smaller micro-batch is told
    /// which; one that fits starts.
    #[test]
    fn a_run_that_cannot_fit_names_what_would() {
        let (three, one) = (shape("llama-3.2-3b-shape.json"), shape("llama-3.2-1b-shape.json"));
        let h100 = 79_000_000_000;
        let err = check_ppo_fits(&three, &study(), h100).unwrap_err().to_string();
        assert!(err.contains("alone need") && err.contains("GB is free"), "{err}");
        let wide = PpoSettings { micro_batch: 64, ..study() };
        let err = check_ppo_fits(&one, &wide, h100).unwrap_err().to_string();
        assert!(err.contains("set ppo.micro_batch = "), "{err}");
        let fixed: usize = err.split("ppo.micro_batch = ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        assert!((1..64).contains(&fixed), "{err}");
        check_ppo_fits(&one, &PpoSettings { micro_batch: fixed, ..wide }, h100).unwrap();
    }
}
