//! Op-by-op agreement between two backends (the CPU as the reference, CUDA as the one under
//! test) for the operations batched generation leans on, at the shapes of a rollout batch:
//! the grouped-query head expansion, causal and masked attention (prefill and one decoding
//! step over a full-capacity cache; burn's composed path, which the model uses, and the
//! backend's fused kernel), the cache update, the LM head on the last position with an
//! argmax, and an argmax over a vocabulary-wide row; and, for training, AdamW's update (`check_adamw`: on
//! CUDA without fusion its own kernel), the projections' product (`check_matmul`: on CUDA
//! without fusion cuBLAS), the attention op's forward and backward (`check_attention`:
//! on CUDA without fusion cuBLAS and two kernels, grouped query heads included), RMSNorm
//! (`check_rms_norm`), RoPE on the heads (`check_rotary_heads`), the MLP's gate
//! (`check_swiglu`) and the loss's cross-entropy (`check_cross_entropy`), on CUDA without
//! fusion one kernel each way, and the gradients' sums of squares for clipping
//! (`check_squared_norms`: cuBLAS). `trainer compare-backends` prints each gap, so that a
//! disagreement seen in whole-model generation can be traced to one op.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::{DType, TensorPrimitive};

use crate::generate::{Sampling, generate};
use crate::model::Llama;

use crate::ModelBackend;
use crate::cross_entropy::CrossEntropy;
use crate::model::attention::attention_options;
use crate::model::causal_attention::CausalAttention;
use crate::model::matmul::{Matmul, matmul_2d};
use crate::model::rms_norm::RmsNormOp;
use crate::model::rotary_heads::RotaryHeads;
use crate::model::swiglu::Swiglu;
use crate::train::adamw::{AdamWStep, AdamWUpdate, OnePassAdamW};
use crate::train::squared_norms::SquaredNorms;

/// The shapes to check at.
#[derive(Clone, Copy, Debug)]
pub struct OpShapes {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Prompt length (prefill queries).
    pub prompt: usize,
    /// Cache capacity (keys).
    pub capacity: usize,
    pub vocab: usize,
}

/// Relative gaps above this are disagreements (f32 on different kernels stays far below).
pub const TOLERANCE: f32 = 1e-3;
/// The same for an op run in bf16 against f32: bf16 rounds each input to 8 significant
/// bits (3.9e-3 relative), and attention in bf16 lands at 3e-3 - 7e-3 by either kernel.
pub const BF16_TOLERANCE: f32 = 2e-2;

/// One op's result: the largest gap relative to the reference's largest magnitude, and the
/// gap above which it disagrees.
#[derive(Clone, Debug)]
pub struct OpGap {
    pub op: String,
    pub gap: f32,
    pub tolerance: f32,
}

impl OpGap {
    /// The gap of `tested` to `reference`, judged at `TOLERANCE`.
    fn new(op: String, reference: &[f32], tested: &[f32]) -> Self {
        OpGap { op, gap: relative_gap(reference, tested), tolerance: TOLERANCE }
    }

    /// Whether the gap is within the tolerance.
    pub fn agrees(&self) -> bool {
        self.gap <= self.tolerance
    }
}

impl std::fmt::Display for OpGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<60} CPU vs CUDA relative gap {:.3e}{}", self.op, self.gap, if self.agrees() { "" } else { "  DIFFERS" })
    }
}

/// Runs every op on both backends with the same seeded inputs.
pub fn check_ops<R: Backend, T: Backend>(s: OpShapes, reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(17);
    let OpShapes { batch: b, heads: h, kv_heads: kv, head_dim: d, prompt: tq, capacity: tk, vocab } = s;
    let floats = |rng: &mut fastrand::Rng, n: usize| -> Vec<f32> { (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect() };
    let (q_pre, k_cache, v_cache) = (floats(&mut rng, b * h * tq * d), floats(&mut rng, b * kv * tk * d), floats(&mut rng, b * kv * tk * d));
    let q_step = floats(&mut rng, b * h * d);
    let k_new = floats(&mut rng, b * kv * d);
    let hidden = floats(&mut rng, b * tq * h * d);
    let head = floats(&mut rng, vocab * h * d);
    // Left padding of 0..8 positions per row; the decoding step sees the prompt plus one token.
    let pads: Vec<usize> = (0..b).map(|_| rng.usize(0..8.min(tq))).collect();
    let prefill_mask: Vec<bool> = pads.iter().flat_map(|&n| (0..tq).flat_map(move |q| (0..tk).map(move |k| k > q || (k < n && k != q)))).collect();
    let step_mask: Vec<bool> = pads.iter().flat_map(|&n| (0..tk).map(move |k| k < n || k > tq)).collect();

    let mut gaps = Vec::new();
    let mut add = |op: String, a: Vec<f32>, t: Vec<f32>| gaps.push(OpGap::new(op, &a, &t));

    add(
        "gqa head expansion (expand + reshape)".into(),
        run_repeat_kv::<R>(&k_cache, [b, kv, tk, d], h, reference),
        run_repeat_kv::<T>(&k_cache, [b, kv, tk, d], h, tested),
    );
    for (fused, path) in [(false, "composed"), (true, "fused kernel")] {
        let mut attend = |what: &str, q: &[f32], mask: Option<&[bool]>, tq: usize, keys: usize| {
            let op = format!("{what} ({path})");
            let a = run_attention::<R>(q, &k_cache, &v_cache, mask, s, tq, keys, fused, reference);
            add(op, a, run_attention::<T>(q, &k_cache, &v_cache, mask, s, tq, keys, fused, tested));
        };
        attend("causal attention, prefill", &q_pre, None, tq, tq);
        attend("masked attention, prefill over the cache", &q_pre, Some(&prefill_mask), tq, tk);
        attend("masked attention, one decoding step", &q_step, Some(&step_mask), 1, tk);
    }
    add(
        "cache update (cat with zeros + add)".into(),
        run_cache_update::<R>(&k_cache, &k_new, s, reference),
        run_cache_update::<T>(&k_cache, &k_new, s, tested),
    );
    add("LM head on the last position + argmax".into(), run_last_argmax::<R>(&hidden, &head, s, reference), run_last_argmax::<T>(&hidden, &head, s, tested));
    let logits = floats(&mut rng, b * vocab);
    add("argmax over the vocabulary".into(), run_argmax::<R>(&logits, [b, vocab], reference), run_argmax::<T>(&logits, [b, vocab], tested));
    gaps
}

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

/// The projections' product (`Matmul::matmul_2d`) on both backends, in the layouts training
/// gives it: `a · b` (forward), `dc · bᵀ` and `aᵀ · dc` (backward, transposed views), and an
/// operand narrowed out of a wider one (rows further apart than their length).
pub fn check_matmul<R: Matmul, T: Matmul>([m, k, n]: [usize; 3], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(29);
    let mut floats = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect() };
    let (a, b, dc, wide) = (floats(m * k), floats(k * n), floats(m * n), floats(m * (k + 5)));
    fn run<B: Matmul>(a: &[f32], b: &[f32], dc: &[f32], wide: &[f32], [m, k, n]: [usize; 3], device: &B::Device) -> [Vec<f32>; 4] {
        let (a, b, dc) = (tensor::<B, 2>(a, [m, k], device), tensor::<B, 2>(b, [k, n], device), tensor::<B, 2>(dc, [m, n], device));
        let narrowed = tensor::<B, 2>(wide, [m, k + 5], device).narrow(1, 2, k);
        [
            host(matmul_2d(a.clone(), b.clone())),
            host(matmul_2d(dc.clone(), b.clone().transpose())),
            host(matmul_2d(a.transpose(), dc)),
            host(matmul_2d(narrowed, b)),
        ]
    }
    let expected = run::<R>(&a, &b, &dc, &wide, [m, k, n], reference);
    let actual = run::<T>(&a, &b, &dc, &wide, [m, k, n], tested);
    named_gaps(&format!("matmul_2d [{m}, {k}] · [{k}, {n}]"), &["a · b", "dc · bᵀ", "aᵀ · dc", "a narrowed from a wider matrix · b"], &expected, &actual)
}

/// The product's gradients (`matmul_2d` under autodiff) on both backends: `a`'s and `b`'s
/// for `b` stored as `[k, n]` and for `b` a transposed view of a stored `[n, k]` (the tied
/// LM head's case, whose gradient a backend may write in the stored layout).
pub fn check_matmul_gradients<R: Matmul, T: Matmul>([m, k, n]: [usize; 3], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(37);
    let mut floats = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect() };
    let (a, b, weights) = (floats(m * k), floats(k * n), floats(m * n));
    fn run<B: Matmul>(a: &[f32], b: &[f32], weights: &[f32], [m, k, n]: [usize; 3], device: &B::Device) -> [Vec<f32>; 4] {
        type A<B> = burn::backend::Autodiff<B>;
        let grads_of = |b_stored_transposed: bool| {
            let a = tensor::<A<B>, 2>(a, [m, k], device).require_grad();
            let b = if b_stored_transposed { tensor::<A<B>, 2>(b, [n, k], device) } else { tensor::<A<B>, 2>(b, [k, n], device) }.require_grad();
            let view = if b_stored_transposed { b.clone().transpose() } else { b.clone() };
            let grads = (matmul_2d(a.clone(), view) * tensor::<A<B>, 2>(weights, [m, n], device)).sum().backward();
            (host(a.grad(&grads).expect("a's gradient")), host(b.grad(&grads).expect("b's gradient")))
        };
        let ((da, db), (da_t, db_t)) = (grads_of(false), grads_of(true));
        [da, db, da_t, db_t]
    }
    let expected = run::<R>(&a, &b, &weights, [m, k, n], reference);
    let actual = run::<T>(&a, &b, &weights, [m, k, n], tested);
    named_gaps(
        &format!("matmul_2d gradients [{m}, {k}] · [{k}, {n}]"),
        &["da", "db", "da (b a transposed view)", "db (b a transposed view)"],
        &expected,
        &actual,
    )
}

/// The attention op's forward and backward (`causal_attention`'s parts: the batched
/// products, the causal softmax and its backward) on both backends: the output and the
/// gradients of `q`, `k`, `v` for the same output gradient, `[batch, heads, seq, head_dim]`
/// with `q` and `v` given as views of `[batch, seq, heads, head_dim]` as the model gives
/// them (one sequence: evenly strided heads; more: copied first). The tested backend runs
/// in `dtype` (the reference in f32).
pub fn check_attention<R: CausalAttention, T: CausalAttention>(
    [b, h, kv, s, d]: [usize; 5],
    dtype: DType,
    reference: &R::Device,
    tested: &T::Device,
) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(31);
    let mut floats = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect() };
    let [q, k, v, dy] = [floats(b * h * s * d), floats(b * kv * s * d), floats(b * kv * s * d), floats(b * h * s * d)];
    fn run<B: CausalAttention>(q: &[f32], k: &[f32], v: &[f32], dy: &[f32], [b, h, kv, s, d]: [usize; 5], dtype: DType, device: &B::Device) -> [Vec<f32>; 4] {
        let by_head = |x: &[f32], n: usize| tensor::<B, 4>(x, [b, s, n, d], device).cast(dtype).swap_dims(1, 2).into_primitive().tensor();
        let plain = |x: &[f32], n: usize| tensor::<B, 4>(x, [b, n, s, d], device).cast(dtype).into_primitive().tensor();
        let host4 = |x| host(Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x)).cast(DType::F32));
        let scale = 1.0 / (d as f64).sqrt();
        let (y, kept) = B::attention_forward(by_head(q, h), plain(k, kv), by_head(v, kv), scale);
        let [dq, dk, dv] = B::attention_backward(by_head(q, h), plain(k, kv), by_head(v, kv), kept, plain(dy, h), scale);
        [host4(y), host4(dq), host4(dk), host4(dv)]
    }
    let expected = run::<R>(&q, &k, &v, &dy, [b, h, kv, s, d], DType::F32, reference);
    let actual = run::<T>(&q, &k, &v, &dy, [b, h, kv, s, d], dtype, tested);
    let tolerance = if dtype == DType::F32 { TOLERANCE } else { BF16_TOLERANCE };
    let gaps = named_gaps(&format!("attention op [{b}, {h} ({kv} kv), {s}, {d}] {dtype:?}"), &["output", "dq", "dk", "dv"], &expected, &actual);
    gaps.into_iter().map(|g| OpGap { tolerance, ..g }).collect()
}

/// One gap per named output: `expected[i]` against `actual[i]`, reported as "`what`: name".
fn named_gaps(what: &str, names: &[&str], expected: &[Vec<f32>], actual: &[Vec<f32>]) -> Vec<OpGap> {
    names.iter().zip(expected.iter().zip(actual)).map(|(name, (e, t))| OpGap::new(format!("{what}: {name}"), e, t)).collect()
}

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

/// The loss's cross-entropy op (`cross_entropy`) on both backends: each row's loss and the
/// logits' gradient for the same loss gradient, `[rows, vocab]` logits with large values
/// (an unshifted exponential would overflow) and targets across the vocabulary.
pub fn check_cross_entropy<R: CrossEntropy, T: CrossEntropy>([rows, vocab]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(37);
    let logits: Vec<f32> = (0..rows * vocab).map(|_| (rng.f32() - 0.5) * 200.0).collect();
    let targets: Vec<i64> = (0..rows).map(|_| rng.i64(0..vocab as i64)).collect();
    let dloss: Vec<f32> = (0..rows).map(|_| rng.f32() - 0.5).collect();
    fn run<B: CrossEntropy>(logits: &[f32], targets: &[i64], dloss: &[f32], [rows, vocab]: [usize; 2], device: &B::Device) -> [Vec<f32>; 2] {
        let raw = || tensor::<B, 2>(logits, [rows, vocab], device).into_primitive().tensor();
        let targets = || Tensor::<B, 1, Int>::from_data(TensorData::new(targets.to_vec(), [rows]), device).into_primitive();
        let (losses, lse) = B::cross_entropy_rows(raw(), targets());
        let grad = B::cross_entropy_backward(raw(), targets(), lse, tensor::<B, 1>(dloss, [rows], device).into_primitive().tensor());
        [host(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(losses))), host(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grad)))]
    }
    let expected = run::<R>(&logits, &targets, &dloss, [rows, vocab], reference);
    let actual = run::<T>(&logits, &targets, &dloss, [rows, vocab], tested);
    named_gaps(&format!("cross-entropy [{rows}, {vocab}]"), &["losses", "logits' gradient"], &expected, &actual)
}

/// RMSNorm's op (`rms_norm`) on both backends: the output and the gradients of the input
/// and of γ for the same output gradient, `[rows, n]` rows of varied scale.
pub fn check_rms_norm<R: RmsNormOp, T: RmsNormOp>([rows, n]: [usize; 2], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(41);
    let x: Vec<f32> = (0..rows * n).map(|i| (rng.f32() - 0.5) * (1 + i / n % 7) as f32).collect();
    let gamma: Vec<f32> = (0..n).map(|_| rng.f32() + 0.5).collect();
    let dy: Vec<f32> = (0..rows * n).map(|_| rng.f32() - 0.5).collect();
    fn run<B: RmsNormOp>(x: &[f32], gamma: &[f32], dy: &[f32], [rows, n]: [usize; 2], device: &B::Device) -> [Vec<f32>; 3] {
        let raw = |v: &[f32]| tensor::<B, 2>(v, [rows, n], device).into_primitive().tensor();
        let gamma = || tensor::<B, 1>(gamma, [n], device).into_primitive().tensor();
        let (y, r) = B::rms_norm_rows(raw(x), gamma(), 1e-5);
        let (dx, dgamma) = B::rms_norm_backward(raw(x), gamma(), r, raw(dy));
        let host2 = |t| host(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(t)));
        [host2(y), host2(dx), host(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(dgamma)))]
    }
    let expected = run::<R>(&x, &gamma, &dy, [rows, n], reference);
    let actual = run::<T>(&x, &gamma, &dy, [rows, n], tested);
    named_gaps(&format!("RMSNorm [{rows}, {n}]"), &["output", "dx", "dgamma"], &expected, &actual)
}

/// The gradients' sums of squares (`squared_norms`, for clipping) on both backends, for
/// vectors of several lengths.
pub fn check_squared_norms<R: SquaredNorms, T: SquaredNorms>(lengths: &[usize], reference: &R::Device, tested: &T::Device) -> Vec<OpGap> {
    let mut rng = fastrand::Rng::with_seed(43);
    let vectors: Vec<Vec<f32>> = lengths.iter().map(|&n| (0..n).map(|_| rng.f32() - 0.5).collect()).collect();
    fn run<B: SquaredNorms>(vectors: &[Vec<f32>], device: &B::Device) -> Vec<f32> {
        let raw = vectors.iter().map(|v| tensor::<B, 1>(v, [v.len()], device).into_primitive().tensor()).collect();
        host(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::squared_norms(raw))))
    }
    let (expected, actual) = (run::<R>(&vectors, reference), run::<T>(&vectors, tested));
    vec![OpGap::new(format!("sums of squares of {} vectors", lengths.len()), &expected, &actual)]
}

/// The first decoder layer taken apart, on both backends for the same ids (`[batch, seq]`):
/// the gap after each stage (every stage computed from the ids again, as the model chains
/// it), then the final hidden states and the logits, so that a whole-model disagreement
/// points at the first stage that shows it.
pub fn trace_first_layer<R: ModelBackend, T: ModelBackend>(reference: &Llama<R>, tested: &Llama<T>, ids: &[i64], shape: [usize; 2]) -> Vec<OpGap> {
    let expected = stages(reference, ids, shape);
    stages(tested, ids, shape).into_iter().zip(expected).map(|((op, t), (_, r))| OpGap::new(op.into(), &r, &t)).collect()
}

fn stages<B: ModelBackend>(m: &Llama<B>, ids: &[i64], [b, t]: [usize; 2]) -> Vec<(&'static str, Vec<f32>)> {
    let device = m.embed_tokens.weight.val().device();
    let ids = || Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [b, t]), &device);
    let at = m.causal_positions(t, &device);
    let layer = &m.layers[0];
    let attn = &layer.self_attn;
    let embedded = || m.embed_tokens.forward(ids());
    let normed = || crate::model::rms_norm::apply_rms_norm(&layer.input_layernorm, embedded());
    let projected = || attn.project(normed(), &at);
    vec![
        ("embedding", host(embedded())),
        ("input norm", host(normed())),
        ("q projection", host(attn.q_proj.forward(normed()))),
        ("q by head, rope", host(projected().0)),
        ("k by head, rope", host(projected().1)),
        ("v by head", host(projected().2)),
        ("k heads repeated (gqa)", host(attn.repeat_kv(projected().1))),
        (
            "causal attention",
            host({
                let (q, k, v) = projected();
                attn.attend(q, k, v, None)
            }),
        ),
        ("attention block", host(attn.forward(normed(), &at, None))),
        ("layer 0", host(layer.forward(embedded(), &at, None))),
        ("final hidden states", host(m.hidden(ids()))),
        ("logits", host(m.forward(ids()))),
    ]
}

/// Whole-model agreement: the logits of a fixed batch, then batched, left-padded greedy
/// generation with the cache at 6 and 256 rows. Reports one line per check as it
/// finishes; every check runs, and an error names the first that failed (logits beyond a
/// relative gap of 1e-3, or a row generated differently where the reference's choice led
/// the other token by more than that: closer, it is a near-tie rounding decides).
pub fn compare_models<R: ModelBackend, T: ModelBackend>(reference: &Llama<R>, tested: &Llama<T>, mut report: impl FnMut(&str)) -> Result<()> {
    let vocab = reference.config.vocab_size as i64;
    let ids: Vec<i64> = (0..2 * 24).map(|i| (i * 7919 + 3) % vocab).collect();
    let logits = |ids: Vec<i64>| -> (Vec<f32>, Vec<f32>) {
        let r = reference.forward(Tensor::from_data(TensorData::new(ids.clone(), [2, 24]), &reference.embed_tokens.weight.val().device()));
        let t = tested.forward(Tensor::from_data(TensorData::new(ids, [2, 24]), &tested.embed_tokens.weight.val().device()));
        (host(r), host(t))
    };
    let (a, b) = logits(ids);
    let gap = relative_gap(&a, &b);
    report(&format!("logits of 2 x 24 tokens: max relative gap {gap:.3e} over {} values", a.len()));
    // Every check runs (a logits gap beyond the tolerance may still generate the same
    // tokens); the first failure is the verdict.
    let mut failures = Vec::new();
    if gap > TOLERANCE {
        failures.push(format!("the logits differ by {gap:.3e}: the backends disagree"));
    }
    let sampling = Sampling { max_new_tokens: 12, temperature: 0.0, top_p: 1.0, seed: 0, eos: None };
    for rows in [6u32, 256] {
        let prompts: Vec<Vec<u32>> = (0..rows).map(|r| (0..3 + (r % 7) * 15).map(|i| ((r * 31 + i * 17 + 1) as i64 % vocab) as u32).collect()).collect();
        let expected = generate(reference, &prompts, &sampling, false)?.tokens;
        let got = generate(tested, &prompts, &sampling, false)?.tokens;
        let same = expected.iter().zip(&got).filter(|(a, b)| a == b).count();
        // A row that parts where the reference's top two logits were within the tolerance
        // is a near-tie that rounding decides, not a disagreement. The reference's logits
        // there come from one forward pass of that row's prompt and common prefix (only
        // the rows that part; keeping every step's logits of 256 rows would take gigabytes
        // at a 128k vocabulary).
        let parted: Vec<(usize, f32)> = expected
            .iter()
            .zip(&got)
            .enumerate()
            .filter_map(|(row, (e, g))| {
                let at = e.iter().zip(g).position(|(a, b)| a != b)?;
                let logits = next_token_logits(reference, prompts[row].iter().chain(&e[..at]));
                Some((row, tie_gap(&logits, e[at], g[at])))
            })
            .collect();
        let near_ties = parted.iter().filter(|(_, gap)| *gap <= TOLERANCE).count();
        report(&format!(
            "greedy generation of {rows} left-padded prompts: {same} rows equal, {near_ties} parted at a near-tie (top two logits within {TOLERANCE:.0e} relative)"
        ));
        if let Some(&(row, gap)) = parted.iter().find(|(_, gap)| *gap > TOLERANCE) {
            failures.push(format!(
                "{rows} rows generated: row {row} differs where the reference's choice led by {gap:.3e} (relative): {:?} (reference) vs {:?}",
                expected[row], got[row]
            ));
        }
    }
    match failures.into_iter().next() {
        Some(first) => anyhow::bail!(first),
        None => Ok(()),
    }
}

/// The model's logits for the token after `ids` (one row, no cache).
fn next_token_logits<'a, B: ModelBackend>(model: &Llama<B>, ids: impl Iterator<Item = &'a u32>) -> Vec<f32> {
    let ids: Vec<i64> = ids.map(|&id| id as i64).collect();
    let len = ids.len();
    host(model.forward_range(Tensor::from_data(TensorData::new(ids, [1, len]), &model.embed_tokens.weight.val().device()), len - 1, 1))
}

/// How far the reference's choice `chosen` led the tested backend's `other` in the
/// reference's `logits`, relative to their largest magnitude (infinite for a token out of
/// range).
fn tie_gap(logits: &[f32], chosen: u32, other: u32) -> f32 {
    let scale = logits.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    match (logits.get(chosen as usize), logits.get(other as usize)) {
        (Some(a), Some(b)) => (a - b).abs() / scale,
        _ => f32::INFINITY,
    }
}

/// `max |a - t| / max |a|` (0 when both are empty; infinite when the lengths differ).
pub fn relative_gap(a: &[f32], t: &[f32]) -> f32 {
    if a.len() != t.len() {
        return f32::INFINITY;
    }
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    a.iter().zip(t).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn tensor<B: Backend, const D: usize>(data: &[f32], shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 values")
}

fn run_repeat_kv<B: Backend>(x: &[f32], [b, n, t, d]: [usize; 4], heads: usize, device: &B::Device) -> Vec<f32> {
    let rep = heads / n;
    host(tensor::<B, 4>(x, [b, n, t, d], device).unsqueeze_dim::<5>(2).expand([b, n, rep, t, d]).reshape([b, n * rep, t, d]))
}

#[allow(clippy::too_many_arguments)]
fn run_attention<B: Backend>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[bool]>,
    s: OpShapes,
    tq: usize,
    keys: usize,
    fused: bool,
    device: &B::Device,
) -> Vec<f32> {
    let OpShapes { batch: b, heads: h, kv_heads: kv, head_dim: d, capacity, .. } = s;
    let rep = h / kv;
    let expand = |x: &[f32]| {
        tensor::<B, 4>(x, [b, kv, capacity, d], device).narrow(2, 0, keys).unsqueeze_dim::<5>(2).expand([b, kv, rep, keys, d]).reshape([b, h, keys, d])
    };
    let q = tensor::<B, 4>(&q[..b * h * tq * d], [b, h, tq, d], device);
    let out = match mask {
        None => attention(q, expand(k), expand(v), None, None, attention_options(d, true, fused)),
        Some(m) => {
            let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(m.to_vec(), [b, 1, tq, keys]), device).expand([b, h, tq, keys]);
            attention(q, expand(k), expand(v), Some(mask), None, attention_options(d, false, fused))
        }
    };
    host(out)
}

fn run_cache_update<B: Backend>(cache: &[f32], new: &[f32], s: OpShapes, device: &B::Device) -> Vec<f32> {
    let OpShapes { batch: b, kv_heads: kv, head_dim: d, prompt, capacity, .. } = s;
    // The cache holds the prompt; the new token goes at position `prompt`.
    let filled = tensor::<B, 4>(cache, [b, kv, capacity, d], device).narrow(2, 0, prompt);
    let zeros = |n: usize| Tensor::<B, 4>::zeros([b, kv, n, d], device);
    let old = Tensor::cat(vec![filled, zeros(capacity - prompt)], 2);
    let placed = Tensor::cat(vec![zeros(prompt), tensor::<B, 4>(new, [b, kv, 1, d], device), zeros(capacity - prompt - 1)], 2);
    host(old + placed)
}

fn run_last_argmax<B: Backend>(hidden: &[f32], head: &[f32], s: OpShapes, device: &B::Device) -> Vec<f32> {
    let OpShapes { batch: b, heads, head_dim, prompt, vocab, .. } = s;
    let width = heads * head_dim;
    let last = tensor::<B, 3>(hidden, [b, prompt, width], device).narrow(1, prompt - 1, 1);
    let weight = tensor::<B, 2>(head, [vocab, width], device);
    let logits = burn::tensor::module::linear(last, weight.transpose(), None);
    host(logits.reshape([b, vocab]).argmax(1).float())
}

fn run_argmax<B: Backend>(logits: &[f32], shape: [usize; 2], device: &B::Device) -> Vec<f32> {
    host(tensor::<B, 2>(logits, shape, device).argmax(1).float())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_agrees_with_itself_and_moves_the_parameter() {
        let gaps = check_adamw::<crate::Cpu, crate::Cpu>([7, 5], &Default::default(), &Default::default());
        assert_eq!(gaps.len(), 3);
        assert!(gaps.iter().all(|g| g.gap == 0.0), "{gaps:?}");
    }

    #[test]
    fn matmul_agrees_with_itself_in_every_layout() {
        let gaps = check_matmul::<crate::Cpu, crate::Cpu>([6, 4, 3], &Default::default(), &Default::default());
        assert_eq!(gaps.len(), 4);
        assert!(gaps.iter().all(|g| g.gap == 0.0), "{gaps:?}");
    }

    #[test]
    fn a_near_tie_is_told_from_a_clear_choice() {
        let logits = [4.0, 3.9999, -8.0, 1.0];
        assert!(tie_gap(&logits, 0, 1) <= TOLERANCE, "0.0001 of 8 apart");
        assert!((tie_gap(&logits, 0, 3) - 3.0 / 8.0).abs() < 1e-6);
        assert!(tie_gap(&logits, 0, 9).is_infinite(), "a token out of the vocabulary");
    }

    #[test]
    fn squared_norms_agree_with_themselves_and_are_sums_of_squares() {
        let gaps = check_squared_norms::<crate::Cpu, crate::Cpu>(&[3, 1, 17], &Default::default(), &Default::default());
        assert_eq!(gaps[0].gap, 0.0);
        let v = |x: Vec<f32>| Tensor::<crate::Cpu, 1>::from_data(TensorData::new(x.clone(), [x.len()]), &Default::default()).into_primitive().tensor();
        let sums = host(Tensor::<crate::Cpu, 1>::from_primitive(TensorPrimitive::Float(crate::Cpu::squared_norms(vec![v(vec![3.0, 4.0]), v(vec![-2.0])]))));
        assert_eq!(sums, vec![25.0, 4.0]);
    }

    #[test]
    fn rms_norm_agrees_with_itself() {
        let gaps = check_rms_norm::<crate::Cpu, crate::Cpu>([5, 12], &Default::default(), &Default::default());
        assert_eq!(gaps.len(), 3);
        assert!(gaps.iter().all(|g| g.gap == 0.0), "{gaps:?}");
    }

    #[test]
    fn cross_entropy_agrees_with_itself() {
        let gaps = check_cross_entropy::<crate::Cpu, crate::Cpu>([5, 13], &Default::default(), &Default::default());
        assert_eq!(gaps.len(), 2);
        assert!(gaps.iter().all(|g| g.gap == 0.0), "{gaps:?}");
    }

    #[test]
    fn rotary_heads_and_swiglu_agree_with_themselves() {
        let gaps = check_rotary_heads::<crate::Cpu, crate::Cpu>([2, 5, 3, 8], &Default::default(), &Default::default());
        assert_eq!(gaps.len(), 4);
        let gaps = gaps.into_iter().chain(check_swiglu::<crate::Cpu, crate::Cpu>([3, 7], &Default::default(), &Default::default())).collect::<Vec<_>>();
        assert!(gaps.iter().all(|g| g.gap == 0.0), "{gaps:?}");
    }

    #[test]
    fn attention_agrees_with_itself_for_one_and_two_sequences() {
        for shape in [[1, 3, 3, 9, 4], [2, 4, 2, 9, 4]] {
            let gaps = check_attention::<crate::Cpu, crate::Cpu>(shape, DType::F32, &Default::default(), &Default::default());
            assert_eq!(gaps.len(), 4);
            assert!(gaps.iter().all(|g| g.gap == 0.0), "{gaps:?}");
        }
    }

    #[test]
    fn a_backend_agrees_with_itself_and_gaps_are_relative() {
        let s = OpShapes { batch: 3, heads: 4, kv_heads: 2, head_dim: 8, prompt: 5, capacity: 9, vocab: 11 };
        let gaps = check_ops::<crate::Cpu, crate::Cpu>(s, &Default::default(), &Default::default());
        assert_eq!(gaps.len(), 10);
        for g in &gaps {
            assert!(g.gap == 0.0, "{g:?}");
        }
        assert_eq!(relative_gap(&[1.0, -2.0], &[1.0, -1.0]), 0.5);
        assert!(relative_gap(&[1.0], &[1.0, 2.0]).is_infinite());
    }

    #[test]
    fn models_compare_equal_to_themselves_and_unequal_to_another() {
        let device = Default::default();
        let config = crate::model::tests::tiny_config();
        let model = Llama::<crate::Cpu>::random(&config, &device);
        let mut lines = Vec::new();
        compare_models(&model, &model, |l| lines.push(l.to_string())).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[2].contains("256 rows equal"), "{lines:?}");
        let trace = trace_first_layer(&model, &model, &[1, 5, 9, 2, 7, 3], [2, 3]);
        assert_eq!(trace.len(), 12);
        assert!(trace.iter().all(|g| g.gap == 0.0), "{trace:?}");
        let other = Llama::<crate::Cpu>::random(&config, &device);
        let err = compare_models(&model, &other, |_| ()).unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
        let trace = trace_first_layer(&model, &other, &[1, 5, 9, 2, 7, 3], [2, 3]);
        assert!(trace.iter().all(|g| g.gap > 0.0), "{trace:?}");
    }
}
