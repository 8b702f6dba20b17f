//! The training loop, generic over the backend: read the set, build (or load) the model,
//! resume from the newest checkpoint, then per optimizer step: `grad_accum` micro-batches
//! of `batch_size` packed windows, global-norm clipping, AdamW at the scheduled rate,
//! metrics, checkpoints, and evaluation on the set's test split.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::data::pack::{Window, positions_to_run, windows};
use crate::data::set::{Sequence, read_split};
use crate::loss::{lm_loss, lm_loss_sum_of_hidden};
use crate::model::Llama;
use crate::model::config::ModelConfig;
use crate::model::precision::{compute_bytes, parse_compute};
use crate::ops::adamw::OnePassAdamW;
use crate::ops::backend::BackendKind;
use crate::run::backward::{GradientSums, backward_into, head_chunk_rows};
use crate::run::checkpoint::{self, TrainState};
use crate::run::clip::{clip_factor, global_norm};
use crate::run::memory_plan::{Keys, MemoryPlan, Settings, card_memory, check_fits};
use crate::run::metrics::Metrics;
use crate::run::options::RunOptions;
use crate::run::profiles::Profiles;
use crate::run::progress::Progress;
use crate::train::config::{PretrainConfig, check_compute_dtype};
use crate::train::schedule::learning_rate;
use crate::weights::load_weights;
use crate::{ModelBackend, TrainBackend};

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

/// The optimizer of a pretraining run.
type Optim<B> = burn::optim::adaptor::OptimizerAdaptor<OnePassAdamW, Llama<B>, B>;

/// Runs (or resumes) a pretraining run.
pub fn pretrain<B: TrainBackend>(cfg: &PretrainConfig, device: &B::Device, opts: &RunOptions) -> Result<Summary> {
    let run_started = Instant::now();
    let inputs = Inputs::read(cfg)?;
    let plan = Plan::new(cfg, &inputs.train);
    plan_memory(cfg, &inputs.model, device)?;
    let Start { mut model, mut optim, mut state, resumed_from } = start::<B>(cfg, &inputs, device, opts)?;
    let mut metrics = Metrics::open(&cfg.output.dir.join("metrics.jsonl"), state.step)?;
    // Each invocation's header: what it runs on, and how.
    metrics.write(&json!({"kind": "run", "step": state.step, "backend": B::name(device), "compute_dtype": cfg.train.compute_dtype, "kernels": cfg.kernels}))?;
    std::fs::write(cfg.output.dir.join("config.json"), serde_json::to_vec_pretty(&json!({ "pretrain": cfg, "model": inputs.model }))?)?;
    eprintln!(
        "pretrain: {} parameters, {} train sequences ({} windows of {} per epoch), {} test sequences; {} steps of {} windows, matmuls in {}{}",
        inputs.model.num_parameters(),
        inputs.train.len(),
        plan.windows_per_epoch,
        cfg.data.seq_len,
        inputs.test.len(),
        plan.total,
        plan.per_step,
        cfg.train.compute_dtype,
        resumed_from.map(|s| format!("; resuming after step {s}")).unwrap_or_default()
    );
    let t = &cfg.train;
    let layout = cfg.data.layout(inputs.model.eos_token_id.unwrap_or(0));
    let test_windows = windows(&inputs.test, &layout, None);
    let progress = Progress::new(plan.total, state.step);
    let mut profiles = Profiles::new(opts);
    let mut epoch_cache: Option<(usize, Vec<Window>)> = None;
    let (mut last_loss, mut eval_loss, mut checkpoint_dir) = (None, None, None);
    let mut ran = 0usize;
    while opts.another_step(state.step, plan.total, ran, run_started) {
        profiles.before_step::<B>(ran, device)?;
        let started = Instant::now();
        let (epoch, in_epoch) = (state.step / plan.steps_per_epoch, state.step % plan.steps_per_epoch);
        if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            epoch_cache = Some((epoch, windows(&inputs.train, &layout, Some((t.seed, epoch as u64)))));
        }
        let epoch_windows = &epoch_cache.as_ref().expect("cached").1;
        let group = &epoch_windows[in_epoch * plan.per_step..((in_epoch + 1) * plan.per_step).min(epoch_windows.len())];
        let lr = learning_rate(state.step, plan.total, plan.warmup, t.lr, t.min_lr_ratio);
        let stats;
        (model, stats) = train_step(model, &mut optim, group, lr, cfg, state.step + 1, device)?;
        state.step += 1;
        ran += 1;
        state.tokens_seen += stats.tokens;
        last_loss = Some(stats.loss);
        let line = report(&mut metrics, &stats, &state, (epoch, started.elapsed().as_secs_f64()), cfg)?;
        progress.step(state.step, line);
        let ends_run = opts.ends_run(state.step, plan.total, run_started);
        if !opts.another_step(state.step, plan.total, ran, run_started) {
            profiles.after_last_step::<B>(ran, device)?;
        }
        if !inputs.test.is_empty() && ((t.eval_every > 0 && state.step % t.eval_every == 0) || ends_run) {
            let loss = evaluate(&model.valid(), &test_windows, cfg, device);
            metrics.write(&json!({ "kind": "eval", "step": state.step, "eval_loss": loss }))?;
            progress.note(format!("step {}  eval loss {loss:.4} on {} test sequences", state.step, inputs.test.len()));
            eval_loss = Some(loss);
        }
        if ((t.save_every > 0 && state.step % t.save_every == 0) || ends_run) && !opts.no_save {
            checkpoint_dir = Some(checkpoint::save(&cfg.output.dir, &model, &optim, &state, t.keep_checkpoints)?);
        }
        if state.step == plan.total && cfg.output.export != "none" {
            export_model(&model, cfg)?;
        }
    }
    progress.finish();
    profiles.finish(ran)?;
    Ok(Summary { steps: state.step, total_steps: plan.total, resumed_from, last_loss, eval_loss, tokens_seen: state.tokens_seen, checkpoint: checkpoint_dir })
}

/// Writes the finished run's model as a Hugging Face folder in `output.dir/hf` (staged
/// and renamed into place, as `trainer export` does), with the tokenizer's files found
/// beside the model's config.
fn export_model<B: TrainBackend>(model: &Llama<B>, cfg: &PretrainConfig) -> Result<()> {
    let out = cfg.output.dir.join("hf");
    let export = crate::export::Export {
        checkpoint: cfg.output.dir.clone(),
        model_config: Some(cfg.model.config.clone()),
        tokenizer: None,
        out: out.clone(),
        dtype: cfg.output.export.clone(),
        max_shard_bytes: crate::export::DEFAULT_MAX_SHARD_BYTES,
    };
    let (_, tokenizer_dir) = crate::export::resolve(&export)?;
    let started = Instant::now();
    crate::export::write_export(model, &export, tokenizer_dir.as_deref()).with_context(|| format!("output.export: cannot write {}", out.display()))?;
    eprintln!("pretrain: the model exported to {} as {} in {:.0} s", out.display(), cfg.output.export, started.elapsed().as_secs_f64());
    Ok(())
}

/// What a run reads before it starts: the set's splits and the model's shape, checked to
/// fit each other.
struct Inputs {
    train: Vec<Sequence>,
    test: Vec<Sequence>,
    model: ModelConfig,
    tokenizer_sha256: String,
}

impl Inputs {
    fn read(cfg: &PretrainConfig) -> Result<Self> {
        let (train, info) = read_split(&cfg.data.set, "train")?;
        if train.is_empty() {
            bail!("the train split of {} is empty: nothing to train on", cfg.data.set.display());
        }
        let (test, _) = read_split(&cfg.data.set, "test")?;
        let model = ModelConfig::from_file(&cfg.model.config).with_context(|| {
            format!(
                "model.config = {}: a local copy of the model's Hugging Face folder (configs/pretrain.toml: `huggingface-cli download meta-llama/Llama-3.2-3B --local-dir models/Llama-3.2-3B`, a gated model whose license is accepted on the hub first)",
                cfg.model.config.display()
            )
        })?;
        if info.vocab_size > model.vocab_size {
            bail!(
                "the set {} was tokenized with a vocabulary of {} ids, but the model ({}) has {}: use a model of the set's tokenizer family (the sets use Llama-3's)",
                cfg.data.set.display(),
                info.vocab_size,
                cfg.model.config.display(),
                model.vocab_size
            );
        }
        for (split, seqs) in [("train", &train), ("test", &test)] {
            let too_long = cfg.data.layout(0).too_long(seqs);
            if let Some(&(row, len)) = too_long.first() {
                bail!(
                    "{} of the {split} examples of {} are longer than data.seq_len = {} (row {row}: {len} tokens); with one example per row \
                     (data.packing = false, the study's) a longer row is an error, as in the study's trainer: raise data.seq_len, \
                     or set data.packing = true to cut the examples into packed windows",
                    too_long.len(),
                    cfg.data.set.display(),
                    cfg.data.seq_len
                );
            }
        }
        Ok(Inputs { train, test, model, tokenizer_sha256: info.tokenizer_sha256 })
    }
}

/// How many steps a run takes: `per_step` windows each, epochs of `steps_per_epoch`.
struct Plan {
    per_step: usize,
    windows_per_epoch: usize,
    steps_per_epoch: usize,
    total: usize,
    warmup: usize,
}

impl Plan {
    fn new(cfg: &PretrainConfig, train: &[Sequence]) -> Self {
        let t = &cfg.train;
        let per_step = t.batch_size * t.grad_accum;
        let windows_per_epoch = cfg.data.layout(0).windows_per_epoch(train);
        let steps_per_epoch = windows_per_epoch.div_ceil(per_step);
        let total = if t.max_steps > 0 { t.max_steps } else { t.epochs * steps_per_epoch };
        let warmup = (total as f64 * t.warmup_fraction).round() as usize;
        Plan { per_step, windows_per_epoch, steps_per_epoch, total, warmup }
    }
}

/// Prints what the run will hold in the card's memory and stops, before anything is
/// loaded, a run that cannot fit.
fn plan_memory<D: 'static>(cfg: &PretrainConfig, model: &ModelConfig, device: &D) -> Result<()> {
    let t = &cfg.train;
    let compute_bytes = compute_bytes(parse_compute(&t.compute_dtype)?);
    let recomputed = t.recompute.layers(model.num_layers, "train.recompute")?;
    let settings = Settings { batch: t.batch_size, seq_len: cfg.data.seq_len, grad_accum: t.grad_accum, recomputed, compute_bytes };
    let card = card_memory(device);
    eprintln!("{}", MemoryPlan::new(model, &settings).describe(card));
    match card {
        Some((free, _)) => check_fits(model, &settings, free, &MEMORY_KEYS),
        None => Ok(()),
    }
}

/// The keys of a pretraining run's memory.
const MEMORY_KEYS: Keys = Keys { batch: "train.batch_size", grad_accum: "train.grad_accum", recompute: "train.recompute", seq_len: "data.seq_len" };

/// Where a run starts: the model, its optimizer and the state, and the step resumed after.
struct Start<B: TrainBackend> {
    model: Llama<B>,
    optim: Optim<B>,
    state: TrainState,
    resumed_from: Option<usize>,
}

/// The model and optimizer to start from: the newest checkpoint's (unless `opts.fresh`),
/// else the configured weights or a random init.
fn start<B: TrainBackend>(cfg: &PretrainConfig, inputs: &Inputs, device: &B::Device, opts: &RunOptions) -> Result<Start<B>> {
    let t = &cfg.train;
    let fingerprint = fingerprint(cfg, &inputs.model, &inputs.tokenizer_sha256);
    B::seed(device, t.seed);
    let compute = check_compute_dtype(&t.compute_dtype, BackendKind::parse(&t.backend, "train.backend")?, "train.compute_dtype")?;
    let model: Llama<B> = match &cfg.model.weights {
        Some(w) => load_weights(&inputs.model, w, device)?,
        None => Llama::random(&inputs.model, device),
    }
    .with_compute(compute)
    .with_kernels(cfg.kernels);
    let optim = OnePassAdamW::with_settings(t.beta1, t.beta2, t.eps, t.weight_decay).init::<B, Llama<B>>();
    std::fs::create_dir_all(&cfg.output.dir).with_context(|| format!("cannot create {}", cfg.output.dir.display()))?;
    match checkpoint::latest(&cfg.output.dir).filter(|_| !opts.fresh) {
        Some(dir) => {
            let (model, optim, state) = checkpoint::load(&dir, model, optim, &fingerprint, device)?;
            let resumed_from = Some(state.step);
            Ok(Start { model, optim, state, resumed_from })
        }
        None => {
            if opts.fresh {
                std::fs::remove_dir_all(cfg.output.dir.join("checkpoints")).ok();
            }
            Ok(Start { model, optim, state: TrainState { fingerprint, ..Default::default() }, resumed_from: None })
        }
    }
}

/// What one optimizer step did.
struct StepStats {
    loss: f64,
    grad_norm: f64,
    lr: f64,
    /// Tokens that counted in the loss.
    trained: usize,
    /// Positions the step ran (each micro-batch up to its longest window).
    tokens: u64,
    /// The model FLOPs of those positions.
    flops: f64,
}

/// One optimizer step (`step`, counted from 1) over `group`'s windows: micro-batches of
/// `train.batch_size` with their gradients summed (the first `train.recompute` layers
/// recomputing their activations), the global-norm clip folded into the update, AdamW at
/// `lr`.
fn train_step<B: TrainBackend>(
    model: Llama<B>,
    optim: &mut Optim<B>,
    group: &[Window],
    lr: f64,
    cfg: &PretrainConfig,
    step: usize,
    device: &B::Device,
) -> Result<(Llama<B>, StepStats)> {
    let micro: Vec<&[Window]> = group.chunks(cfg.train.batch_size).collect();
    let recomputed = cfg.train.recompute.layers(model.layers.len(), "train.recompute")?;
    let mut sums = GradientSums::default();
    let (mut trained, mut tokens, mut flops) = (0usize, 0u64, 0f64);
    // The step's loss stays on the device until the step is done (no sync per micro-batch).
    let mut step_loss: Option<Tensor<B::InnerBackend, 1>> = None;
    for batch in &micro {
        let positions = positions_to_run(batch, cfg.data.seq_len);
        tokens += (batch.len() * positions) as u64;
        flops += (batch.len() * positions) as f64 * flops_per_token(&model.config, positions);
        let (ids, labels) = tensors::<B>(batch, positions, device);
        // Each micro-batch's token mean, divided by the micro-batches (veRL's SFT loss).
        let batch_trained = batch.iter().map(Window::trained).sum::<usize>();
        let denominator = (batch_trained.max(1) * micro.len()) as f64;
        let loss = |m: &Llama<B>, hidden: Tensor<B, 3>, rows: std::ops::Range<usize>| {
            lm_loss_sum_of_hidden(m, hidden, labels.clone().narrow(0, rows.start, rows.len())).div_scalar(denominator)
        };
        let head_rows = head_chunk_rows(positions, model.config.vocab_size);
        let loss = backward_into(&model, &model, ids, recomputed, head_rows, loss, &mut sums);
        step_loss = Some(match step_loss {
            Some(sum) => sum + loss,
            None => loss,
        });
        trained += batch_trained;
    }
    let loss = step_loss.map_or(0.0, |l| l.into_scalar().elem::<f64>());
    let grads = sums.into_params();
    // The clip's factor goes into the optimizer's update (no pass over the gradients).
    let grad_norm = global_norm(&model, &grads, model.kernels());
    optim.optim().grad_scale.set(clip_factor(grad_norm, cfg.train.grad_clip).unwrap_or(1.0) as f32);
    if !loss.is_finite() || loss < 0.0 || !grad_norm.is_finite() {
        bail!(
            "step {step}: the loss is {loss} and the gradient norm {grad_norm}: the run is broken (out of device memory? see the messages above; lower train.batch_size or data.seq_len); the last checkpoint is kept"
        );
    }
    let model = optim.step(lr, model, grads);
    Ok((model, StepStats { loss, grad_norm, lr, trained, tokens, flops }))
}

/// Writes the metrics line of a step of `epoch` that took `seconds`; returns its progress
/// line.
fn report(metrics: &mut Metrics, s: &StepStats, state: &TrainState, (epoch, seconds): (usize, f64), cfg: &PretrainConfig) -> Result<String> {
    let tokens_per_s = s.tokens as f64 / seconds;
    let peak_tflops = cfg.train.peak_tflops;
    let mfu = (peak_tflops > 0.0).then(|| s.flops / seconds / (peak_tflops * 1e12));
    metrics.write(&json!({
        "kind": "train", "step": state.step, "epoch": epoch, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm,
        "trained_tokens": s.trained, "tokens_seen": state.tokens_seen, "tokens_per_s": tokens_per_s, "mfu": mfu, "step_s": seconds,
    }))?;
    Ok(format!(
        "loss {:.4}  lr {:.3e}  grad norm {:.3}  {tokens_per_s:.0} tok/s{}",
        s.loss,
        s.lr,
        s.grad_norm,
        mfu.map(|m| format!("  MFU {:.1}%", m * 100.0)).unwrap_or_default()
    ))
}

/// Mean loss over the test split's windows (no shuffle), weighted by trained tokens.
fn evaluate<B: ModelBackend>(model: &Llama<B>, test: &[Window], cfg: &PretrainConfig, device: &B::Device) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for batch in test.chunks(cfg.train.batch_size) {
        let trained: usize = batch.iter().map(Window::trained).sum();
        if trained == 0 {
            continue;
        }
        let (ids, labels) = tensors::<B>(batch, positions_to_run(batch, cfg.data.seq_len), device);
        sum += lm_loss(model, ids, labels).into_scalar().elem::<f64>() * trained as f64;
        count += trained;
    }
    if count == 0 { f64::NAN } else { sum / count as f64 }
}

/// The first `positions` ids and labels of each window.
fn tensors<B: Backend>(batch: &[Window], positions: usize, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let ids: Vec<i64> = batch.iter().flat_map(|w| w.ids[..positions].iter().copied()).collect();
    let labels: Vec<i64> = batch.iter().flat_map(|w| w.labels[..positions].iter().copied()).collect();
    let shape = [batch.len(), positions];
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
