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

/// Where each row of a write goes: its slot and its first position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub slots: Vec<usize>,
    pub starts: Vec<usize>,
}

/// A backend that writes rows into a cache.
pub trait KvWrite: Backend {
    /// `cache` `[slots, heads, capacity, head_dim]` with `values` `[rows, heads, t,
    /// head_dim]` (the same dtype) written at `cache[slots[i], :, starts[i]..starts[i] + t,
    /// :]` for each row `i` (distinct slots, every block within the capacity); in place
    /// where the backend can.
    fn kv_write(cache: FloatTensor<Self>, values: FloatTensor<Self>, at: &Placement) -> FloatTensor<Self> {
        slice_by_slice::<Self>(cache, values, at)
    }
}

/// [`KvWrite::kv_write`] from burn's ops: one slice assignment per row.
pub(crate) fn slice_by_slice<B: Backend>(cache: FloatTensor<B>, values: FloatTensor<B>, at: &Placement) -> FloatTensor<B> {
    let mut cache = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(cache));
    let values = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(values));
    let [_, heads, t, d] = values.dims();
    for (row, (&slot, &start)) in at.slots.iter().zip(&at.starts).enumerate() {
        cache = cache.slice_assign([slot..slot + 1, 0..heads, start..start + t, 0..d], values.clone().slice([row..row + 1, 0..heads, 0..t, 0..d]));
    }
    cache.into_primitive().tensor()
}

/// [`KvWrite::kv_write`] on tensors, after checking the placement against the shapes.
pub fn kv_write<B: KvWrite>(cache: Tensor<B, 4>, values: Tensor<B, 4>, at: &Placement) -> Tensor<B, 4> {
    let ([slots, heads, capacity, d], [rows, value_heads, t, value_d]) = (cache.dims(), values.dims());
    assert!(heads == value_heads && d == value_d, "cache {:?} cannot take values {:?}", cache.dims(), values.dims());
    assert!(at.slots.len() == rows && at.starts.len() == rows, "{rows} rows need {rows} slots and starts, not {} and {}", at.slots.len(), at.starts.len());
    for (&slot, &start) in at.slots.iter().zip(&at.starts) {
        assert!(slot < slots && start + t <= capacity, "a write at slot {slot}, positions {start}..{} does not fit a cache of {slots} slots x {capacity}", start + t);
    }
    let mut seen = at.slots.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), rows, "a write's slots must be distinct");
    let raw = |x: Tensor<B, 4>| x.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::kv_write(raw(cache), raw(values), at)))
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
        let written = kv_write(cache, values, &Placement { slots: vec![2, 0], starts: vec![1, 2] });
        let host: Vec<f32> = written.into_data().to_vec().unwrap();
        let mut want = vec![0.0f32; 24];
        want[16 + 2..16 + 6].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        want[4..8].copy_from_slice(&[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(host, want);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_block_past_the_capacity_is_refused() {
        let device = Default::default();
        kv_write(Tensor::<Cpu, 4>::zeros([1, 1, 4, 2], &device), Tensor::<Cpu, 4>::zeros([1, 1, 2, 2], &device), &Placement { slots: vec![0], starts: vec![3] });
    }
}
