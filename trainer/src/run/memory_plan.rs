//! What a training run will hold in the card's memory, estimated from the model's shape
//! and the run's settings before the first step, and checked against the card's free
//! memory: a run that cannot fit stops before it loads anything, naming the settings that
//! make it fit.
//!
//! Counted: the f32 parameters, their gradient sums and AdamW's two moments; the gradients
//! of one backward segment beside the sums (`run::backward`: the whole model's on a second
//! micro-batch without recomputation, else the largest segment's); the copies of the
//! weights in the compute dtype that the graph keeps for the backward pass; the tensors the
//! graph keeps for each layer and token (the residual stream and both norms' inputs, the
//! projections' inputs in the compute dtype, the rotated queries and keys, the values, the
//! attention output and its transposed copy, the MLP's gate, up and product), or a
//! recomputed layer's input alone plus one layer's activations while it is recomputed; one
//! chunk of the LM head's logits, their f32 gradient and its cast.

use anyhow::Result;

use crate::model::config::ModelConfig;
use crate::run::backward::head_chunk_rows;

/// The settings of a run that decide its memory.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Sequences per micro-batch.
    pub batch: usize,
    pub seq_len: usize,
    pub grad_accum: usize,
    /// Layers that recompute their activations.
    pub recomputed: usize,
    /// Bytes of an element in the compute dtype (4 for f32 matmuls).
    pub compute_bytes: usize,
}

/// The names of the keys a run's settings come from, for the error of a run that cannot
/// fit.
pub struct Keys {
    pub batch: &'static str,
    pub grad_accum: &'static str,
    pub recompute: &'static str,
    pub seq_len: &'static str,
}

/// Memory the CUDA context, cuBLAS's workspace and the memory pool's rounding take beyond
/// the tensors counted.
pub(crate) const RESERVE: u64 = 2_000_000_000;

/// Bytes as gigabytes with one decimal, as the plans print them.
pub(crate) fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// A plan's line with the card's `(free, total)` memory after it, where known.
pub(crate) fn with_card(line: String, card: Option<(u64, u64)>) -> String {
    match card {
        Some((free, total)) => format!("{line}; the card has {} free of {}", gb(free), gb(total)),
        None => line,
    }
}

/// Bytes of each part, estimated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryPlan {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub weight_copies: u64,
    pub activations: u64,
    pub logits: u64,
}

impl MemoryPlan {
    pub fn new(m: &ModelConfig, s: &Settings) -> Self {
        const F32: u64 = 4;
        let c = s.compute_bytes as u64;
        let (layers, recomputed) = (m.num_layers as u64, s.recomputed.min(m.num_layers) as u64);
        let kept = layers - recomputed;
        let tokens = (s.batch * s.seq_len) as u64;
        let (h, i, q, kv) = (m.hidden_size as u64, m.intermediate_size as u64, (m.num_heads * m.head_dim) as u64, (m.num_kv_heads * m.head_dim) as u64);
        let (params, layer_params, embedding) = (m.num_parameters() as u64, m.layer_parameters() as u64, (m.vocab_size * m.hidden_size) as u64);
        // One backward segment's gradients beside the sums.
        let head = if m.tie_word_embeddings { embedding } else { embedding + m.vocab_size as u64 * h };
        let segment = if recomputed == 0 { params } else { (kept * layer_params + h + head).max(embedding).max(layer_params) };
        // Without recomputation a first micro-batch's whole-model gradients are the sums;
        // the head's chunks come beside them either way.
        let beside_sums = if s.grad_accum > 1 || recomputed > 0 { segment } else { head };
        // Casts of the weights the graph keeps (none when the matmuls run in f32).
        let copied = |n: u64| if c == F32 { 0 } else { n * c };
        let weight_copies = copied((kept + u64::from(recomputed > 0)) * layer_params + embedding);
        let per_layer_token = 2 * F32 * h + 2 * c * h + 3 * c * q + 2 * c * kv + 3 * c * i;
        let activations = tokens * (kept * per_layer_token + recomputed * F32 * h + if recomputed > 0 { per_layer_token } else { 0 });
        MemoryPlan {
            parameters: params * F32,
            gradients: (params + beside_sums) * F32,
            optimizer: 2 * params * F32,
            weight_copies,
            activations,
            // One head chunk's logits, their f32 gradient and its cast (`run::backward`).
            logits: (s.batch.min(head_chunk_rows(s.seq_len, m.vocab_size)) * s.seq_len) as u64 * m.vocab_size as u64 * (2 * c + F32),
        }
    }

    /// Everything counted.
    pub fn total(&self) -> u64 {
        self.parameters + self.gradients + self.optimizer + self.weight_copies + self.activations + self.logits
    }

    /// What the run needs of the card: the total and the reserve.
    pub fn needed(&self) -> u64 {
        self.total() + RESERVE
    }

    /// One line per part, and the card's `(free, total)` where known.
    pub fn describe(&self, card: Option<(u64, u64)>) -> String {
        let line = format!(
            "memory plan: parameters {}, gradients {}, AdamW {}, weight copies {}, activations {}, logits {}: {} with the reserve",
            gb(self.parameters),
            gb(self.gradients),
            gb(self.optimizer),
            gb(self.weight_copies),
            gb(self.activations),
            gb(self.logits),
            gb(self.needed())
        );
        with_card(line, card)
    }
}

/// The card's `(free, total)` memory when `device` is a CUDA card (else, or when the driver
/// cannot say, none).
pub fn card_memory<D: 'static>(device: &D) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    if let Some(card) = (device as &dyn std::any::Any).downcast_ref::<cubecl::cuda::CudaDevice>() {
        return crate::ops::cuda::memory::card_memory(card.index).map_err(|e| eprintln!("memory plan: {e}")).ok();
    }
    let _ = device;
    None
}

/// The host memory available to a new allocation (`MemAvailable` of `/proc/meminfo`),
/// where the system says.
pub fn host_memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How far the estimate may be off: measured on an H100 at the 3B shape it was 4.5% and
/// 6.2% above the memory in use without recomputation, 10.1% below it with every layer
/// recomputed (the memory pool keeps pages the counted tensors do not explain; see the
/// tests).
const MARGIN: f64 = 0.12;

/// Whether `needed` bytes fit in `free` ones with the estimate's margin to spare.
pub(crate) fn fits_surely(needed: u64, free: u64) -> bool {
    needed as f64 <= free as f64 * (1.0 - MARGIN)
}

/// The verdict on a plan of `needed` bytes for `free` ones: below them by the estimate's
/// margin it fits; above them by more than the margin it is the error `why_not` makes
/// (which names what would fit); in between, that error as a warning, and the run starts.
pub(crate) fn judge_fit(needed: u64, free: u64, why_not: impl FnOnce() -> anyhow::Error) -> Result<()> {
    if fits_surely(needed, free) {
        return Ok(());
    }
    let e = why_not();
    if needed as f64 <= free as f64 * (1.0 + MARGIN) {
        eprintln!("warning: {e:#}; the estimate is within its margin of error (12%), so the run starts: if it runs out of memory, do that");
        return Ok(());
    }
    Err(e)
}

/// Whether the run fits in `free` bytes ([`judge_fit`]); what would fit: every layer
/// recomputed, then smaller micro-batches, more of them for the same step, then shorter
/// sequences.
pub fn check_fits(model: &ModelConfig, s: &Settings, free: u64, keys: &Keys) -> Result<()> {
    judge_fit(MemoryPlan::new(model, s).needed(), free, || fit_error(model, s, free, keys))
}

fn fit_error(model: &ModelConfig, s: &Settings, free: u64, keys: &Keys) -> anyhow::Error {
    let plan = MemoryPlan::new(model, s);
    let fits = |s: &Settings| fits_surely(MemoryPlan::new(model, s).needed(), free);
    let all = Settings { recomputed: model.num_layers, ..*s };
    let fix = if s.recomputed < model.num_layers && fits(&all) {
        let least = (s.recomputed..=model.num_layers).find(|&n| fits(&Settings { recomputed: n, ..*s })).unwrap_or(model.num_layers);
        format!("set {} = {least} (or \"layers\": every layer)", keys.recompute)
    } else if let Some(batch) = (1..s.batch).rev().find(|&b| fits(&Settings { batch: b, ..all })) {
        let accum = (s.batch * s.grad_accum).div_ceil(batch);
        format!("set {} = \"layers\", {} = {batch} and {} = {accum} (the same examples a step)", keys.recompute, keys.batch, keys.grad_accum)
    } else {
        format!("even one sequence a micro-batch with every layer recomputed does not fit: lower {}, or use a card with more memory", keys.seq_len)
    };
    anyhow::anyhow!(
        "this run needs about {} of the card's memory and {} is free ({}): {fix}",
        gb(plan.needed()),
        gb(free),
        plan.describe(None).trim_start_matches("memory plan: ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 3B shape as Llama-3.2-3B's config.json gives it.
    fn llama_3b() -> ModelConfig {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/models/llama-3.2-3b-shape.json")).unwrap();
        ModelConfig::from_hf(&serde_json::from_str(&text).unwrap()).unwrap()
    }

    const KEYS: Keys = Keys { batch: "train.batch_size", grad_accum: "train.grad_accum", recompute: "train.recompute", seq_len: "data.seq_len" };

    fn settings(batch: usize, seq_len: usize, grad_accum: usize, recomputed: usize) -> Settings {
        Settings { batch, seq_len, grad_accum, recomputed, compute_bytes: 2 }
    }

    /// At the 3B shape in bf16: parameters and moments are 12 bytes a parameter, the sums
    /// 4 more, and the estimate is within the margin of the memory an H100 had in use
    /// (nvidia-smi's peak): 1 x 4096 without recomputation, one window a step (71,299 MiB)
    /// and eight (80,163 MiB; docs/PERF.md, tenth measurement), and configs/pretrain.toml's
    /// 8 x 2048, 8 a step, every layer recomputed (69,507 MiB; eleventh measurement).
    #[test]
    fn the_3b_plan_matches_the_measured_runs() {
        let m = llama_3b();
        let plan = MemoryPlan::new(&m, &settings(1, 4096, 1, 0));
        let n = m.num_parameters() as u64;
        assert_eq!(plan.parameters + plan.optimizer, 12 * n);
        assert!(plan.gradients >= 4 * n);
        for (run, mib) in [(settings(1, 4096, 1, 0), 71_299.0), (settings(1, 4096, 8, 0), 80_163.0), (settings(8, 2048, 8, 28), 69_507.0)] {
            let plan = MemoryPlan::new(&m, &run);
            let measured = mib * 1024.0 * 1024.0;
            assert!((plan.needed() as f64 - measured).abs() < MARGIN * measured, "{run:?}: {}", plan.describe(None));
        }
    }

    /// Recomputing layers lowers the activations and never raises the total; a second
    /// micro-batch without recomputation holds a second copy of the gradients.
    #[test]
    fn recomputation_and_accumulation_move_the_plan() {
        let m = llama_3b();
        let none = MemoryPlan::new(&m, &settings(4, 2048, 16, 0));
        let half = MemoryPlan::new(&m, &settings(4, 2048, 16, 14));
        let all = MemoryPlan::new(&m, &settings(4, 2048, 16, 28));
        assert!(all.activations < half.activations && half.activations < none.activations);
        assert!(all.total() < none.total());
        let once = MemoryPlan::new(&m, &settings(4, 2048, 1, 0));
        // Tied: the head's chunks' gradients are the embedding's.
        assert_eq!(none.gradients - once.gradients, 4 * (m.num_parameters() - m.vocab_size * m.hidden_size) as u64);
    }

    /// The error names the setting that fits: recomputation first, then smaller
    /// micro-batches keeping the step's examples, then the sequence length.
    #[test]
    fn a_run_that_cannot_fit_names_the_keys_that_make_it_fit() {
        let m = llama_3b();
        let card = 79_000_000_000;
        check_fits(&m, &settings(1, 2048, 64, 28), card, &KEYS).unwrap();
        let err = check_fits(&m, &settings(4, 2048, 16, 0), card, &KEYS).unwrap_err().to_string();
        assert!(err.contains("set train.recompute = ") && err.contains("GB is free"), "{err}");
        let err = check_fits(&m, &settings(64, 2048, 1, 0), card, &KEYS).unwrap_err().to_string();
        assert!(err.contains("train.recompute = \"layers\", train.batch_size = ") && err.contains("train.grad_accum = "), "{err}");
        let err = check_fits(&m, &settings(1, 2048, 1, 0), 40_000_000_000, &KEYS).unwrap_err().to_string();
        assert!(err.contains("lower data.seq_len"), "{err}");
        // Within the estimate's margin the run starts.
        let needed = MemoryPlan::new(&m, &settings(4, 2048, 16, 0)).needed();
        check_fits(&m, &settings(4, 2048, 16, 0), needed - needed / 50, &KEYS).unwrap();
    }
}
