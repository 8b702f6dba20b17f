//! The token pick (`pick_tokens`) as one CUDA kernel for burn's CUDA backend without
//! fusion: one cube of 1,024 units per row (a row is one cube: fewer units left most of the
//! card idle at a batch of 256); each unit walks its share of the vocabulary once
//! (the logits read in their dtype, computed in f32), scoring each token as the host does
//! (`pick_row`) and keeping its best; planes take the best of their units (the lowest id
//! among equal scores), and the first unit the best of the planes.

use burn::tensor::DType;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::{PLANE, empty_like, has_planes};
use crate::ops::pick_tokens::early_read::EarlyRead;
use crate::ops::pick_tokens::{PickTokens, PicksReader, host_pick};

/// Planes per cube (one cube per row).
const PLANES: u32 = 32;

/// `pick_tokens::mix` on the device.
#[cube]
fn mix(h: u32) -> u32 {
    let h = h ^ (h >> 16u32);
    let h = h * 0x7feb_352du32;
    let h = h ^ (h >> 15u32);
    let h = h * 0x846c_a68bu32;
    h ^ (h >> 16u32)
}

#[cube(launch)]
fn pick_tokens_kernel<E: Float, I: Int>(
    logits: &Tensor<E>,
    hashes: &Tensor<I>,
    picked: &mut Tensor<I>,
    vocab: u32,
    temperature: f32,
    #[define(E, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS_X as usize;
    let start = row * vocab as usize;
    let unit = UNIT_POS_Y * CUBE_DIM_X + UNIT_POS_X;
    let hash = u32::cast_from(hashes[row]);
    let mut best = f32::new(-3.0e38);
    let mut best_at = vocab;
    for j in range_stepped(unit, vocab, CUBE_DIM_X * CUBE_DIM_Y) {
        let x = f32::cast_from(logits[start + j as usize]);
        let mut score = x;
        if temperature > 0.0 {
            let u = (f32::cast_from(mix(hash ^ (j * 0x9e37_79b9u32)) >> 8u32) + 0.5) * (1.0 / 16_777_216.0);
            score = x / temperature - (-u.ln()).ln();
        }
        if score > best {
            best = score;
            best_at = j;
        }
    }
    // The plane's best score, then the lowest id that has it.
    let plane_best = plane_max(best);
    // `vocab` stands for none.
    let mut candidate = vocab;
    if best == plane_best {
        candidate = best_at;
    }
    let plane_at = plane_min(candidate);
    let mut scores = SharedMemory::<f32>::new(PLANES as usize);
    let mut ids = SharedMemory::<u32>::new(PLANES as usize);
    if UNIT_POS_X == 0 {
        scores[UNIT_POS_Y as usize] = plane_best;
        ids[UNIT_POS_Y as usize] = plane_at;
    }
    sync_cube();
    if unit == 0 {
        let mut top = scores[0];
        let mut at = ids[0];
        for i in 1..CUBE_DIM_Y {
            let s = scores[i as usize];
            let id = ids[i as usize];
            if s > top || (s == top && id < at) {
                top = s;
                at = id;
            }
        }
        // A row of NaN logits keeps no candidate: token 0.
        if at >= vocab {
            at = 0;
        }
        picked[row] = I::cast_from(at);
    }
}

/// `[rows, vocab]` of contiguous logits the kernel takes, or `None`.
fn kernel_shape(logits: &CubeTensor<CudaRuntime>) -> Option<[u32; 2]> {
    let [rows, vocab] = logits.meta.shape[..] else { return None };
    let dtype = matches!(logits.dtype, DType::F32 | DType::BF16 | DType::F16);
    let fits = rows > 0 && vocab > 0 && rows < i32::MAX as usize && vocab < i32::MAX as usize;
    (dtype && has_planes(logits) && fits).then_some([rows as u32, vocab as u32])
}

impl PickTokens for CudaPlain {
    fn picks_reader(device: &Self::Device) -> Box<dyn PicksReader<Self>> {
        Box::new(EarlyRead::new(device))
    }

    fn pick_tokens(logits: FloatTensor<Self>, hashes: IntTensor<Self>, temperature: f32) -> IntTensor<Self> {
        let (logits, hashes) = (into_contiguous(logits), into_contiguous(hashes));
        let Some([rows, vocab]) = kernel_shape(&logits) else {
            return host_pick::<Self>(logits, hashes, temperature);
        };
        let picked = empty_like(&hashes, vec![rows as usize], hashes.dtype);
        let dtypes = [logits.dtype.into(), hashes.dtype.into()];
        pick_tokens_kernel::launch::<CudaRuntime>(
            &logits.client.clone(),
            CubeCount::new_1d(rows),
            CubeDim::new_2d(PLANE, PLANES),
            logits.into_tensor_arg(),
            hashes.into_tensor_arg(),
            picked.clone().into_tensor_arg(),
            vocab,
            temperature,
            dtypes,
        );
        picked
    }
}
