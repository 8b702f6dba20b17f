//! One decoder layer: pre-norm attention and pre-norm MLP, each with a residual.

use anyhow::Result;
use burn::nn::RmsNorm;
use burn::prelude::*;

use crate::ModelBackend;
use crate::model::attention::{Attention, Positions};
use crate::model::kv_cache::{CacheStep, KvCache};
use crate::model::config::ModelConfig;
use crate::model::mlp::Mlp;
use crate::model::source::{ParamSource, rms_norm};
use crate::ops::rms_norm::apply_rms_norm;

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

    pub fn forward(&self, x: Tensor<B, 3>, at: &Positions<B>, cache: Option<(&mut KvCache<B>, &CacheStep)>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(apply_rms_norm(&self.input_layernorm, x), at, cache);
        x.clone() + self.mlp.forward(apply_rms_norm(&self.post_attention_layernorm, x))
    }
}
