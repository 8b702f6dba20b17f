//! Tensors in page-locked host memory, copied to and from cubecl's device buffers on the
//! stream cubecl runs this thread's work on (`stream::on_stream`).
//!
//! A copy between a device buffer and page-locked memory runs at the bus's speed and is
//! only enqueued: it runs in order with the kernels around it and the host does not wait.
//! The host waits only when it reads the bytes ([`PinnedTensor::to_data`]) or frees them.
//! burn's own `into_data` / `from_data` instead wait for the device at every read and copy
//! through pageable memory (about 6 GB/s on an H100 host, docs/PERF.md).

use std::ffi::c_void;

use burn::tensor::{DType, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::Runtime;
use cubecl::cuda::{CudaDevice, CudaRuntime};
use cudarc::driver::result as driver;

use crate::ops::cuda::stream::{OnStream, on_stream, with_addresses};

/// A tensor's bytes in page-locked host memory, and the stream its copies run on.
pub struct PinnedTensor {
    at: *mut c_void,
    bytes: usize,
    shape: Vec<usize>,
    dtype: DType,
    place: OnStream,
}

// SAFETY: the buffer is owned by this value alone; the stream and context handles are
// process-wide driver handles, usable from any thread once the context is made current
// (`wait` does).
unsafe impl Send for PinnedTensor {}
unsafe impl Sync for PinnedTensor {}

impl PinnedTensor {
    /// Enqueues a copy of `t` into page-locked memory: into `reuse`'s buffer when it has
    /// the same size (its earlier copies are ordered before this one on the stream), into
    /// a new one otherwise. Errors say why no page-locked copy could be made (no stream
    /// found, no page-locked memory left); the caller keeps to burn's own copy then.
    pub fn download(t: &CubeTensor<CudaRuntime>, reuse: Option<PinnedTensor>) -> Result<PinnedTensor, String> {
        let t = contiguous(t.clone());
        let bytes = t.meta.shape().num_elements() * t.dtype.size();
        let place = on_stream(&t.client, t.device.index as i32)?;
        // (Not `PinnedTensor { .., ..old }`: that copies the buffer's address out of `old`,
        // whose drop then frees it.)
        let pinned = match reuse {
            Some(mut same) if same.bytes == bytes => {
                (same.shape, same.dtype, same.place) = (t.meta.shape().to_vec(), t.dtype, place);
                same
            }
            _ => PinnedTensor::new(bytes, t.meta.shape().to_vec(), t.dtype, place)?,
        };
        with_addresses(&t.client, &[&t], |at| {
            // SAFETY: `at[0]` is `t`'s live contiguous buffer of `bytes` bytes, held until
            // this returns; the copy is enqueued on the stream that wrote it, and a later
            // reuse of that buffer by cubecl is later work on the same stream. The host
            // buffer lives until `wait` in drop.
            let host = unsafe { std::slice::from_raw_parts_mut(pinned.at as *mut u8, bytes) };
            unsafe { driver::memcpy_dtoh_async(host, at[0], place.stream) }
                .unwrap_or_else(|e| panic!("copying {bytes} bytes to page-locked memory failed: {e}"));
        });
        Ok(pinned)
    }

    /// A new contiguous tensor on `device`, filled from these bytes by a copy enqueued on the
    /// stream (ordered after every copy into them enqueued before).
    pub fn upload(&self, device: &CudaDevice) -> CubeTensor<CudaRuntime> {
        let t = empty_device_contiguous_dtype(CudaRuntime::client(device), device.clone(), self.shape.clone().into(), self.dtype);
        with_addresses(&t.client, &[&t], |at| {
            // SAFETY: `at[0]` is the new contiguous buffer of `bytes` bytes, written by this
            // copy before any later work on the stream reads it.
            let host = unsafe { std::slice::from_raw_parts(self.at as *const u8, self.bytes) };
            unsafe { driver::memcpy_htod_async(at[0], host, self.place.stream) }
                .unwrap_or_else(|e| panic!("copying {} bytes from page-locked memory failed: {e}", self.bytes));
        });
        t
    }

    /// The bytes as burn's tensor data, once every copy into them has landed.
    pub fn to_data(&self) -> TensorData {
        self.wait();
        // SAFETY: no copy into the buffer is pending (waited above).
        let host = unsafe { std::slice::from_raw_parts(self.at as *const u8, self.bytes) };
        TensorData::from_bytes_vec(host.to_vec(), self.shape.clone(), self.dtype)
    }

    fn new(bytes: usize, shape: Vec<usize>, dtype: DType, place: OnStream) -> Result<Self, String> {
        // SAFETY: the context of `place` is current (`on_stream`); flags 0: plain page-locked.
        let at = unsafe { driver::malloc_host(bytes.max(1), 0) }.map_err(|e| format!("no page-locked host memory for {bytes} bytes ({e})"))?;
        Ok(PinnedTensor { at, bytes, shape, dtype, place })
    }

    /// Waits for the stream, so that no copy into or out of the buffer is pending.
    fn wait(&self) {
        // SAFETY: the context and stream are cubecl's, alive for the process.
        unsafe {
            driver::ctx::set_current(self.place.context).expect("the CUDA context made current");
            driver::stream::synchronize(self.place.stream).expect("waiting for the CUDA stream");
        }
    }
}

impl Drop for PinnedTensor {
    fn drop(&mut self) {
        self.wait();
        // SAFETY: allocated by `malloc_host` and no copy is pending (waited above).
        if let Err(e) = unsafe { driver::free_host(self.at) } {
            eprintln!("warning: freeing page-locked host memory failed: {e}");
        }
    }
}

/// `t` with contiguous row-major strides (a copy when cubecl pitched its rows).
fn contiguous(t: CubeTensor<CudaRuntime>) -> CubeTensor<CudaRuntime> {
    let t = into_contiguous(t);
    assert!(t.is_contiguous(), "a contiguous copy has row-major strides");
    t
}
