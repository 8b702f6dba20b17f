//! Grouped-query self-attention: `num_heads` query heads share `num_kv_heads` key/value
//! heads; RoPE on queries and keys; optional q/k/v biases (Qwen2); causal, or with an
//! explicit mask and a key/value cache for generation.
//!
//! Attention always runs as matmul, mask, softmax, matmul. In inference that is burn's
//! composed path (burn 0.21's CUDA backend would otherwise autotune between it and its
//! flash-attention kernels); causal attention with gradients is one op with its own
//! backward (`causal_attention`), which computes the same values and keeps only the
//! probabilities for the backward pass.

use anyhow::Result;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::ModelBackend;
use crate::model::config::ModelConfig;
use crate::model::precision::{Compute, cast_to, project, project_computed, to_compute};
use crate::model::source::{ParamSource, linear};
use crate::ops::attention::{causal_attention, repeat_kv};
use crate::ops::kernels::Kernels;
use crate::ops::rotary_heads::rotary_heads;

/// The options for burn's `attention`: an explicit scale selects the composed path on
/// every backend (the fused kernels take only the default scale); `fused` leaves the
/// choice to the backend (`diag::compare` compares both).
pub(crate) fn attention_options(head_dim: usize, is_causal: bool, fused: bool) -> AttentionModuleOptions {
    let scale = (!fused).then(|| attention_scale(head_dim));
    AttentionModuleOptions { scale, is_causal, ..Default::default() }
}

/// The scores' scale, 1 / sqrt(head_dim).
fn attention_scale(head_dim: usize) -> f64 {
    1.0 / (head_dim as f64).sqrt()
}

/// Where the tokens of a forward pass are: the RoPE tables (`[1 or batch, 1, seq,
/// head_dim]`) and, for generation, which keys each query may see (`[batch, 1, seq, keys]`,
/// true = hidden; none = causal over the pass alone).
#[derive(Clone, Debug)]
pub struct Positions<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
    pub mask: Option<Tensor<B, 4, Bool>>,
}

/// The keys and values one layer has seen: `[batch, kv_heads, capacity, head_dim]`, of
/// which the first `len` positions are filled (the rest must be hidden by the mask).
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    k: Option<Tensor<B, 4>>,
    v: Option<Tensor<B, 4>>,
    len: usize,
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for up to `capacity` positions (allocated at the first write).
    pub fn with_capacity(capacity: usize) -> Self {
        KvCache { k: None, v: None, len: 0, capacity }
    }

    /// Writes `k`, `v` (`[batch, kv_heads, seq, head_dim]`) after the filled positions and
    /// returns the whole buffers, in their dtype. The new positions are placed by concatenating zeros around
    /// them and adding (the buffer is zero there): only `cat` and elementwise ops, which the
    /// CUDA backend fuses, and no in-place slice writes.
    fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, heads, t, d] = k.dims();
        let (start, end) = (self.len, self.len + t);
        assert!(end <= self.capacity, "the key/value cache holds {} positions, {end} asked for", self.capacity);
        let place = |new: Tensor<B, 4>| {
            let (device, dtype) = (new.device(), new.dtype());
            let mut parts = Vec::with_capacity(3);
            if start > 0 {
                parts.push(Tensor::zeros([b, heads, start, d], (&device, dtype)));
            }
            parts.push(new);
            if end < self.capacity {
                parts.push(Tensor::zeros([b, heads, self.capacity - end, d], (&device, dtype)));
            }
            Tensor::cat(parts, 2)
        };
        let add = |old: Option<Tensor<B, 4>>, new: Tensor<B, 4>| match old {
            Some(old) => old + place(new),
            None => place(new),
        };
        let (k, v) = (add(self.k.take(), k), add(self.v.take(), v));
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        self.len = end;
        (k, v)
    }
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
        })
    }

    /// Queries, keys and values of `x` (`[batch, seq, hidden]`) at `at`, by head, RoPE
    /// applied, in the compute dtype: `[batch, heads or kv_heads, seq, head_dim]`. `x` is
    /// cast once for the three projections; RoPE is one op from a projection's rows to its
    /// rotated heads (`rotary_heads`).
    pub fn project(&self, x: Tensor<B, 3>, at: &Positions<B>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t, _] = x.dims();
        let c = self.compute;
        let x = to_compute(x, c);
        let rows = |layer: &Linear<B>| project_computed(layer, x.clone(), c, self.kernels);
        let q = rotary_heads(rows(&self.q_proj), at.cos.clone(), at.sin.clone(), self.num_heads);
        let k = rotary_heads(rows(&self.k_proj), at.cos.clone(), at.sin.clone(), self.num_kv_heads);
        let v = rows(&self.v_proj).reshape([b, t, self.num_kv_heads, self.head_dim]).swap_dims(1, 2);
        (q, k, v)
    }

    /// Attention of `q` over `k`, `v` (`[batch, kv_heads, keys, head_dim]`), causal or under
    /// `mask` (`[batch, 1, seq, keys]`): `[batch, heads, seq, head_dim]`, in `q`'s dtype; the
    /// matmuls and the softmax run in the compute dtype. The causal op reads the key/value
    /// heads as they are; burn's masked attention gets them repeated to the query heads.
    pub fn attend(&self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, mask: Option<Tensor<B, 4, Bool>>) -> Tensor<B, 4> {
        let [b, ..] = q.dims();
        let out: burn::tensor::FloatDType = q.dtype().into();
        let c = self.compute;
        let (q, k, v) = (to_compute(q, c), to_compute(k, c), to_compute(v, c));
        let y = match mask {
            None => causal_attention(q, k, v, attention_scale(self.head_dim), self.kernels),
            Some(mask) => {
                let [_, _, tq, tk] = mask.dims();
                let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
                attention(q, k, v, Some(mask.expand([b, self.num_heads, tq, tk])), None, attention_options(self.head_dim, false, false))
            }
        };
        cast_to(y, out)
    }

    /// `x`: `[batch, seq, hidden]` at `at`. Without a mask, attention is causal over `x`
    /// alone; with one, `x`'s keys are written into the cache after the filled positions and
    /// the queries attend to the whole cache under the mask (`[batch, 1, seq, capacity]`).
    pub fn forward(&self, x: Tensor<B, 3>, at: &Positions<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        // Keys and values come (and are cached) in the compute dtype.
        let (q, mut k, mut v) = self.project(x, at);
        if let Some(cache) = cache {
            (k, v) = cache.append(k, v);
        }
        // The heads stay in the compute dtype for the output projection, which returns f32.
        let out = self.attend(q, k, v, at.mask.clone());
        project(&self.o_proj, out.swap_dims(1, 2).reshape([b, t, self.num_heads * self.head_dim]), self.compute, self.kernels)
    }

    /// `[b, kv_heads, t, d]` -> `[b, heads, t, d]`, each kv head serving its group.
    pub fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        repeat_kv(x, self.num_heads)
    }
}
