//! The MLP's gate against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::Swiglu;
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// The MLP's gate (`swiglu`) on both backends: `silu(gate) ⊙ up` and the gradients of
/// gate and up, with gates far into both tails of the sigmoid.
pub fn check_swiglu<R: Swiglu, T: Swiglu>([rows, n]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(47);
    let mut floats = |scale: f32| -> Vec<f32> { (0..rows * n).map(|_| (rng.f32() - 0.5) * scale).collect() };
    let (gate, up, dh) = (floats(40.0), floats(4.0), floats(2.0));
    fn run<B: Swiglu>(gate: &[f32], up: &[f32], dh: &[f32], shape: [usize; 2], device: &B::Device) -> [Vec<f32>; 3] {
        let raw = |v: &[f32]| tensor::<B, 2>(v, shape, device).into_primitive().tensor();
        let host2 = |t| host(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(t)));
        let h = B::swiglu(raw(gate), raw(up));
        let (dgate, dup) = B::swiglu_backward(raw(gate), raw(up), raw(dh));
        [host2(h), host2(dgate), host2(dup)]
    }
    let expected = run::<R>(&gate, &up, &dh, [rows, n], reference);
    let actual = run::<T>(&gate, &up, &dh, [rows, n], tested);
    named_gaps(&format!("SwiGLU gate [{rows}, {n}]"), &["output", "dgate", "dup"], &expected, &actual)
}

/// Generation's gate of one product's halves (`swiglu_halves`) on both backends: `[rows,
/// 2n]` with the gate in the first half, gates far into both tails of the sigmoid.
pub fn check_swiglu_halves<R: Swiglu, T: Swiglu>([rows, n]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(59);
    let both: Vec<f32> = (0..rows * 2 * n).map(|i| (rng.f32() - 0.5) * if i % (2 * n) < n { 40.0 } else { 4.0 }).collect();
    fn run<B: Swiglu>(both: &[f32], [rows, n]: [usize; 2], device: &B::Device) -> [Vec<f32>; 1] {
        [host(super::swiglu_halves(tensor::<B, 2>(both, [rows, 2 * n], device)))]
    }
    let expected = run::<R>(&both, [rows, n], reference);
    let actual = run::<T>(&both, [rows, n], tested);
    named_gaps(&format!("SwiGLU gate of one product's halves [{rows}, 2 x {n}]"), &["output"], &expected, &actual)
}
