//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use anyhow::Result;
use burn::nn::Linear;
use burn::prelude::*;

use crate::model::config::ModelConfig;
use crate::model::precision::{Compute, project_computed, to_compute};
use crate::model::source::{ParamSource, linear};
use crate::ops::kernels::Kernels;
use crate::ops::matmul::Matmul;
use crate::ops::swiglu::{Swiglu, swiglu, swiglu_halves};

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    /// The dtype the projections run in; see `precision`.
    #[module(skip)]
    pub(super) compute: Compute,
    /// Which kernel paths the products take; see `ops::kernels`.
    #[module(skip)]
    pub(super) kernels: Kernels,
    /// Generation's one product for the gate and up projections (their weights side by
    /// side, `Llama::for_generation`); none: two products.
    #[module(skip)]
    pub(super) gate_up: Option<Linear<B>>,
}

impl<B: Matmul + Swiglu> Mlp<B> {
    pub fn build<S: ParamSource<B>>(c: &ModelConfig, src: &mut S, prefix: &str, device: &B::Device) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Mlp {
            gate_proj: linear(src, &format!("{prefix}.gate_proj"), h, i, false, device)?,
            up_proj: linear(src, &format!("{prefix}.up_proj"), h, i, false, device)?,
            down_proj: linear(src, &format!("{prefix}.down_proj"), i, h, false, device)?,
            compute: None,
            kernels: Kernels::default(),
            gate_up: None,
        })
    }

    /// `x` is cast once for both input projections; the gate (`swiglu`, one op), the down
    /// projection and the result stay in the compute dtype. With the gate and up weights
    /// side by side (generation) they are one product, gated by one op (`swiglu_halves`).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (c, k) = (self.compute, self.kernels);
        let x = to_compute(x, c);
        let gated = match &self.gate_up {
            Some(gate_up) => swiglu_halves(project_computed(gate_up, x, c, k)),
            None => swiglu(project_computed(&self.gate_proj, x.clone(), c, k), project_computed(&self.up_proj, x, c, k)),
        };
        project_computed(&self.down_proj, gated, c, k)
    }
}
