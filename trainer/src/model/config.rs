//! The model's shape, read from a Hugging Face `config.json` (Llama and Qwen2 families).
//! Both spellings of the RoPE settings are read: `rope_theta` + `rope_scaling` (older
//! transformers) and `rope_parameters` (transformers 5). Anything this model cannot run
//! (another architecture, activation or RoPE type) is refused with the reason.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Llama-3 style frequency scaling of RoPE (`rope_type = "llama3"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// What the model needs to know about its shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `llama` or `qwen2`.
    pub family: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl ModelConfig {
    /// Reads `<dir>/config.json` (or the file itself).
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read model config {}", file.display()))?;
        let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
        Self::from_hf(&value).with_context(|| format!("model config {}", file.display()))
    }

    /// Parses a Hugging Face config object.
    pub fn from_hf(v: &Value) -> Result<Self> {
        let family = v.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        if !["llama", "qwen2"].contains(&family.as_str()) {
            let arch = v.get("architectures").map(|a| a.to_string()).unwrap_or_default();
            bail!("unsupported architecture: model_type `{family}` {arch}; this trainer runs Llama (`llama`) and Qwen2 (`qwen2`) models");
        }
        let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            bail!("unsupported hidden_act `{act}`: the MLP is SwiGLU (silu)");
        }
        if v.get("mlp_bias").and_then(Value::as_bool).unwrap_or(false) {
            bail!("unsupported mlp_bias = true");
        }
        let usize_of =
            |key: &str| -> Result<usize> { v.get(key).and_then(Value::as_u64).map(|x| x as usize).with_context(|| format!("missing or non-integer `{key}`")) };
        let hidden_size = usize_of("hidden_size")?;
        let num_heads = usize_of("num_attention_heads")?;
        let num_kv_heads = v.get("num_key_value_heads").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(num_heads);
        let head_dim = v.get("head_dim").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(hidden_size / num_heads.max(1));
        if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) || !head_dim.is_multiple_of(2) {
            bail!("num_attention_heads ({num_heads}) must be a multiple of num_key_value_heads ({num_kv_heads}) and head_dim ({head_dim}) even");
        }
        let rope = v.get("rope_parameters").or_else(|| v.get("rope_scaling")).filter(|r| !r.is_null());
        let rope_theta =
            v.get("rope_theta").and_then(Value::as_f64).or_else(|| rope.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64)).unwrap_or(10_000.0);
        let rope_type = rope.and_then(|r| r.get("rope_type").or_else(|| r.get("type"))).and_then(Value::as_str).unwrap_or("default");
        let rope_scaling = match rope_type {
            "default" => None,
            "llama3" => {
                let r = rope.expect("a rope type comes from a rope object");
                let f = |key: &str| r.get(key).and_then(Value::as_f64).with_context(|| format!("rope scaling lacks `{key}`"));
                Some(Llama3Scaling {
                    factor: f("factor")?,
                    low_freq_factor: f("low_freq_factor")?,
                    high_freq_factor: f("high_freq_factor")?,
                    original_max_position_embeddings: f("original_max_position_embeddings")?,
                })
            }
            other => bail!("unsupported rope_type `{other}`: this trainer has default and llama3 RoPE"),
        };
        let token = |key: &str| v.get(key).and_then(|t| t.as_u64().or_else(|| t.as_array().and_then(|a| a.first()).and_then(Value::as_u64))).map(|x| x as u32);
        Ok(ModelConfig {
            qkv_bias: family == "qwen2" || v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
            family,
            vocab_size: usize_of("vocab_size")?,
            hidden_size,
            intermediate_size: usize_of("intermediate_size")?,
            num_layers: usize_of("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: v.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: v.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(4096) as usize,
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            bos_token_id: token("bos_token_id"),
            eos_token_id: token("eos_token_id"),
        })
    }

    /// The Hugging Face `config.json` of this shape (`from_hf` reads it back equal), as
    /// transformers writes it for Llama or Qwen2.
    pub fn to_hf(&self) -> Value {
        let llama = self.family == "llama";
        let mut v = serde_json::json!({
            "architectures": [if llama { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" }],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.as_ref().map(|r| serde_json::json!({
                "rope_type": "llama3",
                "factor": r.factor,
                "low_freq_factor": r.low_freq_factor,
                "high_freq_factor": r.high_freq_factor,
                "original_max_position_embeddings": r.original_max_position_embeddings,
            })),
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "initializer_range": 0.02,
            "attention_dropout": 0.0,
            "use_cache": true,
        });
        if llama {
            v["attention_bias"] = self.qkv_bias.into();
            v["mlp_bias"] = false.into();
        }
        v
    }

    /// Parameters in the model (embeddings counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        self.vocab_size * h + self.num_layers * self.layer_parameters() + h + head
    }

    /// The parameters of one decoder layer.
    pub fn layer_parameters(&self) -> usize {
        let (h, i, q, kv) = (self.hidden_size, self.intermediate_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim);
        let bias = if self.qkv_bias { q + 2 * kv } else { 0 };
        h * q + 2 * h * kv + q * h + bias + 3 * h * i + 2 * h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> Value {
        json!({"model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
               "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true,
               "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
               "bos_token_id": 128000, "eos_token_id": [128001, 128008]})
    }

    #[test]
    fn the_hugging_face_config_reads_back_equal() {
        let c = ModelConfig::from_hf(&llama()).unwrap();
        assert_eq!(ModelConfig::from_hf(&c.to_hf()).unwrap(), c);
        let mut qwen = c.clone();
        (qwen.family, qwen.qkv_bias, qwen.rope_scaling) = ("qwen2".into(), true, None);
        assert_eq!(ModelConfig::from_hf(&qwen.to_hf()).unwrap(), qwen);
    }

    #[test]
    fn llama_3_2_1b_shapes() {
        let c = ModelConfig::from_hf(&llama()).unwrap();
        assert_eq!((c.head_dim, c.num_kv_heads, c.qkv_bias, c.eos_token_id), (64, 8, false, Some(128001)));
        assert_eq!(c.rope_scaling.as_ref().unwrap().factor, 32.0);
        assert_eq!(c.num_parameters(), 1_235_814_400, "Llama-3.2-1B has 1.24B parameters");
    }

    #[test]
    fn unsupported_models_are_named() {
        let mut v = llama();
        v["model_type"] = json!("mistral");
        assert!(ModelConfig::from_hf(&v).unwrap_err().to_string().contains("unsupported architecture: model_type `mistral`"));
        let mut v = llama();
        v["rope_scaling"]["rope_type"] = json!("yarn");
        assert!(ModelConfig::from_hf(&v).unwrap_err().to_string().contains("unsupported rope_type `yarn`"));
        let mut v = llama();
        v["hidden_act"] = json!("gelu");
        assert!(ModelConfig::from_hf(&v).unwrap_err().to_string().contains("gelu"));
    }
}
