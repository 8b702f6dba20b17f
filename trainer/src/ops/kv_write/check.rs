//! The cache write against a reference backend. `trainer compare-backends` runs it with the
//! CPU as the reference and CUDA as the backend under test; the tests here run it CPU
//! against CPU.

use super::{KvWrite, Placement, kv_write};
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// `kv_write` on both backends: `rows` blocks of `t` positions into a random cache of
/// `[slots, heads, capacity, d]`, at scattered slots and positions (one block ending at the
/// capacity); the whole cache after the write must be equal.
pub fn check_kv_write<R: KvWrite, T: KvWrite>([slots, heads, capacity, d]: [usize; 4], [rows, t]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(43);
    let cache: Vec<f32> = (0..slots * heads * capacity * d).map(|_| rng.f32() - 0.5).collect();
    let values: Vec<f32> = (0..rows * heads * t * d).map(|_| rng.f32() + 1.0).collect();
    let mut order: Vec<usize> = (0..slots).collect();
    rng.shuffle(&mut order);
    let at = Placement { slots: order[..rows].to_vec(), starts: (0..rows).map(|i| if i == 0 { capacity - t } else { rng.usize(0..=capacity - t) }).collect() };
    fn run<B: KvWrite>(cache: &[f32], values: &[f32], shapes: ([usize; 4], [usize; 4]), at: &Placement, device: &B::Device) -> Vec<Vec<f32>> {
        vec![host(kv_write(tensor::<B, 4>(cache, shapes.0, device), tensor::<B, 4>(values, shapes.1, device), at))]
    }
    let shapes = ([slots, heads, capacity, d], [rows, heads, t, d]);
    let expected = run::<R>(&cache, &values, shapes, &at, reference);
    let actual = run::<T>(&cache, &values, shapes, &at, tested);
    named_gaps(&format!("cache write [{slots}, {heads}, {capacity}, {d}] <- [{rows}, {heads}, {t}, {d}]"), &["cache"], &expected, &actual)
}
