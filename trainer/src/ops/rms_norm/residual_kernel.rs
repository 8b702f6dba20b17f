//! `RmsNormOp::add_rms_norm` as one CUDA kernel for burn's CUDA backend without fusion:
//! the residual add, the norm and the cast to the next products' dtype of generation's
//! decoder layers. A decoding step has one row per sequence, few rows of a few thousand
//! values, so a row gets a whole cube (8 planes, 256 units; the training kernel's one plane
//! a row left most of the card idle and waited on its own loads): each unit adds its
//! share of the row and writes the sum, the planes' sums of squares meet in shared memory,
//! and each unit writes its share of the output. Values are computed in f32.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::{PLANE, empty_like, has_planes};
use crate::ops::rms_norm::composed_add_rms_norm;

/// Planes per cube (one cube per row).
const PLANES: u32 = 8;

/// For the cube's row: `sum = x + delta` (written when `add`; else the row of `x`) and
/// `y = sum · r · γ`, `r = 1 / sqrt(mean(sum²) + epsilon)`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn add_rms_norm_kernel<R: Float, D: Float, Y: Float>(
    x: &Tensor<R>,
    delta: &Tensor<D>,
    gamma: &Tensor<R>,
    sum: &mut Tensor<R>,
    y: &mut Tensor<Y>,
    n: u32,
    epsilon: f32,
    #[comptime] add: bool,
    #[define(R, D, Y)] _dtypes: [StorageType; 3],
) {
    let start = CUBE_POS_X as usize * n as usize;
    let unit = UNIT_POS_Y * CUBE_DIM_X + UNIT_POS_X;
    let units = CUBE_DIM_X * CUBE_DIM_Y;
    let mut squares = f32::new(0.0);
    for j in range_stepped(unit, n, units) {
        let at = start + j as usize;
        let mut v = f32::cast_from(x[at]);
        if add {
            // The residual stream keeps its dtype: the output is computed from the sum as stored.
            let s = R::cast_from(v + f32::cast_from(delta[at]));
            sum[at] = s;
            v = f32::cast_from(s);
        }
        squares += v * v;
    }
    let mut planes = SharedMemory::<f32>::new(PLANES as usize);
    let plane_squares = plane_sum(squares);
    if UNIT_POS_X == 0 {
        planes[UNIT_POS_Y as usize] = plane_squares;
    }
    sync_cube();
    let mut total = f32::new(0.0);
    for i in 0..CUBE_DIM_Y {
        total += planes[i as usize];
    }
    let inverse = f32::new(1.0) / (total / f32::cast_from(n) + epsilon).sqrt();
    for j in range_stepped(unit, n, units) {
        let at = start + j as usize;
        // A unit reads back only what it wrote itself.
        let v = if add { f32::cast_from(sum[at]) } else { f32::cast_from(x[at]) };
        y[at] = Y::cast_from(v * inverse * f32::cast_from(gamma[j as usize]));
    }
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// `[rows, n]` of contiguous `x` with `gamma` `[n]` of its dtype and `delta` of its shape,
/// as the kernel takes them, or `None` when they do not.
fn kernel_shape(x: &CubeTensor<CudaRuntime>, delta: Option<&CubeTensor<CudaRuntime>>, gamma: &CubeTensor<CudaRuntime>) -> Option<[u32; 2]> {
    let [rows, n] = x.meta.shape[..] else { return None };
    let delta_fits = delta.is_none_or(|d| is_float(d.dtype) && d.meta.shape == x.meta.shape);
    let dtypes = is_float(x.dtype) && gamma.dtype == x.dtype && gamma.meta.shape[..] == [n];
    let fits = rows > 0 && n > 0 && rows < i32::MAX as usize && rows * n < u32::MAX as usize;
    (delta_fits && dtypes && has_planes(x) && fits).then_some([rows as u32, n as u32])
}

/// [`RmsNormOp::add_rms_norm`](crate::ops::rms_norm::RmsNormOp::add_rms_norm) by the
/// kernel, or composed where the kernel does not take the tensors.
pub(super) fn add_rms_norm(
    x: FloatTensor<CudaPlain>,
    delta: Option<FloatTensor<CudaPlain>>,
    gamma: FloatTensor<CudaPlain>,
    epsilon: f64,
    dtype: FloatDType,
) -> (FloatTensor<CudaPlain>, FloatTensor<CudaPlain>) {
    let (x, delta, gamma) = (into_contiguous(x), delta.map(into_contiguous), into_contiguous(gamma));
    let Some([rows, n]) = kernel_shape(&x, delta.as_ref(), &gamma) else {
        return composed_add_rms_norm::<CudaPlain>(x, delta, gamma, epsilon, dtype);
    };
    let out_dtype: DType = dtype.into();
    let y = empty_like(&x, vec![rows as usize, n as usize], out_dtype);
    let add = delta.is_some();
    // Without an add the kernel reads `x` alone: `x` stands in for `delta` and the sum
    // is `x` itself (a one-value buffer takes the unwritten argument).
    let (delta, sum) = match delta {
        Some(delta) => (delta, empty_like(&x, vec![rows as usize, n as usize], x.dtype)),
        None => (x.clone(), empty_like(&x, vec![1], x.dtype)),
    };
    let dtypes = [x.dtype.into(), delta.dtype.into(), out_dtype.into()];
    add_rms_norm_kernel::launch::<CudaRuntime>(
        &x.client.clone(),
        CubeCount::new_1d(rows),
        CubeDim::new_2d(PLANE, PLANES),
        x.clone().into_tensor_arg(),
        delta.into_tensor_arg(),
        gamma.into_tensor_arg(),
        sum.clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        n,
        epsilon as f32,
        add,
        dtypes,
    );
    (if add { sum } else { x }, y)
}
