//! The pretraining config: one TOML file (`configs/pretrain*.toml`); unknown keys are
//! errors, relative paths are taken from the project root when the file is in `configs/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::pack::Objective;
use crate::model::precision::{Compute, parse_compute};
use crate::ops::backend::BackendKind;
use crate::ops::kernels::Kernels;
use crate::run::backward::Recompute;
use burn::tensor::FloatDType;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub train: TrainSection,
    pub output: OutputSection,
    /// Which kernel paths the ops take (`ops::kernels`; the environment overrides it).
    #[serde(default)]
    pub kernels: Kernels,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face `config.json`, or the folder holding it.
    pub config: PathBuf,
    /// Weights to start from (a `.safetensors` file, an index, or a folder); none: random init.
    #[serde(default)]
    pub weights: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A built set folder (`runs/<name>/sets/rich`).
    pub set: PathBuf,
    #[serde(default = "default_objective")]
    pub objective: Objective,
    /// Positions per window: one example per row padded to it (the study: 2048), or the
    /// packed windows' length.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Concatenate examples across windows (attention crosses their boundaries inside a
    /// window; no padding spent). The study put one example per row: `false`.
    #[serde(default)]
    pub packing: bool,
}

impl DataSection {
    /// How this section turns sequences into windows (`pad` fills unused positions).
    pub fn layout(&self, pad: u32) -> crate::data::pack::Layout {
        crate::data::pack::Layout { seq_len: self.seq_len, objective: self.objective, packing: self.packing, pad }
    }
}

fn default_objective() -> Objective {
    Objective::Sft
}
fn default_seq_len() -> usize {
    2048
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The dtype the matmuls run in: `f32` (default), `bf16` or `f16` (CUDA only), `f64`;
    /// parameters and optimizer state stay f32 (mixed precision).
    #[serde(default = "default_compute_dtype")]
    pub compute_dtype: String,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_warmup")]
    pub warmup_fraction: f64,
    #[serde(default)]
    pub min_lr_ratio: f64,
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// Windows per micro-batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the study: 8 x 8 = 64 examples a step).
    #[serde(default = "default_grad_accum")]
    pub grad_accum: usize,
    /// Decoder layers that recompute their activations in the backward pass instead of
    /// keeping them (`run::backward`): `"none"`, `"layers"` (all) or the first N. Less
    /// memory for one more forward pass of those layers; the results are the same.
    #[serde(default)]
    pub recompute: Recompute,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Stop after this many optimizer steps (0: `epochs` decide).
    #[serde(default)]
    pub max_steps: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Evaluate on the test split every N steps (0: only at the end).
    #[serde(default)]
    pub eval_every: usize,
    /// Save a checkpoint every N steps (0: only at the end).
    #[serde(default)]
    pub save_every: usize,
    /// Checkpoints kept (the newest).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// The device's peak dense TFLOP/s for MFU (0: MFU not reported).
    #[serde(default)]
    pub peak_tflops: f64,
}

fn default_backend() -> String {
    "cpu".into()
}
fn default_compute_dtype() -> String {
    "f32".into()
}
fn default_lr() -> f64 {
    1e-5
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_grad_accum() -> usize {
    8
}
fn default_epochs() -> usize {
    5
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_warmup() -> f64 {
    0.1
}
fn default_clip() -> f64 {
    1.0
}
fn default_batch() -> usize {
    8
}
fn default_seed() -> u64 {
    20250304
}
fn default_keep() -> usize {
    2
}

impl Default for TrainSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Metrics, checkpoints and the final model go here.
    pub dir: PathBuf,
    /// When the run ends, write its model as a Hugging Face folder in `dir/hf` in this
    /// dtype (`bf16`, `f16`, `f32`), as `trainer export` does; `none`: no export.
    #[serde(default = "default_export")]
    pub export: String,
}

fn default_export() -> String {
    "none".into()
}

impl PretrainConfig {
    /// Reads and checks a config file; paths come back resolved.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let mut c: PretrainConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = base_dir(path);
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        c.model.config = resolve(&c.model.config);
        c.model.weights = c.model.weights.as_deref().map(resolve);
        c.data.set = resolve(&c.data.set);
        c.output.dir = resolve(&c.output.dir);
        c.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let backend = BackendKind::parse(&t.backend, "train.backend")?;
        check_compute_dtype(&t.compute_dtype, backend, "train.compute_dtype")?;
        if t.batch_size == 0 || t.grad_accum == 0 || self.data.seq_len < 2 || (t.epochs == 0 && t.max_steps == 0) {
            bail!("train.batch_size, train.grad_accum and train.epochs (or max_steps) must be at least 1, data.seq_len at least 2");
        }
        if self.output.export != "none" {
            crate::export::parse_dtype(&self.output.export).context("output.export (or \"none\")")?;
        }
        if t.lr.is_nan() || t.lr <= 0.0 || !(0.0..1.0).contains(&t.warmup_fraction) || t.grad_clip < 0.0 {
            bail!("train.lr must be > 0, train.warmup_fraction within 0..1, train.grad_clip >= 0");
        }
        Ok(())
    }
}

/// A compute dtype (`what` names the setting) must be one the backend has kernels for:
/// the CPU backend has no bf16 or f16.
pub fn check_compute_dtype(name: &str, backend: BackendKind, what: &str) -> Result<Compute> {
    let compute = parse_compute(name).with_context(|| what.to_string())?;
    if backend == BackendKind::Cpu && matches!(compute, Some(FloatDType::BF16 | FloatDType::F16)) {
        bail!("{what} = {name} needs the cuda backend: the CPU backend has no {name} kernels; use f32");
    }
    Ok(compute)
}

/// The project root for files in `configs/`, else the file's folder.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "configs") { dir.parent().map(Path::to_path_buf).unwrap_or(dir) } else { dir }
}

/// The shipped `configs/*.toml` whose names start with one of `prefixes`, sorted (tests).
#[cfg(test)]
pub(crate) fn shipped_configs(prefixes: &[&str]) -> Vec<PathBuf> {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&configs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".toml") && prefixes.iter().any(|prefix| name.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_pretraining_config_loads() {
        let paths = shipped_configs(&["pretrain", "prime-sft"]);
        let names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["pretrain-tiny.toml", "pretrain.toml", "prime-sft.toml"]);
        for path in &paths {
            PretrainConfig::load(path).unwrap_or_else(|e| panic!("{e:#}"));
        }
    }

    #[test]
    fn a_compute_dtype_the_backend_lacks_is_one_clear_error() {
        let mut c = PretrainConfig::load(&shipped_configs(&["pretrain-tiny"])[0]).unwrap();
        c.train.compute_dtype = "bf16".into();
        let err = format!("{:#}", c.validate().unwrap_err());
        assert!(err.contains("train.compute_dtype = bf16 needs the cuda backend"), "{err}");
        c.train.compute_dtype = "float8".into();
        let err = format!("{:#}", c.validate().unwrap_err());
        assert!(err.contains("train.compute_dtype") && err.contains("float8"), "{err}");
        c.train.backend = "cuda".into();
        c.train.compute_dtype = "bf16".into();
        c.validate().unwrap();
    }
}
