//! The cross-entropy op (`cross_entropy`) as two CUDA kernels for burn's CUDA backend
//! without fusion.
//!
//! Forward: one cube of 256 units per row of logits; each unit walks its share of the
//! vocabulary once, keeping a running max and the sum of exponentials shifted by it (the
//! online softmax), planes combine their units' pairs, and the cube combines its planes'
//! through shared memory. Backward: one unit per logit, `(exp(x − lse) − [j = target]) ·
//! dloss`, written in the logits' dtype. Logits are read in their dtype (f32, bf16, f16)
//! and computed in f32.

use burn::tensor::DType;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cross_entropy::{CrossEntropy, composed_cross_entropy_backward, composed_cross_entropy_rows};
use crate::ops::cuda::plane_rows::{PLANE, empty_like, largest, logits_rows};

/// Planes per cube of the forward kernel (one cube per row).
const PLANES: u32 = 8;
/// Units per cube of the backward kernel.
const UNITS: u32 = 256;

/// `losses[row] = lse[row] − logits[row, target[row]]` and `lse[row]`, one cube per row.
#[cube(launch)]
fn cross_entropy_kernel<E: Float, I: Int>(
    logits: &Tensor<E>,
    targets: &Tensor<I>,
    losses: &mut Tensor<f32>,
    lse: &mut Tensor<f32>,
    vocab: u32,
    #[define(E, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS_X as usize;
    let start = row * vocab as usize;
    let unit = UNIT_POS_Y * CUBE_DIM_X + UNIT_POS_X;
    let mut max = f32::new(-3.0e38);
    let mut sum = f32::new(0.0);
    for j in range_stepped(unit, vocab, CUBE_DIM_X * CUBE_DIM_Y) {
        let x = f32::cast_from(logits[start + j as usize]);
        if x > max {
            sum = sum * (max - x).exp() + f32::new(1.0);
            max = x;
        } else {
            sum += (x - max).exp();
        }
    }
    let plane_max_value = plane_max(max);
    let plane_sum_value = plane_sum(sum * (max - plane_max_value).exp());
    let mut maxes = SharedMemory::<f32>::new(PLANES as usize);
    let mut sums = SharedMemory::<f32>::new(PLANES as usize);
    if UNIT_POS_X == 0 {
        maxes[UNIT_POS_Y as usize] = plane_max_value;
        sums[UNIT_POS_Y as usize] = plane_sum_value;
    }
    sync_cube();
    if unit == 0 {
        let top = largest(&maxes, CUBE_DIM_Y);
        let mut total = f32::new(0.0);
        for i in 0..CUBE_DIM_Y {
            total += sums[i as usize] * (maxes[i as usize] - top).exp();
        }
        let log_sum = top + total.ln();
        let target = u32::cast_from(targets[row]) as usize;
        lse[row] = log_sum;
        losses[row] = log_sum - f32::cast_from(logits[start + target]);
    }
}

/// `grad[row, j] = (exp(logits[row, j] − lse[row]) − [j = target[row]]) · dloss[row]`; cubes
/// along x are rows, along y chunks of the vocabulary.
#[cube(launch)]
fn cross_entropy_backward_kernel<E: Float, I: Int>(
    logits: &Tensor<E>,
    targets: &Tensor<I>,
    lse: &Tensor<f32>,
    dloss: &Tensor<f32>,
    grad: &mut Tensor<E>,
    vocab: u32,
    #[define(E, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS_X as usize;
    let j = CUBE_POS_Y * CUBE_DIM_X + UNIT_POS_X;
    if j >= vocab {
        terminate!();
    }
    let at = row * vocab as usize + j as usize;
    let mut g = (f32::cast_from(logits[at]) - lse[row]).exp();
    if j == u32::cast_from(targets[row]) {
        g -= f32::new(1.0);
    }
    grad[at] = E::cast_from(g * dloss[row]);
}

fn f32_rows(like: &CubeTensor<CudaRuntime>, rows: u32) -> CubeTensor<CudaRuntime> {
    empty_like(like, vec![rows as usize], DType::F32)
}

impl CrossEntropy for CudaPlain {
    const OWN_LOSS: bool = true;

    fn cross_entropy_rows(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
        let Some([rows, vocab]) = logits_rows(&logits, UNITS) else {
            return composed_cross_entropy_rows::<Self>(logits, targets);
        };
        let (losses, lse) = (f32_rows(&logits, rows), f32_rows(&logits, rows));
        let dtypes = [logits.dtype.into(), targets.dtype.into()];
        cross_entropy_kernel::launch::<CudaRuntime>(
            &logits.client.clone(),
            CubeCount::new_1d(rows),
            CubeDim::new_2d(PLANE, PLANES),
            logits.into_tensor_arg(),
            targets.into_tensor_arg(),
            losses.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            vocab,
            dtypes,
        );
        (losses, lse)
    }

    fn cross_entropy_backward(logits: FloatTensor<Self>, targets: IntTensor<Self>, lse: FloatTensor<Self>, dloss: FloatTensor<Self>) -> FloatTensor<Self> {
        let [logits, targets, lse, dloss] = [logits, targets, lse, dloss].map(into_contiguous);
        let is_f32_vector = |t: &CubeTensor<CudaRuntime>| t.dtype == DType::F32 && t.meta.shape.len() == 1;
        let Some([rows, vocab]) = logits_rows(&logits, UNITS).filter(|_| is_f32_vector(&lse) && is_f32_vector(&dloss)) else {
            return composed_cross_entropy_backward::<Self>(logits, targets, lse, dloss);
        };
        let grad = empty_like(&logits, logits.meta.shape.to_vec(), logits.dtype);
        let dtypes = [logits.dtype.into(), targets.dtype.into()];
        cross_entropy_backward_kernel::launch::<CudaRuntime>(
            &logits.client.clone(),
            CubeCount::new_2d(rows, vocab.div_ceil(UNITS)),
            CubeDim::new_1d(UNITS),
            logits.into_tensor_arg(),
            targets.into_tensor_arg(),
            lse.into_tensor_arg(),
            dloss.into_tensor_arg(),
            grad.clone().into_tensor_arg(),
            vocab,
            dtypes,
        );
        grad
    }
}
