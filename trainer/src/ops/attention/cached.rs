//! Attention of new queries over a key/value cache (generation's prefill and decoding
//! steps), under an additive bias that says which cached positions each query sees.
//!
//! The `heads / kv_heads` query heads of a group are consecutive, so a group's queries are
//! one `[group · seq, head_dim]` matrix and each product is one product per key/value head:
//! the cache is read as it lies, never repeated to the query heads. The products run in
//! the inputs' dtype on the backend's `Matmul::batched_matmul` (cuBLAS on CUDA without
//! fusion); the softmax under the bias computes in f32 (`CachedAttention`).

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorPrimitive};

use crate::ops::kernels::Kernels;
use crate::ops::matmul::{Matmul, batched_matmul};

/// A backend that runs attention over a cache: the products on `Matmul`, and the softmax
/// of the scores under the bias, burn's ops unless the backend has its own (CUDA without
/// fusion: one kernel, `biased_softmax_kernel`).
pub trait CachedAttention: Matmul {
    /// `softmax(scores + bias)` over the last dimension, in the scores' dtype (computed in
    /// f32), for `scores` `[batch, kv_heads, group · queries, keys]` (the rows of a group's
    /// heads, each `queries` rows) and `bias` `[batch, 1, queries, keys]` f32.
    fn biased_softmax(scores: FloatTensor<Self>, bias: FloatTensor<Self>, queries: usize) -> FloatTensor<Self> {
        composed_biased_softmax::<Self>(scores, bias, queries)
    }
}

/// [`CachedAttention::biased_softmax`] from burn's ops.
pub(crate) fn composed_biased_softmax<B: Backend>(scores: FloatTensor<B>, bias: FloatTensor<B>, queries: usize) -> FloatTensor<B> {
    let scores = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(scores));
    let bias = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(bias));
    let (dtype, [b, kv_heads, rows, keys]) = (scores.dtype(), scores.dims());
    let scores = to_f32(scores).reshape([b, kv_heads, rows / queries, queries, keys]) + bias.unsqueeze_dim::<5>(1);
    let p = softmax(scores, 4).reshape([b, kv_heads, rows, keys]);
    (if dtype == DType::F32 { p } else { p.cast(dtype) }).into_primitive().tensor()
}

impl CachedAttention for crate::Cpu {}
#[cfg(feature = "cuda")]
impl CachedAttention for crate::CudaFused {}
impl<B: CachedAttention, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> CachedAttention for burn::backend::Autodiff<B, C> {}

/// `softmax(q kᵀ · scale + bias) v` for `q` `[batch, heads, seq, head_dim]`, `k`, `v`
/// `[batch, kv_heads, keys, head_dim]` (query head `i` reads key/value head `i / (heads /
/// kv_heads)`) and `bias` `[batch, 1, seq, keys]` f32 (0 where a query sees a key, -inf
/// where it does not; every query must see at least one key): `[batch, heads, seq,
/// head_dim]` in `q`'s dtype.
pub fn cached_attention<B: CachedAttention>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Tensor<B, 4>,
    scale: f64,
    kernels: Kernels,
) -> Tensor<B, 4> {
    let [b, heads, seq, d] = q.dims();
    let [_, kv_heads, keys, _] = k.dims();
    assert!(kv_heads > 0 && heads % kv_heads == 0, "{heads} query heads cannot share {kv_heads} key/value heads");
    assert_eq!(bias.dims(), [b, 1, seq, keys], "the bias must be [batch, 1, queries, keys]");
    let group = heads / kv_heads;
    let grouped = q.reshape([b, kv_heads, group * seq, d]);
    let scores = batched_matmul(grouped, k.swap_dims(2, 3), scale, kernels);
    let p = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(B::biased_softmax(scores.into_primitive().tensor(), bias.into_primitive().tensor(), seq)));
    batched_matmul(p, v, 1.0, kernels).reshape([b, heads, seq, d])
}

fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 { x } else { x.cast(DType::F32) }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::Cpu;
    use crate::ops::attention::repeat_kv;

    /// Equal to burn's attention over keys and values repeated to the query heads, under the
    /// same mask, for causal prefill queries over a longer cache, left padding included.
    #[test]
    fn equals_burns_attention_over_repeated_heads() {
        let device = Default::default();
        Cpu::seed(&device, 3);
        let [b, heads, kv_heads, seq, keys, d] = [2, 6, 2, 3, 5, 4];
        let random = |dims: [usize; 4]| Tensor::<Cpu, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (random([b, heads, seq, d]), random([b, kv_heads, keys, d]), random([b, kv_heads, keys, d]));
        // Row 0: no padding, its queries at cache positions 2..5; row 1: one padding key first.
        let hidden: Vec<bool> = (0..b).flat_map(|row| (0..seq).flat_map(move |i| (0..keys).map(move |j| j > 2 + i || (row == 1 && j == 0)))).collect();
        let mask = Tensor::<Cpu, 4, Bool>::from_data(TensorData::new(hidden.clone(), [b, 1, seq, keys]), &device);
        let bias = Tensor::<Cpu, 4>::from_data(
            TensorData::new(hidden.iter().map(|&h| if h { f32::NEG_INFINITY } else { 0.0 }).collect::<Vec<f32>>(), [b, 1, seq, keys]),
            &device,
        );
        let scale = 0.5;
        let ours = cached_attention(q.clone(), k.clone(), v.clone(), bias, scale, Kernels::default());
        let options = burn::tensor::ops::AttentionModuleOptions { scale: Some(scale), ..Default::default() };
        let theirs = burn::tensor::module::attention(q, repeat_kv(k, heads), repeat_kv(v, heads), Some(mask.expand([b, heads, seq, keys])), None, options);
        let gap = (ours - theirs).abs().max().into_scalar();
        assert!(gap < 1e-5, "gap {gap}");
    }
}
