//! The entropy op (`entropy`) as two CUDA kernels for burn's CUDA backend without fusion.
//!
//! Forward: one cube of 256 units per row of logits; each unit walks its share of the
//! vocabulary once, keeping a running max, the sum of exponentials shifted by it and the
//! same sum weighted by the shifted logit (the online softmax; a new max rescales both),
//! planes combine their units', and the cube combines its planes' through shared memory:
//! `lse = max + ln sum`, `H = ln sum − weighted / sum`. Backward: one unit per logit, `−p (x − lse + H) · dH` with `p = exp(x −
//! lse)`, written in the logits' dtype. Logits are read in their dtype (f32, bf16, f16) and
//! computed in f32.

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::{PLANE, empty_like, largest, logits_rows};
use crate::ops::entropy::{Entropy, composed_entropy_backward, composed_entropy_rows};

/// Planes per cube of the forward kernel (one cube per row).
const PLANES: u32 = 8;
/// Units per cube of the backward kernel.
const UNITS: u32 = 256;

/// `entropy[row]` of `softmax(logits[row])` and `lse[row]`, one cube per row.
#[cube(launch)]
fn entropy_kernel<E: Float>(logits: &Tensor<E>, entropy: &mut Tensor<f32>, lse: &mut Tensor<f32>, vocab: u32, #[define(E)] _dtype: StorageType) {
    let row = CUBE_POS_X as usize;
    let start = row * vocab as usize;
    let unit = UNIT_POS_Y * CUBE_DIM_X + UNIT_POS_X;
    let mut max = f32::new(-3.0e38);
    let mut sum = f32::new(0.0);
    let mut weighted = f32::new(0.0);
    for j in range_stepped(unit, vocab, CUBE_DIM_X * CUBE_DIM_Y) {
        let x = f32::cast_from(logits[start + j as usize]);
        if x > max {
            // The terms so far, shifted by the new max: d becomes d + (max − x).
            let scale = (max - x).exp();
            weighted = (weighted + sum * (max - x)) * scale;
            sum = sum * scale + f32::new(1.0);
            max = x;
        } else {
            let d = x - max;
            let e = d.exp();
            sum += e;
            weighted += e * d;
        }
    }
    let plane_max_value = plane_max(max);
    let shift = max - plane_max_value;
    let scale = shift.exp();
    let plane_sum_value = plane_sum(sum * scale);
    let plane_weighted_value = plane_sum((weighted + sum * shift) * scale);
    let mut maxes = SharedMemory::<f32>::new(PLANES as usize);
    let mut sums = SharedMemory::<f32>::new(PLANES as usize);
    let mut weighteds = SharedMemory::<f32>::new(PLANES as usize);
    if UNIT_POS_X == 0 {
        maxes[UNIT_POS_Y as usize] = plane_max_value;
        sums[UNIT_POS_Y as usize] = plane_sum_value;
        weighteds[UNIT_POS_Y as usize] = plane_weighted_value;
    }
    sync_cube();
    if unit == 0 {
        let top = largest(&maxes, CUBE_DIM_Y);
        let mut total = f32::new(0.0);
        let mut total_weighted = f32::new(0.0);
        for i in 0..CUBE_DIM_Y {
            let shift = maxes[i as usize] - top;
            let s = shift.exp();
            total += sums[i as usize] * s;
            total_weighted += (weighteds[i as usize] + sums[i as usize] * shift) * s;
        }
        let log_sum = total.ln();
        lse[row] = top + log_sum;
        entropy[row] = log_sum - total_weighted / total;
    }
}

/// `grad[row, j] = −p (logits[row, j] − lse[row] + entropy[row]) · dentropy[row]` with `p =
/// exp(logits[row, j] − lse[row])`; cubes along x are rows, along y chunks of the vocabulary.
#[cube(launch)]
fn entropy_backward_kernel<E: Float>(
    logits: &Tensor<E>,
    lse: &Tensor<f32>,
    entropy: &Tensor<f32>,
    dentropy: &Tensor<f32>,
    grad: &mut Tensor<E>,
    vocab: u32,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS_X as usize;
    let j = CUBE_POS_Y * CUBE_DIM_X + UNIT_POS_X;
    if j >= vocab {
        terminate!();
    }
    let at = row * vocab as usize + j as usize;
    let log_p = f32::cast_from(logits[at]) - lse[row];
    grad[at] = E::cast_from(-log_p.exp() * (log_p + entropy[row]) * dentropy[row]);
}

impl Entropy for CudaPlain {
    const OWN_ENTROPY: bool = true;

    fn entropy_rows(logits: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let logits = into_contiguous(logits);
        let Some([rows, vocab]) = logits_rows(&logits, UNITS) else {
            return composed_entropy_rows::<Self>(logits);
        };
        let rows_of_f32 = || empty_like(&logits, vec![rows as usize], DType::F32);
        let (entropy, lse) = (rows_of_f32(), rows_of_f32());
        let dtype = logits.dtype.into();
        entropy_kernel::launch::<CudaRuntime>(
            &logits.client.clone(),
            CubeCount::new_1d(rows),
            CubeDim::new_2d(PLANE, PLANES),
            logits.into_tensor_arg(),
            entropy.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            vocab,
            dtype,
        );
        (entropy, lse)
    }

    fn entropy_backward(logits: FloatTensor<Self>, lse: FloatTensor<Self>, entropy: FloatTensor<Self>, dentropy: FloatTensor<Self>) -> FloatTensor<Self> {
        let [logits, lse, entropy, dentropy] = [logits, lse, entropy, dentropy].map(into_contiguous);
        let is_f32_vector = |t: &CubeTensor<CudaRuntime>| t.dtype == DType::F32 && t.meta.shape.len() == 1;
        let Some([rows, vocab]) = logits_rows(&logits, UNITS).filter(|_| [&lse, &entropy, &dentropy].into_iter().all(is_f32_vector)) else {
            return composed_entropy_backward::<Self>(logits, lse, entropy, dentropy);
        };
        let grad = empty_like(&logits, logits.meta.shape.to_vec(), logits.dtype);
        let dtype = logits.dtype.into();
        entropy_backward_kernel::launch::<CudaRuntime>(
            &logits.client.clone(),
            CubeCount::new_2d(rows, vocab.div_ceil(UNITS)),
            CubeDim::new_1d(UNITS),
            logits.into_tensor_arg(),
            lse.into_tensor_arg(),
            entropy.into_tensor_arg(),
            dentropy.into_tensor_arg(),
            grad.clone().into_tensor_arg(),
            vocab,
            dtype,
        );
        grad
    }
}
