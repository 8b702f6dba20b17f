//! The attention op's causal softmax and its backward as one CUDA kernel each (burn's CUDA
//! backend without fusion), on scores laid out as a staircase (`staircase`: each row holds
//! the keys its chunk of queries needs; one chunk of the whole sequence is the plain
//! `[seq, seq]` square).
//!
//! Composed from burn's ops, the softmax over `[batch, heads, seq, seq]` scores is a mask,
//! a max, a shift, an exponential, a sum and a division: six passes over a tensor of 268 MB
//! (bf16, 32 heads of 2048 x 2048) per layer, and its backward three more. Here one plane
//! (32 lanes) owns one row of scores: it reads the row's visible keys (those up to the
//! query's own position) for the max, again for the sum of exponentials (from the cache),
//! and writes the row once, zeros after the query's position. The backward reads `p` and
//! `dp` for the row's dot product and writes `ds = p ⊙ (dp − dot)` once. Values are read
//! in their dtype (f32, bf16, f16), 16 bytes a load where the rows allow it, and computed
//! in f32.

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::ops::attention::staircase::Staircase;
use crate::ops::cuda::plane_rows::{empty_like, has_planes, plane_per_row, vector_size};

/// How many keys row `row` (of `seq` rows a head) holds in a staircase of chunks of
/// `chunk` positions (`Staircase::row`).
#[cube]
fn row_width(row: u32, seq: u32, chunk: u32) -> u32 {
    let mut width = (row % seq / chunk + 1) * chunk;
    if width > seq {
        width = seq;
    }
    width
}

/// Where row `row` of width `width` starts in the heads' staircase of `per_head` elements
/// a head (`Staircase::row`: every chunk before the row's is full).
#[cube]
fn row_start(row: u32, seq: u32, chunk: u32, per_head: u32, width: u32) -> usize {
    let t = row % seq;
    let i = t / chunk;
    let offset = chunk * chunk * (i * (i + 1) / 2) + (t - i * chunk) * width;
    (row / seq) as usize * per_head as usize + offset as usize
}

/// `probabilities[row] = softmax(scores[row][..=query])`, zero after the query up to the
/// row's width; `rows` rows, the query's position being the row's index modulo `seq`. Each
/// lane reads and writes vectors of `N` values (rows start and end on whole vectors).
#[cube(launch)]
fn causal_softmax_kernel<E: Float, N: Size>(
    scores: &Tensor<Vector<E, N>>,
    probabilities: &mut Tensor<Vector<E, N>>,
    rows: u32,
    seq: u32,
    chunk: u32,
    per_head: u32,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y;
    if row >= rows {
        terminate!();
    }
    let size = scores.vector_size();
    let width = row_width(row, seq, chunk);
    let first = row_start(row, seq, chunk, per_head, width) / size;
    let visible = (row % seq + 1) as usize;
    let seen = visible.div_ceil(size) as u32;
    let mut max = f32::new(-3.0e38);
    for j in range_stepped(UNIT_POS_X, seen, CUBE_DIM_X) {
        let x = scores[first + j as usize];
        #[unroll]
        for k in 0..size {
            let e = f32::cast_from(x[k]);
            if j as usize * size + k < visible && e > max {
                max = e;
            }
        }
    }
    let max = plane_max(max);
    let mut sum = f32::new(0.0);
    for j in range_stepped(UNIT_POS_X, seen, CUBE_DIM_X) {
        let x = scores[first + j as usize];
        #[unroll]
        for k in 0..size {
            if j as usize * size + k < visible {
                sum += (f32::cast_from(x[k]) - max).exp();
            }
        }
    }
    let scale = f32::new(1.0) / plane_sum(sum);
    for j in range_stepped(UNIT_POS_X, width / size as u32, CUBE_DIM_X) {
        let x = scores[first + j as usize];
        let mut out = Vector::<E, N>::empty();
        #[unroll]
        for k in 0..size {
            let mut p = f32::new(0.0);
            if j as usize * size + k < visible {
                p = (f32::cast_from(x[k]) - max).exp() * scale;
            }
            out[k] = E::cast_from(p);
        }
        probabilities[first + j as usize] = out;
    }
}

/// `ds[row] = p[row] ⊙ (dp[row] − p[row] · dp[row])` over the row's visible keys, zero
/// after them up to the row's width; vectors of `N` values as in the forward.
#[cube(launch)]
fn causal_softmax_backward_kernel<E: Float, N: Size>(
    p: &Tensor<Vector<E, N>>,
    dp: &Tensor<Vector<E, N>>,
    ds: &mut Tensor<Vector<E, N>>,
    rows: u32,
    seq: u32,
    chunk: u32,
    per_head: u32,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y;
    if row >= rows {
        terminate!();
    }
    let size = p.vector_size();
    let width = row_width(row, seq, chunk);
    let first = row_start(row, seq, chunk, per_head, width) / size;
    let visible = (row % seq + 1) as usize;
    let seen = visible.div_ceil(size) as u32;
    let mut dot = f32::new(0.0);
    for j in range_stepped(UNIT_POS_X, seen, CUBE_DIM_X) {
        let (x, dx) = (p[first + j as usize], dp[first + j as usize]);
        #[unroll]
        for k in 0..size {
            if j as usize * size + k < visible {
                dot += f32::cast_from(x[k]) * f32::cast_from(dx[k]);
            }
        }
    }
    let dot = plane_sum(dot);
    for j in range_stepped(UNIT_POS_X, width / size as u32, CUBE_DIM_X) {
        let (x, dx) = (p[first + j as usize], dp[first + j as usize]);
        let mut out = Vector::<E, N>::empty();
        #[unroll]
        for k in 0..size {
            let mut g = f32::new(0.0);
            if j as usize * size + k < visible {
                g = f32::cast_from(x[k]) * (f32::cast_from(dx[k]) - dot);
            }
            out[k] = E::cast_from(g);
        }
        ds[first + j as usize] = out;
    }
}

/// How a row kernel runs over `heads` heads of scores laid out as `plan` in `dtype`: a
/// plane per row, 16-byte vectors when every row starts and ends on a whole one (sequence
/// and chunk multiples of it), and the kernels' shape arguments.
struct RowLaunch {
    count: CubeCount,
    dim: CubeDim,
    vector: usize,
    rows: u32,
    seq: u32,
    chunk: u32,
    per_head: u32,
}

impl RowLaunch {
    fn new(plan: Staircase, heads: usize, dtype: DType) -> Self {
        let rows = (heads * plan.seq) as u32;
        let (count, dim) = plane_per_row(rows);
        let vector = vector_size(dtype, &[plan.seq, plan.chunk]);
        RowLaunch { count, dim, vector, rows, seq: plan.seq as u32, chunk: plan.chunk as u32, per_head: plan.per_head() as u32 }
    }
}

/// Whether the kernels take `heads` heads of scores laid out as `plan` in the dtype and
/// on the device of `like` (sizes they index, a float dtype, plane operations).
pub(crate) fn kernels_take(like: &CubeTensor<CudaRuntime>, plan: Staircase, heads: usize) -> bool {
    let fits = plan.seq > 0 && heads * plan.per_head() < u32::MAX as usize;
    fits && matches!(like.dtype, DType::F32 | DType::BF16 | DType::F16) && has_planes(like)
}

/// The probabilities of contiguous staircase `scores` of `heads` heads (see `kernels_take`).
pub(crate) fn staircase_softmax(scores: CubeTensor<CudaRuntime>, plan: Staircase, heads: usize) -> CubeTensor<CudaRuntime> {
    let probabilities = empty_like(&scores, scores.meta.shape.to_vec(), scores.dtype);
    let (l, dtype) = (RowLaunch::new(plan, heads, scores.dtype), scores.dtype);
    causal_softmax_kernel::launch::<CudaRuntime>(
        &scores.client.clone(),
        l.count,
        l.dim,
        l.vector,
        scores.into_tensor_arg(),
        probabilities.clone().into_tensor_arg(),
        l.rows,
        l.seq,
        l.chunk,
        l.per_head,
        dtype.into(),
    );
    probabilities
}

/// The scores' gradient from contiguous staircase probabilities `p` and their gradient
/// `dp` (same shape and dtype) of `heads` heads.
pub(crate) fn staircase_softmax_backward(p: CubeTensor<CudaRuntime>, dp: CubeTensor<CudaRuntime>, plan: Staircase, heads: usize) -> CubeTensor<CudaRuntime> {
    assert!(dp.dtype == p.dtype && dp.meta.shape == p.meta.shape, "the probabilities and their gradient differ in shape or dtype");
    let ds = empty_like(&p, p.meta.shape.to_vec(), p.dtype);
    let (l, dtype) = (RowLaunch::new(plan, heads, p.dtype), p.dtype);
    causal_softmax_backward_kernel::launch::<CudaRuntime>(
        &p.client.clone(),
        l.count,
        l.dim,
        l.vector,
        p.into_tensor_arg(),
        dp.into_tensor_arg(),
        ds.clone().into_tensor_arg(),
        l.rows,
        l.seq,
        l.chunk,
        l.per_head,
        dtype.into(),
    );
    ds
}
