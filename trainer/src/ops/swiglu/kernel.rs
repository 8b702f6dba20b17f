//! The MLP's gate (`swiglu`) as one CUDA kernel each way for burn's CUDA backend without
//! fusion, and generation's gate of one product's two halves (`swiglu_halves`) as one
//! kernel: one unit per 16 bytes of values (8 in bf16) where they divide the tensor (or a
//! half row), read in their dtype and computed in f32.

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::{empty_like, one_unit_each, vector_size};
use crate::ops::swiglu::{Swiglu, composed_swiglu, composed_swiglu_backward, composed_swiglu_halves};

#[cube(launch)]
fn swiglu_kernel<E: Float, N: Size>(
    gate: &Tensor<Vector<E, N>>,
    up: &Tensor<Vector<E, N>>,
    h: &mut Tensor<Vector<E, N>>,
    units: u32,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= units as usize {
        terminate!();
    }
    let (gates, ups) = (gate[i], up[i]);
    let mut out = Vector::<E, N>::empty();
    #[unroll]
    for k in 0..gate.vector_size() {
        let g = f32::cast_from(gates[k]);
        let sigma = f32::new(1.0) / (f32::new(1.0) + (-g).exp());
        out[k] = E::cast_from(g * sigma * f32::cast_from(ups[k]));
    }
    h[i] = out;
}

/// `h[row, j] = silu(rows[row, j]) · rows[row, n + j]` by vectors, `per_row` vectors of
/// `h` a row (`n` values).
#[cube(launch)]
fn swiglu_halves_kernel<E: Float, N: Size>(
    rows: &Tensor<Vector<E, N>>,
    h: &mut Tensor<Vector<E, N>>,
    units: u32,
    per_row: u32,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= units as usize {
        terminate!();
    }
    let per_row = per_row as usize;
    let gate_at = (i / per_row) * 2 * per_row + i % per_row;
    let (gates, ups) = (rows[gate_at], rows[gate_at + per_row]);
    let mut out = Vector::<E, N>::empty();
    #[unroll]
    for k in 0..h.vector_size() {
        let g = f32::cast_from(gates[k]);
        let sigma = f32::new(1.0) / (f32::new(1.0) + (-g).exp());
        out[k] = E::cast_from(g * sigma * f32::cast_from(ups[k]));
    }
    h[i] = out;
}

#[cube(launch)]
fn swiglu_backward_kernel<E: Float, N: Size>(
    gate: &Tensor<Vector<E, N>>,
    up: &Tensor<Vector<E, N>>,
    dh: &Tensor<Vector<E, N>>,
    dgate: &mut Tensor<Vector<E, N>>,
    dup: &mut Tensor<Vector<E, N>>,
    units: u32,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= units as usize {
        terminate!();
    }
    let (gates, ups, dhs) = (gate[i], up[i], dh[i]);
    let (mut dgates, mut dups) = (Vector::<E, N>::empty(), Vector::<E, N>::empty());
    #[unroll]
    for k in 0..gate.vector_size() {
        let g = f32::cast_from(gates[k]);
        let d = f32::cast_from(dhs[k]);
        let sigma = f32::new(1.0) / (f32::new(1.0) + (-g).exp());
        dgates[k] = E::cast_from(d * f32::cast_from(ups[k]) * sigma * (f32::new(1.0) + g * (f32::new(1.0) - sigma)));
        dups[k] = E::cast_from(d * g * sigma);
    }
    dgate[i] = dgates;
    dup[i] = dups;
}

/// Whether contiguous tensors of one shape and float dtype fit the kernels (indices in u32).
fn fits(all: &[&CubeTensor<CudaRuntime>]) -> bool {
    let first = all[0];
    let n = first.meta.shape.num_elements();
    let same = all.iter().all(|t| t.dtype == first.dtype && t.meta.shape == first.meta.shape);
    same && matches!(first.dtype, DType::F32 | DType::BF16 | DType::F16) && n > 0 && n < u32::MAX as usize
}

/// Values per vector (16 bytes when they divide the tensor, else 1), the number of
/// vectors, and the launch grid for one unit per vector of `like`.
fn grid(like: &CubeTensor<CudaRuntime>) -> (usize, u32, CubeCount, CubeDim) {
    let n = like.meta.shape.num_elements();
    let size = vector_size(like.dtype, &[n]);
    let (count, dim) = one_unit_each(&like.client, n / size);
    (size, (n / size) as u32, count, dim)
}

impl Swiglu for CudaPlain {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (gate, up) = (into_contiguous(gate), into_contiguous(up));
        if !fits(&[&gate, &up]) {
            return composed_swiglu::<Self>(gate, up);
        }
        let h = empty_like(&gate, gate.meta.shape.to_vec(), gate.dtype);
        let (size, units, count, dim) = grid(&gate);
        let dtype = gate.dtype;
        swiglu_kernel::launch::<CudaRuntime>(
            &gate.client.clone(),
            count,
            dim,
            size,
            gate.into_tensor_arg(),
            up.into_tensor_arg(),
            h.clone().into_tensor_arg(),
            units,
            dtype.into(),
        );
        h
    }

    fn swiglu_halves(rows: FloatTensor<Self>) -> FloatTensor<Self> {
        let rows = into_contiguous(rows);
        let mut shape = rows.meta.shape.to_vec();
        let n = shape.last().copied().unwrap_or(0) / 2;
        if !fits(&[&rows]) || n == 0 || 2 * n != shape[shape.len() - 1] {
            return composed_swiglu_halves::<Self>(rows);
        }
        *shape.last_mut().expect("a last dimension") = n;
        let h = empty_like(&rows, shape, rows.dtype);
        let size = vector_size(rows.dtype, &[n]);
        let units = h.meta.shape.num_elements() / size;
        let (count, dim) = one_unit_each(&rows.client, units);
        let dtype = rows.dtype;
        swiglu_halves_kernel::launch::<CudaRuntime>(
            &rows.client.clone(),
            count,
            dim,
            size,
            rows.into_tensor_arg(),
            h.clone().into_tensor_arg(),
            units as u32,
            (n / size) as u32,
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
        let (size, units, count, dim) = grid(&gate);
        let dtype = gate.dtype;
        swiglu_backward_kernel::launch::<CudaRuntime>(
            &gate.client.clone(),
            count,
            dim,
            size,
            gate.into_tensor_arg(),
            up.into_tensor_arg(),
            dh.into_tensor_arg(),
            dgate.clone().into_tensor_arg(),
            dup.clone().into_tensor_arg(),
            units,
            dtype.into(),
        );
        (dgate, dup)
    }
}
