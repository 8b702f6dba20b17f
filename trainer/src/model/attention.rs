//! Grouped-query self-attention: `num_heads` query heads share `num_kv_heads` key/value
//! heads; RoPE on queries and keys; optional q/k/v biases (Qwen2); causal, or with an
//! explicit mask and a key/value cache for generation.

use anyhow::Result;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::config::ModelConfig;
use super::rope;
use super::source::{ParamSource, linear};

/// Where the tokens of a forward pass are: the RoPE tables (`[1 or batch, 1, seq,
/// head_dim]`) and, for generation, which keys each query may see (`[batch, 1, seq, keys]`,
/// true = hidden; none = causal over the pass alone).
#[derive(Clone, Debug)]
pub struct Positions<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
    pub mask: Option<Tensor<B, 4, Bool>>,
}

/// The keys and values one layer has seen: `[batch, kv_heads, positions, head_dim]`.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    pub k: Option<Tensor<B, 4>>,
    pub v: Option<Tensor<B, 4>>,
}

impl<B: Backend> Default for KvCache<B> {
    fn default() -> Self {
        KvCache { k: None, v: None }
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
}

impl<B: Backend> Attention<B> {
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
        })
    }

    /// `x`: `[batch, seq, hidden]` at `at`. Without a mask, attention is causal over `x`
    /// alone; with one, keys are the cache's followed by `x`'s, and the cache grows by `x`.
    pub fn forward(&self, x: Tensor<B, 3>, at: &Positions<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let heads = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, self.head_dim]).swap_dims(1, 2);
        let q = rope::apply(heads(self.q_proj.forward(x.clone()), self.num_heads), at.cos.clone(), at.sin.clone());
        let mut k = rope::apply(heads(self.k_proj.forward(x.clone()), self.num_kv_heads), at.cos.clone(), at.sin.clone());
        let mut v = heads(self.v_proj.forward(x), self.num_kv_heads);
        if let Some(cache) = cache {
            if let (Some(old_k), Some(old_v)) = (cache.k.take(), cache.v.take()) {
                k = Tensor::cat(vec![old_k, k], 2);
                v = Tensor::cat(vec![old_v, v], 2);
            }
            cache.k = Some(k.clone());
            cache.v = Some(v.clone());
        }
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let out = match at.mask.clone() {
            None => attention(q, k, v, None, None, AttentionModuleOptions { is_causal: true, ..Default::default() }),
            Some(mask) => {
                let [_, _, tq, tk] = mask.dims();
                attention(q, k, v, Some(mask.expand([b, self.num_heads, tq, tk])), None, AttentionModuleOptions::default())
            }
        };
        self.o_proj.forward(out.swap_dims(1, 2).reshape([b, t, self.num_heads * self.head_dim]))
    }

    /// `[b, kv_heads, t, d]` -> `[b, heads, t, d]`, each kv head serving its group.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let rep = self.num_heads / self.num_kv_heads;
        if rep == 1 {
            return x;
        }
        let [b, n, t, d] = x.dims();
        x.unsqueeze_dim::<5>(2).expand([b, n, rep, t, d]).reshape([b, n * rep, t, d])
    }
}
