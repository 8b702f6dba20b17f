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
//! Without gradients (generation, evaluation) the backend's own attention runs, as before.
//! Implemented for the trainer's backends: the CPU (NdArray), CUDA with and without fusion,
//! and `Autodiff` over any of them.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};

/// A backend that runs causal attention, with gradients where it has them.
pub trait CausalAttention: Backend {
    /// `softmax(q kᵀ · scale + causal mask) v` for `q`, `k`, `v` `[batch, heads, seq,
    /// head_dim]` (keys and values already repeated to the query heads).
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64) -> FloatTensor<Self>;
}

/// [`CausalAttention::causal_attention`] on tensors.
pub fn causal_attention<B: CausalAttention>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, scale: f64) -> Tensor<B, 4> {
    let raw = |t: Tensor<B, 4>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::causal_attention(raw(q), raw(k), raw(v), scale)))
}

fn tensor<B: Backend>(raw: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(raw))
}

/// The backend's own attention (burn's composed path: an explicit scale selects it on every
/// backend, see `attention::attention_options`).
fn backend_attention<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    let options = AttentionModuleOptions { scale: Some(scale), is_causal: true, ..Default::default() };
    attention(tensor::<B>(q), tensor(k), tensor(v), None, None, options).into_primitive().tensor()
}

/// The forward pass and the probabilities `[batch, heads, seq, seq]` it kept.
fn forward_keeping_probabilities<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, scale: f64) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, h, s, _] = q.dims();
    let hidden = Tensor::<B, 2, Bool>::tril_mask([s, s], 0, &q.device()).unsqueeze::<4>().expand([b, h, s, s]);
    let scores = q.mul_scalar(scale).matmul(k.swap_dims(2, 3)).mask_fill(hidden, f32::NEG_INFINITY);
    let p = softmax(scores, 3);
    (p.clone().matmul(v), p)
}

/// The gradients of `q`, `k`, `v` from the output's gradient `dy` and the kept `p`.
fn gradients<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, p: Tensor<B, 4>, dy: Tensor<B, 4>, scale: f64) -> [Tensor<B, 4>; 3] {
    let dv = p.clone().swap_dims(2, 3).matmul(dy.clone());
    let dp = dy.matmul(v.swap_dims(2, 3));
    let row = (dp.clone() * p.clone()).sum_dim(3);
    let ds = p * (dp - row);
    let dq = ds.clone().matmul(k).mul_scalar(scale);
    let dk = ds.swap_dims(2, 3).matmul(q).mul_scalar(scale);
    [dq, dk, dv]
}

macro_rules! with_backend_attention {
    ($($backend:ty),* $(,)?) => {$(
        impl CausalAttention for $backend {
            fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
                backend_attention::<Self>(q, k, v, scale)
            }
        }
    )*};
}

with_backend_attention!(crate::Cpu);
#[cfg(feature = "cuda")]
with_backend_attention!(crate::CudaFused, crate::CudaPlain);

/// The backward step: the state is `q`, `k`, `v`, the probabilities and the scale.
#[derive(Debug)]
struct CausalAttentionBackward;

impl<B: Backend> Backward<B, 3> for CausalAttentionBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = tensor::<B>(grads.consume::<B>(&ops.node));
        let (q, k, v, p, scale) = ops.state;
        let all = gradients(tensor::<B>(q), tensor(k), tensor(v), tensor(p), dy, scale);
        for (parent, grad) in ops.parents.into_iter().zip(all) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad.into_primitive().tensor());
            }
        }
    }
}

impl<B: CausalAttention, C: CheckpointStrategy> CausalAttention for Autodiff<B, C> {
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        match CausalAttentionBackward.prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, p) = forward_keeping_probabilities(tensor::<B>(q.primitive.clone()), tensor(k.primitive.clone()), tensor(v.primitive.clone()), scale);
                prep.finish((q.primitive, k.primitive, v.primitive, p.into_primitive().tensor(), scale), out.into_primitive().tensor())
            }
            OpsKind::UnTracked(prep) => prep.finish(B::causal_attention(q.primitive, k.primitive, v.primitive, scale)),
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

    /// Values and the gradients of q, k and v equal burn's composed attention differentiated
    /// op by op, on a loss that weighs every output differently.
    #[test]
    fn values_and_gradients_equal_burns_composed_attention() {
        let dims = [2, 3, 7, 4];
        let scale = 0.5;
        let weights = random(dims, 9).detach();
        let run = |ours: bool| {
            let (q, k, v) = (random(dims, 1).require_grad(), random(dims, 2).require_grad(), random(dims, 3).require_grad());
            let y = if ours {
                causal_attention(q.clone(), k.clone(), v.clone(), scale)
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
        assert!(max_gap(ours.0, theirs.0) < 1e-5, "values");
        assert!(max_gap(ours.1, theirs.1) < 1e-5, "dq");
        assert!(max_gap(ours.2, theirs.2) < 1e-5, "dk");
        assert!(max_gap(ours.3, theirs.3) < 1e-5, "dv");
    }

    /// Causal: the first position's output is its own value, and no output depends on a
    /// later position (its keys and values get no gradient from earlier outputs).
    #[test]
    fn no_position_sees_a_later_one() {
        let dims = [1, 2, 5, 3];
        let (q, k, v) = (random(dims, 4).require_grad(), random(dims, 5).require_grad(), random(dims, 6).require_grad());
        let y = causal_attention(q, k.clone(), v.clone(), 0.7);
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
        let ours = causal_attention(q.clone(), k.clone(), v.clone(), 0.5);
        let theirs = tensor::<Cpu>(backend_attention::<Cpu>(q.into_primitive().tensor(), k.into_primitive().tensor(), v.into_primitive().tensor(), 0.5));
        assert_eq!(max_gap(ours, theirs), 0.0);
    }
}
