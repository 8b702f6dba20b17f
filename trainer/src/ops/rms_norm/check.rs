//! RMSNorm's op against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use burn::prelude::*;
use burn::tensor::{FloatDType, TensorPrimitive};

use super::RmsNormOp;
use crate::model::precision::cast_to;
use crate::ops::check::{BF16_TOLERANCE, OpGap, TOLERANCE, host, named_gaps, tensor};

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

/// Generation's residual add and norm (`add_rms_norm`) on both backends: for f32 `x`
/// `[rows, n]`, the sum with a `delta` (or none) and the normalised sum, rows of varied
/// scale. The tested backend takes `delta` and writes the output in `dtype` (the reference
/// in f32; without a delta the output stays f32).
pub fn check_add_rms_norm<R: RmsNormOp, T: RmsNormOp>(
    [rows, n]: [usize; 2],
    with_delta: bool,
    dtype: FloatDType,
    reference: &R::Device,
    tested: &T::Device,
) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(47);
    let x: Vec<f32> = (0..rows * n).map(|i| (rng.f32() - 0.5) * (1 + i / n % 7) as f32).collect();
    let delta: Vec<f32> = (0..rows * n).map(|_| rng.f32() - 0.5).collect();
    let gamma: Vec<f32> = (0..n).map(|_| rng.f32() + 0.5).collect();
    let delta = with_delta.then_some(&delta[..]);
    let expected = add_rms_norm_on::<R>(&x, delta, &gamma, [rows, n], FloatDType::F32, reference);
    let dtype = if with_delta { dtype } else { FloatDType::F32 };
    let actual = add_rms_norm_on::<T>(&x, delta, &gamma, [rows, n], dtype, tested);
    let what = format!("residual add and RMSNorm [{rows}, {n}], {} {dtype:?}", if with_delta { "delta and output in" } else { "no delta, output in" });
    let tolerance = if dtype == FloatDType::F32 { TOLERANCE } else { BF16_TOLERANCE };
    named_gaps(&what, &["sum", "output"], &expected, &actual).into_iter().map(|g| OpGap { tolerance, ..g }).collect()
}

fn add_rms_norm_on<B: RmsNormOp>(
    x: &[f32],
    delta: Option<&[f32]>,
    gamma: &[f32],
    [rows, n]: [usize; 2],
    dtype: FloatDType,
    device: &B::Device,
) -> [Vec<f32>; 2] {
    let raw = |v: &[f32]| tensor::<B, 2>(v, [rows, n], device);
    let delta = delta.map(|d| cast_to(raw(d), dtype).into_primitive().tensor());
    let gamma = tensor::<B, 1>(gamma, [n], device).into_primitive().tensor();
    let (sum, y) = B::add_rms_norm(raw(x).into_primitive().tensor(), delta, gamma, 1e-5, dtype);
    let host2 = |t| host(cast_to(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(t)), FloatDType::F32));
    [host2(sum), host2(y)]
}
