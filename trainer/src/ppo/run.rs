//! The PPO run on Countdown: load (or build) the actor, prime it on solver traces when the
//! config asks, freeze the result as the reference policy, copy it into the critic; then
//! per step sample the step's tasks, roll out `samples` responses per prompt, score them
//! with the study's reward, update actor and critic, and log the step. Held-out tasks are
//! scored greedily before the first step, every `eval_every` steps and at the end;
//! checkpoints (actor, critic, both optimizers) resume the run where it stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::batch::MicroBatching;
use super::config::{OptimizerState, PpoConfig, PpoSection};
use super::critic::Critic;
use super::memory_plan::{PpoMemoryPlan, PpoSettings, check_host_fits, check_ppo_fits};
use super::prime::{Traces, prime};
use super::rollout::{Detokenize, RolloutSettings, rollout};
use super::tasks::Tasks;
use super::track::{TrackSection, TrackedRollout, draw_tasks, write_rollouts};
use super::update::{UpdateSettings, update};
use crate::countdown::reward::{CORRECT_SCORE, judge};
use crate::countdown::task::{Task, prompt};
use crate::diag::gpu_profile::GpuProfile;
use crate::generate::{Sampling, generate};
use crate::model::Llama;
use crate::model::config::ModelConfig;
use crate::model::precision::{compute_bytes, parse_compute};
use crate::ops::adamw::OnePassAdamW;
use crate::ops::backend::BackendKind;
use crate::ops::kernels::Kernels;
use crate::run::checkpoint::{self, TrainState};
use crate::run::memory_plan::{card_memory, host_memory_available};
use crate::run::metrics::Metrics;
use crate::run::options::RunOptions;
use crate::run::profiles::sync;
use crate::tokenizer::TextTokenizer;
use crate::train::config::check_compute_dtype;
use crate::weights::load_weights;
use crate::{ModelBackend, TrainBackend};

/// What a run did.
#[derive(Clone, Debug)]
pub struct PpoSummary {
    pub steps: usize,
    pub total_steps: usize,
    pub first_eval: Option<EvalScore>,
    pub last_eval: Option<EvalScore>,
    pub checkpoint: Option<PathBuf>,
}

/// Greedy scores on the held-out tasks.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EvalScore {
    pub accuracy: f64,
    pub reward_mean: f64,
    pub format_rate: f64,
    pub response_tokens_mean: f64,
    /// The first rows generated again one at a time: how many were checked, and how many
    /// came out different from the batch (a backend that mixes rows up shows here).
    pub rows_checked: usize,
    pub rows_differing: usize,
}

/// Rows of each evaluation generated again alone, against the batched result.
const ROWS_CHECKED: usize = 4;

/// A priming set's train split, checked to be tokenized by the run's tokenizer.
fn read_priming_set(dir: &Path, tok: &TextTokenizer) -> Result<Vec<crate::data::set::Sequence>> {
    let (sequences, info) = crate::data::set::read_split(dir, "train")?;
    if info.tokenizer_sha256 != tok.sha256()? {
        bail!(
            "the priming set {} was tokenized with another tokenizer than {}: build it with the run's tokenizer (build.tokenizer)",
            dir.display(),
            tok.path.display()
        );
    }
    if sequences.is_empty() {
        bail!("the priming set {} has no train rows: see its manifest.json (statuses) and rerun `pipeline prime`", dir.display());
    }
    eprintln!("prime: {} traces from {}", sequences.len(), dir.display());
    Ok(sequences)
}

/// The frozen reference policy lives beside the checkpoints, written once.
fn reference_path(out: &Path) -> PathBuf {
    out.join("reference")
}

/// What the run reads before it starts: the tokenizer, the model's shape and the tasks,
/// checked to fit each other.
struct Inputs {
    tok: TextTokenizer,
    model: ModelConfig,
    eos: u32,
    bos: Option<u32>,
    tasks: Tasks,
    fingerprint: String,
}

impl Inputs {
    fn read(cfg: &PpoConfig) -> Result<Self> {
        let tok = TextTokenizer::load(cfg.model.tokenizer.as_deref().expect("resolved by load"))?;
        let model = ModelConfig::from_file(&cfg.model.config)?;
        if tok.vocab_size() > model.vocab_size {
            bail!(
                "the tokenizer {} has {} ids but the model {} only {}: use the model's own tokenizer",
                tok.path.display(),
                tok.vocab_size(),
                cfg.model.config.display(),
                model.vocab_size
            );
        }
        let eos = model
            .eos_token_id
            .or_else(|| tok.token_id("<|end_of_text|>"))
            .context("the model config has no eos_token_id and the tokenizer no <|end_of_text|>")?;
        let fingerprint = fingerprint(cfg, &model, &tok.sha256()?);
        let bos = if cfg.ppo.add_bos { model.bos_token_id } else { None };
        Ok(Inputs { bos, tasks: Tasks::load(&cfg.tasks)?, tok, model, eos, fingerprint })
    }

    /// A task's prompt as token ids.
    fn encode(&self, task: &Task) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(self.tok.encode(&prompt(task))?);
        Ok(ids)
    }
}

type Optim<B, M> = burn::optim::adaptor::OptimizerAdaptor<OnePassAdamW, M, B>;

/// What a PPO run trains and keeps: the actor and critic with their optimizers, the frozen
/// reference policy, the step reached, and the metrics file.
struct Policy<B: TrainBackend> {
    actor: Llama<B>,
    critic: Critic<B>,
    actor_optim: Optim<B, Llama<B>>,
    critic_optim: Optim<B, Critic<B>>,
    reference: Llama<B::InnerBackend>,
    state: TrainState,
    metrics: Metrics,
    resumed: bool,
}

/// Runs (or resumes) a PPO run.
pub fn ppo<B: TrainBackend>(cfg: &PpoConfig, device: &B::Device, opts: &RunOptions) -> Result<PpoSummary> {
    let run_started = Instant::now();
    if let Some(path) = &opts.gpu_profile {
        GpuProfile::can_record(path)?;
    }
    let inputs = Inputs::read(cfg)?;
    let p = &cfg.ppo;
    let out = &cfg.output.dir;
    let eval_prompts: Vec<Vec<u32>> = inputs.tasks.eval.iter().map(|t| inputs.encode(t)).collect::<Result<_>>()?;
    plan_memory(cfg, &inputs.model, eval_prompts.iter().map(Vec::len).max().unwrap_or(0), device)?;
    let mut run = start::<B>(cfg, &inputs, device, opts)?;
    // Each invocation's header: what it runs on, and how.
    run.metrics.write(&json!({"kind": "run", "step": run.state.step, "backend": B::name(device), "compute_dtype": p.compute_dtype, "kernels": cfg.kernels}))?;
    eprintln!(
        "ppo: {} parameters, {} steps of {} prompts x {} samples (responses up to {} tokens), {} held-out tasks",
        inputs.model.num_parameters(),
        p.steps,
        p.prompts_per_step,
        p.samples,
        p.max_response_tokens,
        inputs.tasks.eval.len()
    );
    let eval = |actor: &Llama<B>, step: usize| {
        // Evaluation generates as many rows at once as a rollout does.
        let rows = p.prompts_per_step * p.samples;
        evaluate(&actor.valid(), &inputs, &eval_prompts, (p.max_response_tokens, rows), out, step)
    };
    let track_test_set = |actor: &Llama<B>, step: usize| match &cfg.track {
        Some(track) if track.tracks_after(step) => {
            let rows = p.prompts_per_step * p.samples;
            track_generations(&actor.valid(), &inputs, &eval_prompts, track, (p.max_response_tokens, rows), (out, step, p.seed))
        }
        _ => Ok(()),
    };
    let (mut first_eval, mut last_eval, mut checkpoint_dir) = (None, None, None);
    if !run.resumed {
        let score = eval(&run.actor, 0)?;
        run.metrics.write(&json!({"kind": "eval", "step": 0, "score": score}))?;
        eprintln!("eval before PPO: accuracy {:.3}, reward {:.3}, format {:.3}", score.accuracy, score.reward_mean, score.format_rate);
        first_eval = Some(score);
        track_test_set(&run.actor, 0)?;
        // The primed model and its evaluation are kept: a run stopped before its first step
        // resumes here, without priming again.
        checkpoint_dir = save(cfg, &run, opts)?;
    }
    let mut ran = 0usize;
    while opts.another_step(run.state.step, p.steps, ran, run_started) {
        let step = run.state.step + 1;
        // `--gpu-profile`: the invocation's first step, by part (`gpu_profile::mark`).
        let profile = match &opts.gpu_profile {
            Some(path) if ran == 0 => {
                sync::<B>(device)?;
                Some(GpuProfile::start(path)?)
            }
            _ => None,
        };
        run = ppo_step(run, step, cfg, &inputs)?;
        if let Some(profile) = profile {
            sync::<B>(device)?;
            let window = profile.finish(1)?;
            eprintln!("GPU profile of step {step}: {window} in {}", opts.gpu_profile.as_ref().expect("a path").display());
        }
        ran += 1;
        let ends_run = opts.ends_run(step, p.steps, run_started);
        if step % p.eval_every.max(1) == 0 || ends_run {
            let score = eval(&run.actor, step)?;
            run.metrics.write(&json!({"kind": "eval", "step": step, "score": score}))?;
            eprintln!("eval at step {step}: accuracy {:.3}, reward {:.3}, format {:.3}", score.accuracy, score.reward_mean, score.format_rate);
            last_eval = Some(score);
        }
        track_test_set(&run.actor, step)?;
        if step % p.save_every.max(1) == 0 || ends_run {
            checkpoint_dir = save(cfg, &run, opts)?;
        }
    }
    Ok(PpoSummary { steps: run.state.step, total_steps: p.steps, first_eval, last_eval, checkpoint: checkpoint_dir })
}

/// Prints what the run will hold in the card's memory (and in the host's, with the
/// optimizer state there) and stops, before anything is loaded, a run that cannot fit;
/// `prompt` is the longest prompt (the held-out tasks', of the same template as the
/// training tasks').
fn plan_memory<D: 'static>(cfg: &PpoConfig, model: &ModelConfig, prompt: usize, device: &D) -> Result<()> {
    let p = &cfg.ppo;
    let bytes = |dtype: &str| -> Result<usize> { Ok(compute_bytes(parse_compute(dtype)?)) };
    let settings = PpoSettings {
        micro_batch: p.micro_batch,
        prompt,
        response: p.max_response_tokens,
        compute_bytes: bytes(&p.compute_dtype)?,
        reference_bytes: bytes(&p.reference_dtype)?,
        recomputed: p.recompute.layers(model.num_layers, "ppo.recompute")?,
        state_on_host: p.optimizer_state == OptimizerState::Host,
    };
    let card = card_memory(device);
    let plan = PpoMemoryPlan::new(model, &settings);
    eprintln!("{}", plan.describe(card));
    if let (true, Some(available)) = (settings.state_on_host, host_memory_available()) {
        check_host_fits(plan.host_state, available)?;
    }
    match card {
        Some((free, _)) => check_ppo_fits(model, &settings, free),
        None => Ok(()),
    }
}

/// The policy to start from: the newest checkpoint's, or a fresh (primed, when the config
/// asks) actor that also becomes the reference and the critic's trunk.
fn start<B: TrainBackend>(cfg: &PpoConfig, inputs: &Inputs, device: &B::Device, opts: &RunOptions) -> Result<Policy<B>> {
    let (p, out) = (&cfg.ppo, &cfg.output.dir);
    if opts.fresh {
        std::fs::remove_dir_all(out.join("checkpoints")).ok();
        std::fs::remove_file(reference_path(out).with_extension("mpk")).ok();
        std::fs::remove_dir_all(super::track::rollouts_dir(out)).ok();
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&json!({ "ppo": cfg, "model": inputs.model }))?)?;
    B::seed(device, p.seed);
    let compute = check_compute_dtype(&p.compute_dtype, BackendKind::parse(&p.backend, "ppo.backend")?, "ppo.compute_dtype")?;
    let fresh_actor = || -> Result<Llama<B>> {
        Ok(match &cfg.model.weights {
            Some(w) => load_weights(&inputs.model, w, device)?,
            None => Llama::random(&inputs.model, device),
        }
        .with_compute(compute)
        .with_kernels(cfg.kernels))
    };
    let on_host = p.optimizer_state == OptimizerState::Host;
    let optimizer =
        || OnePassAdamW::with_settings(p.beta1, p.beta2, p.eps, p.weight_decay).with_state_on_host(on_host).with_pinned_moments(cfg.kernels.pinned_moments);
    let (actor_optim, critic_optim) = (optimizer().init::<B, Llama<B>>(), optimizer().init::<B, Critic<B>>());
    let Some(dir) = checkpoint::latest(out) else {
        let mut metrics = Metrics::open(&out.join("metrics.jsonl"), 0)?;
        let actor = match &cfg.prime {
            Some(_) => prime_actor(fresh_actor()?, cfg, inputs, &mut metrics)?,
            None => fresh_actor()?,
        };
        if !opts.no_save {
            checkpoint::write_module(&reference_path(out), &actor.valid())?;
        }
        let (critic, reference) = (Critic::from_actor(&actor).with_random_value_head(p.value_head_std), hold_reference(actor.valid(), p)?);
        let state = TrainState { fingerprint: inputs.fingerprint.clone(), ..Default::default() };
        return Ok(Policy { actor, critic, actor_optim, critic_optim, reference, state, metrics, resumed: false });
    };
    let state = checkpoint::read_state(&dir, &inputs.fingerprint)?;
    let shape = fresh_actor()?;
    let policy = Policy {
        actor: checkpoint::read_module(&dir.join("actor"), shape.clone(), device)?,
        critic: checkpoint::read_module(&dir.join("critic"), Critic::from_actor(&shape), device)?,
        actor_optim: checkpoint::read_optimizer(&dir.join("actor_optimizer"), actor_optim, device)?,
        critic_optim: checkpoint::read_optimizer(&dir.join("critic_optimizer"), critic_optim, device)?,
        reference: hold_reference(checkpoint::read_module(&reference_path(out), shape.valid(), device)?, p)?,
        metrics: Metrics::open(&out.join("metrics.jsonl"), state.step)?,
        state,
        resumed: true,
    };
    eprintln!("ppo: resuming after step {} from {}", policy.state.step, dir.display());
    Ok(policy)
}

/// The frozen reference in `ppo.reference_dtype` (written to and read from its file in
/// f32, so a resumed run holds the same values).
fn hold_reference<B: ModelBackend>(reference: Llama<B>, p: &PpoSection) -> Result<Llama<B>> {
    Ok(match parse_compute(&p.reference_dtype)? {
        Some(dtype) => reference.held_in(dtype),
        None => reference,
    })
}

/// Priming before PPO (`[prime]`): SFT on a priming set's traces, or on solver traces of
/// tasks past the PPO run's.
fn prime_actor<B: TrainBackend>(actor: Llama<B>, cfg: &PpoConfig, inputs: &Inputs, metrics: &mut Metrics) -> Result<Llama<B>> {
    let pr = cfg.prime.as_ref().expect("asked for priming");
    let started = Instant::now();
    let set = pr.set.as_deref().map(|dir| read_priming_set(dir, &inputs.tok)).transpose()?;
    let traces = match &set {
        Some(sequences) => Traces::Set(sequences),
        None => Traces::Solver { tasks: &inputs.tasks, tok: &inputs.tok, bos: inputs.bos, first_step: cfg.ppo.steps + 1 },
    };
    let (primed, loss) = prime(actor, &traces, inputs.eos, pr.steps, pr.batch_size, pr.lr, |step, loss| {
        if step % 10 == 0 || step == pr.steps {
            eprintln!("prime: step {step}/{}  loss {loss:.4}", pr.steps);
        }
        metrics.write(&json!({"kind": "prime", "step": 0, "prime_step": step, "loss": loss})).ok();
    })?;
    eprintln!("prime: {} steps in {:.0} s, last loss {loss:.4}", pr.steps, started.elapsed().as_secs_f64());
    Ok(primed)
}

/// Writes a checkpoint of the policy (actor, critic, both optimizers), unless the run
/// writes none (`--no-save`).
fn save<B: TrainBackend>(cfg: &PpoConfig, run: &Policy<B>, opts: &RunOptions) -> Result<Option<PathBuf>> {
    if opts.no_save {
        return Ok(None);
    }
    checkpoint::save_with(&cfg.output.dir, &run.state, cfg.ppo.keep_checkpoints, |dir| {
        checkpoint::write_module(&dir.join("actor"), &run.actor)?;
        checkpoint::write_module(&dir.join("critic"), &run.critic)?;
        checkpoint::write_optimizer::<B, Llama<B>, _>(&dir.join("actor_optimizer"), &run.actor_optim)?;
        checkpoint::write_optimizer::<B, Critic<B>, _>(&dir.join("critic_optimizer"), &run.critic_optim)
    })
    .map(Some)
}

/// One PPO step (`step`, counted from 1): the step's tasks rolled out and scored, the
/// tracked rollouts written, actor and critic updated, the step's metrics logged.
fn ppo_step<B: TrainBackend>(mut run: Policy<B>, step: usize, cfg: &PpoConfig, inputs: &Inputs) -> Result<Policy<B>> {
    let p = &cfg.ppo;
    let started = Instant::now();
    let drawn: Vec<Task> = inputs.tasks.for_step(step, p.prompts_per_step).into_iter().map(|(t, _)| t).collect();
    let prompts: Vec<Vec<u32>> = drawn.iter().map(|t| inputs.encode(t)).collect::<Result<_>>()?;
    let settings = rollout_settings(p, step, inputs.eos);
    let rolled = rollout(&run.actor.valid(), &run.reference, &run.critic.valid(), &prompts, &inputs.tok, |i, text| judge(text, &drawn[i]).score(), &settings)?;
    let rollout_s = started.elapsed().as_secs_f64();
    let (batch, times, rows_sent_back) = (rolled.rollouts, rolled.times, rolled.rows_sent_back);
    // A study step's rollout and update take minutes each at the 3B shape: say where it is.
    eprintln!(
        "step {step}: {} responses rolled out in {rollout_s:.1} s (generation {:.1}, scoring {:.1}); updating",
        batch.len(),
        times.generation_s,
        times.actor_logp_s + times.reference_logp_s + times.values_s
    );
    if batch.is_empty() {
        bail!("step {step}: every response was empty");
    }
    if let Some(track) = &cfg.track
        && track.keeps_batch_of(step)
    {
        let kept: Vec<TrackedRollout> = batch
            .iter()
            .take(track.samples)
            .map(|r| TrackedRollout { task: &drawn[r.index], response: inputs.tok.decode(&r.response), score: r.score, response_tokens: r.response.len() })
            .collect();
        write_rollouts(&cfg.output.dir, step, &kept)?;
    }
    let update_started = Instant::now();
    // The rollout's cache blocks and the scoring passes' activations are free but their
    // pages stay in the memory pool, in sizes the update's gradients and graphs do not
    // take: they go back to the driver first (at the 3B shape on an 80 GB card the update
    // ran out of memory without this).
    B::memory_cleanup(&run.actor.embed_tokens.weight.val().device());
    let recomputed = p.recompute.layers(inputs.model.num_layers, "ppo.recompute")?;
    let settings = update_settings(p, inputs.eos, recomputed, run.actor.kernels());
    let (actor, critic, stats) = update(run.actor, run.critic, &mut run.actor_optim, &mut run.critic_optim, &batch, &settings);
    (run.actor, run.critic) = (actor, critic);
    let update_s = update_started.elapsed().as_secs_f64();
    if !(stats.policy_loss.is_finite() && stats.value_loss.is_finite()) {
        bail!("step {step}: the losses are not finite ({stats:?}); the last checkpoint is kept");
    }
    let n = batch.len() as f64;
    let response_tokens: usize = batch.iter().map(|r| r.response.len()).sum();
    run.state.step = step;
    run.state.tokens_seen += response_tokens as u64;
    let kl: f64 = batch.iter().flat_map(|r| r.old_logp.iter().zip(&r.ref_logp).map(|(a, b)| a - b)).sum::<f64>() / response_tokens.max(1) as f64;
    let reward_mean = batch.iter().map(|r| r.score).sum::<f64>() / n;
    let accuracy = batch.iter().filter(|r| r.score >= CORRECT_SCORE).count() as f64 / n;
    let format_rate = batch.iter().filter(|r| r.score > 0.0).count() as f64 / n;
    let step_s = started.elapsed().as_secs_f64();
    run.metrics.write(&json!({
        "kind": "train", "step": step, "reward_mean": reward_mean, "accuracy": accuracy, "format_rate": format_rate,
        "response_tokens_mean": response_tokens as f64 / n, "kl": kl, "entropy": stats.entropy, "policy_loss": stats.policy_loss,
        "value_loss": stats.value_loss, "clip_fraction": stats.clip_fraction, "value_clip_fraction": stats.value_clip_fraction,
        "actor_grad_norm": stats.actor_grad_norm, "critic_grad_norm": stats.critic_grad_norm, "responses": batch.len(),
        "rollout_tokens_per_s": response_tokens as f64 / times.generation_s, "rollout_s": rollout_s, "generation_s": times.generation_s,
        "rows_sent_back": rows_sent_back,
        "actor_logp_s": times.actor_logp_s, "reference_logp_s": times.reference_logp_s, "values_s": times.values_s, "update_s": update_s,
        "critic_update_s": stats.critic_update_s, "actor_update_s": stats.actor_update_s, "step_s": step_s,
    }))?;
    eprintln!(
        "step {step}/{}  reward {reward_mean:.3}  accuracy {accuracy:.3}  format {format_rate:.3}  kl {kl:.4}  entropy {:.3}  {:.1} tokens/response  {step_s:.1} s (generation {:.1}, scoring {:.1}: actor {:.1}, reference {:.1}, values {:.1}; update {update_s:.1}: critic {:.1}, actor {:.1})",
        p.steps,
        stats.entropy,
        response_tokens as f64 / n,
        times.generation_s,
        times.actor_logp_s + times.reference_logp_s + times.values_s,
        times.actor_logp_s,
        times.reference_logp_s,
        times.values_s,
        stats.critic_update_s,
        stats.actor_update_s
    );
    Ok(run)
}

/// How step `step` rolls out: its sampling seeded by the run's seed and the step.
fn rollout_settings(p: &PpoSection, step: usize, eos: u32) -> RolloutSettings {
    RolloutSettings {
        samples: p.samples,
        sampling: Sampling {
            max_new_tokens: p.max_response_tokens,
            temperature: p.temperature,
            top_p: p.top_p,
            seed: p.seed ^ (step as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
            eos: Some(eos),
        },
        micro_batching: micro_batching(p),
        kl_coef: p.kl_coef,
        gamma: p.gamma,
        lambda: p.lambda,
    }
}

fn micro_batching(p: &PpoSection) -> MicroBatching {
    MicroBatching { rows: p.micro_batch, by_positions: p.micro_batch_by_positions }
}

fn update_settings(p: &PpoSection, pad: u32, recompute_layers: usize, kernels: Kernels) -> UpdateSettings {
    UpdateSettings {
        clip: p.clip,
        value_clip: p.value_clip,
        entropy_coef: p.entropy_coef,
        actor_mini_batch: p.actor_mini_batch_prompts * p.samples,
        critic_mini_batch: p.critic_mini_batch,
        micro_batching: micro_batching(p),
        max_response: p.max_response_tokens,
        loss_average: p.loss_average,
        actor_loss_group: p.actor_loss_group,
        critic_loss_group: p.critic_loss_group,
        pad,
        grad_clip: p.grad_clip,
        actor_lr: p.actor_lr,
        critic_lr: p.critic_lr,
        recompute_layers,
        kernels,
    }
}

/// The test-set generations tracked after step `step` (0: before PPO): `track.samples`
/// held-out tasks drawn at random from the run's seed and the step, sampled at
/// `track.temperature`, `rows` at a time up to `max_tokens` each, scored and written as the
/// step's part.
fn track_generations<B: ModelBackend>(
    model: &Llama<B>,
    inputs: &Inputs,
    prompts: &[Vec<u32>],
    track: &TrackSection,
    (max_tokens, rows): (usize, usize),
    (out, step, seed): (&Path, usize, u64),
) -> Result<()> {
    let seed = seed ^ 0x7472_6163_6b00_0000 ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let drawn = draw_tasks(prompts.len(), track.samples, seed);
    let sampling = Sampling { max_new_tokens: max_tokens, temperature: track.temperature, top_p: 1.0, seed, eos: Some(inputs.eos) };
    let mut kept = Vec::with_capacity(drawn.len());
    for chunk in drawn.chunks(rows.max(1)) {
        let chunk_prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let generated = generate(model, &chunk_prompts, &sampling, false)?;
        for ((&i, prompt_ids), response) in chunk.iter().zip(&chunk_prompts).zip(generated.tokens) {
            let task = &inputs.tasks.eval[i];
            let full: Vec<u32> = prompt_ids.iter().chain(&response).copied().collect();
            let score = judge(&inputs.tok.decode(&full), task).score();
            kept.push(TrackedRollout { task, response: inputs.tok.decode(&response), score, response_tokens: response.len() });
        }
    }
    write_rollouts(out, step, &kept)?;
    Ok(())
}

/// Greedy responses to the held-out tasks, scored; the first few are kept in
/// `eval_samples.jsonl` (step, task, response, verdict) for reading and behavior tracking.
/// Generates `rows` at a time (as many as a rollout), up to `max_tokens` each.
fn evaluate<B: ModelBackend>(
    model: &Llama<B>,
    inputs: &Inputs,
    prompts: &[Vec<u32>],
    (max_tokens, rows): (usize, usize),
    out: &Path,
    step: usize,
) -> Result<EvalScore> {
    let (tok, tasks, eos) = (&inputs.tok, inputs.tasks.eval.as_slice(), inputs.eos);
    let sampling = Sampling { max_new_tokens: max_tokens, temperature: 0.0, top_p: 1.0, seed: 0, eos: Some(eos) };
    let (mut correct, mut formatted, mut reward, mut tokens) = (0usize, 0usize, 0.0, 0usize);
    let mut samples = Vec::new();
    let (mut checked, mut differing) = (0, 0);
    for (chunk_tasks, chunk_prompts) in tasks.chunks(rows.max(1)).zip(prompts.chunks(rows.max(1))) {
        let generated = generate(model, chunk_prompts, &sampling, false)?;
        if checked == 0 && chunk_prompts.len() > 1 {
            for (prompt, batched) in chunk_prompts.iter().zip(&generated.tokens).take(ROWS_CHECKED) {
                let alone = generate(model, std::slice::from_ref(prompt), &sampling, false)?.tokens;
                checked += 1;
                differing += usize::from(alone.first() != Some(batched));
            }
            if differing > 0 {
                eprintln!(
                    "warning: evaluation at step {step}: {differing} of {checked} rows generated alone differ from the same rows in the batch (the backend mixes rows up: responses are scored against other rows' tasks; `trainer check-batch` checks a backend, HABITS_CUDA_FUSION=0 runs CUDA without burn's fusion)"
                );
            }
        }
        for ((task, prompt_ids), response) in chunk_tasks.iter().zip(chunk_prompts).zip(generated.tokens) {
            let full: Vec<u32> = prompt_ids.iter().chain(&response).copied().collect();
            let verdict = judge(&tok.decode(&full), task);
            let score = verdict.score();
            correct += usize::from(score >= CORRECT_SCORE);
            formatted += usize::from(score > 0.0);
            reward += score;
            tokens += response.len();
            if samples.len() < 8 {
                let text = tok.decode(&response);
                samples
                    .push(json!({"step": step, "target": task.target, "nums": task.nums, "response": text, "verdict": format!("{verdict:?}"), "score": score}));
            }
        }
    }
    let mut file = Metrics::open(&out.join("eval_samples.jsonl"), step.saturating_sub(1))?;
    for s in samples {
        file.write(&s)?;
    }
    let n = tasks.len().max(1) as f64;
    Ok(EvalScore {
        accuracy: correct as f64 / n,
        reward_mean: reward / n,
        format_rate: formatted as f64 / n,
        response_tokens_mean: tokens as f64 / n,
        rows_checked: checked,
        rows_differing: differing,
    })
}

/// What a checkpoint must agree with to be resumed.
fn fingerprint(cfg: &PpoConfig, model: &ModelConfig, tokenizer: &str) -> String {
    // How long to run, how often to evaluate and save, and how many rows go through one
    // forward pass do not change what a step computes; the averaging groups do only under
    // veRL's averaging.
    let mut ppo = serde_json::to_value(&cfg.ppo).unwrap_or_default();
    let mut ignored = vec!["steps", "eval_every", "save_every", "keep_checkpoints", "micro_batch", "micro_batch_by_positions", "recompute", "optimizer_state"];
    if cfg.ppo.loss_average == super::update::LossAverage::Tokens {
        ignored.extend(["actor_loss_group", "critic_loss_group"]);
    }
    for k in ignored {
        ppo.as_object_mut().map(|o| o.remove(k));
    }
    let v = json!({ "model": model, "weights": cfg.model.weights, "tokenizer": tokenizer, "tasks": cfg.tasks, "prime": cfg.prime, "ppo": ppo });
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}
