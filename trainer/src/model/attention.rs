//! Grouped-query self-attention: `num_heads` query heads share `num_kv_heads` key/value
//! heads; RoPE on queries and keys; optional q/k/v biases (Qwen2); causal.

use anyhow::Result;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::config::ModelConfig;
use super::rope;
use super::source::{ParamSource, linear};

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

    /// `x`: `[batch, seq, hidden]`; `cos`/`sin`: `[1, 1, seq, head_dim]`.
    pub fn forward(&self, x: Tensor<B, 3>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let heads = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, self.head_dim]).swap_dims(1, 2);
        let q = rope::apply(heads(self.q_proj.forward(x.clone()), self.num_heads), cos.clone(), sin.clone());
        let k = rope::apply(heads(self.k_proj.forward(x.clone()), self.num_kv_heads), cos, sin);
        let v = heads(self.v_proj.forward(x), self.num_kv_heads);
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let options = AttentionModuleOptions { is_causal: true, ..Default::default() };
        let out = attention(q, k, v, None, None, options);
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
