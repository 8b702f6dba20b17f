//! The gradients' sums of squares against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::SquaredNorms;
use crate::ops::check::{OpGap, host, tensor};
use crate::ops::kernels::Kernels;

/// The gradients' sums of squares (`squared_norms`, for clipping) on both backends, for
/// vectors of several lengths.
pub fn check_squared_norms<R: SquaredNorms, T: SquaredNorms>(lengths: &[usize], kernels: Kernels, reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(43);
    let vectors: Vec<Vec<f32>> = lengths.iter().map(|&n| (0..n).map(|_| rng.f32() - 0.5).collect()).collect();
    fn run<B: SquaredNorms>(vectors: &[Vec<f32>], kernels: Kernels, device: &B::Device) -> Vec<f32> {
        let raw = vectors.iter().map(|v| tensor::<B, 1>(v, [v.len()], device).into_primitive().tensor()).collect();
        host(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::squared_norms(raw, kernels))))
    }
    let (expected, actual) = (run::<R>(&vectors, Kernels::default(), reference), run::<T>(&vectors, kernels, tested));
    vec![OpGap::new(format!("sums of squares of {} vectors", lengths.len()), &expected, &actual)]
}
