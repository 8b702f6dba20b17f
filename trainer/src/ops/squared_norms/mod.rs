//! The sums of squares of many tensors (the gradients, for clipping by their global norm)
//! as one backend operation.
//!
//! Composed from burn's ops that is a square, a sum and an addition per tensor: 441 kernels
//! for the 1B model's 147 gradients, which the host issues one by one (on CUDA without
//! fusion the host is what limits a step; docs/PERF.md). CUDA without fusion computes each
//! tensor's sum with one `cublasDotEx(x, x)` written straight into its slot of one device
//! vector (`cublas`).

pub mod check;

#[cfg(feature = "cuda")]
mod cublas;

use crate::ops::kernels::Kernels;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, TensorPrimitive};

/// A backend that sums the squares of each of many vectors' elements.
pub trait SquaredNorms: Backend {
    /// `Σ x²` of each of `vectors` (1-d, at least one), as an f32 vector `[vectors.len()]`
    /// on the device.
    fn squared_norms(vectors: Vec<FloatTensor<Self>>, _kernels: Kernels) -> FloatTensor<Self> {
        composed_squared_norms::<Self>(vectors)
    }
}

/// [`SquaredNorms::squared_norms`] from burn's ops.
pub(crate) fn composed_squared_norms<B: Backend>(vectors: Vec<FloatTensor<B>>) -> FloatTensor<B> {
    let sums = vectors.into_iter().map(|v| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(v)).cast(FloatDType::F32).square().sum()).collect();
    Tensor::cat(sums, 0).into_primitive().tensor()
}

impl SquaredNorms for crate::Cpu {}
#[cfg(feature = "cuda")]
impl SquaredNorms for crate::CudaFused {}
