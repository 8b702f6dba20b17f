//! Where a model's parameters come from: a checkpoint (`crate::weights`) or a random
//! initialisation. The model is built the same way from either, by Hugging Face names
//! (`model.layers.0.self_attn.q_proj.weight`, ...) and shapes in Hugging Face layout.

use anyhow::Result;
use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::ops::matmul::{Matmul, row_major};

/// A source of named tensors (values in f32, shapes as the checkpoint stores them).
pub trait ParamSource<B: Backend> {
    /// The tensor `name` of `shape`; an error names the tensor and what is wrong with it.
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D], kind: ParamKind, device: &B::Device) -> Result<Tensor<B, D>>;
}

/// What a parameter is, for initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Embedding or projection matrix: normal(0, std).
    Matrix,
    /// Norm scale: ones.
    Scale,
    /// Bias: zeros.
    Bias,
}

/// Random initialisation as Hugging Face does it for Llama: matrices from N(0, std), norm
/// scales one, biases zero. Seeded through the backend (`B::seed`).
pub struct RandomInit {
    pub std: f64,
}

impl<B: Backend> ParamSource<B> for RandomInit {
    fn tensor<const D: usize>(&mut self, _name: &str, shape: [usize; D], kind: ParamKind, device: &B::Device) -> Result<Tensor<B, D>> {
        Ok(match kind {
            ParamKind::Matrix => Tensor::random(shape, Distribution::Normal(0.0, self.std), device),
            ParamKind::Scale => Tensor::ones(shape, device),
            ParamKind::Bias => Tensor::zeros(shape, device),
        })
    }
}

/// A linear layer from a `[out, in]` weight (and `[out]` bias): burn stores `[in, out]`,
/// laid out row-major as an optimizer step or a loaded burn record leaves it (the first
/// pass's casts then read it in order as the later ones do).
pub fn linear<B: Matmul, S: ParamSource<B>>(src: &mut S, prefix: &str, d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Result<Linear<B>> {
    let weight = row_major(src.tensor(&format!("{prefix}.weight"), [d_out, d_in], ParamKind::Matrix, device)?.transpose());
    let bias = if bias { Some(Param::from_tensor(src.tensor(&format!("{prefix}.bias"), [d_out], ParamKind::Bias, device)?)) } else { None };
    Ok(Linear { weight: Param::from_tensor(weight), bias })
}

/// An RMS norm with its scale.
pub fn rms_norm<B: Backend, S: ParamSource<B>>(src: &mut S, name: &str, d: usize, eps: f64, device: &B::Device) -> Result<RmsNorm<B>> {
    Ok(RmsNorm { gamma: Param::from_tensor(src.tensor(name, [d], ParamKind::Scale, device)?), epsilon: eps })
}

/// An embedding table `[vocab, d]`.
pub fn embedding<B: Backend, S: ParamSource<B>>(src: &mut S, name: &str, vocab: usize, d: usize, device: &B::Device) -> Result<Embedding<B>> {
    Ok(Embedding { weight: Param::from_tensor(src.tensor(name, [vocab, d], ParamKind::Matrix, device)?) })
}
