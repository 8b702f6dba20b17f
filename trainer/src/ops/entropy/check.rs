//! The entropy op against a reference backend. `trainer compare-backends` runs it with the
//! CPU as the reference and CUDA as the backend under test; the tests here run it CPU
//! against CPU.

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::Entropy;
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// The entropy op (`entropy_rows`, `entropy_backward`) on both backends: each row's entropy
/// and the logits' gradient for the same entropy gradient, `[rows, vocab]` logits with
/// rows of large values (an unshifted exponential would overflow) and nearly flat ones.
pub fn check_entropy<R: Entropy, T: Entropy>([rows, vocab]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(41);
    let logits: Vec<f32> = (0..rows * vocab).map(|i| (rng.f32() - 0.5) * if (i / vocab) % 2 == 0 { 200.0 } else { 0.2 }).collect();
    let dentropy: Vec<f32> = (0..rows).map(|_| rng.f32() - 0.5).collect();
    fn run<B: Entropy>(logits: &[f32], dentropy: &[f32], [rows, vocab]: [usize; 2], device: &B::Device) -> [Vec<f32>; 2] {
        let raw = || tensor::<B, 2>(logits, [rows, vocab], device).into_primitive().tensor();
        let (entropy, lse) = B::entropy_rows(raw());
        let grad = B::entropy_backward(raw(), lse, entropy.clone(), tensor::<B, 1>(dentropy, [rows], device).into_primitive().tensor());
        [host(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(entropy))), host(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grad)))]
    }
    let expected = run::<R>(&logits, &dentropy, [rows, vocab], reference);
    let actual = run::<T>(&logits, &dentropy, [rows, vocab], tested);
    named_gaps(&format!("entropy [{rows}, {vocab}]"), &["entropies", "logits' gradient"], &expected, &actual)
}
