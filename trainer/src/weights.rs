//! Hugging Face safetensors checkpoints: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`; f32, bf16 and f16 tensors (converted to f32 on load).
//! Files are memory-mapped; a missing or mis-shaped tensor is one error that names it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::ModelBackend;
use crate::model::Llama;
use crate::model::config::ModelConfig;
use crate::model::source::{ParamKind, ParamSource};

/// The tensors of a checkpoint, by name.
pub struct Checkpoint {
    files: Vec<(PathBuf, memmap2::Mmap)>,
    /// tensor name -> index into `files`.
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, a `model.safetensors.index.json`, or a folder with
    /// either (the single file wins).
    pub fn open(path: &Path) -> Result<Self> {
        let path = if path.is_dir() {
            let single = path.join("model.safetensors");
            let index = path.join("model.safetensors.index.json");
            if single.is_file() {
                single
            } else if index.is_file() {
                index
            } else {
                bail!("{} has neither model.safetensors nor model.safetensors.index.json", path.display());
            }
        } else {
            path.to_path_buf()
        };
        let shard_files: Vec<PathBuf> = if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            let map = value.get("weight_map").and_then(|m| m.as_object()).with_context(|| format!("{} has no weight_map", path.display()))?;
            let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            files.sort();
            files.dedup();
            let dir = path.parent().unwrap_or(Path::new("."));
            files.iter().map(|f| dir.join(f)).collect()
        } else {
            vec![path.clone()]
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for file in shard_files {
            let f = std::fs::File::open(&file).with_context(|| format!("cannot open {} (a shard listed in the index?)", file.display()))?;
            // Safety: the checkpoint is read-only input; nothing here writes to the file.
            let map = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot map {}", file.display()))?;
            let names = SafeTensors::deserialize(&map)
                .with_context(|| format!("{} is not a safetensors file (truncated download?)", file.display()))?
                .names()
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>();
            for name in names {
                index.insert(name, files.len());
            }
            files.push((file, map));
        }
        Ok(Checkpoint { files, index })
    }

    /// The names of all tensors.
    pub fn names(&self) -> Vec<&str> {
        self.index.keys().map(String::as_str).collect()
    }

    /// A tensor as f32 values and its shape.
    pub fn read(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let &i = self.index.get(name).with_context(|| format!("tensor `{name}` is missing from the checkpoint: is it a checkpoint of this architecture?"))?;
        let (file, map) = &self.files[i];
        let st = SafeTensors::deserialize(map).with_context(|| format!("{} is not a safetensors file", file.display()))?;
        let view = st.tensor(name).with_context(|| format!("{}: cannot read `{name}`", file.display()))?;
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => bail!("{}: tensor `{name}` has dtype {other:?}; only f32, bf16 and f16 load", file.display()),
        };
        Ok((values, view.shape().to_vec()))
    }
}

impl<B: Backend> ParamSource<B> for Checkpoint {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D], _kind: ParamKind, device: &B::Device) -> Result<Tensor<B, D>> {
        let (values, got) = self.read(name)?;
        if got != shape {
            bail!("tensor `{name}` has shape {got:?} in the checkpoint, but config.json implies {shape:?}: the config and the weights disagree");
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }
}

/// Loads a model folder (`config.json` + safetensors) onto `device`.
pub fn load_model<B: ModelBackend>(dir: &Path, device: &B::Device) -> Result<Llama<B>> {
    let config = ModelConfig::from_file(dir)?;
    load_weights(&config, dir, device)
}

/// Loads weights for a known config: Hugging Face safetensors (a file, an index or a folder
/// holding either), or a trainer checkpoint (a `.mpk` record, a checkpoint folder or a run
/// folder; `train::start_from`).
pub fn load_weights<B: ModelBackend>(config: &ModelConfig, weights: &Path, device: &B::Device) -> Result<Llama<B>> {
    if let Some(record) = crate::run::start_from::trainer_record(weights)? {
        return crate::run::start_from::read_model(config, &record, device);
    }
    let mut ckpt = Checkpoint::open(weights)?;
    Llama::build(config, &mut ckpt, device).with_context(|| format!("cannot load {}", weights.display()))
}
