//! The projections' and the attention op's matmuls on cuBLAS for burn's CUDA backend
//! without fusion.
//!
//! cuBLAS runs the model's bf16 products at two to three times the speed of cubecl's matmul
//! kernels (docs/PERF.md), so `Matmul` for `CudaPlain` calls
//! `cublasGemmEx` (one product) or `cublasGemmStridedBatchedEx` (attention's products per
//! head) on the cubecl buffers: f32, bf16 or f16 operands (f32 accumulation; no TF32 for
//! f32), row-major or transposed views read as they lie in memory.
//!
//! The product is enqueued on the stream cubecl runs this thread's work on (found once per
//! thread, `ops::cuda::stream`), so it runs in order with cubecl's kernels and the host never
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

use crate::CudaPlain;
use crate::ops::cuda::stream::{OnStream, on_stream, with_addresses};
use crate::ops::kernels::Kernels;
use crate::ops::matmul::{BatchLayout, Layout, Matmul, burns_scaled_matmul};

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

/// Whether products go to cuBLAS: the settings ask for it and libcublas loads.
pub(crate) fn cublas_usable(kernels: Kernels) -> bool {
    kernels.cublas && cublas_loads()
}

/// Whether libcublas loads (tried once; a fact of the machine, not a setting).
fn cublas_loads() -> bool {
    static LOADS: OnceLock<bool> = OnceLock::new();
    *LOADS.get_or_init(|| {
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
    let OnStream { context, stream } = on_stream(client, device).map_err(|reason| say_why_not(&format!("cubecl's CUDA stream was not found ({reason})")))?;
    let handle = cudarc::cublas::result::create_handle().expect("a cuBLAS handle");
    // SAFETY: a new handle and the live stream cubecl runs this thread's work on.
    unsafe { cudarc::cublas::result::set_stream(handle, stream as cublas::cudaStream_t) }.expect("cuBLAS bound to cubecl's stream");
    Ok(Cublas { handle, context })
}

pub(crate) fn data_type(dtype: DType) -> Option<cudaDataType> {
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

    fn matmul_2d(a: FloatTensor<Self>, b: FloatTensor<Self>, kernels: Kernels) -> FloatTensor<Self> {
        assert_eq!(a.meta.shape.len(), 2, "matmul_2d takes matrices");
        Self::batched_matmul(a, b, 1.0, kernels)
    }

    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, alpha: f64, kernels: Kernels) -> FloatTensor<Self> {
        Self::batched_matmuls(vec![(a, b, alpha)], kernels).pop().expect("one product")
    }

    fn is_transposed_view(b: &FloatTensor<Self>) -> bool {
        let (shape, strides): (&[usize], &[usize]) = (&b.meta.shape, &b.meta.strides);
        shape.len() == 2 && shape[0] > 1 && shape[1] > 1 && matches!(Layout::of([shape[0], shape[1]], [strides[0], strides[1]]), Some(Layout::ColMajor { .. }))
    }

    fn row_major(t: FloatTensor<Self>) -> FloatTensor<Self> {
        into_contiguous(t)
    }

    fn batched_matmuls(products: Vec<(FloatTensor<Self>, FloatTensor<Self>, f64)>, kernels: Kernels) -> Vec<FloatTensor<Self>> {
        let shapes: Vec<[usize; 3]> = products.iter().map(|(a, b, _)| product_shape(a, b)).collect();
        let usable = |(a, b, _): &(FloatTensor<Self>, FloatTensor<Self>, f64), [_, _, n]: [usize; 3]| {
            let empty = a.meta.shape.iter().product::<usize>() == 0 || n == 0;
            b.dtype == a.dtype && data_type(a.dtype).is_some() && !empty
        };
        let all_usable = cublas_usable(kernels) && !products.is_empty() && products.iter().zip(&shapes).all(|(p, &s)| usable(p, s));
        let first = products.first().map(|(a, _, _)| (a.client.clone(), a.device.index as i32));
        match first.filter(|_| all_usable).and_then(|(client, device)| cublas_for(&client, device)) {
            Some(cublas) => gemms(cublas, products, &shapes),
            None => products.into_iter().map(|(a, b, alpha)| burns_scaled_matmul::<Self>(a, b, alpha)).collect(),
        }
    }
}

/// One product for cuBLAS: its operands with their layouts, the output and `[m, k, n]`.
struct Product {
    a: (CubeTensor<CudaRuntime>, BatchLayout),
    b: (CubeTensor<CudaRuntime>, BatchLayout),
    out: CubeTensor<CudaRuntime>,
    shape: [usize; 3],
    alpha: f64,
}

/// `alpha · a · b` for each product on cuBLAS, enqueued on cubecl's stream in order: one
/// product, or one strided batch of them, each; the buffers' addresses in one request.
fn gemms(cublas: Cublas, products: Vec<(FloatTensor<CudaPlain>, FloatTensor<CudaPlain>, f64)>, shapes: &[[usize; 3]]) -> Vec<CubeTensor<CudaRuntime>> {
    let products: Vec<Product> = products
        .into_iter()
        .zip(shapes)
        .map(|((a, b, alpha), &shape)| {
            let (a, b) = (laid_out(a), laid_out(b));
            let mut out_shape = a.0.meta.shape.to_vec();
            *out_shape.last_mut().expect("two dimensions at least") = shape[2];
            // Contiguous rows (cubecl may pitch a plain `empty` tensor's rows).
            let out = empty_device_contiguous_dtype(a.0.client.clone(), a.0.device.clone(), out_shape.into(), a.0.dtype);
            Product { a, b, out, shape, alpha }
        })
        .collect();
    let buffers: Vec<&CubeTensor<CudaRuntime>> = products.iter().flat_map(|p| [&p.a.0, &p.b.0, &p.out]).collect();
    with_addresses(&products[0].a.0.client, &buffers, |addresses| {
        for (p, at) in products.iter().zip(addresses.chunks(3)) {
            // SAFETY: the addresses are the live buffers of `p`, held until this returns.
            unsafe { gemm(cublas, p, [at[0], at[1], at[2]]) };
        }
    });
    products.into_iter().map(|p| p.out).collect()
}

/// Enqueues one product at the given addresses of its `a`, `b` and output.
///
/// # Safety
/// The addresses must be `p`'s live buffers, of the sizes its layouts describe (checked
/// by `BatchLayout::of`). The product is enqueued on the stream that wrote the operands and
/// that will read the output, so cubecl's ordering holds (buffers dropped after this call
/// are reused only by later work on that stream).
unsafe fn gemm(cublas: Cublas, p: &Product, [a_at, b_at, out_at]: [u64; 3]) {
    let [m, _, n] = p.shape;
    let out = Placed { at: out_at, layout: Layout::RowMajor { ld: n }, stride: m * n };
    let a = Placed { at: a_at, layout: p.a.1.matrix, stride: p.a.1.stride };
    let b = Placed { at: b_at, layout: p.b.1.matrix, stride: p.b.1.stride };
    let raw = RawProduct { shape: p.shape, a, b, out, count: p.a.1.count, alpha: p.alpha, beta: 0.0, dtype: p.out.dtype };
    // SAFETY: as this function's.
    unsafe { raw_gemm(cublas, &raw) }
}

/// An operand of a [`RawProduct`]: the address of its first matrix, each matrix's layout
/// and the distance between consecutive matrices (elements).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placed {
    pub at: u64,
    pub layout: Layout,
    pub stride: usize,
}

/// `out = alpha · a · b + beta · out` for `count` products of `[m, k] · [k, n]` (`shape`),
/// operands and output of one dtype; the output's layout row-major.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawProduct {
    pub shape: [usize; 3],
    pub a: Placed,
    pub b: Placed,
    pub out: Placed,
    pub count: usize,
    pub alpha: f64,
    pub beta: f64,
    pub dtype: DType,
}

/// Enqueues `p` on the stream of `cublas`: one product, or one strided batch of them.
///
/// # Safety
/// The addresses must be live buffers holding every matrix the layouts and strides
/// describe, on the stream's device, and the work that writes the operands and reads the
/// output must be ordered on that stream (see `gemm`).
pub(crate) unsafe fn raw_gemm(cublas: Cublas, p: &RawProduct) {
    let [m, k, n] = p.shape;
    let dtype = p.dtype;
    let kind = data_type(dtype).unwrap_or_else(|| panic!("cuBLAS is not given {dtype:?} operands"));
    let Layout::RowMajor { ld: ld_out } = p.out.layout else { panic!("a product's output is written row-major") };
    let (a_ptr, b_ptr, out_ptr) = (p.a.at as *const c_void, p.b.at as *const c_void, p.out.at as *mut c_void);
    // Row-major `c = a · b` is column-major `cᵀ = bᵀ · aᵀ`: cuBLAS's A is `b`, its B is `a`.
    let (op_b, ld_b) = as_transposed(p.b.layout);
    let (op_a, ld_a) = as_transposed(p.a.layout);
    let (alpha, beta) = (p.alpha as f32, p.beta as f32);
    let (alpha, beta) = ((&alpha as *const f32).cast::<c_void>(), (&beta as *const f32).cast::<c_void>());
    let (dims, count) = ([n as i32, m as i32, k as i32], p.count);
    let failed = |e| panic!("cuBLAS gemm of {count} x [{m}, {k}] · [{k}, {n}] ({dtype:?}) failed: {e}");
    let (compute, algorithm) = (cublasComputeType_t::CUBLAS_COMPUTE_32F, cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT);
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
                ld_out as i32,
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
                p.b.stride as i64,
                a_ptr,
                kind,
                ld_a,
                p.a.stride as i64,
                beta,
                out_ptr,
                kind,
                ld_out as i32,
                p.out.stride as i64,
                count as i32,
                compute,
                algorithm,
            )
        }
        .unwrap_or_else(failed);
    }
}
