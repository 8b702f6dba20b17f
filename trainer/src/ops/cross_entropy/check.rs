//! The loss's cross-entropy op against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::CrossEntropy;
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// The loss's cross-entropy op (`cross_entropy`) on both backends: each row's loss and the
/// logits' gradient for the same loss gradient, `[rows, vocab]` logits with large values
/// (an unshifted exponential would overflow) and targets across the vocabulary.
pub fn check_cross_entropy<R: CrossEntropy, T: CrossEntropy>([rows, vocab]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(37);
    let logits: Vec<f32> = (0..rows * vocab).map(|_| (rng.f32() - 0.5) * 200.0).collect();
    let targets: Vec<i64> = (0..rows).map(|_| rng.i64(0..vocab as i64)).collect();
    let dloss: Vec<f32> = (0..rows).map(|_| rng.f32() - 0.5).collect();
    fn run<B: CrossEntropy>(logits: &[f32], targets: &[i64], dloss: &[f32], [rows, vocab]: [usize; 2], device: &B::Device) -> [Vec<f32>; 2] {
        let raw = || tensor::<B, 2>(logits, [rows, vocab], device).into_primitive().tensor();
        let targets = || Tensor::<B, 1, Int>::from_data(TensorData::new(targets.to_vec(), [rows]), device).into_primitive();
        let (losses, lse) = B::cross_entropy_rows(raw(), targets());
        let grad = B::cross_entropy_backward(raw(), targets(), lse, tensor::<B, 1>(dloss, [rows], device).into_primitive().tensor());
        [host(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(losses))), host(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grad)))]
    }
    let expected = run::<R>(&logits, &targets, &dloss, [rows, vocab], reference);
    let actual = run::<T>(&logits, &targets, &dloss, [rows, vocab], tested);
    named_gaps(&format!("cross-entropy [{rows}, {vocab}]"), &["losses", "logits' gradient"], &expected, &actual)
}
