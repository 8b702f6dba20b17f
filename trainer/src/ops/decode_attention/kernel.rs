//! A decoding step's attention (`decode_attention`) as one CUDA kernel for burn's CUDA
//! backend without fusion. A cube takes one row and one key/value head, 4 planes of 32
//! lanes; a row's position is found through its table of blocks (`ops::kv_write`). The
//! row's new key and value are written into the cache first; the cube's query
//! heads (the group that shares the key/value head) wait in shared memory, scaled, in f32.
//! The planes then take tiles of 32 of the row's positions in turn, from its first to its
//! new key:
//! - scores: a quad of 4 lanes reads one position's key (16-byte loads, 64 contiguous
//!   bytes a quad at once) and takes its dot products with every query of the group;
//! - the online softmax: per query head, the tile's maximum and sum across the plane's
//!   lanes, the plane's running maximum and sum updated once a tile;
//! - values: each lane holds `head_dim / 32` values of the output of every query head; the
//!   plane walks the tile's positions, reading each value row in one coalesced load and
//!   taking each position's weights from the lane that scored it.
//!
//! The planes' partial results meet in shared memory, and each plane finishes query heads
//! of the group. The cache is read once for the whole group, in its dtype; scores, weights
//! and sums are f32.

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::{PLANE, empty_like, has_planes};
use crate::ops::decode_attention::{DecodeAttention, composed_decode_attention};
use crate::ops::kernels::Kernels;
use crate::ops::kv_write::Placement;

/// Planes per cube.
const PLANES: u32 = 4;
/// The most query heads a key/value head serves that the kernel takes (their running sums
/// live in registers).
const MOST_GROUP: usize = 8;
/// Keys are read 8 values (16 bytes in bf16) at a time.
type Wide = Const<8>;

/// The index of the row's position `p` of key/value head `head` in a cache `[blocks,
/// kv_heads, block, head_dim]` counted in `head_dim`-long rows: the row's table (from
/// `row_at` in `placement`, after its start and first) names the block.
#[cube]
fn cache_position<I: Int>(placement: &Tensor<I>, row_at: usize, p: u32, head: usize, kv_heads: usize, block: u32) -> usize {
    let b = u32::cast_from(placement[row_at + 2 + (p / block) as usize]) as usize;
    (b * kv_heads + head) * block as usize + (p % block) as usize
}

/// For the cube's row `r` and key/value head `h`: the row's position `start` of head `h`
/// takes `new[r, h]` (keys and values) and, for each query head `j` of the group, `out[r,
/// j] = softmax(q[r, j] · kᵀ · scale) v` over the row's positions `first..=start`;
/// `placement` holds each row's start, first and blocks, `stride` numbers a row. Keys in
/// vectors of 8 values, queries, values and the output in vectors of `per_lane` (32 a
/// head).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn decode_attention_kernel<E: Float, I: Int, N: Size>(
    q: &Tensor<Vector<E, N>>,
    new_k: &Tensor<Vector<E, Wide>>,
    new_v: &Tensor<Vector<E, N>>,
    k_cache: &mut Tensor<Vector<E, Wide>>,
    v_cache: &mut Tensor<Vector<E, N>>,
    out: &mut Tensor<Vector<E, N>>,
    placement: &Tensor<I>,
    block: u32,
    stride: u32,
    scale: f32,
    #[comptime] group: usize,
    #[comptime] per_lane: usize,
    #[define(E, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS_X as usize;
    let head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let lanes = PLANE as usize;
    let d = comptime!(PLANE as usize * per_lane);
    let wide = comptime!(PLANE as usize * per_lane / 8);
    let row_at = row * stride as usize;
    let start = u32::cast_from(placement[row_at]);
    let first = u32::cast_from(placement[row_at + 1]);
    // The new key and value go into the cache before anything reads it.
    if plane == 0 {
        let new_at = row * kv_heads + head;
        let at = cache_position(placement, row_at, start, head, kv_heads, block);
        if lane < wide {
            k_cache[at * wide + lane] = new_k[new_at * wide + lane];
        }
        v_cache[at * lanes + lane] = new_v[new_at * lanes + lane];
    }
    // The group's queries, scaled, in f32: query head g's value x at g * d + x.
    let mut queries = SharedMemory::<f32>::new(comptime!(group * PLANE as usize * per_lane));
    let unit = UNIT_POS_Y * CUBE_DIM_X + UNIT_POS_X;
    for i in range_stepped(unit, comptime!((group * PLANE as usize) as u32), CUBE_DIM_X * CUBE_DIM_Y) {
        let i = i as usize;
        let qv = q[(row * kv_heads + head) * comptime!(group * PLANE as usize) + i];
        #[unroll]
        for x in 0..per_lane {
            queries[i * per_lane + x] = f32::cast_from(qv[x]) * scale;
        }
    }
    sync_cube();
    let mut m = Array::<f32>::new(group);
    let mut l = Array::<f32>::new(group);
    let mut acc = Array::<f32>::new(comptime!(group * per_lane));
    #[unroll]
    for g in 0..group {
        m[g] = f32::new(-3.0e38);
        l[g] = f32::new(0.0);
        #[unroll]
        for x in 0..per_lane {
            acc[g * per_lane + x] = f32::new(0.0);
        }
    }
    // A quad of 4 lanes scores one position: lane `sub` of the quad takes the key's 16-byte
    // vectors `sub`, `sub + 4`, ... (the quad reads 64 contiguous bytes at once), and the
    // quad sums its partial dot products. Four rounds of 8 positions make a tile of 32:
    // round r's score of position `tile + quad + 8 r` is at `scores[r * group + g]`.
    let quad = UNIT_POS_X / 4;
    let sub = (UNIT_POS_X % 4) as usize;
    let mut scores = Array::<f32>::new(comptime!(4 * group));
    for tile in range_stepped(first + UNIT_POS_Y * PLANE, start + 1, PLANE * CUBE_DIM_Y) {
        #[unroll]
        for r in 0..4usize {
            // Past the new key, the quad reads the new key again (no branch keeps the loads
            // of the rounds apart) and its score is dropped.
            let p = tile + quad + comptime!(8 * r as u32);
            let at = cache_position(placement, row_at, min(p, start), head, kv_heads, block) * wide;
            #[unroll]
            for g in 0..group {
                scores[r * group + g] = f32::new(0.0);
            }
            #[unroll]
            for k in 0..per_lane {
                let kv = k_cache[at + k * 4 + sub];
                #[unroll]
                for e in 0..8usize {
                    let key = f32::cast_from(kv[e]);
                    #[unroll]
                    for g in 0..group {
                        scores[r * group + g] += queries[g * d + (k * 4 + sub) * 8 + e] * key;
                    }
                }
            }
            #[unroll]
            for g in 0..group {
                let partial = scores[r * group + g];
                let pair = partial + plane_shuffle_xor(partial, 1);
                let whole = pair + plane_shuffle_xor(pair, 2);
                scores[r * group + g] = select(p <= start, whole, f32::new(-3.0e38));
            }
        }
        // The online softmax, once a tile for each query head (a quad's lanes hold the same
        // scores: the sum counts each quad's first lane).
        #[unroll]
        for g in 0..group {
            let local = max(max(scores[g], scores[group + g]), max(scores[2 * group + g], scores[3 * group + g]));
            let top = max(m[g], plane_max(local));
            let kept = (m[g] - top).exp();
            let mut local_sum = f32::new(0.0);
            #[unroll]
            for r in 0..4usize {
                let weight = (scores[r * group + g] - top).exp();
                scores[r * group + g] = weight;
                local_sum += weight;
            }
            l[g] = l[g] * kept + plane_sum(select(sub == 0, local_sum, f32::new(0.0)));
            m[g] = top;
            #[unroll]
            for x in 0..per_lane {
                acc[g * per_lane + x] *= kept;
            }
        }
        // Values: each position's row, weighted by the score of the quad that has it (past
        // the new key, its row again with a weight of 0: no branch, so the tile's 32 loads
        // are in flight together).
        #[unroll]
        for j in 0..32u32 {
            let vv = v_cache[cache_position(placement, row_at, min(tile + j, start), head, kv_heads, block) * lanes + lane];
            #[unroll]
            for g in 0..group {
                let weight = plane_broadcast(scores[comptime!((j / 8) as usize * group) + g], comptime!((j % 8) * 4));
                #[unroll]
                for x in 0..per_lane {
                    acc[g * per_lane + x] += weight * f32::cast_from(vv[x]);
                }
            }
        }
    }
    // The planes' partial results meet in shared memory.
    let mut maxes = SharedMemory::<f32>::new(comptime!(PLANES as usize * group));
    let mut sums = SharedMemory::<f32>::new(comptime!(PLANES as usize * group));
    let mut values = SharedMemory::<f32>::new(comptime!(PLANES as usize * group * PLANE as usize * per_lane));
    #[unroll]
    for g in 0..group {
        if lane == 0 {
            maxes[plane * group + g] = m[g];
            sums[plane * group + g] = l[g];
        }
        #[unroll]
        for x in 0..per_lane {
            values[((plane * group + g) * lanes + lane) * per_lane + x] = acc[g * per_lane + x];
        }
    }
    sync_cube();
    for g in range_stepped(UNIT_POS_Y, comptime!(group as u32), CUBE_DIM_Y) {
        let g = g as usize;
        let mut top = f32::new(-3.0e38);
        #[unroll]
        for w in 0..PLANES as usize {
            top = max(top, maxes[w * group + g]);
        }
        let mut total = f32::new(0.0);
        let mut weighted = Array::<f32>::new(per_lane);
        #[unroll]
        for x in 0..per_lane {
            weighted[x] = f32::new(0.0);
        }
        #[unroll]
        for w in 0..PLANES as usize {
            let factor = (maxes[w * group + g] - top).exp();
            total += sums[w * group + g] * factor;
            #[unroll]
            for x in 0..per_lane {
                weighted[x] += values[((w * group + g) * lanes + lane) * per_lane + x] * factor;
            }
        }
        let mut o = Vector::<E, N>::empty();
        #[unroll]
        for x in 0..per_lane {
            o[x] = E::cast_from(weighted[x] / total);
        }
        out[((row * kv_heads + head) * group + g) * lanes + lane] = o;
    }
}

/// The group size and values per lane when the tensors fit the kernel: contiguous, one
/// float dtype, heads of 64, 128 or 256 values, at most `MOST_GROUP` query heads a
/// key/value head, indices in u32.
fn kernel_shape(q: &CubeTensor<CudaRuntime>, new: &[CubeTensor<CudaRuntime>; 2], caches: &[CubeTensor<CudaRuntime>; 2]) -> Option<(usize, usize)> {
    let [rows, heads, _, d] = q.meta.shape[..] else { return None };
    let [_, kv_heads, _, _] = caches[0].meta.shape[..] else { return None };
    let dtype = q.dtype;
    let same = new.iter().chain(caches).all(|x| x.dtype == dtype);
    let float = matches!(dtype, DType::F32 | DType::BF16 | DType::F16);
    let per_lane = d / PLANE as usize;
    let lanes_fit = d.is_multiple_of(PLANE as usize) && matches!(per_lane, 2 | 4 | 8);
    let group = heads / kv_heads;
    // Rows are the grid's first dimension (up to 2^31 - 1), key/value heads its second (up to 65,535).
    let sizes_fit = rows > 0 && rows < i32::MAX as usize && kv_heads < u16::MAX as usize && caches[0].meta.shape.num_elements() < u32::MAX as usize;
    (same && float && lanes_fit && group <= MOST_GROUP && sizes_fit && has_planes(q)).then_some((group, per_lane))
}

impl DecodeAttention for CudaPlain {
    fn decode_attention(
        q: FloatTensor<Self>,
        new: [FloatTensor<Self>; 2],
        caches: [FloatTensor<Self>; 2],
        at: &Placement<Self>,
        scale: f64,
        kernels: Kernels,
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2]) {
        let (q, new, caches) = (into_contiguous(q), new.map(into_contiguous), caches.map(into_contiguous));
        let Some((group, per_lane)) = kernel_shape(&q, &new, &caches) else {
            return composed_decode_attention::<Self>(q, new, caches, at, scale, kernels);
        };
        // Written in place when a cache is its buffer's only owner (between steps it is).
        let owned = |cache: CubeTensor<CudaRuntime>| if cache.can_mut() { cache } else { cache.copy() };
        let [k_cache, v_cache] = caches.map(owned);
        let [new_k, new_v] = new;
        let [rows, _, _, _] = q.meta.shape[..] else { unreachable!("decode_attention checked a 4-d query") };
        let [_, kv_heads, block, _] = k_cache.meta.shape[..] else { unreachable!("decode_attention checked a 4-d cache") };
        let out = empty_like(&q, q.meta.shape.to_vec(), q.dtype);
        let placement = into_contiguous(at.table.clone().into_primitive());
        let dtypes = [q.dtype.into(), placement.dtype.into()];
        decode_attention_kernel::launch::<CudaRuntime>(
            &q.client.clone(),
            CubeCount::new_2d(rows as u32, kv_heads as u32),
            CubeDim::new_2d(PLANE, PLANES),
            per_lane,
            q.into_tensor_arg(),
            new_k.into_tensor_arg(),
            new_v.into_tensor_arg(),
            k_cache.clone().into_tensor_arg(),
            v_cache.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            placement.into_tensor_arg(),
            block as u32,
            (2 + at.width) as u32,
            scale as f32,
            group,
            per_lane,
            dtypes,
        );
        (out, [k_cache, v_cache])
    }
}
