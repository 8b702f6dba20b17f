//! The projections' and the attention op's matmuls on cuBLAS for burn's CUDA backend
//! without fusion.
//!
//! cubecl's bf16 matmul kernels reach 95-170 TFLOP/s on an H200 at the 1B model's shapes
//! where cuBLAS reaches 320-570 (docs/PERF.md), so `Matmul` for `CudaPlain` calls
//! `cublasGemmEx` (one product) or `cublasGemmStridedBatchedEx` (attention's products per
//! head) on the cubecl buffers: f32, bf16 or f16 operands (f32 accumulation; no TF32 for
//! f32), row-major or transposed views read as they lie in memory.
//!
//! The product is enqueued on the stream cubecl runs this thread's work on (found once per
//! thread, `cuda_stream`), so it runs in order with cubecl's kernels and the host never
//! waits for it.
//!
//! libcublas and libcupti are loaded at the first product (`libcublas.so.13`,
//! `libcupti.so.13` for CUDA 13; PyTorch's wheels ship both under
//! `site-packages/nvidia/cu13/lib`, put that on `LD_LIBRARY_PATH`). Without them, when
//! cubecl's stream is not found, with `HABITS_CUBLAS=0`, or for operands cuBLAS is not
//! given here (other dtypes, an empty dimension), burn's own matmul runs; why is said once
//! on stderr.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::OnceLock;

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::ComputeClient;
use cudarc::cublas::sys::{self as cublas, cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{result as driver, sys as cuda};

use super::cuda_stream::cubecl_stream;
use super::matmul::{BatchLayout, Layout, Matmul, burns_scaled_matmul};
use crate::CudaPlain;

/// The cuBLAS operation and leading dimension that read a row-major `[rows, cols]` operand
/// laid out as `layout` as its column-major transpose `[cols, rows]`.
fn as_transposed(layout: Layout) -> (cublasOperation_t, i32) {
    match layout {
        Layout::RowMajor { ld } => (cublasOperation_t::CUBLAS_OP_N, ld as i32),
        Layout::ColMajor { ld } => (cublasOperation_t::CUBLAS_OP_T, ld as i32),
    }
}

/// A cuBLAS handle on cubecl's stream of this thread, and the context it runs in.
#[derive(Clone, Copy)]
pub(crate) struct Cublas {
    pub(crate) handle: cublas::cublasHandle_t,
    context: cuda::CUcontext,
}

thread_local! {
    /// This thread's handle per device; `Err` once it is known that there is none.
    static CUBLAS: RefCell<Vec<(i32, Result<Cublas, ()>)>> = const { RefCell::new(Vec::new()) };
}

/// Says once, on stderr, why the projections keep to cubecl's matmul.
fn say_why_not(reason: &str) {
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| eprintln!("note: the projections use cubecl's matmul kernels, not cuBLAS: {reason} (HABITS_CUBLAS=0 chooses them without this note)"));
}

/// Whether products go to cuBLAS at all: `HABITS_CUBLAS` is not `0` and libcublas loads.
pub(crate) fn cublas_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        if std::env::var("HABITS_CUBLAS").is_ok_and(|v| v == "0") {
            return false;
        }
        // SAFETY: only tries to open the library.
        let present = unsafe { cublas::is_culib_present() };
        if !present {
            say_why_not("libcublas (CUDA 13: libcublas.so.13) is not on the library path; put its folder on LD_LIBRARY_PATH (PyTorch ships it under site-packages/nvidia/cu13/lib)");
        }
        present
    })
}

/// This thread's cuBLAS handle for `device` (made at the first call, on the stream cubecl
/// runs this thread's work on), with that device's context made current; `None` when there
/// is none.
pub(crate) fn cublas_for(client: &ComputeClient<CudaRuntime>, device: i32) -> Option<Cublas> {
    let cublas = CUBLAS.with(|cell| {
        let mut handles = cell.borrow_mut();
        match handles.iter().find(|(d, _)| *d == device) {
            Some((_, known)) => known.ok(),
            None => {
                let made = new_handle(client, device);
                handles.push((device, made));
                made.ok()
            }
        }
    })?;
    // SAFETY: a primary context retained by `new_handle` and never released.
    unsafe { driver::ctx::set_current(cublas.context) }.expect("the CUDA context made current");
    Some(cublas)
}

/// A cuBLAS handle on the stream cubecl runs this thread's work on `device` on, in the
/// device's primary context (the one cubecl runs in).
fn new_handle(client: &ComputeClient<CudaRuntime>, device: i32) -> Result<Cublas, ()> {
    // SAFETY: retaining the primary context of a device cubecl already runs on.
    let context = unsafe { driver::primary_ctx::retain(driver::device::get(device).expect("a CUDA device")) }.expect("the primary CUDA context");
    // SAFETY: the context was just retained.
    unsafe { driver::ctx::set_current(context) }.expect("the CUDA context made current");
    let stream = cubecl_stream(client).map_err(|reason| say_why_not(&format!("cubecl's CUDA stream was not found ({reason})")))?;
    let handle = cudarc::cublas::result::create_handle().expect("a cuBLAS handle");
    // SAFETY: a new handle and the live stream cubecl runs this thread's work on.
    unsafe { cudarc::cublas::result::set_stream(handle, stream as cublas::cudaStream_t) }.expect("cuBLAS bound to cubecl's stream");
    Ok(Cublas { handle, context })
}

fn data_type(dtype: DType) -> Option<cudaDataType> {
    match dtype {
        DType::F32 => Some(cudaDataType::CUDA_R_32F),
        DType::BF16 => Some(cudaDataType::CUDA_R_16BF),
        DType::F16 => Some(cudaDataType::CUDA_R_16F),
        _ => None,
    }
}

/// The operand and its layout, copied to row-major first when it has none cuBLAS reads.
fn laid_out(t: CubeTensor<CudaRuntime>) -> (CubeTensor<CudaRuntime>, BatchLayout) {
    if let Some(layout) = BatchLayout::of(&t.meta.shape, &t.meta.strides) {
        return (t, layout);
    }
    let t = into_contiguous(t);
    let layout = BatchLayout::of(&t.meta.shape, &t.meta.strides).expect("a contiguous copy is one evenly strided run of row-major matrices");
    (t, layout)
}

/// `[m, k, n]` of `a · b` for `a` `[.., m, k]` and `b` `[.., k, n]` with the same leading
/// dimensions.
fn product_shape(a: &CubeTensor<CudaRuntime>, b: &CubeTensor<CudaRuntime>) -> [usize; 3] {
    let (sa, sb): (&[usize], &[usize]) = (&a.meta.shape, &b.meta.shape);
    let rank = sa.len();
    let fits = rank >= 2 && sb.len() == rank && sa[..rank - 2] == sb[..rank - 2] && sa[rank - 1] == sb[rank - 2];
    assert!(fits, "batched matmul of {sa:?} · {sb:?}: the leading dimensions must be equal and a's columns b's rows");
    [sa[rank - 2], sa[rank - 1], sb[rank - 1]]
}

impl Matmul for CudaPlain {
    const OWN_PRODUCT: bool = true;

    fn matmul_2d(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        assert_eq!(a.meta.shape.len(), 2, "matmul_2d takes matrices");
        Self::batched_matmul(a, b, 1.0)
    }

    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, alpha: f64) -> FloatTensor<Self> {
        let [m, k, n] = product_shape(&a, &b);
        let empty = a.meta.shape.iter().product::<usize>() == 0 || n == 0;
        let usable = cublas_enabled() && b.dtype == a.dtype && data_type(a.dtype).is_some() && !empty;
        if !usable {
            return burns_scaled_matmul::<Self>(a, b, alpha);
        }
        match cublas_for(&a.client, a.device.index as i32) {
            Some(cublas) => gemm(cublas, a, b, [m, k, n], alpha),
            None => burns_scaled_matmul::<Self>(a, b, alpha),
        }
    }
}

/// `alpha · a · b` on cuBLAS, enqueued on cubecl's stream: one product, or one strided
/// batch of them.
fn gemm(cublas: Cublas, a: CubeTensor<CudaRuntime>, b: CubeTensor<CudaRuntime>, [m, k, n]: [usize; 3], alpha: f64) -> CubeTensor<CudaRuntime> {
    let (a, a_layout) = laid_out(a);
    let (b, b_layout) = laid_out(b);
    let dtype = a.dtype;
    let kind = data_type(dtype).expect("checked by the caller");
    let client = a.client.clone();
    let mut shape = a.meta.shape.to_vec();
    *shape.last_mut().expect("two dimensions at least") = n;
    // Contiguous rows (cubecl may pitch a plain `empty` tensor's rows).
    let out = empty_device_contiguous_dtype(client.clone(), a.device.clone(), shape.into(), dtype);
    let resource = |t: &CubeTensor<CudaRuntime>| client.get_resource(t.handle.clone()).expect("a cubecl buffer's address");
    let (a_mem, b_mem, out_mem) = (resource(&a), resource(&b), resource(&out));
    let (a_ptr, b_ptr, out_ptr) = (a_mem.resource().ptr as *const c_void, b_mem.resource().ptr as *const c_void, out_mem.resource().ptr as *mut c_void);
    // Row-major `c = a · b` is column-major `cᵀ = bᵀ · aᵀ`: cuBLAS's A is `b`, its B is `a`.
    let (op_b, ld_b) = as_transposed(b_layout.matrix);
    let (op_a, ld_a) = as_transposed(a_layout.matrix);
    let (alpha, beta) = (alpha as f32, 0f32);
    let (alpha, beta) = ((&alpha as *const f32).cast::<c_void>(), (&beta as *const f32).cast::<c_void>());
    let (dims, count) = ([n as i32, m as i32, k as i32], a_layout.count);
    let failed = |e| panic!("cuBLAS gemm of {count} x [{m}, {k}] · [{k}, {n}] ({dtype:?}) failed: {e}");
    let (compute, algorithm) = (cublasComputeType_t::CUBLAS_COMPUTE_32F, cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT);
    // SAFETY: the three addresses are live cubecl buffers of the sizes the layouts
    // describe (checked by `BatchLayout::of`); the product is enqueued on the stream that
    // wrote the operands and that will read the output, so cubecl's ordering holds (buffers
    // dropped after this call are reused only by later work on that stream).
    unsafe {
        if count == 1 {
            cudarc::cublas::result::gemm_ex(
                cublas.handle,
                op_b,
                op_a,
                dims[0],
                dims[1],
                dims[2],
                alpha,
                b_ptr,
                kind,
                ld_b,
                a_ptr,
                kind,
                ld_a,
                beta,
                out_ptr,
                kind,
                dims[0],
                compute,
                algorithm,
            )
        } else {
            cudarc::cublas::result::gemm_strided_batched_ex(
                cublas.handle,
                op_b,
                op_a,
                dims[0],
                dims[1],
                dims[2],
                alpha,
                b_ptr,
                kind,
                ld_b,
                b_layout.stride as i64,
                a_ptr,
                kind,
                ld_a,
                a_layout.stride as i64,
                beta,
                out_ptr,
                kind,
                dims[0],
                (m * n) as i64,
                count as i32,
                compute,
                algorithm,
            )
        }
        .unwrap_or_else(failed);
    }
    out
}
