//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use anyhow::Result;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::config::ModelConfig;
use super::source::{ParamSource, linear};

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn build<S: ParamSource<B>>(c: &ModelConfig, src: &mut S, prefix: &str, device: &B::Device) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Mlp {
            gate_proj: linear(src, &format!("{prefix}.gate_proj"), h, i, false, device)?,
            up_proj: linear(src, &format!("{prefix}.up_proj"), h, i, false, device)?,
            down_proj: linear(src, &format!("{prefix}.down_proj"), i, h, false, device)?,
        })
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj.forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}
