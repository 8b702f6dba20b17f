//! A decoder-only Llama-family model (Llama 2/3, Qwen2) on burn, generic over the backend:
//! token embedding, `num_layers` decoder layers (RMSNorm, grouped-query attention with
//! RoPE, SwiGLU MLP), a final RMSNorm and the LM head (tied to the embedding or not).
//! Parameters are named as in Hugging Face checkpoints, so weights load by name.

pub mod attention;
pub mod config;
pub mod kv_cache;
pub mod layer;
pub mod mlp;
pub mod precision;
pub mod rope;
pub mod source;

use anyhow::Result;
use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::FloatDType;

use self::attention::Positions;
use self::config::ModelConfig;
use self::kv_cache::{CacheStep, KvCache};
use self::layer::DecoderLayer;
use self::precision::{Compute, RESIDUAL, cast_to, linear_computed, to_compute};
use self::rope::Rope;
use self::source::{ParamSource, RandomInit, embedding, linear, rms_norm};
use crate::ModelBackend;
use crate::ops::kernels::Kernels;
use crate::ops::rms_norm::{add_then_norm, apply_rms_norm};

#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the head is tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    pub config: ModelConfig,
    #[module(skip)]
    rope: Rope,
    /// The dtype the matmuls run in (`None`: the parameters' own); see `precision`. Set
    /// by `with_compute` only, which gives every layer the same.
    #[module(skip)]
    compute: Compute,
    /// Which kernel paths the ops take (`ops::kernels`). Set by `with_kernels` only, which
    /// gives every layer the same.
    #[module(skip)]
    kernels: Kernels,
}

impl<B: ModelBackend> Llama<B> {
    /// Builds the model from a parameter source (a checkpoint or a random init).
    pub fn build<S: ParamSource<B>>(config: &ModelConfig, src: &mut S, device: &B::Device) -> Result<Self> {
        let c = config;
        let embed_tokens = embedding(src, "model.embed_tokens.weight", c.vocab_size, c.hidden_size, device)?;
        let layers = (0..c.num_layers).map(|i| DecoderLayer::build(c, src, i, device)).collect::<Result<Vec<_>>>()?;
        let norm = rms_norm(src, "model.norm.weight", c.hidden_size, c.rms_norm_eps, device)?;
        let lm_head = if c.tie_word_embeddings { None } else { Some(linear(src, "lm_head", c.hidden_size, c.vocab_size, false, device)?) };
        Ok(Llama { embed_tokens, layers, norm, lm_head, config: c.clone(), rope: Rope::new(c), compute: None, kernels: Kernels::default() })
    }

    /// A randomly initialised model (matrices N(0, 0.02), as Hugging Face initialises Llama).
    pub fn random(config: &ModelConfig, device: &B::Device) -> Self {
        Self::build(config, &mut RandomInit { std: 0.02 }, device).expect("a random init cannot fail")
    }

    /// The same model with its matmuls in `compute` (mixed precision; the parameters keep
    /// their dtype).
    pub fn with_compute(mut self, compute: Compute) -> Self {
        self.compute = compute;
        self.into_layers()
    }

    /// The same model with its ops taking the paths `kernels` chooses.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self.into_layers()
    }

    /// The model's compute dtype and kernel settings given to every layer.
    fn into_layers(mut self) -> Self {
        for layer in &mut self.layers {
            (layer.self_attn.compute, layer.self_attn.kernels) = (self.compute, self.kernels);
            (layer.mlp.compute, layer.mlp.kernels) = (self.compute, self.kernels);
        }
        self
    }

    /// The model as generation runs it: the projections' weights held in the compute dtype,
    /// so that a decoding step reads each weight as it is instead of casting it again (at
    /// the 1B shape in bf16 the casts read and write 7.4 GB a step), and the weights that
    /// read the same input side by side, one product each (queries, keys and values; the
    /// MLP's gate and up). The embedding and the norms keep their dtype; the LM head gets
    /// its own copy in the compute dtype (a tied one: the embedding cast once and read
    /// transposed). Without a compute dtype the weights keep theirs.
    pub fn for_generation(&self) -> Self {
        let compute = self.compute;
        // Outputs side by side in the order of `parts`; biases too where every part has one.
        let side_by_side = |parts: &[&Linear<B>]| {
            let weight = Tensor::cat(parts.iter().map(|l| to_compute(l.weight.val(), compute)).collect(), 1);
            let biases: Option<Vec<Tensor<B, 1>>> = parts.iter().map(|l| l.bias.as_ref().map(|b| to_compute(b.val(), compute))).collect();
            Linear { weight: Param::from_tensor(weight), bias: biases.map(|b| Param::from_tensor(Tensor::cat(b, 0))) }
        };
        let mut model = self.clone();
        for layer in &mut model.layers {
            let (attn, mlp) = (&mut layer.self_attn, &mut layer.mlp);
            attn.qkv = Some(side_by_side(&[&attn.q_proj, &attn.k_proj, &attn.v_proj]));
            mlp.gate_up = Some(side_by_side(&[&mlp.gate_proj, &mlp.up_proj]));
            (attn.o_proj, mlp.down_proj) = (in_compute(&attn.o_proj, compute), in_compute(&mlp.down_proj, compute));
        }
        model.lm_head = Some(self.head_in_compute());
        model
    }

    /// The model as a scoring pass runs it (PPO's log-probabilities of rollouts, many passes
    /// with the same weights): a copy of every projection's weight and bias and of the LM
    /// head in the compute dtype, cast once for all the passes instead of once each; the
    /// products are the ones the training forward runs, so the values are the same. The
    /// embedding and the norms keep their dtype. Without a compute dtype (or with the
    /// weights held in it already, `held_in`) nothing is copied.
    pub fn for_scoring(&self) -> Self {
        let mut model = self.with_projections_in_compute();
        model.lm_head = Some(self.head_in_compute());
        model
    }

    /// The model with a copy of every projection's weight and bias in the compute dtype
    /// (see `for_scoring`; the LM head as it is, for a model that does not read it).
    pub fn with_projections_in_compute(&self) -> Self {
        let mut model = self.clone();
        for lin in model.projections_mut() {
            *lin = in_compute(lin, self.compute);
        }
        model
    }

    /// Every layer's projections (queries, keys, values, output; the MLP's gate, up, down).
    fn projections_mut(&mut self) -> impl Iterator<Item = &mut Linear<B>> {
        self.layers.iter_mut().flat_map(|layer| {
            let (attn, mlp) = (&mut layer.self_attn, &mut layer.mlp);
            [&mut attn.q_proj, &mut attn.k_proj, &mut attn.v_proj, &mut attn.o_proj, &mut mlp.gate_proj, &mut mlp.up_proj, &mut mlp.down_proj]
        })
    }

    /// The LM head with its weight in the compute dtype (a tied one: the embedding cast once,
    /// read transposed).
    fn head_in_compute(&self) -> Linear<B> {
        match &self.lm_head {
            Some(head) => in_compute(head, self.compute),
            None => Linear { weight: Param::from_tensor(to_compute(self.embed_tokens.weight.val(), self.compute).transpose()), bias: None },
        }
    }

    /// The model held in `dtype`, for a model that is only read (PPO's frozen reference):
    /// every projection's weight and bias and the embedding (which a tied LM head reads)
    /// stored in `dtype`, and the matmuls run in it; the norms, the residual stream and the
    /// logits stay f32. In bf16 it takes half the memory of f32 (6.4 of 12.9 GB at the 3B
    /// shape).
    pub fn held_in(self, dtype: FloatDType) -> Self {
        let mut model = self.with_compute(Some(dtype));
        for lin in model.projections_mut() {
            *lin = in_compute(lin, Some(dtype));
        }
        if let Some(head) = &mut model.lm_head {
            *head = in_compute(head, Some(dtype));
        }
        model.embed_tokens.weight = model.embed_tokens.weight.clone().map(|w| cast_to(w, dtype));
        model
    }

    /// The token embeddings of `ids`, in the residual stream's dtype (f32 also when the
    /// embedding is held in another, `held_in`).
    fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        cast_to(self.embed_tokens.forward(ids), RESIDUAL)
    }

    /// The dtype the model's matmuls run in (`None`: the parameters' own).
    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// The kernel paths the model's ops take.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]` at positions `0..seq`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.head(self.hidden(ids))
    }

    /// Logits of positions `start..start + len` only (`[batch, len, vocab]`): the LM head,
    /// the largest matmul with a big vocabulary, runs only where a loss or score needs it.
    pub fn forward_range(&self, ids: Tensor<B, 2, Int>, start: usize, len: usize) -> Tensor<B, 3> {
        self.head(self.hidden(ids).narrow(1, start, len))
    }

    /// The final (normalised) hidden states `[batch, seq, hidden]`, before the LM head.
    pub fn hidden(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let at = self.causal_positions(ids.dims()[1], &ids.device());
        let mut x = self.embed(ids);
        for layer in &self.layers {
            x = layer.forward(x, &at, None);
        }
        apply_rms_norm(&self.norm, x)
    }

    /// Positions `0..t` for every row, causal attention.
    pub fn causal_positions(&self, t: usize, device: &B::Device) -> Positions<B> {
        let (cos, sin) = self.rope.causal_tables::<B>(t, device);
        Positions { cos: cos.unsqueeze::<4>(), sin: sin.unsqueeze::<4>(), bias: None }
    }

    /// One forward pass of generation: the logits of the last position, `[batch, 1,
    /// vocab]` in the compute dtype (the token pick reads them as they are), for `ids`
    /// `[batch, seq]` at `positions[row][i]`; their keys and values are written into the
    /// caches where `step` says, and the queries attend, under `bias` (`[batch, 1, seq,
    /// keys]`, 0 seen and -inf hidden), to the pass's own keys (a prefill), or to each
    /// row's positions from its first (a decoding step, no bias: `step.at.firsts`).
    /// The LM head runs on the last position only (a prefill of 256 prompts of 96 tokens
    /// would otherwise make 3 billion logits over a 128k vocabulary).
    pub fn forward_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: &[Vec<usize>],
        bias: Option<Tensor<B, 4>>,
        caches: &mut [KvCache<B>],
        step: &CacheStep<B>,
    ) -> Tensor<B, 3> {
        let device = ids.device();
        let [b, t] = ids.dims();
        let flat: Vec<usize> = positions.iter().flatten().copied().collect();
        let (cos, sin) = self.rope.tables::<B>(&flat, &device);
        let at = Positions { cos: cos.reshape([b, 1, t, self.config.head_dim]), sin: sin.reshape([b, 1, t, self.config.head_dim]), bias };
        // Each layer's last residual add is done by the next norm (`forward_deferred`).
        let (mut x, mut pending) = (self.embed(ids), None);
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            let (after_attention, mlp) = layer.forward_deferred(x, pending, &at, Some((cache, step)));
            (x, pending) = (after_attention, Some(mlp));
        }
        let last = |x: Tensor<B, 3>| x.narrow(1, t - 1, 1);
        self.head_computed(add_then_norm(&self.norm, last(x), pending.map(last), self.compute).1)
    }

    /// Empty caches of `blocks` blocks of `block` positions, one per layer.
    pub fn new_caches(&self, blocks: usize, block: usize) -> Vec<KvCache<B>> {
        (0..self.layers.len()).map(|_| KvCache::new(blocks, block)).collect()
    }

    /// The LM head: logits `[batch, seq, vocab]` of final hidden states (in either dtype),
    /// in the residual stream's dtype (`precision::RESIDUAL`).
    pub fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        cast_to(self.head_computed(x), RESIDUAL)
    }

    /// The LM head's logits left in the compute dtype (the loss reads them there).
    pub fn head_computed(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => linear_computed(x, head.weight.val(), head.bias.as_ref().map(|b| b.val()), self.compute, self.kernels),
            // Cast, then transpose: the cast reads and writes the embedding as it lies (a
            // cast of the transposed view walks it column by column), and the product
            // reads the transposed view as it lies.
            None => linear_computed(x, to_compute(self.embed_tokens.weight.val(), self.compute).transpose(), None, self.compute, self.kernels),
        }
    }
}

/// A projection with its weight and bias in `compute` (unchanged where there is none or
/// they are in it already).
fn in_compute<B: Backend>(lin: &Linear<B>, compute: Compute) -> Linear<B> {
    Linear { weight: lin.weight.clone().map(|w| to_compute(w, compute)), bias: lin.bias.clone().map(|b| b.map(|b| to_compute(b, compute))) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn tiny_config() -> ModelConfig {
        ModelConfig::from_hf(&serde_json::json!({
            "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 10000.0
        }))
        .unwrap()
    }

    #[test]
    fn a_random_model_gives_logits_of_the_right_shape() {
        type B = burn::backend::NdArray<f32>;
        let device = Default::default();
        let model = Llama::<B>::random(&tiny_config(), &device);
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [2, 3]), &device);
        let logits = model.forward(ids);
        assert_eq!(logits.dims(), [2, 3, 64]);
        assert!(logits.into_data().to_vec::<f32>().unwrap().iter().all(|x| x.is_finite()));
    }
}
