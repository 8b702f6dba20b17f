//! The cache write against a reference backend. `trainer compare-backends` runs it with the
//! CPU as the reference and CUDA as the backend under test; the tests here run it CPU
//! against CPU.

use super::{KvWrite, Placement, kv_write};
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// `kv_write` on both backends: `rows` runs of `t` positions into random key and value
/// caches of `[blocks, heads, block, d]`, each row holding `per_row` scattered blocks and
/// writing from a scattered position (one run ending at its row's last position); the whole
/// caches after the write must be equal.
pub fn check_kv_write<R: KvWrite, T: KvWrite>(
    [blocks, heads, block, d]: [usize; 4],
    [rows, t, per_row]: [usize; 3],
    reference: &R::Device,
    tested: &T::Device,
) -> Vec<OpGap> {
    assert!(rows * per_row <= blocks && t <= per_row * block, "{rows} rows of {per_row} blocks cannot take {t} positions each in {blocks} blocks");
    let mut rng = fastrand::Rng::with_seed(43);
    let cache: Vec<f32> = (0..blocks * heads * block * d).map(|_| rng.f32() - 0.5).collect();
    let values: Vec<f32> = (0..rows * heads * t * d).map(|_| rng.f32() + 1.0).collect();
    let mut order: Vec<usize> = (0..blocks).collect();
    rng.shuffle(&mut order);
    let tables: Vec<Vec<usize>> = order.chunks(per_row).take(rows).map(<[usize]>::to_vec).collect();
    let last = per_row * block - t;
    let starts: Vec<usize> = (0..rows).map(|i| if i == 0 { last } else { rng.usize(0..=last) }).collect();
    let at = (tables, starts);
    fn run<B: KvWrite>(
        cache: &[f32],
        values: &[f32],
        shapes: ([usize; 4], [usize; 4]),
        (tables, starts): &(Vec<Vec<usize>>, Vec<usize>),
        device: &B::Device,
    ) -> Vec<Vec<f32>> {
        let at = Placement::new(tables.clone(), starts.clone(), device);
        let (cache, values) = (tensor::<B, 4>(cache, shapes.0, device), tensor::<B, 4>(values, shapes.1, device));
        kv_write([cache.clone(), -cache], [values.clone(), values * 2.0], &at).map(host).to_vec()
    }
    let shapes = ([blocks, heads, block, d], [rows, heads, t, d]);
    let expected = run::<R>(&cache, &values, shapes, &at, reference);
    let actual = run::<T>(&cache, &values, shapes, &at, tested);
    let what = format!("cache write [{blocks}, {heads}, {block}, {d}] <- [{rows}, {heads}, {t}, {d}], {per_row} blocks a row");
    named_gaps(&what, &["keys", "values"], &expected, &actual)
}
