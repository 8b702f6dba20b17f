//! AdamW's one-pass update against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use super::{AdamWStep, AdamWUpdate, OnePassAdamW};
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// Three AdamW updates (the first from zero moments) of a `[rows, cols]` parameter on both
/// backends from the same values: the gaps of the parameter and both moments after them.
pub fn check_adamw<R: AdamWStep, T: AdamWStep>([rows, cols]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(23);
    let param: Vec<f32> = (0..rows * cols).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let grads: Vec<Vec<f32>> = (0..3).map(|_| (0..rows * cols).map(|_| (rng.f32() - 0.5) * 1e-2).collect()).collect();
    fn run<B: AdamWStep>(param: &[f32], grads: &[Vec<f32>], shape: [usize; 2], device: &B::Device) -> [Vec<f32>; 3] {
        let (mut p, mut m, mut v) = (tensor::<B, 2>(param, shape, device), None, None);
        for (i, g) in grads.iter().enumerate() {
            let settings = OnePassAdamW { beta_1: 0.9, beta_2: 0.95, epsilon: 1e-8, weight_decay: 0.01, ..Default::default() };
            // The clip's factor folded into the update on the first two.
            let u = AdamWUpdate { settings, lr: 1e-3, time: i + 1, grad_scale: if i < 2 { 0.37 } else { 1.0 } };
            let (p2, m2, v2) = B::adamw_step(p, tensor::<B, 2>(g, shape, device), m, v, &u);
            (p, m, v) = (p2, Some(m2), Some(v2));
        }
        [host(p), host(m.expect("updated")), host(v.expect("updated"))]
    }
    let expected = run::<R>(&param, &grads, [rows, cols], reference);
    let actual = run::<T>(&param, &grads, [rows, cols], tested);
    named_gaps(&format!("AdamW, 3 updates of [{rows}, {cols}]"), &["parameter", "first moment", "second moment"], &expected, &actual)
}
