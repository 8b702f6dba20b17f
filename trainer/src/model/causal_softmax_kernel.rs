//! The attention op's causal softmax and its backward as one CUDA kernel each (burn's CUDA
//! backend without fusion), and the attention op's parts put together for that backend.
//!
//! Composed from burn's ops, the softmax over `[batch, heads, seq, seq]` scores is a mask,
//! a max, a shift, an exponential, a sum and a division: six passes over a tensor of 268 MB
//! (bf16, 32 heads of 2048 x 2048) per layer, and its backward three more. Here one plane
//! (32 lanes) owns one row of scores: it reads the row's visible keys (those up to the
//! query's own position) for the max, again for the sum of exponentials (from the cache),
//! and writes the whole row once, zeros after the query's position. The backward reads `p`
//! and `dp` for the row's dot product and writes `ds = p ⊙ (dp − dot)` once. Values are
//! read in their dtype (f32, bf16, f16) and computed in f32.
//!
//! With gradients, the scores and the products around the softmax are cuBLAS's
//! (`matmul_cublas`), so the attention op is five products and two kernels per layer;
//! without gradients (evaluation) the same forward runs.

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use super::causal_attention::{CausalAttention, composed_causal_softmax, composed_causal_softmax_backward, forward_keeping_probabilities};
use crate::CudaPlain;
use crate::plane_rows::{empty_like, has_planes, plane_per_row};

/// `probabilities[row] = softmax(scores[row][..=query])`, zero after the query; `rows` rows
/// of `keys` scores, the query's position being the row's index modulo `keys`.
#[cube(launch)]
fn causal_softmax_kernel<E: Float>(scores: &Tensor<E>, probabilities: &mut Tensor<E>, rows: u32, keys: u32, #[define(E)] _dtype: StorageType) {
    let row = CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y;
    if row >= rows {
        terminate!();
    }
    let visible = row % keys + 1;
    let start = (row * keys) as usize;
    let mut max = f32::new(-3.0e38);
    for j in range_stepped(UNIT_POS_X, visible, CUBE_DIM_X) {
        let x = f32::cast_from(scores[start + j as usize]);
        if x > max {
            max = x;
        }
    }
    let max = plane_max(max);
    let mut sum = f32::new(0.0);
    for j in range_stepped(UNIT_POS_X, visible, CUBE_DIM_X) {
        sum += (f32::cast_from(scores[start + j as usize]) - max).exp();
    }
    let scale = f32::new(1.0) / plane_sum(sum);
    for j in range_stepped(UNIT_POS_X, keys, CUBE_DIM_X) {
        let mut p = f32::new(0.0);
        if j < visible {
            p = (f32::cast_from(scores[start + j as usize]) - max).exp() * scale;
        }
        probabilities[start + j as usize] = E::cast_from(p);
    }
}

/// `ds[row] = p[row] ⊙ (dp[row] − p[row] · dp[row])` over the row's visible keys, zero after.
#[cube(launch)]
fn causal_softmax_backward_kernel<E: Float>(p: &Tensor<E>, dp: &Tensor<E>, ds: &mut Tensor<E>, rows: u32, keys: u32, #[define(E)] _dtype: StorageType) {
    let row = CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y;
    if row >= rows {
        terminate!();
    }
    let visible = row % keys + 1;
    let start = (row * keys) as usize;
    let mut dot = f32::new(0.0);
    for j in range_stepped(UNIT_POS_X, visible, CUBE_DIM_X) {
        let at = start + j as usize;
        dot += f32::cast_from(p[at]) * f32::cast_from(dp[at]);
    }
    let dot = plane_sum(dot);
    for j in range_stepped(UNIT_POS_X, keys, CUBE_DIM_X) {
        let at = start + j as usize;
        let mut g = f32::new(0.0);
        if j < visible {
            g = f32::cast_from(p[at]) * (f32::cast_from(dp[at]) - dot);
        }
        ds[at] = E::cast_from(g);
    }
}

/// Rows and keys of contiguous `[batch, heads, seq, seq]` scores the kernels take, or `None`
/// when they do not (another dtype, no plane operations, more than `u32` elements).
fn kernel_shape(t: &CubeTensor<CudaRuntime>) -> Option<(u32, u32)> {
    let shape = t.meta.shape();
    let dims: Vec<usize> = (0..shape.num_dims()).map(|i| shape[i]).collect();
    let [b, h, s, keys] = dims[..] else { return None };
    let fits = s == keys && b * h * s * keys < u32::MAX as usize && keys > 0;
    let dtype = matches!(t.dtype, DType::F32 | DType::BF16 | DType::F16);
    let planes = has_planes(t);
    (fits && dtype && planes).then_some(((b * h * s) as u32, keys as u32))
}

fn output_like(t: &CubeTensor<CudaRuntime>) -> CubeTensor<CudaRuntime> {
    empty_like(t, t.meta.shape.to_vec(), t.dtype)
}

impl CausalAttention for CudaPlain {
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        forward_keeping_probabilities::<Self>(q, k, v, scale).0
    }

    fn causal_softmax(scores: FloatTensor<Self>) -> FloatTensor<Self> {
        let scores = into_contiguous(scores);
        let Some((rows, keys)) = kernel_shape(&scores) else {
            return composed_causal_softmax::<Self>(scores);
        };
        let probabilities = output_like(&scores);
        let (count, dim) = plane_per_row(rows);
        let dtype = scores.dtype;
        causal_softmax_kernel::launch::<CudaRuntime>(
            &scores.client.clone(),
            count,
            dim,
            scores.into_tensor_arg(),
            probabilities.clone().into_tensor_arg(),
            rows,
            keys,
            dtype.into(),
        );
        probabilities
    }

    fn causal_softmax_backward(p: FloatTensor<Self>, dp: FloatTensor<Self>) -> FloatTensor<Self> {
        let (p, dp) = (into_contiguous(p), into_contiguous(dp));
        let shape = kernel_shape(&p).filter(|_| dp.dtype == p.dtype && dp.meta.shape() == p.meta.shape());
        let Some((rows, keys)) = shape else {
            return composed_causal_softmax_backward::<Self>(p, dp);
        };
        let ds = output_like(&p);
        let (count, dim) = plane_per_row(rows);
        let dtype = p.dtype;
        causal_softmax_backward_kernel::launch::<CudaRuntime>(
            &p.client.clone(),
            count,
            dim,
            p.into_tensor_arg(),
            dp.into_tensor_arg(),
            ds.clone().into_tensor_arg(),
            rows,
            keys,
            dtype.into(),
        );
        ds
    }
}
