//! AdamW's one-pass update against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use burn::optim::{AdamWState, SimpleOptimizer};
use burn::record::{FullPrecisionSettings, Record};

use super::{AdamWStep, AdamWUpdate, OnePassAdamW};
use crate::Cpu;
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// A `[rows, cols]` parameter's start and three gradients, the same on every call.
fn values(rows: usize, cols: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = fastrand::Rng::with_seed(23);
    let param: Vec<f32> = (0..rows * cols).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let grads: Vec<Vec<f32>> = (0..3).map(|_| (0..rows * cols).map(|_| (rng.f32() - 0.5) * 1e-2).collect()).collect();
    (param, grads)
}

fn settings() -> OnePassAdamW {
    OnePassAdamW { beta_1: 0.9, beta_2: 0.95, epsilon: 1e-8, weight_decay: 0.01, ..Default::default() }
}

/// The clip's factor folded into the update on the first two of the three.
fn grad_scale(update: usize) -> f32 {
    if update < 2 { 0.37 } else { 1.0 }
}

/// Three AdamW updates (the first from zero moments) of a `[rows, cols]` parameter on both
/// backends from the same values: the gaps of the parameter and both moments after them.
pub fn check_adamw<R: AdamWStep, T: AdamWStep>([rows, cols]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let (param, grads) = values(rows, cols);
    fn run<B: AdamWStep>(param: &[f32], grads: &[Vec<f32>], shape: [usize; 2], device: &B::Device) -> [Vec<f32>; 3] {
        let (mut p, mut m, mut v) = (tensor::<B, 2>(param, shape, device), None, None);
        for (i, g) in grads.iter().enumerate() {
            let u = AdamWUpdate { settings: settings(), lr: 1e-3, time: i + 1, grad_scale: grad_scale(i) };
            let (p2, m2, v2) = B::adamw_step(p, tensor::<B, 2>(g, shape, device), m, v, &u);
            (p, m, v) = (p2, Some(m2), Some(v2));
        }
        [host(p), host(m.expect("updated")), host(v.expect("updated"))]
    }
    let expected = run::<R>(&param, &grads, [rows, cols], reference);
    let actual = run::<T>(&param, &grads, [rows, cols], tested);
    named_gaps(&format!("AdamW, 3 updates of [{rows}, {cols}]"), &["parameter", "first moment", "second moment"], &expected, &actual)
}

/// The same three updates through the optimizer, its moments on the device on the
/// reference backend and in host memory on the tested one (handed there after each update
/// and back before the next; page-locked where the backend has it); the moments are read through the optimizer's record, the
/// way a checkpoint reads them. On one backend the gaps are zero: the same kernel on the
/// same values.
pub fn check_adamw_on_host<R: AdamWStep, T: AdamWStep>([rows, cols]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let (param, grads) = values(rows, cols);
    fn run<B: AdamWStep>(param: &[f32], grads: &[Vec<f32>], shape: [usize; 2], device: &B::Device, on_host: bool) -> [Vec<f32>; 3] {
        let optim = settings().with_state_on_host(on_host).with_pinned_moments(on_host);
        let (mut p, mut state) = (tensor::<B, 2>(param, shape, device), None);
        for (i, g) in grads.iter().enumerate() {
            optim.grad_scale.set(grad_scale(i));
            (p, state) = optim.step(1e-3, p, tensor::<B, 2>(g, shape, device), state);
        }
        let record = state.expect("updated").into_item::<FullPrecisionSettings>();
        let moments = AdamWState::<Cpu, 2>::from_item(record, &Default::default()).momentum;
        [host(p), host(moments.moment_1), host(moments.moment_2)]
    }
    let expected = run::<R>(&param, &grads, [rows, cols], reference, false);
    let actual = run::<T>(&param, &grads, [rows, cols], tested, true);
    let names = ["parameter", "first moment (record)", "second moment (record)"];
    named_gaps(&format!("AdamW, 3 updates of [{rows}, {cols}], moments on the host"), &names, &expected, &actual)
}
