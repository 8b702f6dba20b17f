//! One decoding step's attention over a paged key/value cache (`ops::kv_write`), as one
//! backend op: each row writes its new key and value at its position, and its query heads
//! attend to the row's positions from its first (after its left padding) up to the new
//! one, read through its table of blocks. Which positions a row sees comes from its
//! placement (`Placement::firsts`, `starts`), so no mask is built or uploaded per step.
//!
//! Composed from the trainer's other ops (the CPU, CUDA with fusion) it is the cache write,
//! the rows' first positions gathered from their blocks, a bias built from the rows'
//! ranges and `cached_attention`; CUDA without fusion runs one kernel (`kernel`) that writes
//! the new key and value and reads each row's cached ones once for its whole group of
//! query heads.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;

use crate::ops::attention::cached::{CachedAttention, cached_attention};
use crate::ops::kernels::Kernels;
use crate::ops::kv_write::{KvWrite, Placement, check_within, gather_rows};

/// The composed path reads the caches' first positions in multiples of this.
const VIEW_BUCKET: usize = 64;

/// A backend that runs a decoding step's attention over a cache.
pub trait DecodeAttention: KvWrite + CachedAttention {
    /// For `q` `[rows, heads, 1, head_dim]`, the rows' new keys and values `new`
    /// (`[rows, kv_heads, 1, head_dim]`) and the caches (`[blocks, kv_heads, block,
    /// head_dim]`, the same dtype): the caches with row `i`'s key and value written at its
    /// position `starts[i]` (in place where the backend can), and `softmax(q kᵀ · scale) v`
    /// over its positions `firsts[i]..=starts[i]` (`[rows, heads, 1, head_dim]`, query head
    /// `j` reading key/value head `j / (heads / kv_heads)`).
    fn decode_attention(
        q: FloatTensor<Self>,
        new: [FloatTensor<Self>; 2],
        caches: [FloatTensor<Self>; 2],
        at: &Placement<Self>,
        scale: f64,
        kernels: Kernels,
    ) -> (FloatTensor<Self>, [FloatTensor<Self>; 2]) {
        composed_decode_attention::<Self>(q, new, caches, at, scale, kernels)
    }
}

/// [`DecodeAttention::decode_attention`] from the cache write and `cached_attention` under
/// a bias built on the host.
pub(crate) fn composed_decode_attention<B: KvWrite + CachedAttention>(
    q: FloatTensor<B>,
    new: [FloatTensor<B>; 2],
    caches: [FloatTensor<B>; 2],
    at: &Placement<B>,
    scale: f64,
    kernels: Kernels,
) -> (FloatTensor<B>, [FloatTensor<B>; 2]) {
    let caches = B::kv_write(caches, new, at);
    let tensor = |x: FloatTensor<B>| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    let q = tensor(q);
    let [rows, heads, _, d] = q.dims();
    // The first positions up to the newest key, rounded up so that a few shapes serve every
    // step (a backend that compiles per shape compiles few).
    let [_, _, block, _] = tensor(caches[0].clone()).dims();
    let capacity = at.width * block;
    let visible = at.starts.iter().max().map_or(0, |&s| s + 1).next_multiple_of(VIEW_BUCKET).min(capacity);
    let device = q.device();
    let (k, v) = (gather_rows(tensor(caches[0].clone()), at, visible), gather_rows(tensor(caches[1].clone()), at, visible));
    let bias: Vec<f32> = at
        .firsts
        .iter()
        .zip(&at.starts)
        .flat_map(|(&first, &start)| (0..visible).map(move |p| if p >= first && p <= start { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [rows, 1, 1, visible]), &device);
    let y = cached_attention(q, k, v, bias, scale, kernels);
    debug_assert_eq!(y.dims(), [rows, heads, 1, d]);
    (y.into_primitive().tensor(), caches)
}

/// [`DecodeAttention::decode_attention`] on tensors, after checking the shapes and the
/// placement.
pub fn decode_attention<B: DecodeAttention>(
    q: Tensor<B, 4>,
    new: [Tensor<B, 4>; 2],
    caches: [Tensor<B, 4>; 2],
    at: &Placement<B>,
    scale: f64,
    kernels: Kernels,
) -> (Tensor<B, 4>, [Tensor<B, 4>; 2]) {
    let ([rows, heads, t, d], [blocks, kv_heads, block, cache_d]) = (q.dims(), caches[0].dims());
    assert_eq!(t, 1, "a decoding step has one query a row, not {t}");
    assert!(kv_heads > 0 && heads % kv_heads == 0 && d == cache_d, "queries {:?} cannot attend to a cache {:?}", q.dims(), caches[0].dims());
    assert!(caches[1].dims() == caches[0].dims(), "the keys' and the values' caches come in one shape");
    assert!(new.iter().all(|x| x.dims() == [rows, kv_heads, 1, d]), "each row's new key and value are [{rows}, {kv_heads}, 1, {d}]");
    assert_eq!(at.rows(), rows, "{rows} rows need {rows} tables of blocks");
    check_within(&at.blocks, &at.starts, 1, blocks, block);
    let raw = |x: Tensor<B, 4>| x.into_primitive().tensor();
    let (y, caches) = B::decode_attention(raw(q), new.map(raw), caches.map(raw), at, scale, kernels);
    let tensor = |x: FloatTensor<B>| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    (tensor(y), caches.map(tensor))
}

impl DecodeAttention for crate::Cpu {}
#[cfg(feature = "cuda")]
impl DecodeAttention for crate::CudaFused {}
impl<B: DecodeAttention, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> DecodeAttention for burn::backend::Autodiff<B, C> {}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::Cpu;

    /// Equal to writing the new keys and attending, under a bias, to each row's range of
    /// positions by `cached_attention`, with rows in scattered blocks; the caches hold the
    /// new keys and values where they were placed.
    #[test]
    fn attends_to_each_rows_range_through_its_blocks() {
        let device = Default::default();
        Cpu::seed(&device, 5);
        let [rows, heads, kv_heads, blocks, block, d] = [3, 4, 2, 8, 3, 4];
        let random = |dims: [usize; 4]| Tensor::<Cpu, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let q = random([rows, heads, 1, d]);
        let (k, v) = (random([rows, kv_heads, 1, d]), random([rows, kv_heads, 1, d]));
        let (k_cache, v_cache) = (random([blocks, kv_heads, block, d]), random([blocks, kv_heads, block, d]));
        let (tables, starts, firsts) = (vec![vec![5, 2], vec![0, 7, 3], vec![6]], vec![4, 6, 0], vec![1, 0, 0]);
        let at = Placement::seeing(tables.clone(), starts.clone(), firsts.clone(), &device);
        let (y, [k_after, v_after]) = decode_attention(q.clone(), [k.clone(), v.clone()], [k_cache.clone(), v_cache.clone()], &at, 0.5, Kernels::default());
        for row in 0..rows {
            let (table, start, first) = (&tables[row], starts[row], firsts[row]);
            let (at_block, offset) = (table[start / block], start % block);
            let written = |cache: &Tensor<Cpu, 4>| cache.clone().slice([at_block..at_block + 1, 0..kv_heads, offset..offset + 1, 0..d]).into_data();
            assert_eq!(written(&k_after), k.clone().narrow(0, row, 1).into_data());
            assert_eq!(written(&v_after), v.clone().narrow(0, row, 1).into_data());
            // The row alone: its positions first..start from its blocks, the new key last.
            let keys = |cache: &Tensor<Cpu, 4>, new: &Tensor<Cpu, 4>| {
                let earlier: Vec<Tensor<Cpu, 4>> = (first..start)
                    .map(|p| cache.clone().slice([table[p / block]..table[p / block] + 1, 0..kv_heads, p % block..p % block + 1, 0..d]))
                    .collect();
                Tensor::cat(earlier.into_iter().chain([new.clone().narrow(0, row, 1)]).collect(), 2)
            };
            let n = start - first + 1;
            let bias = Tensor::<Cpu, 4>::zeros([1, 1, 1, n], &device);
            let want = cached_attention(q.clone().narrow(0, row, 1), keys(&k_cache, &k), keys(&v_cache, &v), bias, 0.5, Kernels::default());
            let gap = (y.clone().narrow(0, row, 1) - want).abs().max().into_scalar();
            assert!(gap < 1e-6, "row {row}: gap {gap}");
        }
        // Nothing else in the caches moved: block 1 and 4 belong to no row.
        for free in [1, 4] {
            assert_eq!(k_after.clone().narrow(0, free, 1).into_data(), k_cache.clone().narrow(0, free, 1).into_data());
        }
    }
}
