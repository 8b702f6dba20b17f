//! Picked tokens brought to the host from CUDA without fusion: the copy is queued on the
//! device's stream when asked for (behind the step that picked them, ahead of anything
//! issued later), and the host waits for it only when it needs the tokens.

use burn::prelude::*;
use burn::tensor::DType;
use burn_cubecl::kernel::into_contiguous;
use cubecl::client::ComputeClient;
use cubecl::cuda::CudaRuntime;
use cubecl::server::CopyDescriptor;

use crate::CudaPlain;
use crate::ops::pick_tokens::{PendingPicks, PicksReader};

/// Queues the picks' copy at once; waits when the tokens are asked for.
pub(super) struct EarlyRead {
    client: ComputeClient<CudaRuntime>,
}

impl EarlyRead {
    pub(super) fn new(device: &burn::backend::cuda::CudaDevice) -> Self {
        EarlyRead { client: <CudaRuntime as cubecl::Runtime>::client(device) }
    }
}

impl PicksReader<CudaPlain> for EarlyRead {
    fn start(&self, picked: Tensor<CudaPlain, 1, Int>) -> PendingPicks<'_> {
        let picked = into_contiguous(picked.into_primitive());
        let dtype = picked.dtype;
        let width = dtype.size();
        let descriptor = CopyDescriptor::new(picked.handle.clone().binding(), picked.meta.shape().clone(), picked.meta.strides().clone(), width);
        // Queued now, on this thread's stream.
        let copy = self.client.read_one_tensor_async(descriptor);
        Box::new(move || {
            anyhow::ensure!(matches!(width, 4 | 8), "picked tokens of {dtype:?} cannot be read");
            let bytes = cubecl::future::block_on(copy).map_err(|e| anyhow::anyhow!("reading the picked tokens from the GPU: {e}"))?;
            let id = |b: &[u8]| -> u32 {
                match dtype {
                    DType::I64 | DType::U64 => u64::from_le_bytes(b.try_into().expect("8 bytes")) as u32,
                    _ => u32::from_le_bytes(b.try_into().expect("4 bytes")),
                }
            };
            Ok(bytes.chunks_exact(width).map(id).collect())
        })
    }
}
