//! RMSNorm (`rms_norm`) as one CUDA kernel each way for burn's CUDA backend without
//! fusion: one plane (32 lanes) per row. Forward: the row's sum of squares, then `y = x · r
//! · γ` and `r`. Backward: the row's `Σ dy γ x`, then `dx` and, into an f32 buffer, `dy ⊙ x
//! · r`, whose sum over rows (burn's `sum_dim`) is `dγ`. Values are read in their dtype
//! and computed in f32.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::{empty_like, has_planes, plane_per_row};
use crate::ops::rms_norm::{RmsNormOp, composed_rms_norm_backward, composed_rms_norm_rows};

#[cube(launch)]
fn rms_norm_kernel<E: Float>(
    x: &Tensor<E>,
    gamma: &Tensor<E>,
    y: &mut Tensor<E>,
    r: &mut Tensor<f32>,
    rows: u32,
    n: u32,
    epsilon: f32,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y;
    if row >= rows {
        terminate!();
    }
    let start = row as usize * n as usize;
    let mut squares = f32::new(0.0);
    for j in range_stepped(UNIT_POS_X, n, CUBE_DIM_X) {
        let v = f32::cast_from(x[start + j as usize]);
        squares += v * v;
    }
    let inverse = f32::new(1.0) / (plane_sum(squares) / f32::cast_from(n) + epsilon).sqrt();
    for j in range_stepped(UNIT_POS_X, n, CUBE_DIM_X) {
        let at = start + j as usize;
        y[at] = E::cast_from(f32::cast_from(x[at]) * inverse * f32::cast_from(gamma[j as usize]));
    }
    if UNIT_POS_X == 0 {
        r[row as usize] = inverse;
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn rms_norm_backward_kernel<E: Float>(
    x: &Tensor<E>,
    gamma: &Tensor<E>,
    r: &Tensor<f32>,
    dy: &Tensor<E>,
    dx: &mut Tensor<E>,
    dgamma_rows: &mut Tensor<f32>,
    rows: u32,
    n: u32,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y;
    if row >= rows {
        terminate!();
    }
    let start = row as usize * n as usize;
    let inverse = r[row as usize];
    let mut dot = f32::new(0.0);
    for j in range_stepped(UNIT_POS_X, n, CUBE_DIM_X) {
        let at = start + j as usize;
        dot += f32::cast_from(dy[at]) * f32::cast_from(gamma[j as usize]) * f32::cast_from(x[at]);
    }
    let k = inverse * inverse * inverse * plane_sum(dot) / f32::cast_from(n);
    for j in range_stepped(UNIT_POS_X, n, CUBE_DIM_X) {
        let at = start + j as usize;
        let (xv, d) = (f32::cast_from(x[at]), f32::cast_from(dy[at]));
        dx[at] = E::cast_from(inverse * f32::cast_from(gamma[j as usize]) * d - xv * k);
        dgamma_rows[at] = d * xv * inverse;
    }
}

/// `[rows, n]` of contiguous `x` with `gamma` `[n]` of its dtype, as the kernels take them,
/// or `None` when they do not.
fn kernel_shape(x: &CubeTensor<CudaRuntime>, gamma: &CubeTensor<CudaRuntime>) -> Option<[u32; 2]> {
    let [rows, n] = x.meta.shape[..] else { return None };
    let dtype = matches!(x.dtype, DType::F32 | DType::BF16 | DType::F16) && gamma.dtype == x.dtype && gamma.meta.shape[..] == [n];
    let planes = has_planes(x);
    let fits = rows > 0 && n > 0 && rows * n < u32::MAX as usize;
    (dtype && planes && fits).then_some([rows as u32, n as u32])
}

impl RmsNormOp for CudaPlain {
    const OWN_NORM: bool = true;
    const OWN_ADD_NORM: bool = true;

    fn add_rms_norm(
        x: FloatTensor<Self>,
        delta: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
        dtype: FloatDType,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        super::residual_kernel::add_rms_norm(x, delta, gamma, epsilon, dtype)
    }

    fn rms_norm_rows(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
        let Some([rows, n]) = kernel_shape(&x, &gamma) else {
            return composed_rms_norm_rows::<Self>(x, gamma, epsilon);
        };
        let (y, r) = (empty_like(&x, vec![rows as usize, n as usize], x.dtype), empty_like(&x, vec![rows as usize], DType::F32));
        let (count, dim) = plane_per_row(rows);
        let dtype = x.dtype;
        rms_norm_kernel::launch::<CudaRuntime>(
            &x.client.clone(),
            count,
            dim,
            x.into_tensor_arg(),
            gamma.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            r.clone().into_tensor_arg(),
            rows,
            n,
            epsilon as f32,
            dtype.into(),
        );
        (y, r)
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        r: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [x, gamma, r, dy] = [x, gamma, r, dy].map(into_contiguous);
        let matching = dy.dtype == x.dtype && dy.meta.shape == x.meta.shape && r.dtype == DType::F32;
        let Some([rows, n]) = kernel_shape(&x, &gamma).filter(|_| matching) else {
            return composed_rms_norm_backward::<Self>(x, gamma, r, dy);
        };
        let (dx, dgamma_rows) = (empty_like(&x, vec![rows as usize, n as usize], x.dtype), empty_like(&x, vec![rows as usize, n as usize], DType::F32));
        let (count, dim) = plane_per_row(rows);
        let (dtype, gamma_dtype) = (x.dtype, gamma.dtype);
        rms_norm_backward_kernel::launch::<CudaRuntime>(
            &x.client.clone(),
            count,
            dim,
            x.into_tensor_arg(),
            gamma.into_tensor_arg(),
            r.into_tensor_arg(),
            dy.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            dgamma_rows.clone().into_tensor_arg(),
            rows,
            n,
            dtype.into(),
        );
        let dgamma_rows = burn::tensor::Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(dgamma_rows));
        let dgamma = dgamma_rows.sum_dim(0).reshape([n as usize]).cast(FloatDType::from(gamma_dtype));
        (dx, dgamma.into_primitive().tensor())
    }
}
