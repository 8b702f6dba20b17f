//! RoPE on a projection's heads against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::RotaryHeads;
use crate::ops::check::{OpGap, host, named_gaps, tensor};

/// RoPE on a projection's heads (`rotary_heads`) on both backends: the rotated heads and
/// the rows' gradient for `[batch, seq, heads · head_dim]` rows, with one table for the
/// batch and with a table per row (positions shifted by the row, as in generation).
pub fn check_rotary_heads<R: RotaryHeads, T: RotaryHeads>([b, t, heads, d]: [usize; 4], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(43);
    let x: Vec<f32> = (0..b * t * heads * d).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let dy: Vec<f32> = (0..b * t * heads * d).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let angles = |rows: usize| -> (Vec<f32>, Vec<f32>) {
        let angle = |row: usize, p: usize, i: usize| ((p + 3 * row) as f32) * 10000f32.powf(-2.0 * (i % (d / 2)) as f32 / d as f32);
        let all: Vec<f32> = (0..rows).flat_map(|row| (0..t).flat_map(move |p| (0..d).map(move |i| angle(row, p, i)))).collect();
        (all.iter().map(|a| a.cos()).collect(), all.iter().map(|a| a.sin()).collect())
    };
    type Tables<'a> = (&'a [f32], &'a [f32], usize);
    fn run<B: RotaryHeads>(x: &[f32], dy: &[f32], (cos, sin, rows): Tables, [b, t, heads, d]: [usize; 4], device: &B::Device) -> [Vec<f32>; 2] {
        let table = |v: &[f32]| tensor::<B, 4>(v, [rows, 1, t, d], device).into_primitive().tensor();
        let y = B::rotary_heads(tensor::<B, 3>(x, [b, t, heads * d], device).into_primitive().tensor(), table(cos), table(sin), heads);
        let dx = B::rotary_heads_backward(tensor::<B, 4>(dy, [b, heads, t, d], device).into_primitive().tensor(), table(cos), table(sin));
        [host(Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(y))), host(Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(dx)))]
    }
    let mut gaps = Vec::new();
    for (rows, which) in [(1, "one table"), (b, "a table per row")] {
        let (cos, sin) = angles(rows);
        let expected = run::<R>(&x, &dy, (&cos, &sin, rows), [b, t, heads, d], reference);
        let actual = run::<T>(&x, &dy, (&cos, &sin, rows), [b, t, heads, d], tested);
        gaps.extend(named_gaps(&format!("RoPE on heads [{b}, {t}, {heads} x {d}], {which}"), &["output", "dx"], &expected, &actual));
    }
    gaps
}

/// Generation's split of one product (`qkv_heads`) on both backends: the rotated query and
/// key heads and the value heads of `[batch, seq, (heads + 2 · kv_heads) · head_dim]` rows
/// given as a view of wider rows (as a slice of a larger product would be), a table per row.
pub fn check_qkv_heads<R: RotaryHeads, T: RotaryHeads>([b, t, heads, kv_heads, d]: [usize; 5], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(53);
    let (width, extra) = ((heads + 2 * kv_heads) * d, d);
    let rows: Vec<f32> = (0..b * t * (width + extra)).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let angles: Vec<f32> = (0..b * t * d).map(|i| (i / d) as f32 * 10000f32.powf(-2.0 * (i % (d / 2)) as f32 / d as f32)).collect();
    let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
    fn split<B: RotaryHeads>(
        rows: &[f32],
        (cos, sin): (&[f32], &[f32]),
        [b, t, heads, kv_heads, d]: [usize; 5],
        extra: usize,
        device: &B::Device,
    ) -> [Vec<f32>; 3] {
        let width = (heads + 2 * kv_heads) * d;
        let view = tensor::<B, 3>(rows, [b, t, width + extra], device).narrow(2, extra, width);
        let table = |v: &[f32]| tensor::<B, 4>(v, [b, 1, t, d], device);
        super::qkv_heads(view, table(cos), table(sin), [heads, kv_heads]).map(host)
    }
    let shape = [b, t, heads, kv_heads, d];
    let expected = split::<R>(&rows, (&cos, &sin), shape, extra, reference);
    let actual = split::<T>(&rows, (&cos, &sin), shape, extra, tested);
    named_gaps(
        &format!("queries, keys and values of one product [{b}, {t}, ({heads} + 2 x {kv_heads}) x {d}]"),
        &["queries", "keys", "values"],
        &expected,
        &actual,
    )
}
