//! What the trainer's CUDA kernels share: for the row kernels (causal softmax, RMSNorm,
//! cross-entropy) a plane of 32 lanes works on one row and a cube holds `ROWS_PER_CUBE`
//! planes; the others (AdamW, RoPE, the MLP's gate) run one unit per value or pair; the
//! softmax and the gate read 16-byte vectors where the lengths allow (`vector_size`).

use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::features::Plane;
use cubecl::prelude::*;

/// Lanes of a plane on NVIDIA GPUs.
pub(crate) const PLANE: u32 = 32;
/// Planes (rows) per cube.
pub(crate) const ROWS_PER_CUBE: u32 = 8;

/// Whether the device has plane operations on planes of `PLANE` lanes (the kernels' reductions).
pub(crate) fn has_planes(t: &CubeTensor<CudaRuntime>) -> bool {
    t.client.features().plane.contains(Plane::Ops) && t.client.properties().hardware.plane_size_min == PLANE
}

/// The launch grid for `rows` rows, one plane each.
pub(crate) fn plane_per_row(rows: u32) -> (CubeCount, CubeDim) {
    (CubeCount::new_1d(rows.div_ceil(ROWS_PER_CUBE)), CubeDim::new_2d(PLANE, ROWS_PER_CUBE))
}

/// The launch grid for `units` units, one per value (or pair) of an elementwise kernel.
pub(crate) fn one_unit_each(client: &ComputeClient<CudaRuntime>, units: usize) -> (CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(client, units);
    (cubecl::calculate_cube_count_elemwise(client, units, cube_dim), cube_dim)
}

/// Values of `dtype` a unit reads and writes at once: a 16-byte vector when its length
/// divides every one of `lengths` (rows, tensors), else one value.
pub(crate) fn vector_size(dtype: burn::tensor::DType, lengths: &[usize]) -> usize {
    let size = 16 / dtype.size();
    if lengths.iter().all(|n| n.is_multiple_of(size)) { size } else { 1 }
}

/// A contiguous tensor of `shape` and `dtype` on `like`'s device.
pub(crate) fn empty_like(like: &CubeTensor<CudaRuntime>, shape: Vec<usize>, dtype: burn::tensor::DType) -> CubeTensor<CudaRuntime> {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape.into(), dtype)
}

/// `[rows, vocab]` of contiguous logits that the logits' row kernels take (cross-entropy,
/// entropy: one cube a row forward, cubes of `units` logits along a row backward), or
/// `None` when they do not (another dtype or rank, no plane operations, more rows or a
/// longer row than one launch covers).
pub(crate) fn logits_rows(logits: &CubeTensor<CudaRuntime>, units: u32) -> Option<[u32; 2]> {
    let [rows, vocab] = logits.meta.shape[..] else { return None };
    let dtype = matches!(logits.dtype, burn::tensor::DType::F32 | burn::tensor::DType::BF16 | burn::tensor::DType::F16);
    // The backward grid has a cube row per `units` logits of a row, at most 65,535.
    let fits = rows > 0 && vocab > 0 && rows < i32::MAX as usize && vocab.div_ceil(units as usize) <= 65_535;
    (dtype && has_planes(logits) && fits).then_some([rows as u32, vocab as u32])
}

/// The largest of `values[0..count]` (the maxima of a cube's planes, in shared memory).
#[cube]
pub(crate) fn largest(values: &SharedMemory<f32>, count: u32) -> f32 {
    let mut top = values[0];
    for i in 1..count {
        let m = values[i as usize];
        if m > top {
            top = m;
        }
    }
    top
}
