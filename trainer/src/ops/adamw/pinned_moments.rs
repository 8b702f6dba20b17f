//! AdamW's moments in page-locked host memory for burn's CUDA backend without fusion
//! (`ppo.optimizer_state = "host"`): after an update each moment is copied into its
//! page-locked buffer and before the next one back, both copies enqueued on the stream the
//! kernels run on, so the host never waits for them and they run at the bus's speed. A
//! moment's buffer is filled again at every step. Where no page-locked copy can be made
//! (cubecl's stream not found, no page-locked memory left) the moments are burn's tensor
//! data, read back at once, and why is said once.

use std::sync::{Arc, OnceLock};

use burn::tensor::{Tensor, TensorPrimitive};
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::{CudaDevice, CudaRuntime};

use crate::CudaPlain;
use crate::ops::adamw::HostTensor;
use crate::ops::cuda::pinned::PinnedTensor;

/// `t` handed to page-locked memory when `pinned` (into `reuse`'s buffer when that is one
/// of the same size no one else holds), else, or when it cannot be, read back as tensor data.
pub(super) fn to_host<const D: usize>(t: Tensor<CudaPlain, D>, reuse: Option<HostTensor>, pinned: bool) -> HostTensor {
    if !pinned {
        return HostTensor::Data(t.into_data());
    }
    let reuse = match reuse {
        Some(HostTensor::Pinned(shared)) => Arc::try_unwrap(shared).ok(),
        _ => None,
    };
    let cube: CubeTensor<CudaRuntime> = t.clone().into_primitive().tensor();
    match PinnedTensor::download(&cube, reuse) {
        Ok(pinned) => HostTensor::Pinned(Arc::new(pinned)),
        Err(why) => {
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| eprintln!("note: AdamW's moments go to pageable host memory, read back after every update (slower): {why}"));
            HostTensor::Data(t.into_data())
        }
    }
}

/// `h` on the card; a page-locked buffer comes back to be filled again.
pub(super) fn from_host<const D: usize>(h: HostTensor, device: &CudaDevice) -> (Tensor<CudaPlain, D>, Option<HostTensor>) {
    match h {
        HostTensor::Pinned(pinned) => {
            let t = Tensor::from_primitive(TensorPrimitive::Float(pinned.upload(device)));
            (t, Some(HostTensor::Pinned(pinned)))
        }
        HostTensor::Data(data) => (Tensor::from_data(data, device), None),
    }
}
