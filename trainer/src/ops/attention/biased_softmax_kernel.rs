//! The softmax of attention over a cache (`cached::CachedAttention::biased_softmax`) as one
//! CUDA kernel for burn's CUDA backend without fusion. Composed from burn's ops it is a
//! cast, a broadcast add of the bias, a max, a shift, an exponential, a sum, a division and
//! a cast back: eight launches a layer on every decoding step. Here one plane (32 lanes)
//! owns one row of scores: it reads the row and its query's bias for the max, again for
//! the sum of exponentials, and writes the probabilities once, in the scores' dtype.

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::attention::cached::{CachedAttention, composed_biased_softmax};
use crate::ops::cuda::plane_rows::{empty_like, has_planes, plane_per_row};

/// `probabilities[row] = softmax(scores[row] + bias[its batch, its query])` for `rows` rows
/// of `keys` scores; a batch holds `per_batch` rows, its queries taking turns (`queries`).
#[cube(launch)]
fn biased_softmax_kernel<E: Float>(
    scores: &Tensor<E>,
    bias: &Tensor<f32>,
    probabilities: &mut Tensor<E>,
    rows: u32,
    keys: u32,
    per_batch: u32,
    queries: u32,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y;
    if row >= rows {
        terminate!();
    }
    let first = row as usize * keys as usize;
    let bias_first = ((row / per_batch) * queries + row % queries) as usize * keys as usize;
    let mut max = f32::new(-3.0e38);
    for j in range_stepped(UNIT_POS_X, keys, CUBE_DIM_X) {
        let e = f32::cast_from(scores[first + j as usize]) + bias[bias_first + j as usize];
        if e > max {
            max = e;
        }
    }
    let max = plane_max(max);
    let mut sum = f32::new(0.0);
    for j in range_stepped(UNIT_POS_X, keys, CUBE_DIM_X) {
        sum += (f32::cast_from(scores[first + j as usize]) + bias[bias_first + j as usize] - max).exp();
    }
    let scale = f32::new(1.0) / plane_sum(sum);
    for j in range_stepped(UNIT_POS_X, keys, CUBE_DIM_X) {
        let p = (f32::cast_from(scores[first + j as usize]) + bias[bias_first + j as usize] - max).exp() * scale;
        probabilities[first + j as usize] = E::cast_from(p);
    }
}

impl CachedAttention for CudaPlain {
    fn biased_softmax(scores: FloatTensor<Self>, bias: FloatTensor<Self>, queries: usize) -> FloatTensor<Self> {
        let (scores, bias) = (into_contiguous(scores), into_contiguous(bias));
        let [b, kv_heads, rows, keys] = scores.meta.shape[..] else { unreachable!("cached_attention passes [batch, kv_heads, rows, keys] scores") };
        let dtypes = matches!(scores.dtype, DType::F32 | DType::BF16 | DType::F16) && bias.dtype == DType::F32;
        let total = b * kv_heads * rows;
        if !(dtypes && has_planes(&scores) && total < u32::MAX as usize && scores.meta.shape.iter().product::<usize>() < u32::MAX as usize) {
            return composed_biased_softmax::<Self>(scores, bias, queries);
        }
        let probabilities = empty_like(&scores, scores.meta.shape.to_vec(), scores.dtype);
        let (count, dim) = plane_per_row(total as u32);
        let dtype = scores.dtype.into();
        biased_softmax_kernel::launch::<CudaRuntime>(
            &scores.client.clone(),
            count,
            dim,
            scores.into_tensor_arg(),
            bias.into_tensor_arg(),
            probabilities.clone().into_tensor_arg(),
            total as u32,
            keys as u32,
            (kv_heads * rows) as u32,
            queries as u32,
            dtype,
        );
        probabilities
    }
}
