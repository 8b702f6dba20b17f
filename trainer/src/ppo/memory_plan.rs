//! What a PPO run will hold in the card's memory, estimated from the model's shape and the
//! run's settings before anything is loaded, and checked against the card's free memory:
//! a run that cannot fit stops with one error naming the keys that make it fit.
//!
//! A run holds, throughout: the actor and the critic (each the model's f32 parameters and
//! AdamW's two moments, or with `ppo.optimizer_state = "host"` the moments in host memory
//! and one parameter's on the card while it is updated; the critic's value head is a
//! rounding error) and the frozen reference (in `ppo.reference_dtype`). Then two phases, one at a time:
//! - **rollouts**: the generation engine's copy of the actor's weights in the compute
//!   dtype and its key/value cache, whose blocks take what is free (`generate::blocks::cache_size`);
//!   counted here at one row, the least it runs with; then scoring, one model at a time
//!   from a copy of its projections in the compute dtype (`Llama::for_scoring`) and one
//!   micro-batch's forward without a graph: less than the update's f32 gradients and graph,
//!   so not counted apart;
//! - **the update**: the critic's epoch, then the actor's (`ppo::update`), so one model's
//!   gradients at a time: its gradient sums and one backward segment's beside them, and
//!   for a micro-batch of `micro_batch` rows of prompt + response (micro-batches cut by
//!   positions, `ppo.micro_batch_by_positions`, hold no more positions) its graph (the weight
//!   copies and per-token activations of `run::memory_plan`, with `ppo.recompute`'s layers
//!   recomputed), plus one head chunk of the actor's logits over the responses: in the
//!   compute dtype, in f32, their log-softmax and the softmax of the entropy bonus, and
//!   the f32 gradient.
//!
//! An error names what would fit, in this order: a smaller micro-batch, recomputation
//! (neither changes what a step computes), the study's bf16 reference, the optimizer state
//! in host memory (the same results, slower steps), then shorter responses.

use anyhow::Result;

use crate::model::config::ModelConfig;
use crate::run::backward::head_chunk_rows;
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
    /// Bytes of a reference parameter (`ppo.reference_dtype`).
    pub reference_bytes: usize,
    /// Decoder layers recomputed in the update's backward pass (`ppo.recompute`).
    pub recomputed: usize,
    /// AdamW's moments in host memory (`ppo.optimizer_state = "host"`).
    pub state_on_host: bool,
}

/// Bytes of each part, estimated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpoMemoryPlan {
    /// Actor and critic on the card: f32 parameters and AdamW's moments (with the moments
    /// on the host, one parameter's while it is updated).
    pub models: u64,
    /// AdamW's moments of actor and critic in host memory (0 when they are on the card).
    pub host_state: u64,
    pub reference: u64,
    /// The engine's weights in the compute dtype and one row of cache.
    pub rollout: u64,
    /// One model's gradient sums and a backward segment's beside them.
    pub gradients: u64,
    /// One model's graph for a micro-batch: weight copies and activations.
    pub graphs: u64,
    /// One head chunk of the actor's logits over the responses, with their f32 companions.
    pub logits: u64,
}

impl PpoMemoryPlan {
    pub fn new(m: &ModelConfig, s: &PpoSettings) -> Self {
        const F32: u64 = 4;
        let c = s.compute_bytes as u64;
        let params = m.num_parameters() as u64;
        let sequence = s.prompt + s.response;
        // One model's update as a pretraining micro-batch of the same rows that accumulates.
        let one = MemoryPlan::new(
            m,
            &Settings { batch: s.micro_batch.max(1), seq_len: sequence, grad_accum: 2, recomputed: s.recomputed, compute_bytes: s.compute_bytes },
        );
        let cache_per_row = (2 * m.num_layers * m.num_kv_heads * m.head_dim * sequence) as u64 * c;
        let head_rows = s.micro_batch.max(1).min(head_chunk_rows(s.response, m.vocab_size));
        let response_logits = (head_rows * s.response * m.vocab_size) as u64;
        let largest_parameter = (m.vocab_size * m.hidden_size).max(m.intermediate_size * m.hidden_size) as u64;
        let (on_card, host_state) = if s.state_on_host { (2 * F32 * largest_parameter, 2 * one.optimizer) } else { (2 * one.optimizer, 0) };
        PpoMemoryPlan {
            models: 2 * one.parameters + on_card,
            host_state,
            reference: params * s.reference_bytes as u64,
            rollout: params * c + cache_per_row,
            gradients: one.gradients,
            graphs: one.weight_copies + one.activations,
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
            "memory plan: actor and critic with AdamW {}, reference {}; rollouts {} (weights in the compute dtype, one row of cache; the cache takes what is free); update, one model at a time: gradients {}, graph {}, logits {}: {} with the reserve",
            gb(self.models),
            gb(self.reference),
            gb(self.rollout),
            gb(self.gradients),
            gb(self.graphs),
            gb(self.logits),
            gb(self.needed())
        );
        let line = if self.host_state > 0 { format!("{line}; AdamW's moments in host memory: {}", gb(self.host_state)) } else { line };
        with_card(line, card)
    }
}

/// Whether the moments kept in host memory (`host_state` bytes) fit in the `available`
/// host memory, with the estimate's margin.
pub fn check_host_fits(host_state: u64, available: u64) -> Result<()> {
    if fits_surely(host_state, available) {
        return Ok(());
    }
    anyhow::bail!(
        "ppo.optimizer_state = \"host\" keeps about {} of AdamW's moments in host memory and {} is available: free host memory, or keep the state on a card that holds it (ppo.optimizer_state = \"device\")",
        gb(host_state),
        gb(available)
    )
}

/// Whether the run fits in `free` bytes (`run::memory_plan::judge_fit`, the pretraining
/// plan's margin: the estimate has not been measured against a 3B PPO run yet); what would
/// fit: a smaller `ppo.micro_batch`, recomputation, a bf16 reference, then shorter
/// responses.
pub fn check_ppo_fits(m: &ModelConfig, s: &PpoSettings, free: u64) -> Result<()> {
    judge_fit(PpoMemoryPlan::new(m, s).needed(), free, || fit_error(m, s, free))
}

fn fit_error(m: &ModelConfig, s: &PpoSettings, free: u64) -> anyhow::Error {
    let plan = PpoMemoryPlan::new(m, s);
    let fits = |s: &PpoSettings| fits_surely(PpoMemoryPlan::new(m, s).needed(), free);
    // The largest micro-batch below `s`'s that fits with `s`'s other settings.
    let micro_batch = |s: &PpoSettings| (1..=s.micro_batch).rev().find(|&n| fits(&PpoSettings { micro_batch: n, ..*s }));
    let recomputing = PpoSettings { recomputed: m.num_layers, ..*s };
    let half_reference = PpoSettings { reference_bytes: 2.min(s.reference_bytes), ..recomputing };
    let on_host = PpoSettings { state_on_host: true, ..half_reference };
    let least = PpoSettings { micro_batch: 1, ..on_host };
    let bf16_reference = if s.reference_bytes > 2 { "ppo.reference_dtype = \"bf16\" (the study's; cuda), " } else { "" };
    let recompute = "ppo.recompute = \"layers\"";
    let fix = if let Some(n) = (1..s.micro_batch).rev().find(|&n| fits(&PpoSettings { micro_batch: n, ..*s })) {
        format!("set ppo.micro_batch = {n} (it does not change what a step computes)")
    } else if let Some(n) = micro_batch(&recomputing).filter(|_| s.recomputed < m.num_layers) {
        format!("set {recompute} and ppo.micro_batch = {n} (neither changes what a step computes)")
    } else if let Some(n) = micro_batch(&half_reference).filter(|_| s.reference_bytes > 2) {
        format!("set {bf16_reference}{recompute} and ppo.micro_batch = {n}")
    } else if let Some(n) = micro_batch(&on_host).filter(|_| !s.state_on_host) {
        format!("set ppo.optimizer_state = \"host\" (the same results, slower steps), {bf16_reference}{recompute} and ppo.micro_batch = {n}")
    } else if let Some(response) = (1..s.response).rev().find(|&r| fits(&PpoSettings { response: r, ..least })) {
        format!(
            "set ppo.optimizer_state = \"host\", {bf16_reference}{recompute}, ppo.micro_batch = 1 and ppo.max_response_tokens = {response} or fewer (this changes the study's setting)"
        )
    } else {
        let models = PpoMemoryPlan::new(m, &least);
        format!(
            "with the optimizer state in host memory the actor's and the critic's parameters alone need {} and the reference {} in bf16: use a card with more memory",
            gb(models.models + RESERVE),
            gb(models.reference)
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
        PpoSettings { micro_batch: 4, prompt: 256, response: 1024, compute_bytes: 2, reference_bytes: 4, recomputed: 0, state_on_host: false }
    }

    /// Actor and critic are 12 bytes a parameter each, the reference 4 (2 in bf16); the
    /// update holds one model's gradients (sums and a micro-batch's) and outweighs the
    /// rollouts; the actor's logits come one head chunk at a time.
    #[test]
    fn the_study_plan_counts_three_models_and_one_models_gradients() {
        let m = shape("llama-3.2-3b-shape.json");
        let n = m.num_parameters() as u64;
        let plan = PpoMemoryPlan::new(&m, &study());
        assert_eq!(plan.models, 24 * n);
        assert_eq!(plan.reference, 4 * n);
        assert_eq!(PpoMemoryPlan::new(&m, &PpoSettings { reference_bytes: 2, ..study() }).reference, 2 * n);
        assert_eq!(plan.gradients, 8 * n);
        assert!(plan.gradients + plan.graphs + plan.logits > plan.rollout);
        // A head chunk of 1,024 positions of 128,256 logits is 2 rows; one row is half.
        let one_row = PpoMemoryPlan::new(&m, &PpoSettings { micro_batch: 1, ..study() });
        assert_eq!(one_row.logits * 2, plan.logits);
        assert!(one_row.graphs < plan.graphs);
        // Recomputing every layer keeps a layer's input and one layer's activations.
        let recomputed = PpoMemoryPlan::new(&m, &PpoSettings { recomputed: m.num_layers, ..study() });
        assert!(recomputed.graphs * 3 < plan.graphs, "{recomputed:?} vs {plan:?}");
    }

    /// The settings an error's fix names, applied to `s`.
    fn apply_fix(err: &str, s: &PpoSettings, layers: usize) -> PpoSettings {
        let value = |key: &str| err.split(&format!("{key} = ")).nth(1).map(|v| v.split([' ', ',']).next().unwrap().trim_matches('"').to_string());
        PpoSettings {
            micro_batch: value("ppo.micro_batch").map_or(s.micro_batch, |v| v.parse().unwrap()),
            recomputed: if value("ppo.recompute").as_deref() == Some("layers") { layers } else { s.recomputed },
            reference_bytes: if value("ppo.reference_dtype").as_deref() == Some("bf16") { 2 } else { s.reference_bytes },
            state_on_host: value("ppo.optimizer_state").as_deref() == Some("host") || s.state_on_host,
            ..*s
        }
    }

    /// The study's 3B run: an H200 holds it with every layer recomputed; a smaller card
    /// only with the study's bf16 reference as well, an 80 GB card only with the optimizer
    /// state in host memory too, a 30 GB card not at all; each error's fix, applied, fits.
    /// A smaller model that fits only with a smaller micro-batch is told
    /// which; one that fits starts.
    #[test]
    fn a_run_that_cannot_fit_names_what_would() {
        let (three, one) = (shape("llama-3.2-3b-shape.json"), shape("llama-3.2-1b-shape.json"));
        let (h100, h200) = (79_000_000_000, 140_000_000_000);
        let err = fit_error(&three, &study(), h200).to_string();
        assert!(err.contains("ppo.recompute = \"layers\"") && !err.contains("reference_dtype"), "{err}");
        check_ppo_fits(&three, &apply_fix(&err, &study(), three.num_layers), h200).unwrap();
        // Cards smaller by 2 GB at a time: recomputation stops being enough before the
        // models alone stop fitting, and the bf16 reference is named then.
        let smaller = (1..30u64)
            .map(|k| h200 - k * 2_000_000_000)
            .find(|&free| fit_error(&three, &study(), free).to_string().contains("reference_dtype"))
            .expect("a card for which recomputation is not enough");
        let err = fit_error(&three, &study(), smaller).to_string();
        assert!(err.contains("ppo.reference_dtype = \"bf16\"") && err.contains("ppo.recompute = \"layers\""), "{err}");
        check_ppo_fits(&three, &apply_fix(&err, &study(), three.num_layers), smaller).unwrap();
        // An 80 GB card holds it with the moments in host memory as well.
        let err = check_ppo_fits(&three, &study(), h100).unwrap_err().to_string();
        assert!(err.contains("ppo.optimizer_state = \"host\"") && err.contains("GB is free"), "{err}");
        let fixed = apply_fix(&err, &study(), three.num_layers);
        assert!(fixed.state_on_host && fixed.reference_bytes == 2 && fixed.recomputed == three.num_layers, "{err}");
        check_ppo_fits(&three, &fixed, h100).unwrap();
        let plan = PpoMemoryPlan::new(&three, &fixed);
        assert_eq!(plan.host_state, 16 * three.num_parameters() as u64, "both models' moments");
        assert!(plan.describe(None).contains("moments in host memory"));
        let err = check_ppo_fits(&three, &study(), 30_000_000_000).unwrap_err().to_string();
        assert!(err.contains("alone need") && err.contains("use a card with more memory"), "{err}");
        assert!(check_host_fits(plan.host_state, 40_000_000_000).unwrap_err().to_string().contains("host memory"));
        let wide = PpoSettings { micro_batch: 64, ..study() };
        let err = check_ppo_fits(&one, &wide, h100).unwrap_err().to_string();
        assert!(err.contains("set ppo.micro_batch = ") && !err.contains("ppo.recompute"), "{err}");
        let fixed = apply_fix(&err, &wide, one.num_layers);
        assert!((1..64).contains(&fixed.micro_batch), "{err}");
        check_ppo_fits(&one, &fixed, h100).unwrap();
    }
}
