//! `trainer export`: a trainer checkpoint as a Hugging Face model folder that transformers,
//! vLLM and evaluation harnesses load: `config.json`, `generation_config.json`, the weights
//! as `model.safetensors` (or shards of at most `max_shard_bytes` with
//! `model.safetensors.index.json`, as `save_pretrained` writes them) in bf16, f16 or f32
//! under Hugging Face's names and layouts, and the tokenizer's files. The folder is written
//! beside its destination and renamed into place, so a stopped export leaves nothing half
//! written under the destination's name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::Dtype;

use crate::model::Llama;
use crate::model::config::ModelConfig;

/// The tokenizer files copied when found.
pub const TOKENIZER_FILES: [&str; 3] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

/// The largest shard by default (as `save_pretrained`'s 5 GB).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// What to export and how.
#[derive(Clone, Debug)]
pub struct Export {
    /// The weights: a trainer checkpoint (record, checkpoint folder or run folder) or
    /// Hugging Face safetensors.
    pub checkpoint: PathBuf,
    /// The model's `config.json` (or its folder); none: the run folder's `config.json`.
    pub model_config: Option<PathBuf>,
    /// A folder (or `tokenizer.json`) with the tokenizer's files; none: beside the model config.
    pub tokenizer: Option<PathBuf>,
    pub out: PathBuf,
    /// `bf16`, `f16` or `f32`.
    pub dtype: String,
    /// Largest shard; a model above it is written in shards with an index.
    pub max_shard_bytes: u64,
}

/// Every parameter in Hugging Face's name and layout, in module order: 2-D parameters other
/// than the embedding are linear layers, which burn stores `[in, out]` and Hugging Face
/// `[out, in]`.
pub fn hf_names(c: &ModelConfig) -> Vec<(String, bool)> {
    let linear = |prefix: &str, bias: bool| {
        let mut v = vec![(format!("{prefix}.weight"), true)];
        if bias {
            v.push((format!("{prefix}.bias"), false));
        }
        v
    };
    let mut names = vec![("model.embed_tokens.weight".to_string(), false)];
    for i in 0..c.num_layers {
        let p = format!("model.layers.{i}");
        names.push((format!("{p}.input_layernorm.weight"), false));
        for proj in ["q_proj", "k_proj", "v_proj"] {
            names.extend(linear(&format!("{p}.self_attn.{proj}"), c.qkv_bias));
        }
        names.extend(linear(&format!("{p}.self_attn.o_proj"), false));
        names.push((format!("{p}.post_attention_layernorm.weight"), false));
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            names.extend(linear(&format!("{p}.mlp.{proj}"), false));
        }
    }
    names.push(("model.norm.weight".to_string(), false));
    if !c.tie_word_embeddings {
        names.extend(linear("lm_head", false));
    }
    names
}

/// One tensor ready to write: its name, shape and little-endian bytes.
struct Encoded {
    name: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The model's parameters under Hugging Face's names, encoded in `dtype`.
fn encode<B: Backend>(model: &Llama<B>, dtype: Dtype) -> Result<Vec<Encoded>> {
    struct Collect<'a> {
        names: &'a [(String, bool)],
        dtype: Dtype,
        out: Vec<Encoded>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some((name, transposed)) = self.names.get(self.out.len()) else {
                self.out.push(Encoded { name: String::new(), shape: Vec::new(), bytes: Vec::new() });
                return;
            };
            let mut tensor = param.val();
            if *transposed {
                tensor = tensor.swap_dims(0, 1);
            }
            let shape = tensor.dims().to_vec();
            let values = tensor.into_data().convert::<f32>().to_vec::<f32>().expect("f32 parameters");
            let bytes = match self.dtype {
                Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
                Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
                _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            self.out.push(Encoded { name: name.clone(), shape, bytes });
        }
    }
    let names = hf_names(&model.config);
    let mut visitor = Collect { names: &names, dtype, out: Vec::with_capacity(names.len()) };
    model.visit(&mut visitor);
    if visitor.out.len() != names.len() {
        bail!("the model has {} parameter tensors where its config names {}: an architecture this export does not know", visitor.out.len(), names.len());
    }
    Ok(visitor.out)
}

/// The safetensors dtype and `torch_dtype` name of `--dtype`.
pub fn parse_dtype(name: &str) -> Result<(Dtype, &'static str)> {
    Ok(match name {
        "bf16" | "bfloat16" => (Dtype::BF16, "bfloat16"),
        "f16" | "float16" => (Dtype::F16, "float16"),
        "f32" | "float32" => (Dtype::F32, "float32"),
        other => bail!("--dtype {other}: use bf16, f16 or f32"),
    })
}

/// Writes the export of `model` (with `config`) into `out`; returns the files written.
pub fn write_export<B: Backend>(model: &Llama<B>, e: &Export, tokenizer_dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let (dtype, torch_dtype) = parse_dtype(&e.dtype)?;
    if e.out.exists() && std::fs::read_dir(&e.out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty: export into a new folder (nothing was written)", e.out.display());
    }
    let parent = e.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new().prefix(".export-").tempdir_in(parent).with_context(|| format!("cannot write in {}", parent.display()))?;
    let dir = staging.path();

    let tensors = encode(model, dtype)?;
    let shards = shard(&tensors, e.max_shard_bytes);
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    let mut weight_map = BTreeMap::new();
    for (i, members) in shards.iter().enumerate() {
        let file = if shards.len() == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len()) };
        let views: Vec<(String, safetensors::tensor::TensorView)> = members
            .iter()
            .map(|&t| {
                let x = &tensors[t];
                weight_map.insert(x.name.clone(), file.clone());
                Ok((x.name.clone(), safetensors::tensor::TensorView::new(dtype, x.shape.clone(), &x.bytes)?))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize_to_file(views, metadata.clone(), &dir.join(&file)).with_context(|| format!("cannot write {file}"))?;
    }
    if shards.len() > 1 {
        let total: usize = tensors.iter().map(|t| t.bytes.len()).sum();
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_vec_pretty(&index)?)?;
    }
    let mut config = model.config.to_hf();
    // transformers 5 names it `dtype`, earlier versions (and vLLM's readers) `torch_dtype`.
    config["torch_dtype"] = torch_dtype.into();
    config["dtype"] = torch_dtype.into();
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    let c = &model.config;
    let generation = serde_json::json!({ "_from_model_config": true, "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id });
    std::fs::write(dir.join("generation_config.json"), serde_json::to_vec_pretty(&generation)?)?;
    let mut copied = 0;
    if let Some(from) = tokenizer_dir {
        for name in TOKENIZER_FILES {
            if from.join(name).is_file() {
                std::fs::copy(from.join(name), dir.join(name)).with_context(|| format!("cannot copy {}", from.join(name).display()))?;
                copied += 1;
            }
        }
    }
    if copied == 0 {
        eprintln!("warning: no tokenizer files (tokenizer.json, ...) were found to copy: pass --tokenizer DIR to include them");
    }
    let staged = staging.keep();
    if e.out.exists() {
        std::fs::remove_dir(&e.out).with_context(|| format!("cannot replace the empty folder {}", e.out.display()))?;
    }
    std::fs::rename(&staged, &e.out).with_context(|| format!("cannot move the export into {}", e.out.display()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&e.out)?.flatten().map(|f| f.path()).collect();
    files.sort();
    Ok(files)
}

/// Tensors grouped into shards of at most `max_bytes` each (a tensor larger than that is
/// a shard of its own), in order, as `save_pretrained` groups them.
fn shard(tensors: &[Encoded], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let n = t.bytes.len() as u64;
        if size + n > max_bytes && !shards.last().expect("one shard").is_empty() {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("one shard").push(i);
        size += n;
    }
    shards
}

/// The model config of a trainer run: `--model-config`, or the `model` the run folder's
/// `config.json` recorded (the folder of the checkpoint, or one of its parents); and the
/// folder where its tokenizer files are looked for (`--tokenizer`, or beside the model's
/// Hugging Face config, or the run's `model.tokenizer`).
pub fn resolve(e: &Export) -> Result<(ModelConfig, Option<PathBuf>)> {
    let recorded = run_config(&e.checkpoint);
    let config = match (&e.model_config, &recorded) {
        (Some(path), _) => ModelConfig::from_file(path)?,
        (None, Some((file, value))) => serde_json::from_value(value["model"].clone())
            .with_context(|| format!("{} records no model config: pass --model-config (the model's config.json)", file.display()))?,
        (None, None) => ModelConfig::from_file(&e.checkpoint).with_context(|| {
            format!("{} is in no trainer run folder and holds no config.json: pass --model-config (the model's config.json)", e.checkpoint.display())
        })?,
    };
    let beside_config = |p: &Path| if p.is_dir() { p.to_path_buf() } else { p.parent().map(Path::to_path_buf).unwrap_or_default() };
    let tokenizer = match &e.tokenizer {
        Some(t) if !t.exists() => bail!("--tokenizer {}: no such file or folder", t.display()),
        Some(t) => Some(beside_config(t)),
        None => {
            let section = recorded.as_ref().and_then(|(_, v)| ["pretrain", "ppo"].iter().find_map(|k| v.get(*k)).map(|s| s["model"].clone()));
            let path = |key: &str| section.as_ref().and_then(|m| m[key].as_str()).map(PathBuf::from);
            let candidates = [e.model_config.clone(), path("config"), path("tokenizer"), Some(e.checkpoint.clone())];
            candidates.into_iter().flatten().map(|p| beside_config(&p)).find(|d| d.join("tokenizer.json").is_file())
        }
    };
    Ok((config, tokenizer))
}

/// The `config.json` a trainer run wrote, found from a checkpoint path inside the run.
fn run_config(checkpoint: &Path) -> Option<(PathBuf, serde_json::Value)> {
    let start = if checkpoint.is_dir() { checkpoint } else { checkpoint.parent()? };
    start.ancestors().take(4).find_map(|dir| {
        let file = dir.join("config.json");
        let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
        value.get("model").filter(|m| m.get("hidden_size").is_some())?;
        Some((file, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_hugging_face_and_shards_stay_under_the_limit() {
        let c = ModelConfig::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama")).unwrap();
        let names = hf_names(&c);
        assert_eq!(names[0], ("model.embed_tokens.weight".to_string(), false));
        assert_eq!(names[2], ("model.layers.0.self_attn.q_proj.weight".to_string(), true));
        assert_eq!(names.len(), 1 + 9 * c.num_layers + 1 + usize::from(!c.tie_word_embeddings));
        let t = |n: usize| Encoded { name: String::new(), shape: vec![n], bytes: vec![0; n] };
        let tensors = [t(40), t(30), t(50), t(120), t(10)];
        assert_eq!(shard(&tensors, 100), vec![vec![0, 1], vec![2], vec![3], vec![4]]);
        assert_eq!(shard(&tensors, 1 << 20), vec![vec![0, 1, 2, 3, 4]]);
        assert!(parse_dtype("int8").is_err() && parse_dtype("bf16").unwrap().1 == "bfloat16");
    }
}
