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

use std::collections::BTreeSet;
use std::ffi::c_void;
use std::sync::Mutex;

use cubecl::cuda::CudaRuntime;
use cubecl::prelude::ComputeClient;
use cudarc::cupti::sys as cupti;
use cudarc::driver::sys::CUstream;

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
