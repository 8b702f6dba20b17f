//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use anyhow::Result;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::config::ModelConfig;
use super::matmul::Matmul;
use super::precision::{Compute, project};
use super::source::{ParamSource, linear};

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    /// The dtype the projections run in; see `precision`.
    #[module(skip)]
    pub(super) compute: Compute,
}

impl<B: Matmul> Mlp<B> {
    pub fn build<S: ParamSource<B>>(c: &ModelConfig, src: &mut S, prefix: &str, device: &B::Device) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Mlp {
            gate_proj: linear(src, &format!("{prefix}.gate_proj"), h, i, false, device)?,
            up_proj: linear(src, &format!("{prefix}.up_proj"), h, i, false, device)?,
            down_proj: linear(src, &format!("{prefix}.down_proj"), i, h, false, device)?,
            compute: None,
        })
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let c = self.compute;
        project(&self.down_proj, silu(project(&self.gate_proj, x.clone(), c)) * project(&self.up_proj, x, c), c)
    }
}
