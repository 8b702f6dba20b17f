//! A decoding step's attention against a reference backend. `trainer compare-backends` runs
//! it with the CPU as the reference and CUDA as the backend under test; the tests here run
//! it CPU against CPU.

use burn::tensor::DType;

use super::{DecodeAttention, decode_attention};
use crate::ops::check::{BF16_TOLERANCE, OpGap, TOLERANCE, host, named_gaps, tensor};
use crate::ops::kernels::Kernels;
use crate::ops::kv_write::Placement;

/// `decode_attention` on both backends for `rows` rows of queries over random caches
/// `[blocks, kv_heads, block, d]`, each row holding `per_row` scattered blocks, at
/// scattered lengths (one row at its last position, one seeing only its new key, one
/// seeing all its positions): the output and both caches after the step. The tested
/// backend runs in `dtype` (the reference in f32, on the same values rounded to `dtype`).
pub fn check_decode_attention<R: DecodeAttention, T: DecodeAttention>(
    [rows, heads, kv_heads, d]: [usize; 4],
    [blocks, block, per_row]: [usize; 3],
    dtype: DType,
    reference: &R::Device,
    tested: &T::Device,
) -> Vec<OpGap> {
    assert!(rows * per_row <= blocks, "{rows} rows of {per_row} blocks do not fit {blocks} blocks");
    let mut rng = fastrand::Rng::with_seed(47);
    let mut floats = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.f32() * 4.0 - 2.0).collect() };
    let (q, new_k, new_v) = (floats(rows * heads * d), floats(rows * kv_heads * d), floats(rows * kv_heads * d));
    let (k_cache, v_cache) = (floats(blocks * kv_heads * block * d), floats(blocks * kv_heads * block * d));
    let mut order: Vec<usize> = (0..blocks).collect();
    rng.shuffle(&mut order);
    let tables: Vec<Vec<usize>> = order.chunks(per_row).take(rows).map(<[usize]>::to_vec).collect();
    let capacity = per_row * block;
    let starts: Vec<usize> = (0..rows).map(|i| if i == 0 { capacity - 1 } else { rng.usize(0..capacity) }).collect();
    let firsts: Vec<usize> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            if i == 1 {
                s
            } else if i == 2 {
                0
            } else {
                rng.usize(0..=s)
            }
        })
        .collect();
    let placement = (tables, starts, firsts);
    let shapes = [[rows, heads, 1, d], [rows, kv_heads, 1, d], [blocks, kv_heads, block, d]];
    let inputs = [q, new_k, new_v, k_cache, v_cache];
    fn run<B: DecodeAttention>(
        inputs: &[Vec<f32>; 5],
        shapes: [[usize; 4]; 3],
        at: &(Vec<Vec<usize>>, Vec<usize>, Vec<usize>),
        dtype: DType,
        device: &B::Device,
    ) -> [Vec<f32>; 3] {
        let [q, k, v, k_cache, v_cache] = inputs;
        let make = |x: &[f32], shape: [usize; 4]| tensor::<B, 4>(x, shape, device).cast(dtype);
        let at = Placement::seeing(at.0.clone(), at.1.clone(), at.2.clone(), device);
        let scale = 1.0 / (shapes[0][3] as f64).sqrt();
        let (y, [k_after, v_after]) = decode_attention(
            make(q, shapes[0]),
            [make(k, shapes[1]), make(v, shapes[1])],
            [make(k_cache, shapes[2]), make(v_cache, shapes[2])],
            &at,
            scale,
            Kernels::default(),
        );
        [y, k_after, v_after].map(|x| host(x.cast(DType::F32)))
    }
    // Both backends read the values rounded to the tested dtype.
    let rounded: [Vec<f32>; 5] = inputs.clone().map(|x| x.into_iter().map(|v| round_to(v, dtype)).collect());
    let expected = run::<R>(&rounded, shapes, &placement, DType::F32, reference);
    let actual = run::<T>(&inputs, shapes, &placement, dtype, tested);
    let tolerance = if dtype == DType::F32 { TOLERANCE } else { BF16_TOLERANCE };
    let what = format!("decode attention [{rows}, {heads} ({kv_heads} kv), {d}] over {per_row} of [{blocks}, {block}] {dtype:?}");
    named_gaps(&what, &["output", "keys' cache", "values' cache"], &expected, &actual).into_iter().map(|g| OpGap { tolerance, ..g }).collect()
}

/// `x` rounded to `dtype` (bf16: to nearest even of its upper 16 bits; f32 as it is).
fn round_to(x: f32, dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        DType::F16 => half::f16::from_f32(x).to_f32(),
        _ => x,
    }
}
