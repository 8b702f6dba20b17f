//! One decoding step's attention over a key/value cache, as one backend op: each row
//! writes its new key and value into its slot at its position, and its query heads attend
//! to that slot from the row's first position (after its left padding) up to the new one.
//! Which positions a row sees comes from its placement (`Placement::firsts`, `starts`), so
//! no mask is built or uploaded per step.
//!
//! Composed from the trainer's other ops (the CPU, CUDA with fusion) it is the cache write,
//! a view of the first positions, a bias built from the rows' ranges and
//! `cached_attention`; CUDA without fusion runs one kernel (`kernel`) that writes the new
//! key and value and reads each row's cached ones once for its whole group of query heads.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;

use crate::ops::attention::cached::{CachedAttention, cached_attention};
use crate::ops::kernels::Kernels;
use crate::ops::kv_write::{KvWrite, Placement};

/// The composed path reads the caches' first positions in multiples of this.
const VIEW_BUCKET: usize = 64;

/// A backend that runs a decoding step's attention over a cache.
pub trait DecodeAttention: KvWrite + CachedAttention {
    /// For `q` `[rows, heads, 1, head_dim]`, the rows' new keys and values `new`
    /// (`[rows, kv_heads, 1, head_dim]`) and the caches (`[slots, kv_heads, capacity,
    /// head_dim]`, the same dtype): the caches with row `i`'s key and value written at
    /// `[slots[i], :, starts[i], :]` (in place where the backend can), and `softmax(q kᵀ ·
    /// scale) v` over that slot's positions `firsts[i]..=starts[i]` (`[rows, heads, 1,
    /// head_dim]`, query head `j` reading key/value head `j / (heads / kv_heads)`).
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
    let capacity = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(caches[0].clone())).dims()[2];
    let visible = at.starts.iter().max().map_or(0, |&s| s + 1).next_multiple_of(VIEW_BUCKET).min(capacity);
    let device = q.device();
    let in_order = at.slots.iter().enumerate().all(|(i, &s)| i == s);
    let slot_index = Tensor::<B, 1, Int>::from_data(TensorData::new(at.slots.iter().map(|&s| s as i64).collect::<Vec<_>>(), [rows]), &device);
    let view = |cache: &FloatTensor<B>| {
        let cache = tensor(cache.clone());
        let [_, kv_heads, _, _] = cache.dims();
        let rows_of = if in_order { cache } else { cache.select(0, slot_index.clone()) };
        rows_of.slice([0..rows, 0..kv_heads, 0..visible, 0..d])
    };
    let (k, v) = (view(&caches[0]), view(&caches[1]));
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
    let ([rows, heads, t, d], [slots, kv_heads, capacity, cache_d]) = (q.dims(), caches[0].dims());
    assert_eq!(t, 1, "a decoding step has one query a row, not {t}");
    assert!(kv_heads > 0 && heads % kv_heads == 0 && d == cache_d, "queries {:?} cannot attend to a cache {:?}", q.dims(), caches[0].dims());
    assert!(caches[1].dims() == caches[0].dims(), "the keys' and the values' caches come in one shape");
    assert!(new.iter().all(|x| x.dims() == [rows, kv_heads, 1, d]), "each row's new key and value are [{rows}, {kv_heads}, 1, {d}]");
    assert_eq!(at.slots.len(), rows, "{rows} rows need {rows} slots");
    for (&slot, &start) in at.slots.iter().zip(&at.starts) {
        assert!(slot < slots && start < capacity, "a new key at slot {slot}, position {start} does not fit a cache of {slots} slots x {capacity}");
    }
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

    /// Equal to writing the new keys and attending, under a bias, to each row's slot's
    /// range by `cached_attention`, with rows in scattered slots; the caches hold the new
    /// keys and values where they were placed.
    #[test]
    fn attends_to_each_rows_range_of_its_slot() {
        let device = Default::default();
        Cpu::seed(&device, 5);
        let [rows, heads, kv_heads, slots, capacity, d] = [3, 4, 2, 4, 7, 4];
        let random = |dims: [usize; 4]| Tensor::<Cpu, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let q = random([rows, heads, 1, d]);
        let (k, v) = (random([rows, kv_heads, 1, d]), random([rows, kv_heads, 1, d]));
        let (k_cache, v_cache) = (random([slots, kv_heads, capacity, d]), random([slots, kv_heads, capacity, d]));
        let (row_slots, starts, firsts) = (vec![2, 0, 3], vec![4, 6, 0], vec![1, 0, 0]);
        let at = Placement::seeing(row_slots.clone(), starts.clone(), firsts.clone(), &device);
        let (y, [k_after, v_after]) = decode_attention(q.clone(), [k.clone(), v.clone()], [k_cache.clone(), v_cache.clone()], &at, 0.5, Kernels::default());
        for row in 0..rows {
            let (slot, start, first) = (row_slots[row], starts[row], firsts[row]);
            let written = k_after.clone().slice([slot..slot + 1, 0..kv_heads, start..start + 1, 0..d]);
            assert_eq!(written.into_data(), k.clone().narrow(0, row, 1).into_data());
            let written = v_after.clone().slice([slot..slot + 1, 0..kv_heads, start..start + 1, 0..d]);
            assert_eq!(written.into_data(), v.clone().narrow(0, row, 1).into_data());
            // The row alone: its slot's keys first..=start, the new one last.
            let keys = |cache: &Tensor<Cpu, 4>, new: &Tensor<Cpu, 4>| {
                Tensor::cat(vec![cache.clone().slice([slot..slot + 1, 0..kv_heads, first..start, 0..d]), new.clone().narrow(0, row, 1)], 2)
            };
            let n = start - first + 1;
            let bias = Tensor::<Cpu, 4>::zeros([1, 1, 1, n], &device);
            let want = cached_attention(q.clone().narrow(0, row, 1), keys(&k_cache, &k), keys(&v_cache, &v), bias, 0.5, Kernels::default());
            let gap = (y.clone().narrow(0, row, 1) - want).abs().max().into_scalar();
            assert!(gap < 1e-6, "row {row}: gap {gap}");
        }
        // Nothing else in the caches moved.
        let untouched = k_after.narrow(0, 1, 1).into_data();
        assert_eq!(untouched, k_cache.narrow(0, 1, 1).into_data());
    }
}
