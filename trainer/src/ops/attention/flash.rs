//! Causal attention by flash-attention kernels (`flash_kernel`) on burn's CUDA
//! backend without fusion: which inputs they take, and their launches.
//!
//! They take bf16 or f16 heads of 64 or 128 values over a sequence of whole 64-position blocks on
//! a GPU with `mma.sync` and `ldmatrix` for the dtype (NVIDIA sm_80 and later); other
//! inputs run the staircase (`cublas`). `Kernels::flash_attention` off
//! (`HABITS_FLASH_ATTENTION=0`) runs the staircase everywhere, to compare the two.
//! Keys and values are read by their own (fewer) heads; nothing is repeated. Inputs are
//! read where they lie when head-major or token-major (values, and the output's gradient,
//! come token-major from the projections); the output and the values' gradient are
//! written token-major, so the projections around attention take them without a copy.

use burn::tensor::DType;
use burn::tensor::ops::FloatTensorOps;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::features::MmaConfig;
use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::attention::flash_kernel::{
    FORWARD_BLOCK, flash_delta_kernel, flash_forward_kernel, flash_key_value_gradient_kernel, flash_query_gradient_kernel,
};
use crate::ops::attention::flash_tiles::{BLOCK, Layouts, UNITS};
use crate::ops::cuda::plane_rows::{PLANE, empty_like, has_planes, one_unit_each};
use crate::ops::kernels::Kernels;

/// The head widths the kernels are built for (1B's heads of 64, 3B's and 8B's of 128).
const HEAD_DIMS: [usize; 2] = [64, 128];

/// A `[batch, heads, seq, d]` tensor as the kernels read it: a contiguous buffer, and
/// whether it is token-major (`Layouts`).
struct Rows {
    buffer: CubeTensor<CudaRuntime>,
    tokens: bool,
}

impl Rows {
    /// `x` in place when it is head-major or a token-major view (`swap_dims(1, 2)` of a
    /// contiguous `[batch, seq, heads, d]`), else a head-major copy.
    fn of(x: &CubeTensor<CudaRuntime>) -> Rows {
        if x.is_contiguous() {
            return Rows { buffer: x.clone(), tokens: false };
        }
        let swapped = swap_positions_and_heads(x.clone());
        if swapped.is_contiguous() {
            return Rows { buffer: swapped, tokens: true };
        }
        Rows { buffer: into_contiguous(x.clone()), tokens: false }
    }
}

/// `[a, b, c, d]` -> `[a, c, b, d]` as a view.
fn swap_positions_and_heads(x: CubeTensor<CudaRuntime>) -> CubeTensor<CudaRuntime> {
    <CudaPlain as FloatTensorOps<CudaPlain>>::float_swap_dims(x, 1, 2)
}

/// The attention's inputs as the kernels read them.
pub(crate) struct Flash {
    q: Rows,
    k: Rows,
    v: Rows,
    /// `[batch, heads, kv_heads, seq]`
    dims: [usize; 4],
    /// The head width.
    d: usize,
}

impl Flash {
    /// The inputs, or `None` when the kernels do not take them (see the module's doc).
    pub(crate) fn of(q: &CubeTensor<CudaRuntime>, k: &CubeTensor<CudaRuntime>, v: &CubeTensor<CudaRuntime>, kernels: Kernels) -> Option<Flash> {
        let (qs, ks) = (q.meta.shape.to_vec(), k.meta.shape.to_vec());
        let [b, h, s, d] = qs[..] else { return None };
        let kv = ks[1];
        let same = q.dtype == k.dtype && q.dtype == v.dtype && k.meta.shape == v.meta.shape && ks[..] == [b, kv, s, d];
        let sizes = HEAD_DIMS.contains(&d) && s > 0 && s % FORWARD_BLOCK == 0 && kv > 0 && h % kv == 0 && b * h * s * d < u32::MAX as usize;
        if !(kernels.flash_attention && same && sizes && tensor_cores(q)) {
            return None;
        }
        Some(Flash { q: Rows::of(q), k: Rows::of(k), v: Rows::of(v), dims: [b, h, kv, s], d })
    }

    fn blocks(&self) -> u32 {
        (self.dims[3] / BLOCK) as u32
    }

    fn group(&self) -> u32 {
        (self.dims[1] / self.dims[2]) as u32
    }

    fn like(&self) -> &CubeTensor<CudaRuntime> {
        &self.q.buffer
    }

    /// A new `[batch, heads, seq, d]` tensor of `heads` heads, head-major or token-major
    /// (`tokens`; as a view of the `[batch, seq, heads, d]` buffer the kernels write).
    fn new_heads(&self, heads: usize, tokens: bool) -> CubeTensor<CudaRuntime> {
        let [b, _, _, s] = self.dims;
        let like = self.like();
        match tokens {
            true => swap_positions_and_heads(empty_like(like, vec![b, s, heads, self.d], like.dtype)),
            false => empty_like(like, vec![b, heads, s, self.d], like.dtype),
        }
    }

    /// Per query row: `[batch, heads, seq]` f32.
    fn new_rows(&self) -> CubeTensor<CudaRuntime> {
        let [b, h, _, s] = self.dims;
        empty_like(self.like(), vec![b, h, s], DType::F32)
    }

    /// The output `[batch, heads, seq, d]` (a token-major view, as the output projection
    /// reads it) and each query row's log-sum-exp of its scaled scores (`[batch, heads,
    /// seq]`, f32), which the backward pass reads.
    pub(crate) fn forward(&self, scale: f64) -> (CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>) {
        let [b, h, _, s] = self.dims;
        let out = self.new_heads(h, true);
        let lse = self.new_rows();
        let layouts = Layouts { q: self.q.tokens, k: self.k.tokens, v: self.v.tokens, ..Default::default() };
        // SAFETY: `of` checked the shapes the kernel indexes (whole blocks of rows of `d`
        // values, contiguous buffers in the layouts given; every launched cube's rows
        // exist) and the dtype.
        unsafe {
            flash_forward_kernel::launch_unchecked::<CudaRuntime>(
                &self.like().client,
                CubeCount::new_2d((s / FORWARD_BLOCK) as u32, (b * h) as u32),
                cube_dim(),
                self.q.buffer.clone().into_tensor_arg(),
                self.k.buffer.clone().into_tensor_arg(),
                self.v.buffer.clone().into_tensor_arg(),
                buffer_of(&out).into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                s as u32,
                h as u32,
                self.group(),
                scale as f32,
                layouts,
                self.d,
                self.like().dtype.into(),
            );
        }
        (out, lse)
    }

    /// The gradients of `q`, `k`, `v` (`dq`, `dk` head-major, `dv` a token-major view) from
    /// the output `out`, its gradient `dy` and the forward pass's `lse`.
    pub(crate) fn backward(
        &self,
        out: CubeTensor<CudaRuntime>,
        lse: CubeTensor<CudaRuntime>,
        dy: CubeTensor<CudaRuntime>,
        scale: f64,
    ) -> [CubeTensor<CudaRuntime>; 3] {
        let [b, h, kv, s] = self.dims;
        assert!(
            lse.dtype == DType::F32 && lse.meta.shape[..] == [b, h, s] && out.meta.shape[..] == [b, h, s, self.d] && dy.meta.shape == out.meta.shape,
            "the flash attention's backward pass got another forward pass's output or log-sum-exp"
        );
        let (out, dy, lse) = (Rows::of(&out), Rows::of(&dy), into_contiguous(lse));
        let layouts = Layouts { q: self.q.tokens, k: self.k.tokens, v: self.v.tokens, dy: dy.tokens, out: out.tokens };
        let client = self.like().client.clone();
        let rows = b * h * s;
        let delta = self.new_rows();
        let (count, dim) = one_unit_each(&client, rows);
        let (dq, dk, dv) = (self.new_heads(h, false), self.new_heads(kv, false), self.new_heads(kv, true));
        let dtype = self.like().dtype;
        let arg = |rows: &Rows| rows.buffer.clone().into_tensor_arg();
        // SAFETY: as in `forward`; `delta`'s kernel returns for units past the last row.
        unsafe {
            flash_delta_kernel::launch_unchecked::<CudaRuntime>(
                &client,
                count,
                dim,
                arg(&out),
                arg(&dy),
                delta.clone().into_tensor_arg(),
                rows as u32,
                s as u32,
                h as u32,
                layouts,
                self.d,
                dtype.into(),
            );
            flash_query_gradient_kernel::launch_unchecked::<CudaRuntime>(
                &client,
                CubeCount::new_2d(self.blocks(), (b * h) as u32),
                cube_dim(),
                arg(&self.q),
                arg(&self.k),
                arg(&self.v),
                arg(&dy),
                lse.clone().into_tensor_arg(),
                delta.clone().into_tensor_arg(),
                dq.clone().into_tensor_arg(),
                s as u32,
                h as u32,
                self.group(),
                scale as f32,
                layouts,
                self.d,
                dtype.into(),
            );
            flash_key_value_gradient_kernel::launch_unchecked::<CudaRuntime>(
                &client,
                CubeCount::new_2d(self.blocks(), (b * kv) as u32),
                cube_dim(),
                arg(&self.q),
                arg(&self.k),
                arg(&self.v),
                arg(&dy),
                lse.into_tensor_arg(),
                delta.into_tensor_arg(),
                dk.clone().into_tensor_arg(),
                buffer_of(&dv).into_tensor_arg(),
                s as u32,
                h as u32,
                self.group(),
                scale as f32,
                layouts,
                self.d,
                dtype.into(),
            );
        }
        [dq, dk, dv]
    }
}

/// The contiguous buffer behind a token-major view made by `new_heads`.
fn buffer_of(view: &CubeTensor<CudaRuntime>) -> CubeTensor<CudaRuntime> {
    swap_positions_and_heads(view.clone())
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
