//! One decoder layer: pre-norm attention and pre-norm MLP, each with a residual.

use anyhow::Result;
use burn::nn::RmsNorm;
use burn::prelude::*;

use crate::ModelBackend;
use crate::model::attention::{Attention, Positions};
use crate::model::config::ModelConfig;
use crate::model::kv_cache::{CacheStep, KvCache};
use crate::model::mlp::Mlp;
use crate::model::precision::cast_to;
use crate::model::source::{ParamSource, rms_norm};
use crate::ops::rms_norm::add_then_norm;

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: ModelBackend> DecoderLayer<B> {
    pub fn build<S: ParamSource<B>>(c: &ModelConfig, src: &mut S, index: usize, device: &B::Device) -> Result<Self> {
        let p = format!("model.layers.{index}");
        Ok(DecoderLayer {
            input_layernorm: rms_norm(src, &format!("{p}.input_layernorm.weight"), c.hidden_size, c.rms_norm_eps, device)?,
            self_attn: Attention::build(c, src, &format!("{p}.self_attn"), device)?,
            post_attention_layernorm: rms_norm(src, &format!("{p}.post_attention_layernorm.weight"), c.hidden_size, c.rms_norm_eps, device)?,
            mlp: Mlp::build(c, src, &format!("{p}.mlp"), device)?,
        })
    }

    /// The layer's output (`[batch, seq, hidden]`, in the residual stream's dtype) for its
    /// input `x`; see [`DecoderLayer::forward_deferred`] for `at` and `cache`.
    pub fn forward(&self, x: Tensor<B, 3>, at: &Positions<B>, cache: Option<(&mut KvCache<B>, &CacheStep<B>)>) -> Tensor<B, 3> {
        let (x, mlp) = self.forward_deferred(x, None, at, cache);
        let residual = x.dtype().into();
        x + cast_to(mlp, residual)
    }

    /// The layer with its last residual add left to the next norm, which adds and
    /// normalises in one op ([`add_then_norm`]): for the residual stream `x` and the
    /// previous layer's deferred MLP output `pending` (none for the first layer), the
    /// stream after this layer's attention and this layer's MLP output (in the compute
    /// dtype). With a cache, the attention writes and reads it as `Attention::forward` says.
    pub fn forward_deferred(
        &self,
        x: Tensor<B, 3>,
        pending: Option<Tensor<B, 3>>,
        at: &Positions<B>,
        cache: Option<(&mut KvCache<B>, &CacheStep<B>)>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let compute = self.self_attn.compute;
        let (x, normed) = add_then_norm(&self.input_layernorm, x, pending, compute);
        let attended = self.self_attn.forward(normed, at, cache);
        let (x, normed) = add_then_norm(&self.post_attention_layernorm, x, Some(attended), compute);
        (x, self.mlp.forward(normed))
    }
}
