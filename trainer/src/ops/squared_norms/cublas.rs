//! [`SquaredNorms`] on cuBLAS for burn's CUDA backend without fusion: one `cublasDotEx(x,
//! x)` per vector (f32 in, f32 out and accumulation), each result written by cuBLAS into
//! its slot of one device vector (pointer mode "device", so the host never waits), on
//! cubecl's stream like the products (`model/matmul_cublas.rs`; all the buffers' addresses
//! in one request). Vectors of another dtype
//! or longer than cuBLAS's 32-bit count go through burn's ops.

use std::ffi::c_void;

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cudarc::cublas::sys::{self as cublas, cublasPointerMode_t, cudaDataType};

use crate::CudaPlain;
use crate::ops::cuda::stream::with_addresses;
use crate::ops::kernels::Kernels;
use crate::ops::matmul::cublas::{cublas_for, cublas_usable};
use crate::ops::squared_norms::{SquaredNorms, composed_squared_norms};

impl SquaredNorms for CudaPlain {
    fn squared_norms(vectors: Vec<FloatTensor<Self>>, kernels: Kernels) -> FloatTensor<Self> {
        let vectors: Vec<_> = vectors.into_iter().map(into_contiguous).collect();
        let fits = |v: &FloatTensor<Self>| v.dtype == DType::F32 && v.meta.shape.len() == 1 && v.meta.shape[0] <= i32::MAX as usize;
        let first = vectors.first().expect("at least one vector");
        let cublas = (cublas_usable(kernels) && vectors.iter().all(fits)).then(|| cublas_for(&first.client, first.device.index as i32)).flatten();
        let Some(cublas) = cublas else {
            return composed_squared_norms::<Self>(vectors);
        };
        let client = first.client.clone();
        let out = empty_device_contiguous_dtype(client.clone(), first.device.clone(), [vectors.len()].into(), DType::F32);
        let buffers: Vec<_> = std::iter::once(&out).chain(&vectors).collect();
        // SAFETY: `out` holds one f32 per vector; each vector is a live contiguous f32 cubecl
        // buffer of `len` elements, held until this returns; cuBLAS runs on cubecl's stream
        // (see `ops::matmul::cublas`), and the pointer mode is set back to "host" (what the
        // products pass) before returning.
        with_addresses(&client, &buffers, |addresses| unsafe {
            let out_ptr = addresses[0] as *mut f32;
            cublas::cublasSetPointerMode_v2(cublas.handle, cublasPointerMode_t::CUBLAS_POINTER_MODE_DEVICE).result().expect("cuBLAS pointer mode");
            for (i, (v, &at)) in vectors.iter().zip(&addresses[1..]).enumerate() {
                let x = at as *const c_void;
                let n = v.meta.shape[0] as i32;
                let kind = cudaDataType::CUDA_R_32F;
                cublas::cublasDotEx(cublas.handle, n, x, kind, 1, x, kind, 1, out_ptr.add(i).cast::<c_void>(), kind, kind)
                    .result()
                    .unwrap_or_else(|e| panic!("cuBLAS dot of {n} values failed: {e}"));
            }
            cublas::cublasSetPointerMode_v2(cublas.handle, cublasPointerMode_t::CUBLAS_POINTER_MODE_HOST).result().expect("cuBLAS pointer mode");
        });
        out
    }
}
