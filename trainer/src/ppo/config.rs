//! The PPO run config (`configs/ppo*.toml`): the model and tokenizer, where Countdown tasks
//! come from, an optional priming SFT on solver traces, the PPO settings (defaults: the
//! study's) and the output folder. Unknown keys are errors; relative paths are resolved as
//! in the pretraining config.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::track::TrackSection;
use crate::countdown::task::TaskSpec;
use crate::ops::backend::BackendKind;
use crate::ops::kernels::Kernels;
use crate::run::backward::Recompute;
use crate::train::config::{base_dir, check_compute_dtype};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoConfig {
    pub model: PpoModel,
    #[serde(default)]
    pub tasks: TaskSection,
    #[serde(default)]
    pub prime: Option<PrimeSection>,
    #[serde(default)]
    pub ppo: PpoSection,
    /// Rollouts kept for behavior tracking; none: no tracking.
    #[serde(default)]
    pub track: Option<TrackSection>,
    pub output: PpoOutput,
    /// Which kernel paths the ops take (`ops::kernels`; the environment overrides it).
    #[serde(default)]
    pub kernels: Kernels,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoModel {
    /// A Hugging Face `config.json`, or the folder holding it.
    pub config: PathBuf,
    /// Weights to start from (safetensors file, index or folder); none: random init.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// `tokenizer.json`; default: Llama-3's in the habits cache.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
}

/// Where tasks come from: generated (seeded, solvable) or rows of a TinyZero parquet file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// A TinyZero-layout parquet file (`target`, `nums`); none: generate.
    #[serde(default)]
    pub parquet: Option<PathBuf>,
    /// Rows of the parquet file for training and for evaluation (the study: 0..327680, 327680..328704).
    #[serde(default = "default_train_rows")]
    pub train_rows: [usize; 2],
    #[serde(default = "default_eval_rows")]
    pub eval_rows: [usize; 2],
    /// Generated tasks (`[tasks.generate]`): numbers per task, their range, the target range.
    #[serde(default)]
    pub generate: TaskSpec,
    /// Seed of the generated tasks (training and evaluation draw disjoint streams from it).
    #[serde(default = "default_task_seed")]
    pub seed: u64,
    /// Held-out tasks scored greedily at every evaluation.
    #[serde(default = "default_eval_tasks")]
    pub eval_tasks: usize,
}

fn default_train_rows() -> [usize; 2] {
    [0, 327_680]
}
fn default_eval_rows() -> [usize; 2] {
    [327_680, 328_704]
}
fn default_task_seed() -> u64 {
    7
}
fn default_eval_tasks() -> usize {
    128
}

impl Default for TaskSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// Supervised priming before PPO, so that a model that has never seen the format learns
/// it: the solver's solutions as short traces, or a priming set (`pipeline prime`, the
/// study's LLM-written conditions).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimeSection {
    pub steps: usize,
    /// A priming set folder (e.g. `runs/priming/priming/all_strategies`): its train rows,
    /// in order and cycling, instead of solver traces.
    #[serde(default)]
    pub set: Option<PathBuf>,
    #[serde(default = "default_prime_batch")]
    pub batch_size: usize,
    #[serde(default = "default_prime_lr")]
    pub lr: f64,
}

fn default_prime_batch() -> usize {
    16
}
fn default_prime_lr() -> f64 {
    1e-4
}

/// PPO settings; the defaults are the study's (PAPER.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoSection {
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The dtype the matmuls of actor, critic and reference run in (rollouts and updates):
    /// `f32` (default), `bf16` or `f16` (CUDA only), `f64`; parameters stay f32.
    #[serde(default = "default_compute_dtype")]
    pub compute_dtype: String,
    /// The dtype the frozen reference policy is held in, its matmuls with it: `f32`
    /// (default, like the actor) or `bf16` / `f16` (CUDA only: half the memory; veRL, the
    /// study's trainer, loads its reference in bf16). Its norms and residual stream stay f32.
    #[serde(default = "default_compute_dtype", skip_serializing_if = "is_f32")]
    pub reference_dtype: String,
    /// Decoder layers that recompute their activations in the update's backward pass:
    /// `"none"` (default), `"layers"` (every one) or how many of the first. Memory for time;
    /// what a step computes is unchanged, so a run may resume with another value.
    #[serde(default, skip_serializing_if = "is_none")]
    pub recompute: Recompute,
    /// Where AdamW's moments of the actor and the critic live between updates: `"device"`
    /// (default) or `"host"` (host memory: each parameter's are uploaded for its update and
    /// read back, 16 bytes a parameter over the bus a step; the same results to the bit).
    #[serde(default, skip_serializing_if = "OptimizerState::is_device")]
    pub optimizer_state: OptimizerState,
    /// PPO iterations (rollout + update).
    #[serde(default = "default_steps")]
    pub steps: usize,
    #[serde(default = "default_prompts")]
    pub prompts_per_step: usize,
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default = "default_response")]
    pub max_response_tokens: usize,
    #[serde(default = "default_one")]
    pub temperature: f64,
    #[serde(default = "default_one")]
    pub top_p: f64,
    #[serde(default = "default_kl")]
    pub kl_coef: f64,
    #[serde(default = "default_one")]
    pub gamma: f64,
    #[serde(default = "default_one")]
    pub lambda: f64,
    #[serde(default = "default_clip")]
    pub clip: f64,
    #[serde(default = "default_value_clip")]
    pub value_clip: f64,
    #[serde(default = "default_entropy")]
    pub entropy_coef: f64,
    /// Prompts per actor optimizer step, as veRL's `ppo_mini_batch_size` counts them: the
    /// actor steps every `actor_mini_batch_prompts x samples` responses (the study: 128 x 4
    /// = 512, two actor steps of a 1,024-response batch).
    #[serde(default = "default_mini_batch")]
    pub actor_mini_batch_prompts: usize,
    /// Responses per critic optimizer step (veRL does not multiply the critic's by the
    /// samples: 128 responses, eight critic steps of a 1,024-response batch).
    #[serde(default = "default_mini_batch")]
    pub critic_mini_batch: usize,
    /// The former `mini_batch` (it meant responses for both): refused with the new keys.
    #[serde(default, skip_serializing)]
    pub mini_batch: Option<usize>,
    /// AdamW of actor and critic, named as `[train]`'s (the study's: betas 0.9 / 0.999,
    /// eps 1e-8, weight decay 0.01).
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// How a mini-batch's loss is averaged: `micro_batch` (veRL's: the mean, over groups of
    /// `actor_loss_group` / `critic_loss_group` responses, of each group's token mean) or
    /// `tokens` (every token of the mini-batch weighs the same).
    #[serde(default = "default_loss_average")]
    pub loss_average: crate::ppo::update::LossAverage,
    /// Responses per veRL micro-batch, the averaging groups of `micro_batch` averaging. The
    /// study's `ppo_micro_batch_size = 4` on 4 GPUs: 1 prompt x 4 samples per GPU for the
    /// actor (veRL multiplies the actor's by the samples), 1 response for the critic.
    #[serde(default = "default_actor_loss_group")]
    pub actor_loss_group: usize,
    #[serde(default = "default_one_usize")]
    pub critic_loss_group: usize,
    /// Standard deviation of the critic's value head at the start (the library's random
    /// initialisation of a token-classification head: 0.02); 0: zeros.
    #[serde(default = "default_value_head_std")]
    pub value_head_std: f64,
    /// Put the model's BOS token before every prompt (PPO's and the priming traces'); the
    /// study tokenized them without special tokens.
    #[serde(default)]
    pub add_bos: bool,
    /// Rows per forward/backward pass, in scoring and in the update (gradients accumulate
    /// over a mini-batch): a memory knob that does not change what a step computes, so a
    /// run may resume with another value (after running out of device memory, say).
    #[serde(default = "default_micro_batch")]
    pub micro_batch: usize,
    /// Micro-batches of shorter rows take more of them: as many as pad to the positions of
    /// `micro_batch` rows of the longest prompt + `max_response_tokens` (veRL's dynamic batch
    /// size). Memory only, like `micro_batch`, and within the memory plan's.
    #[serde(default)]
    pub micro_batch_by_positions: bool,
    #[serde(default = "default_one")]
    pub grad_clip: f64,
    #[serde(default = "default_actor_lr")]
    pub actor_lr: f64,
    #[serde(default = "default_critic_lr")]
    pub critic_lr: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Evaluate every N steps (and before the first and after the last).
    #[serde(default = "default_every")]
    pub eval_every: usize,
    /// Checkpoint every N steps (and after the last).
    #[serde(default = "default_every")]
    pub save_every: usize,
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
}

fn default_compute_dtype() -> String {
    "f32".into()
}
/// Where an optimizer's moments live between updates (`ppo.optimizer_state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerState {
    #[default]
    Device,
    Host,
}

impl OptimizerState {
    fn is_device(&self) -> bool {
        *self == OptimizerState::Device
    }
}

fn is_f32(dtype: &str) -> bool {
    dtype == "f32"
}
fn is_none(recompute: &Recompute) -> bool {
    *recompute == Recompute::default()
}
fn default_backend() -> String {
    "cpu".into()
}
fn default_steps() -> usize {
    250
}
fn default_prompts() -> usize {
    256
}
fn default_samples() -> usize {
    4
}
fn default_response() -> usize {
    1024
}
fn default_one() -> f64 {
    1.0
}
fn default_kl() -> f64 {
    0.001
}
fn default_clip() -> f64 {
    0.2
}
fn default_value_clip() -> f64 {
    0.5
}
fn default_entropy() -> f64 {
    0.001
}
fn default_mini_batch() -> usize {
    128
}
fn default_micro_batch() -> usize {
    16
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_loss_average() -> crate::ppo::update::LossAverage {
    crate::ppo::update::LossAverage::MicroBatch
}
fn default_actor_loss_group() -> usize {
    4
}
fn default_one_usize() -> usize {
    1
}
fn default_value_head_std() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_actor_lr() -> f64 {
    1e-6
}
fn default_critic_lr() -> f64 {
    1e-5
}
fn default_seed() -> u64 {
    20250304
}
fn default_every() -> usize {
    10
}
fn default_keep() -> usize {
    2
}

impl Default for PpoSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoOutput {
    pub dir: PathBuf,
}

impl PpoConfig {
    /// Reads and checks a config file; paths come back resolved.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let mut c: PpoConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = base_dir(path);
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        c.model.config = resolve(&c.model.config);
        c.model.weights = c.model.weights.as_deref().map(resolve);
        c.model.tokenizer = Some(c.model.tokenizer.as_deref().map(resolve).unwrap_or_else(crate::tokenizer::default_path));
        c.tasks.parquet = c.tasks.parquet.as_deref().map(resolve);
        if let Some(prime) = c.prime.as_mut() {
            prime.set = prime.set.as_deref().map(resolve);
        }
        c.output.dir = resolve(&c.output.dir);
        c.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let p = &self.ppo;
        let backend = BackendKind::parse(&p.backend, "ppo.backend")?;
        check_compute_dtype(&p.compute_dtype, backend, "ppo.compute_dtype")?;
        check_compute_dtype(&p.reference_dtype, backend, "ppo.reference_dtype")?;
        // The model's layers are not known here; a name is checked now, a count at the start.
        p.recompute.layers(usize::MAX, "ppo.recompute")?;
        if let Some(n) = p.mini_batch {
            bail!(
                "ppo.mini_batch = {n} is no longer read: it meant responses for actor and critic alike. Set ppo.actor_mini_batch_prompts \
                 (prompts per actor step, times `samples` responses, as veRL counts; the study: 128) and ppo.critic_mini_batch \
                 (responses per critic step; the study: 128)"
            );
        }
        if p.steps == 0
            || p.prompts_per_step == 0
            || p.samples == 0
            || p.actor_mini_batch_prompts == 0
            || p.critic_mini_batch == 0
            || p.micro_batch == 0
            || p.actor_loss_group == 0
            || p.critic_loss_group == 0
            || p.max_response_tokens == 0
        {
            bail!(
                "ppo.steps, prompts_per_step, samples, actor_mini_batch_prompts, critic_mini_batch, micro_batch, actor_loss_group, critic_loss_group and max_response_tokens must be at least 1"
            );
        }
        if !((0.0..1.0).contains(&p.beta1) && (0.0..1.0).contains(&p.beta2) && p.eps > 0.0 && p.weight_decay >= 0.0) {
            bail!("ppo.beta1 and beta2 must be within [0, 1), eps > 0, weight_decay >= 0");
        }
        if !(p.actor_lr > 0.0 && p.critic_lr > 0.0) || p.temperature < 0.0 || !(0.0..=1.0).contains(&p.top_p) || p.clip <= 0.0 {
            bail!("ppo.actor_lr and critic_lr must be > 0, temperature >= 0, top_p within 0..1, clip > 0");
        }
        let s = &self.tasks.generate;
        if s.min_numbers < 2 || s.max_numbers < s.min_numbers || s.max_number < s.min_number || s.max_target < s.min_target {
            bail!("tasks: min_numbers >= 2 and every min <= its max");
        }
        if self.tasks.eval_tasks == 0 {
            bail!("tasks.eval_tasks must be at least 1");
        }
        if let Some(track) = &self.track
            && (track.every == 0 || track.samples == 0 || !(track.temperature >= 0.0 && track.temperature.is_finite()))
        {
            bail!("track.every and track.samples must be at least 1, and track.temperature a number >= 0 (the study: 1.0)");
        }
        if let Some(prime) = &self.prime
            && (prime.batch_size == 0 || prime.lr <= 0.0)
        {
            bail!("prime.batch_size must be at least 1 and prime.lr > 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_ppo_config_loads() {
        let paths = crate::train::config::shipped_configs(&["ppo"]);
        let names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["ppo-gpu.toml", "ppo-tiny.toml", "ppo.toml"]);
        for path in &paths {
            let c = PpoConfig::load(path).unwrap_or_else(|e| panic!("{e:#}"));
            // Shapes shipped in configs/models must be there (the 3B weights are the user's).
            if c.model.config.to_string_lossy().contains("configs/models/") {
                assert!(c.model.config.is_file(), "{}: model.config {} is not a file", path.display(), c.model.config.display());
            }
        }
    }
}
