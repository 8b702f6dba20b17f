//! The projections' product and its gradients against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use super::{Matmul, matmul_2d};
use crate::ops::check::{OpGap, host, named_gaps, tensor};
use crate::ops::kernels::Kernels;

/// The projections' product (`Matmul::matmul_2d`) on both backends, in the layouts training
/// gives it: `a · b` (forward), `dc · bᵀ` and `aᵀ · dc` (backward, transposed views), and an
/// operand narrowed out of a wider one (rows further apart than their length).
pub fn check_matmul<R: Matmul, T: Matmul>([m, k, n]: [usize; 3], kernels: Kernels, reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(29);
    let mut floats = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect() };
    let (a, b, dc, wide) = (floats(m * k), floats(k * n), floats(m * n), floats(m * (k + 5)));
    fn run<B: Matmul>(a: &[f32], b: &[f32], dc: &[f32], wide: &[f32], [m, k, n]: [usize; 3], kernels: Kernels, device: &B::Device) -> [Vec<f32>; 4] {
        let (a, b, dc) = (tensor::<B, 2>(a, [m, k], device), tensor::<B, 2>(b, [k, n], device), tensor::<B, 2>(dc, [m, n], device));
        let narrowed = tensor::<B, 2>(wide, [m, k + 5], device).narrow(1, 2, k);
        [
            host(matmul_2d(a.clone(), b.clone(), kernels)),
            host(matmul_2d(dc.clone(), b.clone().transpose(), kernels)),
            host(matmul_2d(a.transpose(), dc, kernels)),
            host(matmul_2d(narrowed, b, kernels)),
        ]
    }
    let expected = run::<R>(&a, &b, &dc, &wide, [m, k, n], Kernels::default(), reference);
    let actual = run::<T>(&a, &b, &dc, &wide, [m, k, n], kernels, tested);
    named_gaps(&format!("matmul_2d [{m}, {k}] · [{k}, {n}]"), &["a · b", "dc · bᵀ", "aᵀ · dc", "a narrowed from a wider matrix · b"], &expected, &actual)
}

/// The product's gradients (`matmul_2d` under autodiff) on both backends: `a`'s and `b`'s
/// for `b` stored as `[k, n]` and for `b` a transposed view of a stored `[n, k]` (the tied
/// LM head's case, whose gradient a backend may write in the stored layout).
pub fn check_matmul_gradients<R: Matmul, T: Matmul>([m, k, n]: [usize; 3], kernels: Kernels, reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(37);
    let mut floats = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect() };
    let (a, b, weights) = (floats(m * k), floats(k * n), floats(m * n));
    fn run<B: Matmul>(a: &[f32], b: &[f32], weights: &[f32], [m, k, n]: [usize; 3], kernels: Kernels, device: &B::Device) -> [Vec<f32>; 4] {
        type A<B> = burn::backend::Autodiff<B>;
        let grads_of = |b_stored_transposed: bool| {
            let a = tensor::<A<B>, 2>(a, [m, k], device).require_grad();
            let b = if b_stored_transposed { tensor::<A<B>, 2>(b, [n, k], device) } else { tensor::<A<B>, 2>(b, [k, n], device) }.require_grad();
            let view = if b_stored_transposed { b.clone().transpose() } else { b.clone() };
            let grads = (matmul_2d(a.clone(), view, kernels) * tensor::<A<B>, 2>(weights, [m, n], device)).sum().backward();
            (host(a.grad(&grads).expect("a's gradient")), host(b.grad(&grads).expect("b's gradient")))
        };
        let ((da, db), (da_t, db_t)) = (grads_of(false), grads_of(true));
        [da, db, da_t, db_t]
    }
    let expected = run::<R>(&a, &b, &weights, [m, k, n], Kernels::default(), reference);
    let actual = run::<T>(&a, &b, &weights, [m, k, n], kernels, tested);
    named_gaps(
        &format!("matmul_2d gradients [{m}, {k}] · [{k}, {n}]"),
        &["da", "db", "da (b a transposed view)", "db (b a transposed view)"],
        &expected,
        &actual,
    )
}
