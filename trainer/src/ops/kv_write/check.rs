//! The cache write against a reference backend. `trainer compare-backends` runs it with the
//! CPU as the reference and CUDA as the backend under test; the tests here run it CPU
//! against CPU.

use super::{KvWrite, Placement, kv_write};
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// `kv_write` on both backends: `rows` blocks of `t` positions into random key and value
/// caches of `[slots, heads, capacity, d]`, at scattered slots and positions (one block
/// ending at the capacity); the whole caches after the write must be equal.
pub fn check_kv_write<R: KvWrite, T: KvWrite>(
    [slots, heads, capacity, d]: [usize; 4],
    [rows, t]: [usize; 2],
    reference: &R::Device,
    tested: &T::Device,
) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(43);
    let cache: Vec<f32> = (0..slots * heads * capacity * d).map(|_| rng.f32() - 0.5).collect();
    let values: Vec<f32> = (0..rows * heads * t * d).map(|_| rng.f32() + 1.0).collect();
    let mut order: Vec<usize> = (0..slots).collect();
    rng.shuffle(&mut order);
    let starts: Vec<usize> = (0..rows).map(|i| if i == 0 { capacity - t } else { rng.usize(0..=capacity - t) }).collect();
    let at = (order[..rows].to_vec(), starts);
    fn run<B: KvWrite>(
        cache: &[f32],
        values: &[f32],
        shapes: ([usize; 4], [usize; 4]),
        (slots, starts): &(Vec<usize>, Vec<usize>),
        device: &B::Device,
    ) -> Vec<Vec<f32>> {
        let at = Placement::new(slots.clone(), starts.clone(), device);
        let (cache, values) = (tensor::<B, 4>(cache, shapes.0, device), tensor::<B, 4>(values, shapes.1, device));
        kv_write([cache.clone(), -cache], [values.clone(), values * 2.0], &at).map(host).to_vec()
    }
    let shapes = ([slots, heads, capacity, d], [rows, heads, t, d]);
    let expected = run::<R>(&cache, &values, shapes, &at, reference);
    let actual = run::<T>(&cache, &values, shapes, &at, tested);
    named_gaps(&format!("cache write [{slots}, {heads}, {capacity}, {d}] <- [{rows}, {heads}, {t}, {d}]"), &["keys", "values"], &expected, &actual)
}
