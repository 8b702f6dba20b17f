//! The rollout-generation benchmark (`trainer bench-generate`): a random-init model of the
//! given shape samples `new_tokens` tokens (temperature 1, no stop token, so every row runs
//! to the end) for a batch of fixed prompts, as a PPO rollout does; one untimed call first
//! (GPU kernels are compiled and tuned there), then `repeats` timed calls, each after a
//! timed call of the prefill alone (one new token), which gives the mean decoding step;
//! with a GPU profile, one more call records every kernel (launches and time per step).
//! `bytes_per_step` is what a mean decoding step must read (weights and cache): divided by
//! the card's memory bandwidth, the step's lower bound; `rows_sent_back`, how often a row
//! of the last timed call gave its cache blocks back and was prefilled again (`generate`).
//! The PyTorch side of the comparison is `scripts/gpu/bench_torch_generate.py`.

use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use crate::ModelBackend;
use crate::diag::gpu_profile::GpuProfile;
use crate::generate::{Sampling, generate};
use crate::model::Llama;
use crate::model::config::ModelConfig;
use crate::model::precision::{Compute, compute_name};
use crate::ops::kernels::Kernels;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateBench {
    pub batch: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub repeats: usize,
    /// The dtype the matmuls run in (`None`: f32).
    pub compute: Compute,
    /// The kernel paths the ops take.
    pub kernels: Kernels,
    /// Where to write a GPU profile of one more (untimed) call: every kernel it ran
    /// (`diag::gpu_profile`, per decoding step).
    pub gpu_profile: Option<std::path::PathBuf>,
}

/// Runs the benchmark; returns one JSON object (tokens/s over the timed calls).
pub fn bench_generate<B: ModelBackend>(config: &ModelConfig, b: &GenerateBench, device: &B::Device) -> Result<Value> {
    B::seed(device, 0);
    let model = Llama::<B>::random(config, device).with_compute(b.compute).with_kernels(b.kernels);
    let vocab = config.vocab_size as u64;
    let prompts: Vec<Vec<u32>> =
        (0..b.batch as u64).map(|row| (0..b.prompt_tokens as u64).map(|i| ((row * 7919 + i * 104_729 + 3) % vocab) as u32).collect()).collect();
    let sampling = |seed, new_tokens| Sampling { max_new_tokens: new_tokens, temperature: 1.0, top_p: 1.0, seed, eos: None };
    let started = Instant::now();
    generate(&model, &prompts, &sampling(0, b.new_tokens), false)?;
    let first_s = started.elapsed().as_secs_f64();
    // Each repeat: the prefill alone (one token), then the whole call.
    let (mut prefills, mut times, mut sent_back) = (Vec::new(), Vec::new(), 0);
    for repeat in 0..b.repeats.max(1) {
        let started = Instant::now();
        generate(&model, &prompts, &sampling(repeat as u64 + 1, 1), false)?;
        prefills.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let out = generate(&model, &prompts, &sampling(repeat as u64 + 1, b.new_tokens), false)?;
        times.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(out.tokens.iter().all(|t| t.len() == b.new_tokens), "every row must run to {} tokens", b.new_tokens);
        sent_back = out.sent_back;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (seconds, prefill_s) = (mean(&times), mean(&prefills));
    let profile = match &b.gpu_profile {
        Some(path) => {
            let profile = GpuProfile::start(path)?;
            generate(&model, &prompts, &sampling(0, b.new_tokens), false)?;
            Some(profile.finish(b.new_tokens)?)
        }
        None => None,
    };
    Ok(json!({
        "gpu_profile": profile,
        "side": "ours", "batch": b.batch, "prompt_tokens": b.prompt_tokens, "new_tokens": b.new_tokens, "parameters": config.num_parameters(),
        "compute_dtype": compute_name(b.compute), "first_call_s": first_s, "seconds": seconds, "tokens_per_s": (b.batch * b.new_tokens) as f64 / seconds,
        "prefill_s": prefill_s, "step_ms": (seconds - prefill_s) * 1e3 / b.new_tokens.saturating_sub(1).max(1) as f64,
        "bytes_per_step": bytes_per_step(config, b), "rows_sent_back": sent_back,
    }))
}

/// The bytes a mean decoding step must read at the least, which bound it by the card's
/// memory bandwidth: every weight it multiplies by, in the compute dtype (the embedding is
/// a lookup of a few rows, but a tied LM head reads it whole), and each row's cached keys
/// and values at the mean length (the prompt and half the new tokens).
fn bytes_per_step(config: &ModelConfig, b: &GenerateBench) -> f64 {
    let size = crate::model::precision::compute_bytes(b.compute) as f64;
    let embedding = if config.tie_word_embeddings { 0 } else { config.vocab_size * config.hidden_size };
    let weights = (config.num_parameters() - embedding) as f64 * size;
    let per_position = (2 * config.num_layers * config.num_kv_heads * config.head_dim) as f64 * size;
    let mean_length = b.prompt_tokens as f64 + b.new_tokens as f64 / 2.0;
    weights + b.batch as f64 * mean_length * per_position
}
