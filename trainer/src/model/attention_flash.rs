//! Causal attention by flash-attention kernels (`flash_attention_kernel`) on burn's CUDA
//! backend without fusion: which inputs they take, and their launches.
//!
//! They take bf16 or f16 heads of 64 values over a sequence of whole 64-position blocks on
//! a GPU with `mma.sync` and `ldmatrix` for the dtype (NVIDIA sm_80 and later); other
//! inputs run the staircase (`attention_cublas`). `HABITS_FLASH_ATTENTION=0` (or
//! `set_flash_attention(false)`) runs the staircase everywhere, to compare the two.
//! Keys and values are read by their own (fewer) heads; nothing is repeated.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::DType;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::features::MmaConfig;
use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::*;

use super::flash_attention_kernel::{flash_delta_kernel, flash_forward_kernel, flash_key_value_gradient_kernel, flash_query_gradient_kernel};
use super::flash_tiles::{BLOCK, UNITS};
use crate::plane_rows::{PLANE, empty_like, has_planes, one_unit_each};

/// The head width the kernels are built for.
const HEAD_DIM: usize = 64;

/// `set_flash_attention`'s choice: 0 not set, 1 on, 2 off.
static FLASH: AtomicU8 = AtomicU8::new(0);

/// Whether attention runs the flash kernels where they take the inputs: the last
/// `set_flash_attention`, else `HABITS_FLASH_ATTENTION` (`0` turns them off), else on.
pub fn flash_attention() -> bool {
    match FLASH.load(Ordering::Relaxed) {
        0 => std::env::var("HABITS_FLASH_ATTENTION").map_or(true, |v| v.trim() != "0"),
        set => set == 1,
    }
}

/// Turns the flash kernels on or off from now on (a backward pass must run as its
/// forward pass did).
pub fn set_flash_attention(on: bool) {
    FLASH.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// The attention's inputs as the kernels read them, contiguous.
pub(crate) struct Flash {
    q: CubeTensor<CudaRuntime>,
    k: CubeTensor<CudaRuntime>,
    v: CubeTensor<CudaRuntime>,
    /// `[batch, heads, kv_heads, seq]`
    dims: [usize; 4],
}

impl Flash {
    /// The inputs, or `None` when the kernels do not take them (see the module's doc).
    pub(crate) fn of(q: &CubeTensor<CudaRuntime>, k: &CubeTensor<CudaRuntime>, v: &CubeTensor<CudaRuntime>) -> Option<Flash> {
        let (qs, ks) = (q.meta.shape.to_vec(), k.meta.shape.to_vec());
        let [b, h, s, d] = qs[..] else { return None };
        let kv = ks[1];
        let same = q.dtype == k.dtype && q.dtype == v.dtype && k.meta.shape == v.meta.shape && ks[..] == [b, kv, s, d];
        let sizes = d == HEAD_DIM && s > 0 && s % BLOCK == 0 && kv > 0 && h % kv == 0 && b * h * s * d < u32::MAX as usize;
        if !(flash_attention() && same && sizes && tensor_cores(q)) {
            return None;
        }
        Some(Flash { q: into_contiguous(q.clone()), k: into_contiguous(k.clone()), v: into_contiguous(v.clone()), dims: [b, h, kv, s] })
    }

    fn blocks(&self) -> u32 {
        (self.dims[3] / BLOCK) as u32
    }

    fn group(&self) -> u32 {
        (self.dims[1] / self.dims[2]) as u32
    }

    /// Per query row: `[batch, heads, seq]` f32.
    fn new_rows(&self) -> CubeTensor<CudaRuntime> {
        let [b, h, _, s] = self.dims;
        empty_like(&self.q, vec![b, h, s], DType::F32)
    }

    /// The output `[batch, heads, seq, 64]` and each query row's log-sum-exp of its scaled
    /// scores (`[batch, heads, seq]`, f32), which the backward pass reads.
    pub(crate) fn forward(&self, scale: f64) -> (CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>) {
        let [b, h, _, s] = self.dims;
        let out = empty_like(&self.q, self.q.meta.shape.to_vec(), self.q.dtype);
        let lse = self.new_rows();
        // SAFETY: `of` checked the shapes the kernel indexes (whole blocks of contiguous
        // rows of 64 values; every launched cube's rows exist) and the dtype.
        unsafe {
            flash_forward_kernel::launch_unchecked::<CudaRuntime>(
                &self.q.client,
                CubeCount::new_2d(self.blocks(), (b * h) as u32),
                cube_dim(),
                self.q.clone().into_tensor_arg(),
                self.k.clone().into_tensor_arg(),
                self.v.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                s as u32,
                self.group(),
                scale as f32,
                HEAD_DIM,
                self.q.dtype.into(),
            );
        }
        (out, lse)
    }

    /// The gradients of `q`, `k`, `v` from the output `out`, its gradient `dy` and the
    /// forward pass's `lse`.
    pub(crate) fn backward(
        &self,
        out: CubeTensor<CudaRuntime>,
        lse: CubeTensor<CudaRuntime>,
        dy: CubeTensor<CudaRuntime>,
        scale: f64,
    ) -> [CubeTensor<CudaRuntime>; 3] {
        let [b, h, kv, s] = self.dims;
        assert!(
            lse.dtype == DType::F32 && lse.meta.shape[..] == [b, h, s] && out.meta.shape == self.q.meta.shape,
            "the flash attention's backward pass got another forward pass's output or log-sum-exp"
        );
        let (out, dy, lse) = (into_contiguous(out), into_contiguous(dy), into_contiguous(lse));
        let client = self.q.client.clone();
        let rows = b * h * s;
        let delta = self.new_rows();
        let (count, dim) = one_unit_each(&client, rows);
        let (dq, dk, dv) = (empty_like(&self.q, self.q.meta.shape.to_vec(), self.q.dtype), self.new_like_k(), self.new_like_k());
        let dtype = self.q.dtype;
        // SAFETY: as in `forward`; `delta`'s kernel returns for units past the last row, and
        // `out`, `dy` are contiguous in the queries' shape.
        unsafe {
            flash_delta_kernel::launch_unchecked::<CudaRuntime>(
                &client,
                count,
                dim,
                out.into_tensor_arg(),
                dy.clone().into_tensor_arg(),
                delta.clone().into_tensor_arg(),
                rows as u32,
                HEAD_DIM,
                dtype.into(),
            );
            flash_query_gradient_kernel::launch_unchecked::<CudaRuntime>(
                &client,
                CubeCount::new_2d(self.blocks(), (b * h) as u32),
                cube_dim(),
                self.q.clone().into_tensor_arg(),
                self.k.clone().into_tensor_arg(),
                self.v.clone().into_tensor_arg(),
                dy.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                delta.clone().into_tensor_arg(),
                dq.clone().into_tensor_arg(),
                s as u32,
                self.group(),
                scale as f32,
                HEAD_DIM,
                dtype.into(),
            );
            flash_key_value_gradient_kernel::launch_unchecked::<CudaRuntime>(
                &client,
                CubeCount::new_2d(self.blocks(), (b * kv) as u32),
                cube_dim(),
                self.q.clone().into_tensor_arg(),
                self.k.clone().into_tensor_arg(),
                self.v.clone().into_tensor_arg(),
                dy.into_tensor_arg(),
                lse.into_tensor_arg(),
                delta.into_tensor_arg(),
                dk.clone().into_tensor_arg(),
                dv.clone().into_tensor_arg(),
                s as u32,
                self.group(),
                scale as f32,
                HEAD_DIM,
                dtype.into(),
            );
        }
        [dq, dk, dv]
    }

    fn new_like_k(&self) -> CubeTensor<CudaRuntime> {
        empty_like(&self.k, self.k.meta.shape.to_vec(), self.k.dtype)
    }
}

/// Four planes a cube.
fn cube_dim() -> CubeDim {
    CubeDim::new_2d(PLANE, UNITS / PLANE)
}

/// Whether `like`'s dtype is bf16 or f16 and its device runs the kernels' `mma.sync`
/// (m16n8k16, f32 accumulators) and `ldmatrix` on it, with planes of 32 lanes.
fn tensor_cores(like: &CubeTensor<CudaRuntime>) -> bool {
    let kind = match like.dtype {
        DType::BF16 => FloatKind::BF16,
        DType::F16 => FloatKind::F16,
        _ => return false,
    };
    let half = StorageType::Scalar(ElemType::Float(kind));
    let f32 = StorageType::Scalar(ElemType::Float(FloatKind::F32));
    let matmul = &like.client.features().matmul;
    let mma = MmaConfig { a_type: half, b_type: half, cd_type: f32, m: 16, n: 8, k: 16 };
    has_planes(like) && matmul.mma.contains(&mma) && matmul.ldmatrix.contains(&half)
}
