//! Writing rows' new keys or values into their slots of a key/value cache, each row at its
//! own position, as one backend op: generation's decoding step writes every slot's new
//! position (slots are at different lengths once new prompts take finished rows' places),
//! and a prefill writes new prompts into the slots they take.
//!
//! Composed from burn's ops it is one slice assignment per row; CUDA without fusion runs
//! one kernel (`kernel`) that writes every row's block in place.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;

/// Where each row of a write goes: its slot and its first position, and the first
/// position of its slot its queries see (a decoding step's attention,
/// `ops::decode_attention`), on the host and, as triples `(slot, start, first)` one row
/// after the other, on the device (uploaded once for every layer of a step).
#[derive(Clone, Debug)]
pub struct Placement<B: Backend> {
    pub slots: Vec<usize>,
    pub starts: Vec<usize>,
    pub firsts: Vec<usize>,
    pub table: Tensor<B, 1, Int>,
}

impl<B: Backend> Placement<B> {
    /// Rows at `slots` (distinct), each from its `starts` position (and seeing from there).
    pub fn new(slots: Vec<usize>, starts: Vec<usize>, device: &B::Device) -> Self {
        let firsts = starts.clone();
        Self::seeing(slots, starts, firsts, device)
    }

    /// Rows at `slots` (distinct), each written from its `starts` position, its queries
    /// seeing its slot from its `firsts` position (at most its start) on.
    pub fn seeing(slots: Vec<usize>, starts: Vec<usize>, firsts: Vec<usize>, device: &B::Device) -> Self {
        assert_eq!(slots.len(), starts.len(), "{} rows need as many starts, not {}", slots.len(), starts.len());
        assert_eq!(slots.len(), firsts.len(), "{} rows need as many first positions, not {}", slots.len(), firsts.len());
        assert!(firsts.iter().zip(&starts).all(|(f, s)| f <= s), "a row's first visible position comes before its writes");
        let mut seen = slots.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), slots.len(), "a write's slots must be distinct");
        let triples: Vec<i64> = slots.iter().zip(&starts).zip(&firsts).flat_map(|((&s, &p), &f)| [s as i64, p as i64, f as i64]).collect();
        let table = Tensor::from_data(TensorData::new(triples, [3 * slots.len()]), device);
        Placement { slots, starts, firsts, table }
    }
}

/// A backend that writes rows into a cache.
pub trait KvWrite: Backend {
    /// Each of `caches` (the keys' and the values', `[slots, heads, capacity, head_dim]`)
    /// with its `values` (`[rows, heads, t, head_dim]`, the same dtype) written at
    /// `cache[slots[i], :, starts[i]..starts[i] + t, :]` for each row `i` (distinct slots,
    /// every block within the capacity); in place where the backend can.
    fn kv_write(caches: [FloatTensor<Self>; 2], values: [FloatTensor<Self>; 2], at: &Placement<Self>) -> [FloatTensor<Self>; 2] {
        let [k_cache, v_cache] = caches;
        let [k, v] = values;
        [slice_by_slice::<Self>(k_cache, k, at), slice_by_slice::<Self>(v_cache, v, at)]
    }
}

/// [`KvWrite::kv_write`] from burn's ops: one slice assignment per row.
pub(crate) fn slice_by_slice<B: Backend>(cache: FloatTensor<B>, values: FloatTensor<B>, at: &Placement<B>) -> FloatTensor<B> {
    let mut cache = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(cache));
    let values = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(values));
    let [_, heads, t, d] = values.dims();
    for (row, (&slot, &start)) in at.slots.iter().zip(&at.starts).enumerate() {
        cache = cache.slice_assign([slot..slot + 1, 0..heads, start..start + t, 0..d], values.clone().slice([row..row + 1, 0..heads, 0..t, 0..d]));
    }
    cache.into_primitive().tensor()
}

/// [`KvWrite::kv_write`] on tensors, after checking the placement against the shapes.
pub fn kv_write<B: KvWrite>(caches: [Tensor<B, 4>; 2], values: [Tensor<B, 4>; 2], at: &Placement<B>) -> [Tensor<B, 4>; 2] {
    let ([slots, heads, capacity, d], [rows, value_heads, t, value_d]) = (caches[0].dims(), values[0].dims());
    assert!(caches[1].dims() == caches[0].dims() && values[1].dims() == values[0].dims(), "the keys and the values come in one shape");
    assert!(heads == value_heads && d == value_d, "cache {:?} cannot take values {:?}", caches[0].dims(), values[0].dims());
    assert!(at.slots.len() == rows, "{rows} rows need {rows} slots, not {}", at.slots.len());
    for (&slot, &start) in at.slots.iter().zip(&at.starts) {
        assert!(
            slot < slots && start + t <= capacity,
            "a write at slot {slot}, positions {start}..{} does not fit a cache of {slots} slots x {capacity}",
            start + t
        );
    }
    let raw = |x: Tensor<B, 4>| x.into_primitive().tensor();
    B::kv_write(caches.map(raw), values.map(raw), at).map(|x| Tensor::from_primitive(TensorPrimitive::Float(x)))
}

impl KvWrite for crate::Cpu {}
#[cfg(feature = "cuda")]
impl KvWrite for crate::CudaFused {}
impl<B: KvWrite, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> KvWrite for burn::backend::Autodiff<B, C> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn rows_land_in_their_slots_at_their_positions() {
        let device = Default::default();
        let cache = Tensor::<Cpu, 4>::zeros([3, 1, 4, 2], &device);
        let values = Tensor::<Cpu, 4>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [2, 1, 2, 2]), &device);
        let [k, v] = kv_write([cache.clone(), cache], [values.clone(), -values], &Placement::new(vec![2, 0], vec![1, 2], &device));
        let host = |x: Tensor<Cpu, 4>| x.into_data().to_vec::<f32>().unwrap();
        let mut want = vec![0.0f32; 24];
        want[16 + 2..16 + 6].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        want[4..8].copy_from_slice(&[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(host(k), want);
        assert_eq!(host(v), want.iter().map(|x| -x).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_block_past_the_capacity_is_refused() {
        let device = Default::default();
        let (cache, values) = (Tensor::<Cpu, 4>::zeros([1, 1, 4, 2], &device), Tensor::<Cpu, 4>::zeros([1, 1, 2, 2], &device));
        kv_write([cache.clone(), cache], [values.clone(), values], &Placement::new(vec![0], vec![3], &device));
    }
}
