//! The attention op's forward and backward against a reference backend. `trainer compare-backends` runs it with the CPU as the
//! reference and CUDA as the backend under test; the tests here run it CPU against CPU.

use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

use super::CausalAttention;
use crate::ops::check::BF16_TOLERANCE;
use crate::ops::check::{OpGap, TOLERANCE, host, named_gaps, tensor};
use crate::ops::kernels::Kernels;

/// The attention op's forward and backward (`causal_attention`'s parts: the batched
/// products, the causal softmax and its backward) on both backends: the output and the
/// gradients of `q`, `k`, `v` for the same output gradient, `[batch, heads, seq, head_dim]`
/// with `q` and `v` given as views of `[batch, seq, heads, head_dim]` as the model gives
/// them (one sequence: evenly strided heads; more: copied first). The tested backend runs
/// in `dtype` (the reference in f32).
pub fn check_attention<R: CausalAttention, T: CausalAttention>(
    [b, h, kv, s, d]: [usize; 5],
    dtype: DType,
    kernels: Kernels,
    reference: &R::Device,
    tested: &T::Device,
) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(31);
    let mut floats = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect() };
    let [q, k, v, dy] = [floats(b * h * s * d), floats(b * kv * s * d), floats(b * kv * s * d), floats(b * h * s * d)];
    fn run<B: CausalAttention>(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dy: &[f32],
        [b, h, kv, s, d]: [usize; 5],
        (dtype, kernels): (DType, Kernels),
        device: &B::Device,
    ) -> [Vec<f32>; 4] {
        let by_head = |x: &[f32], n: usize| tensor::<B, 4>(x, [b, s, n, d], device).cast(dtype).swap_dims(1, 2).into_primitive().tensor();
        let plain = |x: &[f32], n: usize| tensor::<B, 4>(x, [b, n, s, d], device).cast(dtype).into_primitive().tensor();
        let host4 = |x| host(Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x)).cast(DType::F32));
        let scale = 1.0 / (d as f64).sqrt();
        let (y, kept) = B::attention_forward(by_head(q, h), plain(k, kv), by_head(v, kv), scale, kernels);
        let [dq, dk, dv] = B::attention_backward(by_head(q, h), plain(k, kv), by_head(v, kv), kept, plain(dy, h), scale, kernels);
        [host4(y), host4(dq), host4(dk), host4(dv)]
    }
    let expected = run::<R>(&q, &k, &v, &dy, [b, h, kv, s, d], (DType::F32, Kernels::default()), reference);
    let actual = run::<T>(&q, &k, &v, &dy, [b, h, kv, s, d], (dtype, kernels), tested);
    let tolerance = if dtype == DType::F32 { TOLERANCE } else { BF16_TOLERANCE };
    let gaps = named_gaps(&format!("attention op [{b}, {h} ({kv} kv), {s}, {d}] {dtype:?}"), &["output", "dq", "dk", "dv"], &expected, &actual);
    gaps.into_iter().map(|g| OpGap { tolerance, ..g }).collect()
}
