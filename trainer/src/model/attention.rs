//! Grouped-query self-attention: `num_heads` query heads share `num_kv_heads` key/value
//! heads; RoPE on queries and keys; optional q/k/v biases (Qwen2); causal over the pass
//! (`ops::attention::causal_attention`), or, in generation, over a key/value cache: a
//! prefill under a bias that hides what each query must not see (`ops::attention::cached`),
//! a decoding step as one op over each row's slot (`ops::decode_attention`).

use anyhow::Result;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::ops::AttentionModuleOptions;

use crate::ModelBackend;
use crate::model::config::ModelConfig;
use crate::model::kv_cache::{Attend, CacheStep, KvCache};
use crate::model::precision::{Compute, cast_to, project_computed, to_compute};
use crate::model::source::{ParamSource, linear};
use crate::ops::attention::cached::cached_attention;
use crate::ops::attention::{causal_attention, repeat_kv};
use crate::ops::kernels::Kernels;
use crate::ops::rotary_heads::{qkv_heads, rotary_heads};

/// The options for burn's `attention`: an explicit scale selects the composed path on
/// every backend (the fused kernels take only the default scale); `fused` leaves the
/// choice to the backend (`diag::compare` compares both).
pub(crate) fn attention_options(head_dim: usize, is_causal: bool, fused: bool) -> AttentionModuleOptions {
    let scale = (!fused).then(|| attention_scale(head_dim));
    AttentionModuleOptions { scale, is_causal, ..Default::default() }
}

/// The scores' scale, 1 / sqrt(head_dim).
pub(crate) fn attention_scale(head_dim: usize) -> f64 {
    1.0 / (head_dim as f64).sqrt()
}

/// Swaps the second and third dimensions (`[b, t, heads, d]` and `[b, heads, t, d]`).
/// With one position (a decoding step) the values keep their order, so the swap is a
/// reshape, which copies nothing (burn copies a swapped view where it needs contiguous
/// values, twice a layer on every step).
fn heads_first<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, one, two, d] = x.dims();
    if one == 1 || two == 1 { x.reshape([b, two, one, d]) } else { x.swap_dims(1, 2) }
}

/// Where the tokens of a forward pass are: the RoPE tables (`[1 or batch, 1, seq,
/// head_dim]`) and, for generation, which cached keys each query sees (`[batch, 1, seq,
/// keys]` f32: 0 seen, -inf hidden; none = causal over the pass alone).
#[derive(Clone, Debug)]
pub struct Positions<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
    pub bias: Option<Tensor<B, 4>>,
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
    /// The dtype the projections and the attention matmuls run in; see `precision`.
    #[module(skip)]
    pub(super) compute: Compute,
    /// Which kernel paths the products and attention take; see `ops::kernels`.
    #[module(skip)]
    pub(super) kernels: Kernels,
    /// Generation's one projection for queries, keys and values (their weights side by
    /// side, `Llama::for_generation`); none: three products.
    #[module(skip)]
    pub(super) qkv: Option<Linear<B>>,
}

impl<B: ModelBackend> Attention<B> {
    pub fn build<S: ParamSource<B>>(c: &ModelConfig, src: &mut S, prefix: &str, device: &B::Device) -> Result<Self> {
        let (h, q, kv) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        Ok(Attention {
            q_proj: linear(src, &format!("{prefix}.q_proj"), h, q, c.qkv_bias, device)?,
            k_proj: linear(src, &format!("{prefix}.k_proj"), h, kv, c.qkv_bias, device)?,
            v_proj: linear(src, &format!("{prefix}.v_proj"), h, kv, c.qkv_bias, device)?,
            o_proj: linear(src, &format!("{prefix}.o_proj"), q, h, false, device)?,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            compute: None,
            kernels: Kernels::default(),
            qkv: None,
        })
    }

    /// Queries, keys and values of `x` (`[batch, seq, hidden]`) at `at`, by head, RoPE
    /// applied, in the compute dtype: `[batch, heads or kv_heads, seq, head_dim]`. `x` is
    /// cast once for the three projections; RoPE is one op from a projection's rows to its
    /// rotated heads (`rotary_heads`). With the weights side by side (generation) it is one
    /// product and one op from its rows to the three parts' heads (`qkv_heads`).
    pub fn project(&self, x: Tensor<B, 3>, at: &Positions<B>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t, _] = x.dims();
        let c = self.compute;
        let x = to_compute(x, c);
        if let Some(qkv) = &self.qkv {
            let rows = project_computed(qkv, x, c, self.kernels);
            let [q, k, v] = qkv_heads(rows, at.cos.clone(), at.sin.clone(), [self.num_heads, self.num_kv_heads]);
            return (q, k, v);
        }
        let rows = |layer: &Linear<B>| project_computed(layer, x.clone(), c, self.kernels);
        let q = rotary_heads(rows(&self.q_proj), at.cos.clone(), at.sin.clone(), self.num_heads);
        let k = rotary_heads(rows(&self.k_proj), at.cos.clone(), at.sin.clone(), self.num_kv_heads);
        let v = heads_first(rows(&self.v_proj).reshape([b, t, self.num_kv_heads, self.head_dim]));
        (q, k, v)
    }

    /// Attention of `q` over `k`, `v` (`[batch, kv_heads, keys, head_dim]`), causal or under
    /// `bias` (`[batch, 1, seq, keys]`, see `Positions`): `[batch, heads, seq, head_dim]`,
    /// in `q`'s dtype; the matmuls run in the compute dtype.
    pub fn attend(&self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
        let out: burn::tensor::FloatDType = q.dtype().into();
        let c = self.compute;
        let (q, k, v) = (to_compute(q, c), to_compute(k, c), to_compute(v, c));
        let scale = attention_scale(self.head_dim);
        let y = match bias {
            None => causal_attention(q, k, v, scale, self.kernels),
            Some(bias) => cached_attention(q, k, v, bias, scale, self.kernels),
        };
        cast_to(y, out)
    }

    /// `x`: `[batch, seq, hidden]` at `at`; the result is in the compute dtype. Without a
    /// cache, attention is causal over `x` alone; with one, `x`'s keys and values are
    /// written into the cache where `step` says and the queries attend, under `at.bias`,
    /// to them (a prefill), or to each row's slot from its first position (a decoding
    /// step, `KvCache::attend_step`).
    pub fn forward(&self, x: Tensor<B, 3>, at: &Positions<B>, cache: Option<(&mut KvCache<B>, &CacheStep<B>)>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        // Keys and values come (and are cached) in the compute dtype.
        let (q, k, v) = self.project(x, at);
        let out = match cache {
            // The projections left queries, keys and values in the compute dtype.
            Some((cache, step)) if step.attend == Attend::Cache => cache.attend_step(q, k, v, &step.at, attention_scale(self.head_dim), self.kernels),
            Some((cache, step)) => {
                cache.write(k.clone(), v.clone(), &step.at);
                self.attend(q, k, v, at.bias.clone())
            }
            None => self.attend(q, k, v, at.bias.clone()),
        };
        // The heads and the output projection stay in the compute dtype.
        let out = heads_first(out);
        project_computed(&self.o_proj, out.reshape([b, t, self.num_heads * self.head_dim]), self.compute, self.kernels)
    }

    /// `[b, kv_heads, t, d]` -> `[b, heads, t, d]`, each kv head serving its group.
    pub fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        repeat_kv(x, self.num_heads)
    }
}
