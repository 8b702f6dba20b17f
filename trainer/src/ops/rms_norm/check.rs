//! RMSNorm's op against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::RmsNormOp;
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// RMSNorm's op (`rms_norm`) on both backends: the output and the gradients of the input
/// and of γ for the same output gradient, `[rows, n]` rows of varied scale.
pub fn check_rms_norm<R: RmsNormOp, T: RmsNormOp>([rows, n]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(41);
    let x: Vec<f32> = (0..rows * n).map(|i| (rng.f32() - 0.5) * (1 + i / n % 7) as f32).collect();
    let gamma: Vec<f32> = (0..n).map(|_| rng.f32() + 0.5).collect();
    let dy: Vec<f32> = (0..rows * n).map(|_| rng.f32() - 0.5).collect();
    fn run<B: RmsNormOp>(x: &[f32], gamma: &[f32], dy: &[f32], [rows, n]: [usize; 2], device: &B::Device) -> [Vec<f32>; 3] {
        let raw = |v: &[f32]| tensor::<B, 2>(v, [rows, n], device).into_primitive().tensor();
        let gamma = || tensor::<B, 1>(gamma, [n], device).into_primitive().tensor();
        let (y, r) = B::rms_norm_rows(raw(x), gamma(), 1e-5);
        let (dx, dgamma) = B::rms_norm_backward(raw(x), gamma(), r, raw(dy));
        let host2 = |t| host(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(t)));
        [host2(y), host2(dx), host(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(dgamma)))]
    }
    let expected = run::<R>(&x, &gamma, &dy, [rows, n], reference);
    let actual = run::<T>(&x, &gamma, &dy, [rows, n], tested);
    named_gaps(&format!("RMSNorm [{rows}, {n}]"), &["output", "dx", "dgamma"], &expected, &actual)
}
