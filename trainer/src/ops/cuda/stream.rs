//! The CUDA stream cubecl runs this thread's work on, so that work from another library
//! (cuBLAS) can be enqueued on the same stream, in order with cubecl's kernels, without the
//! host waiting for either.
//!
//! cubecl 0.10 keeps its streams private. Each one is found once per thread by watching the
//! driver with CUPTI's callback API (`libcupti`, shipped with the CUDA toolkit and PyTorch's
//! CUDA wheels): while subscribed to `cuEventRecord`, a `sync` of cubecl's client records
//! its fence on the stream, and the callback reads the stream argument. Exactly one stream
//! must be seen; anything else (no CUPTI, another subscriber such as a profiler, no or
//! several streams) is an error saying which, and the caller keeps to cubecl.
//! [`on_stream`] keeps what was found per thread and device, with the device's context;
//! [`with_addresses`] hands another library the device addresses of cubecl's buffers.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ffi::c_void;
use std::sync::Mutex;

use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::ComputeClient;
use cudarc::cupti::sys as cupti;
use cudarc::driver::result as driver;
use cudarc::driver::sys::{CUcontext, CUstream};

/// Where this thread's cubecl work on a device runs: the device's primary context (the
/// one cubecl runs in) and the stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OnStream {
    pub context: CUcontext,
    pub stream: CUstream,
}

thread_local! {
    /// This thread's stream per device, or why it was not found.
    static STREAMS: RefCell<Vec<(i32, Result<OnStream, String>)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's context and cubecl stream on `device` (found at the first call, then
/// remembered), with the context made current; or why the stream was not found.
pub(crate) fn on_stream(client: &ComputeClient<CudaRuntime>, device: i32) -> Result<OnStream, String> {
    let found = STREAMS.with(|cell| {
        let mut known = cell.borrow_mut();
        if let Some((_, found)) = known.iter().find(|(d, _)| *d == device) {
            return found.clone();
        }
        // SAFETY: retaining the primary context of a device cubecl already runs on (never
        // released: it lives as long as the process).
        let found = unsafe { driver::primary_ctx::retain(driver::device::get(device).expect("a CUDA device")) }
            .map_err(|e| format!("the primary CUDA context: {e}"))
            .and_then(|context| {
                // SAFETY: the context was just retained.
                unsafe { driver::ctx::set_current(context) }.map_err(|e| format!("making the CUDA context current: {e}"))?;
                cubecl_stream(client).map(|stream| OnStream { context, stream })
            });
        known.push((device, found.clone()));
        found
    })?;
    // SAFETY: a primary context retained above and never released.
    unsafe { driver::ctx::set_current(found.context) }.expect("the CUDA context made current");
    Ok(found)
}

/// Streams seen by the callback while subscribed.
type Seen = Mutex<BTreeSet<usize>>;

unsafe extern "C" fn on_driver_call(userdata: *mut c_void, _domain: cupti::CUpti_CallbackDomain, _cbid: cupti::CUpti_CallbackId, data: *const c_void) {
    // SAFETY: CUPTI passes the `userdata` given at subscription (a live `Seen`) and, for
    // the one callback enabled (`cuEventRecord`), that call's data and parameters.
    unsafe {
        let data = &*(data as *const cupti::CUpti_CallbackData);
        if data.callbackSite != cupti::CUpti_ApiCallbackSite::CUPTI_API_ENTER || data.functionParams.is_null() {
            return;
        }
        let params = &*(data.functionParams as *const cupti::cuEventRecord_params_st);
        if let Ok(mut seen) = (*(userdata as *const Seen)).lock() {
            seen.insert(params.hStream as usize);
        }
    }
}

/// The stream of this thread's cubecl work on `client`, or why it was not found.
pub fn cubecl_stream(client: &ComputeClient<CudaRuntime>) -> Result<CUstream, String> {
    // SAFETY: only tries to open the library.
    if !unsafe { cupti::is_culib_present() } {
        return Err("libcupti (CUDA 13: libcupti.so.13) is not on the library path".into());
    }
    let seen: Box<Seen> = Box::default();
    let mut subscriber: cupti::CUpti_SubscriberHandle = std::ptr::null_mut();
    // SAFETY: `seen` outlives the subscription (unsubscribed below before it drops).
    unsafe {
        let status = cupti::cuptiSubscribe(&mut subscriber, Some(on_driver_call), &*seen as *const Seen as *mut c_void);
        if status != cupti::CUptiResult::CUPTI_SUCCESS {
            return Err(format!("CUPTI's callback API is taken ({status:?}; a profiler?)"));
        }
        let cbid = cupti::CUpti_driver_api_trace_cbid_enum::CUPTI_DRIVER_TRACE_CBID_cuEventRecord as cupti::CUpti_CallbackId;
        let enabled = cupti::cuptiEnableCallback(1, subscriber, cupti::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_DRIVER_API, cbid);
        let synced = if enabled == cupti::CUptiResult::CUPTI_SUCCESS {
            cubecl::future::block_on(client.sync()).map_err(|e| e.to_string())
        } else {
            Err(format!("{enabled:?}"))
        };
        cupti::cuptiUnsubscribe(subscriber);
        synced.map_err(|e| format!("watching cubecl's sync failed: {e}"))?;
    }
    let seen = seen.into_inner().unwrap_or_default();
    match seen.len() {
        1 if seen.first() != Some(&0) => Ok(*seen.first().expect("one stream") as CUstream),
        1 => Err("cubecl's sync recorded its event on the default stream".into()),
        n => Err(format!("cubecl's sync recorded events on {n} streams, not one")),
    }
}

/// Stops with what a failed address request means: the GPU work queued before it failed,
/// most often for want of device memory (cubecl's own message comes first on stderr).
fn device_failed(e: impl std::fmt::Debug) -> ! {
    panic!(
        "the GPU's work before this operation failed ({e:?}; cubecl's message is above): most often the device ran out of memory: lower the rows a pass takes (train.batch_size, ppo.micro_batch) or the sequence length"
    )
}

/// The device addresses of `tensors`' buffers, fetched in one request to cubecl's device
/// thread (each `get_resource` alone is a round trip the host waits for; one request instead
/// of three a product cut the host's CPU time of a step by a third, docs/PERF.md), handed
/// to `issue` while the buffers are held.
pub(crate) fn with_addresses<R>(client: &ComputeClient<CudaRuntime>, tensors: &[&CubeTensor<CudaRuntime>], issue: impl FnOnce(&[u64]) -> R) -> R {
    let handles: Vec<_> = tensors.iter().map(|t| t.handle.clone()).collect();
    let device_thread = client.clone();
    // On cubecl's device thread, `get_resource` runs at once (no further round trip).
    let resources =
        client.exclusive(move || handles.into_iter().map(|h| device_thread.get_resource(h)).collect::<Vec<_>>()).unwrap_or_else(|e| device_failed(e));
    let resources: Vec<_> = resources.into_iter().map(|r| r.unwrap_or_else(|e| device_failed(e))).collect();
    let addresses: Vec<u64> = resources.iter().map(|r| r.resource().ptr).collect();
    issue(&addresses)
}
