//! The training loop, generic over the backend: read the set, build (or load) the model,
//! resume from the newest checkpoint, then per optimizer step: `grad_accum` micro-batches
//! of `batch_size` packed windows, global-norm clipping, AdamW at the scheduled rate,
//! metrics, checkpoints, and evaluation on the set's test split.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::checkpoint::{self, TrainState};
use super::clip::{clip_factor, global_norm};
use super::config::{PretrainConfig, check_compute_dtype};
use super::metrics::Metrics;
use super::schedule::learning_rate;
use crate::data::pack::{Window, windows};
use crate::data::set::read_split;
use crate::gpu_profile::GpuProfile;
use crate::host_profile::HostProfile;
use crate::loss::lm_loss;
use crate::model::Llama;
use crate::model::config::ModelConfig;
use crate::train::adamw::OnePassAdamW;
use crate::weights::load_weights;
use crate::{ModelBackend, TrainBackend};

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Ignore existing checkpoints and start over.
    pub fresh: bool,
    /// Stop after this many steps of this invocation (for tests and smoke runs).
    pub stop_after: Option<usize>,
    /// Stop cleanly once this much time has passed since the invocation started (loading and
    /// priming count): the step in progress finishes, then an evaluation and a checkpoint
    /// (for a job's time limit on a cluster).
    pub time_limit: Option<std::time::Duration>,
    /// Write a sampling profile of the host over the steps after the third to this file
    /// (`host_profile`; needs the `host-profile` feature).
    pub host_profile: Option<std::path::PathBuf>,
    /// Record every GPU kernel over the steps after the third and write where the GPU's
    /// time went to this file (`gpu_profile`; needs a CUDA build).
    pub gpu_profile: Option<std::path::PathBuf>,
}

/// Steps before a host or GPU profile starts (kernel compilation and autotuning happen in the first).
const PROFILE_AFTER_STEPS: usize = 3;

impl RunOptions {
    /// Whether the time limit has passed since `started`.
    pub fn out_of_time(&self, started: Instant) -> bool {
        self.time_limit.is_some_and(|limit| started.elapsed() >= limit)
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: usize,
    pub total_steps: usize,
    pub resumed_from: Option<usize>,
    pub last_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    pub tokens_seen: u64,
    pub checkpoint: Option<PathBuf>,
}

/// Runs (or resumes) a pretraining run.
pub fn pretrain<B: TrainBackend>(cfg: &PretrainConfig, device: &B::Device, opts: &RunOptions) -> Result<Summary> {
    let run_started = Instant::now();
    let (train, info) = read_split(&cfg.data.set, "train")?;
    if train.is_empty() {
        bail!("the train split of {} is empty: nothing to train on", cfg.data.set.display());
    }
    let (test, _) = read_split(&cfg.data.set, "test")?;
    let model_cfg = ModelConfig::from_file(&cfg.model.config)?;
    if info.vocab_size > model_cfg.vocab_size {
        bail!(
            "the set {} was tokenized with a vocabulary of {} ids, but the model ({}) has {}: use a model of the set's tokenizer family (the sets use Llama-3's)",
            cfg.data.set.display(),
            info.vocab_size,
            cfg.model.config.display(),
            model_cfg.vocab_size
        );
    }
    let t = &cfg.train;
    let fingerprint = fingerprint(cfg, &model_cfg, &info.tokenizer_sha256);
    B::seed(device, t.seed);
    let compute = check_compute_dtype(&t.compute_dtype, &t.backend, "train.compute_dtype")?;
    let model: Llama<B> = match &cfg.model.weights {
        Some(w) => load_weights(&model_cfg, w, device)?,
        None => Llama::random(&model_cfg, device),
    }
    .with_compute(compute);
    let optim =
        OnePassAdamW { beta_1: t.beta1 as f32, beta_2: t.beta2 as f32, epsilon: t.eps as f32, weight_decay: t.weight_decay as f32, ..Default::default() }
            .init::<B, Llama<B>>();

    let pad = model_cfg.eos_token_id.unwrap_or(0);
    let seq_len = cfg.data.seq_len;
    let per_step = t.batch_size * t.grad_accum;
    // Packing concatenates every sequence, so the count does not depend on the order.
    let windows_per_epoch = train.iter().map(|s| s.ids.len()).sum::<usize>().div_ceil(seq_len);
    let steps_per_epoch = windows_per_epoch.div_ceil(per_step);
    let total = if t.max_steps > 0 { t.max_steps } else { t.epochs * steps_per_epoch };
    let warmup = (total as f64 * t.warmup_fraction).round() as usize;

    std::fs::create_dir_all(&cfg.output.dir).with_context(|| format!("cannot create {}", cfg.output.dir.display()))?;
    let (mut model, mut optim, mut state, resumed_from) = match checkpoint::latest(&cfg.output.dir).filter(|_| !opts.fresh) {
        Some(dir) => {
            let (m, o, s) = checkpoint::load(&dir, model, optim, &fingerprint, device)?;
            let step = s.step;
            (m, o, s, Some(step))
        }
        None => {
            if opts.fresh {
                std::fs::remove_dir_all(cfg.output.dir.join("checkpoints")).ok();
            }
            (model, optim, TrainState { fingerprint: fingerprint.clone(), ..Default::default() }, None)
        }
    };
    let mut metrics = Metrics::open(&cfg.output.dir.join("metrics.jsonl"), state.step)?;
    std::fs::write(cfg.output.dir.join("config.json"), serde_json::to_vec_pretty(&json!({ "pretrain": cfg, "model": model_cfg }))?)?;
    let flops_per_token = flops_per_token(&model_cfg, seq_len);
    eprintln!(
        "pretrain: {} parameters, {} train sequences ({} windows of {seq_len} per epoch), {} test sequences; {total} steps of {per_step} windows, matmuls in {}{}",
        model_cfg.num_parameters(),
        train.len(),
        windows_per_epoch,
        test.len(),
        t.compute_dtype,
        resumed_from.map(|s| format!("; resuming after step {s}")).unwrap_or_default()
    );

    // A bar on a terminal; a line per step otherwise (logs, CI, Slurm).
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(total as u64).with_position(state.step as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]").expect("a valid template"));
        bar
    });
    let test_windows = windows(&test, seq_len, cfg.data.objective, None, pad);
    let mut epoch_cache: Option<(usize, Vec<Window>)> = None;
    let (mut last_loss, mut eval_loss, mut checkpoint_dir) = (None, None, None);
    let mut ran = 0usize;
    let mut profile: Option<HostProfile> = None;
    let mut gpu_profile: Option<GpuProfile> = None;
    while state.step < total && opts.stop_after.is_none_or(|n| ran < n) && !opts.out_of_time(run_started) {
        if ran == PROFILE_AFTER_STEPS
            && let Some(path) = &opts.host_profile
        {
            profile = Some(HostProfile::start(path)?);
        }
        if ran == PROFILE_AFTER_STEPS
            && let Some(path) = &opts.gpu_profile
        {
            B::sync(device).map_err(|e| anyhow::anyhow!("the device failed: {e:?}"))?;
            gpu_profile = Some(GpuProfile::start(path)?);
        }
        let started = Instant::now();
        let (epoch, in_epoch) = (state.step / steps_per_epoch, state.step % steps_per_epoch);
        if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            epoch_cache = Some((epoch, windows(&train, seq_len, cfg.data.objective, Some((t.seed, epoch as u64)), pad)));
        }
        let epoch_windows = &epoch_cache.as_ref().expect("cached").1;
        let group = &epoch_windows[in_epoch * per_step..((in_epoch + 1) * per_step).min(epoch_windows.len())];
        let micro: Vec<&[Window]> = group.chunks(t.batch_size).collect();
        let mut accumulator = GradientsAccumulator::<Llama<B>>::new();
        let mut trained = 0usize;
        // The step's loss stays on the device until the step is done (no sync per micro-batch).
        let mut step_loss: Option<Tensor<B::InnerBackend, 1>> = None;
        for batch in &micro {
            let (ids, labels) = tensors::<B>(batch, seq_len, device);
            let loss = lm_loss(&model, ids, labels).div_scalar(micro.len() as f64);
            step_loss = Some(match step_loss {
                Some(sum) => sum + loss.clone().inner(),
                None => loss.clone().inner(),
            });
            trained += batch.iter().map(Window::trained).sum::<usize>();
            accumulator.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
        }
        let loss_sum = step_loss.map_or(0.0, |l| l.into_scalar().elem::<f64>());
        let grads = accumulator.grads();
        // The clip's factor goes into the optimizer's update (no pass over the gradients).
        let grad_norm = global_norm(&model, &grads);
        optim.optim().grad_scale.set(clip_factor(grad_norm, t.grad_clip).unwrap_or(1.0) as f32);
        if !loss_sum.is_finite() || loss_sum < 0.0 || !grad_norm.is_finite() {
            bail!(
                "step {}: the loss is {loss_sum} and the gradient norm {grad_norm}: the run is broken (out of device memory? see the messages above; lower train.batch_size or data.seq_len); the last checkpoint is kept",
                state.step + 1
            );
        }
        let lr = learning_rate(state.step, total, warmup, t.lr, t.min_lr_ratio);
        model = optim.step(lr, model, grads);
        state.step += 1;
        ran += 1;
        let tokens = (group.len() * seq_len) as u64;
        state.tokens_seen += tokens;
        let seconds = started.elapsed().as_secs_f64();
        let tokens_per_s = tokens as f64 / seconds;
        let mfu = (t.peak_tflops > 0.0).then(|| tokens_per_s * flops_per_token / (t.peak_tflops * 1e12));
        last_loss = Some(loss_sum);
        metrics.write(&json!({
            "kind": "train", "step": state.step, "epoch": epoch, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm,
            "trained_tokens": trained, "tokens_seen": state.tokens_seen, "tokens_per_s": tokens_per_s, "mfu": mfu, "step_s": seconds,
        }))?;
        let line = format!(
            "loss {loss_sum:.4}  lr {lr:.3e}  grad norm {grad_norm:.3}  {tokens_per_s:.0} tok/s{}",
            mfu.map(|m| format!("  MFU {:.1}%", m * 100.0)).unwrap_or_default()
        );
        match &bar {
            Some(bar) => {
                bar.set_position(state.step as u64);
                bar.set_message(line);
            }
            None => eprintln!("step {}/{total}  {line}", state.step),
        }
        let last = state.step == total || opts.out_of_time(run_started);
        // The GPU profile ends with the last step of this invocation, before its evaluation.
        if (last || opts.stop_after.is_some_and(|n| ran >= n))
            && let Some(recording) = gpu_profile.take()
        {
            B::sync(device).map_err(|e| anyhow::anyhow!("the device failed: {e:?}"))?;
            let window = recording.finish(ran - PROFILE_AFTER_STEPS)?;
            eprintln!("GPU profile: {window} in {}", opts.gpu_profile.as_ref().expect("a path").display());
        }
        if !test.is_empty() && ((t.eval_every > 0 && state.step % t.eval_every == 0) || last) {
            let loss = evaluate(&model.valid(), &test_windows, cfg, device);
            metrics.write(&json!({ "kind": "eval", "step": state.step, "eval_loss": loss }))?;
            let line = format!("step {}  eval loss {loss:.4} on {} test sequences", state.step, test.len());
            match &bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
            eval_loss = Some(loss);
        }
        if (t.save_every > 0 && state.step % t.save_every == 0) || last {
            checkpoint_dir = Some(checkpoint::save(&cfg.output.dir, &model, &optim, &state, t.keep_checkpoints)?);
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    if let Some(profile) = profile {
        let samples = profile.finish()?;
        eprintln!("host profile: {samples} samples over {} steps in {}", ran - PROFILE_AFTER_STEPS, opts.host_profile.as_ref().expect("a path").display());
    }
    Ok(Summary { steps: state.step, total_steps: total, resumed_from, last_loss, eval_loss, tokens_seen: state.tokens_seen, checkpoint: checkpoint_dir })
}

/// Mean loss over the test split's windows (no shuffle), weighted by trained tokens.
fn evaluate<B: ModelBackend>(model: &Llama<B>, test: &[Window], cfg: &PretrainConfig, device: &B::Device) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for batch in test.chunks(cfg.train.batch_size) {
        let trained: usize = batch.iter().map(Window::trained).sum();
        if trained == 0 {
            continue;
        }
        let (ids, labels) = tensors::<B>(batch, cfg.data.seq_len, device);
        sum += lm_loss(model, ids, labels).into_scalar().elem::<f64>() * trained as f64;
        count += trained;
    }
    if count == 0 { f64::NAN } else { sum / count as f64 }
}

fn tensors<B: Backend>(batch: &[Window], seq_len: usize, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let ids: Vec<i64> = batch.iter().flat_map(|w| w.ids.iter().copied()).collect();
    let labels: Vec<i64> = batch.iter().flat_map(|w| w.labels.iter().copied()).collect();
    let shape = [batch.len(), seq_len];
    (Tensor::from_data(TensorData::new(ids, shape), device), Tensor::from_data(TensorData::new(labels, shape), device))
}

/// Training FLOPs per input token: 6 per matmul parameter (forward and backward) plus
/// attention scores and values (12 * layers * seq_len * heads * head_dim).
pub fn flops_per_token(c: &ModelConfig, seq_len: usize) -> f64 {
    let embedding_lookup = if c.tie_word_embeddings { 0 } else { c.vocab_size * c.hidden_size };
    let matmul = (c.num_parameters() - embedding_lookup) as f64;
    6.0 * matmul + 12.0 * (c.num_layers * seq_len * c.num_heads * c.head_dim) as f64
}

/// What a checkpoint must agree with to be resumed.
fn fingerprint(cfg: &PretrainConfig, model: &ModelConfig, tokenizer: &str) -> String {
    let t = &cfg.train;
    let v = json!({
        "model": model, "weights": cfg.model.weights, "set": cfg.data.set, "tokenizer": tokenizer, "objective": cfg.data.objective, "seq_len": cfg.data.seq_len,
        "lr": t.lr, "betas": [t.beta1, t.beta2], "eps": t.eps, "wd": t.weight_decay, "warmup": t.warmup_fraction, "min_lr": t.min_lr_ratio,
        "clip": t.grad_clip, "batch": t.batch_size, "accum": t.grad_accum, "epochs": t.epochs, "max_steps": t.max_steps, "seed": t.seed,
    });
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}
