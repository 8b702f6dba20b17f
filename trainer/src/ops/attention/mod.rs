//! Causal self-attention as one autodiff operation with its own backward pass.
//!
//! Under autodiff, burn 0.21 runs attention as its composed fallback, op by op: every
//! intermediate of the `[batch, heads, seq, seq]` scores (scaled, masked, shifted,
//! exponentiated, normalised) is written out, kept for the backward pass and
//! differentiated op by op (the max of the softmax shift included). Here the forward keeps
//! only the probabilities `p`, and the backward is the closed form
//!
//! ```text
//! dv = pᵀ dy      dp = dy vᵀ      ds = p ⊙ (dp − rowsum(dp ⊙ p))
//! dq = ds k · scale               dk = dsᵀ q · scale
//! ```
//!
//! Keys and values come with their own (fewer) heads: the `rep = heads / kv_heads` query
//! heads of a group are consecutive in memory, so a group's queries are one `[rep · seq,
//! head_dim]` matrix and each product above is one product per key/value head, `dk` and
//! `dv` summed over the group by the product itself (no repeated copies of `k` and `v`, and
//! no sum over the copies' gradients).
//!
//! These generic passes take the products from the backend's `Matmul::batched_matmul` and
//! the softmax and its backward from the backend's `causal_softmax` and
//! `causal_softmax_backward` (burn's ops by default). A backend may run both passes its own
//! way (`attention_forward`, `attention_backward`, and what the forward keeps for the
//! backward, `Kept`): CUDA without fusion runs flash-attention kernels on tensor cores where
//! they take the inputs (`flash`: the scores never leave the chip, and only each
//! row's log-sum-exp is kept), else keeps only the scores causal attention reads, as a
//! staircase of query chunks on cuBLAS (`ops::attention::cublas`). Without gradients (generation, evaluation) the backend's
//! `causal_attention` runs: burn's own attention by default.
//! Implemented for the trainer's backends: the CPU (NdArray), CUDA with and without fusion,
//! and `Autodiff` over any of them.

#[cfg(feature = "cuda")]
mod biased_softmax_kernel;
pub mod cached;
pub mod check;

#[cfg(feature = "cuda")]
mod cublas;
#[cfg(feature = "cuda")]
mod flash;
#[cfg(feature = "cuda")]
mod flash_kernel;
#[cfg(feature = "cuda")]
mod flash_tiles;
#[cfg(feature = "cuda")]
mod softmax_kernel;
#[cfg(any(test, feature = "cuda"))]
mod staircase;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{TensorMetadata, TensorPrimitive};

use crate::ops::kernels::Kernels;
use crate::ops::matmul::Matmul;

/// A backend that runs causal attention, with gradients where it has them, and the parts
/// the attention op is made of.
pub trait CausalAttention: Matmul {
    /// `softmax(q kᵀ · scale + causal mask) v` for `q` `[batch, heads, seq, head_dim]` and
    /// `k`, `v` `[batch, kv_heads, seq, head_dim]` (`heads` a multiple of `kv_heads`, query
    /// head `i` reading key/value head `i / (heads / kv_heads)`); burn's own attention
    /// unless the backend has better.
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64, _kernels: Kernels) -> FloatTensor<Self> {
        backend_attention::<Self>(q, k, v, scale)
    }

    /// The forward pass with gradients to come: the output and what the backward pass
    /// reads.
    fn attention_forward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64, kernels: Kernels) -> (FloatTensor<Self>, Kept<Self>) {
        let (y, p) = forward_keeping_probabilities::<Self>(q, k, v, scale, kernels);
        (y, Kept::Probabilities(p))
    }

    /// The gradients of `q`, `k`, `v` from the output's gradient `dy` and what
    /// `attention_forward` kept.
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        kept: Kept<Self>,
        dy: FloatTensor<Self>,
        scale: f64,
        kernels: Kernels,
    ) -> [FloatTensor<Self>; 3] {
        gradients::<Self>(q, k, v, kept.probabilities(), dy, scale, kernels)
    }

    /// The softmax over the last dimension of `scores` (`[batch, heads, seq, seq]`), each
    /// query seeing the keys up to its own position: later keys get probability 0.
    fn causal_softmax(scores: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_causal_softmax::<Self>(scores)
    }

    /// The scores' gradient from the probabilities `p` and their gradient `dp`:
    /// `p ⊙ (dp − rowsum(dp ⊙ p))`.
    fn causal_softmax_backward(p: FloatTensor<Self>, dp: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_causal_softmax_backward::<Self>(p, dp)
    }
}

/// What the attention's forward pass keeps for its backward pass.
#[derive(Clone, Debug)]
pub enum Kept<B: Backend> {
    /// The probabilities, in the layout the backend keeps them in.
    Probabilities(FloatTensor<B>),
    /// The output and each query row's log-sum-exp of its scaled scores, `[batch, heads,
    /// seq]` f32 (flash attention: the backward pass computes the probabilities again).
    LogSumExp { out: FloatTensor<B>, lse: FloatTensor<B> },
}

impl<B: Backend> Kept<B> {
    /// The kept probabilities.
    ///
    /// # Panics
    /// When the forward pass kept the log-sum-exp: a backward pass that computes the
    /// probabilities from it must take it.
    pub fn probabilities(self) -> FloatTensor<B> {
        match self {
            Kept::Probabilities(p) => p,
            Kept::LogSumExp { .. } => panic!("the attention's forward pass ran flash attention, and this backward pass needs its probabilities"),
        }
    }
}

/// [`CausalAttention::causal_softmax`] from burn's ops: mask, then softmax.
pub(crate) fn composed_causal_softmax<B: Backend>(scores: FloatTensor<B>) -> FloatTensor<B> {
    let scores = tensor::<B>(scores);
    let [b, h, s, keys] = scores.dims();
    let hidden = Tensor::<B, 2, Bool>::tril_mask([s, keys], 0, &scores.device()).unsqueeze::<4>().expand([b, h, s, keys]);
    softmax(scores.mask_fill(hidden, f32::NEG_INFINITY), 3).into_primitive().tensor()
}

/// [`CausalAttention::causal_softmax_backward`] from burn's ops.
pub(crate) fn composed_causal_softmax_backward<B: Backend>(p: FloatTensor<B>, dp: FloatTensor<B>) -> FloatTensor<B> {
    let (p, dp) = (tensor::<B>(p), tensor::<B>(dp));
    let row = (dp.clone() * p.clone()).sum_dim(3);
    (p * (dp - row)).into_primitive().tensor()
}

/// [`CausalAttention::causal_attention`] on tensors.
pub fn causal_attention<B: CausalAttention>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, scale: f64, kernels: Kernels) -> Tensor<B, 4> {
    let raw = |t: Tensor<B, 4>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::causal_attention(raw(q), raw(k), raw(v), scale, kernels)))
}

fn tensor<B: Backend>(raw: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(raw))
}

/// `[b, kv_heads, t, d]` -> `[b, heads, t, d]`, each key/value head serving its group.
pub(crate) fn repeat_kv<B: Backend>(x: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [b, n, t, d] = x.dims();
    if heads == n {
        return x;
    }
    x.unsqueeze_dim::<5>(2).expand([b, n, heads / n, t, d]).reshape([b, heads, t, d])
}

/// The backend's own attention (burn's composed path: an explicit scale selects it on every
/// backend, see `attention::attention_options`), keys and values repeated to the query heads.
fn backend_attention<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    let options = AttentionModuleOptions { scale: Some(scale), is_causal: true, ..Default::default() };
    let heads = q.shape()[1];
    let (k, v) = (repeat_kv(tensor::<B>(k), heads), repeat_kv(tensor::<B>(v), heads));
    attention(tensor::<B>(q), k, v, None, None, options).into_primitive().tensor()
}

/// How the query heads group over the key/value heads: `[b, heads, t, d]` as `[b, kv_heads,
/// rep · t, d]` and back (reshapes of contiguous memory).
#[derive(Clone, Copy, Debug)]
struct Groups {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    seq: usize,
}

impl Groups {
    fn of<B: Backend>(q: &FloatTensor<B>, k: &FloatTensor<B>) -> Self {
        let (q, k) = (q.shape(), k.shape());
        assert!(k[1] > 0 && q[1] % k[1] == 0, "{} query heads cannot share {} key/value heads", q[1], k[1]);
        Groups { batch: q[0], heads: q[1], kv_heads: k[1], seq: q[2] }
    }

    /// A `[b, heads, t, last]` tensor as `[b, kv_heads, rep · t, last]`.
    fn grouped<B: Backend>(self, x: FloatTensor<B>) -> FloatTensor<B> {
        let last = x.shape()[3];
        B::float_reshape(x, [self.batch, self.kv_heads, self.heads / self.kv_heads * self.seq, last].into())
    }

    /// A `[b, kv_heads, rep · t, last]` tensor as `[b, heads, t, last]`.
    fn by_head<B: Backend>(self, x: FloatTensor<B>) -> FloatTensor<B> {
        let last = x.shape()[3];
        B::float_reshape(x, [self.batch, self.heads, self.seq, last].into())
    }
}

/// The forward pass from the backend's parts, and the probabilities `[batch, heads, seq,
/// seq]` it kept.
pub(crate) fn forward_keeping_probabilities<B: CausalAttention>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    scale: f64,
    kernels: Kernels,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let g = Groups::of::<B>(&q, &k);
    let scores = B::batched_matmul(g.grouped::<B>(q), B::float_swap_dims(k, 2, 3), scale, kernels);
    let p = B::causal_softmax(g.by_head::<B>(scores));
    (g.by_head::<B>(B::batched_matmul(g.grouped::<B>(p.clone()), v, 1.0, kernels)), p)
}

fn two<T>(products: Vec<T>) -> [T; 2] {
    products.try_into().unwrap_or_else(|_| panic!("two products asked, two given"))
}

/// The gradients of `q`, `k`, `v` from the output's gradient `dy` and the kept `p` (the
/// products that read the same input issued together).
pub(crate) fn gradients<B: CausalAttention>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    p: FloatTensor<B>,
    dy: FloatTensor<B>,
    scale: f64,
    kernels: Kernels,
) -> [FloatTensor<B>; 3] {
    let g = Groups::of::<B>(&q, &k);
    let dy = g.grouped::<B>(dy);
    let [dv, dp] =
        two(B::batched_matmuls(vec![(B::float_swap_dims(g.grouped::<B>(p.clone()), 2, 3), dy.clone(), 1.0), (dy, B::float_swap_dims(v, 2, 3), 1.0)], kernels));
    let ds = g.grouped::<B>(B::causal_softmax_backward(p, g.by_head::<B>(dp)));
    let [dq, dk] = two(B::batched_matmuls(vec![(ds.clone(), k, scale), (B::float_swap_dims(ds, 2, 3), g.grouped::<B>(q), scale)], kernels));
    [g.by_head::<B>(dq), dk, dv]
}

impl CausalAttention for crate::Cpu {}
#[cfg(feature = "cuda")]
impl CausalAttention for crate::CudaFused {}

/// The backward step (with the forward's kernel settings): the state is `q`, `k`, `v`, what
/// the forward pass kept and the scale.
#[derive(Debug)]
struct CausalAttentionBackward(Kernels);

impl<B: CausalAttention> Backward<B, 3> for CausalAttentionBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, Kept<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (q, k, v, kept, scale) = ops.state;
        let all = B::attention_backward(q, k, v, kept, dy, scale, self.0);
        for (parent, grad) in ops.parents.into_iter().zip(all) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: CausalAttention, C: CheckpointStrategy> CausalAttention for Autodiff<B, C> {
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64, kernels: Kernels) -> FloatTensor<Self> {
        match CausalAttentionBackward(kernels).prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, kept) = B::attention_forward(q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), scale, kernels);
                prep.finish((q.primitive, k.primitive, v.primitive, kept, scale), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::causal_attention(q.primitive, k.primitive, v.primitive, scale, kernels)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::{Cpu, CpuAutodiff};

    fn random(dims: [usize; 4], seed: u64) -> Tensor<CpuAutodiff, 4> {
        CpuAutodiff::seed(&Default::default(), seed);
        Tensor::random(dims, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn max_gap(a: Tensor<Cpu, 4>, b: Tensor<Cpu, 4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Values and the gradients of q, k and v of the op against burn's composed attention
    /// (keys and values repeated to the query heads) differentiated op by op, on a loss that
    /// weighs every output differently: the largest gap of each.
    fn gaps_to_burns_composed_attention(q_dims: [usize; 4], kv_dims: [usize; 4]) -> [f32; 4] {
        let scale = 0.5;
        let weights = random(q_dims, 9).detach();
        let run = |ours: bool| {
            let (q, k, v) = (random(q_dims, 1).require_grad(), random(kv_dims, 2).require_grad(), random(kv_dims, 3).require_grad());
            let y = if ours {
                causal_attention(q.clone(), k.clone(), v.clone(), scale, Kernels::default())
            } else {
                tensor::<CpuAutodiff>(backend_attention::<CpuAutodiff>(
                    q.clone().into_primitive().tensor(),
                    k.clone().into_primitive().tensor(),
                    v.clone().into_primitive().tensor(),
                    scale,
                ))
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let g = |t: &Tensor<CpuAutodiff, 4>| t.grad(&grads).expect("a gradient");
            (y.inner(), g(&q), g(&k), g(&v))
        };
        let (ours, theirs) = (run(true), run(false));
        [max_gap(ours.0, theirs.0), max_gap(ours.1, theirs.1), max_gap(ours.2, theirs.2), max_gap(ours.3, theirs.3)]
    }

    #[test]
    fn values_and_gradients_equal_burns_composed_attention() {
        let gaps = gaps_to_burns_composed_attention([2, 3, 7, 4], [2, 3, 7, 4]);
        assert!(gaps.iter().all(|&g| g < 1e-5), "values, dq, dk, dv: {gaps:?}");
    }

    /// Grouped-query attention (3 query heads per key/value head): the same values and
    /// gradients as with the keys and values repeated, `dk` and `dv` summed over each group.
    #[test]
    fn grouped_heads_equal_repeated_keys_and_values() {
        let gaps = gaps_to_burns_composed_attention([2, 6, 7, 4], [2, 2, 7, 4]);
        assert!(gaps.iter().all(|&g| g < 1e-5), "values, dq, dk, dv: {gaps:?}");
    }

    /// Causal: the first position's output is its own value, and no output depends on a
    /// later position (its keys and values get no gradient from earlier outputs).
    #[test]
    fn no_position_sees_a_later_one() {
        let dims = [1, 2, 5, 3];
        let (q, k, v) = (random(dims, 4).require_grad(), random(dims, 5).require_grad(), random(dims, 6).require_grad());
        let y = causal_attention(q, k.clone(), v.clone(), 0.7, Kernels::default());
        let first = y.clone().narrow(2, 0, 1);
        assert!(max_gap(first.clone().inner(), v.clone().narrow(2, 0, 1).inner()) < 1e-6);
        let grads = y.narrow(2, 0, 2).sum().backward();
        let later = |t: &Tensor<CpuAutodiff, 4>| t.grad(&grads).expect("a gradient").narrow(2, 2, 3).abs().max().into_scalar();
        assert_eq!(later(&k), 0.0);
        assert_eq!(later(&v), 0.0);
    }

    /// Without gradients the op is the backend's own attention.
    #[test]
    fn without_gradients_it_is_the_backends_attention() {
        let dims = [1, 2, 6, 4];
        let (q, k, v) = (random(dims, 7).inner(), random(dims, 8).inner(), random(dims, 9).inner());
        let ours = causal_attention(q.clone(), k.clone(), v.clone(), 0.5, Kernels::default());
        let theirs = tensor::<Cpu>(backend_attention::<Cpu>(q.into_primitive().tensor(), k.into_primitive().tensor(), v.into_primitive().tensor(), 0.5));
        assert_eq!(max_gap(ours, theirs), 0.0);
    }
}
