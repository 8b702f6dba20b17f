//! The MLP's gate (`swiglu`) as one CUDA kernel each way for burn's CUDA backend without
//! fusion: one unit per value, read in its dtype and computed in f32.

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use super::swiglu::{Swiglu, composed_swiglu, composed_swiglu_backward};
use crate::CudaPlain;
use crate::plane_rows::{empty_like, one_unit_each};

#[cube(launch)]
fn swiglu_kernel<E: Float>(gate: &Tensor<E>, up: &Tensor<E>, h: &mut Tensor<E>, #[define(E)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i >= h.len() {
        terminate!();
    }
    let g = f32::cast_from(gate[i]);
    let sigma = f32::new(1.0) / (f32::new(1.0) + (-g).exp());
    h[i] = E::cast_from(g * sigma * f32::cast_from(up[i]));
}

#[cube(launch)]
fn swiglu_backward_kernel<E: Float>(
    gate: &Tensor<E>,
    up: &Tensor<E>,
    dh: &Tensor<E>,
    dgate: &mut Tensor<E>,
    dup: &mut Tensor<E>,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= dgate.len() {
        terminate!();
    }
    let g = f32::cast_from(gate[i]);
    let d = f32::cast_from(dh[i]);
    let sigma = f32::new(1.0) / (f32::new(1.0) + (-g).exp());
    dgate[i] = E::cast_from(d * f32::cast_from(up[i]) * sigma * (f32::new(1.0) + g * (f32::new(1.0) - sigma)));
    dup[i] = E::cast_from(d * g * sigma);
}

/// Whether contiguous tensors of one shape and float dtype fit the kernels (indices in u32).
fn fits(all: &[&CubeTensor<CudaRuntime>]) -> bool {
    let first = all[0];
    let n = first.meta.shape.num_elements();
    let same = all.iter().all(|t| t.dtype == first.dtype && t.meta.shape == first.meta.shape);
    same && matches!(first.dtype, DType::F32 | DType::BF16 | DType::F16) && n > 0 && n < u32::MAX as usize
}

/// The launch grid for one unit per value of `like`.
fn grid(like: &CubeTensor<CudaRuntime>) -> (CubeCount, CubeDim) {
    one_unit_each(&like.client, like.meta.shape.num_elements())
}

impl Swiglu for CudaPlain {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (gate, up) = (into_contiguous(gate), into_contiguous(up));
        if !fits(&[&gate, &up]) {
            return composed_swiglu::<Self>(gate, up);
        }
        let h = empty_like(&gate, gate.meta.shape.to_vec(), gate.dtype);
        let (count, dim) = grid(&gate);
        let dtype = gate.dtype;
        swiglu_kernel::launch::<CudaRuntime>(
            &gate.client.clone(),
            count,
            dim,
            gate.into_tensor_arg(),
            up.into_tensor_arg(),
            h.clone().into_tensor_arg(),
            dtype.into(),
        );
        h
    }

    fn swiglu_backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, dh: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [gate, up, dh] = [gate, up, dh].map(into_contiguous);
        if !fits(&[&gate, &up, &dh]) {
            return composed_swiglu_backward::<Self>(gate, up, dh);
        }
        let (dgate, dup) = (empty_like(&gate, gate.meta.shape.to_vec(), gate.dtype), empty_like(&gate, gate.meta.shape.to_vec(), gate.dtype));
        let (count, dim) = grid(&gate);
        let dtype = gate.dtype;
        swiglu_backward_kernel::launch::<CudaRuntime>(
            &gate.client.clone(),
            count,
            dim,
            gate.into_tensor_arg(),
            up.into_tensor_arg(),
            dh.into_tensor_arg(),
            dgate.clone().into_tensor_arg(),
            dup.clone().into_tensor_arg(),
            dtype.into(),
        );
        (dgate, dup)
    }
}
